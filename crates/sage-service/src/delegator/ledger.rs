//! The delegator's receipts: every delegation and the proof it got back,
//! kept in the node's [`Store`], exported as JSON lines, and verified
//! offline with nothing but a trust store.
//!
//! One exported line is one receipt:
//! `{"task_id", "peer", "peer_lct", "protocol", "sent_at_ms", "status", "task", "proof"}`
//! where `task` is the signed task as sent and `proof` the signed proof as
//! received (a DSSE envelope for the native protocol; the request and the
//! answer bodies for the legacy one). Lines are read and written as Python's
//! `json` module does ([`sage_types::pyjson`]), keys sorted: a Python node's
//! answer may hold `NaN` or a lone surrogate, which its signature covers and
//! serde_json cannot hold.

use std::time::Duration;

use sage_crypto::digest::{json_digest, sha256_tagged};
use sage_crypto::legacy::verify_legacy;
use sage_crypto::{verify_envelope, Peer, Protocol, TrustStore, VerifyError};
use sage_types::legacy::{LegacyError, ReceivedRequest, ReceivedResponse};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::pyjson::{self, PyJsonError, PyStr, PyValue};
use sage_types::{Envelope, EnvelopeError, Proof};

use crate::delegator::delegation::{Delegation, Exchange, Outgoing, ProofSummary};
use crate::DelegateError;
use sage_store::{LedgerEntry, Outcome, Store, StoreError};
use sage_types::clock::now_ms;

/// One exported receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The task id.
    pub task_id: String,
    /// The executor's platform name.
    pub peer: String,
    /// The executor's LCT id.
    pub peer_lct: String,
    /// `v1` or `legacy`.
    pub protocol: String,
    /// When the task was sent (unix ms).
    pub sent_at_ms: u64,
    /// `succeeded`, `failed`, or why there is no proof.
    pub status: String,
    /// The signed task the proof names: as sent, or for a retry answered
    /// with the proof of an earlier send, as sent then.
    pub task: PyValue,
    /// The signed proof as received, if any.
    pub proof: Option<PyValue>,
}

impl Receipt {
    /// The receipt of a ledger entry.
    pub fn of(entry: &LedgerEntry) -> Receipt {
        let read = |bytes: &[u8]| pyjson::loads(bytes).unwrap_or(PyValue::Null);
        Receipt {
            task_id: entry.task_id.clone(),
            peer: entry.peer.clone(),
            peer_lct: entry.peer_lct.clone(),
            protocol: entry.protocol.clone(),
            sent_at_ms: entry.sent_at_ms,
            status: entry.status.clone(),
            task: read(entry.proof_task.as_deref().unwrap_or(&entry.task)),
            proof: entry.proof.as_deref().map(read),
        }
    }

    /// Reads one exported line.
    ///
    /// # Errors
    /// [`ReceiptError::Malformed`] for a line that is not JSON or lacks a
    /// field of a receipt.
    pub fn from_line(line: &[u8]) -> Result<Receipt, ReceiptError> {
        let doc = pyjson::loads(line).map_err(Malformed::Json)?;
        let field = |name: &'static str| doc.get(name).ok_or(Malformed::MissingField(name));
        let wrong =
            |field: &'static str, expected: &'static str| Malformed::WrongType { field, expected };
        let text = |name: &'static str| {
            field(name)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(name, "a string"))
        };
        Ok(Receipt {
            task_id: text("task_id")?,
            peer: text("peer")?,
            peer_lct: text("peer_lct")?,
            protocol: text("protocol")?,
            sent_at_ms: field("sent_at_ms")?
                .as_u64()
                .ok_or_else(|| wrong("sent_at_ms", "a whole number"))?,
            status: text("status")?,
            task: field("task")?.clone(),
            proof: match doc.get("proof") {
                None | Some(PyValue::Null) => None,
                Some(proof) => Some(proof.clone()),
            },
        })
    }

    /// The receipt as one line of JSON, which [`Receipt::from_line`] reads
    /// back to the same receipt.
    pub fn to_line(&self) -> String {
        self.to_py().canonical()
    }

    /// The receipt as JSON for display (see [`PyValue::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        self.to_py().to_json()
    }

    fn to_py(&self) -> PyValue {
        let text = |s: &str| PyValue::Str(PyStr::from(s));
        // Sorted by key, as a dict is held.
        PyValue::Dict(vec![
            (PyStr::from("peer"), text(&self.peer)),
            (PyStr::from("peer_lct"), text(&self.peer_lct)),
            (
                PyStr::from("proof"),
                self.proof.clone().unwrap_or(PyValue::Null),
            ),
            (PyStr::from("protocol"), text(&self.protocol)),
            (
                PyStr::from("sent_at_ms"),
                PyValue::Int(self.sent_at_ms.to_string()),
            ),
            (PyStr::from("status"), text(&self.status)),
            (PyStr::from("task"), self.task.clone()),
            (PyStr::from("task_id"), text(&self.task_id)),
        ])
    }
}

