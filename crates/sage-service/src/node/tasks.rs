//! `POST /v1/tasks`: verify, admit, record, execute, prove.
//!
//! The order is the security argument: the body is bounded before it is
//! read, the envelope's signature is verified before the payload is parsed,
//! and every check that can refuse runs before the task and its nonce are
//! recorded in the store and before anything executes. The record is
//! durable before the run starts, so a restart neither forgets an accepted
//! task nor runs it twice, and a replayed envelope is refused after a
//! restart too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use sage_crypto::digest::{json_digest, sha256_tagged, StreamDigest};
use sage_crypto::{
    sign_envelope, verify_envelope, verify_envelope_with, Peer, Verified, VerifyError,
};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::task::{MAX_ORIGIN_LEN, TASK_PAYLOAD_TYPE};
use sage_types::{Envelope, ProblemCode, Proof, Task};

use super::admission::{
    busy, check_body, check_cost, check_not_expired, check_rate, executor_for, refund_rate,
    TaskBody,
};
use super::once::{json_response, run_once, Once};
use super::state::{Inner, Policy};
use super::stream;
use super::{ApiError, AppState};
use sage_exec::{Entry, Reservation, Run};
use sage_store::TaskRecord;
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;

/// Longest task id accepted.
const MAX_TASK_ID_LEN: usize = 128;
/// Nonce length bounds, in hex characters (64 to 512 bits).
const NONCE_HEX_LEN: std::ops::RangeInclusive<usize> = 16..=128;

pub(super) async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    TaskBody { policy, bytes }: TaskBody,
) -> Result<Response, ApiError> {
    let inner = state.inner();
    let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::Malformed,
            format!("body is not a task envelope: {e}"),
        )
    })?;
    let verifying = Instant::now();
    let verified = verify_signed(inner, &policy, &envelope, TASK_PAYLOAD_TYPE)?;
    inner.metrics.verified(verifying.elapsed());
    let payload = verified.payload;
    let task: Task = serde_json::from_slice(&payload).map_err(|e| {
        ApiError::new(
            ProblemCode::Malformed,
            format!("signed payload is not a v1 task: {e}"),
        )
    })?;
    let now = now_ms();
    let peer = verified.signer.name.as_str();
    let (entry, reservation) = admit(inner, &policy, &task, verified.signer, now, bytes.len())
        .map_err(|e| refused(&task, peer, e))?;
    let keep_until_ms = task
        .expires_at
        .saturating_add(policy.limits.clock_skew.as_millis() as u64);
    if !task.blobs.is_empty() {
        inner
            .blobs()
            .and_then(|blobs| blobs.hold(&task.blobs, keep_until_ms))
            .map_err(|e| refused(&task, peer, e))?;
    }
    // After the checks that need no state, so that an expired copy of an
    // envelope costs its signer nothing; a replay gets its token back below.
    check_rate(inner, &policy.limits, verified.signer).map_err(|e| refused(&task, peer, e))?;

    let record = TaskRecord {
        issuer: task.issuer.clone(),
        task_id: task.task_id.clone(),
        nonce: Some(task.nonce.clone()),
        content_digest: content_digest(&task)?,
        envelope: bytes.to_vec(),
        task_type: task.task_type.clone(),
        received_at_ms: now,
        keep_until_ms,
    };
    // A retry may wait for a run in progress as long as it is itself valid.
    let wait = Duration::from_millis(task.expires_at.saturating_sub(now));
    let task = Arc::new(task);
    let kind = entry.executor.kind();
    let (sink, pieces) = stream::channel(&headers, entry.executor.streams()).unzip();
    // A streamed run shows its output before the proof: it waits for the
    // record on the disk, whatever the executor.
    let overlap = entry.pure() && sink.is_none();
    let (entry, running, proved) = (entry.clone(), task.clone(), task.clone());
    let (node, by) = (state.clone(), peer.to_owned());
    // Owned, so that a streaming answer can outlive this function.
    let once = async move {
        run_once(
            &node.clone(),
            record,
            &by,
            (wait, overlap),
            move || async move { entry.run_streaming(&running, reservation, sink).await },
            move |run| sign_proof(node.inner(), &proved, &payload, kind, run),
        )
        .await
    };
    let once = match pieces {
        None => once.await,
        Some(pieces) => match stream::answer(tokio::spawn(once), pieces).await {
            stream::Raced::Ended(once) => once,
            stream::Raced::Streaming(response) => return Ok(response),
        },
    };
    let e = match once {
        Ok(Once::Answer(answer)) => return Ok(json_response(answer)),
        Ok(Once::Replayed) => {
            refund_rate(inner, &policy.limits, verified.signer);
            ApiError::new(
                ProblemCode::Replayed,
                format!(
                    "nonce {} of {} was already used; sign a new task to run it again",
                    Untrusted(&task.nonce),
                    Untrusted(&task.issuer)
                ),
            )
        }
        Ok(Once::Conflict) => {
            refund_rate(inner, &policy.limits, verified.signer);
            ApiError::new(
                ProblemCode::Replayed,
                format!("task id {} was already used by {} for a task with other content; use a new task id", Untrusted(&task.task_id), Untrusted(&task.issuer)),
            )
        }
        Err(e) => e,
    };
    Err(refused(&task, peer, e))
}

