//! Every refusal of `POST /v1/tasks`, provoked the way an attacker would,
//! and checked to execute nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use sage_crypto::{sign_envelope, NodeKey};
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, QualityRequirements, Task};

use crate::fixture::serving_thor;
use crate::util::{assert_refused, http, HttpAnswer, Keys, Node};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn fresh_task(task_type: &str) -> Task {
    let now = now_ms();
    Task {
        task_id: format!("attack_{}", rand_hex()),
        task_type: task_type.into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: now,
        expires_at: now + 60_000,
        nonce: rand_hex(),
        input: serde_json::json!({"query": "hello"}),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    }
}

fn rand_hex() -> String {
    hex::encode(NodeKey::generate().public().as_bytes())[..32].to_owned()
}

fn sign(key: &NodeKey, task: &Task) -> Envelope {
    sign_envelope(key, TASK_PAYLOAD_TYPE, &serde_json::to_vec(task).unwrap())
}

fn post(node: &Node, body: &[u8]) -> HttpAnswer {
    http(node.addr, "POST", "/v1/tasks", body)
}

fn post_envelope(node: &Node, env: &Envelope) -> HttpAnswer {
    post(node, &serde_json::to_vec(env).unwrap())
}

/// Posts `task` signed by `key` and checks that `node` refuses it with
/// `status` and the problem `code`; the answer.
#[track_caller]
fn refused(node: &Node, key: &NodeKey, task: &Task, status: u16, code: &str) -> HttpAnswer {
    let answer = post_envelope(node, &sign(key, task));
    assert_refused(node, &answer, status, code);
    answer
}

/// Thor serves; Sprout is a known peer (its key file is in the directory).
fn setup() -> (Keys, Node, std::sync::Arc<NodeKey>) {
    let (keys, node) = serving_thor();
    let sprout = keys.key("Sprout");
    (keys, node, sprout)
}

#[test]
fn a_well_formed_task_is_accepted_and_a_resent_one_is_refused_as_replayed() {
    let (_keys, node, sprout) = setup();
    let task = fresh_task("echo");
    let env = sign(&sprout, &task);
    let first = post_envelope(&node, &env);
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let again = post_envelope(&node, &env);
    assert_refused(&node, &again, 409, "replayed");
    assert!(node.wait_for_log("request refused"));
    assert_eq!(node.executions_of(&task.task_id), 1, "{}", node.log());
}

#[test]
fn forgeries_are_refused_before_anything_runs() {
    let (_keys, node, sprout) = setup();

    // A stranger's key, claiming to be Sprout.
    let stranger = NodeKey::generate();
    let task = fresh_task("echo");
    assert_refused(
        &node,
        &post_envelope(&node, &sign(&stranger, &task)),
        403,
        "unknown_platform",
    );

    // Sprout's signature with one bit flipped.
    let task2 = fresh_task("echo");
    let mut env = sign(&sprout, &task2);
    let mut sig = base64_decode(&env.signatures[0].sig);
    sig[10] ^= 0x01;
    env.signatures[0].sig = base64_encode(&sig);
    assert_refused(&node, &post_envelope(&node, &env), 403, "invalid_signature");

    // The payload changed after signing: a bigger budget in the same envelope.
    let task3 = fresh_task("echo");
    let mut env = sign(&sprout, &task3);
    let mut changed = task3.clone();
    changed.estimated_cost = 1000.0;
    env.payload = Envelope::new(TASK_PAYLOAD_TYPE, &serde_json::to_vec(&changed).unwrap()).payload;
    assert_refused(&node, &post_envelope(&node, &env), 403, "invalid_signature");

    // No signature at all.
    let task4 = fresh_task("echo");
    let mut env = sign(&sprout, &task4);
    env.signatures.clear();
    assert_refused(&node, &post_envelope(&node, &env), 403, "invalid_signature");

    // Sprout's valid signature over a task that claims Legion issued it.
    let mut task5 = fresh_task("echo");
    task5.issuer = "legion_sage_lct".into();
    refused(&node, &sprout, &task5, 403, "invalid_signature");

    for t in [&task, &task2, &task3, &task4, &task5] {
        assert_eq!(node.executions_of(&t.task_id), 0, "{}", node.log());
    }
}

#[test]
fn a_task_for_another_platform_is_refused() {
    let (_keys, node, sprout) = setup();
    let mut task = fresh_task("echo");
    task.audience = "legion_sage_lct".into();
    let answer = refused(&node, &sprout, &task, 403, "wrong_audience");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("legion_sage_lct"));
    assert_eq!(node.executions_of(&task.task_id), 0);
}

#[test]
fn old_and_far_future_tasks_are_refused() {
    let (_keys, node, sprout) = setup();
    let hour = 3_600_000;

    let mut old = fresh_task("echo");
    old.issued_at -= 2 * hour;
    old.expires_at = old.issued_at + 60_000;
    let answer = refused(&node, &sprout, &old, 403, "expired");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("expired"));

    let mut future = fresh_task("echo");
    future.issued_at += hour;
    future.expires_at = future.issued_at + 60_000;
    let answer = refused(&node, &sprout, &future, 403, "expired");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("in the future"));

    // Valid now, but claiming a day of validity: a replay window too long to guard.
    let mut long = fresh_task("echo");
    long.expires_at = long.issued_at + 24 * hour;
    refused(&node, &sprout, &long, 403, "expired");

    for t in [&old, &future, &long] {
        assert_eq!(node.executions_of(&t.task_id), 0);
    }
}

