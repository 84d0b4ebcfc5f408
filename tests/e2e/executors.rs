//! Real backends through `sage serve --config`: the command executor with
//! real child processes, the http executor against an OpenAI-compatible
//! server started here, the concurrency limit, cost ceilings, config
//! errors, and the signed capabilities document.

use std::path::PathBuf;

use crate::fixture::{delegation, fake_llm};
use crate::util::{assert_refused, http, FakeNode, Keys, Node};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// Thor serving with `config` (TOML) as its config file; Sprout is known.
fn serve_with(keys: &Keys, config: &str) -> (Node, PathBuf) {
    keys.keygen("Thor");
    keys.keygen("Sprout");
    let path = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(&path, config).unwrap();
    let node = keys.serve("Thor", &["--config", path.to_str().unwrap()]);
    (node, path)
}

fn delegate(
    keys: &Keys,
    node: &Node,
    task_type: &str,
    input: &str,
    extra: &[&str],
) -> crate::util::Run {
    let port = node.addr.port().to_string();
    let mut args = vec![
        "--port",
        &port,
        "--task-type",
        task_type,
        "--input",
        input,
        "--json",
    ];
    args.extend_from_slice(extra);
    keys.delegate(&args)
}

const SUM: &str = r#"
[executors.sum]
kind = "command"
command = ["python3", "-c", "import sys, json; print(json.dumps({'sum': sum(json.load(sys.stdin)['numbers'])}))"]
timeout = "10s"
max_concurrency = 2
cost = { base = 0.5, per_second = 2.0 }
max_cost = 50.0

[executors.fail]
kind = "command"
command = ["sh", "-c", "echo 'model file missing' >&2; exit 3"]

[executors.slow]
kind = "command"
command = ["sleep", "3"]
max_concurrency = 1
queue = 0
"#;

