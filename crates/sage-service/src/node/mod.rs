//! The serving node: [`router`] builds the axum app (`/health`,
//! `/v1/tasks`, and the Python original's `/execute_task`) (tests drive it
//! with `oneshot`, no socket), [`serve`] runs it on a listener until a
//! shutdown signal, then drains in-flight tasks up to a deadline.
//! [`systemd`] is its life as a service, [`hardware`] what the machine has.
//! It never imports the delegator ([`crate::delegator`]).

mod admission;
mod blob_store;
mod blobs;
mod capabilities;
pub mod hardware;
mod health;
mod legacy;
mod metrics;
mod observe;
mod once;
mod problem;
mod rate;
mod refusals;
mod running;
mod state;
mod stream;
pub mod systemd;
mod tasks;
mod transport;

use std::future::Future;

use axum::routing::{get, post, put};
use axum::Router;
use tokio::net::TcpListener;

use crate::tls::ServerTls;

pub use blob_store::BlobStore;
pub use metrics::{RouteGauge, RouteView};
pub use observe::REQUEST_ID;
pub use problem::ApiError;
pub use state::{AppState, NodeSetup, Policy, PolicyChange};

/// The routes of a node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/capabilities", get(capabilities::capabilities))
        .route("/v1/tasks", post(tasks::submit))
        .route("/v1/blobs/{digest}", put(blobs::put).head(blobs::head))
        // The Python original's endpoint, for fleets that still run it.
        .route("/execute_task", post(legacy::execute_task))
        .route("/metrics", get(observe::metrics))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request and every running task finished.
    Drained,
    /// The drain deadline passed with this many tasks still running; they
    /// were aborted (their programs killed) and marked interrupted, as
    /// after a crash.
    DeadlinePassed {
        /// Tasks still running at the deadline.
        abandoned: usize,
    },
}

/// Serves `state` on `listener` in plain HTTP until `signal` completes,
/// then stops accepting, lets in-flight requests finish for at most the
/// node's drain timeout, and returns. See [`serve_with`].
///
/// # Errors
/// None at present: accept errors are logged and retried (the `Result` is
/// kept for callers).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Shutdown> {
    serve_with(listener, state, None, signal).await
}

/// Serves `state` on `listener`, in HTTPS only when `tls` is given (no
/// plain HTTP on that port: a plain-HTTP client is told to use https://),
/// until `signal` completes; then drains as [`serve`] does.
///
/// The drain covers connections and the node's running tasks, whose
/// delegators may be gone: both get the drain timeout from the signal.
/// Tasks still running at its end are aborted (a `command` executor's
/// process group is killed) and marked interrupted in the store.
///
/// The transport enforces the node's socket limits
/// ([`Limits`](crate::config::Limits)): `max_connections` (at the limit, a
/// newcomer makes room by closing the idlest connection; when every one
/// has a request in progress, it waits for one to close),
/// `max_connections_per_address` (more are closed at accept),
/// `max_header_bytes` (a larger head is answered 431 `too_large`),
/// `header_read_timeout` (also bounding a TLS handshake),
/// `body_read_timeout`, `idle_timeout`; and sets `TCP_NODELAY`.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    tls: Option<ServerTls>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Shutdown> {
    let app = router(state.clone());
    let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
    let mark = signalled.clone();
    let signal = async move {
        signal.await;
        let _ = mark.set(tokio::time::Instant::now());
    };
    let summaries = tokio::spawn(summarize_refusals(state.clone()));
    let served = transport::serve(listener, app, state.clone(), tls, signal).await;
    summaries.abort();
    state.inner().refusals.summarize();
    let connections = served?;
    let running = &state.inner().running;
    let drain = state.limits().drain_timeout;
    let deadline = signalled
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now)
        + drain;
    let tasks_ended = tokio::time::timeout_at(deadline, running.idle())
        .await
        .is_ok();
    if tasks_ended && connections == Shutdown::Drained {
        return Ok(Shutdown::Drained);
    }
    Ok(Shutdown::DeadlinePassed {
        abandoned: abandon_running(&state).await,
    })
}

/// Logs the counts of repeated refusals, every [`refusals::SUMMARY_EVERY`].
async fn summarize_refusals(state: AppState) {
    let mut every = tokio::time::interval(refusals::SUMMARY_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        state.inner().refusals.summarize();
    }
}

/// How long aborted tasks get to end (their futures are dropped at their
/// next await, so this is short) before their records are marked.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Aborts the tasks still running at the drain deadline and marks them
/// interrupted, as the next start would; returns how many there were.
async fn abandon_running(state: &AppState) -> usize {
    let running = &state.inner().running;
    let abandoned = running.abort_all();
    if tokio::time::timeout(ABORT_WAIT, running.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "aborted tasks did not end within {} s",
            ABORT_WAIT.as_secs()
        );
    }
    match state
        .inner()
        .store
        .interrupt_running(sage_types::clock::now_ms())
        .await
    {
        Ok(marked) => tracing::info!(
            "{marked} task(s) still running at the drain deadline: marked interrupted"
        ),
        Err(e) => tracing::warn!(
            "cannot mark the tasks still running as interrupted ({}); the next start does",
            admission::for_operator(&e)
        ),
    }
    abandoned
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
