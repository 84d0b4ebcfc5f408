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

#[cfg(test)]
mod tests {
    use sage_types::legacy::signable_proof;
    use sage_types::pyjson;
    use serde_json::Value;

    use super::super::tests::{spec, thor, THOR_SEED};
    use super::*;

    /// Thor as the delegator knows it, and a legacy task Sprout signed.
    fn sent() -> (Peer, SignedLegacyTask) {
        let spec = TaskSpec {
            task_id: Some("t1".into()),
            earlier_digests: Vec::new(),
            blobs: Vec::new(),
            origin: None,
            ..spec()
        };
        let signed = sign_task(&NodeKey::from_seed(&[2; 32]), "Sprout", &spec);
        (thor(), signed)
    }

    /// Thor's proof of task `t1`, as its JSON.
    fn proof() -> Value {
        json!({
            "task_id": "t1",
            "executing_platform": "Thor",
            "result_data": {"x": 1},
            "actual_latency": 0.5,
            "actual_cost": 1.0,
            "irp_iterations": 3,
            "final_energy": 0.1,
            "convergence_quality": 0.9,
            "quality_score": 0.8,
            "execution_timestamp": 1.5,
        })
    }

    /// The answer carrying `proof` signed by `signer`.
    fn answer(proof: &Value, signer: &NodeKey) -> ReceivedResponse {
        let signable =
            signable_proof(&pyjson::loads(proof.to_string().as_bytes()).unwrap()).unwrap();
        let signature = sign_legacy(signer, signable.canonical().as_bytes());
        ReceivedResponse {
            signable,
            signature,
        }
    }

    #[test]
    fn the_honest_proof_is_accepted_whatever_the_case_of_the_platform() {
        let (thor, signed) = sent();
        let thor_key = NodeKey::from_seed(&THOR_SEED);
        let summary = check_proof(&answer(&proof(), &thor_key), &signed, &thor).unwrap();
        assert_eq!(
            (summary.task_id.as_str(), summary.executor.as_str()),
            ("t1", "Thor")
        );
        assert_eq!(summary.status, ProofStatus::Succeeded);
        let mut shouted = proof();
        shouted["executing_platform"] = json!("THOR");
        check_proof(&answer(&shouted, &thor_key), &signed, &thor).unwrap();
    }

    #[test]
    fn each_forged_or_tampered_proof_is_refused_for_its_own_reason() {
        type Forge = fn(&mut Value, &mut NodeKey);
        type Expected = fn(&ProofError) -> bool;
        let cases: [(&str, Forge, Expected); 4] = [
            (
                "signed by another key",
                |_, key| *key = NodeKey::from_seed(&[3; 32]),
                |e| matches!(e, ProofError::InvalidSignature { .. }),
            ),
            (
                "another task id",
                |proof, _| proof["task_id"] = json!("t2"),
                |e| matches!(e, ProofError::ForOtherTask { detail } if detail.starts_with("task id")),
            ),
            (
                "another executing platform",
                |proof, _| proof["executing_platform"] = json!("Legion"),
                |e| matches!(e, ProofError::Mismatch { detail } if detail.starts_with("executing platform")),
            ),
            (
                "a field of the wrong type",
                |proof, _| proof["irp_iterations"] = json!(2.5),
                |e| matches!(e, ProofError::Malformed(m) if m.contains("irp_iterations")),
            ),
        ];
        let (thor, signed) = sent();
        for (what, forge, expected) in cases {
            let (mut proof, mut key) = (proof(), NodeKey::from_seed(&THOR_SEED));
            forge(&mut proof, &mut key);
            let error = check_proof(&answer(&proof, &key), &signed, &thor).unwrap_err();
            assert!(expected(&error), "{what}: {error:?}");
        }
    }

    #[test]
    fn a_proof_altered_after_it_was_signed_is_refused() {
        let (thor, signed) = sent();
        let thor_key = NodeKey::from_seed(&THOR_SEED);
        let signature = answer(&proof(), &thor_key).signature;
        for (what, field, value) in [
            ("its result", "result_data", json!({"x": 2})),
            ("its quality", "quality_score", json!(0.99)),
            ("its task id", "task_id", json!("t2")),
        ] {
            let mut altered = proof();
            altered[field] = value;
            let answer = ReceivedResponse {
                signature: signature.clone(),
                ..answer(&altered, &thor_key)
            };
            let error = check_proof(&answer, &signed, &thor).unwrap_err();
            assert!(
                matches!(error, ProofError::InvalidSignature { .. }),
                "{what}: {error:?}"
            );
        }
    }
}
