//! The OpenAI-compatible face of the local API, so that an application
//! written for OpenAI's client libraries delegates to the fleet unchanged:
//!
//! - `GET /local/v1/models` (and `/local/v1/models/{id}`): the models that
//!   the fleet's verified capabilities offer, one entry per model;
//! - `POST /local/v1/chat/completions`: a chat completion, as a task for a
//!   node that serves the model, signed, routed, verified and recorded by
//!   [`tasks::delegate`], the path `POST /local/v1/tasks` takes too.
//!
//! Only the translation is here: a request into a task's input, a
//! verified result into OpenAI's `chat.completion`, and every failure into
//! OpenAI's error shape `{"error": {message, type, code}}`, which its
//! clients parse (`code` is the sage code).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sage_crypto::Peer;
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;
use sage_types::ProofStatus;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::tasks::{self, Ask, Unverified, Verified};
use super::{Api, Origin};
use crate::delegator::client::{Client, CONNECT_TIMEOUT};
use crate::delegator::route::{self, Constraints, CAPABILITIES_WITHIN};

mod stream;

/// How long a chat completion may take, every attempt included: a model's
/// answer takes longer than most tasks, and OpenAI's clients wait up to
/// ten minutes by default.
const CHAT_TIMEOUT: Duration = Duration::from_secs(300);

/// The sampling options a request may carry that the `http` executor in
/// OpenAI mode copies into its backend's request; the others a client
/// sends are ignored.
const OPTIONS: [&str; 5] = ["temperature", "max_tokens", "top_p", "stop", "seed"];

/// One model the fleet offers.
#[derive(Debug, Default)]
struct Offer {
    /// Each task type served with the model, and the nodes that serve it.
    task_types: BTreeMap<String, Vec<String>>,
    /// The newest capabilities document that lists it (unix ms).
    issued_at: u64,
}

impl Offer {
    /// The task type a chat completion for this model becomes: the one
    /// the most nodes serve (the most to fail over to), then the first by
    /// name, so that the same fleet always gives the same answer.
    fn task_type(&self) -> Option<&str> {
        self.task_types
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            .map(|(task_type, _)| task_type.as_str())
    }

