//! The delegator's side: build and sign a task, send it, and accept the
//! proof only if every check passes; [`legacy`] does the same with the
//! Python original's protocol.

pub mod legacy;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use rand::RngCore as _;
use sage_crypto::digest::{json_digest, sha256_tagged};
use sage_crypto::{sign_envelope, verify_envelope_with, NodeKey, Peer, Protocol, VerifyError};
use sage_types::legacy::ReceivedResponse;
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::pyjson;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, Health, Proof, ProofStatus, QualityRequirements, Task};
use serde_json::Value;

use crate::delegator::client::Client;
use crate::delegator::stream::{ChunkSink, StreamEnd, TaskAnswer};
use crate::keydir::Identity;
use crate::{ClientError, DelegateError, ProofError};
use sage_types::clock::now_ms;
use sage_types::untrusted::{Untrusted, EXPLANATION_CHARS};

/// What to delegate.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Task type (`echo`, `llm_inference`, ...).
    pub task_type: String,
    /// The executor's input.
    pub input: serde_json::Value,
    /// Expected cost in ATP.
    pub estimated_cost: f64,
    /// What the proof must report to be accepted.
    pub quality: QualityRequirements,
    /// How long the task stays valid after signing.
    pub lifetime: Duration,
    /// The most the delegator will pay, in ATP (native protocol only).
    pub max_cost: Option<f64>,
    /// The legacy task's `max_latency` (the native protocol has none).
    pub max_latency: Duration,
    /// A task id to use instead of a random one.
    pub task_id: Option<String>,
    /// Digests of the same task sent before (a retry): a node that ran it
    /// then answers with the proof it made then, which names that payload.
    pub earlier_digests: Vec<String>,
    /// Files the task names as blobs (native protocol only), in order:
    /// each attempt uploads them to its peer before sending the task
    /// ([`Attempt::run`](super::recorded::Attempt::run)).
    pub blobs: Vec<super::upload::LocalBlob>,
    /// Who on this machine asked for it ([`Task::origin`]); `None`: not
    /// said.
    pub origin: Option<String>,
}

/// A signed task: the task, its exact payload bytes and the envelope.
#[derive(Debug, Clone)]
pub struct SignedTask {
    /// The task.
    pub task: Task,
    /// The exact bytes that were signed.
    pub payload: Vec<u8>,
    /// `sha256:` digest of `payload`; the proof must name it.
    pub digest: String,
    /// The envelope to send.
    pub envelope: Envelope,
    /// Digests of the same task sent before, which a proof may name instead.
    pub earlier_digests: Vec<String>,
}

/// Random hex of `bytes` random bytes.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh task id: `task_`, the time in milliseconds (12 hex digits), then
/// 8 random bytes. Starting with the time keeps the receiver's index of
/// task ids growing at one end, so recording a task rewrites one hot index
/// page instead of a random one; the random part keeps ids unique.
pub fn new_task_id(now_ms: u64) -> String {
    format!("task_{now_ms:012x}{}", random_hex(8))
}

/// Builds and signs a task from `issuer` for `audience` (LCT ids).
pub fn sign_task(key: &NodeKey, issuer: &str, audience: &str, spec: &TaskSpec) -> SignedTask {
    let now = now_ms();
    let task = Task {
        task_id: spec.task_id.clone().unwrap_or_else(|| new_task_id(now)),
        task_type: spec.task_type.clone(),
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        issued_at: now,
        expires_at: now + spec.lifetime.as_millis() as u64,
        nonce: random_hex(16),
        input: spec.input.clone(),
        estimated_cost: spec.estimated_cost,
        quality: spec.quality,
        max_cost: spec.max_cost,
        blobs: spec.blobs.iter().map(|b| b.blob.clone()).collect(),
        origin: spec.origin.clone(),
    };
    let payload = task.payload();
    let envelope = sign_envelope(key, TASK_PAYLOAD_TYPE, &payload);
    SignedTask {
        earlier_digests: spec.earlier_digests.clone(),
        digest: sha256_tagged(&payload),
        task,
        payload,
        envelope,
    }
}

