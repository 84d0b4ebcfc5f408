//! The executors of a node by task type, each with its concurrency limit,
//! queue and cost model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sage_types::{ProofStatus, Task};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    Chunks, Echo, ExecError, Execution, Executor, FailureKind, Simulate, SIMULATED_TASK_TYPES,
};
use sage_types::clock::now_ms;

/// How an executor's runs are priced: `base + per_second x execution time`, in ATP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    /// Charged for every run.
    pub base: f64,
    /// Charged per second of execution (queueing excluded).
    pub per_second: f64,
}

impl CostModel {
    /// The cost of a run that took `elapsed`.
    pub fn cost(&self, elapsed: Duration) -> f64 {
        self.base + self.per_second * elapsed.as_secs_f64()
    }
}

/// At most `max_concurrency` runs at once and `queue_depth` waiting; a
/// task beyond that is refused (`busy`) before anything about it is
/// recorded, so the sender may retry the same signed task.
#[derive(Debug)]
pub struct Limiter {
    slots: Semaphore,
    max_concurrency: usize,
    queue_depth: usize,
    // Reserved places: running plus waiting.
    load: AtomicUsize,
}

impl Limiter {
    /// A limiter of `max_concurrency` runs (at least 1) and `queue_depth` waiting.
    pub fn new(max_concurrency: usize, queue_depth: usize) -> Arc<Self> {
        let max_concurrency = max_concurrency.max(1);
        Arc::new(Limiter {
            slots: Semaphore::new(max_concurrency),
            max_concurrency,
            queue_depth,
            load: AtomicUsize::new(0),
        })
    }

    /// Most runs at once.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Most runs waiting.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// Runs now.
    pub fn running(&self) -> usize {
        self.max_concurrency - self.slots.available_permits()
    }

    /// Runs waiting for a place.
    pub fn waiting(&self) -> usize {
        self.load
            .load(Ordering::Relaxed)
            .saturating_sub(self.running())
    }
}

/// A place to run or wait, claimed before a task is admitted.
#[derive(Debug)]
pub struct Reservation(Option<Arc<Limiter>>);

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(limiter) = &self.0 {
            limiter.load.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One execution, as both protocols' proofs describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// When execution started, after any queueing (unix ms).
    pub started_at: u64,
    /// Measured execution time.
    pub latency: Duration,
    /// Whether it succeeded.
    pub status: ProofStatus,
    /// The kind of its failure, when it failed.
    pub failure: Option<FailureKind>,
    /// What the executor reported (on failure, `{"error": ...}` and zeros),
    /// with the cost model applied.
    pub execution: Execution,
}

impl Run {
    /// The run of a task that was running when the node stopped: failed,
    /// and not run again.
    pub fn interrupted(now_ms: u64) -> Run {
        Run {
            started_at: now_ms,
            latency: Duration::ZERO,
            status: ProofStatus::Failed,
            failure: Some(FailureKind::Interrupted),
            execution: failed(ExecError::new(
                FailureKind::Interrupted,
                "interrupted: the node stopped while this task was running; it was not run again",
            )),
        }
    }
}

/// An executor as configured for one task type.
#[derive(Clone)]
pub struct Entry {
    /// The executor.
    pub executor: Arc<dyn Executor>,
    /// Its concurrency limit and queue, if any.
    pub limiter: Option<Arc<Limiter>>,
    /// Its price, if any; without one, the executor's own figure stands.
    pub cost: Option<CostModel>,
    /// The most a task may be estimated to cost here.
    pub max_cost: Option<f64>,
    /// The largest request body (the signed task) accepted for this type,
    /// when it is not the node's own limit: a type whose inputs are large
    /// (images inline) may take more, one with small inputs less.
    pub max_body_bytes: Option<usize>,
    /// The operator says that running a task twice is harmless here (no
    /// effect beyond its answer), as the builtins say of themselves
    /// ([`Executor::idempotent`]): see [`Entry::pure`].
    pub pure: bool,
}

impl Entry {
    /// `executor` with no limit, no cost model and no ceiling.
    pub fn new(executor: Arc<dyn Executor>) -> Self {
        Entry {
            executor,
            limiter: None,
            cost: None,
            max_cost: None,
            max_body_bytes: None,
            pure: false,
        }
    }

    /// Whether running a task twice is harmless: the executor says so, or
    /// its configuration (`pure = true`). The node then lets a task's run
    /// start before its record is on the disk, and answers only once it is.
    pub fn pure(&self) -> bool {
        self.pure || self.executor.idempotent()
    }

