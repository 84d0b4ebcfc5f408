//! One attempt of a delegation, in the ledger from start to end: a failure
//! before the task is sent is recorded as such, a task is recorded
//! (`sent`) before it leaves, and its row is closed with what came back.
//! `sage delegate --target` makes one attempt; a routed delegation makes
//! one per peer tried, all under the same task id. The task's blobs go to
//! each attempt's peer after its health check, before the task.

use std::time::{Duration, Instant};

use sage_crypto::{Peer, Protocol};

use crate::keydir::Identity;
use sage_store::{Store, StoreError};

use super::client::Client;
use super::delegation::{check_target, conclude, Delegation, Outgoing, TaskSpec};
use super::ledger::{self, payload_digest};
use super::stream::{check_streamed, ChunkSink};
use super::upload;
use crate::DelegateError;

/// How an attempt ended without a kept, verified proof.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The health check before sending failed: nothing was sent.
    #[error(transparent)]
    NotSent(DelegateError),
    /// The task could not be recorded, so it was not sent.
    #[error("the task was not sent: it cannot be recorded in the ledger: {0}")]
    NotRecorded(#[source] StoreError),
    /// The task was sent and the delegation failed: refused, lost on the
    /// way, or answered with a proof that is not acceptable.
    #[error(transparent)]
    Sent(DelegateError),
    /// The proof verified but the ledger refused it.
    #[error("the proof verified but cannot be kept: {0}")]
    NotKept(#[source] StoreError),
}

impl AttemptError {
    /// The delegation's own error, if the attempt got as far as one.
    pub fn delegate_error(&self) -> Option<&DelegateError> {
        match self {
            AttemptError::NotSent(e) | AttemptError::Sent(e) => Some(e),
            AttemptError::NotRecorded(_) | AttemptError::NotKept(_) => None,
        }
    }

    /// The stable code: its delegation error's, or `store` when the
    /// ledger failed it.
    pub fn code(&self) -> &'static str {
        self.delegate_error().map_or("store", DelegateError::code)
    }
}

/// One attempt: where, how, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The client for the target (its TLS settings).
    pub client: &'a Client,
    /// The delegator's ledger.
    pub store: &'a Store,
    /// Who signs.
    pub local: &'a Identity,
    /// Who runs it.
    pub target: &'a Peer,
    /// Where the target is reached.
    pub addr: &'a str,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The task; its `task_id` must be set, so that every attempt of one
    /// delegation shares it.
    pub spec: &'a TaskSpec,
    /// How long it may take, the health check included.
    pub timeout: Duration,
    /// The result a check task must get, if this is one: a verified proof
    /// with another result is [`DelegateError::WrongAnswer`].
    pub expect: Option<&'a serde_json::Value>,
}

