//! The local API: applications on this machine hand the node a task over a
//! Unix socket, and the node signs it as itself, routes it (or sends it to
//! the peer named), verifies the proof and records the receipt, so that the
//! private key never leaves the daemon.
//!
//! - `POST /local/v1/tasks`: a task, answered with its verified result and
//!   receipt digests, or a problem with the delegation's code and attempts;
//! - `GET /local/v1/tasks/{id}`: what the ledger says of a task's attempts;
//! - `GET /local/v1/receipts/{id}`: the signed task and proof as kept;
//! - `GET /local/v1/models` and `POST /local/v1/chat/completions`: the
//!   same delegation in OpenAI's shapes (`openai.rs`), streamed as
//!   server-sent events with `"stream": true` (`openai/stream.rs`).
//!
//! Only the socket serves it, never the federation port: who may call is
//! who the kernel says is on the other end (`SO_PEERCRED`), checked
//! against `[local] allow_uids` and `allow_groups`.
//!
//! It sits beside `node` and `delegator` and imports both: it reads the
//! node's trust store as the last reload left it, and delegates with the
//! delegator's routing and the node's warm router, while those two never
//! import each other.

mod access;
pub mod client;
mod openai;
mod socket;
mod tasks;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sage_route::RetryBudget;
use sage_store::Store;

use crate::delegator::fleet::Fleet;
use crate::keydir::Identity;
use crate::node::AppState;

pub use access::{Allow, Caller, Origin, Token};
pub use socket::{bind, default_socket, SocketError};

/// What the local API works with.
#[derive(Debug)]
pub struct Setup {
    /// The node's identity: its key signs every task.
    pub local: Identity,
    /// The node's state: its trust store, reloads included.
    pub state: AppState,
    /// The node's store, whose ledger keeps every attempt.
    pub store: Store,
    /// The node's warm router.
    pub fleet: Arc<Fleet>,
    /// Where this node's federation port is reached, for it to be a
    /// routing candidate itself; `None`: never.
    pub node_addr: Option<String>,
    /// Who may call.
    pub allow: Allow,
    /// The largest request body.
    pub max_body_bytes: usize,
}

/// The shared state of the handlers.
#[derive(Debug)]
struct Api {
    setup: Setup,
    /// One retry budget for every local delegation: a failing fleet is not
    /// sent a storm of retries.
    budget: RetryBudget,
}

/// The local API, shared by the socket and the loopback port.
#[derive(Debug, Clone)]
pub struct Local(Arc<Api>);

impl Local {
    /// The API over `setup`.
    pub fn new(setup: Setup) -> Local {
        Local(Arc::new(Api {
            setup,
            budget: RetryBudget::default(),
        }))
    }

    /// The socket's routes, behind the caller check.
    pub fn socket_router(&self) -> axum::Router {
        let allow = self.0.setup.allow.clone();
        self.routes()
            .layer(axum::middleware::from_fn_with_state(allow, access::check))
    }

    /// The loopback port's routes, behind the bearer token.
    pub fn token_router(&self, token: Token) -> axum::Router {
        self.routes().layer(axum::middleware::from_fn_with_state(
            token,
            access::check_token,
        ))
    }

    fn routes(&self) -> axum::Router {
        routes(self.0.clone())
    }
}

/// The socket's routes of the API over `setup`, behind the caller check.
pub fn router(setup: Setup) -> axum::Router {
    Local::new(setup).socket_router()
}

fn routes(api: Arc<Api>) -> axum::Router {
    let max_body = api.setup.max_body_bytes;
    axum::Router::new()
        .route("/local/v1/tasks", post(tasks::submit))
        .route("/local/v1/tasks/{id}", get(tasks::status))
        .route("/local/v1/receipts/{id}", get(tasks::receipt))
        .route("/local/v1/models", get(openai::models))
        .route("/local/v1/models/{*id}", get(openai::model))
        .route("/local/v1/chat/completions", post(openai::chat_completions))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such local API endpoint".into(),
                serde_json::Value::Null,
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api)
}

/// Serves `router` on `listener` until the runtime ends, each connection
/// knowing its caller.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: tokio::net::UnixListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Caller>(),
    )
    .await
}

/// Serves the token-guarded `router` on `listener`, a loopback port.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve_port(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
}

/// An `application/problem+json` answer: the node's problem shape, with
/// `code` and any fields of `extra` (an object) beside it.
fn problem(status: StatusCode, code: &str, detail: String, extra: serde_json::Value) -> Response {
    let mut body = serde_json::json!({
        "type": format!("urn:sage:problem:{code}"),
        "code": code,
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let serde_json::Value::Object(extra) = extra {
        for (key, value) in extra {
            body[key] = value;
        }
    }
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sage_types::problem::PROBLEM_CONTENT_TYPE),
    );
    response
}
