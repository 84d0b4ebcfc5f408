//! A node's configuration: the [`Limits`] it enforces, and the config file
//! (`sage.toml`, see [`file`](mod@file)) that sets them with its identity, listen
//! address and executors.

pub mod check;
pub mod duration;
pub mod file;
pub mod node;
mod position;

pub use file::TlsFiles;
pub use node::{NodeConfig, Overrides, ResolveError};

use std::ops::RangeInclusive;
use std::time::Duration;

/// What `max_header_bytes` may be: hyper's smallest read buffer (8 KiB) up
/// to 1 MiB, beyond which one unfinished head per connection would make
/// `max_connections` meaningless for memory.
pub const MAX_HEADER_BYTES_RANGE: RangeInclusive<usize> = 8 * 1024..=1024 * 1024;

/// `max_connections_per_address` when the config does not set it (and
/// `max_connections` is not lower).
pub const DEFAULT_CONNECTIONS_PER_ADDRESS: usize = 512;

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
    /// How long a client may take to send a request's headers, from its
    /// first byte (default 10 s): a slowloris client is cut off after it.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body (default 30 s).
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests
    /// (default 120 s).
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes (default
    /// 64 KiB): a larger one is answered 431 `too_large` and its connection
    /// closed. It also bounds hyper's read buffer, so the memory an
    /// unfinished head holds.
    pub max_header_bytes: usize,
    /// Most connections open at once (default 4096). A newcomer at the
    /// limit makes room by closing the idlest connection (one without a
    /// request in progress); when every one has a request in progress, it
    /// waits for one to close.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; more are closed
    /// as soon as they are accepted. `None` (the default): 512, or
    /// `max_connections` when that is lower; see
    /// [`Limits::connections_per_address`].
    pub max_connections_per_address: Option<usize>,
    /// Most requests handled at once, all peers together (default 1024);
    /// more are refused `busy` (503) before their body is read.
    pub max_concurrent_requests: usize,
    /// Tasks per second a verified peer may send (token bucket refilled at
    /// this rate); `None` (the default): no per-peer limit.
    pub peer_rate: Option<f64>,
    /// The bucket's size: tasks a peer may send at once after a quiet
    /// period (default: twice `peer_rate`, at least 1).
    pub peer_burst: Option<u32>,
    /// Largest blob accepted by `PUT /v1/blobs/...`, in bytes (default
    /// 256 MiB). Its body is streamed to a file, never held in memory.
    pub max_blob_bytes: u64,
    /// How long an uploaded blob that no task names is kept (default 1 h);
    /// a blob a task names is kept as long as that task's record.
    pub unreferenced_blob_ttl: Duration,
}

impl Limits {
    /// The connections one IP address may hold open at once.
    pub fn connections_per_address(&self) -> usize {
        self.max_connections_per_address
            .unwrap_or(DEFAULT_CONNECTIONS_PER_ADDRESS.min(self.max_connections))
    }

    /// Whether the values can work: counts above zero, a positive finite
    /// rate, timeouts above zero, a head limit in its range, no more
    /// connections per address than in all.
    ///
    /// # Errors
    /// The first key that cannot, with why.
    pub fn check(&self) -> Result<(), LimitsError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_connections", self.max_connections),
            ("max_concurrent_requests", self.max_concurrent_requests),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(LimitsError::Zero { key });
            }
        }
        if !MAX_HEADER_BYTES_RANGE.contains(&self.max_header_bytes) {
            return Err(LimitsError::HeaderBytes {
                value: self.max_header_bytes,
            });
        }
        match self.max_connections_per_address {
            Some(0) => {
                return Err(LimitsError::Zero {
                    key: "max_connections_per_address",
                })
            }
            Some(n) if n > self.max_connections => {
                return Err(LimitsError::PerAddressAboveTotal {
                    per_address: n,
                    total: self.max_connections,
                })
            }
            _ => {}
        }
        const DAY: Duration = Duration::from_secs(24 * 3600);
        // (key, value, may be zero, most): bounded so that deadlines
        // computed from them cannot overflow.
        let durations = [
            ("header_read_timeout", self.header_read_timeout, false, DAY),
            ("body_read_timeout", self.body_read_timeout, false, DAY),
            ("idle_timeout", self.idle_timeout, false, DAY),
            ("drain_timeout", self.drain_timeout, true, DAY),
            ("clock_skew", self.clock_skew, true, DAY),
            ("max_task_lifetime", self.max_task_lifetime, false, 30 * DAY),
            (
                "unreferenced_blob_ttl",
                self.unreferenced_blob_ttl,
                true,
                30 * DAY,
            ),
        ];
        for (key, value, zero_ok, most) in durations {
            if value.is_zero() && !zero_ok {
                return Err(LimitsError::ZeroDuration { key });
            }
            if value > most {
                return Err(LimitsError::TooLong { key, value, most });
            }
        }
        if let Some(rate) = self.peer_rate {
            if !(rate.is_finite() && (0.001..=1e9).contains(&rate)) {
                return Err(LimitsError::PeerRate { rate });
            }
        }
        if self.max_blob_bytes == 0 {
            return Err(LimitsError::Zero {
                key: "max_blob_bytes",
            });
        }
        if self.peer_burst == Some(0) {
            return Err(LimitsError::Zero { key: "peer_burst" });
        }
        Ok(())
    }
}

