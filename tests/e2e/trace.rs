//! Traces across machines: every request of a delegation carries a W3C
//! `traceparent`; a node puts its trace id on the log lines of the
//! request, and with an OTLP endpoint the spans of the delegator and of
//! the node, sent to a real OTLP/HTTP receiver, form one trace.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use sage_crypto::sign_envelope;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{QualityRequirements, Task};

use crate::fixture::Fleet;
use crate::util::{http_with, FakeNode, Keys, Node};

/// The log lines of `node` that carry `trace_id` in a span's fields.
fn lines_of_trace(node: &Node, trace_id: &str) -> Vec<serde_json::Value> {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| {
            line["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace_id))
        })
        .collect()
}

#[test]
fn a_delegations_trace_id_is_on_the_nodes_log_lines_of_it() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let thor = keys.serve("Thor", &["--log-format", "json"]);
    let run = keys.delegate(&["--port", &thor.port(), "--json", "--task-type", "echo"]);
    run.assert_code(0);
    let json = run.json();
    let trace_id = json["trace_id"].as_str().expect("a trace id").to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert!(trace_id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(trace_id, "0".repeat(32));
    let task_id = json["task"]["task_id"].as_str().unwrap().to_owned();
    assert!(thor.wait_for_log(&task_id));
    let lines = lines_of_trace(&thor, &trace_id);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["task_id"].as_str() == Some(task_id.as_str())),
        "no line of task {task_id} carries trace {trace_id}:\n{}",
        thor.log()
    );

    // Another delegation is another trace.
    let again = keys.delegate(&["--port", &thor.port(), "--json", "--task-type", "echo"]);
    again.assert_code(0);
    assert_ne!(again.json()["trace_id"], trace_id);
}

/// A task for Thor signed by Sprout, as the body of `POST /v1/tasks`.
fn signed_task(keys: &Keys) -> (String, Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let task_id = format!("t-trace-{now}");
    let task = Task {
        task_id: task_id.clone(),
        task_type: "echo".into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: now,
        expires_at: now + 60_000,
        nonce: format!("{now:032x}"),
        input: serde_json::json!({"n": 1}),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    };
    let envelope = sign_envelope(
        &keys.key("Sprout"),
        TASK_PAYLOAD_TYPE,
        &serde_json::to_vec(&task).unwrap(),
    );
    (task_id, serde_json::to_vec(&envelope).unwrap())
}

#[test]
fn a_malformed_traceparent_is_ignored_and_the_task_runs() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let thor = keys.serve("Thor", &["--log-format", "json"]);
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "not a traceparent",
    ] {
        let (task_id, body) = signed_task(&keys);
        let answer = http_with(
            thor.addr,
            "POST",
            "/v1/tasks",
            &[("traceparent", bad)],
            &body,
        );
        assert_eq!(
            answer.status,
            200,
            "{bad}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(thor.executions_of(&task_id), 1);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!thor.log().contains("\"trace_id\""), "{}", thor.log());

    // A good one given by hand is taken as it is.
    let good = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (task_id, body) = signed_task(&keys);
    let header = format!("00-{good}-00f067aa0ba902b7-01");
    let answer = http_with(
        thor.addr,
        "POST",
        "/v1/tasks",
        &[("traceparent", &header)],
        &body,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(thor.wait_for_log(&task_id));
    assert!(!lines_of_trace(&thor, good).is_empty(), "{}", thor.log());
}

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    platform: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, decoded and kept.
fn receiver() -> (FakeNode, Arc<Mutex<Vec<Span>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let node = FakeNode::start(move |method, path, body| {
        if method != "POST" || path != "/v1/traces" {
            return Some((404, b"{}".to_vec()));
        }
        let Ok(request) = ExportTraceServiceRequest::decode(body) else {
            return Some((400, b"{}".to_vec()));
        };
        let mut kept = kept.lock().unwrap();
        for resource in request.resource_spans {
            let attribute = |key: &str| {
                resource
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                    .and_then(|a| a.value.as_ref()?.value.clone())
                    .map(|v| match v {
                        Value::StringValue(s) => s,
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default()
            };
            let (service, platform) = (attribute("service.name"), attribute("sage.platform"));
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(Span {
                        service: service.clone(),
                        platform: platform.clone(),
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                    });
                }
            }
        }
        Some((200, Vec::new()))
    });
    (node, spans)
}