/// Records `outgoing`, about to be sent to `target`, before it is sent
/// (status [`sage_store::SENT`]); [`record_outcome`] gives the entry its
/// outcome. A delegator killed in between leaves the entry `sent`.
///
/// # Errors
/// [`StoreError`] when the ledger cannot be written: the task must then not
/// be sent, or its receipt would be lost.
pub async fn record_sent(
    store: &Store,
    target: &Peer,
    protocol: Protocol,
    task_type: &str,
    outgoing: &Outgoing,
    sent_at_ms: u64,
) -> Result<i64, StoreError> {
    store
        .open_delegation(LedgerEntry {
            id: 0,
            task_id: outgoing.task_id().to_owned(),
            peer: target.name.clone(),
            peer_lct: target.lct_id.clone(),
            protocol: protocol.as_str().to_owned(),
            task_type: task_type.to_owned(),
            sent_at_ms,
            status: sage_store::SENT.to_owned(),
            latency_ms: None,
            quality: None,
            task: outgoing.body(),
            proof: None,
            proof_task: None,
            error: None,
        })
        .await
}

/// Gives the entry `id` of [`record_sent`] the outcome of its delegation.
/// `earlier` holds the bodies of earlier sends of the same task: a proof
/// that names one of them (a retry answered with the first run's proof) is
/// kept beside that body, so that the receipt verifies.
///
/// # Errors
/// [`StoreError`] when the ledger cannot be written.
pub async fn record_outcome(
    store: &Store,
    id: i64,
    outcome: &Result<Delegation, DelegateError>,
    earlier: &[Vec<u8>],
) -> Result<(), StoreError> {
    let closing = match outcome {
        Ok(d) => Outcome {
            status: d.summary.status.as_str().to_owned(),
            latency_ms: Some(d.total.as_secs_f64() * 1000.0),
            quality: Some(d.summary.quality),
            proof: Some(d.proof_body.clone()),
            proof_task: d
                .summary
                .task_digest
                .as_ref()
                .filter(|named| **named != d.task_digest)
                .and_then(|named| {
                    earlier
                        .iter()
                        .find(|body| payload_digest(body).as_ref() == Some(named))
                        .cloned()
                }),
            error: None,
        },
        Err(e) => Outcome {
            status: failure_status(e).to_owned(),
            error: Some(e.to_string()),
            ..Outcome::default()
        },
    };
    store.close_delegation(id, closing).await
}

/// The `sha256:` digest of the payload of a v1 envelope's body; `None` for
/// anything else.
pub fn payload_digest(body: &[u8]) -> Option<String> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    Some(sha256_tagged(&envelope.payload_bytes().ok()?))
}