/// Verifies `envelope` of `payload_type` against the trust store, or
/// against this node's own key when the signature names it (the key is
/// selected by the key id in the signature, as for peers).
pub(super) fn verify_signed<'a>(
    inner: &'a Inner,
    policy: &'a Policy,
    envelope: &Envelope,
    payload_type: &str,
) -> Result<Verified<&'a Peer>, ApiError> {
    match verify_envelope(envelope, payload_type, &policy.trust) {
        Err(VerifyError::UnknownKey { .. })
            if envelope
                .signatures
                .iter()
                .any(|s| s.keyid == inner.key_id.as_str()) =>
        {
            let own = verify_envelope_with(envelope, payload_type, &inner.own.public_key)?;
            Ok(Verified {
                payload: own.payload,
                signer: &inner.own,
            })
        }
        other => Ok(other?),
    }
}

/// A refusal of `task` from the verified `peer`: named for the refusal
/// log (see `observe`), and logged with the task's fields at debug.
fn refused(task: &Task, peer: &str, e: ApiError) -> ApiError {
    tracing::debug!(code = %e.code, task_id = %Untrusted(&task.task_id), issuer = %Untrusted(&task.issuer), detail = %Untrusted(&e.detail), "task refused");
    e.from_peer(peer)
}

/// The digest of what a task asks for, without its nonce and times: a
/// retry re-signed with a new nonce is the same task, another input is not.
///
/// The JSON array `[task_type, audience, input, estimated_cost,
/// min_quality, min_convergence, max_cost]`, with the blobs appended when
/// there are any (so that the records of tasks without any keep the
/// digests they were stored with), serialized straight into the hash: the
/// input is neither copied nor held as bytes.
fn content_digest(task: &Task) -> Result<[u8; 32], ApiError> {
    let parts = (
        &task.task_type,
        &task.audience,
        &task.input,
        task.estimated_cost,
        task.quality.min_quality,
        task.quality.min_convergence,
        task.max_cost,
    );
    let mut digest = StreamDigest::default();
    let written = if task.blobs.is_empty() {
        serde_json::to_writer(&mut digest, &parts)
    } else {
        // As a JSON value, whose object keys are sorted: the digests of
        // stored records were made so.
        serde_json::to_value(&task.blobs).and_then(|blobs| {
            let (a, b, c, d, e, f, g) = parts;
            serde_json::to_writer(&mut digest, &(a, b, c, d, e, f, g, blobs))
        })
    };
    written.map_err(|e| {
        ApiError::new(
            ProblemCode::Internal,
            format!("cannot encode the task's content: {e}"),
        )
    })?;
    Ok(digest.finish())
}

/// Signs the v1 proof of `run` and encodes the envelope.
fn sign_proof(
    inner: &Inner,
    task: &Task,
    payload: &[u8],
    kind: &str,
    run: Run,
) -> Result<Vec<u8>, ApiError> {
    let proof = prove(inner, task, payload, kind, run);
    tracing::info!(
        task_id = %Untrusted(&task.task_id), task_type = %Untrusted(&task.task_type), issuer = %Untrusted(&task.issuer),
        status = proof.status.as_str(), latency_ms = proof.latency_ms, "task executed"
    );
    let internal = |e: serde_json::Error| {
        ApiError::new(ProblemCode::Internal, format!("cannot encode proof: {e}"))
    };
    let proof_bytes = serde_json::to_vec(&proof).map_err(internal)?;
    let signed = sign_envelope(&inner.key, PROOF_PAYLOAD_TYPE, &proof_bytes);
    serde_json::to_vec(&signed).map_err(internal)
}

