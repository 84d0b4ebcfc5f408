//! Fixtures shared by the tests and benchmarks of this crate and the crates
//! above it. Compiled for this crate's own tests and, elsewhere, only with
//! the `testing` feature, which the other crates enable in their
//! dev-dependencies alone, so that no release build carries it.

use serde_json::{json, Value};

use crate::{QualityRequirements, Task};

/// A task from Sprout to Thor of `task_type` with `input`: id `task-42`,
/// nonce `00`, issued at 0 and expiring at 1 (tests that check times set
/// their own), an estimate of 10 ATP and the default quality.
pub fn task(task_type: &str, input: Value) -> Task {
    Task {
        task_id: "task-42".into(),
        task_type: task_type.into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: 0,
        expires_at: 1,
        nonce: "00".into(),
        input,
        estimated_cost: 10.0,
        quality: QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    }
}

/// The input of a typical delegated task: a prompt and a token budget.
pub fn typical_input() -> Value {
    json!({
        "prompt": "Describe the east camera frame.",
        "max_tokens": 256
    })
}

/// A typical delegated task, as the benchmarks encode, sign and send it
/// (its payload is about 350 bytes).
pub fn typical_task() -> Task {
    Task {
        task_id: "task_5f3a9c1e7b2d4a60".into(),
        issued_at: 1_764_554_630_250,
        expires_at: 1_764_554_690_250,
        nonce: "9f86d081884c7d659a2feaa0c55ad015".into(),
        estimated_cost: 50.0,
        ..task("llm_inference", typical_input())
    }
}
