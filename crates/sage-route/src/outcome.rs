//! What came of one request to a peer, and what each part of the policy
//! makes of it.

use std::time::Duration;

use crate::policy::{Policy, Weights};

/// What came of one request, as the delegator saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A proof that verified against the peer's key.
    Verified {
        /// Time from sending to the verified proof, measured by the
        /// delegator: the only latency the router believes.
        measured: Duration,
        /// The execution time the proof claims, if it states one.
        claimed: Option<Duration>,
        /// Whether the proof meets the task's terms.
        terms_met: bool,
    },
    /// A signed proof of a failed execution.
    Failed,
    /// The peer refused the task with this HTTP status.
    Refused {
        /// The HTTP status (429, 503, ...).
        status: u16,
        /// The `Retry-After` it sent, if any.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS, TLS.
    Transport,
    /// No answer within the caller's timeout.
    Timeout,
    /// A 5xx that is not a refusal.
    ServerError,
    /// An answer whose proof did not verify.
    InvalidProof,
    /// The peer's key no longer matches the one the delegator knows.
    TrustFailure,
    /// A wrong answer to a canary task.
    WrongCanary,
}

/// What an outcome means for the cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The peer answered with a signed proof: the transport works.
    Success,
    /// Counts toward the consecutive and rate ejections.
    Failure,
    /// Ejects at once.
    Trust,
    /// The peer asked for this pause.
    RetryAfter(Duration),
    /// Back pressure without a pause asked for: the latency penalty is
    /// enough.
    Neutral,
}

/// One event of the reputation: its side and weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Evidence {
    Good(f64),
    Bad(f64),
}

impl Outcome {
    /// The latency sample this outcome counts as.
    pub(crate) fn latency(&self, policy: &Policy) -> Duration {
        match *self {
            Outcome::Verified { measured, .. } => measured,
            _ => policy.penalty,
        }
    }

    pub(crate) fn health(&self) -> Health {
        match *self {
            // A failed execution still came back signed: it says nothing
            // against the peer's reachability, and its penalty sample and
            // reputation already count against it.
            Outcome::Verified { .. } | Outcome::Failed => Health::Success,
            Outcome::Refused {
                status: 429 | 503,
                retry_after: Some(pause),
            } => Health::RetryAfter(pause),
            Outcome::Refused { status, .. } if status >= 500 => Health::Failure,
            Outcome::Refused { .. } => Health::Neutral,
            Outcome::Transport | Outcome::Timeout | Outcome::ServerError => Health::Failure,
            Outcome::InvalidProof | Outcome::TrustFailure | Outcome::WrongCanary => Health::Trust,
        }
    }

    pub(crate) fn evidence(&self, policy: &Policy) -> Evidence {
        let w: &Weights = &policy.weights;
        match *self {
            Outcome::Verified {
                measured,
                claimed,
                terms_met,
            } => {
                if claimed.is_some_and(|claimed| claim_is_off(claimed, measured, policy)) {
                    Evidence::Bad(w.latency_gap)
                } else if !terms_met {
                    Evidence::Bad(w.terms_unmet)
                } else {
                    Evidence::Good(w.good)
                }
            }
            Outcome::Failed => Evidence::Bad(w.failed),
            Outcome::Refused { .. } => Evidence::Bad(w.refused),
            Outcome::Transport | Outcome::ServerError => Evidence::Bad(w.transport),
            Outcome::Timeout => Evidence::Bad(w.timeout),
            Outcome::InvalidProof => Evidence::Bad(w.invalid_proof),
            Outcome::TrustFailure => Evidence::Bad(w.trust_failure),
            Outcome::WrongCanary => Evidence::Bad(w.wrong_canary),
        }
    }
}

/// Whether a claimed execution time is implausible against the measured
/// round trip: much shorter (a peer inflating its speed) or much longer
/// (which no honest clock can produce, the round trip holding the run).
fn claim_is_off(claimed: Duration, measured: Duration, policy: &Policy) -> bool {
    let claimed = claimed.as_secs_f64();
    let measured = measured.as_secs_f64();
    let slack = policy.claim_slack.as_secs_f64();
    let factor = policy.claim_factor;
    claimed * factor + slack < measured || claimed > measured * factor + slack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(measured_ms: u64, claimed_ms: Option<u64>) -> Outcome {
        Outcome::Verified {
            measured: Duration::from_millis(measured_ms),
            claimed: claimed_ms.map(Duration::from_millis),
            terms_met: true,
        }
    }

    #[test]
    fn claims_far_from_the_measured_latency_are_bad() {
        let policy = Policy::default();
        let good = Evidence::Good(policy.weights.good);
        let gap = Evidence::Bad(policy.weights.latency_gap);
        assert_eq!(verified(1000, Some(900)).evidence(&policy), good);
        assert_eq!(verified(1000, None).evidence(&policy), good);
        assert_eq!(verified(1000, Some(100)).evidence(&policy), gap);
        assert_eq!(verified(100, Some(1000)).evidence(&policy), gap);
        // Within the absolute slack, small numbers are not judged by ratio.
        assert_eq!(verified(40, Some(1)).evidence(&policy), good);
    }

    #[test]
    fn only_429_and_503_pause_for_retry_after() {
        let pause = Some(Duration::from_secs(7));
        let refused = |status| Outcome::Refused {
            status,
            retry_after: pause,
        };
        assert_eq!(
            refused(429).health(),
            Health::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            refused(503).health(),
            Health::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(refused(500).health(), Health::Failure);
        assert_eq!(refused(403).health(), Health::Neutral);
    }
}
