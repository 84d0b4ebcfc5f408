//! Keys, signatures and trust for `sage`.
//!
//! - [`keys`]: the node's private key ([`NodeKey`], zeroized on drop, never
//!   printed), public keys and their [`KeyId`]s, and the key file format (32
//!   bytes of seed as the Python original writes, or 64 bytes of seed and
//!   public key).
//! - [`envelope`]: signing a payload into a DSSE [`sage_types::Envelope`] and
//!   verifying one *before* its payload is parsed.
//! - [`trust`]: the [`TrustStore`] of known peers.
//! - [`digest`]: the `sha256:` digests that proofs carry.
//! - [`legacy`]: the Python original's hex signatures over canonical JSON.
//! - [`tls`]: how a peer's TLS certificate is trusted ([`TlsTrust`]: web PKI,
//!   a CA file, or a pinned [`CertFingerprint`]).
//!
//! Like `sage-types`, this crate does no I/O: reading and writing key files
//! and `peers.toml` is the service's job.
// Part of the wire format's public API: every public item says what it is.
#![deny(missing_docs)]

pub mod digest;
pub mod envelope;
mod error;
pub mod keys;
pub mod legacy;
pub mod tls;
pub mod trust;

pub use envelope::{sign_envelope, verify_envelope, verify_envelope_with, Verified};
pub use error::{FingerprintError, KeyFileError, KeyParseError, TrustError, VerifyError};
pub use keys::{KeyId, NodeKey, PublicKey};
pub use tls::{CertFingerprint, TlsTrust};
pub use trust::{Peer, PeerSource, Protocol, TrustStore};
