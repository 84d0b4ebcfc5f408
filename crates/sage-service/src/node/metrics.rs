//! `GET /metrics`: the node's counters in Prometheus' text format (0.0.4),
//! written by hand: a few counters and histograms do not need a registry.
//!
//! Labels carry only what the node itself decided or verified (endpoint,
//! status, verified peer name, task type, outcome, refusal code), never a
//! raw request value, so a client cannot grow the label sets at will: a
//! peer name is one of the trusted peers, a task type one the node runs
//! (tasks are counted once admitted), and an unknown path is `other`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: from a fraction of a
/// millisecond (an echo on loopback) to minutes (a model run).
const BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    60.0, 300.0,
];

/// Why the transport closed a connection on its own, for
/// `sage_connections_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Its request head was over `max_header_bytes` (answered 431).
    HeadTooLarge,
    /// Its address already had `max_connections_per_address` open.
    PerAddressCap,
    /// At `max_connections`, it was the idlest and made room for a newcomer.
    EvictedIdle,
}

impl CloseReason {
    /// Every reason, in the order they are declared (their index) and shown.
    const ALL: [CloseReason; 3] = [
        CloseReason::HeadTooLarge,
        CloseReason::PerAddressCap,
        CloseReason::EvictedIdle,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeadTooLarge => "head_too_large",
            CloseReason::PerAddressCap => "per_address_cap",
            CloseReason::EvictedIdle => "evicted_idle",
        }
    }
}

/// A latency histogram.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        // Cumulative buckets are summed at render time.
        if let Some(i) = BUCKETS.iter().position(|&bound| secs <= bound) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// (endpoint, status) → requests.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// endpoint → whole-request latency.
    request_seconds: BTreeMap<&'static str, Histogram>,
    /// (peer, task type, outcome) → tasks answered.
    tasks: BTreeMap<(String, String, &'static str), u64>,
    /// refusal code → refusals.
    refusals: BTreeMap<&'static str, u64>,
    /// Signature verification of task envelopes.
    verify_seconds: Histogram,
    /// task type → execution latency.
    execution_seconds: BTreeMap<String, Histogram>,
    /// Connections the transport closed, by [`CloseReason::ALL`]'s order.
    connections_closed: [u64; CloseReason::ALL.len()],
}

/// The node's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    counters: Mutex<Counters>,
    /// The replay guard's size as last read, and when (see `observe`).
    pub(crate) replay_guard: Mutex<Option<(std::time::Instant, u64)>>,
}

/// Gauges read when `/metrics` is scraped.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Tasks executing now.
    pub(crate) tasks_in_flight: usize,
    /// Requests being handled now.
    pub(crate) requests_in_flight: usize,
    /// task type → (running, waiting in the executor's queue).
    pub(crate) executors: Vec<(String, usize, usize)>,
    /// Envelopes the replay guard remembers, if the store answered.
    pub(crate) replay_guard: Option<u64>,
    /// Trusted peers.
    pub(crate) peers: usize,
    /// Seconds since the node started.
    pub(crate) uptime: f64,
}

/// The endpoints that get their own label; anything else is `other`.
pub(crate) fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/tasks" => "/v1/tasks",
        "/v1/capabilities" => "/v1/capabilities",
        "/execute_task" => "/execute_task",
        _ => "other",
    }
}

