//! The built-in executors: `echo` and `simulate`.

use sage_types::Task;
use serde_json::json;

use super::{BoxFuture, ExecError, Execution, Executor};

/// Answers with the task's input, unchanged. Quality and convergence are 1:
/// the result is exactly what was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

impl Executor for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(async move {
            // A task with blobs gets its refs back beside its input; one
            // without gets its input alone, as always.
            let result = if task.blobs.is_empty() {
                task.input.clone()
            } else {
                json!({"input": task.input, "blobs": task.blobs})
            };
            Ok(Execution::of(result))
        })
    }
}

/// Task types that the built-in set serves with [`Simulate`].
pub const SIMULATED_TASK_TYPES: [&str; 5] = [
    "llm_inference",
    "vision",
    "coordination",
    "consciousness",
    "consolidation",
];

/// The simulated execution of the Python original's deployment guide: no
/// real work, that guide's figures (cost 0.92 x estimate, quality 0.78,
/// convergence 0.85, 5 IRP iterations, final energy 0.22) and its modelled
/// latency per task type, which is reported in the result rather than
/// slept. The result says `"simulated": true` so that
/// no one takes it for real work.
#[derive(Debug, Clone)]
pub struct Simulate {
    platform: String,
}

impl Simulate {
    /// A simulator that reports work done on `platform`.
    pub fn new(platform: &str) -> Self {
        Simulate {
            platform: platform.to_owned(),
        }
    }

    /// The modelled latency of a task type in the Python original's
    /// deployment guide, in seconds.
    pub fn modelled_latency(task_type: &str) -> f64 {
        match task_type {
            "llm_inference" => 15.0,
            "vision" => 0.052,
            _ => 0.1,
        }
    }
}

impl Executor for Simulate {
    fn kind(&self) -> &'static str {
        "simulate"
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(async move {
            let mut result = json!({
                "status": "success",
                "simulated": true,
                "output": format!("Executed {} on {}", task.task_type, self.platform),
                "task_type": task.task_type,
                "modelled_latency_s": Self::modelled_latency(&task.task_type),
            });
            // Assigned, not passed to `json!`, which would serialize it
            // again and cannot rebuild a legacy input's `NaN`.
            result["echo"] = task.input.clone();
            Ok(Execution {
                result,
                actual_cost: task.estimated_cost * 0.92,
                quality: 0.78,
                convergence: 0.85,
                iterations: 5,
                energy: 0.22,
                exit_status: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecutorSet;

    fn task(task_type: &str) -> Task {
        Task {
            task_id: "t".into(),
            estimated_cost: 50.0,
            ..sage_types::testing::task(task_type, json!({"query": "hi"}))
        }
    }

    #[tokio::test]
    async fn echo_returns_the_input() {
        let out = Echo.execute(&task("echo")).await.unwrap();
        assert_eq!(out.result, json!({"query": "hi"}));
    }

    #[tokio::test]
    async fn echo_returns_the_blob_refs_beside_the_input() {
        let mut task = task("echo");
        task.blobs = vec![sage_types::BlobRef {
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 3,
        }];
        let out = Echo.execute(&task).await.unwrap();
        assert_eq!(out.result["input"], json!({"query": "hi"}));
        assert_eq!(out.result["blobs"][0]["size"], 3);
    }

    #[tokio::test]
    async fn simulate_follows_the_guide_and_says_it_is_simulated() {
        let out = Simulate::new("Thor")
            .execute(&task("llm_inference"))
            .await
            .unwrap();
        assert_eq!(out.result["simulated"], true);
        assert_eq!(out.result["output"], "Executed llm_inference on Thor");
        assert_eq!(out.result["modelled_latency_s"], 15.0);
        assert_eq!(out.result["echo"], json!({"query": "hi"}));
        assert_eq!(out.actual_cost, 46.0);
        assert_eq!(
            (out.quality, out.convergence, out.iterations),
            (0.78, 0.85, 5)
        );
    }

    #[test]
    fn builtin_set_serves_echo_and_the_guide_types_only() {
        let set = ExecutorSet::builtin("Thor");
        assert_eq!(set.get("echo").unwrap().executor.kind(), "echo");
        assert_eq!(set.get("vision").unwrap().executor.kind(), "simulate");
        assert!(set.get("shell").is_none());
    }
}
