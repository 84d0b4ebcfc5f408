//! Outlier ejection (Envoy's): when a peer is set aside, and for how long.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::Health;
use crate::policy::Policy;

/// Results kept per peer for the failure rate; beyond, the oldest go first.
/// The window is short and the fleet small, so this bound is never reached
/// in practice; it only keeps a flood from growing memory.
const WINDOW_CAP: usize = 4096;

/// Why a peer is cooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    /// This many transport failures, timeouts or 5xx in a row.
    ConsecutiveFailures(u32),
    /// This many failures out of this many requests in the failure window.
    FailureRate {
        /// Failures in the window.
        failed: u32,
        /// Requests in the window.
        total: u32,
    },
    /// The peer asked for this pause (429 or 503 with `Retry-After`,
    /// capped at the policy's longest cooldown).
    RetryAfter(Duration),
    /// A trust failure: a key that no longer matches, an invalid proof, a
    /// wrong canary answer.
    Trust,
    /// A failure came back while the peer was already cooling.
    FailedWhileCooling,
}

/// The cooldown state of one peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cooldown {
    streak: u32,
    window: VecDeque<(Instant, bool)>,
    ejections: u32,
    /// Since when the peer has had no failure and not been cooling; each
    /// `ejection_quiet` after it forgives one ejection.
    quiet_since: Option<Instant>,
    until: Option<Instant>,
    reason: Option<Ejection>,
}

impl Cooldown {
    /// Until when and why the peer is cooling, if it is at `now`.
    pub(crate) fn cooling(&self, now: Instant) -> Option<(Instant, Ejection)> {
        match (self.until, self.reason) {
            (Some(until), Some(reason)) if now < until => Some((until, reason)),
            _ => None,
        }
    }

    /// Ejections that count toward the next cooldown's length, as of `now`.
    pub(crate) fn ejections(&self, now: Instant, policy: &Policy) -> u32 {
        let (ejections, _) = self.forgiven(now, policy);
        ejections
    }

    pub(crate) fn record(&mut self, at: Instant, health: Health, policy: &Policy) {
        let cooling = self.cooling(at).is_some();
        match health {
            Health::Neutral => {}
            Health::Success => {
                self.streak = 0;
                self.push(at, false, policy);
            }
            Health::RetryAfter(pause) => {
                // The peer's own word, honoured exactly (within the cap); it
                // is not evidence of a fault, so it does not escalate.
                let until = at + pause.min(policy.cooldown_max);
                self.cool_until(until, Ejection::RetryAfter(pause.min(policy.cooldown_max)));
            }
            Health::Trust => {
                self.forgive(at, policy);
                self.ejections = self.ejections.saturating_add(1);
                self.cool_until(at + policy.trust_cooldown, Ejection::Trust);
                self.reset();
            }
            Health::Failure => {
                self.forgive(at, policy);
                self.quiet_since = Some(at);
                self.streak = self.streak.saturating_add(1);
                self.push(at, true, policy);
                if cooling {
                    self.eject(at, Ejection::FailedWhileCooling, policy);
                } else if self.streak >= policy.consecutive_failures {
                    self.eject(at, Ejection::ConsecutiveFailures(self.streak), policy);
                } else {
                    let total = self.window.len() as u32;
                    let failed = self.window.iter().filter(|(_, failed)| *failed).count() as u32;
                    if total >= policy.failure_min_requests
                        && f64::from(failed) >= policy.failure_rate * f64::from(total)
                    {
                        self.eject(at, Ejection::FailureRate { failed, total }, policy);
                    }
                }
            }
        }
    }

