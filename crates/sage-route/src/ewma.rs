//! The peak-EWMA latency estimate (Finagle's and Linkerd's).

use std::time::Duration;

use tokio::time::Instant;

/// A latency estimate that jumps to a sample above it and decays toward a
/// sample below it with time constant `tau`, so that a peer turning slow is
/// seen at once and one turning fast is believed gradually. Read after an
/// idle time, it decays toward the policy's idle latency, so that an idle
/// slow peer is tried again rather than shunned forever on old samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PeakEwma {
    nanos: f64,
    stamp: Instant,
    /// Whether `nanos` comes from a sample rather than the initial guess,
    /// which the first sample replaces whole.
    measured: bool,
}

impl PeakEwma {
    pub(crate) fn new(initial: Duration, now: Instant) -> Self {
        PeakEwma {
            nanos: initial.as_nanos() as f64,
            stamp: now,
            measured: false,
        }
    }

    /// Takes one sample observed at `at` (earlier than the last one counts
    /// as at the same time).
    pub(crate) fn observe(&mut self, sample: Duration, at: Instant, tau: Duration) {
        let sample = sample.as_nanos() as f64;
        if sample > self.nanos || !self.measured {
            self.nanos = sample;
        } else {
            let kept = decay(at.saturating_duration_since(self.stamp), tau);
            self.nanos = self.nanos * kept + sample * (1.0 - kept);
        }
        self.stamp = self.stamp.max(at);
        self.measured = true;
    }

    /// The estimate as of `now`, drifted toward `idle` since the last sample.
    pub(crate) fn read(&self, now: Instant, tau: Duration, idle: Duration) -> f64 {
        let idle = idle.as_nanos() as f64;
        let kept = decay(now.saturating_duration_since(self.stamp), tau);
        idle + (self.nanos - idle) * kept
    }
}

/// The share of the old estimate kept after `elapsed`: e^(-elapsed/tau).
fn decay(elapsed: Duration, tau: Duration) -> f64 {
    if tau.is_zero() {
        return 0.0;
    }
    (-(elapsed.as_nanos() as f64) / tau.as_nanos() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    fn ms(v: f64) -> f64 {
        v / 1e6
    }

    #[tokio::test(start_paused = true)]
    async fn jumps_up_at_once_and_comes_down_gradually() {
        let start = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(10), start);
        e.observe(Duration::from_millis(200), start, TAU);
        assert_eq!(ms(e.read(start, TAU, Duration::ZERO)), 200.0);

        tokio::time::advance(Duration::from_secs(1)).await;
        e.observe(Duration::from_millis(10), Instant::now(), TAU);
        let after_one = ms(e.read(Instant::now(), TAU, Duration::ZERO));
        // One second of a 10 s time constant keeps about 90% of the old value.
        assert!((180.0..=190.0).contains(&after_one), "{after_one}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_sample_replaces_the_initial_guess() {
        let start = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(100), start);
        e.observe(Duration::from_millis(5), start, TAU);
        assert_eq!(ms(e.read(start, TAU, Duration::ZERO)), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_estimate_drifts_to_the_idle_latency() {
        let start = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(10), start);
        e.observe(Duration::from_millis(50), start, TAU);
        tokio::time::advance(Duration::from_secs(30)).await;
        let later = ms(e.read(Instant::now(), TAU, Duration::ZERO));
        assert!(later < 5.0, "{later}");
        let toward_default = ms(e.read(Instant::now(), TAU, Duration::from_millis(20)));
        assert!((20.0..22.0).contains(&toward_default), "{toward_default}");
    }
}
