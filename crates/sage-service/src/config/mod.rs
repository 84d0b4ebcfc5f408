//! A node's configuration: the [`Limits`] it enforces, and the config file
//! (`sage.toml`, see [`file`]) that sets them with its identity, listen
//! address and executors.

pub mod file;

use std::time::Duration;

/// Limits of a serving node. [`Limits::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// How far a task's times may disagree with this node's clock (default 5 min).
    pub clock_skew: Duration,
    /// Longest validity (`expires_at - issued_at`) a task may claim (default 1 h).
    pub max_task_lifetime: Duration,
    /// How long in-flight tasks may run after a shutdown signal (default 30 s).
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            clock_skew: Duration::from_secs(300),
            max_task_lifetime: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
