//! The delegator: what a machine that sends work runs. It never imports the
//! serving node ([`crate::node`]); both meet only on the wire.
//!
//! - [`client`]: the HTTP client for a peer's node.
//! - [`delegation`]: builds and signs tasks and checks the proofs that come
//!   back.
//! - [`ledger`]: the receipts of past delegations and their offline check.
//! - [`recorded`]: one attempt of a delegation, in the ledger from start
//!   to end.
//! - [`route`]: delegating to the fleet: the candidates for a task type,
//!   the pick, failover and retries.
//! - [`fleet`]: a running node's warm router and the background refresh
//!   of its peers' capabilities.
//! - [`upload`]: blobs sent before the task that names them.
//! - [`bench`](mod@bench): the load generator of `sage bench`.
//! - [`stream`]: a streaming delegation's sink for the output's pieces
//!   and the check of what was streamed against the signed proof.

pub mod bench;
pub mod client;
pub mod delegation;
pub mod fleet;
pub mod ledger;
pub mod recorded;
pub mod route;
pub mod stream;
pub mod upload;
