//! The delegator's checks of a native proof: each forged or tampered
//! answer is refused for its own reason.

use std::time::Duration;

use base64::Engine as _;
use sage_crypto::{sign_envelope, NodeKey, Peer, PeerSource};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, Proof, ProofStatus, QualityRequirements};
use serde_json::json;

use super::{check_proof, sign_task, SignedTask, TaskSpec};
use crate::ProofError;

/// Whether an error is the one a case expects.
type Expected = fn(&ProofError) -> bool;

/// The seed of Thor's key.
pub(super) const THOR_SEED: [u8; 32] = [1; 32];

/// Thor as the delegator knows it.
pub(super) fn thor() -> Peer {
    Peer::new(
        "Thor",
        NodeKey::from_seed(&THOR_SEED).public(),
        PeerSource::Given,
    )
}

/// A task to delegate, which may be proved by an earlier send of it.
pub(super) fn spec() -> TaskSpec {
    TaskSpec {
        task_type: "echo".into(),
        input: json!({"x": 1}),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        lifetime: Duration::from_secs(60),
        max_cost: None,
        max_latency: Duration::from_secs(30),
        task_id: None,
        earlier_digests: vec!["sha256:earlier".into()],
        blobs: Vec::new(),
        origin: None,
    }
}

/// Thor as the delegator knows it, and a task Sprout signed for it.
fn sent() -> (Peer, SignedTask) {
    let thor = thor();
    let sprout = NodeKey::from_seed(&[2; 32]);
    let signed = sign_task(&sprout, "sprout_sage_lct", &thor.lct_id, &spec());
    (thor, signed)
}

/// What Thor answers, before any forgery: the proof of `signed`.
struct Answer {
    proof: Proof,
    signer: NodeKey,
    payload_type: &'static str,
    /// The bytes signed instead of the proof, if any.
    payload: Option<Vec<u8>>,
}

impl Answer {
    fn honest(thor: &Peer, signed: &SignedTask) -> Self {
        let result = json!({"x": 1});
        Answer {
            proof: Proof {
                executor: thor.lct_id.clone(),
                issuer: signed.task.issuer.clone(),
                task_id: signed.task.task_id.clone(),
                task_digest: signed.digest.clone(),
                status: ProofStatus::Succeeded,
                executor_kind: "echo".into(),
                exit_status: None,
                result_digest: sage_crypto::digest::json_digest(&result),
                result,
                started_at: 0,
                finished_at: 1,
                latency_ms: 1.0,
                actual_cost: 1.0,
                quality: 1.0,
                convergence: 1.0,
                iterations: 1,
            },
            signer: NodeKey::from_seed(&THOR_SEED),
            payload_type: PROOF_PAYLOAD_TYPE,
            payload: None,
        }
    }

    fn envelope(&self) -> Envelope {
        let payload = self
            .payload
            .clone()
            .unwrap_or_else(|| serde_json::to_vec(&self.proof).unwrap());
        sign_envelope(&self.signer, self.payload_type, &payload)
    }
}

/// The payload of `envelope` replaced by `bytes`, its signature kept.
fn with_payload(mut envelope: Envelope, bytes: &[u8]) -> Envelope {
    envelope.payload = base64::engine::general_purpose::STANDARD.encode(bytes);
    envelope
}

#[test]
fn the_honest_proof_and_one_naming_an_earlier_send_are_accepted() {
    let (thor, signed) = sent();
    let honest = Answer::honest(&thor, &signed);
    let proof = check_proof(&honest.envelope(), &signed, &thor).unwrap();
    assert_eq!(proof, honest.proof);
    // A retry answered with the proof of an earlier send of the task.
    let mut earlier = Answer::honest(&thor, &signed);
    earlier.proof.task_digest = "sha256:earlier".into();
    check_proof(&earlier.envelope(), &signed, &thor).unwrap();
}

#[test]
fn each_forged_or_tampered_proof_is_refused_for_its_own_reason() {
    type Forge = fn(&mut Answer);
    let cases: [(&str, Forge, Expected); 9] = [
        (
            "signed by another key",
            |a| a.signer = NodeKey::from_seed(&[3; 32]),
            |e| matches!(e, ProofError::SignedByOtherKey { .. }),
        ),
        (
            "signed as another payload type",
            |a| a.payload_type = TASK_PAYLOAD_TYPE,
            |e| matches!(e, ProofError::Malformed(m) if m.contains("payload type")),
        ),
        (
            "a signed payload that is not a proof",
            |a| a.payload = Some(br#"{"task_id":"t"}"#.to_vec()),
            |e| matches!(e, ProofError::Malformed(m) if m.contains("not a v1 proof")),
        ),
        (
            "another task id",
            |a| a.proof.task_id = "task_other".into(),
            |e| matches!(e, ProofError::ForOtherTask { detail } if detail.starts_with("task id")),
        ),
        (
            "another task digest",
            |a| a.proof.task_digest = "sha256:other".into(),
            |e| matches!(e, ProofError::ForOtherTask { detail } if detail.starts_with("task digest")),
        ),
        (
            "another executor",
            |a| a.proof.executor = "legion_sage_lct".into(),
            |e| matches!(e, ProofError::Mismatch { detail } if detail.starts_with("executor")),
        ),
        (
            "another issuer",
            |a| a.proof.issuer = "legion_sage_lct".into(),
            |e| matches!(e, ProofError::Mismatch { detail } if detail.starts_with("issuer")),
        ),
        (
            "a result that is not the one digested",
            |a| a.proof.result = json!({"x": 2}),
            |e| matches!(e, ProofError::Mismatch { detail } if detail.starts_with("result digest")),
        ),
        (
            "a result digest that is not the result's",
            |a| a.proof.result_digest = "sha256:other".into(),
            |e| matches!(e, ProofError::Mismatch { detail } if detail.starts_with("result digest")),
        ),
    ];
    let (thor, signed) = sent();
    for (what, forge, expected) in cases {
        let mut answer = Answer::honest(&thor, &signed);
        forge(&mut answer);
        let error = check_proof(&answer.envelope(), &signed, &thor).unwrap_err();
        assert!(expected(&error), "{what}: {error:?}");
    }
}

#[test]
fn a_proof_altered_after_it_was_signed_is_refused() {
    let (thor, signed) = sent();
    let honest = Answer::honest(&thor, &signed);
    let mut altered = honest.proof.clone();
    altered.quality = 0.5;
    type Alter = Box<dyn Fn(Envelope) -> Envelope>;
    let altered_bytes = serde_json::to_vec(&altered).unwrap();
    let cases: [(&str, Alter, Expected); 3] = [
        (
            "its payload changed",
            Box::new(move |e| with_payload(e, &altered_bytes)),
            |e| matches!(e, ProofError::InvalidSignature { .. }),
        ),
        (
            "its signature dropped",
            Box::new(|mut e| {
                e.signatures.clear();
                e
            }),
            |e| matches!(e, ProofError::Malformed(_)),
        ),
        (
            "its payload not base64",
            Box::new(|mut e| {
                e.payload = "not base64!".into();
                e
            }),
            |e| matches!(e, ProofError::Malformed(_)),
        ),
    ];
    for (what, alter, expected) in cases {
        let error = check_proof(&alter(honest.envelope()), &signed, &thor).unwrap_err();
        assert!(expected(&error), "{what}: {error:?}");
    }
}
