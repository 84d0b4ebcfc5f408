//! The handlers: a task in, a verified answer (or a problem) out; the
//! ledger's view of a task, and its receipt.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sage_crypto::digest::sha256_tagged;
use sage_crypto::{Peer, PeerSource};
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;
use sage_types::{Envelope, QualityRequirements};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{problem, Api, Origin};
use crate::delegator::client::{Client, CONNECT_TIMEOUT};
use crate::delegator::delegation::{new_task_id, Delegation, TaskSpec};
use crate::delegator::ledger::Receipt;
use crate::delegator::recorded::Attempt;
use crate::delegator::route::{self, Constraints, Plan, Tried, CAPABILITIES_WITHIN};
use crate::delegator::stream::ChunkSink;
use crate::ClientError;

/// How long a task may take when the request does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a request may ask for: a caller that waits longer should
/// poll `GET /local/v1/tasks/{id}`.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST /local/v1/tasks`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskRequest {
    task_type: String,
    #[serde(default = "empty_object")]
    input: Value,
    /// A peer's name or LCT id (this node's own too); without it, routed.
    target: Option<String>,
    #[serde(default)]
    prefer: Vec<String>,
    idempotent: Option<bool>,
    /// Seconds, every attempt included.
    timeout: Option<f64>,
    quality: Option<QualityRequirements>,
    estimated_cost: Option<f64>,
    max_cost: Option<f64>,
    /// Refused when `true`: this endpoint answers whole.
    stream: Option<bool>,
}

fn empty_object() -> Value {
    json!({})
}

fn bad_request(detail: String) -> Response {
    problem(StatusCode::BAD_REQUEST, "bad_request", detail, Value::Null)
}

/// `POST /local/v1/tasks`.
pub(super) async fn submit(
    State(api): State<Arc<Api>>,
    axum::Extension(origin): axum::Extension<Origin>,
    body: Bytes,
) -> Response {
    let request: TaskRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return bad_request(format!("not a task request: {e}")),
    };
    if request.stream == Some(true) {
        return problem(
            StatusCode::BAD_REQUEST,
            "streaming_unavailable",
            "POST /local/v1/tasks answers whole: send it without \"stream\": true, or stream a chat with POST /local/v1/chat/completions".into(),
            Value::Null,
        );
    }
    let timeout = match request.timeout {
        None => DEFAULT_TIMEOUT,
        Some(secs) if secs > 0.0 && secs <= MAX_TIMEOUT.as_secs_f64() => {
            Duration::from_secs_f64(secs)
        }
        Some(secs) => {
            return bad_request(format!(
                "timeout {secs} is not between 0 and {} seconds",
                MAX_TIMEOUT.as_secs()
            ))
        }
    };
    let mut ask = Ask::new(request.task_type, request.input, timeout);
    ask.spec.estimated_cost = request.estimated_cost.unwrap_or(ask.spec.estimated_cost);
    ask.spec.quality = request.quality.unwrap_or_default();
    ask.spec.max_cost = request.max_cost;
    ask.target = request.target;
    ask.prefer = request.prefer;
    ask.idempotent = request.idempotent;
    match delegate(&api, &origin, &ask).await {
        Ok(verified) => answer(&verified),
        Err(unverified) => unverified.problem(),
    }
}

/// A task a local application hands the node, whichever endpoint it came
/// through.
#[derive(Debug, Clone)]
pub(super) struct Ask {
    /// What to sign; its task id is set.
    pub spec: TaskSpec,
    /// A peer's name or LCT id (this node's own too); `None`: routed.
    pub target: Option<String>,
    /// Peers to route to first.
    pub prefer: Vec<String>,
    /// Whether the task may run again on another peer after an attempt
    /// that may have been accepted; `None`: as the capabilities say.
    pub idempotent: Option<bool>,
    /// Only to peers whose task type answers with this model.
    pub model: Option<String>,
    /// Every attempt included.
    pub timeout: Duration,
}

