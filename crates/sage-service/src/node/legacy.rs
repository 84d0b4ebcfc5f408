//! `POST /execute_task`: the Python original's endpoint, with the checks it
//! lacks.
//!
//! Like the original, the signable task is rebuilt from the received JSON
//! and its canonical form verified against the requester's known key. On
//! top of the original, a task is refused when its signed `deadline` has
//! passed or lies further ahead than the node's task lifetime, when
//! `delegating_platform` is not the requester, or when its `task_id` already
//! ran for that requester with other content. The same signed task sent
//! again gets the stored proof back and does not run twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use sage_crypto::digest::sha256;
use sage_crypto::legacy::{sign_legacy, signing_bytes, verify_legacy};
use sage_types::legacy::{read_request, LegacyResponse, LegacyTask};
use sage_types::{ProblemCode, QualityRequirements, Task};
use serde_json::json;

use super::admission::{
    busy, check_body, check_cost, check_not_expired, check_rate, executor_for, refund_rate,
    TaskBody,
};
use super::once::{json_response, run_once, Once};
use super::state::{Inner, Policy};
use super::{ApiError, AppState};
use sage_exec::{Entry, Reservation, Run};
use sage_store::TaskRecord;
use sage_types::clock::{now_ms, now_secs_f64};
use sage_types::untrusted::Untrusted;

pub(super) async fn execute_task(
    State(state): State<AppState>,
    TaskBody { policy, bytes }: TaskBody,
) -> Result<Response, ApiError> {
    let inner = state.inner();
    // Read as the original reads it (Python's `json.loads`), so that the
    // bytes verified are `json.dumps` of the values the executor gets.
    let request = read_request(&bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::Malformed,
            format!("body is not a legacy task request: {e}"),
        )
    })?;
    let requester = &request.requester_lct_id;
    let peer = policy.trust.by_lct(requester).ok_or_else(|| {
        ApiError::new(
            ProblemCode::UnknownPlatform,
            format!("Unknown platform: {}", Untrusted(requester)),
        )
    })?;
    let canonical = request.signable.canonical().into_bytes();
    let verifying = Instant::now();
    verify_legacy(&peer.public_key, &canonical, &request.signature)
        .map_err(|_| ApiError::new(ProblemCode::InvalidSignature, "Invalid signature"))?;
    inner.metrics.verified(verifying.elapsed());
    let task = LegacyTask::from_signable(&request.signable)
        .map_err(|e| ApiError::new(ProblemCode::Malformed, format!("signed task: {e}")))?;

    let now = now_ms();
    let (entry, reservation) = admit(&policy, &task, requester, now, bytes.len())
        .map_err(|e| refused(&task, requester, &peer.name, e))?;
    // After the stateless checks; a replay gets its token back below.
    check_rate(inner, &policy.limits, peer)
        .map_err(|e| refused(&task, requester, &peer.name, e))?;
    // No nonce in this protocol: a task is its id *and* its signed bytes,
    // so the same bytes again get the stored answer and the same id with
    // other content (the original's clients reuse ids) is another task.
    let content_digest = sha256(&canonical);
    let record = TaskRecord {
        issuer: requester.clone(),
        task_id: format!("{}#{}", task.task_id, hex::encode(content_digest)),
        nonce: None,
        content_digest,
        envelope: bytes.to_vec(),
        task_type: task.task_type.clone(),
        received_at_ms: now,
        keep_until_ms: seconds_to_ms(task.deadline)
            .saturating_add(policy.limits.clock_skew.as_millis() as u64),
    };
    let wait = Duration::from_millis(seconds_to_ms(task.deadline).saturating_sub(now));
    let task = Arc::new(task);
    let (native, proved) = (as_native(inner, &task, requester), task.clone());
    let overlap = entry.pure();
    let entry = entry.clone();
    let node = state.clone();
    let once = run_once(
        &state,
        record,
        &peer.name,
        (wait, overlap),
        move || async move {
            let run = entry.run(&native, reservation).await;
            tracing::info!(
                task_id = %Untrusted(&native.task_id), task_type = %Untrusted(&native.task_type), issuer = %Untrusted(&native.issuer),
                status = run.status.as_str(), latency_ms = run.latency.as_secs_f64() * 1000.0,
                "legacy task executed"
            );
            run
        },
        move |run| Ok(answer(node.inner(), &proved, run)?.to_vec()),
    )
    .await?;
    match once {
        Once::Answer(answer) => Ok(json_response(answer)),
        Once::Replayed | Once::Conflict => {
            refund_rate(inner, &policy.limits, peer);
            let e = ApiError::new(
                ProblemCode::Replayed,
                format!(
                    "task_id {} already ran for {} with different content; use a new task id",
                    Untrusted(&task.task_id),
                    Untrusted(requester)
                ),
            );
            Err(refused(&task, requester, &peer.name, e))
        }
    }
}

