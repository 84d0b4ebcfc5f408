//! Running as a long-lived service: SIGHUP reloads the config and the trust
//! store without dropping in-flight tasks, per-peer rate limits keyed by the
//! verified key, the global request limit, `/metrics`, and JSON logs with a
//! request id.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::fixture;
use crate::util::{http, http_with, Keys, Node, Run};

/// Thor's config: a 3 s command task and the built-in echo.
const BASE: &str = r#"
[executors.slow]
kind = "command"
command = ["sleep", "3"]

[executors.echo]
kind = "builtin"
builtin = "echo"
"#;

/// A fleet: Thor serves; Sprout and Legion each have their own key
/// directory and know Thor; Thor's peers.toml trusts only Sprout.
struct Fleet {
    nodes: fixture::Fleet,
    config: PathBuf,
}

impl Fleet {
    fn new(limits: &str) -> Fleet {
        let nodes = fixture::Fleet::new()
            .node("Thor")
            .node("Sprout")
            .node("Legion")
            .trust("Thor", &["Sprout"])
            .trust("Sprout", &["Thor"])
            .trust("Legion", &["Thor"]);
        let config = nodes
            .keys("Thor")
            .path()
            .parent()
            .unwrap()
            .join("sage.toml");
        std::fs::write(&config, format!("{limits}\n{BASE}")).unwrap();
        Fleet { nodes, config }
    }

    /// Thor's `sage peer add` of Legion.
    fn trust_legion(&self) {
        self.thor()
            .trust("Legion", self.nodes.public("Legion"), &[]);
    }

    fn thor(&self) -> &Keys {
        self.nodes.keys("Thor")
    }

    fn sprout(&self) -> &Keys {
        self.nodes.keys("Sprout")
    }

    fn legion(&self) -> &Keys {
        self.nodes.keys("Legion")
    }

