//! Interoperability with the Python original's protocol, both ways, with
//! the golden vectors' keys in a key directory laid out like the original's
//! (32-byte seed files). The Python side is `tests/legacy/python_node.py`,
//! a stand-in for the original written from its protocol description.

use std::process::{Command, Stdio};

use sage_crypto::legacy::{sign_legacy, signing_bytes, verify_legacy};
use sage_crypto::{NodeKey, PublicKey};
use sage_types::legacy::{read_response, LegacyResponse};
use serde_json::{json, Value};

use crate::fixture::delegation_from;
use crate::util::{assert_refused, http, FakeNode, HttpAnswer, Keys, Node, Run};

const PYTHON_NODE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/legacy/python_node.py"
);

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/legacy-v0.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A key directory as the Python original lays it out: the vectors' Thor
/// and Sprout as 32-byte seed files.
pub fn python_keys() -> (Keys, Value) {
    let v = vectors();
    let keys = Keys::new();
    std::fs::create_dir_all(keys.path()).unwrap();
    for name in ["Thor", "Sprout"] {
        let seed = hex::decode(v["keys"][name]["seed_hex"].as_str().unwrap()).unwrap();
        assert_eq!(seed.len(), 32);
        std::fs::write(keys.path().join(format!("{name}_ed25519.key")), seed).unwrap();
    }
    (keys, v)
}

fn python(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new("python3")
        .arg(PYTHON_NODE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the legacy interop tests");
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    }
    Run::from(child.wait_with_output().unwrap())
}

/// The Python client's `delegate` from Sprout (in `keys`) to Thor at
/// `url`, which it knows by the vectors' public key.
fn python_delegates(
    keys: &Keys,
    v: &Value,
    url: &str,
    task_type: &str,
    data: &str,
    extra: &[&str],
) -> Run {
    #[rustfmt::skip]
    let mut args = vec![
        "delegate", "--name", "Sprout", "--keys-dir", keys.path().to_str().unwrap(),
        "--url", url, "--target-name", "Thor",
        "--target-public-key", v["keys"]["Thor"]["public_key_hex"].as_str().unwrap(),
        "--task-type", task_type, "--task-data", data,
    ];
    args.extend_from_slice(extra);
    python(&args, None)
}

/// A Python node serving; killed when dropped.
pub struct PythonNode {
    child: std::process::Child,
    pub port: u16,
}

impl PythonNode {
    pub fn start(keys: &Keys, name: &str) -> PythonNode {
        use std::io::BufRead as _;
        let mut child = Command::new("python3")
            .arg(PYTHON_NODE)
            .args(["serve", "--name", name, "--keys-dir"])
            .arg(keys.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{line}"));
        PythonNode { child, port }
    }
}

/// `sage delegate` of a `vision` task with `input` from Thor to the Python
/// node `sprout`, over the legacy protocol, with `extra` arguments.
fn delegate_to_python(keys: &Keys, sprout: &PythonNode, input: &str, extra: &[&str]) -> Run {
    let port = sprout.port.to_string();
    let mut args = delegation_from(
        "Thor",
        "Sprout",
        &[
            "--port",
            &port,
            "--protocol",
            "legacy",
            "--task-type",
            "vision",
            "--input",
            input,
        ],
    );
    args.extend_from_slice(extra);
    keys.run(&args)
}

impl Drop for PythonNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(node: &Node, body: &[u8]) -> HttpAnswer {
    http(node.addr, "POST", "/execute_task", body)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn the_python_client_delegates_to_sage_and_accepts_its_proof() {
    let (keys, v) = python_keys();
    let thor = keys.serve("Thor", &[]);
    for task_type in ["llm_inference", "echo"] {
        let run = python_delegates(
            &keys,
            &v,
            &format!("http://{}", thor.address()),
            task_type,
            r#"{"prompt": "Thor→Sprout 😀", "x": 1e-05}"#,
            &[],
        );
        run.assert_code(0);
        let out = run.json();
        assert_eq!(
            (out["ok"].clone(), out["verified"].clone()),
            (json!(true), json!(true)),
            "{out}"
        );
        assert_eq!(out["proof"]["executing_platform"], "Thor");
    }
    // `key show` reads the Python original's seed files as they are.
    let run = keys.run(&["key", "show", "--name", "thor", "--public-only"]);
    assert_eq!(run.stdout.trim(), v["keys"]["Thor"]["public_key_hex"]);
}

#[test]
fn sage_delegates_to_a_python_node() {
    let (keys, v) = python_keys();
    let sprout = PythonNode::start(&keys, "Sprout");
    let sprout_pub = v["keys"]["Sprout"]["public_key_hex"].as_str().unwrap();

    // For one call...
    let run = delegate_to_python(
        &keys,
        &sprout,
        r#"{"image": "frame_000123.jpg"}"#,
        &["--json"],
    );
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["verified"], true);
    assert_eq!(out["protocol"], "legacy");
    assert_eq!(out["proof"]["executing_platform"], "Sprout");
    assert_eq!(
        out["proof"]["result_data"]["echo"]["image"],
        "frame_000123.jpg"
    );
    assert_eq!(out["task"]["delegating_platform"], "thor_sage_lct");

