//! Executors run tasks. A node maps each task type it serves to one
//! [`Executor`]; a type with none is refused as `unsupported_task`.

mod builtin;
pub mod command;
pub mod http;
mod leftover;
mod set;

use std::future::Future;
use std::pin::Pin;

use sage_types::Task;

pub use builtin::{Echo, Simulate, SIMULATED_TASK_TYPES};
pub use leftover::Leftovers;
pub use set::{CostModel, Entry, ExecutorSet, Limiter, Reservation, Run};

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
    /// Exit status of the program, when it ran and exited.
    pub exit_status: Option<i32>,
}

impl ExecError {
    /// A failure with no exit status.
    pub fn new(message: impl Into<String>) -> Self {
        ExecError {
            message: message.into(),
            exit_status: None,
        }
    }
}

/// Runs tasks of some type.
pub trait Executor: Send + Sync + 'static {
    /// The kind, for logs and the banner (`echo`, `simulate`, ...).
    fn kind(&self) -> &'static str;

    /// Runs `task`.
    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>>;
}
