//! What a node can do, as `GET /v1/capabilities` states it, signed.

use serde::{Deserialize, Serialize};

/// `payloadType` of an envelope that carries [`Capabilities`].
pub const CAPABILITIES_PAYLOAD_TYPE: &str = "application/vnd.sage.capabilities+json; version=1";

/// A node's self-description, signed by its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Platform name.
    pub platform: String,
    /// LCT id.
    pub lct_id: String,
    /// `sage` version.
    pub version: String,
    /// When the document was made (unix ms).
    pub issued_at: u64,
    /// Until when (unix ms) a delegator may rely on it without asking
    /// again; `0` (a document without the field) is stale at once.
    #[serde(default)]
    pub expires_at: u64,
    /// The task types served, sorted.
    pub task_types: Vec<TaskTypeInfo>,
    /// The machine, as read from it.
    pub hardware: Hardware,
}

/// One served task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTypeInfo {
    /// The task type.
    pub task_type: String,
    /// The executor kind.
    pub kind: String,
    /// Most runs at once, if limited.
    pub max_concurrency: Option<usize>,
    /// Most runs waiting, if limited.
    pub queue_depth: Option<usize>,
    /// Runs now.
    pub running: usize,
    /// Runs waiting now.
    pub waiting: usize,
    /// `{base, per_second}` in ATP, if priced.
    pub cost: Option<CostInfo>,
    /// Ceiling on a task's estimate, if any.
    pub max_cost: Option<f64>,
    /// Whether running a task of this type twice is harmless (a builtin
    /// that only computes), so that a router may run it again on another
    /// node after an attempt that may have been accepted; `false` for
    /// programs and services, whose effects the node cannot know.
    #[serde(default)]
    pub idempotent: bool,
    /// The model an OpenAI-compatible backend answers with (an `http`
    /// executor in OpenAI mode), by which the local API's
    /// `/local/v1/chat/completions` finds the task type; `None` for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A cost model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostInfo {
    /// ATP per run.
    pub base: f64,
    /// ATP per second of execution.
    pub per_second: f64,
}

/// The machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name, where the system tells it.
    pub cpu_model: Option<String>,
    /// Total memory in bytes, where the system tells it.
    pub memory_bytes: Option<u64>,
    /// NVIDIA GPUs, where `nvidia-smi` answers.
    pub gpus: Vec<Gpu>,
    /// Jetson (or other device-tree) model, from `/proc/device-tree/model`.
    pub device_model: Option<String>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Its name.
    pub name: String,
    /// Driver version.
    pub driver: Option<String>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
}
