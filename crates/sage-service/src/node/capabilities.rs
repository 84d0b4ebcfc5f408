//! `GET /v1/capabilities`: what this node serves and runs on, signed.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sage_crypto::sign_envelope;
use sage_types::capabilities::{Capabilities, CostInfo, TaskTypeInfo, CAPABILITIES_PAYLOAD_TYPE};
use sage_types::ProblemCode;

use super::{ApiError, AppState};
use sage_types::clock::now_ms;

/// How long a delegator may use a capabilities document before asking
/// again: long enough to spare a request per delegation, short enough that
/// a changed config or a full queue is seen within a minute.
const CAPABILITIES_TTL_MS: u64 = 60_000;

pub(super) async fn capabilities(State(state): State<AppState>) -> Result<Response, ApiError> {
    let inner = state.inner();
    let policy = state.policy();
    let task_types = policy
        .executors
        .iter()
        .map(|(task_type, entry)| TaskTypeInfo {
            task_type: task_type.to_owned(),
            kind: entry.executor.kind().to_owned(),
            max_concurrency: entry.limiter.as_ref().map(|l| l.max_concurrency()),
            queue_depth: entry.limiter.as_ref().map(|l| l.queue_depth()),
            running: entry.limiter.as_ref().map_or(0, |l| l.running()),
            waiting: entry.limiter.as_ref().map_or(0, |l| l.waiting()),
            cost: entry.cost.map(|c| CostInfo {
                base: c.base,
                per_second: c.per_second,
            }),
            max_cost: entry.max_cost,
            idempotent: entry.executor.idempotent(),
            model: entry.executor.model().map(str::to_owned),
        })
        .collect();
    let issued_at = now_ms();
    let document = Capabilities {
        platform: inner.name.clone(),
        lct_id: inner.lct_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        issued_at,
        expires_at: issued_at.saturating_add(CAPABILITIES_TTL_MS),
        task_types,
        hardware: inner.hardware.clone(),
    };
    let payload = serde_json::to_vec(&document).map_err(|e| {
        ApiError::new(
            ProblemCode::Internal,
            format!("cannot encode capabilities: {e}"),
        )
    })?;
    let envelope = sign_envelope(&inner.key, CAPABILITIES_PAYLOAD_TYPE, &payload);
    let body = serde_json::to_vec(&envelope).map_err(|e| {
        ApiError::new(
            ProblemCode::Internal,
            format!("cannot encode envelope: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}
