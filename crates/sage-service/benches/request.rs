//! The cost of a whole delegation of an `echo` task: in-process through the
//! node's router (no socket) next to a bare axum echo route with the same
//! body, and over loopback TCP with the real client and server.
//!
//! Each iteration signs a fresh task (a new nonce: the node refuses
//! replays), sends it, reads the proof and checks it as a delegator does.
//!
//! Run with `cargo bench -p sage-service`.

// Benchmarks are not tests, so clippy.toml's allow-unwrap-in-tests does not
// cover them; a failing unwrap here is a broken setup and should panic.
#![allow(clippy::unwrap_used)]
// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt as _;
use sage_service::config::Limits;
use sage_service::delegator::client::Client;
use sage_service::delegator::delegation::{check_proof, SignedTask, TaskSpec};
use sage_service::node;
use sage_types::Envelope;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

#[path = "../tests/fleet/mod.rs"]
mod fleet;
use fleet::Fleet;

/// Thor with the built-in executors and the default limits.
fn thor() -> Fleet {
    Fleet::new(Limits::default(), Vec::new())
}

/// A freshly signed echo task (new task id and nonce).
fn sign(fleet: &Fleet) -> SignedTask {
    fleet.sign(&TaskSpec {
        estimated_cost: 50.0,
        // Used by the legacy protocol only; 30 s is the figure of the
        // Python original's deployment guide.
        max_latency: Duration::from_secs(30),
        ..fleet::spec(
            "echo",
            sage_types::testing::typical_input(),
            Duration::from_secs(60),
        )
    })
}

/// A delegator's `traceparent`, as every request of a delegation carries.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn post_request(body: Bytes, traced: bool) -> Request<Body> {
    let mut request = Request::post("/v1/tasks").header(header::CONTENT_TYPE, "application/json");
    if traced {
        request = request.header("traceparent", TRACEPARENT);
    }
    request.body(Body::from(body)).unwrap()
}

/// Sends `body` to `app` without a socket and returns the response body.
async fn round_trip(app: &Router, body: Bytes) -> Bytes {
    round_trip_traced(app, body, false).await
}

/// [`round_trip`], with a `traceparent` if `traced`.
async fn round_trip_traced(app: &Router, body: Bytes, traced: bool) -> Bytes {
    let response = app
        .clone()
        .oneshot(post_request(body, traced))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// Sign, POST in-process, read, check the proof.
async fn delegate_in_process(fleet: &Fleet, app: &Router) {
    delegate_in_process_traced(fleet, app, false).await;
}

/// [`delegate_in_process`], the task sent with a `traceparent` if `traced`.
async fn delegate_in_process_traced(fleet: &Fleet, app: &Router, traced: bool) {
    let signed = sign(fleet);
    let body = serde_json::to_vec(&signed.envelope).unwrap();
    let answer = round_trip_traced(app, body.into(), traced).await;
    let proof: Envelope = serde_json::from_slice(&answer).unwrap();
    check_proof(&proof, &signed, &fleet.thor).unwrap();
}

fn in_process(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let fleet = thor();
    let app = node::router(fleet.state.clone());
    rt.block_on(delegate_in_process(&fleet, &app));

    // The baseline: one POST route that echoes its body, with a body the
    // size of a signed task envelope.
    let echo = Router::new().route("/v1/tasks", post(|body: Bytes| async move { body }));
    let sample = Bytes::from(serde_json::to_vec(&sign(&fleet).envelope).unwrap());
    let size = sample.len();
    assert_eq!(rt.block_on(round_trip(&echo, sample.clone())), sample);

    let mut group = c.benchmark_group("request");
    group.bench_function(format!("axum_echo_baseline/{size}B"), |b| {
        b.to_async(&rt).iter(|| round_trip(&echo, sample.clone()));
    });
    group.bench_function("in_process_echo_delegation", |b| {
        b.to_async(&rt).iter(|| delegate_in_process(&fleet, &app));
    });
    // What a traceparent costs a node without OTLP: the header read, and
    // its trace id in the request span's fields.
    group.bench_function("in_process_echo_delegation_traceparent", |b| {
        b.to_async(&rt)
            .iter(|| delegate_in_process_traced(&fleet, &app, true));
    });
    group.finish();
}

fn loopback(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let fleet = thor();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, serving) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let serving = tokio::spawn(node::serve(listener, fleet.state.clone(), async {
            let _ = stopped.await;
        }));
        (addr, serving)
    });
    let client = Client::new().unwrap();
    let timeout = Duration::from_secs(10);
    let delegate = || async {
        let signed = sign(&fleet);
        let proof = client
            .submit_task(&addr, &signed.envelope, timeout)
            .await
            .unwrap();
        check_proof(&proof, &signed, &fleet.thor).unwrap();
    };
    rt.block_on(delegate());

    let mut group = c.benchmark_group("request");
    group.bench_function("loopback_echo_delegation", |b| {
        b.to_async(&rt).iter(delegate);
    });
    group.finish();

    // Close the pooled keep-alive connection so that the drain is quick.
    drop(client);
    stop.send(()).unwrap();
    rt.block_on(serving).unwrap().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = in_process, loopback
}
criterion_main!(benches);
