//! Per-peer rate limits: one token bucket per verified key. Keyed by the
//! key that signed the task, not by the IP address: peers behind one NAT
//! do not share a budget, and a peer cannot escape its budget by changing
//! address.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The buckets of the peers seen, by key id.
#[derive(Debug, Default)]
pub(crate) struct PeerRate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl PeerRate {
    /// Takes one token from `key_id`'s bucket, refilled at `rate` per
    /// second up to `burst`. `Err` carries how long until a token is there.
    pub(crate) fn take(
        &self,
        key_id: &str,
        rate: f64,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let burst = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(key_id.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            // Bounded: `Limits::check` keeps the rate at 0.001/s or more.
            Err(Duration::try_from_secs_f64((1.0 - bucket.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }

    /// Gives back the token a request took, when it turned out to be a
    /// replay: a captured envelope sent again must not spend its signer's
    /// budget.
    pub(crate) fn refund(&self, key_id: &str, burst: u32) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key_id) {
            bucket.tokens = (bucket.tokens + 1.0).min(f64::from(burst.max(1)));
        }
    }

    /// Keeps only the buckets whose key id `keep` accepts.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| keep(key));
    }
}

/// The bucket size when none is configured: two seconds' worth, at least 1.
pub(crate) fn default_burst(rate: f64) -> u32 {
    (rate * 2.0).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = PeerRate::default();
        let t0 = Instant::now();
        // Key `a`: 2 tokens a second, 3 at most.
        let take = |at| rate.take("a", 2.0, 3, at);
        assert!(take(t0).is_ok());
        assert!(take(t0).is_ok());
        assert!(take(t0).is_ok());
        let wait = take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another key has its own bucket.
        assert!(rate.take("b", 2.0, 3, t0).is_ok());
        // Half a second later, one token (2 per second).
        let t1 = t0 + Duration::from_millis(500);
        assert!(take(t1).is_ok());
        assert!(take(t1).is_err());
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(take(t2).is_ok());
        }
        assert!(take(t2).is_err());
        // A refund gives one back, never beyond the burst.
        rate.refund("a", 3);
        assert!(take(t2).is_ok());
        for _ in 0..10 {
            rate.refund("a", 3);
        }
        for _ in 0..3 {
            assert!(take(t2).is_ok());
        }
        assert!(take(t2).is_err());
    }

    #[test]
    fn retain_forgets_removed_keys() {
        let rate = PeerRate::default();
        let t0 = Instant::now();
        assert!(rate.take("a", 1.0, 1, t0).is_ok());
        assert!(rate.take("a", 1.0, 1, t0).is_err());
        rate.retain(|k| k != "a");
        // A fresh bucket: full.
        assert!(rate.take("a", 1.0, 1, t0).is_ok());
    }

    #[test]
    fn the_default_burst_is_two_seconds_worth() {
        assert_eq!(default_burst(0.1), 1);
        assert_eq!(default_burst(2.5), 5);
        assert_eq!(default_burst(1000.0), 2000);
    }
}
