//! The answer of `GET /health`.

use serde::{Deserialize, Serialize};

/// A node's health. The first four fields are the Python original's, so its
/// client accepts a `sage` node; the rest are `sage`'s additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"healthy"` when the node accepts tasks.
    pub status: String,
    /// Platform name (`Thor`).
    pub platform: String,
    /// LCT id (`thor_sage_lct`).
    pub lct_id: String,
    /// Unix seconds when the answer was made.
    pub timestamp: f64,
    /// The node's public key, 64 hex characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The node's key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `sage` version of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Seconds since the node started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<f64>,
}

/// The `status` of a node that accepts tasks.
pub const HEALTHY: &str = "healthy";
