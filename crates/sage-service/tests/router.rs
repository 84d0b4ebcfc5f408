//! The router driven in-process (no socket): what is hard to provoke from
//! outside — a failing executor, re-signed retries — and the health answer.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use sage_exec::{BoxFuture, ExecError, Execution, Executor, FailureKind};
use sage_service::config::Limits;
use sage_service::delegator::delegation::{check_proof, SignedTask, TaskSpec};
use sage_service::node::router;
use sage_types::{Envelope, ProofStatus, Task};
use tower::ServiceExt as _;

mod fleet;
use fleet::Fleet;

struct Broken;

impl Executor for Broken {
    fn kind(&self) -> &'static str {
        "broken"
    }
    fn execute<'a>(&'a self, _task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(async { Err(ExecError::new(FailureKind::Other, "GPU fell off the bus")) })
    }
}

struct Fixture {
    app: axum::Router,
    fleet: Fleet,
}

fn fixture(limits: Limits) -> Fixture {
    let broken: Arc<dyn Executor> = Arc::new(Broken);
    let fleet = Fleet::new(limits, vec![("broken", broken)]);
    Fixture {
        app: router(fleet.state.clone()),
        fleet,
    }
}

fn task(f: &Fixture, task_type: &str) -> SignedTask {
    signed(f, task_type, serde_json::json!({"x": 1}), None, Vec::new())
}

/// A task from Sprout to Thor, signed now with a fresh nonce.
fn signed(
    f: &Fixture,
    task_type: &str,
    input: serde_json::Value,
    task_id: Option<String>,
    earlier_digests: Vec<String>,
) -> SignedTask {
    f.fleet.sign(&TaskSpec {
        max_latency: Duration::from_secs(30),
        task_id,
        earlier_digests,
        blobs: Vec::new(),
        origin: None,
        ..fleet::spec(task_type, input, Duration::from_secs(60))
    })
}

async fn post(f: &Fixture, signed: &SignedTask) -> (StatusCode, Option<String>, Vec<u8>) {
    let request = Request::post("/v1/tasks")
        .body(Body::from(serde_json::to_vec(&signed.envelope).unwrap()))
        .unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, retry, body)
}

#[tokio::test]
async fn a_failed_execution_still_gets_a_signed_proof() {
    let f = fixture(Limits::default());
    let signed = task(&f, "broken");
    let (status, _, body) = post(&f, &signed).await;
    assert_eq!(status, StatusCode::OK);
    let envelope: Envelope = serde_json::from_slice(&body).unwrap();
    let proof = check_proof(&envelope, &signed, &f.fleet.thor).unwrap();
    assert_eq!(proof.status, ProofStatus::Failed);
    assert_eq!(proof.result["error"], "GPU fell off the bus");
    assert_eq!(proof.quality, 0.0);
    let summary = sage_service::delegator::delegation::ProofSummary::from(&proof);
    let why =
        sage_service::delegator::delegation::shortfall(&summary, &signed.task.quality).unwrap();
    assert!(why.contains("GPU fell off the bus"), "{why}");
}

#[tokio::test]
async fn a_resent_envelope_is_refused_and_a_re_signed_retry_gets_the_stored_proof() {
    let f = fixture(Limits::default());
    let first = task(&f, "echo");
    let (status, _, proof) = post(&f, &first).await;
    assert_eq!(status, StatusCode::OK);
    // The same envelope again: a replay.
    let (status, _, body) = post(&f, &first).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "replayed");
    // The same task re-signed (new nonce, new times): the stored proof.
    let id = Some(first.task.task_id.clone());
    let spec_retry = signed(
        &f,
        "echo",
        serde_json::json!({"x": 1}),
        id.clone(),
        vec![first.digest.clone()],
    );
    assert_ne!(spec_retry.task.nonce, first.task.nonce);
    let (status, _, again) = post(&f, &spec_retry).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, proof, "a retry gets the stored proof, byte for byte");
    let envelope: Envelope = serde_json::from_slice(&again).unwrap();
    check_proof(&envelope, &spec_retry, &f.fleet.thor).unwrap();
    // The same task id with another input: a conflict.
    let other = signed(&f, "echo", serde_json::json!({"x": 2}), id, Vec::new());
    let (status, _, body) = post(&f, &other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(&body).contains("other content"));
}

#[tokio::test]
async fn health_names_the_node_and_its_key() {
    let f = fixture(Limits::default());
    let response = f
        .app
        .clone()
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let health: sage_types::Health = serde_json::from_slice(&body).unwrap();
    assert_eq!(health.status, "healthy");
    assert_eq!(health.platform, "Thor");
    assert_eq!(health.lct_id, "thor_sage_lct");
    assert_eq!(health.key_id.as_deref(), Some(f.fleet.thor.key_id.as_str()));
    assert!(health.timestamp > 1.7e9);
}
