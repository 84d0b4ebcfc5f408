//! The per-key state the router and its attempts share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::cooldown::{Cooldown, Ejection};
use crate::ewma::PeakEwma;
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::reputation::Reputation;

/// The table behind the router's lock. A `BTreeMap`, so that every walk
/// over the keys is in one order and a seeded run repeats exactly.
#[derive(Debug)]
pub(crate) struct Table<K> {
    pub(crate) policy: Policy,
    peers: BTreeMap<K, Peer>,
}

/// One key's state.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) in_flight: u64,
    pub(crate) latency: PeakEwma,
    pub(crate) cooldown: Cooldown,
    pub(crate) reputation: Reputation,
    /// When its latest cooldown ends, until the router has seen it end.
    pub(crate) returns_at: Option<Instant>,
    /// Back from a cooldown and not tried since: the next pick among ready
    /// peers tries it (a half-open probe), so that a peer that recovered is
    /// not shunned for the penalty samples of its outage.
    pub(crate) probe_due: bool,
}

/// The parts of one key's cost at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cost {
    pub(crate) latency_nanos: f64,
    pub(crate) in_flight: u64,
    pub(crate) weight: f64,
    pub(crate) score: f64,
}

impl Cost {
    /// latency × (in_flight + 1) / weight.
    pub(crate) fn value(&self) -> f64 {
        self.latency_nanos * (self.in_flight as f64 + 1.0) / self.weight
    }
}

pub(crate) type Shared<K> = Arc<Mutex<Table<K>>>;

/// The lock, poisoned or not: no code runs under it that can leave the
/// table half-changed, so a panic elsewhere must not stop the routing.
pub(crate) fn lock<K>(shared: &Shared<K>) -> MutexGuard<'_, Table<K>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Peer {
    fn new(policy: &Policy, now: Instant) -> Self {
        Peer {
            in_flight: 0,
            latency: PeakEwma::new(policy.initial_latency, now),
            cooldown: Cooldown::default(),
            reputation: Reputation::default(),
            returns_at: None,
            probe_due: false,
        }
    }
}

impl<K: Ord + Clone> Table<K> {
    pub(crate) fn new(policy: Policy) -> Self {
        Table {
            policy,
            peers: BTreeMap::new(),
        }
    }

    pub(crate) fn peers(&self) -> impl Iterator<Item = (&K, &Peer)> {
        self.peers.iter()
    }

    /// Makes `key` known from `now`, so that its estimate starts decaying
    /// and a new peer gets tried even beside fast ones.
    pub(crate) fn register(&mut self, key: &K, now: Instant) {
        entry(&mut self.peers, &self.policy, key, now);
    }

    pub(crate) fn begin(&mut self, key: &K, now: Instant) {
        let peer = entry(&mut self.peers, &self.policy, key, now);
        peer.in_flight = peer.in_flight.saturating_add(1);
        peer.probe_due = false;
    }

    /// Marks the keys among `keys` whose cooldown has ended since the last
    /// look as due for a probe, their latency estimate back to the initial
    /// guess that the probe's sample replaces: what was measured of the
    /// peer before and during its outage says nothing of it now.
    pub(crate) fn note_returns(&mut self, keys: &[K], now: Instant) {
        let initial = self.policy.initial_latency;
        for key in keys {
            let Some(peer) = self.peers.get_mut(key) else {
                continue;
            };
            if peer.returns_at.is_some_and(|at| at <= now) {
                peer.returns_at = None;
                peer.probe_due = true;
                peer.latency = PeakEwma::new(initial, now);
            }
        }
    }

    /// Whether `key` is back from a cooldown and not tried since.
    pub(crate) fn probe_due(&self, key: &K) -> bool {
        self.peers.get(key).is_some_and(|peer| peer.probe_due)
    }

    pub(crate) fn end(&mut self, key: &K) {
        if let Some(peer) = self.peers.get_mut(key) {
            debug_assert!(peer.in_flight > 0, "an attempt ended twice");
            peer.in_flight = peer.in_flight.saturating_sub(1);
        }
    }

    pub(crate) fn record(&mut self, key: &K, at: Instant, outcome: Outcome) {
        let policy = &self.policy;
        let peer = entry(&mut self.peers, policy, key, at);
        peer.latency
            .observe(outcome.latency(policy), at, policy.tau);
        peer.cooldown.record(at, outcome.health(), policy);
        peer.reputation
            .observe(at, outcome.evidence(policy), policy);
        if let Some((until, _)) = peer.cooldown.cooling(at) {
            peer.returns_at = Some(until);
            peer.probe_due = false;
        }
    }

    pub(crate) fn cooling(&self, key: &K, now: Instant) -> Option<(Instant, Ejection)> {
        self.peers.get(key)?.cooldown.cooling(now)
    }

    pub(crate) fn cost(&self, key: &K, now: Instant) -> Cost {
        let policy = &self.policy;
        match self.peers.get(key) {
            Some(peer) => {
                let score = peer.reputation.score(now, policy);
                Cost {
                    latency_nanos: peer.latency.read(now, policy.tau, policy.idle_latency),
                    in_flight: peer.in_flight,
                    weight: Reputation::weight_of(score, policy),
                    score,
                }
            }
            None => {
                let score = Reputation::default().score(now, policy);
                Cost {
                    latency_nanos: policy.initial_latency.as_nanos() as f64,
                    in_flight: 0,
                    weight: Reputation::weight_of(score, policy),
                    score,
                }
            }
        }
    }
}

/// The key's state, made as of `now` if it had none. Looked up before
/// inserting, so that a known key is not cloned.
fn entry<'a, K: Ord + Clone>(
    peers: &'a mut BTreeMap<K, Peer>,
    policy: &Policy,
    key: &K,
    now: Instant,
) -> &'a mut Peer {
    if !peers.contains_key(key) {
        peers.insert(key.clone(), Peer::new(policy, now));
    }
    peers.get_mut(key).expect("inserted above")
}
