//! The replay guard: each (issuer, nonce) is accepted once.
//!
//! Entries are kept until the task they belong to can no longer be accepted
//! anyway (its expiry plus the clock skew), then pruned. The guard is bounded:
//! when it is full of live entries it refuses new tasks rather than forget an
//! entry that could still be replayed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

/// What the guard says of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First sight; now remembered.
    Fresh,
    /// Seen before.
    Replayed,
    /// Too many live entries to remember another.
    Full,
}

/// A bounded, in-memory set of (issuer, nonce) pairs with expiry.
#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<String>,
    by_expiry: BinaryHeap<Reverse<(u64, String)>>,
}

impl ReplayGuard {
    /// A guard that remembers at most `capacity` live entries.
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records (issuer, nonce) until `keep_until_ms` unless it was seen.
    pub fn admit(&self, issuer: &str, nonce: &str, keep_until_ms: u64, now_ms: u64) -> Admission {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") stay apart
        // whatever characters the parts hold.
        let key = format!("{}:{issuer}{nonce}", issuer.len());
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if inner.seen.contains(&key) {
            return Admission::Replayed;
        }
        inner.prune(now_ms);
        if inner.seen.len() >= self.capacity {
            return Admission::Full;
        }
        inner.seen.insert(key.clone());
        inner.by_expiry.push(Reverse((keep_until_ms, key)));
        Admission::Fresh
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.seen.len()).unwrap_or(0)
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn prune(&mut self, now_ms: u64) {
        while let Some(Reverse((until, _))) = self.by_expiry.peek() {
            if *until >= now_ms {
                break;
            }
            if let Some(Reverse((_, key))) = self.by_expiry.pop() {
                self.seen.remove(&key);
            }
        }
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
}