    fn nodes(&self) -> Vec<&str> {
        let mut nodes: Vec<&str> = self
            .task_types
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    fn entry(&self, model: &str) -> Value {
        json!({
            "id": model,
            "object": "model",
            "created": self.issued_at / 1000,
            "owned_by": "sage",
            "sage": {
                "task_types": self.task_types.keys().collect::<Vec<_>>(),
                "nodes": self.nodes(),
            },
        })
    }
}

/// The models of the verified capabilities of the trusted peers and of
/// this node itself (when it is a routing candidate), cached as routing
/// caches them.
async fn offers(api: &Api) -> BTreeMap<String, Offer> {
    let setup = &api.setup;
    let policy = setup.state.policy();
    let constraints = Constraints {
        local_node: setup.node_addr.clone(),
        ..Constraints::default()
    };
    let client_for = |peer: &Peer| Client::with_tls_connect_timeout(&peer.tls, CONNECT_TIMEOUT);
    let asked = route::verified_capabilities(
        &policy.trust,
        &setup.local,
        &constraints,
        &setup.store,
        client_for,
        CAPABILITIES_WITHIN,
    )
    .await;
    let mut offers: BTreeMap<String, Offer> = BTreeMap::new();
    for (peer, caps) in asked.verified {
        for served in caps.task_types {
            let Some(model) = served.model else { continue };
            let offer = offers.entry(model).or_default();
            offer.issued_at = offer.issued_at.max(caps.issued_at);
            offer
                .task_types
                .entry(served.task_type)
                .or_default()
                .push(peer.name.clone());
        }
    }
    offers
}

/// `GET /local/v1/models`.
pub(super) async fn models(State(api): State<Arc<Api>>) -> Response {
    let data: Vec<Value> = offers(&api)
        .await
        .iter()
        .map(|(model, offer)| offer.entry(model))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /local/v1/models/{id}`.
pub(super) async fn model(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    match offers(&api).await.get(&id) {
        Some(offer) => Json(offer.entry(&id)).into_response(),
        None => unknown_model(&id),
    }
}

fn unknown_model(model: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!(
            "no trusted node of this fleet serves the model \"{}\"",
            Untrusted(model)
        ),
        Value::Null,
    )
}

/// `POST /local/v1/chat/completions`'s body: what the executor uses.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Value>,
    #[serde(default)]
    stream: Option<bool>,
    /// The rest: the sampling options among them.
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// `POST /local/v1/chat/completions`.
pub(super) async fn chat_completions(
    State(api): State<Arc<Api>>,
    axum::Extension(origin): axum::Extension<Origin>,
    body: Bytes,
) -> Response {
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not a chat completion request: {e}"),
                Value::Null,
            )
        }
    };
    let Some(task_type) = offers(&api)
        .await
        .get(&request.model)
        .and_then(|offer| offer.task_type().map(str::to_owned))
    else {
        return unknown_model(&request.model);
    };
    let mut ask = Ask::new(task_type, input(&request), CHAT_TIMEOUT);
    // The task type may be served by other nodes with another model, or
    // with none (a builtin of the same name).
    ask.model = Some(request.model.clone());
    if request.stream == Some(true) {
        return stream::answer(api, origin, ask, request.model).await;
    }
    match tasks::delegate(&api, &origin, &ask).await {
        Ok(verified) => completion(&request.model, &verified),
        Err(unverified) => failure(&unverified),
    }
}

/// The task's input: the messages and the options the executor copies.
fn input(request: &ChatRequest) -> Value {
    let mut input = Map::new();
    input.insert("messages".into(), Value::Array(request.messages.clone()));
    for key in OPTIONS {
        if let Some(value) = request.rest.get(key).filter(|v| !v.is_null()) {
            input.insert(key.into(), value.clone());
        }
    }
    // Newer clients name the limit so; the executor copies `max_tokens`.
    if let (false, Some(limit)) = (
        input.contains_key("max_tokens"),
        request
            .rest
            .get("max_completion_tokens")
            .filter(|v| !v.is_null()),
    ) {
        input.insert("max_tokens".into(), limit.clone());
    }
    Value::Object(input)
}

/// The content of a verified chat result, or the error answer of a run
/// that failed or is not a chat's.
fn chat_content(verified: &Verified) -> Result<&str, Box<Response>> {
    let summary = &verified.delegation.summary;
    let executor = &verified.target.name;
    let result = &summary.result;
    if summary.status != ProofStatus::Succeeded {
        let why = result["error"].as_str().unwrap_or("no reason given");
        return Err(Box::new(error(
            StatusCode::BAD_GATEWAY,
            "execution_failed",
            format!(
                "the chat completion failed on {executor}: {}",
                Untrusted(why).up_to(1024)
            ),
            json!({ "task_id": summary.task_id }),
        )));
    }
    let Some(content) = result["content"].as_str() else {
        return Err(Box::new(error(
            StatusCode::BAD_GATEWAY,
            "not_a_chat_result",
            format!(
                "{executor}'s verified result has no `content`: its executor is not an OpenAI chat"
            ),
            json!({ "task_id": summary.task_id }),
        )));
    };
    Ok(content)
}

/// The `chat.completion` made of a verified result, with the receipt in
/// the headers.
fn completion(requested: &str, verified: &Verified) -> Response {
    let content = match chat_content(verified) {
        Ok(content) => content,
        Err(refused) => return *refused,
    };
    let summary = &verified.delegation.summary;
    let executor = &verified.target.name;
    let result = &summary.result;
    let body = json!({
        "id": format!("chatcmpl-{}", summary.task_id),
        "object": "chat.completion",
        "created": verified.delegation.task["issued_at"].as_u64().unwrap_or_else(now_ms) / 1000,
        "model": result["model"].as_str().unwrap_or(requested),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": result["finish_reason"].as_str().unwrap_or("stop"),
        }],
        "usage": result["usage"],
    });
    let mut response = Json(body).into_response();
    let headers = [
        ("x-sage-receipt-id", Some(summary.task_id.clone())),
        (
            "x-sage-task-digest",
            Some(verified.delegation.task_digest.clone()),
        ),
        ("x-sage-proof-digest", verified.proof_digest()),
        ("x-sage-executor", Some(executor.clone())),
    ];
    for (name, value) in headers {
        // A value a header cannot carry is left out; the body stands.
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// A delegation without a verified proof, in OpenAI's shape.
fn failure(unverified: &Unverified) -> Response {
    error(
        unverified.status,
        unverified.code,
        unverified.detail.clone(),
        unverified.extra(),
    )
}

/// OpenAI's error shape, `{"error": {message, type, code, param}}`, with
/// the fields of `extra` (an object: `task_id`, `attempts`) beside them.
fn error(status: StatusCode, code: &str, message: String, extra: Value) -> Response {
    (status, Json(error_body(status, code, message, extra))).into_response()
}

/// The body of [`error`]: `{"error": {...}}`.
fn error_body(status: StatusCode, code: &str, message: String, extra: Value) -> Value {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "param": null,
    });
    if let Value::Object(extra) = extra {
        for (key, value) in extra {
            error[key] = value;
        }
    }
    json!({ "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(task_types: &[(&str, &[&str])]) -> Offer {
        Offer {
            task_types: task_types
                .iter()
                .map(|(t, nodes)| (t.to_string(), nodes.iter().map(|n| n.to_string()).collect()))
                .collect(),
            issued_at: 1_700_000_000_123,
        }
    }

    #[test]
    fn the_task_type_is_the_one_most_nodes_serve_then_the_first_by_name() {
        let most = offer(&[("chat", &["A"]), ("llm", &["A", "B"])]);
        assert_eq!(most.task_type(), Some("llm"));
        let tie = offer(&[("zeta", &["A"]), ("alpha", &["B"])]);
        assert_eq!(tie.task_type(), Some("alpha"));
        assert_eq!(offer(&[]).task_type(), None);
        let entry = tie.entry("m");
        assert_eq!(entry["created"], 1_700_000_000);
        assert_eq!(entry["sage"]["nodes"], json!(["A", "B"]));
        assert_eq!(entry["sage"]["task_types"], json!(["alpha", "zeta"]));
    }

    #[test]
    fn the_input_keeps_the_messages_and_the_options_the_executor_copies() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.5,
            "seed": null,
            "max_completion_tokens": 9,
            "logit_bias": {"1": 2},
            "user": "someone",
        }))
        .unwrap();
        assert_eq!(
            input(&request),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "max_tokens": 9})
        );
    }
}
