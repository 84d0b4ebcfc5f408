//! The local API of `sage serve`: an application on the same machine
//! posts a task over the node's Unix socket; the node signs it with its
//! own key, routes it (or sends it to the target), verifies the proof and
//! keeps the receipt. Only callers that `[local]` allows, and never on the
//! federation port.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use sage_crypto::digest::sha256_tagged;
use sage_types::Envelope;
use serde_json::{json, Value};

use crate::fixture::Fleet;
use crate::route::fleet_of;
use crate::util::{http, parse_answer, HttpAnswer, Node};

/// One HTTP/1.1 request over the Unix socket at `socket`, read to the end.
pub fn local(socket: &Path, method: &str, path: &str, body: &Value) -> HttpAnswer {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_answer(&raw).unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&raw)))
}

/// Thor serving the builtins, and Sprout serving with `config` (its
/// `[local]`), both knowing each other; Sprout's socket.
fn sprout_with_thor(config: &str) -> (Fleet, Node, Node, PathBuf) {
    let (fleet, mut nodes) = fleet_of(&[("Thor", "")]);
    let keys = fleet.keys("Sprout");
    let path = keys.path().with_file_name("sprout.toml");
    std::fs::write(&path, config).unwrap();
    let sprout = keys.serve("Sprout", &["--config", path.to_str().unwrap()]);
    let socket = keys.state_dir().join("sage.sock");
    let thor = nodes.remove(0);
    (fleet, sprout, thor, socket)
}

/// The loopback port of `node`'s local API, as its banner gives it.
pub fn local_port(node: &Node) -> std::net::SocketAddr {
    node.log()
        .lines()
        .find_map(|line| line.split("local API:  http://").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no port in the log:\n{}", node.log()))
}

/// `python3 ARGS`, which must succeed: its stdout and stderr.
#[track_caller]
pub fn python_ok(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("run python3");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

/// Sprout serving its local API on a loopback port too, whose bearer token
/// is `token` (in a file of mode 0600, which it returns).
pub fn sprout_with_token(keys: &crate::util::Keys, token: &str) -> (Node, PathBuf) {
    let file = keys.path().with_file_name("local.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = keys.path().with_file_name("sprout.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    (
        keys.serve("Sprout", &["--config", config.to_str().unwrap()]),
        file,
    )
}

/// The `sha256:` digest of a signed message's payload.
pub fn payload_digest(envelope: &Value) -> String {
    let envelope: Envelope = serde_json::from_value(envelope.clone()).unwrap();
    sha256_tagged(&envelope.payload_bytes().unwrap())
}

#[test]
fn a_local_task_is_signed_by_the_node_verified_and_its_receipt_kept() {
    let (fleet, sprout, thor, socket) = sprout_with_thor("");
    let mode = std::fs::metadata(&socket).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket's mode");
    assert!(
        sprout.log().contains(&socket.display().to_string()),
        "the log names the socket:\n{}",
        sprout.log()
    );

    // Targeted.
    let input = json!({"text": "hello"});
    let answer = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "echo", "input": input, "target": "Thor"}),
    );
    assert_eq!(
        answer.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body["result"], input);
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["executor"]["name"], "Thor");
    let id = body["receipt"]["id"].as_str().unwrap().to_owned();
    assert_eq!(thor.executions_of(&id), 1);

    // The digests are those of the ledger's signed task and proof.
    let shown = fleet.keys("Sprout").run(&["proofs", "show", &id, "--json"]);
    shown.assert_code(0);
    let receipt = &shown.json()["receipt"];
    assert_eq!(receipt["status"], "succeeded");
    assert_eq!(
        body["receipt"]["task_digest"].as_str().unwrap(),
        payload_digest(&receipt["task"])
    );
    assert_eq!(
        body["receipt"]["proof_digest"].as_str().unwrap(),
        payload_digest(&receipt["proof"])
    );
    // The task was signed by Sprout's own key, for Thor.
    let task: Value = serde_json::from_slice(
        &serde_json::from_value::<Envelope>(receipt["task"].clone())
            .unwrap()
            .payload_bytes()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(task["audience"], thor_lct(&fleet));

    // The receipt and the task's record, over the socket.
    let signed = local(
        &socket,
        "GET",
        &format!("/local/v1/receipts/{id}"),
        &Value::Null,
    );
    assert_eq!(signed.status, 200);
    let signed = signed.json();
    assert_eq!(
        payload_digest(&signed["proof"]),
        body["receipt"]["proof_digest"]
    );
    assert_eq!(signed["task"], receipt["task"]);
    let record = local(
        &socket,
        "GET",
        &format!("/local/v1/tasks/{id}"),
        &Value::Null,
    )
    .json();
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(record["attempts"][0]["peer"], "Thor");
    let unknown = local(&socket, "GET", "/local/v1/receipts/nope", &Value::Null);
    assert_eq!(
        (unknown.status, unknown.problem_code()),
        (404, "not_found".into())
    );

    // Routed: no target, Thor preferred over this node itself.
    let routed = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "echo", "input": {"n": 2}, "prefer": ["Thor"]}),
    );
    assert_eq!(
        routed.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&routed.body)
    );
    let routed = routed.json();
    assert_eq!(routed["executor"]["name"], "Thor");
    assert_eq!(routed["result"], json!({"n": 2}));
    let routed_id = routed["receipt"]["id"].as_str().unwrap();
    assert_eq!(thor.executions_of(routed_id), 1);

    // This node itself, by name: it accepts a task signed with its own key.
    let own = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "echo", "input": {"n": 3}, "target": "sprout"}),
    );
    assert_eq!(own.status, 200, "{:?}", String::from_utf8_lossy(&own.body));
    assert_eq!(own.json()["executor"]["name"], "Sprout");
    assert!(sprout.log().contains("a local application's task"));

    // A failed delegation is a problem with the delegation's code and
    // every attempt.
    let failed = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "no_such_type", "target": "Thor", "timeout": 5}),
    );
    assert_eq!(
        failed.status,
        502,
        "{:?}",
        String::from_utf8_lossy(&failed.body)
    );
    let code = failed.problem_code();
    let problem = failed.json();
    assert_eq!(code, "unsupported_task", "{problem}");
    assert_eq!(problem["attempts"][0]["peer"], "Thor");
    let bad = local(&socket, "POST", "/local/v1/tasks", &json!({"input": {}}));
    assert_eq!(
        (bad.status, bad.problem_code()),
        (400, "bad_request".into())
    );
}

