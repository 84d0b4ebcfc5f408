//! Delegating to the fleet instead of to a named peer: which trusted peers
//! may run a task ([`survey`]: their signed capabilities serve its type,
//! within its cost), which one runs it ([`sage_route::Router`]: power of
//! two choices over measured latency, in-flight counts and reputation,
//! with cooldowns), and what happens when an attempt fails ([`delegate`]):
//!
//! - nothing was sent (the health check failed) or the node refused the
//!   task before recording it: another candidate, within the retry budget;
//! - the task may have been accepted (the answer timed out, the connection
//!   broke, a 500): the same task again on the same peer first, whose
//!   stored proof answers a retry without a second run; another peer runs
//!   it only if it is idempotent (`--idempotent`, or the capabilities say
//!   so of its type);
//! - a proof that does not verify: the peer is cooled down at once, and
//!   the task runs elsewhere only if it is idempotent.
//!
//! Every attempt is a ledger entry under the delegation's one task id.

use std::collections::BTreeSet;
use std::time::Duration;

use sage_crypto::{verify_envelope_with, Peer, PeerSource, Protocol, TrustStore};
use sage_route::{Outcome, RetryBudget, Router};
use sage_store::{LedgerEntry, Store, StoreError};
use sage_types::capabilities::{Capabilities, TaskTypeInfo, CAPABILITIES_PAYLOAD_TYPE};
use sage_types::clock::now_ms;
use sage_types::Envelope;
use tracing::Instrument as _;

use super::client::Client;
use super::delegation::{Delegation, TaskSpec};
use super::recorded::{Attempt, AttemptError};
use super::stream::ChunkSink;
use crate::keydir::Identity;
use crate::{ClientError, DelegateError};

/// What the caller asks of the pick.
#[derive(Debug, Clone, Default)]
pub struct Constraints {
    /// Peers to pick among first (names or LCT ids); the others only when
    /// none of these can take the task.
    pub prefer: Vec<String>,
    /// Peers never to pick (names or LCT ids).
    pub exclude: Vec<String>,
    /// The most the task may cost, in ATP: a peer whose price is above it
    /// is left out.
    pub max_cost: Option<f64>,
    /// Where this machine's own node (the one with the delegator's key)
    /// listens, to be a candidate like the peers: a task it serves may
    /// run locally. `None`: never locally.
    pub local_node: Option<String>,
    /// Only peers whose capabilities say the task type answers with this
    /// model (an OpenAI chat backend's); `None`: any.
    pub model: Option<String>,
}

/// A peer that may run the task.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The peer, as trusted.
    pub peer: Peer,
    /// Where it is reached.
    pub addr: String,
    /// What its verified capabilities say of the task type.
    pub served: TaskTypeInfo,
    /// Whether it is among the preferred.
    pub preferred: bool,
}

/// Why a trusted peer is not a candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// The caller excluded it.
    Excluded,
    /// Its record has no address.
    NoAddress,
    /// It speaks the Python original's protocol, which has no
    /// capabilities to route by.
    Legacy,
    /// Its capabilities could not be had or do not verify.
    Capabilities(String),
    /// Its capabilities do not list the task type.
    NotServed,
    /// Its task type answers with another model than the one asked for,
    /// or none.
    OtherModel {
        /// The model it answers with, if any.
        served: Option<String>,
    },
    /// Its price is above the task's `max_cost`.
    OverCost {
        /// The price per run.
        price: f64,
        /// The task's ceiling.
        max_cost: f64,
    },
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Left::Excluded => f.write_str("excluded"),
            Left::NoAddress => f.write_str("no address on record"),
            Left::Legacy => f.write_str("a legacy peer: no capabilities to route by"),
            Left::Capabilities(why) => write!(f, "capabilities: {why}"),
            Left::NotServed => f.write_str("does not serve the task type"),
            Left::OtherModel { served: None } => {
                f.write_str("its executor of the task type names no model")
            }
            Left::OtherModel {
                served: Some(model),
            } => write!(
                f,
                "its executor of the task type answers with another model ({})",
                sage_types::untrusted::Untrusted(model)
            ),
            Left::OverCost { price, max_cost } => {
                write!(f, "price {price} ATP is above max_cost {max_cost}")
            }
        }
    }
}

