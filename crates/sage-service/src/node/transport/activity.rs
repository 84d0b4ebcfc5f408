//! What one connection is doing, shared by its stream, its requests, its
//! loop and the [`Registry`](super::registry::Registry) (which reads it to
//! find the idlest connection).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A connection's activity. The connection's own parts run in one task;
/// the atomics are for the registry, which reads them from the accept loop.
pub(super) struct Activity {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte read or written, or the
    /// last request's start or end.
    last_ms: AtomicU64,
    /// Milliseconds from `epoch` to the end of the last request (0 before
    /// the first): since when the connection has had no request in progress.
    quiet_ms: AtomicU64,
    /// Requests whose answer is being made.
    in_flight: AtomicUsize,
    /// Bytes of a request head came and the head is not complete yet.
    head_pending: AtomicBool,
    /// The body of the request in flight did not come in time.
    body_timed_out: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            quiet_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_pending: AtomicBool::new(false),
            body_timed_out: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes moved.
    pub(super) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Whether a request is in progress (from its head's end to its
    /// answer's headers).
    pub(super) fn in_request(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }

    /// Since when no request has been in progress: the end of the last
    /// one, or the connection's start. Bytes of an unfinished head do not
    /// count as a request, so a slow sender is as idle as a silent one.
    pub(super) fn quiet_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.quiet_ms.load(Ordering::Relaxed))
    }

    /// When the connection may next be found idle for `idle`.
    pub(super) fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_request() {
            return Instant::now() + idle;
        }
        self.last() + idle
    }

    /// Whether nothing is in flight and nothing moved for `idle`.
    pub(super) fn idle_for(&self, idle: Duration) -> bool {
        !self.in_request() && self.last() + idle <= Instant::now()
    }

    /// Marks a request head as begun; whether one already was.
    pub(super) fn begin_head(&self) -> bool {
        self.head_pending.swap(true, Ordering::Relaxed)
    }

    /// Whether a request head is being read (or, at the start, awaited).
    pub(super) fn head_pending(&self) -> bool {
        self.head_pending.load(Ordering::Relaxed)
    }

    /// The body of the request in flight did not come within its limit.
    pub(super) fn body_timed_out(&self) {
        self.body_timed_out.store(true, Ordering::Relaxed);
    }

    /// Whether the body of the request in flight came too late (once).
    pub(super) fn take_body_timed_out(&self) -> bool {
        self.body_timed_out.swap(false, Ordering::Relaxed)
    }
}

/// One request in progress on a connection, until dropped.
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn begin(activity: Arc<Activity>) -> Self {
        activity.head_pending.store(false, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity)
    }

    pub(super) fn activity(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity
                .quiet_ms
                .store(activity.now_ms(), Ordering::Relaxed);
        }
        activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_means_nothing_in_flight_and_nothing_moving() {
        let activity = Activity::new();
        assert!(activity.idle_for(Duration::ZERO));
        assert!(!activity.idle_for(Duration::from_secs(3600)));
        let request = InFlight::begin(Arc::new(Activity::new()));
        assert!(
            !request.activity().idle_for(Duration::ZERO),
            "a request is in flight"
        );
        assert!(request.activity().idle_deadline(Duration::from_secs(60)) > Instant::now());
        let activity = request.0.clone();
        drop(request);
        assert!(activity.idle_for(Duration::ZERO));
    }

    #[test]
    fn quiet_since_is_the_start_then_the_end_of_the_last_request() {
        let activity = Arc::new(Activity::new());
        let start = activity.quiet_since();
        assert!(!activity.in_request());
        std::thread::sleep(Duration::from_millis(5));
        let request = InFlight::begin(activity.clone());
        assert!(activity.in_request());
        // Unchanged while the request runs (eviction skips it meanwhile).
        assert_eq!(activity.quiet_since(), start);
        std::thread::sleep(Duration::from_millis(5));
        drop(request);
        assert!(!activity.in_request());
        assert!(activity.quiet_since() >= start + Duration::from_millis(10));
    }
}
