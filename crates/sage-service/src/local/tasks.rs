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
    let task_id = new_task_id(now_ms());
    let spec = TaskSpec {
        task_type: request.task_type.clone(),
        input: request.input.clone(),
        estimated_cost: request.estimated_cost.unwrap_or(50.0),
        quality: request.quality.unwrap_or_default(),
        lifetime: timeout,
        max_latency: timeout,
        max_cost: request.max_cost,
        task_id: Some(task_id.clone()),
        earlier_digests: Vec::new(),
        blobs: Vec::new(),
    };
    // The signed task has no field for it, so the origin is the log's.
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
        task_type = %Untrusted(&request.task_type),
        target = request.target.as_deref().map(|t| Untrusted(t).to_string()),
        "a local application's task"
    );
    let connect_within = CONNECT_TIMEOUT.min(timeout.mul_f64(0.9));
    let client_for = move |peer: &Peer| Client::with_tls_connect_timeout(&peer.tls, connect_within);
    let work = async {
        match &request.target {
            Some(target) => targeted(&api, target, &spec, timeout, client_for).await,
            None => routed(&api, &request, &spec, timeout, client_for).await,
        }
    };
    // Every step is bounded by `timeout`; this bounds their sum too.
    match tokio::time::timeout(timeout + CAPABILITIES_WITHIN, work).await {
        Ok(response) => response,
        Err(_) => problem(
            StatusCode::GATEWAY_TIMEOUT,
            "timed_out",
            format!("no verified proof within {} s", timeout.as_secs_f64()),
            json!({ "task_id": task_id }),
        ),
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
    spec: &TaskSpec,
    timeout: Duration,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
) -> Response {
    let local = &api.setup.local;
    let is_self = target.eq_ignore_ascii_case(&local.name) || target == local.lct_id;
    let peer = if is_self {
        this_node(api)
    } else {
        api.setup.state.policy().trust.find(target).cloned()
    };
    let Some(peer) = peer else {
        return problem(
            StatusCode::BAD_REQUEST,
            "unknown_target",
            format!("{target:?} is not a trusted peer of this node"),
            Value::Null,
        );
    };
    let Some(addr) = peer.address.clone() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "no_address",
            format!("the record of {} has no address", peer.name),
            Value::Null,
        );
    };
    let client = match client_for(&peer) {
        Ok(client) => client,
        Err(e) => return delegation_problem(e.code(), e.to_string(), spec, &[]),
    };
    let result = Attempt {
        client: &client,
        store: &api.setup.store,
        local,
        target: &peer,
        addr: &addr,
        protocol: peer.protocol,
        spec,
        timeout,
        expect: None,
    }
    .run()
    .await;
    match result {
        Ok(delegation) => {
            let tried = [Tried {
                peer: peer.name.clone(),
                outcome: delegation.summary.status.as_str().to_owned(),
            }];
            answer(&delegation, &peer, &tried)
        }
        Err(e) => {
            let tried = [Tried {
                peer: peer.name.clone(),
                outcome: e.to_string(),
            }];
            delegation_problem(e.code(), e.to_string(), spec, &tried)
        }
    }
}

async fn routed(
    api: &Api,
    request: &TaskRequest,
    spec: &TaskSpec,
    timeout: Duration,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError> + Sync + Copy,
) -> Response {
    let setup = &api.setup;
    let policy = setup.state.policy();
    let constraints = Constraints {
        prefer: request.prefer.clone(),
        exclude: Vec::new(),
        max_cost: request.max_cost,
        local_node: setup.node_addr.clone(),
    };
    let survey = route::survey(
        &policy.trust,
        &setup.local,
        &spec.task_type,
        &constraints,
        &setup.store,
        client_for,
        CAPABILITIES_WITHIN.min(timeout),
    )
    .await;
    let plan = Plan {
        local: &setup.local,
        spec,
        idempotent: request.idempotent,
        timeout,
    };
    let result = route::delegate(
        &survey,
        setup.fleet.router(),
        &api.budget,
        &setup.store,
        client_for,
        plan,
    )
    .await;
    match result {
        Ok(routed) => answer(&routed.delegation, &routed.target, &routed.tried),
        Err(e) => delegation_problem(e.code(), e.to_string(), spec, e.tried()),
    }
}

fn tried_json(tried: &[Tried]) -> Value {
    tried
        .iter()
        .map(|t| json!({ "peer": t.peer, "outcome": t.outcome }))
        .collect()
}

/// A delegation without a verified proof: its code, every attempt.
fn delegation_problem(code: &str, detail: String, spec: &TaskSpec, tried: &[Tried]) -> Response {
    let status = if code == "no_candidate" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    problem(
        status,
        code,
        detail,
        json!({ "task_id": spec.task_id, "attempts": tried_json(tried) }),
    )
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
fn answer(d: &Delegation, target: &Peer, tried: &[Tried]) -> Response {
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
            "proof_digest": payload_digest(&d.signed_proof),
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
