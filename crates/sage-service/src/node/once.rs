//! At most once: what a task's record in the store makes of a request for
//! it. Both protocols come here once they have verified and admitted the
//! task; they differ only in how a run is started and signed.
//!
//! The node owns a recorded task, not the request that brought it: the
//! record is made and the task run on a task of the node's own
//! ([`Running`](super::running::Running)), which the request only waits
//! for. A dropped connection or a client that gives up changes nothing:
//! the run goes to its end, its proof is stored, and a retry gets it.

use std::future::Future;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::admission::{for_operator, store_error};
use super::{ApiError, AppState};
use sage_exec::Run;
use sage_store::{Begin, Ended, StoreError, Synced, TaskRecord};
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;
use sage_types::ProblemCode;

/// What a retry whose wait for the first run ran out is told to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// What [`run_once`] came to.
pub(super) enum Once {
    /// The signed answer: of this run, the stored one of an earlier run, or
    /// one that says the task was interrupted.
    Answer(Vec<u8>),
    /// This envelope was seen before: its nonce is remembered.
    Replayed,
    /// The issuer used this task id before for other content.
    Conflict,
}

/// Records the task of `record` before it runs, then:
///
/// - new: runs it (`run`), signs the outcome (`prove`) and stores the
///   answer before returning it; all of this on a task of the node's, so
///   that it goes to its end whatever happens to this request;
/// - finished before: the stored answer, without a run;
/// - running: waits, at most `wait` (what is left of this request's own
///   validity), for that run's answer;
/// - interrupted: a signed answer saying so (`prove`), stored for later
///   retries.
///
/// `run` owns the executor's reservation: a request that does not run the
/// task gives its place back. `peer` names the issuer in the metrics.
/// With `overlap` (the executor is pure: a second run is harmless), the
/// record's sync to the disk runs while the task runs and is proved, and
/// the answer waits for it; otherwise the task runs once its record is on
/// the disk.
pub(super) async fn run_once<R, F, P>(
    state: &AppState,
    record: TaskRecord,
    peer: &str,
    (wait, overlap): (Duration, bool),
    run: R,
    prove: P,
) -> Result<Once, ApiError>
where
    R: FnOnce() -> F + Send + 'static,
    F: Future<Output = Run> + Send + 'static,
    P: Fn(Run) -> Result<Vec<u8>, ApiError> + Send + Sync + 'static,
{
    let inner = state.inner();
    let (issuer, task_id) = (record.issuer.clone(), record.task_id.clone());
    let task_type = record.task_type.clone();
    let prove = std::sync::Arc::new(prove);
    let detached = inner.running.spawn(record_and_run(
        state.clone(),
        record,
        (peer.to_owned(), overlap),
        run,
        prove.clone(),
    ));
    let begun = detached.await.map_err(|e| {
        // Panicked, or aborted by a stop past its drain deadline; either way
        // the record is no longer `running` (see `record_and_run`).
        ApiError::new(
            ProblemCode::Internal,
            format!("the run of task {task_id:?} of {issuer:?} ended without a proof: {e}"),
        )
    })??;
    let count = |outcome| inner.metrics.task(peer, &task_type, outcome, None);
    let answer = match begun {
        Begun::Ran(signed) => signed,
        Begun::Recorded(Begin::Done { proof }) => {
            tracing::info!(task_id = %Untrusted(&task_id), issuer = %Untrusted(&issuer), "retry answered with the stored proof");
            count("stored");
            proof
        }
        Begun::Recorded(Begin::Running) => {
            match inner
                .store
                .wait_done(&issuer, &task_id, wait)
                .await
                .map_err(store_error)?
            {
                Some(Ended::Proof(proof)) => {
                    count("stored");
                    proof
                }
                Some(Ended::Interrupted) => {
                    prove_interrupted(state, (&issuer, &task_id), (peer, &task_type), &*prove)
                        .await?
                }
                None => return Err(still_running(&task_id)),
            }
        }
        Begun::Recorded(Begin::Interrupted) => {
            prove_interrupted(state, (&issuer, &task_id), (peer, &task_type), &*prove).await?
        }
        Begun::Recorded(Begin::Replayed) => return Ok(Once::Replayed),
        Begun::Recorded(Begin::Conflict) => return Ok(Once::Conflict),
        Begun::Recorded(Begin::Started) => {
            unreachable!("a started task is run by record_and_run")
        }
    };
    Ok(Once::Answer(answer))
}

/// What the node's own task made of a request.
enum Begun {
    /// The task was new: this run's signed answer, stored.
    Ran(Vec<u8>),
    /// The task was recorded before: what its record says.
    Recorded(Begin),
}

