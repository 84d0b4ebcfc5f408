//! Remembering what was accepted, for as long as it matters.
//!
//! [`ExpiringMap`] keeps entries until an instant after which the task they
//! belong to can no longer be accepted anyway (its expiry plus the clock
//! skew), then prunes them. It is bounded: when full of live entries it
//! refuses new ones rather than forget one that could still be replayed.
//! [`ReplayGuard`] is the (issuer, nonce) set of the native protocol; the
//! legacy endpoint keeps its (requester, task id) runs in the same map.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

/// What [`ExpiringMap::get_or_insert`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot<V> {
    /// The key was new; the value was inserted.
    Inserted(V),
    /// The key was there, with this value.
    Existing(V),
    /// Too many live entries to remember another.
    Full,
}

/// A bounded map whose entries expire.
#[derive(Debug)]
pub struct ExpiringMap<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

/// Entries are keyed by a 128-bit digest of what they name (see
/// [`pair_key`]): about 45 bytes an entry for the replay guard, whatever
/// the length of the ids.
pub type Key = [u8; 16];

#[derive(Debug)]
struct Inner<V> {
    entries: HashMap<Key, V>,
    by_expiry: BinaryHeap<Reverse<(u64, Key)>>,
}

impl<V: Clone> ExpiringMap<V> {
    /// A map of at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        ExpiringMap {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                by_expiry: BinaryHeap::new(),
            }),
        }
    }

    /// The value of `key`, or else `make()` inserted until `keep_until_ms`.
    pub fn get_or_insert(
        &self,
        key: Key,
        keep_until_ms: u64,
        now_ms: u64,
        make: impl FnOnce() -> V,
    ) -> Slot<V> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(value) = inner.entries.get(&key) {
            return Slot::Existing(value.clone());
        }
        inner.prune(now_ms);
        if inner.entries.len() >= self.capacity {
            return Slot::Full;
        }
        let value = make();
        inner.entries.insert(key, value.clone());
        inner.by_expiry.push(Reverse((keep_until_ms, key)));
        Slot::Inserted(value)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Inner<V> {
    fn prune(&mut self, now_ms: u64) {
        while let Some(Reverse((until, _))) = self.by_expiry.peek() {
            if *until >= now_ms {
                break;
            }
            if let Some(Reverse((_, key))) = self.by_expiry.pop() {
                self.entries.remove(&key);
            }
        }
    }
}

/// The key of a pair: the first 16 bytes of the SHA-256 of both parts,
/// length-prefixed so that ("ab", "c") and ("a", "bc") stay apart. A
/// collision would need a second preimage of SHA-256 truncated to 128 bits.
pub fn pair_key(first: &str, second: &str) -> Key {
    let mut bytes = Vec::with_capacity(8 + first.len() + second.len());
    bytes.extend_from_slice(&(first.len() as u64).to_be_bytes());
    bytes.extend_from_slice(first.as_bytes());
    bytes.extend_from_slice(second.as_bytes());
    let digest = sage_crypto::digest::sha256(&bytes);
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// What the replay guard says of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First sight; now remembered.
    Fresh,
    /// Seen before.
    Replayed,
    /// Too many live entries to remember another.
    Full,
}

/// The (issuer, nonce) pairs accepted so far.
#[derive(Debug)]
pub struct ReplayGuard(ExpiringMap<()>);

impl ReplayGuard {
    /// A guard that remembers at most `capacity` live pairs.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard(ExpiringMap::new(capacity))
    }

    /// Records (issuer, nonce) until `keep_until_ms` unless it was seen.
    pub fn admit(&self, issuer: &str, nonce: &str, keep_until_ms: u64, now_ms: u64) -> Admission {
        match self
            .0
            .get_or_insert(pair_key(issuer, nonce), keep_until_ms, now_ms, || ())
        {
            Slot::Inserted(()) => Admission::Fresh,
            Slot::Existing(()) => Admission::Replayed,
            Slot::Full => Admission::Full,
        }
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_admitted_once() {
        let guard = ReplayGuard::new(10);
        assert_eq!(guard.admit("a", "n1", 100, 0), Admission::Fresh);
        assert_eq!(guard.admit("a", "n1", 100, 50), Admission::Replayed);
        assert_eq!(guard.admit("b", "n1", 100, 50), Admission::Fresh);
        assert_eq!(guard.admit("a", "n2", 100, 50), Admission::Fresh);
    }

    #[test]
    fn separator_keeps_pairs_apart() {
        let guard = ReplayGuard::new(10);
        assert_eq!(guard.admit("ab", "c", 100, 0), Admission::Fresh);
        assert_eq!(guard.admit("a", "bc", 100, 0), Admission::Fresh);
    }

    #[test]
    fn entries_live_until_their_expiry_then_are_pruned() {
        let guard = ReplayGuard::new(2);
        assert_eq!(guard.admit("a", "1", 100, 0), Admission::Fresh);
        assert_eq!(guard.admit("a", "2", 200, 0), Admission::Fresh);
        // Full of live entries: refuse rather than forget.
        assert_eq!(guard.admit("a", "3", 300, 100), Admission::Full);
        assert_eq!(guard.admit("a", "1", 100, 100), Admission::Replayed);
        // Entry 1 expired at 100; at 101 it makes room.
        assert_eq!(guard.admit("a", "3", 300, 101), Admission::Fresh);
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn map_returns_the_first_value() {
        let map = ExpiringMap::new(4);
        let key = pair_key("issuer", "k");
        assert_eq!(map.get_or_insert(key, 10, 0, || 1), Slot::Inserted(1));
        assert_eq!(map.get_or_insert(key, 10, 0, || 2), Slot::Existing(1));
    }
}