    fn push(&mut self, at: Instant, failed: bool, policy: &Policy) {
        while self
            .window
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > policy.failure_window)
            || self.window.len() >= WINDOW_CAP
        {
            self.window.pop_front();
        }
        self.window.push_back((at, failed));
    }

    /// Ejects for one more cooldown: `cooldown_base` doubled for each
    /// ejection not yet forgiven, capped.
    fn eject(&mut self, at: Instant, reason: Ejection, policy: &Policy) {
        self.ejections = self.ejections.saturating_add(1);
        let doublings = (self.ejections - 1).min(31);
        let length = policy
            .cooldown_base
            .saturating_mul(1u32 << doublings)
            .min(policy.cooldown_max);
        self.cool_until(at + length, reason);
        self.reset();
    }

    fn cool_until(&mut self, until: Instant, reason: Ejection) {
        if self.until.is_none_or(|old| until >= old) {
            self.until = Some(until);
            self.reason = Some(reason);
        }
        self.quiet_since = self.until.max(self.quiet_since);
    }

    /// A returning peer starts with a clean record, so that the failures
    /// that ejected it do not eject it again.
    fn reset(&mut self) {
        self.streak = 0;
        self.window.clear();
    }

    fn forgive(&mut self, now: Instant, policy: &Policy) {
        (self.ejections, self.quiet_since) = self.forgiven(now, policy);
    }

    fn forgiven(&self, now: Instant, policy: &Policy) -> (u32, Option<Instant>) {
        let Some(since) = self.quiet_since else {
            return (self.ejections, None);
        };
        if policy.ejection_quiet.is_zero() {
            return (0, Some(since));
        }
        let quiet = now.saturating_duration_since(since);
        let periods = quiet.as_nanos() / policy.ejection_quiet.as_nanos();
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        let moved = policy.ejection_quiet.saturating_mul(periods);
        (self.ejections.saturating_sub(periods), Some(since + moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn three_consecutive_failures_eject_two_do_not() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let now = Instant::now();
        c.record(now, Health::Failure, &p);
        c.record(now, Health::Failure, &p);
        assert_eq!(c.cooling(now), None);
        c.record(now, Health::Failure, &p);
        assert_eq!(
            c.cooling(now),
            Some((now + p.cooldown_base, Ejection::ConsecutiveFailures(3)))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_breaks_the_streak() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let now = Instant::now();
        // Enough successes first that the rate (4 of 9) stays under 50%.
        for _ in 0..4 {
            c.record(now, Health::Success, &p);
        }
        for _ in 0..2 {
            c.record(now, Health::Failure, &p);
        }
        c.record(now, Health::Success, &p);
        c.record(now, Health::Failure, &p);
        c.record(now, Health::Failure, &p);
        assert_eq!(c.cooling(now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_needs_the_minimum_count() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        // Alternating: never three in a row, half of them failures.
        let now = Instant::now();
        c.record(now, Health::Failure, &p);
        c.record(now, Health::Success, &p);
        c.record(now, Health::Failure, &p);
        c.record(now, Health::Success, &p);
        assert_eq!(
            c.cooling(now),
            None,
            "4 requests are under the minimum of 5"
        );
        c.record(now, Health::Failure, &p);
        assert_eq!(
            c.cooling(now).map(|(_, why)| why),
            Some(Ejection::FailureRate {
                failed: 3,
                total: 5
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_rate_forgets_outside_its_window() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        c.record(Instant::now(), Health::Failure, &p);
        c.record(Instant::now(), Health::Success, &p);
        c.record(Instant::now(), Health::Failure, &p);
        c.record(Instant::now(), Health::Success, &p);
        advance(p.failure_window + ms(1)).await;
        c.record(Instant::now(), Health::Success, &p);
        c.record(Instant::now(), Health::Failure, &p);
        assert_eq!(c.cooling(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_exactly() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let pause = Duration::from_secs(7);
        c.record(Instant::now(), Health::RetryAfter(pause), &p);
        advance(pause - ms(1)).await;
        assert!(c.cooling(Instant::now()).is_some());
        advance(ms(1)).await;
        assert_eq!(c.cooling(Instant::now()), None);
        assert_eq!(
            c.ejections(Instant::now(), &p),
            0,
            "a pause asked for is no ejection"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trust_failure_ejects_at_once() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let now = Instant::now();
        c.record(now, Health::Trust, &p);
        assert_eq!(
            c.cooling(now),
            Some((now + p.trust_cooldown, Ejection::Trust))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_ejections_lengthen_and_cap() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let mut lengths = Vec::new();
        for _ in 0..12 {
            let now = Instant::now();
            for _ in 0..3 {
                c.record(now, Health::Failure, &p);
            }
            let (until, _) = c.cooling(now).expect("ejected");
            lengths.push((until - now).as_secs());
            advance(until - now).await;
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_while_cooling_extends_it() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        let start = Instant::now();
        for _ in 0..3 {
            c.record(start, Health::Failure, &p);
        }
        advance(ms(500)).await;
        c.record(Instant::now(), Health::Failure, &p);
        let (until, why) = c.cooling(Instant::now()).expect("still cooling");
        assert_eq!(why, Ejection::FailedWhileCooling);
        assert_eq!(until, Instant::now() + 2 * p.cooldown_base);
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_are_forgiven_after_quiet_periods() {
        let p = Policy::default();
        let mut c = Cooldown::default();
        for _ in 0..3 {
            for _ in 0..3 {
                c.record(Instant::now(), Health::Failure, &p);
            }
            let (until, _) = c.cooling(Instant::now()).expect("ejected");
            advance(until - Instant::now()).await;
        }
        assert_eq!(c.ejections(Instant::now(), &p), 3);
        advance(p.ejection_quiet * 2).await;
        assert_eq!(c.ejections(Instant::now(), &p), 1);
        for _ in 0..3 {
            c.record(Instant::now(), Health::Failure, &p);
        }
        let (until, _) = c.cooling(Instant::now()).expect("ejected");
        assert_eq!(until - Instant::now(), 2 * p.cooldown_base);
    }
}