/// The trusted peers, sorted into candidates and the rest with a reason.
#[derive(Debug, Clone, Default)]
pub struct Survey {
    /// The peers that may run the task.
    pub candidates: Vec<Candidate>,
    /// The others, and why.
    pub left: Vec<(Peer, Left)>,
}

/// Whether `list` names `peer` (by name, any case, or LCT id).
fn named(list: &[String], peer: &Peer) -> bool {
    list.iter()
        .any(|n| n.eq_ignore_ascii_case(&peer.name) || *n == peer.lct_id)
}

/// Sorts `trust`'s peers (but `local`) for a task of `task_type`: each
/// one's capabilities are taken from `store`'s cache while they hold, else
/// fetched (all peers at once, each within `within`), verified with that
/// peer's own key and kept until they expire. `client_for` makes the
/// client for a peer (its TLS settings).
pub async fn survey(
    trust: &TrustStore,
    local: &Identity,
    task_type: &str,
    constraints: &Constraints,
    store: &Store,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
    within: Duration,
) -> Survey {
    let asked = verified_capabilities(trust, local, constraints, store, client_for, within).await;
    let mut survey = Survey {
        candidates: Vec::new(),
        left: asked.left,
    };
    for (peer, caps) in asked.verified {
        let Some(served) = caps
            .task_types
            .into_iter()
            .find(|t| t.task_type == task_type)
        else {
            survey.left.push((peer, Left::NotServed));
            continue;
        };
        if let Some(model) = &constraints.model {
            if served.model.as_ref() != Some(model) {
                let served = served.model;
                survey.left.push((peer, Left::OtherModel { served }));
                continue;
            }
        }
        let price = served.cost.map_or(0.0, |c| c.base);
        if let Some(max_cost) = constraints.max_cost {
            if price > max_cost {
                survey.left.push((peer, Left::OverCost { price, max_cost }));
                continue;
            }
        }
        let addr = peer.address.clone().unwrap_or_default();
        survey.candidates.push(Candidate {
            preferred: named(&constraints.prefer, &peer),
            peer,
            addr,
            served,
        });
    }
    // The same order whatever the answers' order: the pick is random
    // enough, the report should not be.
    survey
        .candidates
        .sort_by(|a, b| a.peer.name.cmp(&b.peer.name));
    survey.left.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    survey
}

/// The trusted peers' verified capabilities, whatever they serve.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// Each peer that may be routed to, with its verified capabilities, by
    /// name.
    pub verified: Vec<(Peer, Capabilities)>,
    /// The others, and why (excluded, no address, legacy, capabilities
    /// not to be had).
    pub left: Vec<(Peer, Left)>,
}

/// The verified capabilities of `trust`'s peers (but `local`; this node
/// itself when `constraints.local_node` says where), as [`survey`] gets
/// them: cached while they hold, else asked of all at once, each within
/// `within`. For a caller that looks at every task type (the local API's
/// models); [`survey`] sorts them for one.
pub async fn verified_capabilities(
    trust: &TrustStore,
    local: &Identity,
    constraints: &Constraints,
    store: &Store,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
    within: Duration,
) -> Asked {
    let mut survey = Asked::default();
    let mut asks = tokio::task::JoinSet::new();
    // This machine's node, known by the delegator's own key.
    let this_node = constraints.local_node.as_ref().map(|addr| {
        let mut peer = Peer::new(&local.name, local.key.public(), PeerSource::Given);
        peer.lct_id = local.lct_id.clone();
        peer.address = Some(addr.clone());
        peer
    });
    let peers = trust
        .iter()
        .filter(|peer| peer.lct_id != local.lct_id)
        .chain(this_node.as_ref());
    for peer in peers {
        let left = if named(&constraints.exclude, peer) {
            Some(Left::Excluded)
        } else if peer.protocol == Protocol::Legacy {
            Some(Left::Legacy)
        } else if peer.address.is_none() {
            Some(Left::NoAddress)
        } else {
            None
        };
        if let Some(left) = left {
            survey.left.push((peer.clone(), left));
            continue;
        }
        let client = match client_for(peer) {
            Ok(client) => client,
            Err(e) => {
                survey
                    .left
                    .push((peer.clone(), Left::Capabilities(e.to_string())));
                continue;
            }
        };
        let (peer, store) = (peer.clone(), store.clone());
        // In the caller's span: a spawned task starts outside it, and the
        // requests' spans belong to the delegation's trace.
        asks.spawn(
            async move {
                let caps = capabilities_of(&client, &store, &peer, within, true).await;
                (peer, caps)
            }
            .instrument(tracing::Span::current()),
        );
    }
    while let Some(asked) = asks.join_next().await {
        let Ok((peer, caps)) = asked else { continue };
        match caps {
            Ok(caps) => survey.verified.push((peer, caps)),
            Err(why) => survey
                .left
                .push((peer, Left::Capabilities(why.to_string()))),
        }
    }
    survey.verified.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    survey
}

