//! The Python original's wire protocol (see `docs/protocol.md`, "Legacy").
//!
//! The original signs `json.dumps(obj, sort_keys=True)` of a *signable*
//! object that each side rebuilds from a fixed list of fields, ignoring any
//! other field. So the receiver here rebuilds the signable object from the
//! received JSON exactly as the Python code does, and signs or verifies the
//! output of [`crate::canonical::to_python_json`] over it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pyjson::{self, PyJsonError, PyStr, PyValue};

/// The fields of a signable task, in the order the original writes them.
pub const TASK_FIELDS: [&str; 13] = [
    "task_id",
    "task_type",
    "task_data",
    "estimated_cost",
    "task_horizon",
    "complexity",
    "delegating_platform",
    "delegating_state",
    "quality_requirements",
    "max_latency",
    "deadline",
    "min_witnesses",
    "min_witness_societies",
];

/// The fields of a signable proof.
pub const PROOF_FIELDS: [&str; 10] = [
    "task_id",
    "executing_platform",
    "result_data",
    "actual_latency",
    "actual_cost",
    "irp_iterations",
    "final_energy",
    "convergence_quality",
    "quality_score",
    "execution_timestamp",
];

/// The fields a proof also signs when it carries `epistemic_state`.
pub const EPISTEMIC_FIELDS: [&str; 7] = [
    "epistemic_state",
    "confidence",
    "comprehension_depth",
    "uncertainty",
    "frustration",
    "learning_trajectory",
    "frustration_pattern",
];

/// Why a received object has no signable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegacyError {
    /// The task or proof is not a JSON object.
    #[error("the {what} is not a JSON object")]
    NotAnObject {
        /// `task` or `proof`.
        what: &'static str,
    },
    /// The body is not JSON as Python reads it.
    #[error("the body is not JSON: {0}")]
    Json(#[from] PyJsonError),
    /// A field has a type the original would not sign or run.
    #[error("the {what}'s field {field:?} is not {expected}")]
    WrongType {
        /// `task`, `proof`, `request` or `answer`.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A field the signable form requires is missing.
    #[error("the {what} has no field {field:?}")]
    MissingField {
        /// `task`, `proof`, `request` or `answer`.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// The signable form the original rebuilds from a received `task` or
/// `proof`: exactly `fields` (held sorted, as [`PyValue::Dict`] is), any
/// other field dropped.
fn rebuild<'a>(
    what: &'static str,
    object: &PyValue,
    fields: impl IntoIterator<Item = &'a &'static str>,
) -> Result<PyValue, LegacyError> {
    if !matches!(object, PyValue::Dict(_)) {
        return Err(LegacyError::NotAnObject { what });
    }
    let mut signable = Vec::new();
    for &field in fields {
        let value = part(object, what, field)?;
        signable.push((PyStr::from(field), value.clone()));
    }
    signable.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PyValue::Dict(signable))
}

/// The field `field` of `doc`, the `what` of a message.
fn part<'a>(
    doc: &'a PyValue,
    what: &'static str,
    field: &'static str,
) -> Result<&'a PyValue, LegacyError> {
    doc.get(field)
        .ok_or(LegacyError::MissingField { what, field })
}

/// The string field `field` of `doc`.
fn text(doc: &PyValue, what: &'static str, field: &'static str) -> Result<String, LegacyError> {
    part(doc, what, field)?
        .as_str()
        .map(str::to_owned)
        .ok_or(LegacyError::WrongType {
            what,
            field,
            expected: "a string",
        })
}

/// The signable task the Python receiver rebuilds from a received `task`:
/// exactly [`TASK_FIELDS`], other fields dropped.
///
/// # Errors
/// [`LegacyError`] when `task` is not an object or lacks a field.
pub fn signable_task(task: &PyValue) -> Result<PyValue, LegacyError> {
    rebuild("task", task, &TASK_FIELDS)
}

/// The signable proof the Python client rebuilds from a received `proof`:
/// [`PROOF_FIELDS`], and [`EPISTEMIC_FIELDS`] when `epistemic_state` is there.
///
/// # Errors
/// [`LegacyError`] when `proof` is not an object or lacks a field.
pub fn signable_proof(proof: &PyValue) -> Result<PyValue, LegacyError> {
    let epistemic = proof.get("epistemic_state").is_some();
    let extra: &[&str] = if epistemic { &EPISTEMIC_FIELDS } else { &[] };
    rebuild("proof", proof, PROOF_FIELDS.iter().chain(extra))
}

