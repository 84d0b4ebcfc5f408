//! The signed execution proof of the native protocol (v1).

use serde::{Deserialize, Serialize};

/// `payloadType` of an envelope that carries a [`Proof`].
pub const PROOF_PAYLOAD_TYPE: &str = "application/vnd.sage.proof+json; version=1";

/// What an executor signs after running (or failing to run) a task.
/// Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// LCT id of the platform that ran the task.
    pub executor: String,
    /// LCT id of the task's issuer.
    pub issuer: String,
    /// The task's id.
    pub task_id: String,
    /// `sha256:` and the hex digest of the exact task payload bytes.
    pub task_digest: String,
    /// Whether the execution succeeded.
    pub status: ProofStatus,
    /// The kind of executor that ran it (`command`, `http`, `echo`, ...).
    pub executor_kind: String,
    /// The program's exit status, for executors that run a program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// The result (on failure, `{"error": ...}`).
    pub result: serde_json::Value,
    /// `sha256:` and the hex digest of `result` written as compact JSON with
    /// sorted keys, so that a result kept apart can be matched to its proof.
    pub result_digest: String,
    /// When execution started (unix ms).
    pub started_at: u64,
    /// When execution ended (unix ms).
    pub finished_at: u64,
    /// Measured execution time in milliseconds.
    pub latency_ms: f64,
    /// What the execution cost, in ATP.
    pub actual_cost: f64,
    /// Quality score reported by the executor (0..1).
    pub quality: f64,
    /// Convergence reported by the executor (0..1).
    pub convergence: f64,
    /// Refinement iterations the executor reports.
    pub iterations: u32,
}

/// Outcome of an execution. A failed execution gets a signed proof too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofStatus {
    /// The executor produced a result.
    Succeeded,
    /// The executor failed; `result.error` says why.
    Failed,
}

impl ProofStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProofStatus::Succeeded => "succeeded",
            ProofStatus::Failed => "failed",
        }
    }
}
