//! Signatures of the Python original's protocol: Ed25519 over the
//! Python-compatible canonical JSON of a signable object, as 128 hex
//! characters.

use sage_types::canonical::to_python_json;
use serde_json::Value;

use crate::{NodeKey, PublicKey, VerifyError};

/// The bytes the original signs for `signable`: `json.dumps(signable, sort_keys=True)`.
pub fn signing_bytes(signable: &Value) -> Vec<u8> {
    to_python_json(signable).into_bytes()
}

/// Signs `canonical` (see [`signing_bytes`]); 128 lowercase hex characters.
pub fn sign_legacy(key: &NodeKey, canonical: &[u8]) -> String {
    hex::encode(key.sign(canonical))
}

/// Verifies a hex signature over `canonical` with `key`.
///
/// # Errors
/// [`VerifyError::BadSignature`] when the text is not 128 hex characters or
/// does not verify.
pub fn verify_legacy(
    key: &PublicKey,
    canonical: &[u8],
    signature_hex: &str,
) -> Result<(), VerifyError> {
    let mut signature = [0u8; 64];
    let ok = hex::decode_to_slice(signature_hex, &mut signature).is_ok()
        && key.verify(canonical, &signature);
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature {
            key_id: key.key_id().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_over_its_bytes() {
        let key = NodeKey::generate();
        let bytes = signing_bytes(&serde_json::json!({"b": 1.0, "a": "é"}));
        assert_eq!(bytes, br#"{"a": "\u00e9", "b": 1.0}"#);
        let sig = sign_legacy(&key, &bytes);
        assert_eq!(sig.len(), 128);
        assert!(verify_legacy(&key.public(), &bytes, &sig).is_ok());
        assert!(verify_legacy(&key.public(), b"{}", &sig).is_err());
        assert!(verify_legacy(&key.public(), &bytes, &sig[..126]).is_err());
        assert!(verify_legacy(&NodeKey::generate().public(), &bytes, &sig).is_err());
    }
}
