//! Streaming delegations: an `http` executor in OpenAI mode fronting a
//! backend that streams, `sage delegate --stream` printing the pieces as
//! they come, the proof verified against what was streamed.

use std::io::Read as _;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sage_crypto::digest::sha256_tagged;
use serde_json::{json, Value};

use crate::fixture::delegation;
use crate::util::{FakeNode, Keys, Node, Reply, Run};

/// An OpenAI-compatible backend that streams: each request plays the next
/// script the test queued, piece by piece as the test sends them.
pub(crate) struct Backend {
    fake: FakeNode,
    scripts: Sender<(Receiver<Vec<u8>>, bool)>,
    asked: Arc<Mutex<Vec<Value>>>,
}

impl Backend {
    pub(crate) fn start() -> Backend {
        let (scripts, queued) = mpsc::channel::<(Receiver<Vec<u8>>, bool)>();
        let queued = Mutex::new(queued);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let fake = FakeNode::replying(move |_, _, body| {
            seen.lock()
                .unwrap()
                .push(serde_json::from_slice(body).unwrap());
            let next = queued.lock().unwrap().recv_timeout(Duration::from_secs(20));
            let (pieces, cut) = next.expect("a script for each request");
            Reply::Stream {
                content_type: "text/event-stream",
                pieces,
                cut,
            }
        });
        Backend {
            fake,
            scripts,
            asked,
        }
    }

    /// The next request's script: what is sent on the sender is streamed;
    /// dropping it ends the stream (closes the connection with `cut`).
    pub(crate) fn script(&self, cut: bool) -> Sender<Vec<u8>> {
        let (sender, pieces) = mpsc::channel();
        self.scripts.send((pieces, cut)).unwrap();
        sender
    }

    /// Requests received so far.
    pub(crate) fn asked(&self) -> Vec<Value> {
        self.asked.lock().unwrap().clone()
    }
}

/// The SSE event of one piece of content.
pub(crate) fn piece(text: &str) -> Vec<u8> {
    let event = json!({"model": "tiny", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {event}\n\n").into_bytes()
}

/// The events that end a chat stream.
pub(crate) fn finish() -> Vec<u8> {
    let last = json!({"model": "tiny", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"completion_tokens": 4}});
    format!("data: {last}\n\ndata: [DONE]\n\n").into_bytes()
}

/// Thor serving `llm_inference` with an `http` executor in OpenAI mode
/// in front of `backend`; Sprout knows Thor.
fn thor_fronting(backend: &Backend) -> (Keys, Node) {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = format!(
        "[executors.llm_inference]\nkind = \"http\"\nurl = \"http://{}/v1/chat/completions\"\nmode = \"openai\"\nmodel = \"tiny\"\ntimeout = \"30s\"\n",
        backend.fake.addr
    );
    let path = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(&path, config).unwrap();
    let node = keys.serve("Thor", &["--config", path.to_str().unwrap()]);
    (keys, node)
}

/// The arguments of a streaming delegation of a prompt to `node`.
fn streaming<'a>(port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--port",
        port,
        "--task-type",
        "llm_inference",
        "--input",
        r#"{"prompt": "a story"}"#,
        "--stream",
    ];
    args.extend_from_slice(extra);
    delegation(&args)
}

/// A `sage` command started with its stdout read as it comes: the bytes
/// of each read arrive on the receiver.
fn started(keys: &Keys, args: &[&str]) -> (Child, Receiver<Vec<u8>>) {
    let mut child = keys
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sage");
    let mut stdout = child.stdout.take().unwrap();
    let (sender, reads) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || sender.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    (child, reads)
}

/// Reads from `reads` until what came is `expected`; fails the test if
/// something else or nothing comes.
#[track_caller]
fn read_until(reads: &Receiver<Vec<u8>>, expected: &str) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match reads.recv_timeout(Duration::from_secs(20)) {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => panic!(
                "stdout had {:?} of {expected:?}: {e}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
    got
}

/// The rest of `child`'s run: its stdout after `read`, and its stderr.
fn rest(mut child: Child, reads: Receiver<Vec<u8>>, mut read: Vec<u8>) -> Run {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    for bytes in reads {
        read.extend_from_slice(&bytes);
    }
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(read).unwrap(),
        stderr,
    }
}

