//! `GET /health`.

use axum::extract::State;
use axum::Json;
use sage_types::health::HEALTHY;
use sage_types::Health;

use super::AppState;
use sage_types::clock::now_secs_f64;

/// The node's identity and uptime; the first fields are the Python
/// original's, so its client accepts a `sage` node.
pub(super) async fn health(State(state): State<AppState>) -> Json<Health> {
    let inner = state.inner();
    Json(Health {
        status: HEALTHY.to_owned(),
        platform: inner.name.clone(),
        lct_id: inner.lct_id.clone(),
        timestamp: now_secs_f64(),
        public_key: Some(inner.public_hex.clone()),
        key_id: Some(inner.key_id.to_string()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        uptime_secs: Some(inner.started.elapsed().as_secs_f64()),
    })
}