/// Why a peer's capabilities are not to be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilitiesError {
    /// The node did not answer with them.
    Unreachable(String),
    /// They do not verify with the peer's known key, or name another
    /// platform: the node is not the peer on record.
    Untrusted(String),
}

impl std::fmt::Display for CapabilitiesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapabilitiesError::Unreachable(why) | CapabilitiesError::Untrusted(why) => {
                f.write_str(why)
            }
        }
    }
}

/// `peer`'s verified capabilities: kept ones while they hold (if
/// `cached`), else asked of the node, and kept until they expire.
///
/// # Errors
/// [`CapabilitiesError`]: no answer, or one that does not verify.
pub async fn capabilities_of(
    client: &Client,
    store: &Store,
    peer: &Peer,
    within: Duration,
    cached: bool,
) -> Result<Capabilities, CapabilitiesError> {
    // A cache entry is only as good as its signature: checked again.
    if let (true, Ok(Some(bytes))) = (
        cached,
        store.capabilities(peer.lct_id.clone(), now_ms()).await,
    ) {
        if let Some(caps) = serde_json::from_slice::<Envelope>(&bytes)
            .ok()
            .and_then(|envelope| verified(&envelope, peer).ok())
        {
            return Ok(caps);
        }
    }
    let addr = peer.address.as_deref().unwrap_or_default();
    let envelope = client
        .capabilities(addr, within)
        .await
        .map_err(|e| CapabilitiesError::Unreachable(e.to_string()))?;
    let caps = verified(&envelope, peer).map_err(CapabilitiesError::Untrusted)?;
    if caps.expires_at > now_ms() {
        let kept = store
            .put_capabilities(peer.lct_id.clone(), envelope.to_bytes(), caps.expires_at)
            .await;
        if let Err(e) = kept {
            tracing::debug!(error = %e, "capabilities not cached");
        }
    }
    Ok(caps)
}

/// The capabilities in `envelope`, if `peer`'s own key signed them and
/// they name `peer`.
fn verified(envelope: &Envelope, peer: &Peer) -> Result<Capabilities, String> {
    let checked = verify_envelope_with(envelope, CAPABILITIES_PAYLOAD_TYPE, &peer.public_key)
        .map_err(|e| format!("do not verify with {}'s key: {e}", peer.name))?;
    let caps: Capabilities =
        serde_json::from_slice(&checked.payload).map_err(|e| format!("not capabilities: {e}"))?;
    if caps.lct_id != peer.lct_id {
        return Err(format!(
            "name another platform ({}) than {} ({})",
            sage_types::untrusted::Untrusted(&caps.lct_id),
            peer.name,
            peer.lct_id
        ));
    }
    Ok(caps)
}

/// What one attempt of a routed delegation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The peer's name.
    pub peer: String,
    /// How it ended: `succeeded`, `failed`, or the failure's message.
    pub outcome: String,
}

/// A routed delegation whose proof was verified.
#[derive(Debug)]
pub struct Routed {
    /// The delegation.
    pub delegation: Delegation,
    /// The peer that ran it.
    pub target: Peer,
    /// Where it was reached.
    pub addr: String,
    /// Every attempt, the last one included.
    pub tried: Vec<Tried>,
}

