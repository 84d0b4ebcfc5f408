//! The guard that holds one request's place in a peer's in-flight count.

use tokio::time::Instant;

use crate::outcome::Outcome;
use crate::state::{lock, Shared};

/// One request in flight to a key, from [`Router::start`](crate::Router::start).
///
/// The key's in-flight count stays raised while this lives and comes back
/// down on every exit path: [`finish`](Attempt::finish), or a drop without
/// it (an error path, the cancellation of a future holding it, a panic
/// unwinding), which records no sample, because a request given up by its
/// caller says nothing about the peer.
#[derive(Debug)]
#[must_use = "dropping an attempt ends it without recording an outcome"]
pub struct Attempt<K: Ord + Clone> {
    shared: Shared<K>,
    key: K,
    open: bool,
}

impl<K: Ord + Clone> Attempt<K> {
    pub(crate) fn begin(shared: Shared<K>, key: K) -> Self {
        lock(&shared).begin(&key, Instant::now());
        Attempt {
            shared,
            key,
            open: true,
        }
    }

    /// The key this attempt is for.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Ends the attempt, recording its outcome as of now.
    pub fn finish(mut self, outcome: Outcome) {
        self.open = false;
        let mut table = lock(&self.shared);
        table.end(&self.key);
        table.record(&self.key, Instant::now(), outcome);
    }
}

impl<K: Ord + Clone> Drop for Attempt<K> {
    fn drop(&mut self) {
        if self.open {
            lock(&self.shared).end(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::time::Duration;

    use crate::{Outcome, Policy, Router};

    fn in_flight(router: &Router<&'static str>, key: &'static str) -> u64 {
        router
            .snapshot()
            .into_iter()
            .find(|s| s.key == key)
            .map_or(0, |s| s.in_flight)
    }

    #[tokio::test(start_paused = true)]
    async fn finish_and_drop_both_give_the_place_back() {
        let router = Router::new(Policy::default());
        let a = router.start(&"thor");
        let b = router.start(&"thor");
        assert_eq!(in_flight(&router, "thor"), 2);
        a.finish(Outcome::Transport);
        assert_eq!(in_flight(&router, "thor"), 1);
        drop(b);
        assert_eq!(in_flight(&router, "thor"), 0);
        // An attempt dropped unfinished recorded nothing: one failure only.
        let c = router.start(&"thor");
        c.finish(Outcome::Transport);
        assert!(router.snapshot()[0].cooling_until.is_none());
        let d = router.start(&"thor");
        d.finish(Outcome::Transport);
        assert!(router.snapshot()[0].cooling_until.is_some());
        assert_eq!(in_flight(&router, "thor"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_task_gives_the_place_back() {
        let router = Router::new(Policy::default());
        let held = router.clone();
        let task = tokio::spawn(async move {
            let _attempt = held.start(&"thor");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        tokio::task::yield_now().await;
        assert_eq!(in_flight(&router, "thor"), 1);
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        assert_eq!(in_flight(&router, "thor"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_gives_the_place_back() {
        let router = Router::new(Policy::default());
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let _attempt = router.start(&"thor");
            panic!("the caller's code panicked");
        }));
        assert!(caught.is_err());
        assert_eq!(in_flight(&router, "thor"), 0);

        let held = router.clone();
        let task = tokio::spawn(async move {
            let _attempt = held.start(&"thor");
            tokio::task::yield_now().await;
            panic!("a spawned delegation panicked");
        });
        assert!(task.await.expect_err("panicked").is_panic());
        assert_eq!(in_flight(&router, "thor"), 0);
        // The router still works after a panic on another thread.
        let a = router.start(&"thor");
        assert_eq!(in_flight(&router, "thor"), 1);
        a.finish(Outcome::Failed);
        assert_eq!(in_flight(&router, "thor"), 0);
    }
}