    /// Claims a place to run or wait; `None` when the queue is full.
    pub fn reserve(&self) -> Option<Reservation> {
        let Some(limiter) = &self.limiter else {
            return Some(Reservation(None));
        };
        let capacity = limiter.max_concurrency + limiter.queue_depth;
        limiter
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load < capacity).then_some(load + 1)
            })
            .ok()
            .map(|_| Reservation(Some(limiter.clone())))
    }

    /// Runs `task` in its reserved place (waiting for a slot if needed),
    /// timing the execution alone; a failure is a run too, and gets a proof.
    pub async fn run(&self, task: &Task, reservation: Reservation) -> Run {
        self.run_streaming(task, reservation, None).await
    }

    /// [`Entry::run`], passing the output on to `chunks` as it comes when
    /// there are chunks to send to and the executor streams
    /// ([`Executor::execute_streaming`]).
    pub async fn run_streaming(
        &self,
        task: &Task,
        reservation: Reservation,
        chunks: Option<Chunks>,
    ) -> Run {
        let permit = match &reservation.0 {
            Some(limiter) => limiter.slots.acquire().await.ok(),
            None => None,
        };
        let started_at = now_ms();
        let clock = Instant::now();
        let outcome = match chunks {
            Some(chunks) => self.executor.execute_streaming(task, chunks).await,
            None => self.executor.execute(task).await,
        };
        let latency = clock.elapsed();
        drop(permit);
        drop(reservation);
        let (status, failure, mut execution) = match outcome {
            Ok(execution) => (ProofStatus::Succeeded, None, execution),
            Err(e) => (ProofStatus::Failed, Some(e.kind), failed(e)),
        };
        if let Some(model) = &self.cost {
            execution.actual_cost = model.cost(latency);
        }
        Run {
            started_at,
            latency,
            status,
            failure,
            execution,
        }
    }
}

fn failed(e: ExecError) -> Execution {
    Execution {
        result: serde_json::json!({ "error": e.message }),
        actual_cost: 0.0,
        quality: 0.0,
        convergence: 0.0,
        iterations: 0,
        energy: 0.0,
        exit_status: e.exit_status(),
    }
}

/// The executors of a node, by task type.
#[derive(Clone, Default)]
pub struct ExecutorSet {
    by_type: BTreeMap<String, Entry>,
}

impl ExecutorSet {
    /// The built-in set of a node named `platform`: `echo`, and `simulate`
    /// for the task types of the Python original's deployment guide
    /// ([`SIMULATED_TASK_TYPES`]).
    pub fn builtin(platform: &str) -> Self {
        let mut set = ExecutorSet::default();
        set.insert("echo", Entry::new(Arc::new(Echo)));
        let simulate: Arc<dyn Executor> = Arc::new(Simulate::new(platform));
        for task_type in SIMULATED_TASK_TYPES {
            set.insert(task_type, Entry::new(simulate.clone()));
        }
        set
    }

    /// Serves `task_type` with `entry`, replacing any other.
    pub fn insert(&mut self, task_type: &str, entry: Entry) {
        self.by_type.insert(task_type.to_owned(), entry);
    }

    /// The entry of `task_type`.
    pub fn get(&self, task_type: &str) -> Option<&Entry> {
        self.by_type.get(task_type)
    }

    /// The largest body limit an entry sets for its type, if any does.
    pub fn max_body_bytes(&self) -> Option<usize> {
        self.iter().filter_map(|(_, e)| e.max_body_bytes).max()
    }

    /// All entries, sorted by task type.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.by_type.iter().map(|(t, e)| (t.as_str(), e))
    }

    /// After a reload: each task type of `self` whose limits are the same
    /// as in `before` takes over `before`'s limiter, so the tasks running
    /// and waiting under the old configuration still count against the
    /// limit (a reload does not double `max_concurrency`). A task type
    /// whose limits changed gets its new limiter; the old tasks finish
    /// under the old one.
    pub fn adopt_limiters(&mut self, before: &ExecutorSet) {
        for (task_type, entry) in &mut self.by_type {
            let (Some(new), Some(old)) = (
                &entry.limiter,
                before.get(task_type).and_then(|e| e.limiter.as_ref()),
            ) else {
                continue;
            };
            if new.max_concurrency == old.max_concurrency && new.queue_depth == old.queue_depth {
                entry.limiter = Some(old.clone());
            }
        }
    }

    /// (task type, executor kind) pairs, sorted by type.
    pub fn describe(&self) -> Vec<(&str, &'static str)> {
        self.iter().map(|(t, e)| (t, e.executor.kind())).collect()
    }
}

