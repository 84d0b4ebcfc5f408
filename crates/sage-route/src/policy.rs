//! Every threshold of the routing policy, in one value.

use std::time::Duration;

/// The thresholds of the routing policy. `Default` holds the documented
/// values; a caller changes only the fields it has a reason to.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Time constant of the latency estimate: how fast it follows samples
    /// below it, and how fast an idle estimate drifts to `idle_latency`.
    pub tau: Duration,
    /// The estimate of a key never measured. Low enough that a new peer is
    /// tried soon, not zero so that a burst does not all go to it.
    pub initial_latency: Duration,
    /// What an estimate not refreshed decays toward. Zero, as in Finagle and
    /// tower: a slow peer left idle long enough costs less than a busy fast
    /// one, gets one request, and so is measured again.
    pub idle_latency: Duration,
    /// The latency sample a failure or a refusal counts as, so that a peer
    /// that refuses fast never looks fast.
    pub penalty: Duration,
    /// Consecutive transport failures, timeouts or 5xx that eject a peer.
    pub consecutive_failures: u32,
    /// The share of failures over `failure_window` that ejects a peer.
    pub failure_rate: f64,
    /// The window over which `failure_rate` is measured.
    pub failure_window: Duration,
    /// Requests the window must hold before `failure_rate` can eject.
    pub failure_min_requests: u32,
    /// The first ejection's cooldown; each further one doubles it.
    pub cooldown_base: Duration,
    /// The longest cooldown, also the cap on a peer's `Retry-After`.
    pub cooldown_max: Duration,
    /// The cooldown after a trust failure (a key that no longer matches,
    /// an invalid proof, a wrong canary answer): an operator must act, so
    /// retrying sooner only repeats the failure.
    pub trust_cooldown: Duration,
    /// Each quiet period (no failure, not cooling) forgives one ejection.
    pub ejection_quiet: Duration,
    /// Half-life of the reputation's evidence.
    pub half_life: Duration,
    /// The reputation's prior good weight (the Beta distribution's alpha).
    /// Above the bad one, so that a peer not yet known starts with the
    /// benefit of the doubt (0.75) rather than as one failing half the time.
    pub prior_good: f64,
    /// The reputation's prior bad weight (the Beta distribution's beta).
    pub prior_bad: f64,
    /// The least weight a reputation gives, so that a peer can recover.
    pub weight_floor: f64,
    /// A claimed execution time off the measured one by more than this
    /// factor (beyond `claim_slack`) is a negative event.
    pub claim_factor: f64,
    /// The absolute slack of the claimed-latency comparison.
    pub claim_slack: Duration,
    /// What each outcome weighs in the reputation.
    pub weights: Weights,
}

/// What each outcome weighs in the reputation. Bad events weigh more than a
/// good one; those that show a peer lying or no longer being itself weigh
/// much more than those a healthy peer can have on a bad day.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// A verified proof, terms met, claimed latency plausible.
    pub good: f64,
    /// A refusal (429, 503, other statuses).
    pub refused: f64,
    /// A timeout.
    pub timeout: f64,
    /// A transport failure or a 5xx.
    pub transport: f64,
    /// A signed proof of a failed execution.
    pub failed: f64,
    /// A verified proof whose terms were not met.
    pub terms_unmet: f64,
    /// A claimed latency far from the measured one.
    pub latency_gap: f64,
    /// An invalid proof.
    pub invalid_proof: f64,
    /// A key that no longer matches.
    pub trust_failure: f64,
    /// A wrong answer to a canary task, whose answer the delegator knows.
    pub wrong_canary: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            good: 1.0,
            refused: 0.5,
            timeout: 1.0,
            transport: 1.0,
            failed: 1.0,
            terms_unmet: 2.0,
            latency_gap: 5.0,
            invalid_proof: 20.0,
            trust_failure: 20.0,
            wrong_canary: 50.0,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            tau: Duration::from_secs(10),
            initial_latency: Duration::from_millis(100),
            idle_latency: Duration::ZERO,
            penalty: Duration::from_secs(5),
            consecutive_failures: 3,
            failure_rate: 0.5,
            failure_window: Duration::from_secs(30),
            failure_min_requests: 5,
            cooldown_base: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(300),
            trust_cooldown: Duration::from_secs(300),
            ejection_quiet: Duration::from_secs(60),
            half_life: Duration::from_secs(24 * 3600),
            prior_good: 3.0,
            prior_bad: 1.0,
            weight_floor: 0.05,
            claim_factor: 3.0,
            claim_slack: Duration::from_millis(50),
            weights: Weights::default(),
        }
    }
}
