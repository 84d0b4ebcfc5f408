//! Ed25519 keys, key ids and the key file format.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::{digest, KeyFileError, KeyParseError};

/// Size of a key file written by the Python original: the seed alone.
pub const SEED_FILE_LEN: usize = 32;
/// Size of a key file as the Python original's deployment guide (and
/// `sage keygen`) writes it: seed followed by public key, libsodium's layout.
pub const FULL_FILE_LEN: usize = 64;

/// A node's private key. Its secret is zeroized on drop (ed25519-dalek's
/// `zeroize` feature) and never shown by `Debug`.
pub struct NodeKey {
    signing: SigningKey,
}

impl NodeKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        NodeKey {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        NodeKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Reads the bytes of a key file: 32 bytes of seed, or 64 bytes of seed
    /// and public key whose public half must match the seed.
    ///
    /// # Errors
    /// [`KeyFileError::BadSize`] or [`KeyFileError::PublicHalfMismatch`].
    pub fn from_key_file(bytes: &[u8]) -> Result<Self, KeyFileError> {
        if bytes.len() != SEED_FILE_LEN && bytes.len() != FULL_FILE_LEN {
            return Err(KeyFileError::BadSize { size: bytes.len() });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let key = NodeKey::from_seed(&seed);
        if bytes.len() == FULL_FILE_LEN && key.signing.verifying_key().as_bytes()[..] != bytes[32..]
        {
            return Err(KeyFileError::PublicHalfMismatch);
        }
        Ok(key)
    }

    /// The 64 bytes `sage keygen` writes: seed, then public key.
    pub fn to_key_file(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.signing.to_keypair_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public().to_hex())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 64 hex characters (either case), refusing weak keys.
    ///
    /// # Errors
    /// [`KeyParseError`] saying what is wrong with the text.
    pub fn from_hex(text: &str) -> Result<Self, KeyParseError> {
        let text = text.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyParseError::BadHex {
            len: text.chars().count(),
        })?;
        Self::from_bytes(&bytes)
    }

    /// The key of 32 bytes, refusing weak keys.
    ///
    /// # Errors
    /// [`KeyParseError::NotAPoint`].
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyParseError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyParseError::NotAPoint)?;
        if key.is_weak() {
            return Err(KeyParseError::NotAPoint);
        }
        Ok(PublicKey(key))
    }

    /// 64 lowercase hex characters, as keys travel on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// The id that names this key in envelopes.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self)
    }

    /// Whether `signature` is this key's signature of `message`, with
    /// ed25519-dalek's strict checks (no malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Names one key (not one platform, so keys can rotate): `ed25519:` and the
/// first 16 bytes of the SHA-256 of the public key, in hex. It is also the
/// key's fingerprint for people to compare.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &PublicKey) -> Self {
        let hash = digest::sha256(key.as_bytes());
        KeyId(format!("ed25519:{}", hex::encode(&hash[..16])))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Thor's key from the legacy vectors.
    const THOR_SEED: &str = "c6c702b4fd10ebd761c56d27763601fc170a05787cad539fb1b437d0eb2a68ee";
    const THOR_PUB: &str = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c";

    fn thor_seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(THOR_SEED, &mut seed).unwrap();
        seed
    }

    #[test]
    fn seed_file_of_the_python_original_loads() {
        let key = NodeKey::from_key_file(&thor_seed()).unwrap();
        assert_eq!(key.public().to_hex(), THOR_PUB);
    }

    #[test]
    fn full_file_round_trips_and_checks_its_public_half() {
        let key = NodeKey::from_seed(&thor_seed());
        let file = key.to_key_file();
        assert_eq!(&file[..32], &thor_seed());
        assert_eq!(hex::encode(&file[32..]), THOR_PUB);
        assert_eq!(
            NodeKey::from_key_file(&file[..]).unwrap().public(),
            key.public()
        );

        let mut bad = *file;
        bad[63] ^= 1;
        assert_eq!(
            NodeKey::from_key_file(&bad).unwrap_err(),
            KeyFileError::PublicHalfMismatch
        );
    }

    #[test]
    fn other_sizes_are_refused() {
        for size in [0, 31, 33, 63, 65, 128] {
            assert_eq!(
                NodeKey::from_key_file(&vec![7u8; size]).unwrap_err(),
                KeyFileError::BadSize { size }
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = NodeKey::from_seed(&thor_seed());
        let shown = format!("{key:?}");
        assert!(!shown.contains(THOR_SEED), "{shown}");
        assert!(shown.contains(THOR_PUB));
    }

    #[test]
    fn public_key_hex_is_checked() {
        assert_eq!(PublicKey::from_hex(THOR_PUB).unwrap().to_hex(), THOR_PUB);
        assert_eq!(
            PublicKey::from_hex(&THOR_PUB.to_uppercase())
                .unwrap()
                .to_hex(),
            THOR_PUB
        );
        assert_eq!(
            PublicKey::from_hex("abcd").unwrap_err(),
            KeyParseError::BadHex { len: 4 }
        );
        assert_eq!(
            PublicKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            KeyParseError::BadHex { len: 64 }
        );
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(&identity).unwrap_err(),
            KeyParseError::NotAPoint
        );
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = NodeKey::from_seed(&thor_seed());
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellp", &sig));
        assert!(!NodeKey::generate().public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hello", &sig[..63]));
    }

    #[test]
    fn key_id_is_stable() {
        let id = PublicKey::from_hex(THOR_PUB).unwrap().key_id();
        assert!(id.as_str().starts_with("ed25519:"));
        assert_eq!(id.as_str().len(), "ed25519:".len() + 32);
        assert_eq!(id, PublicKey::from_hex(THOR_PUB).unwrap().key_id());
    }
}
