//! A decaying Beta score per key: what the delegator's own evidence says
//! about a peer.

use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::Evidence;
use crate::policy::Policy;

/// Good and bad evidence, each halved every `half_life`, over a prior.
///
/// The score is the Beta distribution's mean, (prior_good + good) /
/// (prior_good + good + prior_bad + bad): with no evidence, or evidence
/// long decayed, it is the prior's. Decay is computed only from the time
/// between observations, so feeding the same timestamped observations in
/// the same order gives the same bits: the score can be rebuilt from the
/// delegator's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Reputation {
    good: f64,
    bad: f64,
    stamp: Option<Instant>,
}

impl Reputation {
    pub(crate) fn observe(&mut self, at: Instant, evidence: Evidence, policy: &Policy) {
        let kept = self.kept(at, policy.half_life);
        self.good *= kept;
        self.bad *= kept;
        match evidence {
            Evidence::Good(w) => self.good += w,
            Evidence::Bad(w) => self.bad += w,
        }
        self.stamp = Some(self.stamp.map_or(at, |stamp| stamp.max(at)));
    }

    /// The Beta mean as of `now`, in [0, 1].
    pub(crate) fn score(&self, now: Instant, policy: &Policy) -> f64 {
        let kept = self.kept(now, policy.half_life);
        let good = policy.prior_good + self.good * kept;
        let bad = policy.prior_bad + self.bad * kept;
        if good + bad <= 0.0 {
            return 1.0;
        }
        good / (good + bad)
    }

    /// The weight the cost divides by: the score, floored so that a peer
    /// with a bad past is still tried now and then and can recover.
    pub(crate) fn weight(&self, now: Instant, policy: &Policy) -> f64 {
        Self::weight_of(self.score(now, policy), policy)
    }

    /// The weight of a `score` already read, so that a caller that shows
    /// both reads the decay once.
    pub(crate) fn weight_of(score: f64, policy: &Policy) -> f64 {
        // A floor of zero, negative or NaN would let the cost divide by
        // zero; the least floor kept is tiny but positive.
        let floor = if policy.weight_floor > 1e-6 {
            policy.weight_floor.min(1.0)
        } else {
            1e-6
        };
        score.max(floor).min(1.0)
    }

    fn kept(&self, now: Instant, half_life: Duration) -> f64 {
        let Some(stamp) = self.stamp else {
            return 1.0;
        };
        if half_life.is_zero() {
            return 0.0;
        }
        let elapsed = now.saturating_duration_since(stamp).as_nanos() as f64;
        (-elapsed / half_life.as_nanos() as f64).exp2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use tokio::time::advance;

    fn verified() -> Outcome {
        Outcome::Verified {
            measured: Duration::from_millis(100),
            claimed: Some(Duration::from_millis(90)),
            terms_met: true,
        }
    }

    fn after(outcomes: &[Outcome], p: &Policy, now: Instant) -> Reputation {
        let mut r = Reputation::default();
        for o in outcomes {
            r.observe(now, o.evidence(p), p);
        }
        r
    }

    #[tokio::test(start_paused = true)]
    async fn good_raises_bad_lowers() {
        let p = Policy::default();
        let now = Instant::now();
        let prior = Reputation::default().score(now, &p);
        assert_eq!(prior, 0.75);
        assert!(after(&[verified(); 5], &p, now).score(now, &p) > prior);
        assert!(after(&[Outcome::Timeout], &p, now).score(now, &p) < prior);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_proof_weighs_more_than_a_timeout_or_a_refusal() {
        let p = Policy::default();
        let now = Instant::now();
        let base = [verified(); 10];
        let with = |bad: Outcome| {
            let mut all = base.to_vec();
            all.push(bad);
            after(&all, &p, now).score(now, &p)
        };
        let refused = with(Outcome::Refused {
            status: 429,
            retry_after: None,
        });
        let timeout = with(Outcome::Timeout);
        let invalid = with(Outcome::InvalidProof);
        let canary = with(Outcome::WrongCanary);
        assert!(refused > timeout, "{refused} {timeout}");
        assert!(timeout > invalid * 2.0, "{timeout} {invalid}");
        assert!(invalid > canary, "{invalid} {canary}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_latency_far_from_the_measured_one_lowers() {
        let p = Policy::default();
        let now = Instant::now();
        let liar = Outcome::Verified {
            measured: Duration::from_secs(3),
            claimed: Some(Duration::from_millis(100)),
            terms_met: true,
        };
        assert!(after(&[liar], &p, now).score(now, &p) < 0.75);
    }

    #[tokio::test(start_paused = true)]
    async fn evidence_decays_toward_the_prior_with_the_half_life() {
        let p = Policy::default();
        let r = after(&[Outcome::InvalidProof], &p, Instant::now());
        let fresh = r.score(Instant::now(), &p);
        // prior 3/1, bad 20: 3/24.
        assert!((fresh - 3.0 / 24.0).abs() < 1e-12, "{fresh}");
        advance(p.half_life).await;
        let halved = r.score(Instant::now(), &p);
        assert!((halved - 3.0 / 14.0).abs() < 1e-12, "{halved}");
        advance(p.half_life * 20).await;
        assert!((r.score(Instant::now(), &p) - 0.75).abs() < 1e-4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_weight_has_a_floor() {
        let p = Policy::default();
        let now = Instant::now();
        let r = after(&[Outcome::WrongCanary; 10], &p, now);
        assert!(r.score(now, &p) < p.weight_floor);
        assert_eq!(r.weight(now, &p), p.weight_floor);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuild_from_the_same_observations_is_bit_identical() {
        let p = Policy::default();
        let outcomes = [
            verified(),
            Outcome::Timeout,
            verified(),
            Outcome::InvalidProof,
            Outcome::Refused {
                status: 503,
                retry_after: Some(Duration::from_secs(1)),
            },
            verified(),
        ];
        let gaps_ms = [0u64, 1_234, 77_777, 3_600_000, 5, 86_400_001];
        let run = |base: Instant| {
            let mut r = Reputation::default();
            let mut at = base;
            for (o, gap) in outcomes.iter().zip(gaps_ms) {
                at += Duration::from_millis(gap);
                r.observe(at, o.evidence(&p), &p);
            }
            r.score(at + Duration::from_secs(600), &p).to_bits()
        };
        // A rebuild happens at another time, from another origin.
        let first = run(Instant::now());
        advance(Duration::from_secs(12_345)).await;
        let again = run(Instant::now());
        assert_eq!(first, again);
    }
}