/// Accepts `envelope` as the proof of `signed` by `executor` only if it is
/// signed by the executor's known key, names this task, its exact payload
/// digest, this issuer and this executor, and its result digest is right.
///
/// # Errors
/// [`ProofError`] naming the first check that failed.
pub fn check_proof(
    envelope: &Envelope,
    signed: &SignedTask,
    executor: &Peer,
) -> Result<Proof, ProofError> {
    let verified = verify_envelope_with(envelope, PROOF_PAYLOAD_TYPE, &executor.public_key)
        .map_err(|e| match e {
            VerifyError::UnknownKey { key_ids } => ProofError::SignedByOtherKey {
                executor: executor.name.clone(),
                expected: executor.key_id.to_string(),
                found: key_ids,
            },
            VerifyError::BadSignature { key_id } => ProofError::InvalidSignature {
                executor: executor.name.clone(),
                key_id,
            },
            other => ProofError::Malformed(other.to_string()),
        })?;
    let proof: Proof = serde_json::from_slice(&verified.payload)
        .map_err(|e| ProofError::Malformed(format!("signed payload is not a v1 proof: {e}")))?;
    let task = &signed.task;
    same_task_id(&proof.task_id, &task.task_id)?;
    if proof.task_digest != signed.digest && !signed.earlier_digests.contains(&proof.task_digest) {
        return Err(ProofError::ForOtherTask {
            detail: format!(
                "task digest {} where {} was sent",
                Untrusted(&proof.task_digest),
                signed.digest
            ),
        });
    }
    let mismatch = |detail: String| Err(ProofError::Mismatch { detail });
    if proof.executor != executor.lct_id {
        return mismatch(format!(
            "executor {} where {} was asked",
            Untrusted(&proof.executor),
            executor.lct_id
        ));
    }
    if proof.issuer != task.issuer {
        return mismatch(format!(
            "issuer {} where {} delegated",
            Untrusted(&proof.issuer),
            task.issuer
        ));
    }
    let digest = json_digest(&proof.result);
    if proof.result_digest != digest {
        return mismatch(format!(
            "result digest {} where the result hashes to {digest}",
            Untrusted(&proof.result_digest)
        ));
    }
    Ok(proof)
}

/// A proof of either protocol names the task id that was sent.
fn same_task_id(proved: &str, sent: &str) -> Result<(), ProofError> {
    if proved == sent {
        return Ok(());
    }
    Err(ProofError::ForOtherTask {
        detail: format!("task id {} where {sent} was sent", Untrusted(proved)),
    })
}

/// What a verified proof says, in the same terms for both protocols.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofSummary {
    /// The executor as the proof names it (LCT id, or platform name for legacy).
    pub executor: String,
    /// The task id.
    pub task_id: String,
    /// Whether the execution succeeded.
    pub status: ProofStatus,
    /// The result.
    pub result: serde_json::Value,
    /// Quality score.
    pub quality: f64,
    /// Convergence.
    pub convergence: f64,
    /// Refinement iterations.
    pub iterations: u64,
    /// Cost in ATP.
    pub actual_cost: f64,
    /// Execution time in milliseconds, as the executor reports it.
    pub latency_ms: f64,
    /// The digest of the task payload the proof is bound to; `None` for a
    /// legacy proof, which names the task id only.
    pub task_digest: Option<String>,
    /// The digest of the result, when the proof carries one.
    pub result_digest: Option<String>,
}

impl From<&Proof> for ProofSummary {
    fn from(p: &Proof) -> Self {
        ProofSummary {
            executor: p.executor.clone(),
            task_id: p.task_id.clone(),
            status: p.status,
            result: p.result.clone(),
            quality: p.quality,
            convergence: p.convergence,
            iterations: p.iterations.into(),
            actual_cost: p.actual_cost,
            latency_ms: p.latency_ms,
            task_digest: Some(p.task_digest.clone()),
            result_digest: Some(p.result_digest.clone()),
        }
    }
}