/// A [`Limits`] value that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// A count that must be at least 1 is 0.
    #[error("{key} must be at least 1")]
    Zero {
        /// The key.
        key: &'static str,
    },
    /// `max_header_bytes` outside [`MAX_HEADER_BYTES_RANGE`].
    #[error(
        "max_header_bytes must be from {} to {} bytes, not {value}",
        MAX_HEADER_BYTES_RANGE.start(),
        MAX_HEADER_BYTES_RANGE.end()
    )]
    HeaderBytes {
        /// The value given.
        value: usize,
    },
    /// More connections per address than in all.
    #[error(
        "max_connections_per_address ({per_address}) must be at most max_connections ({total})"
    )]
    PerAddressAboveTotal {
        /// `max_connections_per_address`.
        per_address: usize,
        /// `max_connections`.
        total: usize,
    },
    /// A timeout that must be above zero is zero.
    #[error("{key} must be above zero")]
    ZeroDuration {
        /// The key.
        key: &'static str,
    },
    /// A duration above its bound.
    #[error("{key} must be at most {} s, not {} s", most.as_secs(), value.as_secs())]
    TooLong {
        /// The key.
        key: &'static str,
        /// The value given.
        value: Duration,
        /// The bound.
        most: Duration,
    },
    /// `peer_rate` not a finite rate in its range.
    #[error("peer_rate must be from 0.001 to 1e9 tasks per second, not {rate}")]
    PeerRate {
        /// The value given.
        rate: f64,
    },
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            clock_skew: Duration::from_secs(300),
            max_task_lifetime: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            max_connections_per_address: None,
            max_concurrent_requests: 1024,
            peer_rate: None,
            peer_burst: None,
            max_blob_bytes: 256 * 1024 * 1024,
            unreferenced_blob_ttl: Duration::from_secs(3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_pass_and_each_unworkable_value_is_named() {
        assert_eq!(Limits::default().check(), Ok(()));
        let refused = |change: fn(&mut Limits)| {
            let mut limits = Limits::default();
            change(&mut limits);
            limits.check().unwrap_err().to_string()
        };
        assert_eq!(
            refused(|l| l.max_connections = 0),
            "max_connections must be at least 1"
        );
        assert_eq!(
            refused(|l| l.max_concurrent_requests = 0),
            "max_concurrent_requests must be at least 1"
        );
        assert_eq!(
            refused(|l| l.header_read_timeout = Duration::ZERO),
            "header_read_timeout must be above zero"
        );
        assert_eq!(
            refused(|l| l.body_read_timeout = Duration::from_secs(u64::MAX)),
            format!(
                "body_read_timeout must be at most 86400 s, not {} s",
                u64::MAX
            )
        );
        assert!(
            refused(|l| l.max_task_lifetime = Duration::from_secs(31 * 86400))
                .starts_with("max_task_lifetime must be at most 2592000 s")
        );
        for rate in [0.0, -1.0, 1e-300, f64::NAN, f64::INFINITY] {
            let mut limits = Limits {
                peer_rate: Some(rate),
                ..Limits::default()
            };
            let error = limits.check().unwrap_err().to_string();
            assert!(error.starts_with("peer_rate must be from 0.001"), "{error}");
            limits.peer_rate = Some(0.001);
            assert_eq!(limits.check(), Ok(()));
        }
        assert_eq!(
            refused(|l| l.peer_burst = Some(0)),
            "peer_burst must be at least 1"
        );
        assert_eq!(
            refused(|l| l.max_header_bytes = 8191),
            "max_header_bytes must be from 8192 to 1048576 bytes, not 8191"
        );
        assert_eq!(
            refused(|l| l.max_header_bytes = 1024 * 1024 + 1),
            "max_header_bytes must be from 8192 to 1048576 bytes, not 1048577"
        );
        assert_eq!(
            refused(|l| l.max_connections_per_address = Some(0)),
            "max_connections_per_address must be at least 1"
        );
        assert_eq!(
            refused(|l| l.max_connections_per_address = Some(4097)),
            "max_connections_per_address (4097) must be at most max_connections (4096)"
        );
        // The ends of the head's range are accepted.
        for bytes in [8192, 1024 * 1024] {
            let limits = Limits {
                max_header_bytes: bytes,
                ..Limits::default()
            };
            assert_eq!(limits.check(), Ok(()));
        }
        // A drain timeout and a clock skew of zero are allowed.
        let zero = Limits {
            drain_timeout: Duration::ZERO,
            clock_skew: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(zero.check(), Ok(()));
    }

    #[test]
    fn the_per_address_default_follows_a_lower_max_connections() {
        assert_eq!(Limits::default().connections_per_address(), 512);
        let small = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        assert_eq!(small.connections_per_address(), 2);
        assert_eq!(small.check(), Ok(()));
        let set = Limits {
            max_connections_per_address: Some(7),
            ..Limits::default()
        };
        assert_eq!(set.connections_per_address(), 7);
    }
}
