//! The routing policy of a sage fleet: which peer gets the next task.
//!
//! Pure and deterministic: no I/O, keys generic (a peer, or a peer and a
//! task type), time from `tokio::time::Instant` (paused in tests) and
//! randomness passed in. The delegator measures, the router decides:
//!
//! - **Power of two choices** (Finagle, Linkerd): two candidates drawn at
//!   random, the one with the lower cost wins, a tie at random. The cost is
//!   `peak_ewma_latency × (in_flight + 1) / weight`.
//! - **Peak-EWMA latency** of what the delegator measured (to the verified
//!   proof), never what a proof claims: it jumps to a slower sample and
//!   decays toward a faster one (`tau`, 10 s). Read after an idle time it
//!   decays toward the idle latency (0), so an idle slow peer is tried
//!   again. A failure or refusal is a 5 s penalty sample, so a peer that
//!   refuses fast does not look fast.
//! - **In-flight counts** held by an [`Attempt`], given back on every exit
//!   path: finished, dropped, cancelled, unwound.
//! - **Outlier ejection** (Envoy): 3 consecutive transport failures or
//!   5xx; a failure rate of 50% over 30 s with at least 5 requests; a 429
//!   or 503 with `Retry-After`, honoured exactly (capped at 5 min); a
//!   trust failure at once (5 min). Cooldowns double from 1 s to 5 min; a
//!   failure while cooling extends it; each quiet minute forgives one
//!   ejection. A peer back from a cooldown is tried once before costs
//!   decide again (a half-open probe), its estimate reset to the initial
//!   guess that the probe's sample replaces: otherwise the penalty samples
//!   of its outage would keep a recovered peer out for tens of seconds.
//! - **Never strand the caller**: all cooling, [`Router::pick`] names the
//!   one back first and how long to wait, or, past the deadline, picks
//!   among them anyway (panic mode, as Envoy's panic threshold).
//! - **Retry budget** (Finagle): retries up to 20% of the last 10 s of
//!   requests, plus 3 per window ([`RetryBudget`]).
//! - **Reputation** (LiteLLM's deprioritising of failing deployments, made
//!   a score): a Beta(good, bad) mean with a 24 h half-life, bad events
//!   weighing more, lies and trust failures much more, a claimed latency
//!   far from the measured one a bad event; the weight is floored at 0.05
//!   so a peer can recover. It depends only on the observations and their
//!   spacing, so the delegator's ledger rebuilds it bit for bit
//!   ([`Router::observe_at`]).
//!
//! ```
//! # use sage_route::{Outcome, Policy, Router};
//! # use rand::SeedableRng;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let router = Router::new(Policy::default());
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let pick = router.pick(&["thor", "sprout"], None, &mut rng).unwrap();
//! let attempt = router.start(&pick.key);
//! attempt.finish(Outcome::Verified {
//!     measured: std::time::Duration::from_millis(40),
//!     claimed: None,
//!     terms_met: true,
//! });
//! # }
//! ```

mod attempt;
mod budget;
mod cooldown;
mod ewma;
mod explain;
mod outcome;
mod policy;
mod reputation;
mod router;
mod state;

pub use attempt::Attempt;
pub use budget::RetryBudget;
pub use cooldown::Ejection;
pub use explain::{Explained, PeerSnapshot, Standing};
pub use outcome::Outcome;
pub use policy::{Policy, Weights};
pub use router::{Pick, Router};