/// Every check a verified task must pass before it is recorded. Returns
/// the executor's entry and the place reserved in its queue.
fn admit<'a>(
    inner: &Inner,
    policy: &'a Policy,
    task: &Task,
    signer: &Peer,
    now: u64,
    body_len: usize,
) -> Result<(&'a Entry, Reservation), ApiError> {
    use ProblemCode::*;
    let refuse = |code, detail: String| Err(ApiError::new(code, detail));
    if task.issuer != signer.lct_id {
        return refuse(
            InvalidSignature,
            format!(
                "task claims issuer {} but is signed by the key of {} ({})",
                Untrusted(&task.issuer),
                signer.name,
                signer.lct_id
            ),
        );
    }
    if task.audience != inner.lct_id {
        return refuse(
            WrongAudience,
            format!(
                "task is meant for {}, this node is {}",
                Untrusted(&task.audience),
                inner.lct_id
            ),
        );
    }
    if task.task_id.is_empty() || task.task_id.len() > MAX_TASK_ID_LEN {
        return refuse(
            Malformed,
            format!("task_id must be 1 to {MAX_TASK_ID_LEN} bytes"),
        );
    }
    if task.task_id.chars().any(char::is_control) {
        return refuse(
            Malformed,
            "task_id must not contain control characters".into(),
        );
    }
    if let Some(origin) = &task.origin {
        if origin.len() > MAX_ORIGIN_LEN || origin.chars().any(char::is_control) {
            return refuse(
                Malformed,
                format!("origin must be at most {MAX_ORIGIN_LEN} bytes without control characters"),
            );
        }
    }
    if !NONCE_HEX_LEN.contains(&task.nonce.len())
        || !task.nonce.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return refuse(
            Malformed,
            "nonce must be 16 to 128 hexadecimal characters".into(),
        );
    }
    let limits = &policy.limits;
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
    check_not_expired(limits, task.expires_at, now)?;
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
    let entry = executor_for(policy, &task.task_type)?;
    check_body(entry, limits, &task.task_type, body_len)?;
    check_cost(entry, task.estimated_cost, task.max_cost)?;
    // A place in the executor's queue before the task is recorded: a
    // `busy` refusal leaves the signed task valid for a retry.
    let reservation = entry.reserve().ok_or_else(|| busy(&task.task_type))?;
    Ok((entry, reservation))
}

/// The v1 proof of `run`.
fn prove(inner: &Inner, task: &Task, payload: &[u8], entry_kind: &str, run: Run) -> Proof {
    let latency_ms = run.latency.as_secs_f64() * 1000.0;
    Proof {
        executor: inner.lct_id.clone(),
        issuer: task.issuer.clone(),
        task_id: task.task_id.clone(),
        task_digest: sha256_tagged(payload),
        status: run.status,
        executor_kind: entry_kind.to_owned(),
        exit_status: run.execution.exit_status,
        result_digest: json_digest(&run.execution.result),
        result: run.execution.result,
        started_at: run.started_at,
        finished_at: run.started_at + run.latency.as_millis() as u64,
        latency_ms,
        actual_cost: run.execution.actual_cost,
        quality: run.execution.quality,
        convergence: run.execution.convergence,
        iterations: run.execution.iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sage_crypto::digest::sha256;
    use sage_types::BlobRef;

    /// The digest as the stored records were made: the parts as one JSON
    /// value, then its bytes.
    fn as_stored(task: &Task) -> [u8; 32] {
        let mut content = serde_json::json!([
            task.task_type,
            task.audience,
            task.input,
            task.estimated_cost,
            task.quality.min_quality,
            task.quality.min_convergence,
            task.max_cost,
        ]);
        if let (false, Some(parts)) = (task.blobs.is_empty(), content.as_array_mut()) {
            parts.push(serde_json::json!(task.blobs));
        }
        sha256(&serde_json::to_vec(&content).unwrap())
    }

    #[test]
    fn the_content_digest_is_the_one_records_were_stored_with() {
        let mut task = sage_types::testing::typical_task();
        task.max_cost = Some(2.5);
        assert_eq!(content_digest(&task).unwrap(), as_stored(&task));
        task.max_cost = None;
        task.input = serde_json::json!({"z": [1, 2.5e300, "\u{7}é"], "a": null});
        assert_eq!(content_digest(&task).unwrap(), as_stored(&task));
        task.blobs = vec![BlobRef {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 7,
        }];
        assert_eq!(content_digest(&task).unwrap(), as_stored(&task));
        let other = Task {
            input: serde_json::json!({"z": 1}),
            ..task.clone()
        };
        assert_ne!(
            content_digest(&other).unwrap(),
            content_digest(&task).unwrap()
        );
    }
}
