//! The signed task of the native protocol (v1).

use serde::{Deserialize, Serialize};

/// `payloadType` of an envelope that carries a [`Task`].
pub const TASK_PAYLOAD_TYPE: &str = "application/vnd.sage.task+json; version=1";

/// A task, as its issuer signs it. Times are unix milliseconds.
///
/// Unknown fields are refused rather than ignored: a field the receiver does
/// not understand might carry a condition the issuer relies on.
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
    /// The federation guide's defaults: quality 0.6, convergence 0.7.
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
    fn unknown_fields_are_refused() {
        let task = Task {
            task_id: "t1".into(),
            task_type: "echo".into(),
            issuer: "sprout_sage_lct".into(),
            audience: "thor_sage_lct".into(),
            issued_at: 1,
            expires_at: 2,
            nonce: "00".into(),
            input: serde_json::json!({"x": 1}),
            estimated_cost: 1.0,
            quality: QualityRequirements::default(),
            max_cost: None,
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