impl Ask {
    /// A routed task of `task_type` with `input`, a new task id, the
    /// default estimate and no quality terms, valid for `timeout`.
    pub fn new(task_type: String, input: Value, timeout: Duration) -> Ask {
        Ask {
            spec: TaskSpec {
                task_type,
                input,
                estimated_cost: 50.0,
                quality: QualityRequirements::default(),
                lifetime: timeout,
                max_latency: timeout,
                max_cost: None,
                task_id: Some(new_task_id(now_ms())),
                earlier_digests: Vec::new(),
                blobs: Vec::new(),
                origin: None,
            },
            target: None,
            prefer: Vec::new(),
            idempotent: None,
            model: None,
            timeout,
        }
    }

    /// The task's id, which every attempt shares.
    pub fn task_id(&self) -> String {
        self.spec.task_id.clone().unwrap_or_default()
    }
}

/// A local delegation whose proof verified.
#[derive(Debug)]
pub(super) struct Verified {
    /// The delegation.
    pub delegation: Delegation,
    /// The peer that ran it (this node itself, maybe).
    pub target: Peer,
    /// Every attempt, the last one included.
    pub tried: Vec<Tried>,
}

impl Verified {
    /// The `sha256:` digest of the proof's payload (none for a legacy
    /// proof, which is no envelope).
    pub fn proof_digest(&self) -> Option<String> {
        payload_digest(&self.delegation.signed_proof)
    }
}

/// A local delegation without a verified proof.
#[derive(Debug)]
pub(super) struct Unverified {
    /// The answer's status.
    pub status: StatusCode,
    /// The stable code: the delegation's, or the local API's own.
    pub code: &'static str,
    /// What happened, for the caller.
    pub detail: String,
    /// The task's id, once a task was made for the request.
    pub task_id: Option<String>,
    /// Every attempt, once one could be made.
    pub attempts: Option<Vec<Tried>>,
}

impl Unverified {
    fn new(status: StatusCode, code: &'static str, detail: String) -> Unverified {
        Unverified {
            status,
            code,
            detail,
            task_id: None,
            attempts: None,
        }
    }

    /// The delegation's failure, with its code and every attempt.
    fn of_delegation(code: &'static str, detail: String, ask: &Ask, tried: &[Tried]) -> Self {
        let status = if code == "no_candidate" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_GATEWAY
        };
        Unverified {
            task_id: Some(ask.task_id()),
            attempts: Some(tried.to_vec()),
            ..Unverified::new(status, code, detail)
        }
    }

    /// The fields beside the code and detail: `task_id`, `attempts`.
    pub fn extra(&self) -> Value {
        let mut extra = serde_json::Map::new();
        if let Some(id) = &self.task_id {
            extra.insert("task_id".into(), json!(id));
        }
        if let Some(tried) = &self.attempts {
            extra.insert("attempts".into(), tried_json(tried));
        }
        Value::Object(extra)
    }

    /// As `POST /local/v1/tasks` answers it: a problem.
    fn problem(&self) -> Response {
        problem(self.status, self.code, self.detail.clone(), self.extra())
    }
}

/// Signs `ask` as this node, sends it to its target or routes it, and
/// verifies the proof; every attempt is recorded in the ledger. The one
/// path of every local endpoint that delegates.
pub(super) async fn delegate(
    api: &Api,
    origin: &Origin,
    ask: &Ask,
) -> Result<Verified, Unverified> {
    delegate_with(api, origin, ask, None).await
}

/// [`delegate`] asking for a streaming answer: each piece of the output
/// goes to `sink` as it arrives, unverified until this returns (see
/// [`crate::delegator::stream`]); a routed one fails over only before the
/// first piece.
pub(super) async fn delegate_streaming(
    api: &Api,
    origin: &Origin,
    ask: &Ask,
    sink: &ChunkSink,
) -> Result<Verified, Unverified> {
    delegate_with(api, origin, ask, Some(sink)).await
}

