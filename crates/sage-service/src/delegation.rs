//! The delegator's side: build and sign a task, send it, and accept the
//! proof only if every check passes.

use std::time::{Duration, Instant};

use rand::RngCore as _;
use sage_crypto::digest::{json_digest, sha256_tagged};
use sage_crypto::{sign_envelope, verify_envelope_with, NodeKey, Peer, VerifyError};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, Health, Proof, ProofStatus, QualityRequirements, Task};

use crate::client::Client;
use crate::clock::now_ms;
use crate::keydir::Identity;
use crate::{DelegateError, ProofError};

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
    /// A task id to use instead of a random one.
    pub task_id: Option<String>,
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
}

/// Random hex of `bytes` random bytes.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Builds and signs a task from `issuer` for `audience` (LCT ids).
pub fn sign_task(key: &NodeKey, issuer: &str, audience: &str, spec: &TaskSpec) -> SignedTask {
    let now = now_ms();
    let task = Task {
        task_id: spec
            .task_id
            .clone()
            .unwrap_or_else(|| format!("task_{}", random_hex(8))),
        task_type: spec.task_type.clone(),
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        issued_at: now,
        expires_at: now + spec.lifetime.as_millis() as u64,
        nonce: random_hex(16),
        input: spec.input.clone(),
        estimated_cost: spec.estimated_cost,
        quality: spec.quality,
    };
    // A struct of strings, numbers and a JSON value always serializes.
    let payload = serde_json::to_vec(&task).unwrap_or_default();
    let envelope = sign_envelope(key, TASK_PAYLOAD_TYPE, &payload);
    SignedTask {
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
    if proof.task_id != task.task_id {
        return Err(ProofError::ForOtherTask {
            detail: format!("task id {} where {} was sent", proof.task_id, task.task_id),
        });
    }
    if proof.task_digest != signed.digest {
        return Err(ProofError::ForOtherTask {
            detail: format!(
                "task digest {} where {} was sent",
                proof.task_digest, signed.digest
            ),
        });
    }
    let mismatch = |detail: String| Err(ProofError::Mismatch { detail });
    if proof.executor != executor.lct_id {
        return mismatch(format!(
            "executor {} where {} was asked",
            proof.executor, executor.lct_id
        ));
    }
    if proof.issuer != task.issuer {
        return mismatch(format!(
            "issuer {} where {} delegated",
            proof.issuer, task.issuer
        ));
    }
    let digest = json_digest(&proof.result);
    if proof.result_digest != digest {
        return mismatch(format!(
            "result digest {} where the result hashes to {digest}",
            proof.result_digest
        ));
    }
    Ok(proof)
}

/// Why a verified proof still does not meet the task's terms, if it does not.
pub fn shortfall(proof: &Proof, required: &QualityRequirements) -> Option<String> {
    if proof.status == ProofStatus::Failed {
        let why = proof
            .result
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no reason given");
        return Some(format!("execution failed: {why}"));
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
    /// What was sent.
    pub signed: SignedTask,
    /// The verified proof.
    pub proof: Proof,
    /// The proof as received, signature included.
    pub proof_envelope: Envelope,
    /// The target's health answer.
    pub health: Health,
    /// Round trip of the health check.
    pub health_rtt: Duration,
    /// From sending the task to receiving the proof.
    pub round_trip: Duration,
    /// Signing, sending, executing, receiving and verifying.
    pub total: Duration,
    /// Why the proof does not meet the task's terms, if it does not.
    pub shortfall: Option<String>,
}

/// Checks `target`'s health at `addr`, signs a task from `local`, sends it
/// and verifies the proof.
///
/// # Errors
/// [`DelegateError`]: the target unreachable, refusing, or its proof invalid.
pub async fn delegate(
    client: &Client,
    local: &Identity,
    target: &Peer,
    addr: &str,
    spec: &TaskSpec,
    timeout: Duration,
) -> Result<Delegation, DelegateError> {
    let (health, health_rtt) = client
        .health(addr, timeout.min(Duration::from_secs(5)))
        .await?;
    if health.lct_id != target.lct_id {
        return Err(DelegateError::WrongNode {
            addr: addr.to_owned(),
            expected: format!("{} ({})", target.name, target.lct_id),
            found: format!("{} ({})", health.platform, health.lct_id),
        });
    }
    let started = Instant::now();
    let signed = sign_task(&local.key, &local.lct_id, &target.lct_id, spec);
    let sent = Instant::now();
    let proof_envelope = client.submit_task(addr, &signed.envelope, timeout).await?;
    let round_trip = sent.elapsed();
    let proof =
        check_proof(&proof_envelope, &signed, target).map_err(|source| DelegateError::Proof {
            target: target.name.clone(),
            source,
        })?;
    let total = started.elapsed();
    Ok(Delegation {
        shortfall: shortfall(&proof, &signed.task.quality),
        signed,
        proof,
        proof_envelope,
        health,
        health_rtt,
        round_trip,
        total,
    })
}