/// A refusal of `task` from `requester`, verified as `peer`: named for the
/// refusal log (see `observe`), and logged with the task's fields at debug.
fn refused(task: &LegacyTask, requester: &str, peer: &str, e: ApiError) -> ApiError {
    tracing::debug!(code = %e.code, task_id = %Untrusted(&task.task_id), issuer = %Untrusted(requester), detail = %Untrusted(&e.detail), "legacy task refused");
    e.from_peer(peer)
}

/// The checks the Python original lacks. Returns the executor's entry and
/// the place reserved in its queue.
fn admit<'a>(
    policy: &'a Policy,
    task: &LegacyTask,
    requester: &str,
    now: u64,
    body_len: usize,
) -> Result<(&'a Entry, Reservation), ApiError> {
    if task.delegating_platform != requester {
        return Err(ApiError::new(
            ProblemCode::InvalidSignature,
            format!(
                "task is delegated by {} but sent by {requester}",
                task.delegating_platform
            ),
        ));
    }
    let limits = &policy.limits;
    let deadline = seconds_to_ms(task.deadline);
    check_not_expired(limits, deadline, now)?;
    let horizon = now + (limits.max_task_lifetime + limits.clock_skew).as_millis() as u64;
    if deadline > horizon {
        return Err(ApiError::new(
            ProblemCode::Expired,
            format!(
                "task deadline is {:.0} s ahead, more than this node's limit of {} s",
                (deadline - now) as f64 / 1000.0,
                limits.max_task_lifetime.as_secs()
            ),
        ));
    }
    let entry = executor_for(policy, &task.task_type)?;
    check_body(entry, limits, &task.task_type, body_len)?;
    check_cost(entry, task.estimated_cost, None)?;
    let reservation = entry.reserve().ok_or_else(|| busy(&task.task_type))?;
    Ok((entry, reservation))
}

fn seconds_to_ms(secs: f64) -> u64 {
    // Negative and NaN deadlines become 0: long expired.
    (secs * 1000.0).max(0.0) as u64
}

/// The task as the executors see it.
fn as_native(inner: &Inner, task: &LegacyTask, requester: &str) -> Task {
    Task {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        issuer: requester.to_owned(),
        audience: inner.lct_id.clone(),
        issued_at: now_ms(),
        expires_at: seconds_to_ms(task.deadline),
        nonce: String::new(),
        input: task.task_data.clone(),
        estimated_cost: task.estimated_cost,
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
        quality: QualityRequirements {
            min_quality: task.quality_requirements.min_quality,
            min_convergence: task.quality_requirements.min_convergence,
        },
    }
}

/// The signed answer: the proof as the Python original shapes it.
fn answer(inner: &Inner, task: &LegacyTask, run: Run) -> Result<Bytes, ApiError> {
    let e = &run.execution;
    let result = match run.status {
        sage_types::ProofStatus::Succeeded => e.result.clone(),
        sage_types::ProofStatus::Failed => {
            let mut failed = json!({ "status": "failed" });
            failed["error"] = e.result["error"].clone();
            failed
        }
    };
    // The result is moved in, not passed to `json!`: that would serialize
    // it again, and serde_json refuses to rebuild the `NaN` a legacy input
    // may have brought (see `PyValue::to_json`).
    let mut proof = json!({
        "task_id": task.task_id,
        "executing_platform": inner.name,
        "actual_latency": run.latency.as_secs_f64(),
        "actual_cost": e.actual_cost,
        "irp_iterations": e.iterations,
        "final_energy": e.energy,
        "convergence_quality": e.convergence,
        "quality_score": e.quality,
        "execution_timestamp": run.started_at as f64 / 1000.0 + run.latency.as_secs_f64(),
    });
    proof["result_data"] = result;
    let signature = sign_legacy(&inner.key, &signing_bytes(&proof));
    let response = LegacyResponse {
        proof,
        signature,
        timestamp: Some(now_secs_f64()),
    };
    serde_json::to_vec(&response).map(Bytes::from).map_err(|e| {
        ApiError::new(
            ProblemCode::Internal,
            format!("cannot encode legacy proof: {e}"),
        )
    })
}
