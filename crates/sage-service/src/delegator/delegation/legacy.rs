//! Delegating to a node of the Python original: its request format, its
//! signatures, and its proof, checked as its own client checks it (plus the
//! task id and executor name).

use sage_crypto::legacy::{sign_legacy, signing_bytes, verify_legacy};
use sage_crypto::{NodeKey, Peer};
use sage_types::legacy::{LegacyProof, LegacyRequest, ReceivedResponse};
use sage_types::ProofStatus;
use serde_json::json;

use super::{ProofSummary, TaskSpec};
use crate::ProofError;
use sage_types::clock::now_secs_f64;
use sage_types::untrusted::Untrusted;

/// A signed legacy task: the request to send and the bytes that were signed.
#[derive(Debug, Clone)]
pub struct SignedLegacyTask {
    /// The task id.
    pub task_id: String,
    /// `json.dumps(task, sort_keys=True)`, the signed bytes.
    pub canonical: Vec<u8>,
    /// The request body.
    pub request: LegacyRequest,
}

/// Builds the Python original's signable task from `spec` (its fixed
/// fields as the original client fills them) and signs it as `issuer`.
pub fn sign_task(key: &NodeKey, issuer: &str, spec: &TaskSpec) -> SignedLegacyTask {
    let now = now_secs_f64();
    let task_id = spec
        .task_id
        .clone()
        .unwrap_or_else(|| super::new_task_id(super::now_ms()));
    // Floats stay floats (`50.0`), as the Python client writes them.
    let task = json!({
        "task_id": task_id,
        "task_type": spec.task_type,
        "task_data": spec.input,
        "estimated_cost": spec.estimated_cost,
        "task_horizon": {"delta_r": "local", "delta_t": "ephemeral", "delta_c": "simple"},
        "complexity": "low",
        "delegating_platform": issuer,
        "delegating_state": "focus",
        "quality_requirements": {
            "min_quality": spec.quality.min_quality,
            "min_convergence": spec.quality.min_convergence,
            "max_energy": 100.0,
        },
        "max_latency": spec.max_latency.as_secs_f64(),
        "deadline": now + spec.lifetime.as_secs_f64(),
        "min_witnesses": 3,
        "min_witness_societies": 3,
    });
    let canonical = signing_bytes(&task);
    let signature = sign_legacy(key, &canonical);
    SignedLegacyTask {
        task_id,
        canonical,
        request: LegacyRequest {
            task,
            requester_lct_id: issuer.to_owned(),
            signature,
            timestamp: Some(now),
        },
    }
}

/// Accepts a legacy answer only if its proof's signature verifies with
/// `executor`'s known key over the signable proof rebuilt as Python reads
/// it, and the proof names this task and this executor.
///
/// # Errors
/// [`ProofError`] naming the first check that failed.
pub fn check_proof(
    response: &ReceivedResponse,
    signed: &SignedLegacyTask,
    executor: &Peer,
) -> Result<ProofSummary, ProofError> {
    let signable = &response.signable;
    verify_legacy(
        &executor.public_key,
        signable.canonical().as_bytes(),
        &response.signature,
    )
    .map_err(|_| ProofError::InvalidSignature {
        executor: executor.name.clone(),
        key_id: executor.key_id.to_string(),
    })?;
    let proof = LegacyProof::from_signable(signable)
        .map_err(|e| ProofError::Malformed(format!("signed proof: {e}")))?;
    super::same_task_id(&proof.task_id, &signed.task_id)?;
    if !proof
        .executing_platform
        .eq_ignore_ascii_case(&executor.name)
    {
        return Err(ProofError::Mismatch {
            detail: format!(
                "executing platform {} where {} was asked",
                Untrusted(&proof.executing_platform),
                executor.name
            ),
        });
    }
    let failed = proof.result_data.get("status").and_then(|s| s.as_str()) == Some("failed");
    Ok(ProofSummary {
        executor: proof.executing_platform,
        task_id: proof.task_id,
        status: if failed {
            ProofStatus::Failed
        } else {
            ProofStatus::Succeeded
        },
        result: proof.result_data,
        quality: proof.quality_score,
        convergence: proof.convergence_quality,
        iterations: proof.irp_iterations,
        actual_cost: proof.actual_cost,
        latency_ms: proof.actual_latency * 1000.0,
        task_digest: None,
        result_digest: None,
    })
}
