//! `GET /metrics`: the node's counters in Prometheus' text format (0.0.4),
//! encoded by `prometheus-client`.
//!
//! Labels carry only what the node itself decided or verified (endpoint,
//! status, verified peer name, task type, outcome, refusal code, failure
//! kind), never a raw request value, so a client cannot grow the label sets
//! at will: a peer name is one of the trusted peers, a task type one the node
//! runs (tasks are counted once admitted), and an unknown path is `other`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use sage_exec::FailureKind;

/// The `Content-Type` of the text format that [`Metrics::render`] writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds: from a fraction of a
/// millisecond (an echo on loopback) to minutes (a model run).
const BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    60.0, 300.0,
];

/// Why the transport closed a connection on its own, for
/// `sage_connections_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CloseReason {
    /// Its request head was over `max_header_bytes` (answered 431).
    HeadTooLarge,
    /// Its address already had `max_connections_per_address` open.
    PerAddressCap,
    /// At `max_connections`, it was the idlest and made room for a newcomer.
    EvictedIdle,
}

impl CloseReason {
    /// Every reason.
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

impl EncodeLabelValue for CloseReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// `sage_requests_total`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    status: u16,
}

/// A request histogram's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// `sage_tasks_total`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabels {
    peer: String,
    task_type: String,
    outcome: &'static str,
}

/// Labels of a series kept per task type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskTypeLabels {
    task_type: String,
}

/// `sage_execution_failures_total`'s labels; `kind` is
/// [`FailureKind::as_str`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    task_type: String,
    kind: &'static str,
}

/// `sage_refusals_total`'s labels: `reason` is a stable problem code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// `sage_connections_closed_total`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CloseLabels {
    reason: CloseReason,
}

/// `sage_build_info`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A histogram family over [`BUCKETS`].
type Histograms<S> = Family<S, Histogram, fn() -> Histogram>;

/// An empty latency histogram.
fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The node's counters and histograms. The gauges are read at each scrape
/// ([`Gauges`]) and encoded after them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<EndpointLabels>,
    tasks: Family<TaskLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    connections_closed: Family<CloseLabels, Counter>,
    verify_seconds: Histogram,
    execution_seconds: Histograms<TaskTypeLabels>,
    execution_failures: Family<FailureLabels, Counter>,
    /// The replay guard's size as last read, and when (see `observe`).
    pub(crate) replay_guard: Mutex<Option<(std::time::Instant, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::default();
        let request_seconds = Histograms::new_with_constructor(histogram);
        let tasks = Family::default();
        let refusals = Family::default();
        let connections_closed = Family::<CloseLabels, Counter>::default();
        let verify_seconds = histogram();
        let execution_seconds = Histograms::new_with_constructor(histogram);
        let execution_failures = Family::default();
        // Every reason from the start, zeros too: a rate over a series that
        // appears only at its first event misses that event.
        for reason in CloseReason::ALL {
            drop(connections_closed.get_or_create(&CloseLabels { reason }));
        }

        // The registry appends `_total` to counters and `.` to help texts.
        let mut registry = Registry::default();
        registry.register(
            "sage_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "sage_request_duration_seconds",
            "Whole request, from routing to the response's headers",
            request_seconds.clone(),
        );
        registry.register(
            "sage_tasks",
            "Tasks answered with a signed proof, by verified peer, task type and outcome (succeeded, failed, stored: a retry answered with the stored proof, interrupted)",
            tasks.clone(),
        );
        registry.register(
            "sage_execution_failures",
            "Executions that failed, by task type and kind of failure (exited, signaled, timeout, spawn, unreachable, http_status, ...)",
            execution_failures.clone(),
        );
        registry.register(
            "sage_refusals",
            "Requests refused, by stable problem code",
            refusals.clone(),
        );
        registry.register(
            "sage_connections_closed",
            "Connections the node closed to hold its limits: head_too_large (answered 431), per_address_cap (closed at accept), evicted_idle (the idlest, closed to make room at max_connections)",
            connections_closed.clone(),
        );
        registry.register(
            "sage_verify_duration_seconds",
            "Verifying a task envelope's signature",
            verify_seconds.clone(),
        );
        registry.register(
            "sage_execution_duration_seconds",
            "Running a task on its executor, by task type",
            execution_seconds.clone(),
        );
        // An info metric: the encoder names it `sage_build_info`.
        registry.register(
            "sage_build",
            "The running version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            tasks,
            refusals,
            connections_closed,
            verify_seconds,
            execution_seconds,
            execution_failures,
            replay_guard: Mutex::new(None),
        }
    }
}