/// A `POST /execute_task` body, read as the original reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    /// The signable task, rebuilt from the received `task`.
    pub signable: PyValue,
    /// LCT id of the requester.
    pub requester_lct_id: String,
    /// The signature, as sent.
    pub signature: String,
}

impl ReceivedRequest {
    /// The parts of a request body already read with [`pyjson::loads`].
    ///
    /// # Errors
    /// [`LegacyError`] when the body lacks a field or a field has the
    /// wrong type.
    pub fn of(doc: &PyValue) -> Result<ReceivedRequest, LegacyError> {
        Ok(ReceivedRequest {
            signable: signable_task(part(doc, "request", "task")?)?,
            requester_lct_id: text(doc, "request", "requester_lct_id")?,
            signature: text(doc, "request", "signature")?,
        })
    }
}

/// Reads a request body with Python's `json.loads` rules and rebuilds its
/// signable task.
///
/// # Errors
/// [`LegacyError`] when the body is not JSON, lacks a field, or a field
/// has the wrong type.
pub fn read_request(body: &[u8]) -> Result<ReceivedRequest, LegacyError> {
    ReceivedRequest::of(&pyjson::loads(body)?)
}

/// A `200` answer to `POST /execute_task`, read as the original's client
/// reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedResponse {
    /// The signable proof, rebuilt from the received `proof`.
    pub signable: PyValue,
    /// The signature, as sent.
    pub signature: String,
}

impl ReceivedResponse {
    /// The parts of an answer body already read with [`pyjson::loads`].
    ///
    /// # Errors
    /// [`LegacyError`] when the body lacks a field or a field has the
    /// wrong type.
    pub fn of(doc: &PyValue) -> Result<ReceivedResponse, LegacyError> {
        let signature = text(doc, "answer", "signature")?;
        Ok(ReceivedResponse {
            signable: signable_proof(part(doc, "answer", "proof")?)?,
            signature,
        })
    }
}

/// Reads an answer body with Python's `json.loads` rules and rebuilds its
/// signable proof.
///
/// # Errors
/// [`LegacyError`] when the body is not JSON, lacks a field, or a field
/// has the wrong type.
pub fn read_response(body: &[u8]) -> Result<ReceivedResponse, LegacyError> {
    ReceivedResponse::of(&pyjson::loads(body)?)
}

impl LegacyTask {
    /// The typed fields of a signable task (see [`read_request`]); the
    /// executor's input is the view of `task_data` ([`PyValue::to_json`]).
    ///
    /// # Errors
    /// [`LegacyError::WrongType`] naming the first field of the wrong type.
    pub fn from_signable(task: &PyValue) -> Result<LegacyTask, LegacyError> {
        let task = Signable::new(task, "task");
        let quality = task.field("quality_requirements");
        let quality_number = |name: &'static str| {
            task.number_of(
                quality.get(name).unwrap_or(&PyValue::Null),
                "quality_requirements",
            )
        };
        Ok(LegacyTask {
            task_id: task.text("task_id")?,
            task_type: task.text("task_type")?,
            task_data: task.field("task_data").to_json(),
            estimated_cost: task.number("estimated_cost")?,
            delegating_platform: task.text("delegating_platform")?,
            quality_requirements: LegacyQuality {
                min_quality: quality_number("min_quality")?,
                min_convergence: quality_number("min_convergence")?,
            },
            max_latency: task.number("max_latency")?,
            deadline: task.number("deadline")?,
        })
    }
}

impl LegacyProof {
    /// The typed fields of a signable proof ([`read_response`]); the
    /// result is the view of `result_data` ([`PyValue::to_json`]), so a
    /// large integer stays an integer.
    ///
    /// # Errors
    /// [`LegacyError::WrongType`] naming the first field of the wrong type.
    pub fn from_signable(proof: &PyValue) -> Result<LegacyProof, LegacyError> {
        let proof = Signable::new(proof, "proof");
        Ok(LegacyProof {
            task_id: proof.text("task_id")?,
            executing_platform: proof.text("executing_platform")?,
            result_data: proof.field("result_data").to_json(),
            actual_latency: proof.number("actual_latency")?,
            actual_cost: proof.number("actual_cost")?,
            irp_iterations: proof
                .field("irp_iterations")
                .as_u64()
                .ok_or_else(|| proof.wrong("irp_iterations", "a whole number"))?,
            final_energy: proof.number("final_energy")?,
            convergence_quality: proof.number("convergence_quality")?,
            quality_score: proof.number("quality_score")?,
            execution_timestamp: proof.number("execution_timestamp")?,
        })
    }
}

/// The fields of a signable object read as typed values; a field missing
/// or of the wrong type is a [`LegacyError::WrongType`] naming it.
struct Signable<'a> {
    object: &'a PyValue,
    /// `task` or `proof`, for the error.
    what: &'static str,
}

