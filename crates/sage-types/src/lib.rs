//! Wire and domain types of the `sage` federation protocol.
//!
//! This crate holds what travels between nodes and the exact bytes that get
//! signed: the native v1 [`Task`] and [`Proof`] payloads, the DSSE
//! [`Envelope`] that carries them with its pre-authentication encoding
//! ([`envelope::pae`]), the `application/problem+json` refusal body
//! ([`Problem`]), the health answer ([`Health`]), the signed self-description
//! of a node ([`capabilities`]), and the Python-compatible
//! canonical JSON writer and the message shapes of the Python original's
//! protocol ([`canonical`], [`legacy`]); and two things every layer above
//! shares: the protocol's units of wall-clock time ([`clock`]) and how
//! peer-supplied text is shown ([`untrusted`]).
//!
//! It does no I/O and knows nothing of keys: signing lives in `sage-crypto`.
// The wire format's public API: every public item says what it is.
#![deny(missing_docs)]

pub mod blob;
pub mod canonical;
pub mod capabilities;
pub mod clock;
pub mod envelope;
mod error;
pub mod health;
pub mod identity;
pub mod legacy;
pub mod problem;
pub mod proof;
pub mod pyjson;
pub mod stream;
pub mod task;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
pub mod untrusted;

pub use blob::BlobRef;
pub use envelope::{Envelope, EnvelopeSignature};
pub use error::EnvelopeError;
pub use health::Health;
pub use identity::default_lct_id;
pub use problem::{Problem, ProblemCode};
pub use proof::{Proof, ProofStatus};
pub use task::{QualityRequirements, Task};