/// Records a verified delegation.
///
/// # Errors
/// [`StoreError`] when the ledger cannot be written.
pub async fn record(
    store: &Store,
    peer: &str,
    d: &Delegation,
    sent_at_ms: u64,
) -> Result<i64, StoreError> {
    let entry = Verified {
        peer,
        peer_lct: &d.health.lct_id,
        protocol: d.protocol,
        task: &d.task,
        signed_task: &d.signed_task,
        proof_body: d.proof_body.clone(),
        summary: &d.summary,
        sent_at_ms,
        latency: d.total,
    }
    .entry();
    store.record_delegation(entry).await
}

/// Records an exchange whose proof `target` was verified to have signed,
/// as `summary` says (the load generator's delegations).
pub(crate) async fn record_exchange(
    store: &Store,
    target: &Peer,
    exchanged: &Exchange,
    summary: &ProofSummary,
    sent_at_ms: u64,
    latency: Duration,
) -> Result<i64, StoreError> {
    let (task, signed_task, ..) = exchanged.to_json();
    let entry = Verified {
        peer: &target.name,
        peer_lct: &target.lct_id,
        protocol: exchanged.protocol(),
        task: &task,
        signed_task: &signed_task,
        proof_body: exchanged.proof_body(),
        summary,
        sent_at_ms,
        latency,
    }
    .entry();
    store.record_delegation(entry).await
}

/// A verified delegation's parts that its ledger entry keeps.
struct Verified<'a> {
    peer: &'a str,
    peer_lct: &'a str,
    protocol: Protocol,
    task: &'a serde_json::Value,
    signed_task: &'a serde_json::Value,
    proof_body: Vec<u8>,
    summary: &'a ProofSummary,
    sent_at_ms: u64,
    latency: Duration,
}

impl Verified<'_> {
    fn entry(&self) -> LedgerEntry {
        LedgerEntry {
            id: 0,
            task_id: self.summary.task_id.clone(),
            peer: self.peer.to_owned(),
            peer_lct: self.peer_lct.to_owned(),
            protocol: self.protocol.as_str().to_owned(),
            task_type: self
                .task
                .get("task_type")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_owned(),
            sent_at_ms: self.sent_at_ms,
            status: self.summary.status.as_str().to_owned(),
            latency_ms: Some(self.latency.as_secs_f64() * 1000.0),
            quality: Some(self.summary.quality),
            // A Value's keys are strings and a Vec takes every write, so
            // this cannot fail; empty bytes would lose the receipt's task.
            task: serde_json::to_vec(self.signed_task).expect("a JSON value always serializes"),
            proof: Some(self.proof_body.clone()),
            proof_task: None,
            error: None,
        }
    }
}

/// The ledger status of a delegation that failed with `error`.
fn failure_status(error: &DelegateError) -> &'static str {
    match error {
        DelegateError::Client(crate::ClientError::Refused { .. }) => "refused",
        DelegateError::Client(crate::ClientError::TimedOut { .. }) => "timed_out",
        DelegateError::Client(crate::ClientError::Unreachable { .. }) => "unreachable",
        DelegateError::Client(crate::ClientError::Broken { .. }) => "broken",
        DelegateError::Client(crate::ClientError::TooLarge { .. }) => "too_large",
        DelegateError::Proof { .. } => "invalid_proof",
        DelegateError::WrongAnswer { .. } => "wrong_answer",
        DelegateError::StreamCut { .. } => "stream_cut",
        DelegateError::StreamMismatch { .. } => "stream_mismatch",
        _ => "error",
    }
}

/// Records a delegation of task `task_id` that ended before its task was
/// sent (the target down or another node), for the statistics.
///
/// # Errors
/// [`StoreError`] when the ledger cannot be written.
pub async fn record_failure(
    store: &Store,
    target: &Peer,
    protocol: Protocol,
    task_id: &str,
    task_type: &str,
    error: &DelegateError,
) -> Result<i64, StoreError> {
    let entry = LedgerEntry {
        id: 0,
        task_id: task_id.to_owned(),
        peer: target.name.clone(),
        peer_lct: target.lct_id.clone(),
        protocol: protocol.as_str().to_owned(),
        task_type: task_type.to_owned(),
        sent_at_ms: now_ms(),
        status: failure_status(error).to_owned(),
        latency_ms: None,
        quality: None,
        task: Vec::new(),
        proof: None,
        proof_task: None,
        error: Some(error.to_string()),
    };
    store.record_delegation(entry).await
}

