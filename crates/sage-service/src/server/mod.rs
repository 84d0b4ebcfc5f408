//! The HTTP side of a node: [`router`] builds the axum app (`/health`,
//! `/v1/tasks`, and the Python original's `/execute_task`) (tests drive it
//! with `oneshot`, no socket), [`serve`] runs it on a listener until a
//! shutdown signal, then drains in-flight tasks up to a deadline.

mod capabilities;
mod health;
mod legacy;
mod problem;
mod state;
mod tasks;

use std::future::{Future, IntoFuture as _};

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use problem::ApiError;
pub use state::{AppState, NodeSetup};

/// The routes of a node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/capabilities", get(capabilities::capabilities))
        .route("/v1/tasks", post(tasks::submit))
        // The Python original's endpoint, for fleets that still run it.
        .route("/execute_task", post(legacy::execute_task))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .with_state(state)
}

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished.
    Drained,
    /// The drain deadline passed with this many tasks still running; they
    /// were abandoned.
    DeadlinePassed {
        /// Tasks still running.
        abandoned: usize,
    },
}

/// Serves `state` on `listener` until `signal` completes, then stops
/// accepting, lets in-flight requests finish for at most the node's drain
/// timeout, and returns.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Shutdown> {
    let drain = state.limits().drain_timeout;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(state.clone());
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        ended = &mut server => {
            // The server stopped without a signal: only an error does that.
            return ended.map_err(std::io::Error::other)?.map(|()| Shutdown::Drained);
        }
        () = signal => {}
    }
    let in_flight = state.in_flight();
    tracing::info!(
        in_flight,
        drain_secs = drain.as_secs_f64(),
        "shutting down: no new tasks, draining in-flight ones"
    );
    let _ = stop_tx.send(());
    match tokio::time::timeout(drain, &mut server).await {
        Ok(ended) => ended
            .map_err(std::io::Error::other)?
            .map(|()| Shutdown::Drained),
        Err(_) => {
            server.abort();
            Ok(Shutdown::DeadlinePassed {
                abandoned: state.in_flight(),
            })
        }
    }
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