    fn serve(&self, extra: &[&str]) -> Node {
        let mut args = vec!["--config", self.config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.thor().serve("Thor", &args)
    }
}

/// `sage delegate` from `from` (named `name`) to Thor.
fn delegate(from: &Keys, name: &str, node: &Node, task_type: &str) -> Run {
    from.run(&[
        "delegate",
        "--local",
        name,
        "--target",
        "Thor",
        "--host",
        "127.0.0.1",
        "--port",
        &node.port(),
        "--task-type",
        task_type,
        "--input",
        r#"{"n": 1}"#,
        "--json",
    ])
}

/// [`delegate`] on a thread.
fn delegate_in_background(
    from: &Keys,
    name: &str,
    node: &Node,
    task_type: &str,
) -> JoinHandle<Run> {
    #[rustfmt::skip]
    let args = [
        "delegate", "--local", name, "--target", "Thor", "--host", "127.0.0.1",
        "--port", &node.port(), "--task-type", task_type, "--json",
    ];
    from.spawn(&args)
}

fn hangup(node: &Node) {
    let status = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the log has `needle` `count` times (up to 10 s).
fn wait_for_count(node: &Node, needle: &str, count: usize) -> bool {
    for _ in 0..500 {
        if node.log().matches(needle).count() >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits until the node reports a task in flight (via `/metrics`).
fn wait_in_flight(node: &Node) -> bool {
    for _ in 0..300 {
        let metrics = String::from_utf8(http(node.addr, "GET", "/metrics", b"").body).unwrap();
        if metrics.lines().any(|l| l == "sage_tasks_in_flight 1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_swaps_peers_and_keeps_in_flight_tasks_and_a_bad_config_keeps_the_old() {
    let fleet = Fleet::new("");
    let node = fleet.serve(&[]);
    let refused = delegate(fleet.legion(), "Legion", &node, "echo");
    refused.assert_code(1).assert_stderr(&[
        "unknown_platform",
        "on Thor, add this node's key: `sage peer add --name Legion --public-key ",
        "--lct legion_sage_lct`",
    ]);
    // The line holds the key the delegator signs with.
    let legion_pub = fleet.legion().key("Legion").public().to_hex();
    refused.assert_stderr(&[&legion_pub]);
    assert_eq!(refused.json()["error"]["code"], "unknown_platform");

    // A task in flight across the reload.
    let slow = delegate_in_background(fleet.sprout(), "Sprout", &node, "slow");
    assert!(wait_in_flight(&node), "the slow task never started");

    // Sprout removed, Legion added, then SIGHUP.
    fleet
        .thor()
        .run(&["peer", "remove", "--name", "Sprout"])
        .assert_code(0);
    fleet.trust_legion();
    hangup(&node);
    assert!(wait_for_count(&node, "reloaded:", 1), "{}", node.log());
    assert!(
        node.log()
            .contains(r#"added=["Legion"] removed=["Sprout"]"#),
        "{}",
        node.log()
    );

    // From the next request on: Sprout refused, Legion accepted.
    delegate(fleet.sprout(), "Sprout", &node, "echo")
        .assert_code(1)
        .assert_stderr(&["unknown_platform"]);
    assert_eq!(
        delegate(fleet.legion(), "Legion", &node, "echo").json()["verified"],
        true
    );
    // The task that was running finished on its connection with a proof.
    let slow = slow.join().unwrap();
    slow.assert_code(0);
    assert_eq!(slow.json()["verified"], true);

    // A config that does not load: logged, the old one stays.
    write(
        &fleet.config,
        &format!("{BASE}\n[limits]\npeer_rate = \"fast\"\n"),
    );
    hangup(&node);
    assert!(
        wait_for_count(&node, "reload failed; keeping the previous config", 1),
        "{}",
        node.log()
    );
    assert!(
        node.log().contains("sage.toml"),
        "the error names the file: {}",
        node.log()
    );
    assert_eq!(
        delegate(fleet.legion(), "Legion", &node, "echo").json()["verified"],
        true
    );

    // A program that does not exist: refused as at a start, not at the
    // first task.
    write(
        &fleet.config,
        &format!(
            "{BASE}\n[executors.gone]\nkind = \"command\"\ncommand = [\"sage-no-such-program\"]\n"
        ),
    );
    hangup(&node);
    assert!(
        wait_for_count(&node, "reload failed; keeping the previous config", 2),
        "{}",
        node.log()
    );
    assert!(
        node.log()
            .contains("the program `sage-no-such-program` is not found on PATH"),
        "{}",
        node.log()
    );

    // Fixed again, with a new executor: served after the next SIGHUP. A new
    // listen address is only noted: the node keeps its port until a restart.
    write(
        &fleet.config,
        &format!(
            "[node]\nlisten = \"127.0.0.1:9\"\n{BASE}\n[executors.vision]\nkind = \"builtin\"\nbuiltin = \"simulate\"\n"
        ),
    );
    hangup(&node);
    assert!(wait_for_count(&node, "reloaded:", 2), "{}", node.log());
    assert!(
        node.log()
            .contains("reload: [node] listen changed; it takes effect only after a restart"),
        "{}",
        node.log()
    );
    assert_eq!(
        delegate(fleet.legion(), "Legion", &node, "vision").json()["verified"],
        true
    );
}

#[test]
fn a_peer_over_its_rate_is_refused_429_and_others_are_not() {
    let fleet = Fleet::new("[limits]\npeer_rate = 0.2\npeer_burst = 2\n");
    fleet.trust_legion();
    let node = fleet.serve(&[]);
    delegate(fleet.sprout(), "Sprout", &node, "echo").assert_code(0);
    // A captured envelope sent again is refused as a replay and does not
    // spend Sprout's budget (else anyone could lock a peer out).
    let export = fleet.sprout().run(&["proofs", "export"]);
    export.assert_code(0);
    let receipt: serde_json::Value =
        serde_json::from_str(export.stdout.lines().next().unwrap()).unwrap();
    let envelope = serde_json::to_vec(&receipt["task"]).unwrap();
    for _ in 0..5 {
        let answer = http(node.addr, "POST", "/v1/tasks", &envelope);
        assert_eq!(answer.problem_code(), "replayed");
    }
    delegate(fleet.sprout(), "Sprout", &node, "echo").assert_code(0);
    delegate(fleet.sprout(), "Sprout", &node, "echo")
        .assert_code(1)
        .assert_stderr(&["rate_limited (429)", "0.2 tasks per second"]);
    // Keyed by the verified key: Legion has its own budget.
    delegate(fleet.legion(), "Legion", &node, "echo").assert_code(0);
    let metrics = String::from_utf8(http(node.addr, "GET", "/metrics", b"").body).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"sage_refusals_total{reason="rate_limited"} 1"#),
        "{metrics}"
    );
}

#[test]
fn over_the_request_limit_a_node_answers_busy_and_still_reports_health() {
    let fleet = Fleet::new("[limits]\nmax_concurrent_requests = 1\n");
    let node = fleet.serve(&[]);
    let slow = delegate_in_background(fleet.sprout(), "Sprout", &node, "slow");
    assert!(wait_in_flight(&node), "the slow task never started");
    let answer = http(node.addr, "POST", "/v1/tasks", b"{}");
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.problem_code(), "busy");
    assert!(
        answer
            .headers
            .to_ascii_lowercase()
            .contains("retry-after: 1"),
        "{}",
        answer.headers
    );
    assert_eq!(http(node.addr, "GET", "/health", b"").status, 200);
    slow.join().unwrap().assert_code(0);
    // The place is free again.
    delegate(fleet.sprout(), "Sprout", &node, "echo").assert_code(0);
}

#[test]
fn metrics_count_requests_tasks_refusals_and_latency() {
    let fleet = Fleet::new("");
    let node = fleet.serve(&[]);
    delegate(fleet.sprout(), "Sprout", &node, "echo").assert_code(0);
    assert_eq!(
        http(node.addr, "POST", "/v1/tasks", b"not json").status,
        400
    );
    let answer = http(node.addr, "GET", "/metrics", b"");
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers.contains("text/plain; version=0.0.4"),
        "{}",
        answer.headers
    );
    let text = String::from_utf8(answer.body).unwrap();
    for line in [
        r#"sage_tasks_total{peer="Sprout",task_type="echo",outcome="succeeded"} 1"#,
        r#"sage_refusals_total{reason="malformed"} 1"#,
        r#"sage_requests_total{endpoint="/v1/tasks",status="200"} 1"#,
        r#"sage_requests_total{endpoint="/v1/tasks",status="400"} 1"#,
        r#"sage_requests_total{endpoint="/health",status="200"} 1"#,
        "sage_verify_duration_seconds_count 1",
        r#"sage_execution_duration_seconds_count{task_type="echo"} 1"#,
        r#"sage_executor_queue_depth{task_type="slow"} 0"#,
        "sage_replay_guard_entries 1",
        "sage_peers 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn json_logs_carry_the_request_id_on_every_line_of_a_request() {
    let fleet = Fleet::new("");
    let node = fleet.serve(&["--log-format", "json"]);
    let answer = http_with(
        node.addr,
        "GET",
        "/health",
        &[("x-request-id", "probe-42")],
        b"",
    );
    assert!(
        answer
            .headers
            .to_ascii_lowercase()
            .contains("x-request-id: probe-42"),
        "{}",
        answer.headers
    );
    // A made-up id is replaced, not echoed.
    let answer = http_with(
        node.addr,
        "GET",
        "/health",
        &[("x-request-id", "a b\"c")],
        b"",
    );
    assert!(!answer.headers.contains("a b"), "{}", answer.headers);

    delegate(fleet.sprout(), "Sprout", &node, "echo").assert_code(0);
    assert!(wait_for_count(&node, "task executed", 1), "{}", node.log());
    let log = node.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let executed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "task executed")
        .expect("a task executed line");
    let spans = executed["spans"].as_array().expect("spans");
    let id = spans
        .iter()
        .find(|s| s["name"] == "request")
        .and_then(|s| s["id"].as_str())
        .expect("the request span's id");
    assert_eq!(id.len(), 16, "{executed}");
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    // Nothing secret: no private key bytes, no signature-bearing body.
    let secret = hex_of(&fleet.thor().key("Thor").to_key_file()[..32]);
    assert!(!log.contains(&secret));
    assert!(!log.contains("\"sig\""), "{log}");
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
