//! The signed task of the native protocol (v1).

use serde::{Deserialize, Serialize};

/// `payloadType` of an envelope that carries a [`Task`].
pub const TASK_PAYLOAD_TYPE: &str = "application/vnd.sage.task+json; version=1";

/// A task, as its issuer signs it. Times are unix milliseconds.
///
/// Unknown fields are refused rather than ignored: a field the receiver does
/// not understand might carry a condition the issuer relies on.
///
/// Every field serializes infallibly (see [`Task::payload`]): a field whose
/// serialization can fail needs `payload` to return an error instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Chosen by the issuer; unique per issuer.
    pub task_id: String,
    /// Selects the executor on the receiving node (`echo`, `llm_inference`, ...).
    pub task_type: String,
    /// LCT id of the delegating platform; must be the signer's.
    pub issuer: String,
    /// LCT id of the platform the task is meant for.
    pub audience: String,
    /// When the issuer signed it (unix ms).
    pub issued_at: u64,
    /// After this instant (unix ms) the task must not run.
    pub expires_at: u64,
    /// Random, hex; (issuer, nonce) is accepted once.
    pub nonce: String,
    /// The executor's input.
    pub input: serde_json::Value,
    /// What the issuer expects to pay, in ATP.
    pub estimated_cost: f64,
    /// What the issuer will accept.
    pub quality: QualityRequirements,
    /// The most the issuer will pay, in ATP; a node whose price or
    /// ceiling is above it refuses the task before running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// Blobs the executor gets beside `input`, in this order; each must be
    /// on the receiving node (uploaded before) for the task to be accepted.
    /// Absent when empty, so a task without blobs signs the same bytes as
    /// before the field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<crate::BlobRef>,
    /// Who on the issuer's machine asked for the task, as the issuer's
    /// node saw it (`local uid=1000 gid=1000 pid=4242`, or `local token
    /// 127.0.0.1:40112`), at most [`MAX_ORIGIN_LEN`] bytes: signed, so that
    /// a receipt says on whose behalf its issuer delegated. Absent when the
    /// issuer does not say (a delegation from its own command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The longest [`Task::origin`] a node accepts.
pub const MAX_ORIGIN_LEN: usize = 256;

impl Task {
    /// The JSON bytes an issuer signs: the envelope's payload, whose
    /// SHA-256 is the task digest.
    pub fn payload(&self) -> Vec<u8> {
        // serde_json fails only on a writer's error (a `Vec` has none), a
        // map key that is not a string, or a failing `Serialize` impl: here
        // every key is a field name or a `Value`'s `String`, the fields are
        // derived or serde_json's own, and a non-finite float is written as
        // `null`, not refused.
        serde_json::to_vec(self).expect("a Task always serializes to JSON")
    }

    /// The task as a JSON value, for reports and the ledger.
    pub fn to_json(&self) -> serde_json::Value {
        // As for `payload`: nothing in a Task can fail to serialize.
        serde_json::to_value(self).expect("a Task always serializes to JSON")
    }
}

/// The least quality and convergence a proof must report to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRequirements {
    /// Lowest acceptable `quality` (0..1).
    pub min_quality: f64,
    /// Lowest acceptable `convergence` (0..1).
    pub min_convergence: f64,
}

impl Default for QualityRequirements {
    /// The defaults of the Python original's deployment guide: quality
    /// 0.6, convergence 0.7.
    fn default() -> Self {
        QualityRequirements {
            min_quality: 0.6,
            min_convergence: 0.7,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn floats_parse_exactly() {
        // Without serde_json's `float_roundtrip` feature its fast parser is
        // not correctly rounded: a proof's figures would differ between the
        // signed bytes and the typed value (0.023124000000000002 did).
        for text in [
            "0.023124000000000002",
            "0.30000000000000004",
            "1e-7",
            "46.0",
            "5e-324",
        ] {
            let parsed: f64 = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, text.parse::<f64>().unwrap(), "{text}");
        }
    }

    #[test]
    fn the_payload_is_the_serialized_task_even_with_odd_floats() {
        let mut task = Task {
            estimated_cost: 1.5,
            max_cost: Some(3.0),
            ..testing::task("echo", serde_json::json!({"b": [1, 2.5], "a": {"z": null}}))
        };
        assert_eq!(task.payload(), serde_json::to_vec(&task).unwrap());
        assert_eq!(task.to_json(), serde_json::to_value(&task).unwrap());
        // Not refused: written as `null`, which a receiver then refuses.
        task.estimated_cost = f64::NAN;
        task.max_cost = Some(f64::INFINITY);
        let text = String::from_utf8(task.payload()).unwrap();
        assert!(
            text.contains(r#""estimated_cost":null"#) && text.contains(r#""max_cost":null"#),
            "{text}"
        );
    }

    #[test]
    fn a_task_without_blobs_signs_the_bytes_it_signed_before_the_field() {
        let task = testing::task("echo", serde_json::json!({}));
        assert!(!String::from_utf8(task.payload()).unwrap().contains("blobs"));
        let with = Task {
            blobs: vec![crate::BlobRef {
                digest: format!("sha256:{}", "a".repeat(64)),
                size: 7,
            }],
            ..task
        };
        let parsed: Task = serde_json::from_slice(&with.payload()).unwrap();
        assert_eq!(parsed, with);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let task = Task {
            estimated_cost: 1.0,
            ..testing::task("echo", serde_json::json!({"x": 1}))
        };
        let mut value = serde_json::to_value(&task).unwrap();
        assert_eq!(serde_json::from_value::<Task>(value.clone()).unwrap(), task);
        value["priority"] = 5.into();
        let err = serde_json::from_value::<Task>(value).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `priority`"),
            "{err}"
        );
    }
}
