//! What the router would do and why, for `sage route explain` and
//! `/metrics`.

use std::time::Duration;

use tokio::time::Instant;

use crate::cooldown::Ejection;
use crate::state::Table;

/// Whether a candidate can be picked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It can be picked.
    Ready,
    /// It is set aside until `until`, except in panic mode.
    Cooling {
        /// When it comes back.
        until: Instant,
        /// How long from now that is.
        remaining: Duration,
        /// Why it was set aside.
        reason: Ejection,
    },
}

/// One candidate, as the router sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained<K> {
    /// The candidate.
    pub key: K,
    /// In or out, and why.
    pub standing: Standing,
    /// The latency estimate, decayed to now.
    pub latency: Duration,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// The reputation's weight, between the policy's `weight_floor` and 1.
    pub weight: f64,
    /// The reputation's score, in [0, 1] (the prior's for a key not seen).
    pub score: f64,
    /// latency (ms) × (in_flight + 1) / weight.
    pub cost_ms: f64,
    /// The one the router favours: the cheapest ready candidate, which
    /// power of two choices picks whenever it is drawn; with none ready,
    /// the one back first. The first in the list wins a tie.
    pub favoured: bool,
}

/// One key's state, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot<K> {
    /// The key.
    pub key: K,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// The latency estimate, decayed to now.
    pub latency: Duration,
    /// Until when it is cooling, if it is.
    pub cooling_until: Option<Instant>,
    /// Ejections that count toward its next cooldown's length.
    pub ejections: u32,
    /// The reputation's score, in [0, 1].
    pub score: f64,
    /// The reputation's weight (the floored score).
    pub weight: f64,
}

pub(crate) fn explain<K: Ord + Clone>(
    table: &Table<K>,
    candidates: &[K],
    now: Instant,
) -> Vec<Explained<K>> {
    let mut out: Vec<Explained<K>> = candidates
        .iter()
        .map(|key| {
            let cost = table.cost(key, now);
            let standing = match table.cooling(key, now) {
                Some((until, reason)) => Standing::Cooling {
                    until,
                    remaining: until - now,
                    reason,
                },
                None => Standing::Ready,
            };
            Explained {
                key: key.clone(),
                standing,
                latency: nanos(cost.latency_nanos),
                in_flight: cost.in_flight,
                weight: cost.weight,
                score: cost.score,
                cost_ms: cost.value() / 1e6,
                favoured: false,
            }
        })
        .collect();
    let ready = out
        .iter()
        .enumerate()
        .filter(|(_, e)| e.standing == Standing::Ready)
        .min_by(|(_, a), (_, b)| a.cost_ms.total_cmp(&b.cost_ms))
        .map(|(i, _)| i);
    let favoured = ready.or_else(|| {
        out.iter()
            .enumerate()
            .filter_map(|(i, e)| match e.standing {
                Standing::Cooling { until, .. } => Some((i, until)),
                Standing::Ready => None,
            })
            .min_by_key(|(_, until)| *until)
            .map(|(i, _)| i)
    });
    if let Some(i) = favoured {
        out[i].favoured = true;
    }
    out
}

pub(crate) fn snapshot<K: Ord + Clone>(table: &Table<K>, now: Instant) -> Vec<PeerSnapshot<K>> {
    let policy = &table.policy;
    table
        .peers()
        .map(|(key, peer)| PeerSnapshot {
            key: key.clone(),
            in_flight: peer.in_flight,
            latency: nanos(peer.latency.read(now, policy.tau, policy.idle_latency)),
            cooling_until: peer.cooldown.cooling(now).map(|(until, _)| until),
            ejections: peer.cooldown.ejections(now, policy),
            score: peer.reputation.score(now, policy),
            weight: peer.reputation.weight(now, policy),
        })
        .collect()
}

fn nanos(value: f64) -> Duration {
    // Saturating: an estimate is never negative or beyond u64 nanoseconds
    // in practice, and `as` clamps both.
    Duration::from_nanos(value as u64)
}
