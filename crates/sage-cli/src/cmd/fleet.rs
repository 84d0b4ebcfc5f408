//! What the commands that route share (`delegate` without `--target`,
//! `route explain`, `peer list`): how each peer is reached, the survey of
//! the trusted peers, and the router as earlier commands left it.

use std::time::Duration;

use sage_crypto::{Peer, TrustStore};
use sage_route::{Ejection, Policy, Router};
use sage_service::delegator::client::{Client, CONNECT_TIMEOUT};
use sage_service::delegator::route::{self, Anchor, Constraints, Survey};
use sage_service::keydir::Identity;
use sage_service::ClientError;
use sage_store::Store;

use super::AnswerLimit;
use crate::failure::Failure;

/// How long a connection attempt may take within a command's `timeout`:
/// it ends before the request's timeout, so that a host that is down or a
/// port a firewall drops is reported as such.
pub fn connect_within(timeout: Duration) -> Duration {
    CONNECT_TIMEOUT.min(timeout.mul_f64(0.9))
}

/// The client for each peer of a routed command: the peer's recorded TLS
/// settings, connection attempts cut at `connect_within`, answers bounded.
pub fn client_for(
    connect_within: Duration,
    answer_limit: AnswerLimit,
) -> impl Fn(&Peer) -> Result<Client, ClientError> + Copy {
    move |peer: &Peer| {
        Client::with_tls_connect_timeout(&peer.tls, connect_within).map(|c| answer_limit.apply(c))
    }
}

/// Refuses `--tls-ca`/`--tls-fingerprint` on a routed command: they name
/// one node's certificate, and each peer's comes from its record.
pub fn refuse_tls_flags(tls: &super::tls::TrustArgs) -> Result<(), Failure> {
    if tls.trust()?.is_some() {
        return Err(Failure::Usage(
            "--tls-ca and --tls-fingerprint are for one node: give --target too, or record each peer's TLS settings with `sage peer add`".into(),
        ));
    }
    Ok(())
}

/// What `--prefer`, `--exclude`, `--max-cost` and the local node's
/// address (none with `--no-local`) ask of the pick.
pub fn constraints(
    prefer: &[String],
    exclude: &[String],
    max_cost: Option<f64>,
    local_node: Option<&str>,
) -> Constraints {
    Constraints {
        prefer: prefer.to_vec(),
        exclude: exclude.to_vec(),
        max_cost,
        local_node: local_node.map(str::to_owned),
        model: None,
    }
}

/// `--local-node` and `--no-local`: where this machine's own node is
/// reached, to be a candidate beside the peers.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalNode {
    /// Where this machine's node (the one with --local's key) listens: it
    /// is a candidate too when its verified capabilities serve the task
    /// type.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:50051", value_parser = super::node_address)]
    local_node: String,
    /// Never run the task on this machine's own node.
    #[arg(long)]
    no_local: bool,
}

impl LocalNode {
    /// The local node's address, unless `--no-local`.
    pub fn address(&self) -> Option<&str> {
        (!self.no_local).then_some(self.local_node.as_str())
    }
}

/// The router as earlier commands left it: fed the last hour of the
/// ledger, with the reading of both clocks that placed its entries.
pub fn rebuilt_router(
    runtime: &tokio::runtime::Runtime,
    store: &Store,
) -> Result<(Router<String>, Anchor), Failure> {
    let router = Router::new(Policy::default());
    let anchor = runtime.block_on(route::rebuild_from(&router, store))?;
    Ok((router, anchor))
}

/// The trusted peers (but `local`) sorted for a task of `task_type`, their
/// capabilities asked within `timeout` (at most [`route::CAPABILITIES_WITHIN`]).
#[allow(clippy::too_many_arguments)]
pub fn survey(
    runtime: &tokio::runtime::Runtime,
    trust: &TrustStore,
    local: &Identity,
    task_type: &str,
    constraints: &Constraints,
    store: &Store,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
    timeout: Duration,
) -> Survey {
    runtime.block_on(route::survey(
        trust,
        local,
        task_type,
        constraints,
        store,
        client_for,
        route::CAPABILITIES_WITHIN.min(timeout),
    ))
}

/// Why a peer is cooling, as a user reads it.
pub fn ejection_text(reason: &Ejection) -> String {
    match reason {
        Ejection::ConsecutiveFailures(n) => format!("{n} failures in a row"),
        Ejection::FailureRate { failed, total } => {
            format!("{failed} of its last {total} requests failed")
        }
        Ejection::RetryAfter(pause) => {
            format!("it asked for a pause of {} s", pause.as_secs_f64())
        }
        Ejection::Trust => "a trust failure (a key or proof that does not match)".into(),
        Ejection::FailedWhileCooling => "it failed again while cooling".into(),
    }
}
