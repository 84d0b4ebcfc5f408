//! The `sage` service layer: the serving node and the delegator, over HTTP.
//! The node's durable state is `sage-store`, what runs a task `sage-exec`.
//!
//! Two programs that never import each other:
//! - [`node`]: the serving node: the axum router (`/health`, `/metrics`,
//!   `/v1/capabilities`, `/v1/tasks`, `/execute_task`), its own accept loop
//!   with TLS, limits and graceful shutdown, systemd integration and the
//!   hardware probe for the capabilities document.
//! - [`delegator`]: the sending side: the HTTP client, signing tasks and
//!   checking the proofs that come back, the receipt ledger and the load
//!   generator of `sage bench`.
//!
//! Where the two meet: [`local`], the local API of `sage serve` for
//! applications on the same machine (a Unix socket), which signs with the
//! node's key and delegates with the delegator's routing.
//!
//! And what both need, beside them:
//! - [`keydir`]: the key directory (key files, `peers.toml`) and the trust
//!   store built from it; [`peers_file`] is the `peers.toml` format.
//! - [`config`]: the limits a node enforces.
//! - [`tls`]: TLS for `sage serve` and for `https://` peers: loading the
//!   certificate and key, pinning by fingerprint, self-signed certificates.
//! - [`trace`]: the W3C `traceparent` header; [`telemetry`]: spans sent to
//!   an OTLP collector, when one is configured.

pub mod config;
pub mod delegator;
mod error;
mod files;
pub mod keydir;
pub mod local;
pub mod node;
pub mod peers_file;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use error::{ClientError, DelegateError, KeyDirError, ProofError, TlsError, TlsProblem};
