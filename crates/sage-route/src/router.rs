//! The router: picks a peer and keeps each key's state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::attempt::Attempt;
use crate::explain::{explain, snapshot, Explained, PeerSnapshot};
use crate::outcome::Outcome;
use crate::policy::Policy;
use crate::state::{lock, Shared, Table};

/// The routing policy's state for every key, behind one lock. Cloning it
/// is cheap and shares the state.
#[derive(Debug)]
pub struct Router<K> {
    shared: Shared<K>,
}

impl<K> Clone for Router<K> {
    fn clone(&self) -> Self {
        Router {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The router's choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick<K> {
    /// The key to send to.
    pub key: K,
    /// Every candidate is cooling: wait this long, until this one is back,
    /// before sending.
    pub wait: Option<Duration>,
    /// Every candidate is cooling and the deadline cannot wait for the
    /// first back: this one was picked among them all anyway.
    pub panic: bool,
}

impl<K: Ord + Clone> Router<K> {
    /// A router with no state yet.
    pub fn new(policy: Policy) -> Self {
        Router {
            shared: Arc::new(Mutex::new(Table::new(policy))),
        }
    }

    /// The policy it routes by.
    pub fn policy(&self) -> Policy {
        lock(&self.shared).policy.clone()
    }

    /// Picks among `candidates` by power of two choices: two drawn at
    /// random among those not cooling, the cheaper one wins, a tie is
    /// broken at random. When every one is cooling, it returns the one back
    /// first with the [`wait`](Pick::wait) until then, if `deadline` (none:
    /// no deadline) is not passed by then; otherwise it picks among them
    /// all, cooldown ignored, and says [`panic`](Pick::panic). `None` only
    /// for an empty list.
    pub fn pick(
        &self,
        candidates: &[K],
        deadline: Option<Instant>,
        rng: &mut impl Rng,
    ) -> Option<Pick<K>> {
        if candidates.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut table = lock(&self.shared);
        for key in candidates {
            table.register(key, now);
        }
        table.note_returns(candidates, now);
        let table = &*table;
        let ready: Vec<&K> = candidates
            .iter()
            .filter(|key| table.cooling(key, now).is_none())
            .collect();
        // A peer back from a cooldown is tried once before the costs
        // decide again (a half-open probe).
        let probes: Vec<&K> = ready
            .iter()
            .copied()
            .filter(|key| table.probe_due(key))
            .collect();
        if !probes.is_empty() {
            let key = probes[rng.gen_range(0..probes.len())].clone();
            return Some(Pick {
                key,
                wait: None,
                panic: false,
            });
        }
        if !ready.is_empty() {
            let key = two_choices(table, &ready, now, rng).clone();
            return Some(Pick {
                key,
                wait: None,
                panic: false,
            });
        }
        let back = candidates
            .iter()
            .filter_map(|key| table.cooling(key, now).map(|(until, _)| until))
            .min()?;
        let first_back: Vec<&K> = candidates
            .iter()
            .filter(|key| {
                table
                    .cooling(key, now)
                    .is_some_and(|(until, _)| until == back)
            })
            .collect();
        if deadline.is_none_or(|deadline| back <= deadline) {
            let key = first_back[rng.gen_range(0..first_back.len())].clone();
            return Some(Pick {
                key,
                wait: Some(back - now),
                panic: false,
            });
        }
        let all: Vec<&K> = candidates.iter().collect();
        let key = two_choices(table, &all, now, rng).clone();
        Some(Pick {
            key,
            wait: None,
            panic: true,
        })
    }

    /// Starts a request to `key`: its in-flight count is raised until the
    /// returned attempt is finished or dropped.
    pub fn start(&self, key: &K) -> Attempt<K> {
        Attempt::begin(Arc::clone(&self.shared), key.clone())
    }

    /// Records an outcome as of `at` without an attempt: for rebuilding the
    /// state from the delegator's history, observations in their order.
    pub fn observe_at(&self, key: &K, at: Instant, outcome: Outcome) {
        lock(&self.shared).record(key, at, outcome);
    }

    /// Each candidate, in the order given: in or out and why, its cost's
    /// parts, and which one the router favours.
    pub fn explain(&self, candidates: &[K]) -> Vec<Explained<K>> {
        explain(&lock(&self.shared), candidates, Instant::now())
    }

    /// Every key the router has seen, in key order.
    pub fn snapshot(&self) -> Vec<PeerSnapshot<K>> {
        snapshot(&lock(&self.shared), Instant::now())
    }
}

/// Power of two choices over `keys`, not empty.
fn two_choices<'a, K: Ord + Clone>(
    table: &Table<K>,
    keys: &[&'a K],
    now: Instant,
    rng: &mut impl Rng,
) -> &'a K {
    if keys.len() == 1 {
        return keys[0];
    }
    let a = rng.gen_range(0..keys.len());
    let mut b = rng.gen_range(0..keys.len() - 1);
    if b >= a {
        b += 1;
    }
    let cost_a = table.cost(keys[a], now).value();
    let cost_b = table.cost(keys[b], now).value();
    let winner = match cost_a.total_cmp(&cost_b) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if rng.gen_bool(0.5) => a,
        std::cmp::Ordering::Equal => b,
    };
    keys[winner]
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use tokio::time::advance;