async fn delegate_with(
    api: &Api,
    origin: &Origin,
    ask: &Ask,
    sink: Option<&ChunkSink>,
) -> Result<Verified, Unverified> {
    let task_id = ask.task_id();
    // The signed task says on whose behalf it is sent; one copy of the
    // request, small beside signing it.
    let mut ask = ask.clone();
    ask.spec.origin = Some(origin.to_string());
    let ask = &ask;
    let (uid, gid, pid, client) = match origin {
        Origin::Socket(c) => (Some(c.uid), Some(c.gid), c.pid, None),
        Origin::Token(addr) => (None, None, None, Some(addr.to_string())),
    };
    tracing::info!(
        uid,
        gid,
        pid,
        client,
        task_id,
        // The caller's words, escaped: a local application may not write
        // lines into the node's log either.
        task_type = %Untrusted(&ask.spec.task_type),
        target = ask.target.as_deref().map(|t| Untrusted(t).to_string()),
        streaming = sink.is_some(),
        "a local application's task"
    );
    let timeout = ask.timeout;
    let connect_within = CONNECT_TIMEOUT.min(timeout.mul_f64(0.9));
    let client_for = move |peer: &Peer| Client::with_tls_connect_timeout(&peer.tls, connect_within);
    let work = async {
        match &ask.target {
            Some(target) => targeted(api, target, ask, client_for, sink).await,
            None => routed(api, ask, client_for, sink).await,
        }
    };
    // Every step is bounded by `timeout`; this bounds their sum too.
    match tokio::time::timeout(timeout + CAPABILITIES_WITHIN, work).await {
        Ok(result) => result,
        Err(_) => Err(Unverified {
            task_id: Some(task_id),
            ..Unverified::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timed_out",
                format!("no verified proof within {} s", timeout.as_secs_f64()),
            )
        }),
    }
}

/// This node as a peer, reached at its federation port.
fn this_node(api: &Api) -> Option<Peer> {
    let local = &api.setup.local;
    let addr = api.setup.node_addr.clone()?;
    let mut peer = Peer::new(&local.name, local.key.public(), PeerSource::Given);
    peer.lct_id = local.lct_id.clone();
    peer.address = Some(addr);
    Some(peer)
}

async fn targeted(
    api: &Api,
    target: &str,
    ask: &Ask,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
    sink: Option<&ChunkSink>,
) -> Result<Verified, Unverified> {
    let local = &api.setup.local;
    let is_self = target.eq_ignore_ascii_case(&local.name) || target == local.lct_id;
    let peer = if is_self {
        this_node(api)
    } else {
        api.setup.state.policy().trust.find(target).cloned()
    };
    let Some(peer) = peer else {
        return Err(Unverified::new(
            StatusCode::BAD_REQUEST,
            "unknown_target",
            format!("{target:?} is not a trusted peer of this node"),
        ));
    };
    let Some(addr) = peer.address.clone() else {
        return Err(Unverified::new(
            StatusCode::BAD_REQUEST,
            "no_address",
            format!("the record of {} has no address", peer.name),
        ));
    };
    let client = client_for(&peer)
        .map_err(|e| Unverified::of_delegation(e.code(), e.to_string(), ask, &[]))?;
    let attempt = Attempt {
        client: &client,
        store: &api.setup.store,
        local,
        target: &peer,
        addr: &addr,
        protocol: peer.protocol,
        spec: &ask.spec,
        timeout: ask.timeout,
        expect: None,
    };
    let result = match sink {
        None => attempt.run().await,
        Some(sink) => attempt.run_streaming(sink).await,
    };
    match result {
        Ok(delegation) => {
            let tried = vec![Tried {
                peer: peer.name.clone(),
                outcome: delegation.summary.status.as_str().to_owned(),
            }];
            Ok(Verified {
                delegation,
                target: peer,
                tried,
            })
        }
        Err(e) => {
            let tried = [Tried {
                peer: peer.name.clone(),
                outcome: e.to_string(),
            }];
            Err(Unverified::of_delegation(
                e.code(),
                e.to_string(),
                ask,
                &tried,
            ))
        }
    }
}

