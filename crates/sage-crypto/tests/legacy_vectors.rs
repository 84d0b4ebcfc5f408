//! Every canonical string and signature of the Python original's golden
//! vectors, reproduced byte for byte.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use sage_crypto::legacy::{sign_legacy, signing_bytes, verify_legacy};
use sage_crypto::NodeKey;
use sage_types::legacy::{read_request, read_response};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/legacy-v0.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn key(vectors: &Value, name: &str) -> NodeKey {
    let seed = hex::decode(vectors["keys"][name]["seed_hex"].as_str().unwrap()).unwrap();
    let key = NodeKey::from_key_file(&seed).unwrap();
    assert_eq!(
        key.public().to_hex(),
        vectors["keys"][name]["public_key_hex"]
    );
    key
}

#[test]
fn task_and_proof_signatures_are_reproduced() {
    let v = vectors();
    let mut checked = 0;
    for (kind, body_field) in [("tasks", "request_body"), ("proofs", "response_body")] {
        for vector in v[kind].as_array().unwrap() {
            let key = key(&v, vector["signer"].as_str().unwrap());
            let canonical = vector["canonical"].as_str().unwrap().as_bytes();
            assert_eq!(signing_bytes(&vector["signable"]), canonical);
            // Ed25519 is deterministic: the same key and bytes give the same signature.
            assert_eq!(sign_legacy(&key, canonical), vector["signature_hex"]);

            // The whole body as it travelled: rebuild, re-serialize, verify.
            let body = vector[body_field].as_str().unwrap();
            let (signable, signature) = if kind == "tasks" {
                let r = read_request(body.as_bytes()).unwrap();
                (r.signable, r.signature)
            } else {
                let r = read_response(body.as_bytes()).unwrap();
                (r.signable, r.signature)
            };
            let bytes = signable.canonical().into_bytes();
            assert_eq!(bytes, canonical);
            verify_legacy(&key.public(), &bytes, &signature).unwrap();
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}