/// Why a verified proof still does not meet the task's terms, if it does not.
pub fn shortfall(proof: &ProofSummary, required: &QualityRequirements) -> Option<String> {
    if proof.status == ProofStatus::Failed {
        let why = proof
            .result
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        return Some(format!(
            "execution failed: {}",
            Untrusted(why).up_to(EXPLANATION_CHARS)
        ));
    }
    if proof.quality < required.min_quality {
        return Some(format!(
            "quality {} is below the required {}",
            proof.quality, required.min_quality
        ));
    }
    if proof.convergence < required.min_convergence {
        return Some(format!(
            "convergence {} is below the required {}",
            proof.convergence, required.min_convergence
        ));
    }
    None
}

/// A delegation whose proof was verified.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// The protocol spoken.
    pub protocol: Protocol,
    /// The task's content, as signed.
    pub task: serde_json::Value,
    /// The signed task as sent (envelope, or legacy request).
    pub signed_task: serde_json::Value,
    /// `sha256:` digest of the signed task bytes.
    pub task_digest: String,
    /// The proof's signed content.
    pub proof: serde_json::Value,
    /// The same, in common terms.
    pub summary: ProofSummary,
    /// The signed proof as received (envelope, or legacy answer), as JSON
    /// for reports.
    pub signed_proof: serde_json::Value,
    /// The same, the bytes a receipt keeps: the legacy answer exactly as
    /// received, for Python's spellings (`NaN`, lone surrogates) that a
    /// [`serde_json::Value`] cannot hold.
    pub proof_body: Vec<u8>,
    /// The target's health answer.
    pub health: Health,
    /// Round trip of the health check.
    pub health_rtt: Duration,
    /// From sending the task to receiving the proof.
    pub round_trip: Duration,
    /// The whole delegation: the health check, then signing, sending,
    /// executing, receiving and verifying.
    pub total: Duration,
    /// Why the proof does not meet the task's terms, if it does not.
    pub shortfall: Option<String>,
    /// The output came as a stream, and what was streamed is what the
    /// proof signs ([`check_streamed`](super::stream::check_streamed)).
    pub streamed: bool,
}

/// One task signed and sent, and the answer received (not yet verified).
#[derive(Debug, Clone)]
pub enum Exchange {
    /// The native protocol.
    V1 {
        /// What was sent.
        signed: Box<SignedTask>,
        /// The proof envelope received.
        proof: Envelope,
    },
    /// The Python original's protocol.
    Legacy {
        /// What was sent.
        signed: legacy::SignedLegacyTask,
        /// The answer received.
        response: ReceivedResponse,
        /// The answer's body, as received.
        body: Vec<u8>,
    },
}

impl Exchange {
    /// Checks the proof as the delegator must (see [`check_proof`] and
    /// [`legacy::check_proof`]).
    ///
    /// # Errors
    /// [`ProofError`] naming the first check that failed.
    pub fn verify(&self, target: &Peer) -> Result<ProofSummary, ProofError> {
        match self {
            Exchange::V1 { signed, proof } => {
                check_proof(proof, signed, target).map(|p| ProofSummary::from(&p))
            }
            Exchange::Legacy {
                signed, response, ..
            } => legacy::check_proof(response, signed, target),
        }
    }

    /// The protocol spoken.
    pub fn protocol(&self) -> Protocol {
        match self {
            Exchange::V1 { .. } => Protocol::V1,
            Exchange::Legacy { .. } => Protocol::Legacy,
        }
    }

    /// (task content, signed task, digest of its signed bytes, proof
    /// content, signed proof as received), as JSON for reports.
    pub(crate) fn to_json(&self) -> (Value, Value, String, Value, Value) {
        match self {
            Exchange::V1 { signed, proof } => (
                signed.task.to_json(),
                signed.envelope.to_json(),
                signed.digest.clone(),
                proof
                    .payload_bytes()
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or_default(),
                proof.to_json(),
            ),
            Exchange::Legacy {
                signed,
                response,
                body,
            } => (
                signed.request.task.clone(),
                signed.request.to_json(),
                sha256_tagged(&signed.canonical),
                response.signable.to_json(),
                // Read once already, so it reads again.
                pyjson::loads(body)
                    .map(|answer| answer.to_json())
                    .unwrap_or_default(),
            ),
        }
    }