/// Reads the router's state of each peer at a scrape. The node does not
/// route (it only serves), so it takes the view from whoever does.
pub type RouteView = Arc<dyn Fn() -> Vec<RouteGauge> + Send + Sync>;

/// One peer as the router sees it, exported on `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteGauge {
    /// The peer's name (a trusted peer: the label set stays bounded).
    pub peer: String,
    /// Delegations to it in flight.
    pub in_flight: u64,
    /// Its peak-EWMA time to proof, in seconds.
    pub latency_seconds: f64,
    /// When its cooldown ends (unix seconds), if it is cooling down.
    pub cooling_until: Option<f64>,
    /// How often it was ejected (decays with quiet time).
    pub ejections: u32,
    /// Its reputation score, 0 to 1.
    pub score: f64,
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
    /// The router's view of each peer, when the node routes.
    pub(crate) routes: Vec<RouteGauge>,
}

impl Gauges {
    /// A registry of these values alone, made per scrape: the task types of
    /// a reloaded config replace the old ones instead of lingering.
    fn registry(&self) -> Registry {
        let count = |n: usize| ConstGauge::new(level(n));
        let mut registry = Registry::default();
        registry.register(
            "sage_tasks_in_flight",
            "Tasks executing now",
            count(self.tasks_in_flight),
        );
        registry.register(
            "sage_requests_in_flight",
            "Requests being handled now (what max_concurrent_requests bounds)",
            count(self.requests_in_flight),
        );
        let running = Family::<TaskTypeLabels, Gauge>::default();
        let waiting = Family::<TaskTypeLabels, Gauge>::default();
        for (task_type, run, wait) in &self.executors {
            let labels = TaskTypeLabels {
                task_type: task_type.clone(),
            };
            running.get_or_create(&labels).set(level(*run));
            waiting.get_or_create(&labels).set(level(*wait));
        }
        registry.register(
            "sage_executor_running",
            "Tasks running on each executor",
            running,
        );
        registry.register(
            "sage_executor_queue_depth",
            "Tasks waiting in each executor's queue",
            waiting,
        );
        if let Some(size) = self.replay_guard {
            registry.register(
                "sage_replay_guard_entries",
                "Envelopes the replay guard remembers: one per recorded task and one per retry's nonce not yet pruned",
                ConstGauge::new(level(size)),
            );
        }
        registry.register("sage_peers", "Trusted peers", count(self.peers));
        if !self.routes.is_empty() {
            self.register_routes(&mut registry);
        }
        registry.register(
            "sage_uptime_seconds",
            "Seconds since the node started",
            // To the millisecond: more digits would only be noise.
            ConstGauge::new((self.uptime * 1000.0).round() / 1000.0),
        );
        registry
    }
}

impl Gauges {
    /// `sage_route_*{peer}`: what the router knows of each peer.
    fn register_routes(&self, registry: &mut Registry) {
        let in_flight = Family::<PeerLabels, Gauge>::default();
        let latency = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        let cooling = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        let ejections = Family::<PeerLabels, Gauge>::default();
        let score = Family::<PeerLabels, Gauge<f64, AtomicU64>>::default();
        for route in &self.routes {
            let labels = PeerLabels {
                peer: route.peer.clone(),
            };
            in_flight.get_or_create(&labels).set(level(route.in_flight));
            latency.get_or_create(&labels).set(route.latency_seconds);
            cooling
                .get_or_create(&labels)
                .set(route.cooling_until.unwrap_or(0.0));
            ejections.get_or_create(&labels).set(level(route.ejections));
            score.get_or_create(&labels).set(route.score);
        }
        registry.register(
            "sage_route_in_flight",
            "Delegations in flight to each peer",
            in_flight,
        );
        registry.register(
            "sage_route_latency_seconds",
            "Each peer's peak-EWMA time to a verified proof, as the router weighs it",
            latency,
        );
        registry.register(
            "sage_route_cooling_until_seconds",
            "When each peer's cooldown ends (unix time), 0 if it is not cooling down",
            cooling,
        );
        registry.register(
            "sage_route_ejections",
            "How often each peer was ejected (decaying with quiet time)",
            ejections,
        );
        registry.register(
            "sage_route_score",
            "Each peer's reputation score (0 to 1), from verified outcomes",
            score,
        );
    }
}

/// A series kept per peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

