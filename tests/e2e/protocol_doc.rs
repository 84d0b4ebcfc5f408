//! The examples in docs/protocol.md are real: their signatures verify.

use sage_crypto::{verify_envelope_with, PublicKey};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, Proof, Task};

const DOC: &str = include_str!("../../docs/protocol.md");
const SPROUT_PUB: &str = "8202edaa56d72167323fcb9f63e6f55698647a773e2c7d2931c6942c6f88ca05";
const THOR_PUB: &str = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c";

/// The JSON block that follows the marker `<!-- example: NAME -->`.
fn example(name: &str) -> serde_json::Value {
    let marker = format!("<!-- example: {name} -->");
    let after = DOC
        .split(&marker)
        .nth(1)
        .unwrap_or_else(|| panic!("no {marker} in docs/protocol.md"));
    let block = after
        .split("```json")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("json block");
    serde_json::from_str(block).unwrap_or_else(|e| panic!("example {name} is not JSON: {e}"))
}

#[test]
fn the_example_task_envelope_verifies_with_sprouts_key() {
    let envelope: Envelope = serde_json::from_value(example("task-envelope")).unwrap();
    let key = PublicKey::from_hex(SPROUT_PUB).unwrap();
    let verified = verify_envelope_with(&envelope, TASK_PAYLOAD_TYPE, &key).unwrap();
    let task: Task = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(
        serde_json::to_value(&task).unwrap(),
        example("task-payload")
    );
    assert_eq!(task.issuer, "sprout_sage_lct");
    assert_eq!(task.audience, "thor_sage_lct");
}

#[test]
fn the_example_proof_envelope_verifies_with_thors_key_and_names_the_task() {
    let task_env: Envelope = serde_json::from_value(example("task-envelope")).unwrap();
    let envelope: Envelope = serde_json::from_value(example("proof-envelope")).unwrap();
    let key = PublicKey::from_hex(THOR_PUB).unwrap();
    let verified = verify_envelope_with(&envelope, PROOF_PAYLOAD_TYPE, &key).unwrap();
    let proof: Proof = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(
        serde_json::to_value(&proof).unwrap(),
        example("proof-payload")
    );
    assert_eq!(
        proof.task_digest,
        sage_crypto::digest::sha256_tagged(&task_env.payload_bytes().unwrap())
    );
    assert_eq!(
        proof.result_digest,
        sage_crypto::digest::json_digest(&proof.result)
    );
}
