//! The DSSE envelope that carries every signed v1 message, and its
//! pre-authentication encoding (PAE).
//!
//! Signatures cover `PAE(payloadType, payload)` over the exact payload bytes,
//! never a re-serialization, so any DSSE verifier can check a `sage` proof.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::EnvelopeError;

/// A DSSE envelope: `{payloadType, payload, signatures: [{keyid, sig}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Media type of the payload, e.g. [`crate::task::TASK_PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Standard base64 of the payload bytes.
    pub payload: String,
    /// Signatures over `PAE(payloadType, payload bytes)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// Names the key that made the signature (see `sage_crypto::KeyId`).
    pub keyid: String,
    /// Standard base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

impl Envelope {
    /// An envelope around `payload` with signatures to be added.
    pub fn new(payload_type: &str, payload: &[u8]) -> Self {
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: Vec::new(),
        }
    }

    /// Adds a signature made over [`pae`].
    pub fn push_signature(&mut self, keyid: &str, sig: &[u8]) {
        self.signatures.push(EnvelopeSignature {
            keyid: keyid.to_owned(),
            sig: STANDARD.encode(sig),
        });
    }

    /// The payload bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::PayloadEncoding`] when `payload` is not base64.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        STANDARD
            .decode(&self.payload)
            .map_err(|_| EnvelopeError::PayloadEncoding)
    }

    /// The envelope as JSON bytes: a request body, or a proof as the ledger
    /// keeps it.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Strings only: serde_json cannot fail on them writing to a `Vec`.
        serde_json::to_vec(self).expect("an Envelope always serializes to JSON")
    }

    /// The envelope as a JSON value, for reports.
    pub fn to_json(&self) -> serde_json::Value {
        // Strings only, as for `to_bytes`.
        serde_json::to_value(self).expect("an Envelope always serializes to JSON")
    }

    /// The raw bytes of signature `index`.
    ///
    /// # Errors
    /// [`EnvelopeError::SignatureEncoding`] when it is not base64.
    pub fn signature_bytes(&self, index: usize) -> Result<Vec<u8>, EnvelopeError> {
        self.signatures
            .get(index)
            .and_then(|s| STANDARD.decode(&s.sig).ok())
            .ok_or(EnvelopeError::SignatureEncoding { index })
    }
}

/// DSSE's pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`,
/// lengths as ASCII decimal byte counts.
///
/// ```
/// let pae = sage_types::envelope::pae("t", b"hi");
/// assert_eq!(pae, b"DSSEv1 1 t 2 hi");
/// ```
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // The worked example of the DSSE protocol document.
        let pae = pae("http://example.com/HelloWorld", b"hello world");
        assert_eq!(
            pae,
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_counts_bytes_not_characters() {
        assert_eq!(pae("é", "ü".as_bytes()), "DSSEv1 2 é 2 ü".as_bytes());
    }

    #[test]
    fn payload_round_trips_and_bad_base64_is_reported() {
        let mut env = Envelope::new("t", b"{\"a\":1}");
        env.push_signature("k", &[1, 2, 3]);
        assert_eq!(env.payload_bytes().unwrap(), b"{\"a\":1}");
        assert_eq!(env.signature_bytes(0).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            env.signature_bytes(1),
            Err(EnvelopeError::SignatureEncoding { index: 1 })
        );
        env.payload = "not base64!".into();
        assert_eq!(env.payload_bytes(), Err(EnvelopeError::PayloadEncoding));
    }

    #[test]
    fn wire_names_are_dsse_names() {
        let env = Envelope::new("t", b"x");
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(env.to_bytes(), json.as_bytes());
        assert_eq!(
            env.to_json(),
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        );
        assert_eq!(
            json,
            r#"{"payloadType":"t","payload":"eA==","signatures":[]}"#
        );
        assert!(serde_json::from_str::<Envelope>(
            r#"{"payloadType":"t","payload":"","signatures":[],"x":1}"#
        )
        .is_err());
    }
}