/// The spans of `trace_id` once both processes sent theirs, with at least
/// `requests` of Thor's `request` spans (waiting up to 20 s: the
/// delegator sends its spans before exiting, the node with its next
/// batch).
fn spans_of(spans: &Mutex<Vec<Span>>, trace_id: &str, thor: &Node, requests: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let of_trace: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        let thors = of_trace
            .iter()
            .filter(|s| s.platform == "Thor" && s.name == "request")
            .count();
        if thors >= requests && of_trace.iter().any(|s| s.platform == "Sprout") {
            return of_trace;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {trace_id} from both processes: {:#?}\nThor's log:\n{}",
            spans.lock().unwrap(),
            thor.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `sage.toml` beside `keys` that sends spans to `endpoint`; its path.
fn otlp_config(keys: &Keys, endpoint: &str) -> String {
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(
        &config,
        format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n"),
    )
    .unwrap();
    config.to_str().unwrap().to_owned()
}

/// The node's batch sent every 100 ms rather than every 5 s.
fn soon() -> (&'static str, &'static OsStr) {
    ("OTEL_BSP_SCHEDULE_DELAY", OsStr::new("100"))
}

#[test]
fn with_an_otlp_endpoint_delegator_and_node_spans_form_one_trace() {
    let (collector, spans) = receiver();
    let endpoint = format!("http://{}", collector.addr);
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = otlp_config(&keys, &endpoint);
    let thor = keys.serve_with_env("Thor", &["--config", &config], &[soon()]);
    let run = keys.delegate(&[
        "--port",
        &thor.port(),
        "--json",
        "--otlp-endpoint",
        &endpoint,
        "--task-type",
        "echo",
    ]);
    run.assert_code(0);
    let trace_id = run.json()["trace_id"].as_str().unwrap().to_owned();

    let of_trace = spans_of(&spans, &trace_id, &thor, 2);
    assert!(
        of_trace.iter().all(|s| s.service == "sage"),
        "{of_trace:#?}"
    );
    let by_id: BTreeMap<&str, &Span> = of_trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let sprout: BTreeSet<&str> = of_trace
        .iter()
        .filter(|s| s.platform == "Sprout")
        .map(|s| s.span_id.as_str())
        .collect();
    let requests: Vec<&Span> = of_trace
        .iter()
        .filter(|s| s.platform == "Thor" && s.name == "request")
        .collect();
    // The health check and the task, each the child of a span of Sprout's.
    assert!(requests.len() >= 2, "{of_trace:#?}");
    for request in &requests {
        assert!(
            sprout.contains(request.parent_span_id.as_str()),
            "Thor's request span's parent is no span of Sprout's: {request:?}\n{of_trace:#?}"
        );
        assert_eq!(by_id[request.parent_span_id.as_str()].name, "send");
    }
    // Sprout's spans hang under its one delegation span.
    let roots: Vec<&Span> = of_trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{of_trace:#?}");
    assert_eq!(
        (roots[0].platform.as_str(), roots[0].name.as_str()),
        ("Sprout", "delegate")
    );
}

#[test]
fn an_otlp_endpoint_that_is_no_url_is_reported_like_other_urls() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(&config, "[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n").unwrap();
    let run = keys.run(&["config", "check", "--config", config.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&[
        "sage.toml:2: telemetry.otlp_endpoint: \"127.0.0.1:4318\" must start with http:// or https://",
    ]);
    // The flag of a short command: bad usage, before anything is sent.
    let run = keys.delegate(&["--otlp-endpoint", "nowhere", "--task-type", "echo"]);
    run.assert_code(2);
    run.assert_stderr(&["the OTLP endpoint \"nowhere\" is not an http:// or https:// URL"]);
}

#[test]
fn a_routed_delegation_is_one_trace_from_the_survey_to_the_task() {
    let (collector, spans) = receiver();
    let endpoint = format!("http://{}", collector.addr);
    let fleet = Fleet::new()
        .node("Sprout")
        .node("Thor")
        .trusting_each_other();
    let keys = fleet.keys("Thor");
    let config = otlp_config(keys, &endpoint);
    let thor = keys.serve_with_env("Thor", &["--config", &config], &[soon()]);
    fleet.keys("Sprout").trust(
        "Thor",
        fleet.public("Thor"),
        &["--address", &thor.address()],
    );
    let run = fleet.keys("Sprout").run(&[
        "delegate",
        "--local",
        "Sprout",
        "--json",
        "--otlp-endpoint",
        &endpoint,
        "--task-type",
        "echo",
    ]);
    run.assert_code(0);
    let trace_id = run.json()["trace_id"].as_str().unwrap().to_owned();
    // The capabilities, the health check and the task.
    let of_trace = spans_of(&spans, &trace_id, &thor, 3);
    let roots: Vec<&Span> = of_trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{of_trace:#?}");
    assert_eq!(roots[0].name, "delegate");
}