/// The signed proof's content in the one receipt of `export`.
fn exported_proof(export: &std::path::Path, task_id: &str) -> Value {
    let text = std::fs::read_to_string(export).unwrap();
    for line in text.lines() {
        let receipt: Value = serde_json::from_str(line).unwrap();
        if receipt["task_id"] != task_id {
            continue;
        }
        let envelope: sage_types::Envelope =
            serde_json::from_value(receipt["proof"].clone()).unwrap();
        return serde_json::from_slice(&envelope.payload_bytes().unwrap()).unwrap();
    }
    panic!("no receipt of {task_id} in {text}");
}

#[test]
fn a_streamed_delegation_prints_each_piece_as_it_comes_and_its_proof_signs_them() {
    let backend = Backend::start();
    let (keys, thor) = thor_fronting(&backend);
    let port = thor.port();
    let script = backend.script(false);
    script.send(piece("Once ")).unwrap();
    script.send(piece("upon ")).unwrap();
    let (mut child, reads) = started(&keys, &streaming(&port, &["--task-id", "story-1"]));
    // The backend holds the rest back: these pieces came before the end.
    let read = read_until(&reads, "Once upon ");
    assert!(child.try_wait().unwrap().is_none(), "sage ended early");
    for text in ["a time, ", "in Zürich", "."] {
        script.send(piece(text)).unwrap();
    }
    script.send(finish()).unwrap();
    drop(script);
    let run = rest(child, reads, read);
    run.assert_code(0);
    let output = "Once upon a time, in Zürich.";
    assert_eq!(run.stdout, output, "stdout holds the output alone");
    run.assert_stderr(&["Execution proof", "proof signature verified"]);
    assert_eq!(backend.asked()[0]["stream"], true);

    // With --json: a line per piece, then the report.
    let script = backend.script(false);
    for text in ["one ", "two"] {
        script.send(piece(text)).unwrap();
    }
    script.send(finish()).unwrap();
    drop(script);
    let run = keys.run(&streaming(&port, &["--json", "--task-id", "story-2"]));
    run.assert_code(0);
    let (chunks, report): (Vec<&str>, Vec<&str>) = run
        .stdout
        .lines()
        .partition(|line| line.starts_with(r#"{"chunk""#));
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(chunks, [json!({"chunk": "one "}), json!({"chunk": "two"})]);
    let report: Value = serde_json::from_str(&report.join("\n")).unwrap();
    assert_eq!(report["streamed"], true);
    assert_eq!(report["proof"]["result"]["content"], "one two");

    // The receipts verify offline, and the signed digest is the bytes'.
    let export = keys.export_and_verify(2);
    let proof = exported_proof(&export, "story-1");
    assert_eq!(proof["result"]["content"], output);
    assert_eq!(
        proof["result"]["output_digest"],
        sha256_tagged(output.as_bytes())
    );
    assert_eq!(thor.executions_of("story-1"), 1);
}

#[test]
fn a_stream_cut_by_the_backend_fails_the_delegation_and_keeps_no_receipt() {
    let backend = Backend::start();
    let (keys, thor) = thor_fronting(&backend);
    let script = backend.script(true);
    script.send(piece("half ")).unwrap();
    script.send(piece("a sto")).unwrap();
    drop(script);
    let port = thor.port();
    let run = keys.run(&streaming(&port, &["--task-id", "cut-1"]));
    run.assert_code(1);
    assert_eq!(run.stdout, "half a sto", "the pieces came before the cut");
    run.assert_stderr(&["stream", "was cut", "run failed", "10 bytes of content"]);
    let list = keys.run(&["proofs", "list", "--json"]);
    list.assert_code(0);
    let rows = list.json()["delegations"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "stream_cut");
    let show = keys.run(&["proofs", "show", "cut-1"]);
    show.assert_stdout(&["outcome:   stream_cut", "no proof came back"]);
}

#[test]
fn a_delegator_gone_mid_stream_leaves_the_run_to_its_end_and_its_proof_stored() {
    let backend = Backend::start();
    let (keys, thor) = thor_fronting(&backend);
    let port = thor.port();
    let script = backend.script(false);
    script.send(piece("first ")).unwrap();
    let (mut child, reads) = started(&keys, &streaming(&port, &["--task-id", "gone-1"]));
    read_until(&reads, "first ");
    child.kill().unwrap();
    child.wait().unwrap();
    script.send(piece("and last")).unwrap();
    script.send(finish()).unwrap();
    drop(script);
    // The retry of the same task id gets the stored proof of that one run.
    let run = keys.run(&streaming(&port, &["--json", "--task-id", "gone-1"]));
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["proof"]["result"]["content"], "first and last");
    assert_eq!(
        report["streamed"], false,
        "a stored proof is a plain answer"
    );
    assert_eq!(thor.executions_of("gone-1"), 1);
    assert_eq!(backend.asked().len(), 1, "the backend was asked once");
    keys.export_and_verify(1);
}

#[test]
fn an_executor_that_does_not_stream_answers_a_stream_request_whole() {
    let (keys, thor) = crate::fixture::serving_thor();
    let port = thor.port();
    let run = keys.delegate(&[
        "--port",
        &port,
        "--task-type",
        "echo",
        "--input",
        r#"{"n": 1}"#,
        "--stream",
        "--json",
    ]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["streamed"], false);
    assert_eq!(report["proof"]["result"], json!({"n": 1}));
}

/// The config of a node whose `llm_inference` fronts `backend`.
pub(crate) fn fronting(backend: &Backend) -> String {
    format!(
        "[executors.llm_inference]\nkind = \"http\"\nurl = \"http://{}/v1/chat/completions\"\nmode = \"openai\"\nmodel = \"tiny\"\ntimeout = \"30s\"\n",
        backend.fake.addr
    )
}

/// A routed streaming delegation from Sprout.
fn routed(fleet: &crate::fixture::Fleet, extra: &[&str]) -> Run {
    let mut args = vec![
        "delegate",
        "--local",
        "Sprout",
        "--task-type",
        "llm_inference",
        "--input",
        r#"{"prompt": "a story"}"#,
        "--stream",
        "--json",
    ];
    args.extend_from_slice(extra);
    fleet.keys("Sprout").run(&args)
}

#[test]
fn a_routed_delegation_streams_and_fails_over_only_before_the_first_piece() {
    let backend = Backend::start();
    let config = fronting(&backend);
    let (fleet, _nodes) = crate::route::fleet_of(&[("Thor", &config), ("Legion", &config)]);

    let script = backend.script(false);
    script.send(piece("routed ")).unwrap();
    script.send(piece("words")).unwrap();
    script.send(finish()).unwrap();
    drop(script);
    let run = routed(&fleet, &[]);
    run.assert_code(0);
    let report: Value = serde_json::from_str(
        &run.stdout
            .lines()
            .filter(|l| !l.starts_with(r#"{"chunk""#))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    assert_eq!(report["streamed"], true);
    assert_eq!(report["proof"]["result"]["content"], "routed words");
    assert_eq!(report["route"]["attempts"].as_array().unwrap().len(), 1);

    // Cut after a piece was printed: even an idempotent task is not sent
    // to the other peer, whose answer would follow what was shown.
    let script = backend.script(true);
    script.send(piece("shown ")).unwrap();
    drop(script);
    let run = routed(&fleet, &["--idempotent", "--task-id", "routed-cut"]);
    run.assert_code(1);
    assert!(
        run.stdout.starts_with(r#"{"chunk":"shown "}"#),
        "{}",
        run.stdout
    );
    run.assert_stderr(&["was cut"]);
    assert_eq!(backend.asked().len(), 2, "no second run anywhere");
    let list = fleet.keys("Sprout").run(&["proofs", "list", "--json"]);
    let rows: Vec<Value> = list.json()["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["task_id"] == "routed-cut")
        .cloned()
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "stream_cut");
}

/// Sprout's signed `llm_inference` task for Thor, as a body.
fn signed_prompt(keys: &Keys, task_id: &str, nonce: &str) -> Vec<u8> {
    let now = sage_types::clock::now_ms();
    let task = sage_types::Task {
        task_id: task_id.into(),
        task_type: "llm_inference".into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: now,
        expires_at: now + 60_000,
        nonce: nonce.into(),
        input: json!({"prompt": "a story"}),
        estimated_cost: 1.0,
        quality: sage_types::QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    };
    let envelope = sage_crypto::sign_envelope(
        &keys.key("Sprout"),
        sage_types::task::TASK_PAYLOAD_TYPE,
        &serde_json::to_vec(&task).unwrap(),
    );
    serde_json::to_vec(&envelope).unwrap()
}

#[test]
fn the_streaming_answer_is_json_lines_ending_with_the_stored_proof_byte_for_byte() {
    let backend = Backend::start();
    let (keys, thor) = thor_fronting(&backend);
    let script = backend.script(false);
    script.send(piece("line\none ")).unwrap();
    script.send(piece("two")).unwrap();
    script.send(finish()).unwrap();
    drop(script);
    let accept = [("Accept", "application/vnd.sage.stream; version=1")];
    let first = signed_prompt(&keys, "wire-1", "00112233445566778899aabbccddeeff");
    let answer = crate::util::http_with(thor.addr, "POST", "/v1/tasks", &accept, &first);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        answer
            .headers
            .contains("content-type: application/vnd.sage.stream; version=1"),
        "{}",
        answer.headers
    );
    let body = String::from_utf8(answer.body).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert_eq!(lines[0], r#"{"chunk":"line\none "}"#);
    assert_eq!(lines[1], r#"{"chunk":"two"}"#);
    let proof = lines[2]
        .strip_prefix(r#"{"proof":"#)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a proof line: {}", lines[2]));

    // A retry of the same task gets the stored proof: the same bytes, as
    // a plain answer, stream asked or not; a replay is refused.
    let retry = signed_prompt(&keys, "wire-1", "ffeeddccbbaa99887766554433221100");
    let plain = crate::util::http_with(thor.addr, "POST", "/v1/tasks", &accept, &retry);
    assert_eq!(plain.status, 200);
    assert!(plain.headers.contains("content-type: application/json"));
    assert_eq!(String::from_utf8(plain.body).unwrap(), proof);
    let replay = crate::util::http_with(thor.addr, "POST", "/v1/tasks", &accept, &first);
    assert_eq!(replay.problem_code(), "replayed");
    assert_eq!(backend.asked().len(), 1);
    assert_eq!(thor.executions_of("wire-1"), 1);
}

/// What a fake changes of an honest proof before signing it.
type Forge = fn(&mut sage_types::Proof);

/// A fake Thor whose streaming answer is `chunks`, then (unless `None`)
/// the proof that `forge` makes of an honest one, signed with Thor's key.
fn streaming_thor(keys: &Keys, chunks: &'static [&'static str], forge: Option<Forge>) -> FakeNode {
    let key = keys.key("Thor");
    FakeNode::replying(move |method, path, body| match (method, path) {
        ("GET", "/health") => Reply::Json(200, crate::delegate::thor_health()),
        ("POST", "/v1/tasks") => {
            let envelope: sage_types::Envelope = serde_json::from_slice(body).unwrap();
            let payload = envelope.payload_bytes().unwrap();
            let task: sage_types::Task = serde_json::from_slice(&payload).unwrap();
            let (sender, pieces) = mpsc::channel();
            for chunk in chunks {
                let line = json!({ "chunk": chunk }).to_string() + "\n";
                sender.send(line.into_bytes()).unwrap();
            }
            if let Some(forge) = forge {
                let mut proof = crate::delegate::honest_proof(&task, &payload);
                let content = chunks.concat();
                proof.result =
                    json!({"content": content, "output_digest": sha256_tagged(content.as_bytes())});
                forge(&mut proof);
                proof.result_digest = sage_crypto::digest::json_digest(&proof.result);
                let signed = crate::delegate::sign_proof(&key, &proof);
                let line = json!({ "proof": signed }).to_string() + "\n";
                sender.send(line.into_bytes()).unwrap();
            }
            Reply::Stream {
                content_type: sage_types::stream::STREAM_ACCEPT,
                pieces,
                cut: forge.is_none(),
            }
        }
        _ => Reply::Json(404, b"{}".to_vec()),
    })
}

#[test]
fn a_stream_that_is_not_what_its_valid_proof_signs_is_refused() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let cases: [(Option<Forge>, &str, &str); 4] = [
        (Some(|_| {}), "", "succeeded"),
        (
            Some(|p| p.result["content"] = json!("other words")),
            "does not match its signed proof",
            "stream_mismatch",
        ),
        (
            Some(|p| p.result["output_digest"] = json!(sha256_tagged(b"other"))),
            "signed output digest",
            "stream_mismatch",
        ),
        (None, "the stream from Thor was cut", "stream_cut"),
    ];
    for (i, (forge, refusal, status)) in cases.into_iter().enumerate() {
        let fake = streaming_thor(&keys, &["streamed ", "words"], forge);
        let port = fake.addr.port().to_string();
        let task_id = format!("forged-{i}");
        let run = keys.delegate(&[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--stream",
            "--task-id",
            &task_id,
        ]);
        assert_eq!(run.stdout, "streamed words", "{}", run.stderr);
        let list = keys.run(&["proofs", "list", "--json"]);
        let row = list.json()["delegations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task_id"] == task_id.as_str())
            .cloned()
            .unwrap();
        assert_eq!(row["status"], status, "{row}");
        if status == "succeeded" {
            run.assert_code(0);
        } else {
            run.assert_code(1);
            run.assert_stderr(&[refusal]);
        }
    }
}