    // ...or through the peer record, with the same summary as native peers.
    let peers = Keys::copying(&keys, &["Thor"]);
    let address = format!("127.0.0.1:{}", sprout.port);
    peers.trust(
        "Sprout",
        sprout_pub,
        &["--protocol", "legacy", "--address", &address],
    );
    let run = peers.run(&["delegate", "--local", "Thor", "--target", "sprout"]);
    run.assert_code(0);
    run.assert_stdout(&[
        "(legacy protocol)",
        "Execution proof",
        "Result data",
        "✓ proof signature verified",
        "does not bind the payload digest",
    ]);

    // A wrong key on record: the Python node's proof is refused.
    let wrong = Keys::copying(&keys, &["Thor"]);
    let other = NodeKey::generate().public().to_hex();
    wrong.trust("Sprout", &other, &["--protocol", "legacy"]);
    let port = sprout.port.to_string();
    let run = wrong.run(&delegation_from("Thor", "Sprout", &["--port", &port]));
    run.assert_code(1);
    run.assert_stderr(&["signature does not verify"]);
}

#[test]
fn sage_delegates_to_sage_over_the_legacy_endpoint() {
    let (keys, _) = python_keys();
    let thor = keys.serve("Thor", &[]);
    let run = keys.delegate(&[
        "--port",
        &thor.port(),
        "--protocol",
        "legacy",
        "--task-type",
        "echo",
        "--input",
        r#"{"n": [1, 2.5]}"#,
        "--json",
    ]);
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["proof"]["result_data"], json!({"n": [1, 2.5]}));
    assert!(
        thor.log().contains("legacy task executed"),
        "{}",
        thor.log()
    );
}

/// Each vector's request as it travelled: refused as it is (its deadline is
/// long past), accepted once re-signed with a deadline in the window, run
/// once however often it is sent, and its proof verifies as the Python
/// client checks it.
#[test]
fn vector_requests_are_refused_when_stale_and_accepted_when_re_signed() {
    let (keys, v) = python_keys();
    let thor = keys.serve("Thor", &[]);
    let thor_key =
        PublicKey::from_hex(v["keys"]["Thor"]["public_key_hex"].as_str().unwrap()).unwrap();
    for vector in v["tasks"].as_array().unwrap() {
        let body = vector["request_body"].as_str().unwrap();
        let answer = post(&thor, body.as_bytes());
        assert_refused(&thor, &answer, 403, "expired");

        let deadline = format!("{:.3}", now() + 60.0);
        let run = python(
            &[
                "sign-task",
                "--name",
                "Sprout",
                "--keys-dir",
                keys.path().to_str().unwrap(),
                "--request-json",
                "-",
                "--deadline",
                &deadline,
            ],
            Some(body),
        );
        run.assert_code(0);
        let resigned = run.stdout.trim().as_bytes().to_vec();
        let first = post(&thor, &resigned);
        assert_eq!(
            first.status,
            200,
            "{}\n{}",
            String::from_utf8_lossy(&first.body),
            thor.log()
        );
        let response: LegacyResponse = serde_json::from_slice(&first.body).unwrap();
        let signable = read_response(&first.body).unwrap().signable.canonical();
        verify_legacy(&thor_key, signable.as_bytes(), &response.signature).unwrap();
        // The Python rules, by Python itself: json.dumps(proof, sort_keys=True).
        let run = python(&["canonical"], Some(&signable));
        assert_eq!(run.stdout, signable);
        let task_id = vector["signable"]["task_id"].as_str().unwrap();
        assert_eq!(response.proof["task_id"], task_id);
        assert_eq!(
            response.proof["result_data"]["echo"],
            vector["signable"]["task_data"]
        );

        // Sent again: the stored proof, byte for byte, and no second run.
        let again = post(&thor, &resigned);
        assert_eq!(again.status, 200);
        assert_eq!(again.body, first.body);
        assert!(thor.wait_for_log(&format!("legacy task executed task_id={task_id} ")));
        let runs = thor
            .log()
            .matches(&format!("legacy task executed task_id={task_id} "))
            .count();
        assert_eq!(runs, 1, "{}", thor.log());
    }
}