#[test]
fn a_command_executor_runs_the_program_and_the_proof_says_so() {
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    let run = delegate(&keys, &node, "sum", r#"{"numbers": [1, 2, 3.5]}"#, &[]);
    run.assert_code(0);
    let proof = &run.json()["proof"];
    assert_eq!(proof["result"], serde_json::json!({"sum": 6.5}));
    assert_eq!(proof["executor_kind"], "command");
    assert_eq!(proof["exit_status"], 0);
    // Priced by the cost model: 0.5 + 2.0/s of measured time.
    let cost = proof["actual_cost"].as_f64().unwrap();
    let secs = proof["latency_ms"].as_f64().unwrap() / 1000.0;
    assert!((cost - (0.5 + 2.0 * secs)).abs() < 1e-6, "{proof}");

    // A failing program: a signed proof of the failure, and exit 1.
    let run = delegate(&keys, &node, "fail", "{}", &[]);
    run.assert_code(1);
    let out = run.json();
    assert_eq!(out["verified"], true);
    assert_eq!(out["proof"]["status"], "failed");
    assert_eq!(out["proof"]["exit_status"], 3);
    run.assert_stderr(&["execution failed", "model file missing"]);

    // Not served: refused, listing what is.
    let run = delegate(&keys, &node, "echo", "{}", &[]);
    run.assert_code(1);
    run.assert_stderr(&["unsupported_task", "fail, slow, sum"]);
}

#[test]
fn metrics_count_a_failed_command_by_the_kind_of_its_failure() {
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    delegate(&keys, &node, "fail", "{}", &[]).assert_code(1);
    delegate(&keys, &node, "sum", r#"{"numbers": [1]}"#, &[]).assert_code(0);
    let answer = http(node.addr, "GET", "/metrics", b"");
    assert_eq!(answer.status, 200);
    let text = String::from_utf8(answer.body).unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"sage_execution_failures_total{task_type="fail",kind="exited"} 1"#),
        "{text}"
    );
    // A success is no failure of any kind.
    assert!(
        !text.contains(r#"sage_execution_failures_total{task_type="sum""#),
        "{text}"
    );
}

#[test]
fn cost_ceilings_refuse_before_running() {
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    // The executor's ceiling is 50 ATP.
    let run = delegate(
        &keys,
        &node,
        "sum",
        r#"{"numbers": [1]}"#,
        &["--estimated-cost", "80"],
    );
    run.assert_code(1);
    run.assert_stderr(&["over_budget", "ceiling of 50"]);
    // The task's own max_cost is below the executor's base price.
    let run = delegate(
        &keys,
        &node,
        "sum",
        r#"{"numbers": [1]}"#,
        &["--estimated-cost", "0.1", "--max-cost", "0.2"],
    );
    run.assert_code(1);
    run.assert_stderr(&["over_budget", "at least 0.5 ATP"]);
    assert_eq!(
        node.log().matches("task executed").count(),
        0,
        "{}",
        node.log()
    );
}

#[test]
fn a_full_executor_answers_busy_with_retry_after() {
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    // The first takes the only place (3 s); the second is refused at once.
    let port = node.port();
    let first = keys.spawn(&delegation(&["--port", &port, "--task-type", "slow"]));
    assert!(wait_running(&node), "the first task never started");
    let run = delegate(&keys, &node, "slow", "{}", &[]);
    run.assert_code(1);
    run.assert_stderr(&["busy (503)", "retry"]);
    let first = first.join().unwrap();
    assert!(first.code == 0);
    // A 3 s wait, but stderr is a pipe: no progress line.
    assert!(
        !first.stderr.contains("waiting for") && !first.stderr.contains('\r'),
        "{}",
        first.stderr
    );
}

/// Waits until the node's capabilities show a running task.
fn wait_running(node: &Node) -> bool {
    for _ in 0..100 {
        let answer = http(node.addr, "GET", "/v1/capabilities", b"");
        let env: sage_types::Envelope = serde_json::from_slice(&answer.body).unwrap();
        let caps: serde_json::Value =
            serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
        let running = caps["task_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["running"] == 1);
        if running {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    false
}

#[test]
fn an_http_executor_talks_to_an_openai_compatible_server() {
    let llm = fake_llm();
    let keys = Keys::new();
    let config = format!(
        "[executors.llm_inference]\nkind = \"http\"\nurl = \"http://{}/v1/chat/completions\"\nmode = \"openai\"\nmodel = \"tiny\"\ntimeout = \"5s\"\n\n[executors.down]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/nothing\"\ntimeout = \"2s\"\n",
        llm.addr
    );
    let (node, _) = serve_with(&keys, &config);
    let run = delegate(
        &keys,
        &node,
        "llm_inference",
        r#"{"prompt": "hello Thor"}"#,
        &[],
    );
    run.assert_code(0);
    let result = &run.json()["proof"]["result"];
    assert_eq!(result["content"], "echo: hello Thor");
    assert_eq!(result["model"], "tiny");
    assert_eq!(result["usage"]["total_tokens"], 5);
    assert_eq!(run.json()["proof"]["executor_kind"], "http");

    // A backend that does not answer: a signed failed proof, not an HTTP error.
    let run = delegate(&keys, &node, "down", "{}", &[]);
    run.assert_code(1);
    assert_eq!(run.json()["proof"]["status"], "failed");
    run.assert_stderr(&["execution failed", "127.0.0.1:9"]);
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    let keys = Keys::new();
    let dir = keys.path().parent().unwrap().to_owned();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[node]\nname = \"Thor\"\ncolour = \"red\"\n").unwrap();
    let run = keys.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml:3: colour: unknown field `colour`"]);

    std::fs::write(
        &bad,
        "[executors.sum]\nkind = \"command\"\ncommand = \"python3 sum.py\"\n",
    )
    .unwrap();
    let run = keys.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml:3: command: invalid type"]);

    // An LCT id outside the rules `peer add` applies.
    std::fs::write(&bad, "[node]\nname = \"Thor\"\nlct_id = \"thor lct\"\n").unwrap();
    let run = keys.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml:3: node.lct_id:", "U+0020"]);

    // No file given and none in the default places.
    let out = crate::util::sage()
        .current_dir(&dir)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no config file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `serve` refuses the same file before it listens.
    let run = keys.run(&["serve", "--config", bad.to_str().unwrap(), "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml:3"]);

    // Limits that cannot work: refused by `config check` and by `serve`,
    // naming the file.
    std::fs::write(
        &bad,
        "[node]\nname = \"Thor\"\n[limits]\nmax_connections = 0\n",
    )
    .unwrap();
    let run = keys.run(&["config", "check", "--config", bad.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml: [limits] max_connections must be at least 1"]);
    let run = keys.run(&["serve", "--config", bad.to_str().unwrap(), "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&["bad.toml: [limits] max_connections must be at least 1"]);
}

#[test]
fn the_examples_check_and_show_no_secret() {
    // The examples' nodes, whose keys the check loads.
    let keys = Keys::with(&["Thor", "Sprout", "Legion"]);
    for example in ["command.toml", "builtin.toml"] {
        let path = format!("{EXAMPLES}/{example}");
        let run = keys.run(&["config", "check", "--config", &path]);
        run.assert_code(0);
        run.assert_stdout(&["[node]", "[limits]", "clock_skew"]);
    }
    let path = format!("{EXAMPLES}/http-openai.toml");
    let run = keys.run(&["config", "check", "--config", &path]);
    run.assert_code(1);
    run.assert_stderr(&["LLAMA_API_KEY"]);
    let out = keys
        .command(&["config", "check", "--config", &path])
        .env("LLAMA_API_KEY", "Bearer sk-very-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("LLAMA_API_KEY") && !shown.contains("sk-very-secret"),
        "{shown}"
    );
}

#[test]
fn capabilities_are_signed_and_a_tampered_copy_is_refused() {
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    let run = keys.run(&["capabilities", &node.address(), "--json"]);
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["verified"], true);
    let caps = &out["capabilities"];
    assert_eq!(caps["lct_id"], "thor_sage_lct");
    let sum = caps["task_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_type"] == "sum")
        .unwrap();
    assert_eq!(sum["kind"], "command");
    assert_eq!(sum["max_concurrency"], 2);
    assert_eq!(sum["cost"]["per_second"], 2.0);
    assert!(caps["hardware"]["cpus"].as_u64().unwrap() >= 1);

    // A man in the middle that advertises a GPU Thor does not have.
    let genuine = http(node.addr, "GET", "/v1/capabilities", b"").body;
    let mut env: sage_types::Envelope = serde_json::from_slice(&genuine).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&env.payload_bytes().unwrap()).unwrap();
    doc["hardware"]["gpus"] =
        serde_json::json!([{"name": "NVIDIA H100", "driver": null, "memory_mib": 81920}]);
    env.payload =
        sage_types::Envelope::new(&env.payload_type, &serde_json::to_vec(&doc).unwrap()).payload;
    let forged = serde_json::to_vec(&env).unwrap();
    let mitm = FakeNode::start(move |_, _, _| Some((200, forged.clone())));
    let run = keys.run(&["capabilities", &mitm.addr.to_string()]);
    run.assert_code(1);
    run.assert_stderr(&["capabilities of", "do not verify", "does not verify"]);

    // Thor's genuine signature over a document that claims to be Legion.
    let mut claim = doc.clone();
    claim["lct_id"] = serde_json::json!("legion_sage_lct");
    claim["hardware"]["gpus"] = serde_json::json!([]);
    let signed = sage_crypto::sign_envelope(
        &keys.key("Thor"),
        &env.payload_type,
        &serde_json::to_vec(&claim).unwrap(),
    );
    let impostor_body = serde_json::to_vec(&signed).unwrap();
    let impostor = FakeNode::start(move |_, _, _| Some((200, impostor_body.clone())));
    let run = keys.run(&["capabilities", &impostor.addr.to_string()]);
    run.assert_code(1);
    run.assert_stderr(&["claim to be legion_sage_lct but are signed by Thor"]);

    // `sage health` shows the summary.
    let run = keys.run(&["health", &node.address()]);
    run.assert_code(0);
    run.assert_stdout(&["task type:  sum (command, 0/2 running"]);
    let _ = assert_refused; // shared helper, used by other modules
}

/// What a peer chose reaches the executors' debug log escaped: a legacy
/// task id (free text in that protocol) in the http executor's line, and a
/// program's stderr that echoes its input in the command executor's.
#[test]
fn executor_logs_escape_what_the_peer_chose() {
    let llm = fake_llm();
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = format!(
        "[executors.llm_inference]\nkind = \"http\"\nurl = \"http://{}/v1/chat/completions\"\nmode = \"openai\"\nmodel = \"tiny\"\ntimeout = \"5s\"\n\n\
         [executors.shout]\nkind = \"command\"\ncommand = [\"python3\", \"-c\", \"import sys, json; sys.stderr.write(json.load(sys.stdin)['say']); print('{{}}')\"]\n",
        llm.addr
    );
    let path = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(&path, config).unwrap();
    let node = keys.serve_with_env(
        "Thor",
        &["--config", path.to_str().unwrap()],
        &[("SAGE_LOG", std::ffi::OsStr::new("debug"))],
    );
    let port = node.addr.port().to_string();
    for (task_type, input, task_id) in [
        (
            "llm_inference",
            r#"{"prompt": "hi"}"#,
            "t1\nFORGED http executor",
        ),
        ("shout", r#"{"say": "ok\nFORGED command finished"}"#, "t2"),
    ] {
        let run = keys.delegate(&[
            "--port",
            &port,
            "--protocol",
            "legacy",
            "--task-type",
            task_type,
            "--input",
            input,
            "--task-id",
            task_id,
        ]);
        run.assert_code(0);
    }
    let log = node.log();
    assert!(log.contains("http executor"), "{log}");
    assert!(log.contains("command finished"), "{log}");
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a forged line: {log}"
    );
}

#[test]
fn a_long_delegation_shows_that_it_waits_on_a_terminal() {
    // util-linux's `script` gives the command a terminal.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no `script`: skipped");
        return;
    }
    let keys = Keys::new();
    let (node, _) = serve_with(&keys, SUM);
    let command = format!(
        "{} --keys-dir {} delegate --local Sprout --target Thor --port {} --task-type slow",
        crate::util::sage_path().display(),
        keys.path().display(),
        node.port()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SAGE_STATE_DIR", keys.state_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    // Drawn after the first second, erased when the proof came.
    assert!(
        shown.contains("\rwaiting for Thor… 1 s") && shown.contains("\r\x1b[K"),
        "{shown:?}"
    );
}