    /// The signed proof's bytes for the ledger: the envelope, or the legacy
    /// answer as received.
    pub(crate) fn proof_body(&self) -> Vec<u8> {
        match self {
            Exchange::V1 { proof, .. } => proof.to_bytes(),
            Exchange::Legacy { body, .. } => body.clone(),
        }
    }
}

/// A task signed in one protocol, not yet sent.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// The native protocol.
    V1(Box<SignedTask>),
    /// The Python original's protocol.
    Legacy(legacy::SignedLegacyTask),
}

impl Outgoing {
    /// Signs a task from `local` for `target` in `protocol`.
    pub fn sign(local: &Identity, target: &Peer, protocol: Protocol, spec: &TaskSpec) -> Outgoing {
        match protocol {
            Protocol::V1 => Outgoing::V1(Box::new(sign_task(
                &local.key,
                &local.lct_id,
                &target.lct_id,
                spec,
            ))),
            Protocol::Legacy => {
                Outgoing::Legacy(legacy::sign_task(&local.key, &local.lct_id, spec))
            }
        }
    }

    /// The task id.
    pub fn task_id(&self) -> &str {
        match self {
            Outgoing::V1(signed) => &signed.task.task_id,
            Outgoing::Legacy(signed) => &signed.task_id,
        }
    }

    /// The body sent: the envelope, or the legacy request.
    pub fn body(&self) -> Vec<u8> {
        match self {
            Outgoing::V1(signed) => signed.envelope.to_bytes(),
            Outgoing::Legacy(signed) => signed.request.to_bytes(),
        }
    }

    /// Sends the task to `addr`; returns what was exchanged and the time
    /// from sending to answer.
    ///
    /// # Errors
    /// [`ClientError`]: the target unreachable, silent or refusing.
    pub async fn send(
        self,
        client: &Client,
        addr: &str,
        timeout: Duration,
    ) -> Result<(Exchange, Duration), ClientError> {
        let sent = Instant::now();
        let exchanged = match self {
            Outgoing::V1(signed) => {
                let proof = client.submit_task(addr, &signed.envelope, timeout).await?;
                Exchange::V1 { signed, proof }
            }
            Outgoing::Legacy(signed) => {
                let (response, body) = client
                    .execute_task_legacy(addr, &signed.request, timeout)
                    .await?;
                Exchange::Legacy {
                    signed,
                    response,
                    body,
                }
            }
        };
        Ok((exchanged, sent.elapsed()))
    }
}

impl Outgoing {
    /// [`Outgoing::send`] asking for a streaming answer (native protocol
    /// only: a legacy task is sent as by `send`): each piece of the output
    /// is handed to `sink` as it arrives. Also returns the pieces received,
    /// concatenated, when the answer was a stream, for
    /// [`check_streamed`](super::stream::check_streamed) once the proof
    /// verified.
    ///
    /// # Errors
    /// [`DelegateError::Client`] as `send`; [`DelegateError::StreamCut`]
    /// for a stream that ended without a proof.
    pub async fn send_streaming(
        self,
        client: &Client,
        addr: &str,
        timeout: Duration,
        sink: &ChunkSink,
    ) -> Result<((Exchange, Duration), Option<String>), DelegateError> {
        let signed = match self {
            Outgoing::V1(signed) => signed,
            legacy => return Ok((legacy.send(client, addr, timeout).await?, None)),
        };
        let sent = Instant::now();
        let answer = client
            .submit_task_streaming(addr, &signed.envelope, timeout, sink)
            .await?;
        let (proof, received) = match answer {
            TaskAnswer::Whole(proof) => (proof, None),
            TaskAnswer::Streamed {
                received,
                end: StreamEnd::Proof(proof),
            } => (proof, Some(received)),
            TaskAnswer::Streamed {
                end: StreamEnd::Cut(detail),
                ..
            } => {
                return Err(DelegateError::StreamCut {
                    target: addr.to_owned(),
                    detail,
                })
            }
        };
        Ok(((Exchange::V1 { signed, proof }, sent.elapsed()), received))
    }
}