impl<'a> Signable<'a> {
    fn new(object: &'a PyValue, what: &'static str) -> Self {
        Signable { object, what }
    }

    /// The field `name`, `null` when missing.
    fn field(&self, name: &str) -> &'a PyValue {
        self.object.get(name).unwrap_or(&PyValue::Null)
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> LegacyError {
        LegacyError::WrongType {
            what: self.what,
            field,
            expected,
        }
    }

    fn text(&self, name: &'static str) -> Result<String, LegacyError> {
        self.field(name)
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.wrong(name, "a string"))
    }

    fn number(&self, name: &'static str) -> Result<f64, LegacyError> {
        self.number_of(self.field(name), name)
    }

    /// `value` as a number; an error names `field`, where it was read.
    fn number_of(&self, value: &PyValue, field: &'static str) -> Result<f64, LegacyError> {
        value.as_f64().ok_or_else(|| self.wrong(field, "a number"))
    }
}

/// The body of `POST /execute_task`, outer keys in the original's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyRequest {
    /// The signable task (extra fields are tolerated and not signed).
    pub task: Value,
    /// LCT id of the requester.
    pub requester_lct_id: String,
    /// 128 hex characters.
    pub signature: String,
    /// Unix seconds; unsigned and unused by the receiver.
    #[serde(default)]
    pub timestamp: Option<f64>,
}

/// The body of a `200` answer to `POST /execute_task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyResponse {
    /// The signable proof.
    pub proof: Value,
    /// 128 hex characters.
    pub signature: String,
    /// Unix seconds; unsigned.
    #[serde(default)]
    pub timestamp: Option<f64>,
}

impl LegacyRequest {
    /// The request body, outer keys in the original's order.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings, an optional float (a non-finite one is written as
        // `null`) and a `Value` with string keys: serde_json cannot fail on
        // them writing to a `Vec`.
        serde_json::to_vec(self).expect("a LegacyRequest always serializes to JSON")
    }

    /// The request as a JSON value, for reports.
    pub fn to_json(&self) -> Value {
        // As for `to_bytes`.
        serde_json::to_value(self).expect("a LegacyRequest always serializes to JSON")
    }
}

/// A signable task, typed, for checks after its signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyTask {
    /// The task id.
    pub task_id: String,
    /// The task type.
    pub task_type: String,
    /// The executor's input.
    pub task_data: Value,
    /// Expected cost in ATP.
    pub estimated_cost: f64,
    /// LCT id of the delegator.
    pub delegating_platform: String,
    /// What the delegator will accept.
    pub quality_requirements: LegacyQuality,
    /// Seconds the delegator will wait.
    pub max_latency: f64,
    /// Unix seconds after which the task must not run.
    pub deadline: f64,
}

/// `quality_requirements` of a legacy task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegacyQuality {
    /// Lowest acceptable `quality_score`.
    pub min_quality: f64,
    /// Lowest acceptable `convergence_quality`.
    pub min_convergence: f64,
}

