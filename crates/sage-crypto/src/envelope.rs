//! Signing payloads into DSSE envelopes and verifying them before any
//! payload is parsed.

use sage_types::envelope::pae;
use sage_types::Envelope;

use crate::{NodeKey, Peer, PublicKey, TrustStore, VerifyError};

/// Most signatures an envelope may carry; each unknown one costs a lookup,
/// so a flood of them is refused up front.
pub const MAX_SIGNATURES: usize = 4;

/// Signs `payload` as `payload_type` with `key` into a new envelope.
pub fn sign_envelope(key: &NodeKey, payload_type: &str, payload: &[u8]) -> Envelope {
    let mut envelope = Envelope::new(payload_type, payload);
    let signature = key.sign(&pae(payload_type, payload));
    envelope.push_signature(key.public().key_id().as_str(), &signature);
    envelope
}

/// A verified envelope: the payload bytes that the signature covers, and
/// who signed them.
#[derive(Debug)]
pub struct Verified<S> {
    /// The exact signed payload bytes; parse these, and only after verifying.
    pub payload: Vec<u8>,
    /// The signer.
    pub signer: S,
}

/// Verifies `envelope` against the keys of the trust store: the first
/// signature by a known key must verify.
///
/// # Errors
/// [`VerifyError`] naming the first check that failed.
pub fn verify_envelope<'a>(
    envelope: &Envelope,
    payload_type: &str,
    trust: &'a TrustStore,
) -> Result<Verified<&'a Peer>, VerifyError> {
    verify_by(envelope, payload_type, |key_id| {
        trust.by_key_id(key_id).map(|peer| (peer.public_key, peer))
    })
}

/// Verifies `envelope` against one expected key, as a delegator checks the
/// proof of the peer it chose.
///
/// # Errors
/// [`VerifyError::UnknownKey`] when no signature claims `key`, else as
/// [`verify_envelope`].
pub fn verify_envelope_with(
    envelope: &Envelope,
    payload_type: &str,
    key: &PublicKey,
) -> Result<Verified<PublicKey>, VerifyError> {
    let expected = key.key_id();
    verify_by(envelope, payload_type, |key_id| {
        (key_id == expected.as_str()).then_some((*key, *key))
    })
}

fn verify_by<S>(
    envelope: &Envelope,
    payload_type: &str,
    resolve: impl Fn(&str) -> Option<(PublicKey, S)>,
) -> Result<Verified<S>, VerifyError> {
    if envelope.payload_type != payload_type {
        return Err(VerifyError::WrongPayloadType {
            expected: payload_type.to_owned(),
            found: envelope.payload_type.clone(),
        });
    }
    let count = envelope.signatures.len();
    if count == 0 || count > MAX_SIGNATURES {
        return Err(VerifyError::SignatureCount {
            count,
            max: MAX_SIGNATURES,
        });
    }
    let Some((index, key, signer)) = envelope
        .signatures
        .iter()
        .enumerate()
        .find_map(|(i, s)| resolve(&s.keyid).map(|(key, signer)| (i, key, signer)))
    else {
        let key_ids: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|s| s.keyid.as_str())
            .collect();
        return Err(VerifyError::UnknownKey {
            key_ids: key_ids.join(", "),
        });
    };
    let payload = envelope.payload_bytes()?;
    let signature = envelope.signature_bytes(index)?;
    if !key.verify(&pae(payload_type, &payload), &signature) {
        return Err(VerifyError::BadSignature {
            key_id: envelope.signatures[index].keyid.clone(),
        });
    }
    Ok(Verified { payload, signer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerSource, Protocol};

    const TYPE: &str = "application/test";

    fn store_with(name: &str, key: &NodeKey) -> TrustStore {
        let mut store = TrustStore::default();
        store
            .insert(Peer::new(name, key.public(), PeerSource::Given))
            .unwrap();
        store
    }

    #[test]
    fn a_signed_envelope_verifies_and_names_its_signer() {
        let key = NodeKey::generate();
        let store = store_with("Sprout", &key);
        let env = sign_envelope(&key, TYPE, b"{\"x\":1}");
        let verified = verify_envelope(&env, TYPE, &store).unwrap();
        assert_eq!(verified.payload, b"{\"x\":1}");
        assert_eq!(verified.signer.name, "Sprout");
        assert_eq!(verified.signer.protocol, Protocol::V1);
        let verified = verify_envelope_with(&env, TYPE, &key.public()).unwrap();
        assert_eq!(verified.signer, key.public());
    }

    #[test]
    fn each_failure_has_its_own_variant() {
        let key = NodeKey::generate();
        let store = store_with("Sprout", &key);
        let env = sign_envelope(&key, TYPE, b"payload");

        assert!(matches!(
            verify_envelope(&env, "other", &store),
            Err(VerifyError::WrongPayloadType { .. })
        ));

        let stranger = NodeKey::generate();
        let foreign = sign_envelope(&stranger, TYPE, b"payload");
        assert!(matches!(
            verify_envelope(&foreign, TYPE, &store),
            Err(VerifyError::UnknownKey { .. })
        ));
        assert!(matches!(
            verify_envelope_with(&foreign, TYPE, &key.public()),
            Err(VerifyError::UnknownKey { .. })
        ));

        let mut tampered = env.clone();
        tampered.payload = sage_types::Envelope::new(TYPE, b"pAyload").payload;
        assert!(matches!(
            verify_envelope(&tampered, TYPE, &store),
            Err(VerifyError::BadSignature { .. })
        ));

        // A signature made over the same payload under another type.
        let mut retyped = sign_envelope(&key, "other", b"payload");
        retyped.payload_type = TYPE.into();
        assert!(matches!(
            verify_envelope(&retyped, TYPE, &store),
            Err(VerifyError::BadSignature { .. })
        ));

        let mut unsigned = env.clone();
        unsigned.signatures.clear();
        assert_eq!(
            verify_envelope(&unsigned, TYPE, &store).unwrap_err(),
            VerifyError::SignatureCount {
                count: 0,
                max: MAX_SIGNATURES
            }
        );

        let mut flood = env.clone();
        flood.signatures = vec![env.signatures[0].clone(); MAX_SIGNATURES + 1];
        assert!(matches!(
            verify_envelope(&flood, TYPE, &store),
            Err(VerifyError::SignatureCount { .. })
        ));

        let mut garbled = env.clone();
        garbled.signatures[0].sig = "***".into();
        assert!(matches!(
            verify_envelope(&garbled, TYPE, &store),
            Err(VerifyError::Encoding(_))
        ));
    }

    #[test]
    fn a_known_signature_after_an_unknown_one_is_used() {
        let key = NodeKey::generate();
        let store = store_with("Sprout", &key);
        let stranger = NodeKey::generate();
        let mut env = sign_envelope(&stranger, TYPE, b"p");
        let own = sign_envelope(&key, TYPE, b"p");
        env.signatures.push(own.signatures[0].clone());
        assert_eq!(
            verify_envelope(&env, TYPE, &store).unwrap().signer.name,
            "Sprout"
        );
    }
}
