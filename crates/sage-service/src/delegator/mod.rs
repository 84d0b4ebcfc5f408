//! The delegator: what a machine that sends work runs. It never imports the
//! serving node ([`crate::node`]); both meet only on the wire.
//!
//! - [`client`]: the HTTP client for a peer's node.
//! - [`delegation`]: builds and signs tasks and checks the proofs that come
//!   back.
//! - [`ledger`]: the receipts of past delegations and their offline check.
//! - [`bench`](mod@bench): the load generator of `sage bench`.

pub mod bench;
pub mod client;
pub mod delegation;
pub mod ledger;