/// A signable proof, typed, for checks after its signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyProof {
    /// The task id.
    pub task_id: String,
    /// The executor's platform name.
    pub executing_platform: String,
    /// The result.
    pub result_data: Value,
    /// Seconds, as the executor reports them.
    pub actual_latency: f64,
    /// ATP.
    pub actual_cost: f64,
    /// Refinement iterations.
    pub irp_iterations: u64,
    /// Final energy of the refinement.
    pub final_energy: f64,
    /// Convergence (0..1).
    pub convergence_quality: f64,
    /// Quality (0..1).
    pub quality_score: f64,
    /// Unix seconds.
    pub execution_timestamp: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An object with each of `fields` set to `value`.
    fn filled(fields: &[&str], value: Value) -> Value {
        Value::Object(
            fields
                .iter()
                .map(|f| (f.to_string(), value.clone()))
                .collect(),
        )
    }

    fn dict_len(value: &PyValue) -> usize {
        match value {
            PyValue::Dict(entries) => entries.len(),
            _ => 0,
        }
    }

    /// `value` as Python would read it.
    fn py(value: &Value) -> PyValue {
        pyjson::loads(&serde_json::to_vec(value).unwrap()).unwrap()
    }

    #[test]
    fn extra_fields_are_not_signed_and_missing_ones_are_named() {
        let mut task = filled(&TASK_FIELDS, json!(1));
        task["injected"] = json!("not signed");
        let signable = signable_task(&py(&task)).unwrap();
        assert!(matches!(&signable, PyValue::Dict(d) if d.len() == TASK_FIELDS.len()));
        assert!(signable.get("injected").is_none());

        task.as_object_mut().unwrap().remove("deadline");
        assert_eq!(
            signable_task(&py(&task)).unwrap_err(),
            LegacyError::MissingField {
                what: "task",
                field: "deadline"
            }
        );
        assert_eq!(
            signable_task(&py(&json!([1]))).unwrap_err(),
            LegacyError::NotAnObject { what: "task" }
        );
    }

    #[test]
    fn a_proof_is_read_field_by_field_and_a_wrong_type_is_named() {
        let mut proof = filled(&PROOF_FIELDS, json!(1.5));
        proof["task_id"] = json!("t");
        proof["executing_platform"] = json!("Thor");
        proof["irp_iterations"] = json!(5);
        proof["result_data"] =
            serde_json::from_str(r#"{"big": 10000000000000000000000000000000000000000}"#).unwrap();
        let read = LegacyProof::from_signable(&py(&proof)).unwrap();
        assert_eq!(
            serde_json::to_string(&read.result_data).unwrap(),
            r#"{"big":10000000000000000000000000000000000000000}"#
        );
        proof["irp_iterations"] = json!(-1);
        assert_eq!(
            LegacyProof::from_signable(&py(&proof))
                .unwrap_err()
                .to_string(),
            r#"the proof's field "irp_iterations" is not a whole number"#
        );
        proof["irp_iterations"] = json!(5);
        proof["task_id"] = json!(7);
        assert_eq!(
            LegacyProof::from_signable(&py(&proof)).unwrap_err(),
            LegacyError::WrongType {
                what: "proof",
                field: "task_id",
                expected: "a string"
            }
        );
    }

    #[test]
    fn a_request_is_read_as_python_reads_it() {
        let task = filled(&TASK_FIELDS, json!(1));
        let body = |task: &Value, signature: Value| {
            serde_json::to_vec(
                &json!({"task": task, "requester_lct_id": "a", "signature": signature}),
            )
            .unwrap()
        };
        let read = read_request(&body(&task, json!("ab"))).unwrap();
        assert_eq!(
            read.signable.canonical(),
            crate::canonical::to_python_json(&task)
        );
        assert_eq!(
            read_request(&body(&task, json!(12))).unwrap_err(),
            LegacyError::WrongType {
                what: "request",
                field: "signature",
                expected: "a string"
            }
        );
        assert!(matches!(
            read_request(b"{\"task\": "),
            Err(LegacyError::Json(_))
        ));
        let err = LegacyTask::from_signable(&read.signable).unwrap_err();
        assert_eq!(
            err,
            LegacyError::WrongType {
                what: "task",
                field: "task_id",
                expected: "a string"
            }
        );
    }

    #[test]
    fn epistemic_fields_are_signed_only_with_epistemic_state() {
        let mut proof = filled(&PROOF_FIELDS, json!(1));
        proof["confidence"] = json!(0.9);
        assert_eq!(dict_len(&signable_proof(&py(&proof)).unwrap()), 10);
        proof["epistemic_state"] = json!("confident");
        assert_eq!(
            signable_proof(&py(&proof)).unwrap_err(),
            LegacyError::MissingField {
                what: "proof",
                field: "comprehension_depth"
            }
        );
        for f in EPISTEMIC_FIELDS {
            proof[f] = json!(1);
        }
        assert_eq!(dict_len(&signable_proof(&py(&proof)).unwrap()), 17);
    }

    #[test]
    fn an_answer_is_read_as_python_reads_it() {
        let mut fields: Vec<String> = PROOF_FIELDS.iter().map(|f| format!("\"{f}\": 1")).collect();
        fields[2] =
            r#""result_data": {"x": NaN, "s": "\ud800", "n": 100000000000000000000}"#.into();
        let proof = format!("{{{}}}", fields.join(", "));
        let read = read_response(format!(r#"{{"proof": {proof}, "signature": "ab"}}"#).as_bytes())
            .unwrap();
        assert_eq!(read.signature, "ab");
        assert!(read
            .signable
            .canonical()
            .contains(r#""result_data": {"n": 100000000000000000000, "s": "\ud800", "x": NaN}"#));
        assert_eq!(
            read_response(format!(r#"{{"proof": {proof}}}"#).as_bytes()).unwrap_err(),
            LegacyError::MissingField {
                what: "answer",
                field: "signature"
            }
        );
        assert_eq!(
            read_response(br#"{"proof": [], "signature": "ab"}"#).unwrap_err(),
            LegacyError::NotAnObject { what: "proof" }
        );
    }
}
