//! The tasks a node is running: owned by the node, not by the requests
//! that brought them.
//!
//! A recorded task runs on a task of the runtime of its own
//! ([`Running::spawn`]), so that a dropped connection, a client's timeout
//! or a cancelled request future neither kills its program nor leaves its
//! record `running`: the request only waits for the outcome. The registry
//! keeps an abort handle of each, so that a stopping node can wait for all
//! of them ([`Running::idle`]) and, past its drain deadline, abort the rest
//! ([`Running::abort_all`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// The running tasks of a node. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tasks: Mutex<Tasks>,
    /// How many tasks run; watched by [`Running::idle`].
    count: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct Tasks {
    next: u64,
    handles: HashMap<u64, AbortHandle>,
}

impl Default for Running {
    fn default() -> Self {
        Running {
            inner: Arc::new(Inner {
                tasks: Mutex::new(Tasks::default()),
                count: watch::Sender::new(0),
            }),
        }
    }
}

impl Running {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        // A panic while holding the lock leaves a map that is still whole.
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` on a task of its own, counted until it ends, however it
    /// ends (done, panicked or aborted). Dropping the returned handle does
    /// not stop it.
    pub(crate) fn spawn<T, F>(&self, work: F) -> JoinHandle<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        // The entry goes in under the lock that the task's own removal
        // takes, so it is never removed before it is there.
        let mut tasks = self.tasks();
        let id = tasks.next;
        tasks.next += 1;
        let ended = Ended {
            running: self.clone(),
            id,
        };
        // The task keeps the span of the request that started it, so that
        // its log lines carry the request's id.
        let handle = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let _ended = ended;
            work.await
        }));
        tasks.handles.insert(id, handle.abort_handle());
        // Under the lock, so that counts are sent in the order they change.
        self.inner.count.send_replace(tasks.handles.len());
        handle
    }

    /// Tasks running now.
    pub(crate) fn count(&self) -> usize {
        *self.inner.count.borrow()
    }

    /// Completes once no task runs.
    pub(crate) async fn idle(&self) {
        let mut count = self.inner.count.subscribe();
        // The sender lives in `self`: the channel cannot close meanwhile.
        let _ = count.wait_for(|&n| n == 0).await;
    }

    /// Aborts every running task (their futures are dropped at their next
    /// await, which kills the programs of `command` executors); returns how
    /// many there were.
    pub(crate) fn abort_all(&self) -> usize {
        let tasks = self.tasks();
        for handle in tasks.handles.values() {
            handle.abort();
        }
        tasks.handles.len()
    }
}

/// Removes its task from the registry when dropped: at the task's end,
/// by completion, panic or abort.
struct Ended {
    running: Running,
    id: u64,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let mut tasks = self.running.tasks();
        tasks.handles.remove(&self.id);
        self.running.inner.count.send_replace(tasks.handles.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_task_runs_to_its_end_when_its_handle_is_dropped_and_is_counted_until_then() {
        let running = Running::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = gate.clone();
        drop(running.spawn(async move {
            opened.notified().await;
            let _ = tx.send("ran to its end");
        }));
        assert_eq!(running.count(), 1);
        gate.notify_one();
        assert_eq!(rx.await.unwrap(), "ran to its end");
        tokio::time::timeout(Duration::from_secs(10), running.idle())
            .await
            .expect("idle once the task ended");
        assert_eq!(running.count(), 0);
    }

    #[tokio::test]
    async fn panicked_and_aborted_tasks_leave_the_count() {
        let running = Running::default();
        let panicked = running.spawn(async { panic!("a task that panics") });
        assert!(panicked.await.unwrap_err().is_panic());
        let stuck = running.spawn(std::future::pending::<()>());
        let also_stuck = running.spawn(std::future::pending::<()>());
        assert_eq!(running.count(), 2);
        assert_eq!(running.abort_all(), 2);
        assert!(stuck.await.unwrap_err().is_cancelled());
        assert!(also_stuck.await.unwrap_err().is_cancelled());
        tokio::time::timeout(Duration::from_secs(10), running.idle())
            .await
            .expect("idle once every task ended");
        assert_eq!(running.count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_short_tasks_from_many_threads_bring_the_count_back_to_zero() {
        let running = Running::default();
        let spawners: Vec<_> = (0..4)
            .map(|_| {
                let running = running.clone();
                tokio::spawn(async move {
                    for _ in 0..500 {
                        drop(running.spawn(async { tokio::task::yield_now().await }));
                    }
                })
            })
            .collect();
        for spawner in spawners {
            spawner.await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), running.idle())
            .await
            .expect("idle");
        assert_eq!(running.count(), 0);
    }
}