/// Why a receipt does not check out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The line is not a receipt.
    #[error("not a receipt: {0}")]
    Malformed(#[from] Malformed),
    /// The receipt holds no proof (the delegation failed).
    #[error("no proof: the delegation ended {status}")]
    NoProof {
        /// The status the delegation ended with.
        status: String,
    },
    /// The receipt's legacy peer is not in the trust store.
    #[error("proof signature: {peer} is not a known peer")]
    UnknownPeer {
        /// The peer the receipt names.
        peer: String,
    },
    /// The proof's signature does not verify with a known key.
    #[error("proof signature: {0}")]
    Signature(#[source] VerifyError),
    /// The proof is not about the task beside it.
    #[error("proof does not match its task: {0}")]
    Mismatch(#[from] Mismatch),
}

/// What makes a line not a receipt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Not JSON as Python reads it.
    #[error(transparent)]
    Json(PyJsonError),
    /// A field of a receipt is missing.
    #[error("no field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong type.
    #[error("the field {field:?} is not {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A native task or proof that is not an envelope, or a proof payload
    /// that is not a proof.
    #[error(transparent)]
    Native(serde_json::Error),
    /// An envelope whose payload does not decode.
    #[error(transparent)]
    Payload(EnvelopeError),
    /// A legacy task or answer without its parts.
    #[error(transparent)]
    Legacy(LegacyError),
}

/// How a proof and the task beside it disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// A legacy answer for another task id.
    #[error("task ids differ")]
    TaskIds,
    /// The proof names one executor and is signed by another.
    #[error("the proof names executor {named} but is signed by {signer}")]
    Executor {
        /// The executor the proof names.
        named: String,
        /// The LCT id of the key that signed it.
        signer: String,
    },
    /// The proof is about another payload.
    #[error("the proof is for payload {proof}, the task beside it is {task}")]
    Payload {
        /// The payload digest the proof names.
        proof: String,
        /// The digest of the task beside it.
        task: String,
    },
    /// The result and its digest disagree.
    #[error("the result does not match its digest")]
    Result,
}

/// One signed message of a receipt, opened for reading.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedMessage {
    /// The signed fields: a native envelope's payload, or a legacy
    /// message's `task` or `proof` object.
    pub fields: serde_json::Value,
    /// The key ids its signatures name (none for a legacy message, whose
    /// signature names no key).
    pub key_ids: Vec<String>,
}

/// A receipt's task and proof, opened for a person to read. Nothing is
/// verified here: [`verify_receipt`] says whether the signatures hold.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedReceipt {
    /// The signed task, if it could be opened.
    pub task: Option<OpenedMessage>,
    /// The signed proof, if there is one and it could be opened.
    pub proof: Option<OpenedMessage>,
}

/// Opens a receipt's messages: the base64 payloads of native envelopes
/// decoded, the signed object of legacy ones taken out.
pub fn open_receipt(receipt: &Receipt) -> OpenedReceipt {
    let legacy = receipt.protocol == Protocol::Legacy.as_str();
    let open = |message: &PyValue, inner: &str| -> Option<OpenedMessage> {
        let json = message.to_json();
        if legacy {
            return Some(OpenedMessage {
                fields: json.get(inner)?.clone(),
                key_ids: Vec::new(),
            });
        }
        let envelope: Envelope = serde_json::from_value(json).ok()?;
        let payload = envelope.payload_bytes().ok()?;
        Some(OpenedMessage {
            fields: serde_json::from_slice(&payload).ok()?,
            key_ids: envelope.signatures.into_iter().map(|s| s.keyid).collect(),
        })
    };
    OpenedReceipt {
        task: open(&receipt.task, "task"),
        proof: receipt.proof.as_ref().and_then(|p| open(p, "proof")),
    }
}

