//! `serve_with` on real loopback sockets, in-process: shutdown with a task
//! in flight (drained, or abandoned past the deadline), idle keep-alive
//! connections at shutdown, and TLS with the client's trust settings.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use sage_crypto::TlsTrust;
use sage_exec::{BoxFuture, ExecError, Execution, Executor};
use sage_service::config::Limits;
use sage_service::delegator::client::Client;
use sage_service::delegator::delegation::SignedTask;
use sage_service::node::{serve_with, Shutdown};
use sage_service::tls::{write_self_signed, SelfSignedPlan, ServerTls};
use sage_service::ClientError;
use sage_types::Task;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod fleet;
use fleet::Fleet;

/// Answers after sleeping this long.
struct Slow(Duration);

impl Executor for Slow {
    fn kind(&self) -> &'static str {
        "slow"
    }
    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(Execution::of(task.input.clone()))
        })
    }
}

struct Node {
    addr: String,
    fleet: Fleet,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<std::io::Result<Shutdown>>,
}

impl Node {
    async fn start(slow: Duration, limits: Limits, tls: Option<ServerTls>) -> Node {
        let slow: Arc<dyn Executor> = Arc::new(Slow(slow));
        let fleet = Fleet::new(limits, vec![("slow", slow)]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(serve_with(listener, fleet.state.clone(), tls, async {
            let _ = stopped.await;
        }));
        Node {
            addr,
            fleet,
            stop: Some(stop),
            serving,
        }
    }

    fn task(&self, task_type: &str) -> SignedTask {
        let input = serde_json::json!({"x": 1});
        self.fleet
            .sign(&fleet::spec(task_type, input, Duration::from_secs(120)))
    }

    /// Sends a slow task and waits until it runs.
    async fn task_in_flight(&self) -> JoinHandle<Result<sage_types::Envelope, ClientError>> {
        let signed = self.task("slow");
        let addr = self.addr.clone();
        let sent = tokio::spawn(async move {
            Client::new()
                .unwrap()
                .submit_task(&addr, &signed.envelope, Duration::from_secs(120))
                .await
        });
        for _ in 0..1000 {
            if self.fleet.state.in_flight() == 1 {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the task did not start within 10 s");
    }

    /// Signals shutdown and waits (at most 20 s) for `serve` to return.
    async fn shut_down(mut self) -> Shutdown {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), &mut self.serving)
            .await
            .expect("serve returned within 20 s")
            .unwrap()
            .unwrap()
    }
}

fn limits(drain: Duration) -> Limits {
    Limits {
        drain_timeout: drain,
        ..Limits::default()
    }
}

/// Shuts down, with a drain deadline of `drain`, a node running a task
/// that takes `run`; returns how `serve` ended and the delegator's wait.
async fn shut_down_in_flight(
    run: Duration,
    drain: Duration,
) -> (
    Shutdown,
    JoinHandle<Result<sage_types::Envelope, ClientError>>,
) {
    let node = Node::start(run, limits(drain), None).await;
    let sent = node.task_in_flight().await;
    (node.shut_down().await, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_in_flight_finishes_before_serve_returns() {
    let (shutdown, sent) =
        shut_down_in_flight(Duration::from_millis(300), Duration::from_secs(30)).await;
    assert_eq!(shutdown, Shutdown::Drained);
    let proof = sent.await.unwrap();
    assert!(proof.is_ok(), "{proof:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_deadline_the_task_is_abandoned() {
    let (shutdown, sent) =
        shut_down_in_flight(Duration::from_secs(600), Duration::from_millis(200)).await;
    assert_eq!(shutdown, Shutdown::DeadlinePassed { abandoned: 1 });
    // Its connection is closed: the delegator hears about it.
    let result = tokio::time::timeout(Duration::from_secs(20), sent)
        .await
        .expect("the delegator got an answer within 20 s")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    // A drain deadline far beyond the 20 s that `shut_down` waits.
    let node = Node::start(Duration::ZERO, limits(Duration::from_secs(600)), None).await;
    let addr = node.addr.clone();
    let mut conn = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(b"GET /health HTTP/1.1\r\nHost: thor\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        assert!(conn.read(&mut buf).unwrap() > 0, "answered");
        conn
    })
    .await
    .unwrap();
    assert_eq!(node.shut_down().await, Shutdown::Drained);
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_peers_trust_and_not_without() {
    let dir = tempfile::tempdir().unwrap();
    let plan = SelfSignedPlan {
        name: "thor".into(),
        sans: vec!["127.0.0.1".into()],
        days: 1,
    };
    let files = write_self_signed(dir.path(), &plan, false).unwrap();
    let tls = ServerTls::load(&files.cert_path, &files.key_path).unwrap();
    let node = Node::start(Duration::ZERO, limits(Duration::from_secs(5)), Some(tls)).await;
    let url = format!("https://{}", node.addr);
    let timeout = Duration::from_secs(10);

    let pinned = Client::with_tls(&TlsTrust::Fingerprint(files.cert.fingerprint)).unwrap();
    let (health, _) = pinned.health(&url, timeout).await.unwrap();
    assert_eq!(health.lct_id, "thor_sage_lct");
    // A whole delegation's request over the pinned connection.
    let signed = node.task("echo");
    pinned
        .submit_task(&url, &signed.envelope, timeout)
        .await
        .unwrap();

    let by_ca = Client::with_tls(&TlsTrust::Ca(files.cert_path.clone())).unwrap();
    by_ca.health(&url, timeout).await.unwrap();

    let err = Client::new()
        .unwrap()
        .health(&url, timeout)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let other = sage_crypto::CertFingerprint::of_der(b"another certificate");
    let err = Client::with_tls(&TlsTrust::Fingerprint(other))
        .unwrap()
        .health(&url, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Tls { detail, .. } if detail.contains("fingerprint mismatch")),
        "{err}"
    );
    // Plain HTTP to the TLS port: the node's problem saying so becomes
    // the error that names the https:// address to use.
    let err = Client::new()
        .unwrap()
        .health(&node.addr, timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::SpeaksTls { https, .. } if *https == format!("https://{}", node.addr)),
        "{err}"
    );
    // A CA file that is not there: the client cannot be made.
    let err = Client::with_tls(&TlsTrust::Ca(dir.path().join("missing.pem"))).unwrap_err();
    assert!(matches!(err, ClientError::TlsSettings(_)), "{err}");
    assert_eq!(node.shut_down().await, Shutdown::Drained);
}
