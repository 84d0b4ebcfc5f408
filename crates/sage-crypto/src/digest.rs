//! `sha256:<hex>` digests, as proofs carry them.

use sha2::{Digest, Sha256};

/// `sha256:` followed by the lowercase hex SHA-256 of `bytes`.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Digest of a JSON value as proofs define it: compact JSON with sorted keys
/// (what `serde_json` writes for a [`serde_json::Value`]).
pub fn json_digest(value: &serde_json::Value) -> String {
    // Serializing a Value into a Vec cannot fail: keys are strings.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    sha256_tagged(&bytes)
}

/// Raw SHA-256.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        assert_eq!(
            sha256_tagged(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn json_digest_ignores_source_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":[1.5,"x"]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "a": [1.5, "x"], "b": 1 }"#).unwrap();
        assert_eq!(json_digest(&a), json_digest(&b));
        assert_eq!(json_digest(&a), sha256_tagged(br#"{"a":[1.5,"x"],"b":1}"#));
    }
}