/// A legacy request signed here with a vector key.
fn request(key: &NodeKey, requester: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut task = vectors()["tasks"][0]["signable"].clone();
    task["task_id"] = json!(format!(
        "t_{}",
        &NodeKey::generate().public().to_hex()[..12]
    ));
    task["deadline"] = json!(now() + 60.0);
    edit(&mut task);
    let signature = sign_legacy(key, &signing_bytes(&task));
    serde_json::to_vec(&json!({"task": task, "requester_lct_id": requester, "signature": signature, "timestamp": now()})).unwrap()
}

fn seed_key(v: &Value, name: &str) -> NodeKey {
    NodeKey::from_key_file(&hex::decode(v["keys"][name]["seed_hex"].as_str().unwrap()).unwrap())
        .unwrap()
}

#[test]
fn legacy_refusals() {
    let (keys, v) = python_keys();
    let thor = keys.serve("Thor", &[]);
    let sprout = seed_key(&v, "Sprout");

    // The control: a well-formed request passes.
    assert_eq!(
        post(&thor, &request(&sprout, "sprout_sage_lct", |_| {})).status,
        200
    );

    let answer = post(&thor, &request(&sprout, "legion_sage_lct", |_| {}));
    assert_refused(&thor, &answer, 403, "unknown_platform");
    assert_eq!(answer.json()["detail"], "Unknown platform: legion_sage_lct");

    let stranger = NodeKey::generate();
    let answer = post(&thor, &request(&stranger, "sprout_sage_lct", |_| {}));
    assert_refused(&thor, &answer, 403, "invalid_signature");
    assert_eq!(answer.json()["detail"], "Invalid signature");

    // Signed by Sprout, claiming Thor delegated it.
    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t["delegating_platform"] = json!("thor_sage_lct")
        }),
    );
    assert_refused(&thor, &answer, 403, "invalid_signature");

    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t["deadline"] = json!(now() - 3600.0)
        }),
    );
    assert_refused(&thor, &answer, 403, "expired");
    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t["deadline"] = json!(now() + 30.0 * 86400.0)
        }),
    );
    assert_refused(&thor, &answer, 403, "expired");

    // The same task id again with other signed content is another task
    // (the original's clients reuse ids); the same bytes again run once.
    let first = request(&sprout, "sprout_sage_lct", |t| {
        t["task_id"] = json!("fixed_id")
    });
    let answer = post(&thor, &first);
    assert_eq!(answer.status, 200);
    assert_eq!(post(&thor, &first).body, answer.body);
    let changed = request(&sprout, "sprout_sage_lct", |t| {
        t["task_id"] = json!("fixed_id");
        t["estimated_cost"] = json!(49.0);
    });
    assert_eq!(post(&thor, &changed).status, 200);
    // The log line of the second run may still be in the pipe when its
    // answer is here: wait for it (a third would be counted too).
    let runs = || {
        thor.log()
            .matches("legacy task executed task_id=fixed_id ")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while runs() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(runs(), 2, "{}", thor.log());

    // Nesting far beyond Python's: a clean refusal, no stack overflow.
    let deep = format!(
        r#"{{"task": {}, "requester_lct_id": "sprout_sage_lct", "signature": ""}}"#,
        "[".repeat(100_000)
    );
    let answer = post(&thor, deep.as_bytes());
    assert_refused(&thor, &answer, 400, "malformed");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains("nesting deeper"));

    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t.as_object_mut().unwrap().remove("min_witnesses");
        }),
    );
    assert_refused(&thor, &answer, 400, "malformed");

    // Signed, but a field the node must read has the wrong type.
    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t["deadline"] = json!("soon")
        }),
    );
    assert_refused(&thor, &answer, 400, "malformed");
    assert_eq!(
        answer.json()["detail"],
        r#"signed task: the task's field "deadline" is not a number"#
    );

    let answer = post(
        &thor,
        &request(&sprout, "sprout_sage_lct", |t| {
            t["task_type"] = json!("rm_rf")
        }),
    );
    assert_refused(&thor, &answer, 422, "unsupported_task");

    assert_refused(&thor, &post(&thor, b"<html>"), 400, "malformed");
    assert_refused(
        &thor,
        &http(thor.addr, "POST", "/execute_tasks", b"{}"),
        404,
        "not_found",
    );
}