impl std::fmt::Debug for ExecutorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.describe()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxFuture;

    /// Waits until told to finish.
    struct Gate(Arc<tokio::sync::Notify>);

    impl Executor for Gate {
        fn kind(&self) -> &'static str {
            "gate"
        }
        fn execute<'a>(&'a self, _task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
            Box::pin(async move {
                self.0.notified().await;
                Ok(Execution::of(serde_json::json!(null)))
            })
        }
    }

    fn task() -> Task {
        serde_json::from_value(serde_json::json!({
            "task_id": "t", "task_type": "gate", "issuer": "a", "audience": "b",
            "issued_at": 0, "expires_at": 1, "nonce": "00", "input": null,
            "estimated_cost": 1.0, "quality": {"min_quality": 0.0, "min_convergence": 0.0}
        }))
        .unwrap()
    }

    #[test]
    fn a_reload_keeps_the_limiters_whose_limits_did_not_change() {
        let entry = |max, queue| {
            let mut entry = Entry::new(Arc::new(Echo));
            entry.limiter = Some(Limiter::new(max, queue));
            entry
        };
        let mut before = ExecutorSet::default();
        before.insert("same", entry(1, 0));
        before.insert("changed", entry(1, 0));
        // A task holds the only place of "same".
        let held = before.get("same").unwrap().reserve().unwrap();
        let mut after = ExecutorSet::default();
        after.insert("same", entry(1, 0));
        after.insert("changed", entry(2, 0));
        after.insert("new", entry(1, 0));
        after.adopt_limiters(&before);
        assert!(Arc::ptr_eq(
            after.get("same").unwrap().limiter.as_ref().unwrap(),
            before.get("same").unwrap().limiter.as_ref().unwrap()
        ));
        // Still full: the old task counts.
        assert!(after.get("same").unwrap().reserve().is_none());
        drop(held);
        assert!(after.get("same").unwrap().reserve().is_some());
        assert_eq!(
            after
                .get("changed")
                .unwrap()
                .limiter
                .as_ref()
                .unwrap()
                .max_concurrency(),
            2
        );
        assert!(after.get("new").unwrap().reserve().is_some());
    }

    #[tokio::test]
    async fn the_limiter_admits_running_plus_queue_then_refuses() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut entry = Entry::new(Arc::new(Gate(gate.clone())));
        let limiter = Limiter::new(1, 1);
        entry.limiter = Some(limiter.clone());
        let entry = Arc::new(entry);

        let first = entry.reserve().unwrap();
        let second = entry.reserve().unwrap();
        assert!(entry.reserve().is_none(), "a third place was given");
        let (e1, e2) = (entry.clone(), entry.clone());
        let t1 = tokio::spawn(async move { e1.run(&task(), first).await });
        let t2 = tokio::spawn(async move { e2.run(&task(), second).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!((limiter.running(), limiter.waiting()), (1, 1));

        gate.notify_one();
        t1.await.unwrap();
        gate.notify_one();
        t2.await.unwrap();
        assert_eq!((limiter.running(), limiter.waiting()), (0, 0));
        // Places are given back, also by a reservation that is dropped unused.
        drop(entry.reserve().unwrap());
        assert!(entry.reserve().is_some());
    }

    /// Fails as a program that exited 3 would.
    struct Exits3;

    impl Executor for Exits3 {
        fn kind(&self) -> &'static str {
            "exits3"
        }
        fn execute<'a>(&'a self, _task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
            Box::pin(async { Err(ExecError::new(FailureKind::Exited(3), "exit 3")) })
        }
    }

    #[tokio::test]
    async fn a_run_keeps_the_kind_of_its_failure() {
        let entry = Entry::new(Arc::new(Exits3));
        let run = entry.run(&task(), entry.reserve().unwrap()).await;
        assert_eq!(run.status, ProofStatus::Failed);
        assert_eq!(run.failure, Some(FailureKind::Exited(3)));
        assert_eq!(run.execution.exit_status, Some(3));
        assert_eq!(run.execution.result, serde_json::json!({"error": "exit 3"}));

        let entry = Entry::new(Arc::new(Echo));
        let run = entry.run(&task(), entry.reserve().unwrap()).await;
        assert_eq!(run.failure, None);
        assert_eq!(Run::interrupted(0).failure, Some(FailureKind::Interrupted));
    }

    #[tokio::test]
    async fn the_cost_model_prices_execution_time() {
        let mut entry = Entry::new(Arc::new(Echo));
        entry.cost = Some(CostModel {
            base: 2.0,
            per_second: 10.0,
        });
        let run = entry.run(&task(), entry.reserve().unwrap()).await;
        assert!(run.execution.actual_cost >= 2.0);
        assert!(run.execution.actual_cost < 2.0 + 10.0 * run.latency.as_secs_f64() + 1e-9);
        assert_eq!(
            CostModel {
                base: 1.0,
                per_second: 0.5
            }
            .cost(Duration::from_secs(4)),
            3.0
        );
    }
}