#[test]
fn the_skew_tolerance_is_configurable() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let node = keys.serve("Thor", &["--clock-skew", "1"]);
    let sprout = keys.key("Sprout");
    // 10 s in the future: fine with the default 5 min, refused with 1 s.
    let mut task = fresh_task("echo");
    task.issued_at += 10_000;
    task.expires_at += 10_000;
    refused(&node, &sprout, &task, 403, "expired");
}

#[test]
fn garbage_and_malformed_bodies_are_refused() {
    let (_keys, node, sprout) = setup();
    let answer = post(&node, b"\x00\xffGET / HTTP/1.0 {{{{");
    assert_refused(&node, &answer, 400, "malformed");

    let answer = post(&node, br#"{"payloadType": "x"}"#);
    assert_refused(&node, &answer, 400, "malformed");

    // A correctly signed payload that is not a task.
    let env = sign_envelope(&sprout, TASK_PAYLOAD_TYPE, br#"{"task_id": "x"}"#);
    let answer = post_envelope(&node, &env);
    assert_refused(&node, &answer, 400, "malformed");

    // Another payload type.
    let env = sign_envelope(&sprout, "application/x-other", b"{}");
    assert_refused(&node, &post_envelope(&node, &env), 400, "malformed");

    // A bad nonce.
    let mut task = fresh_task("echo");
    task.nonce = "not-hex".into();
    refused(&node, &sprout, &task, 400, "malformed");
    assert_eq!(node.executions_of(&task.task_id), 0);
}

#[test]
fn an_oversized_body_is_refused() {
    let (_keys, node, sprout) = setup();
    // Over the default 1 MiB limit, and correctly signed: size alone refuses it.
    let mut task = fresh_task("echo");
    task.input = serde_json::json!({ "blob": "a".repeat(1024 * 1024) });
    refused(&node, &sprout, &task, 413, "too_large");
    assert_eq!(node.executions_of(&task.task_id), 0);

    let keys = Keys::with(&["Thor", "Sprout"]);
    let small = keys.serve("Thor", &["--max-body-bytes", "2048"]);
    let answer = post(&small, &vec![b' '; 4096]);
    assert_refused(&small, &answer, 413, "too_large");
}

#[test]
fn an_unsupported_task_type_is_refused() {
    let (_keys, node, sprout) = setup();
    let task = fresh_task("rm_rf");
    let answer = refused(&node, &sprout, &task, 422, "unsupported_task");
    assert!(answer.json()["detail"].as_str().unwrap().contains("echo"));
    // Refused before anything is recorded: the same nonce is still fresh.
    let mut retry = task.clone();
    retry.task_type = "echo".into();
    assert_eq!(post_envelope(&node, &sign(&sprout, &retry)).status, 200);
}

#[test]
fn unknown_endpoints_and_methods_answer_problem_json() {
    let (_keys, node, _) = setup();
    let answer = http(node.addr, "GET", "/nope", b"");
    assert_refused(&node, &answer, 404, "not_found");
    let answer = http(node.addr, "GET", "/v1/tasks", b"");
    assert_refused(&node, &answer, 405, "method_not_allowed");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_flood_of_refusals_logs_the_first_of_each_kind_and_then_counts() {
    let (_keys, node, sprout) = setup();
    // From a verified peer: the first at info, the repeats counted.
    for _ in 0..20 {
        let answer = post_envelope(&node, &sign(&sprout, &fresh_task("no_such_type")));
        assert_eq!(
            answer.status,
            422,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    // Before a signature verifies: by the client's address.
    for _ in 0..5 {
        let answer = post_envelope(&node, &sign(&NodeKey::generate(), &fresh_task("echo")));
        assert_eq!(answer.status, 403);
    }
    let (_, log) = node.terminate();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(
        refused[0].contains("code=\"unsupported_task\" from=Sprout"),
        "{log}"
    );
    assert!(
        refused[1].contains("code=\"unknown_platform\" from=127.0.0.1 (unverified)"),
        "{log}"
    );
    // At the stop, the repeats since the last count.
    assert_eq!(
        lines("refused 19 requests from Sprout: unsupported_task"),
        1,
        "{log}"
    );
    assert_eq!(
        lines("refused 4 requests from 127.0.0.1 (unverified): unknown_platform"),
        1,
        "{log}"
    );
}

#[test]
fn an_origin_too_long_or_with_control_characters_is_refused_and_a_short_one_accepted() {
    let (_keys, node, sprout) = setup();
    for origin in ["x".repeat(257), "local uid=1\nforged line".to_owned()] {
        let task = Task {
            origin: Some(origin),
            ..fresh_task("echo")
        };
        let answer = refused(&node, &sprout, &task, 400, "malformed");
        assert!(
            answer.json()["detail"]
                .as_str()
                .unwrap()
                .contains("origin must be at most 256 bytes"),
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let task = Task {
        origin: Some("local uid=1000 gid=1000 pid=42".into()),
        ..fresh_task("echo")
    };
    let answer = post_envelope(&node, &sign(&sprout, &task));
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}