    use super::*;
    use crate::{Ejection, Standing};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn verified(measured: Duration) -> Outcome {
        Outcome::Verified {
            measured,
            claimed: None,
            terms_met: true,
        }
    }

    /// Sends `rounds` requests one after another, each to the pick, which
    /// answers as `answer` says; returns how many went to each candidate.
    async fn run(
        router: &Router<&'static str>,
        candidates: &[&'static str],
        rounds: usize,
        rng: &mut StdRng,
        answer: impl Fn(&str) -> (Duration, Outcome),
    ) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for _ in 0..rounds {
            let pick = router.pick(candidates, None, rng).expect("candidates");
            assert_eq!(pick.wait, None);
            let i = candidates
                .iter()
                .position(|c| *c == pick.key)
                .expect("a candidate");
            counts[i] += 1;
            let attempt = router.start(&pick.key);
            let (took, outcome) = answer(pick.key);
            advance(took).await;
            attempt.finish(outcome);
            advance(ms(40)).await;
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_goes_to_the_faster_peer_and_follows_a_change() {
        let router = Router::new(Policy::default());
        let mut rng = StdRng::seed_from_u64(7);
        let peers = ["fast", "slow"];
        let latency = |fast: u64, slow: u64| {
            move |key: &str| {
                let took = ms(if key == "fast" { fast } else { slow });
                (took, verified(took))
            }
        };
        let first = run(&router, &peers, 2000, &mut rng, latency(5, 50)).await;
        assert!(first[0] > 1800, "{first:?}");
        assert!(first[1] >= 2, "the slow one is still probed: {first:?}");

        let second = run(&router, &peers, 2000, &mut rng, latency(100, 50)).await;
        assert!(second[1] > 1600, "{second:?}");
        assert!(second[0] >= 2, "{second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_back_from_a_cooldown_is_probed_and_wins_its_share_again() {
        let router = Router::new(Policy::default());
        let mut rng = StdRng::seed_from_u64(3);
        let peers = ["fast", "medium"];
        // Both known: fast at 5 ms, medium at 20 ms.
        run(&router, &peers, 200, &mut rng, |key| {
            let took = ms(if key == "fast" { 5 } else { 20 });
            (took, verified(took))
        })
        .await;
        // Fast goes down: three transport failures eject it.
        for _ in 0..3 {
            router.start(&"fast").finish(Outcome::Transport);
        }
        assert!(matches!(
            router.explain(&peers)[0].standing,
            Standing::Cooling { .. }
        ));
        // Its cooldown ends: the next pick probes it, whatever its penalty
        // samples say.
        advance(Duration::from_secs(2)).await;
        let pick = router.pick(&peers, None, &mut rng).unwrap();
        assert_eq!(pick.key, "fast");
        // The probe's sample replaces the outage's: it is cheap again, and
        // takes most of the traffic from the next requests on.
        router.start(&"fast").finish(verified(ms(5)));
        let after = run(&router, &peers, 200, &mut rng, |key| {
            let took = ms(if key == "fast" { 5 } else { 20 });
            (took, verified(took))
        })
        .await;
        assert!(after[0] > 150, "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_refuses_fast_does_not_win() {
        let router = Router::new(Policy::default());
        let mut rng = StdRng::seed_from_u64(11);
        let peers = ["refuses", "works"];
        let counts = run(&router, &peers, 500, &mut rng, |key| {
            if key == "refuses" {
                let refused = Outcome::Refused {
                    status: 429,
                    retry_after: None,
                };
                (ms(1), refused)
            } else {
                (ms(50), verified(ms(50)))
            }
        })
        .await;
        assert!(counts[1] > 450, "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_spread_the_load() {
        let router = Router::new(Policy::default());
        let mut rng = StdRng::seed_from_u64(3);
        let peers = ["a", "b"];
        for key in peers {
            router.observe_at(&key, Instant::now(), verified(ms(10)));
        }
        // Requests held open: each raises its peer's cost.
        let mut held = Vec::new();
        for _ in 0..10 {
            let pick = router.pick(&peers, None, &mut rng).expect("candidates");
            held.push(router.start(&pick.key));
        }
        let on_a = held.iter().filter(|a| *a.key() == "a").count();
        assert_eq!(on_a, 5, "alternates as in-flight counts rise");
    }

    #[tokio::test(start_paused = true)]
    async fn ties_are_broken_at_random() {
        let router = Router::new(Policy::default());
        let mut rng = StdRng::seed_from_u64(5);
        let peers = ["a", "b", "c"];
        let mut counts = [0; 3];
        for _ in 0..300 {
            let pick = router.pick(&peers, None, &mut rng).expect("candidates");
            counts[peers
                .iter()
                .position(|p| *p == pick.key)
                .expect("a candidate")] += 1;
        }
        assert!(counts.iter().all(|&n| n > 70), "{counts:?}");
    }

    fn eject(router: &Router<&'static str>, key: &'static str, outcome: Outcome, times: usize) {
        for _ in 0..times {
            router.start(&key).finish(outcome);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn all_cooling_waits_for_the_first_back_or_panics() {
        let router = Router::new(Policy::default());
        let peers = ["thor", "sprout", "legion"];
        eject(&router, "thor", Outcome::TrustFailure, 1);
        eject(&router, "sprout", Outcome::Transport, 3);
        eject(
            &router,
            "legion",
            Outcome::Refused {
                status: 503,
                retry_after: Some(ms(4000)),
            },
            1,
        );
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let now = Instant::now();
            let waited = router.pick(&peers, None, &mut rng).expect("never None");
            assert_eq!(
                waited,
                Pick {
                    key: "sprout",
                    wait: Some(ms(1000)),
                    panic: false
                }
            );
            let allowed = router
                .pick(&peers, Some(now + ms(1000)), &mut rng)
                .expect("never None");
            assert_eq!(allowed.wait, Some(ms(1000)));
            let hurried = router
                .pick(&peers, Some(now + ms(999)), &mut rng)
                .expect("never None");
            assert!(hurried.panic && hurried.wait.is_none(), "{hurried:?}");
            assert!(peers.contains(&hurried.key));
        }
        assert_eq!(router.pick(&[], None, &mut StdRng::seed_from_u64(0)), None);
        advance(ms(1000)).await;
        let back = router
            .pick(&peers, None, &mut StdRng::seed_from_u64(0))
            .expect("one back");
        assert_eq!(
            back,
            Pick {
                key: "sprout",
                wait: None,
                panic: false
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn explain_says_who_is_out_and_why() {
        let router = Router::new(Policy::default());
        eject(&router, "thor", Outcome::Transport, 3);
        router.observe_at(&"sprout", Instant::now(), verified(ms(20)));
        router.observe_at(&"legion", Instant::now(), verified(ms(80)));
        let now = Instant::now();
        let explained = router.explain(&["thor", "sprout", "legion", "nova"]);
        let keys: Vec<_> = explained.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["thor", "sprout", "legion", "nova"]);
        assert_eq!(
            explained[0].standing,
            Standing::Cooling {
                until: now + ms(1000),
                remaining: ms(1000),
                reason: Ejection::ConsecutiveFailures(3),
            }
        );
        assert!(explained[1..].iter().all(|e| e.standing == Standing::Ready));
        let favoured: Vec<_> = explained
            .iter()
            .filter(|e| e.favoured)
            .map(|e| e.key)
            .collect();
        assert_eq!(favoured, ["sprout"]);
        assert_eq!(explained[1].latency, ms(20));
        assert_eq!(explained[1].in_flight, 0);
        let sprout = &explained[1];
        assert!(
            (sprout.cost_ms - 20.0 / sprout.weight).abs() < 1e-9,
            "{sprout:?}"
        );
        // Not yet seen: the initial estimate and the prior's weight.
        assert_eq!(explained[3].latency, router.policy().initial_latency);
        assert_eq!(explained[3].weight, 0.75);
        assert_eq!(explained[3].score, 0.75);
        // The score is the snapshot's, unfloored; a failing peer's is lower.
        let snapshot = router.snapshot();
        let score_of = |key| snapshot.iter().find(|p| p.key == key).unwrap().score;
        assert_eq!(sprout.score, score_of("sprout"));
        assert_eq!(explained[0].score, score_of("thor"));
        assert!(explained[0].score < sprout.score);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuild_from_the_ledger_is_bit_identical() {
        let history = [
            (0u64, "thor", verified(ms(30))),
            (1_000, "sprout", Outcome::Timeout),
            (1_500, "thor", Outcome::InvalidProof),
            (60_000, "sprout", verified(ms(700))),
            (3_600_000, "thor", Outcome::Transport),
            (3_600_010, "thor", Outcome::Transport),
            (3_600_020, "thor", Outcome::Transport),
            (
                3_600_500,
                "sprout",
                Outcome::Refused {
                    status: 429,
                    retry_after: Some(ms(2500)),
                },
            ),
        ];
        let rebuild = || {
            let router = Router::new(Policy::default());
            // The ledger's times, as instants before now.
            let base = Instant::now() - Duration::from_secs(2 * 3600);
            for (offset, key, outcome) in history {
                router.observe_at(&key, base + ms(offset), outcome);
            }
            router.snapshot()
        };
        let first = rebuild();
        advance(Duration::from_secs(5000)).await;
        let again = rebuild();
        let bits = |s: &[PeerSnapshot<&'static str>]| -> Vec<_> {
            s.iter()
                .map(|p| {
                    (
                        p.key,
                        p.score.to_bits(),
                        p.weight.to_bits(),
                        p.latency,
                        p.ejections,
                    )
                })
                .collect()
        };
        assert_eq!(bits(&first), bits(&again));
        assert_eq!(first.len(), 2);
        assert!(first[1].score < 0.5, "thor's invalid proof: {:?}", first[1]);
    }
}