fn thor_lct(fleet: &Fleet) -> String {
    fleet.keys("Sprout").peer_record("Thor")["lct_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_caller_the_allow_list_does_not_name_is_refused() {
    let (fleet, _) = fleet_of(&[]);
    let keys = fleet.keys("Sprout");
    let uid = std::fs::metadata(keys.path()).unwrap().uid();
    let path = keys.path().with_file_name("sprout.toml");
    std::fs::write(
        &path,
        format!(
            "[local]\nallow_uids = [{}]\nallow_groups = []\n",
            uid.wrapping_add(1)
        ),
    )
    .unwrap();
    let sprout = keys.serve("Sprout", &["--config", path.to_str().unwrap()]);
    let socket = keys.state_dir().join("sage.sock");
    let refused = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "echo", "target": "Sprout"}),
    );
    assert_eq!(
        (refused.status, refused.problem_code()),
        (403, "forbidden".into())
    );
    assert!(refused.json()["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("uid {uid}")));
    assert!(
        sprout.log().contains("refused a caller"),
        "the refusal is logged:\n{}",
        sprout.log()
    );
}

#[test]
fn the_local_api_is_not_on_the_federation_port() {
    let (fleet, _) = fleet_of(&[]);
    let sprout = fleet.keys("Sprout").serve("Sprout", &[]);
    let post = http(
        sprout.addr,
        "POST",
        "/local/v1/tasks",
        br#"{"task_type": "echo", "target": "Sprout"}"#,
    );
    assert_eq!(post.status, 404);
    for path in ["/local/v1/tasks/x", "/local/v1/receipts/x"] {
        assert_eq!(http(sprout.addr, "GET", path, b"").status, 404, "{path}");
    }
}

#[test]
fn a_stale_socket_is_replaced_and_a_file_in_its_place_refused() {
    let (fleet, _) = fleet_of(&[]);
    let keys = fleet.keys("Sprout");
    let socket = keys.state_dir().join("sage.sock");
    std::fs::create_dir_all(keys.state_dir()).unwrap();
    // A socket nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let sprout = keys.serve("Sprout", &[]);
    let answer = local(&socket, "GET", "/local/v1/tasks/none", &Value::Null);
    assert_eq!(answer.status, 404);
    drop(sprout);

    std::fs::remove_file(&socket).ok();
    std::fs::write(&socket, "not a socket").unwrap();
    let run = keys.serve_to_end("Sprout", &[]);
    run.assert_code(1);
    assert!(run.stderr.contains("is not a socket"), "{}", run.stderr);
}

#[test]
fn delegate_via_node_posts_to_the_socket_and_reports_the_answer() {
    let (fleet, _sprout, thor, _socket) = sprout_with_thor("");
    let keys = fleet.keys("Sprout");
    let run = keys.run(&[
        "delegate",
        "--via-node",
        "--target",
        "Thor",
        "--task-type",
        "echo",
        "--input",
        r#"{"v": 1}"#,
        "--json",
    ]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["result"], json!({"v": 1}));
    assert_eq!(json["executor"]["name"], "Thor");
    assert!(json["via_node"].as_str().unwrap().ends_with("sage.sock"));
    assert_eq!(thor.executions_of(json["task_id"].as_str().unwrap()), 1);

    let run = keys.run(&[
        "delegate",
        "--via-node",
        "--prefer",
        "Thor",
        "--task-type",
        "echo",
        "--input",
        r#"{"v": 2}"#,
    ]);
    run.assert_code(0);
    run.assert_stdout(&["via the local node", "to Thor", "proof digest: sha256:"]);

    // The node's failure, with the delegation's code.
    let run = keys.run(&[
        "delegate",
        "--via-node",
        "--target",
        "Thor",
        "--task-type",
        "no_such_type",
        "--json",
    ]);
    run.assert_code(1);
    assert_eq!(
        run.json()["error"]["code"],
        "unsupported_task",
        "{}",
        run.stdout
    );
}

#[test]
fn the_loopback_port_serves_holders_of_the_token_only() {
    let (fleet, _) = fleet_of(&[]);
    let keys = fleet.keys("Sprout");
    let token = keys.path().with_file_name("local.token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let config = keys.path().with_file_name("sprout.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    // Readable by others: refused at start.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = keys.serve_to_end("Sprout", &["--config", config.to_str().unwrap()]);
    run.assert_code(1);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);

    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let sprout = keys.serve("Sprout", &["--config", config.to_str().unwrap()]);
    let port = local_port(&sprout);
    let body = br#"{"task_type": "echo", "input": {"c": 1}, "target": "Sprout"}"#;
    let ok = crate::util::http_with(
        port,
        "POST",
        "/local/v1/tasks",
        &[("Authorization", "Bearer s3cret-token")],
        body,
    );
    assert_eq!(ok.status, 200, "{:?}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.json()["result"], json!({"c": 1}));
    for headers in [&[("Authorization", "Bearer s3cret-tokeN")][..], &[]] {
        let refused = crate::util::http_with(port, "POST", "/local/v1/tasks", headers, body);
        assert_eq!(
            (refused.status, refused.problem_code()),
            (401, "unauthorized".into())
        );
    }
    // The federation port takes no token either.
    assert_eq!(
        http(sprout.addr, "POST", "/local/v1/tasks", body).status,
        404
    );
}

/// `examples/python/sage_local.py`, the standard-library client.
const PYTHON_CLIENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/sage_local.py"
);

#[test]
fn the_python_example_client_delegates_and_reads_the_receipt() {
    let (_fleet, _sprout, thor, socket) = sprout_with_thor("");
    // As a program: one task, its answer as JSON.
    let (stdout, _) = python_ok(&[
        PYTHON_CLIENT,
        "--socket",
        socket.to_str().unwrap(),
        "echo",
        r#"{"text": "from python"}"#,
        "--target",
        "Thor",
    ]);
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["result"], json!({"text": "from python"}));
    let id = answer["receipt"]["id"].as_str().unwrap().to_owned();
    assert_eq!(thor.executions_of(&id), 1);

    // As a library: the receipt, the ledger's view, and a refusal with its
    // code and attempts.
    let script = format!(
        r#"
import json, sys
sys.path.insert(0, {dir:?})
from sage_local import Node, SageError
node = Node({socket:?})
receipt = node.receipt({id:?})
task = node.task({id:?})
try:
    node.delegate("echo", {{}}, target="Nobody")
    sys.exit("a refusal was expected")
except SageError as e:
    refusal = {{"code": e.code, "status": e.status}}
print(json.dumps({{"receipt": receipt, "task": task, "refusal": refusal}}))
"#,
        dir = Path::new(PYTHON_CLIENT).parent().unwrap().to_str().unwrap(),
        socket = socket.to_str().unwrap(),
    );
    let (stdout, _) = python_ok(&["-c", &script]);
    let got: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        payload_digest(&got["receipt"]["proof"]),
        answer["receipt"]["proof_digest"].as_str().unwrap(),
        "the receipt is the proof the answer named"
    );
    assert_eq!(got["task"]["status"], "succeeded", "{}", got["task"]);
    // The signed task says on whose behalf the node sent it.
    let task: Envelope = serde_json::from_value(got["receipt"]["task"].clone()).unwrap();
    let task: Value = serde_json::from_slice(&task.payload_bytes().unwrap()).unwrap();
    let uid = std::fs::metadata(&socket).unwrap().uid();
    let origin = task["origin"].as_str().unwrap();
    assert!(
        origin.starts_with(&format!("local uid={uid} gid=")) && origin.contains(" pid="),
        "{origin}"
    );
    assert_eq!(
        got["refusal"],
        json!({"code": "unknown_target", "status": 400})
    );
}