/// Checks that the node at `addr` is up and is `target`; returns its
/// health answer and the round trip. For the native `protocol` the answer
/// must also be a sage node's, with `target`'s known key: a Python node,
/// or one that made a new key, is told apart here, before a task is sent
/// that it could not prove to this delegator.
///
/// # Errors
/// [`DelegateError`]: the node unreachable, refusing, another node, a
/// legacy node or another key.
pub async fn check_target(
    client: &Client,
    target: &Peer,
    protocol: Protocol,
    addr: &str,
    timeout: Duration,
) -> Result<(Health, Duration), DelegateError> {
    let (health, health_rtt) = client.health(addr, timeout).await?;
    check_health(&health, target, protocol, addr)?;
    Ok((health, health_rtt))
}

/// What [`check_target`] checks of the health answer.
fn check_health(
    health: &Health,
    target: &Peer,
    protocol: Protocol,
    addr: &str,
) -> Result<(), DelegateError> {
    if health.lct_id != target.lct_id {
        return Err(DelegateError::WrongNode {
            addr: addr.to_owned(),
            expected: format!("{} ({})", target.name, target.lct_id),
            found: format!(
                "{} ({})",
                Untrusted(&health.platform),
                Untrusted(&health.lct_id)
            ),
        });
    }
    if protocol != Protocol::V1 {
        return Ok(());
    }
    // A Python node's health answer has the original's four fields only.
    if health.key_id.is_none() && health.version.is_none() && health.public_key.is_none() {
        return Err(DelegateError::LegacyNode {
            addr: addr.to_owned(),
            target: target.name.clone(),
        });
    }
    let known = target.key_id.to_string();
    match &health.key_id {
        Some(found) if *found != known => Err(DelegateError::OtherKey {
            addr: addr.to_owned(),
            target: target.name.clone(),
            expected: known,
            found: Untrusted(found).to_string(),
        }),
        _ => Ok(()),
    }
}

/// The target's health answer and its round trip, from [`check_target`].
pub type Checked = (Health, Duration);

/// Verifies what `target` answered and makes the [`Delegation`]; `started`
/// is when the delegation began (before the health check).
///
/// # Errors
/// [`DelegateError::Proof`] when the proof is not acceptable.
pub fn conclude(
    exchanged: (Exchange, Duration),
    target: &Peer,
    spec: &TaskSpec,
    (health, health_rtt): Checked,
    started: Instant,
) -> Result<Delegation, DelegateError> {
    let (exchanged, round_trip) = exchanged;
    let summary = exchanged
        .verify(target)
        .map_err(|source| DelegateError::Proof {
            target: target.name.clone(),
            source,
        })?;
    let total = started.elapsed();
    let (task, signed_task, task_digest, proof, signed_proof) = exchanged.to_json();
    Ok(Delegation {
        protocol: exchanged.protocol(),
        shortfall: shortfall(&summary, &spec.quality),
        task,
        signed_task,
        task_digest,
        proof,
        summary,
        signed_proof,
        proof_body: exchanged.proof_body(),
        health,
        health_rtt,
        round_trip,
        total,
        streamed: false,
    })
}

/// Checks `target`'s health at `addr`, signs a task from `local` in
/// `protocol`, sends it and verifies the proof.
///
/// # Errors
/// [`DelegateError`]: the target unreachable, refusing, or its proof invalid.
pub async fn delegate(
    client: &Client,
    local: &Identity,
    target: &Peer,
    addr: &str,
    protocol: Protocol,
    spec: &TaskSpec,
    timeout: Duration,
) -> Result<Delegation, DelegateError> {
    let started = Instant::now();
    let checked = check_target(client, target, protocol, addr, timeout).await?;
    let exchanged = Outgoing::sign(local, target, protocol, spec)
        .send(client, addr, timeout)
        .await?;
    conclude(exchanged, target, spec, checked, started)
}