/// What Python's `json.dumps(json.loads(text), sort_keys=True, ...)` prints
/// for `text`, with `separators` and `ensure_ascii` as given.
fn python_dumps(text: &str, compact: bool) -> String {
    let script = if compact {
        "import json,sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read()), sort_keys=True, separators=(',',':'), ensure_ascii=False))"
    } else {
        "import json,sys; sys.stdout.write(json.dumps(json.loads(sys.stdin.read()), sort_keys=True))"
    };
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_executor_gets_the_signed_values_not_the_senders_spelling() {
    let (keys, v) = python_keys();
    let stdin_file = keys.path().parent().unwrap().join("stdin.json");
    let config = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(
        &config,
        format!(
            "[executors.capture]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"cat > {}; echo '{{}}'\"]\n",
            stdin_file.display()
        ),
    )
    .unwrap();
    let thor = keys.serve("Thor", &["--config", config.to_str().unwrap()]);
    let sprout = seed_key(&v, "Sprout");

    // Spelled otherwise than Python prints it: 1e16 sent as
    // 10000000000000001.0, 0.0 as 1e-400, and an int of 41 digits.
    let data = format!(
        r#"{{"n": 10000000000000001.0, "amount": 1e-400, "big": 1{}, "e": 1E16, "neg": -0, "s": "é"}}"#,
        "0".repeat(40)
    );
    let mut task = vectors()["tasks"][0]["signable"].clone();
    task["task_id"] = json!("spelling");
    task["task_type"] = json!("capture");
    task["deadline"] = json!(now() + 60.0);
    task["task_data"] = json!("DATA");
    let task_text = serde_json::to_string(&task)
        .unwrap()
        .replace(r#""DATA""#, &data);
    let signature = sign_legacy(&sprout, python_dumps(&task_text, false).as_bytes());
    let body = format!(
        r#"{{"task": {task_text}, "requester_lct_id": "sprout_sage_lct", "signature": "{signature}"}}"#
    );
    let answer = post(&thor, body.as_bytes());
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let got = std::fs::read_to_string(&stdin_file).unwrap();
    assert_eq!(got, python_dumps(&data, true));
    assert!(
        got.contains(&format!("\"big\":1{}", "0".repeat(40))),
        "{got}"
    );
    assert!(
        got.contains("\"n\":1e+16") && got.contains("\"amount\":0.0"),
        "{got}"
    );
}

#[test]
fn what_python_writes_is_accepted_and_its_client_may_reuse_a_task_id() {
    let (keys, v) = python_keys();
    let thor = keys.serve("Thor", &[]);
    let url = format!("http://{}", thor.address());
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let data =
        format!(r#"{{"x": NaN, "y": [Infinity, -Infinity], "s": "\ud800", "deep": {deep}}}"#);
    // The original's test client names tasks by the second: two runs in
    // one second with other task types share the id.
    let task_id = format!("test_task_{}", now() as u64);
    for task_type in ["echo", "llm_inference"] {
        let run = python_delegates(&keys, &v, &url, task_type, &data, &["--task-id", &task_id]);
        assert_eq!(run.code, 0, "{task_type}: {} {}", run.stdout, thor.log());
        assert!(run.stdout.contains(r#""verified": true"#), "{}", run.stdout);
        if task_type == "echo" {
            // The result echoes the signed values, NaN included.
            assert!(
                run.stdout.contains("NaN") && run.stdout.contains("-Infinity"),
                "{}",
                run.stdout
            );
        }
    }
}

#[test]
fn a_python_nodes_proof_with_a_huge_integer_keeps_it_and_verifies_offline() {
    let (keys, _) = python_keys();
    let sprout = PythonNode::start(&keys, "Sprout");
    let big = format!("1{}", "0".repeat(40));
    let run = delegate_to_python(&keys, &sprout, &format!(r#"{{"big": {big}}}"#), &["--json"]);
    run.assert_code(0);
    // Echoed as the integer it is, not as the float 1e+40.
    assert!(
        run.stdout.contains(&format!(r#""big": {big}"#))
            || run.stdout.contains(&format!(r#""big":{big}"#)),
        "{}",
        run.stdout
    );
    keys.export_and_verify(1);
}

#[test]
fn a_python_nodes_proof_with_nan_and_a_lone_surrogate_is_accepted_and_verifies_offline() {
    let (keys, _) = python_keys();
    let sprout = PythonNode::start(&keys, "Sprout");
    let delegate =
        |extra: &[&str]| delegate_to_python(&keys, &sprout, r#"{"measure_nan": true}"#, extra);
    let run = delegate(&[]);
    run.assert_code(0);
    assert!(run.stdout.contains(r#""loss": NaN"#), "{}", run.stdout);
    let run = delegate(&["--json"]);
    run.assert_code(0);
    // Python's spellings, as Python's json module reads them back.
    for spelling in ["NaN", "Infinity", "-Infinity"] {
        assert!(run.stdout.contains(spelling), "{}", run.stdout);
    }
    let export = keys.export_and_verify(2);
    let lines = std::fs::read_to_string(&export).unwrap();
    let line = lines.lines().next().unwrap();
    // The receipt keeps the surrogate the signature covers.
    assert!(line.contains(r#""label": "\ud800""#), "{line}");
    // Python reads the exported line, and writes it back the same.
    let run = python(&["canonical"], Some(line));
    assert_eq!(run.stdout, line);
}

/// A legacy answer that is not a signed proof is refused as such, naming
/// what is wrong, and nothing is accepted.
#[test]
fn a_legacy_answer_that_is_not_a_signed_proof_is_refused() {
    let (keys, _) = python_keys();
    for (answer, want) in [
        (&b"{\"proof\": {}, \"signature\": "[..], "is not JSON"),
        (
            &br#"{"proof": {}}"#[..],
            r#"the answer has no field "signature""#,
        ),
        (
            &br#"{"proof": [], "signature": "ab"}"#[..],
            "the proof is not a JSON object",
        ),
    ] {
        let sprout = FakeNode::start(move |method, path, _| {
            let health = json!({"status": "healthy", "platform": "Sprout", "lct_id": "sprout_sage_lct", "timestamp": 1.0});
            match (method, path) {
                ("GET", "/health") => Some((200, serde_json::to_vec(&health).unwrap())),
                ("POST", "/execute_task") => Some((200, answer.to_vec())),
                _ => Some((404, b"{}".to_vec())),
            }
        });
        let port = sprout.addr.port().to_string();
        let run = keys.run(&delegation_from(
            "Thor",
            "Sprout",
            &["--port", &port, "--protocol", "legacy"],
        ));
        run.assert_code(1);
        run.assert_stderr(&["not a legacy proof", want]);
    }
}