/// The part of [`run_once`] that no request may cancel: once the record is
/// asked for, a new task is run, proved and its proof stored.
async fn record_and_run<R, F, P>(
    state: AppState,
    record: TaskRecord,
    (peer, overlap): (String, bool),
    run: R,
    prove: std::sync::Arc<P>,
) -> Result<Begun, ApiError>
where
    R: FnOnce() -> F,
    F: Future<Output = Run>,
    P: Fn(Run) -> Result<Vec<u8>, ApiError>,
{
    let inner = state.inner();
    let (issuer, task_id, task_type) = (
        record.issuer.clone(),
        record.task_id.clone(),
        record.task_type.clone(),
    );
    let (begun, synced) = if overlap {
        inner.store.begin_task_overlapped(record).await
    } else {
        inner
            .store
            .begin_task(record)
            .await
            .map(|b| (b, Synced::done()))
    }
    .map_err(store_error)?;
    match begun {
        Begin::Started => {}
        other => {
            // A retry's nonce may have been recorded: on the disk before
            // anything is answered.
            synced.wait().await.map_err(store_error)?;
            return Ok(Begun::Recorded(other));
        }
    }
    // From here the record says `running`: whatever ends this task before
    // its proof is stored (a panic, an abort at a stop) makes it
    // interrupted instead, so no live node holds a run that is over.
    let mut unfinished = Unfinished {
        state: state.clone(),
        issuer: issuer.clone(),
        task_id: task_id.clone(),
        armed: true,
    };
    let run = run().await;
    let (outcome, ran) = (run.status.as_str(), run.latency);
    if let Some(kind) = run.failure {
        inner.metrics.execution_failed(&task_type, kind);
    }
    let signed = prove(run)?;
    inner.metrics.task(&peer, &task_type, outcome, Some(ran));
    inner
        .store
        .finish_task(&issuer, &task_id, signed.clone(), now_ms())
        .await
        .map_err(store_error)?;
    unfinished.armed = false;
    // The proof is released only once the record of the run is durable: a
    // power cut before that forgets a task nobody was told of.
    synced.wait().await.map_err(store_error)?;
    Ok(Begun::Ran(signed))
}

/// Marks its task interrupted when dropped armed: the run ended without a
/// stored proof. Disarmed (not forgotten, which would leak the state and
/// keep the database open) once the proof is stored.
struct Unfinished {
    state: AppState,
    issuer: String,
    task_id: String,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the runtime is gone: the next start marks it
        };
        let store = self.state.inner().store.clone();
        let (issuer, task_id) = (
            std::mem::take(&mut self.issuer),
            std::mem::take(&mut self.task_id),
        );
        runtime.spawn(async move {
            match store.interrupt_task(&issuer, &task_id, now_ms()).await {
                Ok(_) => tracing::warn!(task_id = %Untrusted(&task_id), issuer = %Untrusted(&issuer), "a run ended without a stored proof: the task is marked interrupted"),
                Err(e) => tracing::error!(task_id = %Untrusted(&task_id), issuer = %Untrusted(&issuer), "a run ended without a stored proof and cannot be marked interrupted: {}", for_operator(&e)),
            }
        });
    }
}

/// The signed answer of an interrupted task: made once, stored, and the
/// stored one for every later retry.
async fn prove_interrupted<P>(
    state: &AppState,
    (issuer, task_id): (&str, &str),
    (peer, task_type): (&str, &str),
    prove: &P,
) -> Result<Vec<u8>, ApiError>
where
    P: Fn(Run) -> Result<Vec<u8>, ApiError>,
{
    let store = &state.inner().store;
    let signed = prove(Run::interrupted(now_ms()))?;
    match store
        .set_proof_of_interrupted(issuer, task_id, signed.clone())
        .await
    {
        Ok(()) => {}
        // A concurrent retry stored its own first: that one is the answer.
        Err(StoreError::WrongState { .. }) => {
            if let Some(Ended::Proof(stored)) = store
                .wait_done(issuer, task_id, Duration::ZERO)
                .await
                .map_err(store_error)?
            {
                return Ok(stored);
            }
        }
        Err(e) => return Err(store_error(e)),
    }
    state
        .inner()
        .metrics
        .task(peer, task_type, "interrupted", None);
    tracing::warn!(task_id = %Untrusted(task_id), issuer = %Untrusted(issuer), "retry of an interrupted task: answered with a signed proof saying so");
    Ok(signed)
}

/// A `200` with a JSON body.
pub(super) fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A retry whose validity ended while the first run of its task went on.
pub(super) fn still_running(task_id: &str) -> ApiError {
    ApiError::new(
        ProblemCode::Busy,
        format!(
            "task {} is still running from an earlier request; retry later for its proof",
            Untrusted(task_id)
        ),
    )
    .retry_after(RETRY_AFTER_SECS)
}