async fn routed(
    api: &Api,
    ask: &Ask,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError> + Sync + Copy,
    sink: Option<&ChunkSink>,
) -> Result<Verified, Unverified> {
    let setup = &api.setup;
    let policy = setup.state.policy();
    let constraints = Constraints {
        prefer: ask.prefer.clone(),
        exclude: Vec::new(),
        max_cost: ask.spec.max_cost,
        local_node: setup.node_addr.clone(),
        model: ask.model.clone(),
    };
    let survey = route::survey(
        &policy.trust,
        &setup.local,
        &ask.spec.task_type,
        &constraints,
        &setup.store,
        client_for,
        CAPABILITIES_WITHIN.min(ask.timeout),
    )
    .await;
    let plan = Plan {
        local: &setup.local,
        spec: &ask.spec,
        idempotent: ask.idempotent,
        timeout: ask.timeout,
    };
    let router = setup.fleet.router();
    let result = match sink {
        None => route::delegate(&survey, router, &api.budget, &setup.store, client_for, plan).await,
        Some(sink) => {
            route::delegate_streaming(
                &survey,
                router,
                &api.budget,
                &setup.store,
                client_for,
                plan,
                sink,
            )
            .await
        }
    };
    match result {
        Ok(routed) => Ok(Verified {
            delegation: routed.delegation,
            target: routed.target,
            tried: routed.tried,
        }),
        Err(e) => Err(Unverified::of_delegation(
            e.code(),
            e.to_string(),
            ask,
            e.tried(),
        )),
    }
}

/// Every attempt: its peer and how it ended.
pub(super) fn tried_json(tried: &[Tried]) -> Value {
    tried
        .iter()
        .map(|t| json!({ "peer": t.peer, "outcome": t.outcome }))
        .collect()
}

/// The `sha256:` digest of a signed message's payload, if it is an
/// envelope (a legacy proof is not).
fn payload_digest(signed: &Value) -> Option<String> {
    let envelope: Envelope = serde_json::from_value(signed.clone()).ok()?;
    Some(sha256_tagged(&envelope.payload_bytes().ok()?))
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A verified delegation's answer.
fn answer(verified: &Verified) -> Response {
    let Verified {
        delegation: d,
        target,
        tried,
    } = verified;
    let p = &d.summary;
    let body = json!({
        "task_id": p.task_id,
        "result": p.result,
        "status": p.status.as_str(),
        "accepted": d.shortfall.is_none(),
        "shortfall": d.shortfall,
        "executor": {
            "name": target.name,
            "lct_id": target.lct_id,
            "key_id": target.key_id.to_string(),
        },
        "protocol": d.protocol.as_str(),
        "receipt": {
            "id": p.task_id,
            "task_digest": d.task_digest,
            "proof_digest": verified.proof_digest(),
        },
        "timing": {
            "total_ms": ms(d.total),
            "round_trip_ms": ms(d.round_trip),
            "execution_ms": (p.latency_ms * 1e3).round() / 1e3,
            "health_rtt_ms": ms(d.health_rtt),
        },
        "attempts": tried_json(tried),
    });
    Json(body).into_response()
}

/// `GET /local/v1/tasks/{id}`: every attempt the ledger holds.
pub(super) async fn status(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let attempts = match api.setup.store.ledger_attempts(id.clone()).await {
        Ok(attempts) => attempts,
        Err(e) => return store_problem(&e),
    };
    let Some(last) = attempts.last() else {
        return unknown_task(&id);
    };
    let rows: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "peer": a.peer,
                "peer_lct": a.peer_lct,
                "protocol": a.protocol,
                "status": a.status,
                "sent_at_ms": a.sent_at_ms,
                "latency_ms": a.latency_ms,
                "error": a.error,
            })
        })
        .collect();
    Json(json!({
        "task_id": id,
        "task_type": last.task_type,
        "status": last.status,
        "attempts": rows,
    }))
    .into_response()
}

/// `GET /local/v1/receipts/{id}`: the signed task and proof as kept.
pub(super) async fn receipt(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match api.setup.store.ledger_entry(id.clone()).await {
        Ok(Some(entry)) => Json(Receipt::of(&entry).to_json()).into_response(),
        Ok(None) => unknown_task(&id),
        Err(e) => store_problem(&e),
    }
}

fn unknown_task(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no delegation {id:?} in this node's ledger"),
        Value::Null,
    )
}

fn store_problem(e: &sage_store::StoreError) -> Response {
    tracing::warn!(error = %e, "local API: the ledger cannot be read");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store",
        "the node's ledger cannot be read; see its log".into(),
        Value::Null,
    )
}