/// Why a routed delegation has no verified proof.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No trusted peer may run the task.
    #[error("no peer serves {task_type}: {}", reasons(.left))]
    NoCandidate {
        /// The task type.
        task_type: String,
        /// Each trusted peer and why it is not a candidate.
        left: Vec<(String, String)>,
    },
    /// Every attempt failed, and no other candidate may be tried (none
    /// left, the retry budget or the deadline spent).
    #[error("{}; attempts: {}", .last, attempts(.tried))]
    Exhausted {
        /// Every attempt.
        tried: Vec<Tried>,
        /// The last attempt's error.
        #[source]
        last: AttemptError,
    },
    /// The task may have run on a peer and is not idempotent: it is not
    /// run on another.
    #[error("{last}; {peer} may have run the task, which is not idempotent, so it is not run on another peer; attempts: {}", attempts(.tried))]
    MayHaveRun {
        /// The peer.
        peer: String,
        /// Every attempt.
        tried: Vec<Tried>,
        /// The last attempt's error.
        #[source]
        last: AttemptError,
    },
}

impl RouteError {
    /// The stable code: `no_candidate`, `may_have_run`, or the last
    /// attempt's.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NoCandidate { .. } => "no_candidate",
            RouteError::MayHaveRun { .. } => "may_have_run",
            RouteError::Exhausted { last, .. } => last.code(),
        }
    }

    /// Every attempt made (none when there was no candidate).
    pub fn tried(&self) -> &[Tried] {
        match self {
            RouteError::NoCandidate { .. } => &[],
            RouteError::MayHaveRun { tried, .. } | RouteError::Exhausted { tried, .. } => tried,
        }
    }
}

