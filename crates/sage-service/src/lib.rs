//! The `sage` service layer: the serving node and the delegator, over HTTP.
//! The node's durable state is `sage-store`, what runs a task `sage-exec`.
//!
//! - [`server`]: the axum router (`/health`, `/metrics`, `/v1/capabilities`,
//!   `/v1/tasks`, `/execute_task`) and its own accept loop with TLS, limits
//!   and graceful shutdown.
//! - [`client`]: the HTTP client a delegator uses; [`delegation`] builds and
//!   signs tasks and checks the proofs that come back.
//! - [`keydir`]: the key directory (key files, `peers.toml`) and the trust
//!   store built from it; [`peers_file`] is the `peers.toml` format.
//! - [`hardware`]: what the machine has, for the capabilities document.
//! - [`config`]: the limits a node enforces.
//! - [`bench`](mod@bench): the load generator of `sage bench`.
//! - [`tls`]: TLS for `sage serve` and for `https://` peers: loading the
//!   certificate and key, pinning by fingerprint, self-signed certificates.
//! - [`systemd`]: running as a systemd service: readiness, watchdog and
//!   reload notifications (`sd_notify`), and the key as a credential.
#![warn(missing_docs)]

pub mod bench;
pub mod client;
pub mod config;
pub mod delegation;
mod error;
mod files;
pub mod hardware;
pub mod keydir;
pub mod ledger;
pub mod peers_file;
pub mod server;
pub mod systemd;
pub mod tls;

pub use error::{ClientError, DelegateError, KeyDirError, ProofError, TlsError};
