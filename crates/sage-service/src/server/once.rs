//! At most once: what a task's record in the store makes of a request for
//! it. Both protocols come here once they have verified and admitted the
//! task; they differ only in how a run is started and signed.

use std::future::Future;

use super::tasks::{still_running, store_error, RETRY_WAIT};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::executor::Run;
use crate::store::{Begin, TaskRecord};

/// What [`run_once`] came to.
pub(super) enum Once {
    /// The signed answer: of this run, the stored one of an earlier run, or
    /// one that says the task was interrupted by a restart.
    Answer(Vec<u8>),
    /// This envelope was seen before: its nonce is remembered.
    Replayed,
    /// The issuer used this task id before for other content.
    Conflict,
}

/// Records the task of `record` before it runs, then:
///
/// - new: runs it (`run`), signs the outcome (`prove`) and stores the
///   answer before returning it;
/// - finished before: the stored answer, without a run;
/// - running: waits (at most [`RETRY_WAIT`]) for that run's answer;
/// - interrupted by a restart: a signed answer saying so (`prove`), stored
///   for later retries.
///
/// `run` owns the executor's reservation: a request that does not run the
/// task gives its place back. `peer` names the issuer in the metrics.
pub(super) async fn run_once<R, F, P>(
    state: &AppState,
    record: TaskRecord,
    peer: &str,
    run: R,
    prove: P,
) -> Result<Once, ApiError>
where
    R: FnOnce() -> F,
    F: Future<Output = Run>,
    P: FnOnce(Run) -> Result<Vec<u8>, ApiError>,
{
    let inner = state.inner();
    let (issuer, task_id) = (record.issuer.clone(), record.task_id.clone());
    let task_type = record.task_type.clone();
    let count = |outcome, ran| inner.metrics.task(peer, &task_type, outcome, ran);
    let answer = match inner.store.begin_task(record).await.map_err(store_error)? {
        Begin::Started => {
            let _in_flight = state.start_task();
            let run = run().await;
            let (outcome, ran) = (run.status.as_str(), run.latency);
            let signed = prove(run)?;
            count(outcome, Some(ran));
            inner
                .store
                .finish_task(&issuer, &task_id, signed.clone(), now_ms())
                .await
                .map_err(store_error)?;
            signed
        }
        Begin::Done { proof } => {
            tracing::info!(%task_id, %issuer, "retry answered with the stored proof");
            count("stored", None);
            proof
        }
        Begin::Running => {
            drop(run);
            let proof = inner
                .store
                .wait_done(&issuer, &task_id, RETRY_WAIT)
                .await
                .map_err(store_error)?
                .ok_or_else(|| still_running(&task_id))?;
            count("stored", None);
            proof
        }
        Begin::Interrupted => {
            let signed = prove(Run::interrupted(now_ms()))?;
            count("interrupted", None);
            inner
                .store
                .set_proof_of_interrupted(&issuer, &task_id, signed.clone())
                .await
                .map_err(store_error)?;
            tracing::warn!(%task_id, %issuer, "retry of a task interrupted by a restart: answered with a signed proof saying so");
            signed
        }
        Begin::Replayed => return Ok(Once::Replayed),
        Begin::Conflict => return Ok(Once::Conflict),
    };
    Ok(Once::Answer(answer))
}