fn reasons(left: &[(String, String)]) -> String {
    if left.is_empty() {
        return "there are no trusted peers".to_owned();
    }
    left.iter()
        .map(|(peer, why)| format!("{peer}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn attempts(tried: &[Tried]) -> String {
    tried
        .iter()
        .map(|t| format!("{} ({})", t.peer, t.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where an attempt's failure leaves the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It never ran: another peer may run it.
    NotRun,
    /// It may have run: the same peer again, another only if idempotent.
    MayHaveRun,
    /// The peer cannot be trusted with it: another only if idempotent.
    Untrusted,
    /// The attempt could not be recorded: stop.
    Stop,
}

/// The router's reading of an attempt's end, and what it leaves.
fn judge(result: &Result<Delegation, AttemptError>) -> (Outcome, Fate) {
    let error = match result {
        Ok(d) => {
            let outcome = match d.summary.status {
                sage_types::ProofStatus::Succeeded => Outcome::Verified {
                    measured: d.round_trip,
                    claimed: Some(Duration::from_secs_f64(
                        (d.summary.latency_ms / 1000.0).clamp(0.0, 1e6),
                    )),
                    terms_met: d.shortfall.is_none(),
                },
                _ => Outcome::Failed,
            };
            return (outcome, Fate::NotRun);
        }
        Err(AttemptError::NotRecorded(_) | AttemptError::NotKept(_)) => {
            return (Outcome::Transport, Fate::Stop)
        }
        Err(AttemptError::NotSent(e)) => {
            let outcome = match e {
                DelegateError::OtherKey { .. } | DelegateError::WrongNode { .. } => {
                    Outcome::TrustFailure
                }
                DelegateError::Client(ClientError::TimedOut { .. }) => Outcome::Timeout,
                _ => Outcome::Transport,
            };
            return (outcome, Fate::NotRun);
        }
        Err(AttemptError::Sent(e)) => e,
    };
    match error {
        DelegateError::Client(ClientError::Refused {
            problem,
            retry_after,
            ..
        }) if problem.status != 500 => (
            Outcome::Refused {
                status: problem.status,
                retry_after: *retry_after,
            },
            Fate::NotRun,
        ),
        DelegateError::Client(
            ClientError::Unreachable { .. } | ClientError::NoConnection { .. },
        ) => (Outcome::Transport, Fate::NotRun),
        DelegateError::Client(ClientError::TimedOut { .. }) => (Outcome::Timeout, Fate::MayHaveRun),
        DelegateError::Client(ClientError::Refused { .. }) => {
            (Outcome::ServerError, Fate::MayHaveRun)
        }
        DelegateError::Client(_) => (Outcome::Transport, Fate::MayHaveRun),
        DelegateError::Proof { .. }
        | DelegateError::WrongNode { .. }
        | DelegateError::StreamMismatch { .. } => (Outcome::InvalidProof, Fate::Untrusted),
        DelegateError::WrongAnswer { .. } => (Outcome::WrongCanary, Fate::Untrusted),
        _ => (Outcome::Transport, Fate::MayHaveRun),
    }
}

/// How a routed delegation runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// Who signs.
    pub local: &'a Identity,
    /// The task; its `task_id` is set here if it is not.
    pub spec: &'a TaskSpec,
    /// Whether the task may run on a second peer after an attempt that may
    /// have run it; `None`: as the capabilities say of its type.
    pub idempotent: Option<bool>,
    /// The whole delegation's time, every attempt included.
    pub timeout: Duration,
}

/// How one attempt on a picked candidate is made: the loop of [`run`]
/// (pick, attempt, judge, retry) is the policy; this is only the sending.
/// [`delegate`] records every attempt in the ledger; the load generator
/// sends without the ledger's per-attempt reads and writes.
pub trait Attempts {
    /// Sends `spec` (its `task_id` set) to `candidate`, within `timeout`.
    fn attempt<'a>(
        &'a self,
        candidate: &'a Candidate,
        spec: &'a TaskSpec,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Delegation, AttemptError>> + Send + 'a;

    /// Whether an attempt handed a piece of a streamed output on: then no
    /// other attempt is made, since what was shown cannot be taken back.
    fn passed_on(&self) -> bool {
        false
    }
}

/// The attempts of `sage delegate`: each one a [`recorded::Attempt`]
/// (health check, ledger row before sending, outcome recorded).
///
/// [`recorded::Attempt`]: super::recorded::Attempt
struct Recorded<'s, F> {
    store: &'s Store,
    local: &'s Identity,
    client_for: F,
    /// Where a streaming delegation's pieces go.
    sink: Option<&'s ChunkSink>,
}

impl<F> Attempts for Recorded<'_, F>
where
    F: Fn(&Peer) -> Result<Client, ClientError> + Sync,
{
    async fn attempt(
        &self,
        candidate: &Candidate,
        spec: &TaskSpec,
        timeout: Duration,
    ) -> Result<Delegation, AttemptError> {
        let client =
            (self.client_for)(&candidate.peer).map_err(|e| AttemptError::NotSent(e.into()))?;
        let attempt = Attempt {
            client: &client,
            store: self.store,
            local: self.local,
            target: &candidate.peer,
            addr: &candidate.addr,
            protocol: Protocol::V1,
            spec,
            timeout,
            expect: None,
        };
        match self.sink {
            None => attempt.run().await,
            Some(sink) => attempt.run_streaming(sink).await,
        }
    }

    fn passed_on(&self) -> bool {
        self.sink.is_some_and(ChunkSink::passed_on)
    }
}

/// Runs `plan` on the best of `survey`'s candidates, and on others as the
/// module says when an attempt fails; every attempt in `store`'s ledger.
///
/// # Errors
/// [`RouteError`]: no candidate, or no attempt verified.
pub async fn delegate(
    survey: &Survey,
    router: &Router<String>,
    budget: &RetryBudget,
    store: &Store,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError> + Sync,
    plan: Plan<'_>,
) -> Result<Routed, RouteError> {
    let attempts = Recorded {
        store,
        local: plan.local,
        client_for,
        sink: None,
    };
    run(survey, router, budget, &attempts, plan).await
}

/// [`delegate`] asking each attempt for a streaming answer, whose pieces
/// go to `sink` as they arrive (unverified: see [`super::stream`]). An
/// attempt that fails before handing a piece on is failed over as by
/// `delegate`; after one, the delegation ends with that failure.
///
/// # Errors
/// As [`delegate`].
pub async fn delegate_streaming(
    survey: &Survey,
    router: &Router<String>,
    budget: &RetryBudget,
    store: &Store,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError> + Sync,
    plan: Plan<'_>,
    sink: &ChunkSink,
) -> Result<Routed, RouteError> {
    let attempts = Recorded {
        store,
        local: plan.local,
        client_for,
        sink: Some(sink),
    };
    run(survey, router, budget, &attempts, plan).await
}

/// The routing loop: picks with `router` among `survey`'s candidates,
/// makes each attempt with `attempts`, tells the router how it ended, and
/// tries again (the same peer, another, or none) as the module says.
/// `router` and `budget` may be shared by many concurrent calls: the
/// in-flight counts, latencies and cooldowns are then the whole load's.
///
/// # Errors
/// [`RouteError`]: no candidate, or no attempt verified.
pub async fn run(
    survey: &Survey,
    router: &Router<String>,
    budget: &RetryBudget,
    attempts: &(impl Attempts + Sync),
    plan: Plan<'_>,
) -> Result<Routed, RouteError> {
    if survey.candidates.is_empty() {
        return Err(RouteError::NoCandidate {
            task_type: plan.spec.task_type.clone(),
            left: survey
                .left
                .iter()
                .map(|(peer, why)| (peer.name.clone(), why.to_string()))
                .collect(),
        });
    }
    let mut spec = plan.spec.clone();
    if spec.task_id.is_none() {
        spec.task_id = Some(super::delegation::new_task_id(now_ms()));
    }
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let mut done_with: BTreeSet<String> = BTreeSet::new();
    let mut again: Option<String> = None;
    // Once a peer may have run the task, only an idempotent one runs
    // anywhere else, whatever the later attempts say.
    let mut may_have_run: Option<String> = None;
    let mut tried: Vec<Tried> = Vec::new();
    budget.deposit(tokio::time::Instant::now());
    loop {
        let open: Vec<&Candidate> = survey
            .candidates
            .iter()
            .filter(|c| !done_with.contains(&c.peer.lct_id))
            .collect();
        // The preferred first, while one of them can take it.
        let preferred: Vec<&Candidate> = open.iter().copied().filter(|c| c.preferred).collect();
        let pool = if preferred.is_empty() {
            &open
        } else {
            &preferred
        };
        let keys: Vec<String> = match &again {
            Some(key) => vec![key.clone()],
            None => pool.iter().map(|c| c.peer.lct_id.clone()).collect(),
        };
        let pick = router
            .pick(&keys, Some(deadline), &mut rand::thread_rng())
            .expect("keys is not empty");
        if let Some(wait) = pick.wait {
            tokio::time::sleep(wait).await;
        }
        let candidate = survey
            .candidates
            .iter()
            .find(|c| c.peer.lct_id == pick.key)
            .expect("picked among the candidates");
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let started = router.start(&pick.key);
        let result = attempts.attempt(candidate, &spec, remaining).await;
        let (outcome, fate) = judge(&result);
        started.finish(outcome);
        tried.push(Tried {
            peer: candidate.peer.name.clone(),
            outcome: match &result {
                Ok(d) => d.summary.status.as_str().to_owned(),
                Err(e) => e.to_string(),
            },
        });
        let last = match result {
            Ok(delegation) => {
                return Ok(Routed {
                    delegation,
                    target: candidate.peer.clone(),
                    addr: candidate.addr.clone(),
                    tried,
                })
            }
            Err(e) => e,
        };
        if attempts.passed_on() {
            return Err(RouteError::Exhausted { tried, last });
        }
        let idempotent = plan.idempotent.unwrap_or(candidate.served.idempotent);
        let out_of_time = tokio::time::Instant::now() >= deadline;
        let retry_same = fate == Fate::MayHaveRun && again.is_none();
        if matches!(fate, Fate::MayHaveRun | Fate::Untrusted) && may_have_run.is_none() {
            may_have_run = Some(candidate.peer.name.clone());
        }
        let elsewhere = fate != Fate::Stop && (may_have_run.is_none() || idempotent);
        if fate == Fate::Stop || out_of_time || !budget.try_withdraw(tokio::time::Instant::now()) {
            return Err(RouteError::Exhausted { tried, last });
        }
        if retry_same {
            // The same task id: its node answers with the stored proof if
            // it ran it, and runs it once if it did not.
            again = Some(pick.key);
            continue;
        }
        again = None;
        if !elsewhere {
            return Err(RouteError::MayHaveRun {
                peer: may_have_run.unwrap_or_else(|| candidate.peer.name.clone()),
                tried,
                last,
            });
        }
        done_with.insert(pick.key);
        if done_with.len() == survey.candidates.len() {
            return Err(RouteError::Exhausted { tried, last });
        }
    }
}

/// One moment read on both clocks: the ledger's (unix ms) and the
/// router's (`tokio::time::Instant`).
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// The moment in unix ms.
    pub wall_ms: u64,
    /// The same moment as the router's instant.
    pub instant: tokio::time::Instant,
}

impl Anchor {
    /// Now, on both clocks.
    pub fn now() -> Self {
        Anchor {
            wall_ms: now_ms(),
            instant: tokio::time::Instant::now(),
        }
    }

    /// `at`, one of the router's instants, in unix ms: what a rebuilt
    /// router says (a cooldown's end) is shown on the ledger's clock, by
    /// the same reading of both clocks that placed the ledger's entries.
    pub fn wall_ms(&self, at: tokio::time::Instant) -> u64 {
        if at >= self.instant {
            let after = u64::try_from((at - self.instant).as_millis()).unwrap_or(u64::MAX);
            self.wall_ms.saturating_add(after)
        } else {
            let before = u64::try_from((self.instant - at).as_millis()).unwrap_or(u64::MAX);
            self.wall_ms.saturating_sub(before)
        }
    }
}

/// How long the capabilities of the peers may take, asked all at once.
pub const CAPABILITIES_WITHIN: Duration = Duration::from_secs(5);

/// How far back the ledger feeds a router: older outcomes have decayed
/// out of its latency and cooldowns, and reading them costs time.
pub const HISTORY: Duration = Duration::from_secs(3600);

/// Feeds `router` the last [`HISTORY`] of `store`'s ledger ([`rebuild`]).
///
/// # Errors
/// [`StoreError`] when the ledger cannot be read.
pub async fn rebuild_from(router: &Router<String>, store: &Store) -> Result<Anchor, StoreError> {
    let history = u64::try_from(HISTORY.as_millis()).unwrap_or(u64::MAX);
    let since = now_ms().saturating_sub(history);
    Ok(rebuild(router, &store.ledger(None, Some(since)).await?))
}

/// Feeds `router` what `entries` (the ledger, oldest first) say of each
/// peer, as if observed then: the router of a short command starts from
/// what earlier commands saw. Entries still `sent` say nothing yet.
/// Returns the reading of both clocks the entries were placed by.
pub fn rebuild(router: &Router<String>, entries: &[LedgerEntry]) -> Anchor {
    let anchor = Anchor::now();
    let (now, then) = (anchor.wall_ms, anchor.instant);
    for entry in entries {
        let measured = entry
            .latency_ms
            .map(|ms| Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 1e6)));
        let outcome = match (entry.status.as_str(), measured) {
            ("succeeded", Some(measured)) => Outcome::Verified {
                measured,
                claimed: None,
                terms_met: true,
            },
            ("failed", _) => Outcome::Failed,
            ("refused", _) => Outcome::Refused {
                status: 0,
                retry_after: None,
            },
            ("timed_out", _) => Outcome::Timeout,
            ("unreachable" | "broken" | "error" | "stream_cut", _) => Outcome::Transport,
            ("invalid_proof" | "stream_mismatch", _) => Outcome::InvalidProof,
            ("wrong_answer", _) => Outcome::WrongCanary,
            _ => continue,
        };
        let age = Duration::from_millis(now.saturating_sub(entry.sent_at_ms));
        let at = then.checked_sub(age).unwrap_or(then);
        router.observe_at(&entry.peer_lct, at, outcome);
    }
    anchor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_anchor_shows_instants_either_side_of_it_on_the_wall_clock() {
        let anchor = Anchor {
            wall_ms: 10_000,
            instant: tokio::time::Instant::now(),
        };
        let later = anchor.instant + Duration::from_millis(1_500);
        assert_eq!(anchor.wall_ms(later), 11_500);
        let earlier = anchor.instant.checked_sub(Duration::from_secs(2)).unwrap();
        assert_eq!(anchor.wall_ms(earlier), 8_000);
        let long_before = anchor.instant.checked_sub(Duration::from_secs(20));
        if let Some(long_before) = long_before {
            assert_eq!(anchor.wall_ms(long_before), 0, "saturates at the epoch");
        }
    }
}