/// What a receipt proves, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The name of the peer whose key signed the proof.
    pub signer: String,
    /// The outcome the proof states under that signature; `None` for a
    /// legacy proof, which states none.
    pub status: Option<sage_types::ProofStatus>,
}

/// Checks one receipt offline: the proof's signature with the executor's
/// key from `trust`, and that the proof names the task beside it (its
/// exact payload digest for v1) and the right result digest.
///
/// # Errors
/// [`ReceiptError`] naming the first check that failed.
pub fn verify_receipt(
    receipt: &Receipt,
    trust: &TrustStore,
) -> Result<VerifiedReceipt, ReceiptError> {
    let Some(proof) = &receipt.proof else {
        return Err(ReceiptError::NoProof {
            status: receipt.status.clone(),
        });
    };
    if receipt.protocol == Protocol::Legacy.as_str() {
        let answer = ReceivedResponse::of(proof).map_err(Malformed::Legacy)?;
        let request = ReceivedRequest::of(&receipt.task).map_err(Malformed::Legacy)?;
        let peer = trust
            .find(&receipt.peer)
            .or_else(|| trust.by_lct(&receipt.peer_lct))
            .ok_or_else(|| ReceiptError::UnknownPeer {
                peer: receipt.peer.clone(),
            })?;
        verify_legacy(
            &peer.public_key,
            answer.signable.canonical().as_bytes(),
            &answer.signature,
        )
        .map_err(ReceiptError::Signature)?;
        if request.signable.get("task_id") != answer.signable.get("task_id") {
            return Err(Mismatch::TaskIds.into());
        }
        return Ok(VerifiedReceipt {
            signer: peer.name.clone(),
            status: None,
        });
    }
    // The native protocol's messages are plain JSON: the view is exact.
    let envelope: Envelope = serde_json::from_value(proof.to_json()).map_err(Malformed::Native)?;
    let verified =
        verify_envelope(&envelope, PROOF_PAYLOAD_TYPE, trust).map_err(ReceiptError::Signature)?;
    let parsed: Proof = serde_json::from_slice(&verified.payload).map_err(Malformed::Native)?;
    if parsed.executor != verified.signer.lct_id {
        return Err(Mismatch::Executor {
            named: parsed.executor,
            signer: verified.signer.lct_id.clone(),
        }
        .into());
    }
    let task: Envelope =
        serde_json::from_value(receipt.task.to_json()).map_err(Malformed::Native)?;
    let payload = task.payload_bytes().map_err(Malformed::Payload)?;
    let task_digest = sha256_tagged(&payload);
    if parsed.task_digest != task_digest {
        return Err(Mismatch::Payload {
            proof: parsed.task_digest,
            task: task_digest,
        }
        .into());
    }
    if parsed.result_digest != json_digest(&parsed.result) {
        return Err(Mismatch::Result.into());
    }
    Ok(VerifiedReceipt {
        signer: verified.signer.name.clone(),
        status: Some(parsed.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sage_types::ProofStatus;
    use serde_json::json;

    fn legacy_receipt(task: serde_json::Value, proof: serde_json::Value) -> Receipt {
        let py = |v: serde_json::Value| pyjson::loads(v.to_string().as_bytes()).unwrap();
        let (task, proof) = (py(task), py(proof));
        Receipt {
            task_id: "t".into(),
            peer: "Sprout".into(),
            peer_lct: "sprout_sage_lct".into(),
            protocol: Protocol::Legacy.as_str().into(),
            sent_at_ms: 0,
            status: "succeeded".into(),
            task,
            proof: Some(proof),
        }
    }

    #[test]
    fn a_legacy_receipt_without_its_parts_is_malformed() {
        use sage_types::legacy::{PROOF_FIELDS, TASK_FIELDS};
        let trust = TrustStore::default();
        let full = |fields: &[&str]| {
            serde_json::Value::Object(fields.iter().map(|f| (f.to_string(), json!(1))).collect())
        };
        let (task, proof) = (full(&TASK_FIELDS), full(&PROOF_FIELDS));
        let cases = [
            (
                legacy_receipt(json!({"task": task}), json!({"proof": proof})),
                r#"not a receipt: the answer has no field "signature""#,
            ),
            (
                legacy_receipt(
                    json!({"task": task}),
                    json!({"proof": proof, "signature": 1}),
                ),
                r#"not a receipt: the answer's field "signature" is not a string"#,
            ),
            (
                legacy_receipt(json!({"task": task}), json!({"signature": "ab"})),
                r#"not a receipt: the answer has no field "proof""#,
            ),
            (
                legacy_receipt(
                    json!({"task": task}),
                    json!({"proof": {}, "signature": "ab"}),
                ),
                r#"not a receipt: the proof has no field "task_id""#,
            ),
            (
                legacy_receipt(json!({}), json!({"proof": proof, "signature": "ab"})),
                r#"not a receipt: the request has no field "task""#,
            ),
        ];
        for (receipt, want) in cases {
            assert_eq!(
                verify_receipt(&receipt, &trust).unwrap_err().to_string(),
                want
            );
        }
    }

    #[test]
    fn a_receipt_line_reads_back_to_the_same_receipt() {
        let mut receipt = legacy_receipt(json!({"task": {}}), json!({"signature": "ab"}));
        receipt.proof = Some(pyjson::loads(br#"{"x": NaN, "s": "\ud800", "n": 1e400}"#).unwrap());
        let line = receipt.to_line();
        assert!(line.is_ascii() && !line.contains('\n'), "{line}");
        // NaN is not equal to itself: the lines are compared.
        assert_eq!(Receipt::from_line(line.as_bytes()).unwrap().to_line(), line);
        receipt.proof = None;
        assert_eq!(
            Receipt::from_line(receipt.to_line().as_bytes()).unwrap(),
            receipt
        );
        assert_eq!(
            Receipt::from_line(br#"{"task_id": "t"}"#)
                .unwrap_err()
                .to_string(),
            r#"not a receipt: no field "peer""#
        );
        let mut line: serde_json::Value = serde_json::from_str(&receipt.to_line()).unwrap();
        line["sent_at_ms"] = json!("yesterday");
        assert_eq!(
            Receipt::from_line(line.to_string().as_bytes())
                .unwrap_err()
                .to_string(),
            r#"not a receipt: the field "sent_at_ms" is not a whole number"#
        );
        line["sent_at_ms"] = json!(0);
        line["peer"] = json!(7);
        assert_eq!(
            Receipt::from_line(line.to_string().as_bytes())
                .unwrap_err()
                .to_string(),
            r#"not a receipt: the field "peer" is not a string"#
        );
        assert!(Receipt::from_line(b"{").is_err());
    }

    /// A native receipt whose task Thor signed and whose proof Sprout
    /// signed, changed by `tamper` before the proof is signed.
    fn native_receipt(tamper: impl FnOnce(&mut Proof, &mut Vec<u8>)) -> (Receipt, TrustStore) {
        use sage_crypto::{sign_envelope, NodeKey, PeerSource};
        use sage_types::task::TASK_PAYLOAD_TYPE;
        let (thor, sprout) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        let mut trust = TrustStore::default();
        for (name, key) in [("Thor", &thor), ("Sprout", &sprout)] {
            let peer = Peer::new(name, key.public(), PeerSource::Given);
            trust.insert(peer).unwrap();
        }
        let task = br#"{"task_id":"t","input":"hi"}"#.to_vec();
        let result = json!({"echo": "hi"});
        let mut proof = Proof {
            executor: sage_types::default_lct_id("Sprout"),
            issuer: sage_types::default_lct_id("Thor"),
            task_id: "t".into(),
            task_digest: sha256_tagged(&task),
            status: ProofStatus::Succeeded,
            executor_kind: "echo".into(),
            exit_status: None,
            result_digest: json_digest(&result),
            result,
            started_at: 0,
            finished_at: 1,
            latency_ms: 1.0,
            actual_cost: 0.0,
            quality: 1.0,
            convergence: 1.0,
            iterations: 1,
        };
        let mut signed_task = task.clone();
        tamper(&mut proof, &mut signed_task);
        let envelope = |key: &NodeKey, kind: &str, bytes: &[u8]| {
            let signed = sign_envelope(key, kind, bytes);
            pyjson::loads(&serde_json::to_vec(&signed).unwrap()).unwrap()
        };
        let receipt = Receipt {
            task_id: "t".into(),
            peer: "Sprout".into(),
            peer_lct: proof.executor.clone(),
            protocol: Protocol::V1.as_str().into(),
            sent_at_ms: 0,
            status: "succeeded".into(),
            task: envelope(&thor, TASK_PAYLOAD_TYPE, &signed_task),
            proof: Some(envelope(
                &sprout,
                PROOF_PAYLOAD_TYPE,
                &serde_json::to_vec(&proof).unwrap(),
            )),
        };
        (receipt, trust)
    }

    #[test]
    fn each_tampered_native_receipt_is_refused_for_its_own_reason() {
        let (receipt, trust) = native_receipt(|_, _| {});
        assert_eq!(verify_receipt(&receipt, &trust).unwrap().signer, "Sprout");
        // The status is the signed one, not the receipt's own field.
        let (receipt, trust) = native_receipt(|proof, _| proof.status = ProofStatus::Failed);
        assert_eq!(receipt.status, "succeeded");
        assert_eq!(
            verify_receipt(&receipt, &trust).unwrap().status,
            Some(ProofStatus::Failed)
        );

        type Tamper = fn(&mut Proof, &mut Vec<u8>);
        type Expected = fn(&ReceiptError) -> bool;
        let cases: [(&str, Tamper, Expected); 3] = [
            (
                "another task beside the proof",
                |_, task| task.extend_from_slice(b" "),
                |e| matches!(e, ReceiptError::Mismatch(Mismatch::Payload { .. })),
            ),
            (
                "a proof naming another executor",
                |proof, _| proof.executor = sage_types::default_lct_id("Legion"),
                |e| matches!(e, ReceiptError::Mismatch(Mismatch::Executor { .. })),
            ),
            (
                "a result that is not the one digested",
                |proof, _| proof.result = json!({"echo": "bye"}),
                |e| matches!(e, ReceiptError::Mismatch(Mismatch::Result)),
            ),
        ];
        for (what, tamper, expected) in cases {
            let (receipt, trust) = native_receipt(tamper);
            let error = verify_receipt(&receipt, &trust).unwrap_err();
            assert!(expected(&error), "{what}: {error:?}");
        }

        // Signed by a key the trust store does not hold.
        let (receipt, _) = native_receipt(|_, _| {});
        let error = verify_receipt(&receipt, &TrustStore::default()).unwrap_err();
        assert!(matches!(error, ReceiptError::Signature(_)), "{error:?}");

        // A proof whose bytes changed after it was signed.
        let (mut receipt, trust) = native_receipt(|_, _| {});
        let mut proof = receipt.proof.take().unwrap().to_json();
        let payload = proof["payload"].as_str().unwrap().to_owned();
        proof["payload"] = json!(format!("{}A", &payload[..payload.len() - 1]));
        receipt.proof = Some(pyjson::loads(proof.to_string().as_bytes()).unwrap());
        let error = verify_receipt(&receipt, &trust).unwrap_err();
        assert!(
            matches!(
                error,
                ReceiptError::Signature(_) | ReceiptError::Malformed(_)
            ),
            "{error:?}"
        );

        // No proof at all.
        let (mut receipt, trust) = native_receipt(|_, _| {});
        receipt.proof = None;
        receipt.status = "timed_out".into();
        let error = verify_receipt(&receipt, &trust).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no proof: the delegation ended timed_out"
        );
    }

    /// A legacy receipt of task `t` whose proof the key of `seed` signed
    /// (Sprout's is `[2; 32]`), its proof and request changed by `tamper`
    /// after signing; and a trust store holding Sprout.
    fn signed_legacy_receipt(
        seed: [u8; 32],
        tamper: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
    ) -> (Receipt, TrustStore) {
        use sage_crypto::legacy::sign_legacy;
        use sage_crypto::{NodeKey, PeerSource};
        use sage_types::legacy::{signable_proof, PROOF_FIELDS, TASK_FIELDS};
        let fields = |names: &[&str]| -> serde_json::Value {
            let mut object: serde_json::Map<_, _> =
                names.iter().map(|f| (f.to_string(), json!(1))).collect();
            object.insert("task_id".into(), json!("t"));
            object.into()
        };
        let mut proof = fields(&PROOF_FIELDS);
        let py = |v: &serde_json::Value| pyjson::loads(v.to_string().as_bytes()).unwrap();
        let signable = signable_proof(&py(&proof)).unwrap();
        let signature = sign_legacy(&NodeKey::from_seed(&seed), signable.canonical().as_bytes());
        let mut task = fields(&TASK_FIELDS);
        tamper(&mut proof, &mut task);
        let receipt = legacy_receipt(
            json!({"task": task, "requester_lct_id": "thor_sage_lct", "signature": "ab"}),
            json!({"proof": proof, "signature": signature}),
        );
        let mut trust = TrustStore::default();
        let sprout = NodeKey::from_seed(&SPROUT_SEED).public();
        trust
            .insert(Peer::new("Sprout", sprout, PeerSource::Given))
            .unwrap();
        (receipt, trust)
    }

    const SPROUT_SEED: [u8; 32] = [2; 32];

    #[test]
    fn each_tampered_legacy_receipt_is_refused_for_its_own_reason() {
        let (receipt, trust) = signed_legacy_receipt(SPROUT_SEED, |_, _| {});
        assert_eq!(verify_receipt(&receipt, &trust).unwrap().signer, "Sprout");

        type Tamper = fn(&mut serde_json::Value, &mut serde_json::Value);
        type Expected = fn(&ReceiptError) -> bool;
        let cases: [(&str, [u8; 32], Tamper, Expected); 4] = [
            (
                "signed by another key",
                [3; 32],
                |_, _| {},
                |e| matches!(e, ReceiptError::Signature(_)),
            ),
            (
                "a result changed after signing",
                SPROUT_SEED,
                |proof, _| proof["result_data"] = json!({"echo": "bye"}),
                |e| matches!(e, ReceiptError::Signature(_)),
            ),
            (
                "a task id changed after signing",
                SPROUT_SEED,
                |proof, _| proof["task_id"] = json!("t2"),
                |e| matches!(e, ReceiptError::Signature(_)),
            ),
            (
                "a signed proof beside another task",
                SPROUT_SEED,
                |_, task| task["task_id"] = json!("t2"),
                |e| matches!(e, ReceiptError::Mismatch(Mismatch::TaskIds)),
            ),
        ];
        for (what, seed, tamper, expected) in cases {
            let (receipt, trust) = signed_legacy_receipt(seed, tamper);
            let error = verify_receipt(&receipt, &trust).unwrap_err();
            assert!(expected(&error), "{what}: {error:?}");
        }

        // A peer the trust store does not hold, by name or LCT id.
        let (receipt, _) = signed_legacy_receipt(SPROUT_SEED, |_, _| {});
        let error = verify_receipt(&receipt, &TrustStore::default()).unwrap_err();
        assert!(
            matches!(&error, ReceiptError::UnknownPeer { peer } if peer == "Sprout"),
            "{error:?}"
        );
    }
}
