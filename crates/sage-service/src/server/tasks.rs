//! `POST /v1/tasks`: verify, admit, execute, prove.
//!
//! The order is the security argument: the body is bounded before it is
//! read, the envelope's signature is verified before the payload is parsed,
//! and every check that can refuse runs before the replay guard records the
//! nonce and before anything executes.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use sage_crypto::digest::{json_digest, sha256_tagged};
use sage_crypto::{sign_envelope, verify_envelope, Peer};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, ProblemCode, Proof, ProofStatus, Task};

use super::state::Inner;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::executor::Execution;
use crate::replay::Admission;

/// Longest task id accepted.
const MAX_TASK_ID_LEN: usize = 128;
/// Nonce length bounds, in hex characters (64 to 512 bits).
const NONCE_HEX_LEN: std::ops::RangeInclusive<usize> = 16..=128;

pub(super) async fn submit(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let inner = state.inner();
    let bytes = read_body(body, inner.setup.limits.max_body_bytes).await?;
    let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::Malformed,
            format!("body is not a task envelope: {e}"),
        )
    })?;
    let verified = verify_envelope(&envelope, TASK_PAYLOAD_TYPE, &inner.setup.trust)?;
    let payload = verified.payload;
    let task: Task = serde_json::from_slice(&payload).map_err(|e| {
        ApiError::new(
            ProblemCode::Malformed,
            format!("signed payload is not a v1 task: {e}"),
        )
    })?;
    admit(inner, &task, verified.signer, now_ms()).inspect_err(|e| {
        tracing::info!(code = %e.code, task_id = %task.task_id, issuer = %task.issuer, detail = %e.detail, "task refused");
    })?;

    let _in_flight = state.start_task();
    let proof = execute(inner, &task, &payload).await;
    tracing::info!(
        task_id = %task.task_id, task_type = %task.task_type, issuer = %task.issuer,
        status = proof.status.as_str(), latency_ms = proof.latency_ms, "task executed"
    );
    let proof_bytes = serde_json::to_vec(&proof)
        .map_err(|e| ApiError::new(ProblemCode::Internal, format!("cannot encode proof: {e}")))?;
    let signed = sign_envelope(&inner.setup.key, PROOF_PAYLOAD_TYPE, &proof_bytes);
    let body = serde_json::to_vec(&signed).map_err(|e| {
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

/// Reads at most `limit` bytes of body.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::new(
            ProblemCode::TooLarge,
            format!("request body exceeds this node's limit of {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            ProblemCode::Malformed,
            format!("cannot read request body: {e}"),
        )),
    }
}

/// Every check a verified task must pass before it runs; the last one
/// records its nonce.
fn admit(inner: &Inner, task: &Task, signer: &Peer, now: u64) -> Result<(), ApiError> {
    use ProblemCode::*;
    let refuse = |code, detail: String| Err(ApiError::new(code, detail));
    if task.issuer != signer.lct_id {
        return refuse(
            InvalidSignature,
            format!(
                "task claims issuer {} but is signed by the key of {} ({})",
                task.issuer, signer.name, signer.lct_id
            ),
        );
    }
    if task.audience != inner.setup.lct_id {
        return refuse(
            WrongAudience,
            format!(
                "task is meant for {}, this node is {}",
                task.audience, inner.setup.lct_id
            ),
        );
    }
    if task.task_id.is_empty() || task.task_id.len() > MAX_TASK_ID_LEN {
        return refuse(
            Malformed,
            format!("task_id must be 1 to {MAX_TASK_ID_LEN} bytes"),
        );
    }
    if !NONCE_HEX_LEN.contains(&task.nonce.len())
        || !task.nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return refuse(
            Malformed,
            "nonce must be 16 to 128 hexadecimal characters".into(),
        );
    }
    let limits = &inner.setup.limits;
    let skew = limits.clock_skew.as_millis() as u64;
    if task.expires_at < task.issued_at {
        return refuse(Malformed, "task expires before it is issued".into());
    }
    if task.issued_at > now.saturating_add(skew) {
        return refuse(
            Expired,
            format!(
                "task is issued {:.1} s in the future by this node's clock (allowed skew {} s); check both clocks (NTP)",
                (task.issued_at - now) as f64 / 1000.0,
                limits.clock_skew.as_secs()
            ),
        );
    }
    if task.expires_at.saturating_add(skew) < now {
        return refuse(
            Expired,
            format!(
                "task expired {:.1} s ago (allowed skew {} s)",
                (now - task.expires_at) as f64 / 1000.0,
                limits.clock_skew.as_secs()
            ),
        );
    }
    let lifetime = task.expires_at - task.issued_at;
    if lifetime > limits.max_task_lifetime.as_millis() as u64 {
        return refuse(
            Expired,
            format!(
                "task claims a validity of {} s, more than this node's limit of {} s",
                lifetime / 1000,
                limits.max_task_lifetime.as_secs()
            ),
        );
    }
    if inner.setup.executors.get(&task.task_type).is_none() {
        let served: Vec<&str> = inner
            .setup
            .executors
            .describe()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        return refuse(
            UnsupportedTask,
            format!(
                "no executor for task type {:?}; this node serves: {}",
                task.task_type,
                served.join(", ")
            ),
        );
    }
    match inner.replay.admit(
        &task.issuer,
        &task.nonce,
        task.expires_at.saturating_add(skew),
        now,
    ) {
        Admission::Fresh => Ok(()),
        Admission::Replayed => refuse(
            Replayed,
            format!(
                "nonce {} of {} was already used; sign a new task to run it again",
                task.nonce, task.issuer
            ),
        ),
        Admission::Full => Err(ApiError::new(
            Busy,
            "replay guard is full; retry shortly".to_owned(),
        )
        .retry_after(5)),
    }
}

/// Runs the task and describes the run as a proof; a failure is a proof too.
async fn execute(inner: &Inner, task: &Task, payload: &[u8]) -> Proof {
    let started_at = now_ms();
    let clock = std::time::Instant::now();
    let outcome = match inner.setup.executors.get(&task.task_type) {
        Some(executor) => executor.execute(task).await,
        None => Err(crate::executor::ExecError("executor vanished".into())),
    };
    let latency_ms = clock.elapsed().as_secs_f64() * 1000.0;
    let (status, run) = match outcome {
        Ok(run) => (ProofStatus::Succeeded, run),
        Err(e) => (
            ProofStatus::Failed,
            Execution {
                result: serde_json::json!({ "error": e.to_string() }),
                actual_cost: 0.0,
                quality: 0.0,
                convergence: 0.0,
                iterations: 0,
            },
        ),
    };
    Proof {
        executor: inner.setup.lct_id.clone(),
        issuer: task.issuer.clone(),
        task_id: task.task_id.clone(),
        task_digest: sha256_tagged(payload),
        status,
        result_digest: json_digest(&run.result),
        result: run.result,
        started_at,
        finished_at: started_at + (latency_ms as u64),
        latency_ms,
        actual_cost: run.actual_cost,
        quality: run.quality,
        convergence: run.convergence,
        iterations: run.iterations,
    }
}
