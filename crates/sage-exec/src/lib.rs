#![doc = include_str!("../../../docs/executors.md")]

mod builtin;
pub mod command;
pub mod http;
mod leftover;
mod set;
pub mod sse;

use std::future::Future;
use std::pin::Pin;

use sage_types::Task;

pub use builtin::{Echo, Simulate, SIMULATED_TASK_TYPES};
pub use leftover::Leftovers;
pub use set::{CostModel, Entry, ExecutorSet, Limiter, Reservation, Run};

/// Where a streaming execution passes the pieces of its output on as they
/// come ([`Executor::execute_streaming`]). A closed receiver is no reason
/// to stop: the run goes on to its end and its result is the whole output.
pub type Chunks = tokio::sync::mpsc::UnboundedSender<String>;

/// A boxed future, so that executors can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an execution produced, as the proof will state it.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The result.
    pub result: serde_json::Value,
    /// Cost in ATP.
    pub actual_cost: f64,
    /// Quality score (0..1).
    pub quality: f64,
    /// Convergence (0..1).
    pub convergence: f64,
    /// Refinement iterations.
    pub iterations: u32,
    /// Final energy of the refinement (the legacy proof's `final_energy`).
    pub energy: f64,
    /// Exit status of the program, for executors that run one.
    pub exit_status: Option<i32>,
}

impl Execution {
    /// A successful execution with `result` and the neutral figures
    /// (quality and convergence 1, one iteration, no cost).
    pub fn of(result: serde_json::Value) -> Self {
        Execution {
            result,
            actual_cost: 0.0,
            quality: 1.0,
            convergence: 1.0,
            iterations: 1,
            energy: 0.0,
            exit_status: None,
        }
    }
}

/// Why an execution failed; the node still signs a proof that says so.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ExecError {
    /// What went wrong, for the proof and the log.
    pub message: String,
    /// What kind of failure it was, for metrics and callers that branch on it.
    pub kind: FailureKind,
}

impl ExecError {
    /// A failure of `kind`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        ExecError {
            message: message.into(),
            kind,
        }
    }

    /// Exit status of the program, when it ran and exited: the one its
    /// kind carries, so the two cannot disagree.
    pub fn exit_status(&self) -> Option<i32> {
        match self.kind {
            FailureKind::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// The kind of an execution failure. The message says the details; the
/// kind is the part a program can count or branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The execution did not finish within its time limit.
    Timeout,
    /// The program ran and exited with this non-zero status.
    Exited(i32),
    /// The program was killed by this signal.
    Signaled(i32),
    /// The program could not be started (not found, not executable, bad
    /// working directory, no command configured).
    Spawn,
    /// The service could not be connected to.
    Unreachable,
    /// The exchange with the service broke off after connecting.
    Transport,
    /// The service answered with this non-2xx HTTP status.
    HttpStatus(u16),
    /// The answer was larger than the configured bound.
    TooLarge,
    /// The service's answer is not what its mode expects.
    BadAnswer,
    /// The task's input cannot be sent the way the executor sends it.
    BadInput,
    /// The node stopped while the task was running.
    Interrupted,
    /// Anything else: the node could not watch or read the program.
    Other,
}

impl FailureKind {
    /// A stable lowercase label, as metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Exited(_) => "exited",
            FailureKind::Signaled(_) => "signaled",
            FailureKind::Spawn => "spawn",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Transport => "transport",
            FailureKind::HttpStatus(_) => "http_status",
            FailureKind::TooLarge => "too_large",
            FailureKind::BadAnswer => "bad_answer",
            FailureKind::BadInput => "bad_input",
            FailureKind::Interrupted => "interrupted",
            FailureKind::Other => "other",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs tasks of some type.
pub trait Executor: Send + Sync + 'static {
    /// The kind, for logs and the banner (`echo`, `simulate`, ...).
    fn kind(&self) -> &'static str;

    /// Whether running one task twice is harmless: only an executor that
    /// computes its answer and touches nothing else says so. A program or
    /// a service may have effects the node cannot see, hence the default.
    fn idempotent(&self) -> bool {
        false
    }

    /// The model this executor's backend answers with, when it is one
    /// (an OpenAI-compatible chat server), for the node's capabilities.
    fn model(&self) -> Option<&str> {
        None
    }

    /// Runs `task`.
    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>>;

    /// Whether [`Executor::execute_streaming`] passes output on while it
    /// runs; a node answers a stream only for those that do.
    fn streams(&self) -> bool {
        false
    }

    /// Runs `task`, passing each piece of its output to `chunks` as it
    /// comes; the result is the same as [`Executor::execute`]'s, with the
    /// whole output in it. The default runs `execute` and sends nothing.
    fn execute_streaming<'a>(
        &'a self,
        task: &'a Task,
        chunks: Chunks,
    ) -> BoxFuture<'a, Result<Execution, ExecError>> {
        drop(chunks);
        self.execute(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_carries_its_status_and_other_kinds_none() {
        let exited = ExecError::new(FailureKind::Exited(3), "command exited with status 3");
        assert_eq!(exited.exit_status(), Some(3));
        assert_eq!(exited.to_string(), "command exited with status 3");
        let timed_out = ExecError::new(FailureKind::Timeout, "late");
        assert_eq!(timed_out.exit_status(), None);
    }

    #[test]
    fn labels_are_stable_and_lowercase() {
        let labels = [
            (FailureKind::Timeout, "timeout"),
            (FailureKind::Exited(1), "exited"),
            (FailureKind::Signaled(9), "signaled"),
            (FailureKind::Spawn, "spawn"),
            (FailureKind::Unreachable, "unreachable"),
            (FailureKind::Transport, "transport"),
            (FailureKind::HttpStatus(503), "http_status"),
            (FailureKind::TooLarge, "too_large"),
            (FailureKind::BadAnswer, "bad_answer"),
            (FailureKind::BadInput, "bad_input"),
            (FailureKind::Interrupted, "interrupted"),
            (FailureKind::Other, "other"),
        ];
        for (kind, label) in labels {
            assert_eq!(kind.as_str(), label);
            assert_eq!(kind.to_string(), label);
        }
    }
}