impl Attempt<'_> {
    /// Checks the target, signs the task, records it, sends it, verifies
    /// the proof and records the outcome.
    ///
    /// A retry of a task id this ledger already sent to the target carries
    /// the digests of those sends: the node may answer with the proof of
    /// the first run, which names that payload, and the receipt keeps that
    /// send beside it.
    ///
    /// # Errors
    /// [`AttemptError`], saying how far it got.
    pub async fn run(self) -> Result<Delegation, AttemptError> {
        self.run_with(None).await
    }

    /// [`Attempt::run`] asking for a streaming answer: each piece of the
    /// output is handed to `sink` as it arrives, unverified until this
    /// returns (see [`super::stream`]). The delegation verifies only if
    /// the proof does and what was streamed is what it signs; otherwise
    /// the ledger records the attempt failed (`stream_cut`,
    /// `stream_mismatch`) and keeps no receipt.
    ///
    /// # Errors
    /// As [`Attempt::run`].
    pub async fn run_streaming(self, sink: &ChunkSink) -> Result<Delegation, AttemptError> {
        self.run_with(Some(sink)).await
    }

    async fn run_with(self, sink: Option<&ChunkSink>) -> Result<Delegation, AttemptError> {
        let started = Instant::now();
        let task_id = self.spec.task_id.clone().unwrap_or_default();
        let earlier: Vec<Vec<u8>> = match self.store.ledger_attempts(task_id.clone()).await {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| e.peer_lct == self.target.lct_id && !e.task.is_empty())
                .map(|e| e.task)
                .collect(),
            Err(e) => return Err(AttemptError::NotRecorded(e)),
        };
        let mut spec = self.spec.clone();
        spec.earlier_digests = earlier.iter().filter_map(|b| payload_digest(b)).collect();
        // Nothing is sent unless the target checks out and has the blobs.
        let ready = async {
            let checked = check_target(
                self.client,
                self.target,
                self.protocol,
                self.addr,
                self.timeout,
            )
            .await?;
            self.upload(&spec, started).await?;
            Ok(checked)
        };
        let checked = match ready.await {
            Ok(checked) => checked,
            Err(e) => {
                let recorded = ledger::record_failure(
                    self.store,
                    self.target,
                    self.protocol,
                    &task_id,
                    &spec.task_type,
                    &e,
                );
                if let Err(store_err) = recorded.await {
                    tracing::warn!(error = %store_err, "cannot record the failure in the ledger");
                }
                return Err(AttemptError::NotSent(e));
            }
        };
        let outgoing = Outgoing::sign(self.local, self.target, self.protocol, &spec);
        let entry = ledger::record_sent(
            self.store,
            self.target,
            self.protocol,
            &spec.task_type,
            &outgoing,
            sage_types::clock::now_ms(),
        )
        .await
        .map_err(AttemptError::NotRecorded)?;
        let remaining = self.timeout.saturating_sub(started.elapsed());
        let remaining = remaining.max(Duration::from_millis(1));
        let sent = match sink {
            None => outgoing
                .send(self.client, self.addr, remaining)
                .await
                .map(|exchanged| (exchanged, None))
                .map_err(DelegateError::from),
            Some(sink) => outgoing
                .send_streaming(self.client, self.addr, remaining, sink)
                .await
                .map_err(|e| match e {
                    // Named as the target, as the other failures are.
                    DelegateError::StreamCut { detail, .. } => DelegateError::StreamCut {
                        target: self.target.name.clone(),
                        detail,
                    },
                    other => other,
                }),
        };
        let outcome = sent
            .and_then(|(exchanged, received)| {
                let mut d = conclude(exchanged, self.target, &spec, checked, started)?;
                if let Some(received) = received {
                    check_streamed(
                        &received,
                        (d.summary.status, &d.summary.result),
                        &self.target.name,
                    )?;
                    d.streamed = true;
                }
                Ok(d)
            })
            .and_then(|d| match self.expect {
                Some(expected) if d.summary.result != *expected => {
                    Err(DelegateError::WrongAnswer {
                        target: self.target.name.clone(),
                        detail: format!(
                            "expected {}, got {}",
                            cut(&expected.to_string()),
                            cut(&d.summary.result.to_string())
                        ),
                    })
                }
                _ => Ok(d),
            });
        let recorded = ledger::record_outcome(self.store, entry, &outcome, &earlier).await;
        match (outcome, recorded) {
            (Ok(delegation), Ok(())) => Ok(delegation),
            (Ok(_), Err(e)) => Err(AttemptError::NotKept(e)),
            (Err(e), recorded) => {
                if let Err(store_err) = recorded {
                    tracing::warn!(error = %store_err, "cannot record the failure in the ledger");
                }
                Err(AttemptError::Sent(e))
            }
        }
    }
}

impl Attempt<'_> {
    /// Uploads the task's blobs to this attempt's peer, each unless it has
    /// it already, within what is left of the timeout.
    async fn upload(&self, spec: &TaskSpec, started: Instant) -> Result<(), DelegateError> {
        let signer = (
            &*self.local.key,
            self.local.lct_id.as_str(),
            self.target.lct_id.as_str(),
        );
        for blob in &spec.blobs {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            let sent = upload::upload(
                self.client,
                self.addr,
                signer,
                blob,
                remaining.max(Duration::from_millis(1)),
            )
            .await?;
            tracing::debug!(digest = %blob.blob.digest, size = blob.blob.size, peer = %self.target.name, ?sent, "blob");
        }
        Ok(())
    }
}

/// At most 200 characters of `text`, escaped: a wrong answer is the
/// peer's text.
fn cut(text: &str) -> String {
    sage_types::untrusted::Untrusted(text)
        .up_to(200)
        .to_string()
}
