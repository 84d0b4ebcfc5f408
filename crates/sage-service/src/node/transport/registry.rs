//! The live connections: each one's source address, [`Activity`] and a
//! handle to close it. The accept loop asks how many connections an
//! address holds (`max_connections_per_address`) and, at
//! `max_connections`, has the idlest one closed to make room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::activity::Activity;

/// The live connections.
#[derive(Default)]
pub(super) struct Registry {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    next_id: u64,
    live: HashMap<u64, Live>,
    per_address: HashMap<IpAddr, usize>,
}

struct Live {
    address: IpAddr,
    activity: Arc<Activity>,
    close: Arc<Notify>,
    /// Already asked to close: not picked again while it does.
    evicting: bool,
}

/// The connection [`Registry::evict_idlest`] asked to close.
#[derive(Debug)]
pub(super) struct Evicted {
    /// Where it came from.
    pub(super) address: IpAddr,
    /// How long it had been without a request in progress.
    pub(super) quiet_for: Duration,
}

/// The address a connection counts against: an IPv4 client of a
/// dual-stack socket (`::ffff:a.b.c.d`) is the IPv4 address it is.
fn source(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

impl Registry {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves whole entries either way.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Connections open now.
    pub(super) fn len(&self) -> usize {
        self.entries().live.len()
    }

    /// Connections open now from `address`.
    pub(super) fn open_from(&self, address: IpAddr) -> usize {
        self.entries()
            .per_address
            .get(&source(address))
            .copied()
            .unwrap_or(0)
    }

    /// Adds a connection from `address`; it leaves when the returned guard
    /// drops.
    pub(super) fn register(self: &Arc<Self>, address: IpAddr) -> Registered {
        let address = source(address);
        let activity = Arc::new(Activity::new());
        let close = Arc::new(Notify::new());
        let mut entries = self.entries();
        let id = entries.next_id;
        entries.next_id += 1;
        *entries.per_address.entry(address).or_default() += 1;
        entries.live.insert(
            id,
            Live {
                address,
                activity: activity.clone(),
                close: close.clone(),
                evicting: false,
            },
        );
        Registered {
            registry: self.clone(),
            id,
            activity,
            close,
        }
    }

    /// Asks the idlest connection to close: of those without a request in
    /// progress (a task is never cut to make room), the one without a
    /// request for the longest; the first accepted on a tie. `None` when
    /// every connection has a request in progress or is closing already.
    pub(super) fn evict_idlest(&self) -> Option<Evicted> {
        let mut entries = self.entries();
        let (_, live) = entries
            .live
            .iter_mut()
            .filter(|(_, live)| !live.evicting && !live.activity.in_request())
            .min_by_key(|(id, live)| (live.activity.quiet_since(), **id))?;
        live.evicting = true;
        // Stored if the connection is not waiting yet: it is not lost.
        live.close.notify_one();
        Some(Evicted {
            address: live.address,
            quiet_for: live.activity.quiet_since().elapsed(),
        })
    }
}

/// A connection in the [`Registry`], until dropped.
pub(super) struct Registered {
    registry: Arc<Registry>,
    id: u64,
    activity: Arc<Activity>,
    close: Arc<Notify>,
}

impl Registered {
    /// What the connection is doing.
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Completes once the registry asked this connection to close.
    pub(super) async fn evicted(&self) {
        self.close.notified().await;
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut entries = self.registry.entries();
        let Some(live) = entries.live.remove(&self.id) else {
            return;
        };
        if let Some(count) = entries.per_address.get_mut(&live.address) {
            *count -= 1;
            if *count == 0 {
                entries.per_address.remove(&live.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::transport::activity::InFlight;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    /// Long enough for the millisecond clocks of two connections to differ.
    fn tick() {
        std::thread::sleep(Duration::from_millis(5));
    }

    async fn was_evicted(conn: &Registered) -> bool {
        tokio::time::timeout(Duration::from_millis(50), conn.evicted())
            .await
            .is_ok()
    }

    #[test]
    fn connections_count_against_their_address_until_dropped() {
        let registry = Arc::new(Registry::default());
        let first = registry.register(A);
        let mapped = registry.register("::ffff:192.0.2.1".parse().unwrap());
        let other = registry.register(B);
        assert_eq!(registry.open_from(A), 2, "an IPv4-mapped address is A");
        assert_eq!(registry.open_from(B), 1);
        assert_eq!(registry.len(), 3);
        drop(first);
        assert_eq!(registry.open_from(A), 1);
        drop((mapped, other));
        assert_eq!((registry.open_from(A), registry.open_from(B)), (0, 0));
        assert_eq!(registry.len(), 0);
        assert!(
            registry.entries().per_address.is_empty(),
            "no empty counts kept"
        );
    }

    #[tokio::test]
    async fn the_idlest_goes_first_and_a_connection_in_a_request_never_does() {
        let registry = Arc::new(Registry::default());
        let busy = registry.register(A);
        tick();
        let answered = registry.register(A);
        tick();
        let silent = registry.register(B);
        tick();
        // `busy` is in a request; `answered` had one that ended after
        // `silent` connected, so `silent` is the idlest.
        let request = InFlight::begin(busy.activity().clone());
        drop(InFlight::begin(answered.activity().clone()));

        let evicted = registry.evict_idlest().unwrap();
        assert_eq!(evicted.address, B);
        assert!(was_evicted(&silent).await, "the idlest was told");
        assert!(!was_evicted(&answered).await);
        assert!(!was_evicted(&busy).await);

        // One that is closing already is not picked again.
        assert_eq!(registry.evict_idlest().unwrap().address, A);
        assert!(was_evicted(&answered).await);
        assert!(
            registry.evict_idlest().is_none(),
            "only a connection in a request is left"
        );
        assert!(!was_evicted(&busy).await);

        drop(request);
        assert!(registry.evict_idlest().is_some());
        assert!(was_evicted(&busy).await);
        // Leaving the registry is what frees the place.
        assert_eq!(registry.len(), 3);
        drop((busy, answered, silent));
        assert_eq!(registry.len(), 0);
    }

    #[test]
    fn on_a_tie_the_first_accepted_goes_first() {
        let registry = Arc::new(Registry::default());
        let conns: Vec<_> = (0..4).map(|_| registry.register(A)).collect();
        // Same millisecond or not, never a later one before an earlier one.
        let first = registry.evict_idlest().unwrap();
        assert_eq!(first.address, A);
        let entries = registry.entries();
        let evicting: Vec<u64> = {
            let mut ids: Vec<u64> = entries
                .live
                .iter()
                .filter(|(_, l)| l.evicting)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(evicting, vec![conns[0].id]);
    }
}
