//! The layer around every request: its id (on every log line of the
//! request and in the `x-request-id` answer header), the global limit on
//! requests handled at once, and the request metrics. A well-formed
//! `traceparent` puts its trace id in the request span's fields, and with
//! spans exported makes the span continue that trace.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sage_types::ProblemCode;
use tracing::Instrument as _;

use super::metrics::{endpoint_label, Gauges, CONTENT_TYPE};
use super::problem::Refused;
use super::refusals::Sender;
use super::transport::ClientAddr;
use super::{ApiError, AppState};
use crate::telemetry;
use crate::trace::{TraceParent, TRACEPARENT};

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 64;

pub(super) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let endpoint = endpoint_label(request.uri().path());
    let id = request_id(&request);
    let client = request.extensions().get::<ClientAddr>().map(|c| c.0);
    let span = tracing::info_span!("request", id = %id, trace_id = tracing::field::Empty);
    if let Some(parent) = traceparent(&request) {
        span.record("trace_id", tracing::field::display(parent.trace_id));
        telemetry::continue_trace(&span, &parent);
    }
    // Monitoring answers even when the node is saturated.
    let limited = !matches!(endpoint, "/health" | "/metrics");
    let slot = if limited {
        let max = state.policy().limits.max_concurrent_requests;
        match state.start_request(max) {
            Some(slot) => Some(slot),
            None => {
                let _entered = span.enter();
                tracing::warn!(
                    max,
                    "refused: {max} requests are being handled (limits.max_concurrent_requests)"
                );
                let refusal = ApiError::new(
                    ProblemCode::Busy,
                    format!(
                        "this node is handling its limit of {max} requests at once; retry shortly"
                    ),
                )
                .retry_after(1);
                let response = refusal.into_response();
                return finish(&state, endpoint, &id, &span, client, started, response);
            }
        }
    } else {
        None
    };
    let response = next.run(request).instrument(span.clone()).await;
    drop(slot);
    finish(&state, endpoint, &id, &span, client, started, response)
}

/// Counts the answer, logs a refusal, and tags it with the request id.
fn finish(
    state: &AppState,
    endpoint: &'static str,
    id: &str,
    span: &tracing::Span,
    client: Option<std::net::SocketAddr>,
    started: Instant,
    mut response: Response,
) -> Response {
    let metrics = &state.inner().metrics;
    if let Some(refused) = response.extensions().get::<Refused>() {
        metrics.refusal(refused.code.as_str());
        let sender = Sender::of(refused.peer.as_deref(), client);
        let _entered = span.enter();
        state
            .inner()
            .refusals
            .refused(sender, refused.code, endpoint, &refused.detail);
    }
    metrics.request(endpoint, response.status().as_u16(), started.elapsed());
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// The client's `x-request-id` if it is short and plain, else a new one.
fn request_id(request: &Request) -> String {
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    match given {
        Some(id) => id.to_owned(),
        None => format!("{:016x}", rand::random::<u64>()),
    }
}

/// The request's `traceparent`, if it is well formed; any other is
/// ignored, since it is informational and decides nothing.
fn traceparent(request: &Request) -> Option<TraceParent> {
    let value = request.headers().get(TRACEPARENT)?.to_str().ok()?;
    TraceParent::parse(value)
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let inner = state.inner();
    let policy = state.policy();
    let executors = policy
        .executors
        .iter()
        .map(|(task_type, entry)| {
            let (running, waiting) = entry
                .limiter
                .as_ref()
                .map_or((0, 0), |l| (l.running(), l.waiting()));
            (task_type.to_owned(), running, waiting)
        })
        .collect();
    let replay_guard = replay_guard_size(&state).await;
    let text = inner.metrics.render(&Gauges {
        tasks_in_flight: state.in_flight(),
        requests_in_flight: state.requests(),
        executors,
        replay_guard,
        peers: policy.trust.len(),
        uptime: inner.started.elapsed().as_secs_f64(),
        routes: state.routes(),
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// How long a read of the replay guard's size serves scrapes: a flood of
/// `/metrics` must not turn into a flood of database jobs.
const REPLAY_GUARD_CACHE: std::time::Duration = std::time::Duration::from_secs(10);

/// The replay guard's size, read from the store at most every
/// [`REPLAY_GUARD_CACHE`].
async fn replay_guard_size(state: &AppState) -> Option<u64> {
    let inner = state.inner();
    let cached = *inner
        .metrics
        .replay_guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, size)) = cached {
        if at.elapsed() < REPLAY_GUARD_CACHE {
            return Some(size);
        }
    }
    match inner.store.replay_guard_size().await {
        Ok(size) => {
            *inner
                .metrics
                .replay_guard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), size));
            Some(size)
        }
        Err(error) => {
            tracing::warn!(%error, "metrics: cannot read the replay guard's size");
            None
        }
    }
}