impl Metrics {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request answered with `status` after `elapsed`.
    pub(crate) fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let mut c = self.counters();
        *c.requests.entry((endpoint, status)).or_default() += 1;
        c.request_seconds
            .entry(endpoint)
            .or_default()
            .observe(elapsed);
    }

    /// A refusal with this stable code.
    pub(crate) fn refusal(&self, code: &'static str) {
        *self.counters().refusals.entry(code).or_default() += 1;
    }

    /// A connection the transport closed, and why.
    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.counters().connections_closed[reason as usize] += 1;
    }

    /// How long verifying a task's signature took.
    pub(crate) fn verified(&self, elapsed: Duration) {
        self.counters().verify_seconds.observe(elapsed);
    }

    /// A task of `peer` answered with a proof of `outcome`; `ran` is the
    /// execution's duration when it ran now (not a stored answer).
    pub(crate) fn task(
        &self,
        peer: &str,
        task_type: &str,
        outcome: &'static str,
        ran: Option<Duration>,
    ) {
        let mut c = self.counters();
        *c.tasks
            .entry((peer.to_owned(), task_type.to_owned(), outcome))
            .or_default() += 1;
        if let Some(elapsed) = ran {
            c.execution_seconds
                .entry(task_type.to_owned())
                .or_default()
                .observe(elapsed);
        }
    }

    /// The text exposition of every counter and of `gauges`.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let c = self.counters();
        let mut out = String::with_capacity(8 * 1024);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(
            &mut out,
            "sage_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status.",
        );
        for ((endpoint, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "sage_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        head(
            &mut out,
            "sage_request_duration_seconds",
            "histogram",
            "Whole request, from routing to the response's headers.",
        );
        for (endpoint, h) in &c.request_seconds {
            h.render(
                &mut out,
                "sage_request_duration_seconds",
                &format!("endpoint=\"{endpoint}\""),
            );
        }
        head(&mut out, "sage_tasks_total", "counter", "Tasks answered with a signed proof, by verified peer, task type and outcome (succeeded, failed, stored: a retry answered with the stored proof, interrupted).");
        for ((peer, task_type, outcome), n) in &c.tasks {
            let _ = writeln!(
                out,
                "sage_tasks_total{{peer=\"{}\",task_type=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(peer),
                escape(task_type)
            );
        }
        head(
            &mut out,
            "sage_refusals_total",
            "counter",
            "Requests refused, by stable problem code.",
        );
        for (code, n) in &c.refusals {
            let _ = writeln!(out, "sage_refusals_total{{reason=\"{code}\"}} {n}");
        }
        head(
            &mut out,
            "sage_connections_closed_total",
            "counter",
            "Connections the node closed to hold its limits: head_too_large (answered 431), per_address_cap (closed at accept), evicted_idle (the idlest, closed to make room at max_connections).",
        );
        // Every reason, zeros too: a rate over a series that appears only at
        // its first event misses that event.
        for (reason, n) in CloseReason::ALL.iter().zip(c.connections_closed) {
            let _ = writeln!(
                out,
                "sage_connections_closed_total{{reason=\"{}\"}} {n}",
                reason.as_str()
            );
        }
        head(
            &mut out,
            "sage_verify_duration_seconds",
            "histogram",
            "Verifying a task envelope's signature.",
        );
        c.verify_seconds
            .render(&mut out, "sage_verify_duration_seconds", "");
        head(
            &mut out,
            "sage_execution_duration_seconds",
            "histogram",
            "Running a task on its executor, by task type.",
        );
        for (task_type, h) in &c.execution_seconds {
            h.render(
                &mut out,
                "sage_execution_duration_seconds",
                &format!("task_type=\"{}\"", escape(task_type)),
            );
        }
        drop(c);

        head(
            &mut out,
            "sage_tasks_in_flight",
            "gauge",
            "Tasks executing now.",
        );
        let _ = writeln!(out, "sage_tasks_in_flight {}", gauges.tasks_in_flight);
        head(
            &mut out,
            "sage_requests_in_flight",
            "gauge",
            "Requests being handled now (what max_concurrent_requests bounds).",
        );
        let _ = writeln!(out, "sage_requests_in_flight {}", gauges.requests_in_flight);
        head(
            &mut out,
            "sage_executor_running",
            "gauge",
            "Tasks running on each executor.",
        );
        for (task_type, running, _) in &gauges.executors {
            let _ = writeln!(
                out,
                "sage_executor_running{{task_type=\"{}\"}} {running}",
                escape(task_type)
            );
        }
        head(
            &mut out,
            "sage_executor_queue_depth",
            "gauge",
            "Tasks waiting in each executor's queue.",
        );
        for (task_type, _, waiting) in &gauges.executors {
            let _ = writeln!(
                out,
                "sage_executor_queue_depth{{task_type=\"{}\"}} {waiting}",
                escape(task_type)
            );
        }
        if let Some(size) = gauges.replay_guard {
            head(&mut out, "sage_replay_guard_entries", "gauge", "Envelopes the replay guard remembers: one per recorded task and one per retry's nonce not yet pruned.");
            let _ = writeln!(out, "sage_replay_guard_entries {size}");
        }
        head(&mut out, "sage_peers", "gauge", "Trusted peers.");
        let _ = writeln!(out, "sage_peers {}", gauges.peers);
        head(
            &mut out,
            "sage_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
        );
        let _ = writeln!(out, "sage_uptime_seconds {:.3}", gauges.uptime);
        head(&mut out, "sage_build_info", "gauge", "The running version.");
        let _ = writeln!(
            out,
            "sage_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::default();
        m.request("/v1/tasks", 200, Duration::from_micros(400));
        m.request("/v1/tasks", 200, Duration::from_millis(3));
        m.request("/v1/tasks", 403, Duration::from_micros(100));
        m.refusal("unknown_platform");
        m.connection_closed(CloseReason::EvictedIdle);
        m.connection_closed(CloseReason::EvictedIdle);
        m.connection_closed(CloseReason::HeadTooLarge);
        m.verified(Duration::from_micros(40));
        m.task(
            "Sprout",
            "echo",
            "succeeded",
            Some(Duration::from_micros(10)),
        );
        m.task("Sprout", "echo", "stored", None);
        m.task("we\"ird", "echo", "failed", Some(Duration::from_secs(2)));
        let text = m.render(&Gauges {
            tasks_in_flight: 1,
            requests_in_flight: 2,
            executors: vec![("echo".into(), 1, 3)],
            replay_guard: Some(42),
            peers: 2,
            uptime: 1.5,
        });
        for line in [
            "sage_requests_total{endpoint=\"/v1/tasks\",status=\"200\"} 2",
            "sage_requests_total{endpoint=\"/v1/tasks\",status=\"403\"} 1",
            "sage_request_duration_seconds_bucket{endpoint=\"/v1/tasks\",le=\"0.00025\"} 1",
            "sage_request_duration_seconds_bucket{endpoint=\"/v1/tasks\",le=\"0.0005\"} 2",
            "sage_request_duration_seconds_bucket{endpoint=\"/v1/tasks\",le=\"0.005\"} 3",
            "sage_request_duration_seconds_bucket{endpoint=\"/v1/tasks\",le=\"+Inf\"} 3",
            "sage_request_duration_seconds_count{endpoint=\"/v1/tasks\"} 3",
            "sage_refusals_total{reason=\"unknown_platform\"} 1",
            "sage_connections_closed_total{reason=\"head_too_large\"} 1",
            "sage_connections_closed_total{reason=\"per_address_cap\"} 0",
            "sage_connections_closed_total{reason=\"evicted_idle\"} 2",
            "sage_verify_duration_seconds_count 1",
            "sage_tasks_total{peer=\"Sprout\",task_type=\"echo\",outcome=\"succeeded\"} 1",
            "sage_tasks_total{peer=\"Sprout\",task_type=\"echo\",outcome=\"stored\"} 1",
            "sage_tasks_total{peer=\"we\\\"ird\",task_type=\"echo\",outcome=\"failed\"} 1",
            "sage_execution_duration_seconds_bucket{task_type=\"echo\",le=\"2.5\"} 2",
            "sage_execution_duration_seconds_bucket{task_type=\"echo\",le=\"1\"} 1",
            "sage_executor_queue_depth{task_type=\"echo\"} 3",
            "sage_executor_running{task_type=\"echo\"} 1",
            "sage_replay_guard_entries 42",
            "sage_tasks_in_flight 1",
            "sage_requests_in_flight 2",
            "# TYPE sage_request_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is NAME{...} VALUE or NAME VALUE with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(endpoint_label("/v1/tasks"), "/v1/tasks");
        assert_eq!(endpoint_label("/../../etc/passwd"), "other");
    }
}
