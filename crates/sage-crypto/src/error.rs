//! Typed errors, one enum per operation.

/// Why the bytes of a key file are not a usable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Neither 32 (seed) nor 64 (seed and public key) bytes.
    #[error("a key file holds 32 bytes (seed) or 64 bytes (seed and public key), not {size}")]
    BadSize {
        /// Size found.
        size: usize,
    },
    /// The public half of a 64-byte file is not the key derived from its seed.
    #[error("the public key in the file's last 32 bytes does not belong to its seed")]
    PublicHalfMismatch,
}

/// Why a public key given as text is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not 64 hexadecimal characters.
    #[error("a public key is 64 hexadecimal characters, got {len} characters")]
    BadHex {
        /// Length of the text given.
        len: usize,
    },
    /// 32 bytes that are not an Ed25519 point (or a weak one).
    #[error("not a valid Ed25519 public key")]
    NotAPoint,
}

/// Why an envelope was not accepted. Checked in this order, before the
/// payload is parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// `payloadType` is not the expected one.
    #[error("payload type {found:?} where {expected:?} was expected")]
    WrongPayloadType {
        /// Expected type.
        expected: String,
        /// Type in the envelope.
        found: String,
    },
    /// The envelope carries no signature, or more than the limit.
    #[error("envelope carries {count} signatures; exactly one to {max} are accepted")]
    SignatureCount {
        /// Signatures found.
        count: usize,
        /// Most accepted.
        max: usize,
    },
    /// No signature is by a known key.
    #[error("no signature is by a known key (key ids: {key_ids})")]
    UnknownKey {
        /// The key ids in the envelope, comma-separated.
        key_ids: String,
    },
    /// The payload or a signature is not base64.
    #[error("envelope is not well-formed: {0}")]
    Encoding(#[from] sage_types::EnvelopeError),
    /// The signature by a known key does not verify over the payload.
    #[error("signature by {key_id} does not verify")]
    BadSignature {
        /// The key that supposedly signed.
        key_id: String,
    },
}

/// Why a peer cannot join the trust store.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustError {
    /// Two sources name one platform with different keys.
    #[error("peer {name} has two different keys: {first_key} from {first_source} and {second_key} from {second_source}; remove the stale one")]
    ConflictingKeys {
        /// The platform.
        name: String,
        /// Key id from the first source.
        first_key: String,
        /// Where the first came from.
        first_source: String,
        /// Key id from the second source.
        second_key: String,
        /// Where the second came from.
        second_source: String,
    },
    /// One key claimed by two platforms, or one LCT id by two keys.
    #[error("{what} {value} is claimed by both {first} and {second}")]
    Ambiguous {
        /// `key` or `LCT id`.
        what: &'static str,
        /// The key id or LCT id.
        value: String,
        /// First peer's name.
        first: String,
        /// Second peer's name.
        second: String,
    },
}

/// A certificate fingerprint that is not `sha256:` and 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid certificate fingerprint {given:?}: expected sha256: and 64 hex digits")]
pub struct FingerprintError {
    /// The text given.
    pub given: String,
}