/// A count as a gauge's value (a count beyond `i64` shows as its maximum).
fn level(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The endpoints that get their own label; anything else is `other`.
pub(crate) fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/health" => "/health",
        "/metrics" => "/metrics",
        "/v1/tasks" => "/v1/tasks",
        "/v1/capabilities" => "/v1/capabilities",
        "/execute_task" => "/execute_task",
        // One label for every digest, so that blobs add no series each.
        blob if blob.starts_with("/v1/blobs/") => "/v1/blobs",
        _ => "other",
    }
}

impl Metrics {
    /// A request answered with `status` after `elapsed`.
    pub(crate) fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, status })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// A refusal with this stable code.
    pub(crate) fn refusal(&self, code: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { reason: code })
            .inc();
    }

    /// A connection the transport closed, and why.
    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&CloseLabels { reason })
            .inc();
    }

    /// How long verifying a task's signature took.
    pub(crate) fn verified(&self, elapsed: Duration) {
        self.verify_seconds.observe(elapsed.as_secs_f64());
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
        self.tasks
            .get_or_create(&TaskLabels {
                peer: peer.to_owned(),
                task_type: task_type.to_owned(),
                outcome,
            })
            .inc();
        if let Some(elapsed) = ran {
            self.execution_seconds
                .get_or_create(&TaskTypeLabels {
                    task_type: task_type.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// An execution of `task_type` that failed with `kind`.
    pub(crate) fn execution_failed(&self, task_type: &str, kind: FailureKind) {
        self.execution_failures
            .get_or_create(&FailureLabels {
                task_type: task_type.to_owned(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The text exposition of every counter and of `gauges`.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &gauges.registry());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every one of `lines` is a whole line of `text`.
    fn assert_has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing {line:?} in\n{text}"
            );
        }
    }

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
            routes: vec![RouteGauge {
                peer: "Sprout".into(),
                in_flight: 2,
                latency_seconds: 0.25,
                cooling_until: None,
                ejections: 1,
                score: 0.5,
            }],
            tasks_in_flight: 1,
            requests_in_flight: 2,
            executors: vec![("echo".into(), 1, 3)],
            replay_guard: Some(42),
            peers: 2,
            uptime: 1.5,
        });
        assert_has_lines(
            &text,
            &[
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
                "sage_route_in_flight{peer=\"Sprout\"} 2",
                "sage_route_latency_seconds{peer=\"Sprout\"} 0.25",
                "sage_route_cooling_until_seconds{peer=\"Sprout\"} 0.0",
                "sage_route_ejections{peer=\"Sprout\"} 1",
                "sage_route_score{peer=\"Sprout\"} 0.5",
                "sage_executor_running{task_type=\"echo\"} 1",
                "sage_replay_guard_entries 42",
                "sage_tasks_in_flight 1",
                "sage_requests_in_flight 2",
                "# TYPE sage_request_duration_seconds histogram",
            ],
        );
        // Every sample line is NAME{...} VALUE or NAME VALUE with a number.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn failed_executions_are_counted_by_task_type_and_kind() {
        let m = Metrics::default();
        m.execution_failed("summarize", FailureKind::Exited(3));
        m.execution_failed("summarize", FailureKind::Exited(1));
        m.execution_failed("summarize", FailureKind::Timeout);
        m.execution_failed("llama", FailureKind::HttpStatus(500));
        let text = m.render(&Gauges::default());
        assert_has_lines(
            &text,
            &[
                "# TYPE sage_execution_failures_total counter",
                "sage_execution_failures_total{task_type=\"summarize\",kind=\"exited\"} 2",
                "sage_execution_failures_total{task_type=\"summarize\",kind=\"timeout\"} 1",
                "sage_execution_failures_total{task_type=\"llama\",kind=\"http_status\"} 1",
            ],
        );
    }

    #[test]
    fn the_exposition_is_the_plain_text_format() {
        let m = Metrics::default();
        m.request("/health", 200, Duration::from_millis(1));
        let text = m.render(&Gauges {
            uptime: 2.0,
            ..Gauges::default()
        });
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        // 0.0.4 has no end marker, and a counter's TYPE names its series.
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "# TYPE sage_requests_total counter"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("sage_build_info{version=\"") && l.ends_with("\"} 1")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "sage_uptime_seconds 2.0"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "sage_peers 0"), "{text}");
        // No replay guard figure when the store did not answer.
        assert!(!text.contains("sage_replay_guard_entries"), "{text}");
    }

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(endpoint_label("/v1/tasks"), "/v1/tasks");
        assert_eq!(
            endpoint_label(&format!("/v1/blobs/sha256:{}", "a".repeat(64))),
            "/v1/blobs"
        );
        assert_eq!(endpoint_label("/../../etc/passwd"), "other");
    }
}
