//! Streaming chat completions through the local API, driven by the real
//! `openai` Python package: a backend that streams as the test says, a
//! peer (Thor) whose `http` executor in OpenAI mode fronts it, and a node
//! (Sprout) that relays the signed stream's pieces as OpenAI's chunks and
//! sends the receipt only once the proof verified over the whole output.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use sage_crypto::digest::sha256_tagged;
use serde_json::{json, Value};

use crate::local_api::{local, local_port, payload_digest, python_ok, sprout_with_token};
use crate::route::fleet_of;
use crate::stream::{finish, fronting, piece, Backend};
use crate::util::Node;

/// The model Thor's executor names (`stream::fronting`).
const MODEL: &str = "tiny";
const TOKEN: &str = "stream-s3cret";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python");

/// The next line the Python client printed, as JSON.
#[track_caller]
fn next(lines: &Receiver<String>) -> Value {
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a line from openai_stream_client.py");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Sends each of `texts` to the backend only once the Python client got
/// the one before: the pieces reach the application as they come, not
/// when the stream ends.
#[track_caller]
fn relayed_one_by_one(
    script: &mpsc::Sender<Vec<u8>>,
    lines: &Receiver<String>,
    phase: &str,
    texts: &[&str],
) {
    for text in texts {
        script.send(piece(text)).unwrap();
        assert_eq!(next(lines), json!({"phase": phase, "piece": text}));
    }
}

#[test]
fn the_openai_package_streams_a_verified_chat_and_a_cut_stream_raises_without_a_receipt() {
    let backend = Backend::start();
    let config = fronting(&backend);
    let (fleet, mut nodes) = fleet_of(&[("Thor", &config)]);
    let thor = nodes.remove(0);
    let keys = fleet.keys("Sprout");
    let (sprout, token) = sprout_with_token(keys, TOKEN);
    let socket = keys.state_dir().join("sage.sock");
    let port = local_port(&sprout);

    // One script per request, in the client's order.
    let over_socket = backend.script(false);
    let over_port = backend.script(false);
    let cut = backend.script(true);
    let early = backend.script(true);
    drop(early); // no piece at all: the run fails before the stream starts

    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/openai_stream_client.py"
        ))
        .arg(&socket)
        .arg(port.port().to_string())
        .arg(TOKEN)
        .arg(MODEL)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });

    let story = ["Once ", "upon a ", "time in Zürich", "."];
    relayed_one_by_one(&over_socket, &lines, "socket", &story);
    over_socket.send(finish()).unwrap();
    drop(over_socket);
    let socket_done = next(&lines);
    relayed_one_by_one(&over_port, &lines, "port", &["by ", "the port"]);
    over_port.send(finish()).unwrap();
    drop(over_port);
    let port_done = next(&lines);
    relayed_one_by_one(&cut, &lines, "cut", &["half ", "a sto"]);
    drop(cut);
    let cut_end = next(&lines);
    let early_end = next(&lines);
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "openai_stream_client.py: {stderr}");

    // The stream that ended well: the pieces' text, the receipt in the
    // last chunk, and its proof signing the bytes the client received.
    let text: String = story.concat();
    assert_eq!(socket_done["text"], text.as_str(), "{socket_done}");
    assert_eq!(socket_done["digest"], sha256_tagged(text.as_bytes()));
    assert_eq!(socket_done["content_type"], "text/event-stream");
    assert_eq!(socket_done["finish_reason"], "stop");
    assert_eq!(socket_done["usage"], json!({"completion_tokens": 4}));
    let roles = socket_done["roles"].as_array().unwrap();
    assert_eq!(roles[0], "assistant", "{roles:?}");
    assert!(roles[1..].iter().all(Value::is_null), "{roles:?}");
    let receipt = &socket_done["receipt"];
    let id = receipt["id"].as_str().unwrap();
    assert_eq!(socket_done["task_id"], id);
    assert_eq!(socket_done["ids"], json!([format!("chatcmpl-{id}")]));
    assert_eq!(receipt["executor"], "Thor");
    assert_eq!(receipt["output_digest"], socket_done["digest"]);
    assert_eq!(thor.executions_of(id), 1);
    let port_id = port_done["receipt"]["id"].as_str().unwrap();
    assert_eq!(port_done["text"], "by the port");
    assert_eq!(port_done["task_id"], port_id);

    let mut lines_out = String::new();
    for (id, done) in [(id, &socket_done), (port_id, &port_done)] {
        let kept = local(
            &socket,
            "GET",
            &format!("/local/v1/receipts/{id}"),
            &Value::Null,
        );
        assert_eq!(kept.status, 200, "{id}");
        let kept = kept.json();
        assert_eq!(
            payload_digest(&kept["task"]),
            done["receipt"]["task_digest"]
        );
        assert_eq!(
            payload_digest(&kept["proof"]),
            done["receipt"]["proof_digest"]
        );
        let proof: sage_types::Envelope = serde_json::from_value(kept["proof"].clone()).unwrap();
        let proof: Value = serde_json::from_slice(&proof.payload_bytes().unwrap()).unwrap();
        assert_eq!(proof["result"]["output_digest"], done["digest"], "{proof}");
        assert_eq!(proof["result"]["content"], done["text"]);
        lines_out.push_str(&format!("{kept}\n"));
    }
    let file = keys.path().with_file_name("streamed.jsonl");
    std::fs::write(&file, lines_out).unwrap();
    let verified = keys.run(&["proofs", "verify", file.to_str().unwrap(), "--json"]);
    verified.assert_code(0);
    let results = verified.json()["results"].clone();
    assert_eq!(results.as_array().unwrap().len(), 2, "{results}");
    assert!(
        results
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true && r["signer"] == "Thor"),
        "{results}"
    );

    // The cut stream: the pieces came, then an error event that the
    // package raised as `openai.APIError`, and no receipt in the ledger.
    assert_eq!(cut_end["text"], "half a sto", "{cut_end}");
    assert_eq!(cut_end["error"]["code"], "stream_cut", "{cut_end}");
    assert_eq!(cut_end["error"]["type"], "server_error");
    let message = cut_end["error"]["message"].as_str().unwrap();
    assert!(message.contains("Thor"), "{message}");
    let cut_id = cut_end["task_id"].as_str().unwrap();
    let status = local(
        &socket,
        "GET",
        &format!("/local/v1/tasks/{cut_id}"),
        &Value::Null,
    );
    assert_eq!(status.status, 200);
    let status = status.json();
    assert_eq!(status["status"], "stream_cut", "{status}");
    assert!(
        status["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] != "succeeded"),
        "{status}"
    );
    assert!(
        sprout
            .log()
            .contains("a streamed chat completion failed after pieces were relayed"),
        "{}",
        sprout.log()
    );

    // Failed before any piece: the ordinary error answer, as without a
    // stream.
    assert_eq!(
        (&early_end["error"]["status"], &early_end["error"]["code"]),
        (&json!(502), &json!("execution_failed")),
        "{early_end}"
    );
    assert_eq!(backend.asked().len(), 4, "no failover after a piece");

    // The task endpoint answers whole, and says where streams are.
    let refused = local(
        &socket,
        "POST",
        "/local/v1/tasks",
        &json!({"task_type": "echo", "stream": true}),
    );
    assert_eq!(refused.status, 400);
    let refused = refused.json();
    assert_eq!(refused["code"], "streaming_unavailable", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("/local/v1/chat/completions"),
        "{refused}"
    );
    assert!(backend.asked().iter().all(|a| a["stream"] == true));

    // The example a user runs: it prints the pieces and exits 0 only when
    // the receipt came.
    let script = backend.script(false);
    for text in ["an ", "example"] {
        script.send(piece(text)).unwrap();
    }
    script.send(finish()).unwrap();
    drop(script);
    let (stdout, stderr) = python_ok(&[
        &format!("{EXAMPLES}/openai_chat.py"),
        "--socket",
        socket.to_str().unwrap(),
        "--stream",
        "hi",
    ]);
    assert_eq!(stdout, "an example\n");
    assert!(stderr.contains("'executor': 'Thor'"), "{stderr}");

    // The same with the token over the port, and a stream whose backend
    // cuts it: the example exits 1, no receipt.
    let script = backend.script(true);
    script.send(piece("gone ")).unwrap();
    drop(script);
    let out = Command::new("python3")
        .arg(format!("{EXAMPLES}/openai_chat.py"))
        .args(["--url", &format!("http://{port}"), "--token-file"])
        .arg(&token)
        .args(["--model", MODEL, "--stream", "hi"])
        .output()
        .expect("run python3");
    assert!(!out.status.success(), "a cut stream is no success");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not verified, discard what was shown") && stderr.contains("was cut"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "gone \n");
}

/// Thor fronting `backend`, and Sprout serving its local API; Sprout's
/// socket.
fn sprout_and_thor(backend: &Backend) -> (crate::fixture::Fleet, Node, Node, std::path::PathBuf) {
    let (fleet, mut nodes) = fleet_of(&[("Thor", &fronting(backend))]);
    let thor = nodes.remove(0);
    let keys = fleet.keys("Sprout");
    let sprout = keys.serve("Sprout", &[]);
    let socket = keys.state_dir().join("sage.sock");
    (fleet, thor, sprout, socket)
}

/// The events of a server-sent stream, each `data:` line's text.
fn events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn the_stream_is_server_sent_events_and_a_client_gone_mid_stream_leaves_the_receipt_kept() {
    let backend = Backend::start();
    let (fleet, thor, _sprout, socket) = sprout_and_thor(&backend);
    let chat =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": true});

    // The whole stream as bytes: one chunk per piece, the last chunk with
    // the receipt, then `[DONE]`, nothing else.
    let script = backend.script(false);
    for text in ["a ", "b"] {
        script.send(piece(text)).unwrap();
    }
    script.send(finish()).unwrap();
    drop(script);
    let answer = local(&socket, "POST", "/local/v1/chat/completions", &chat);
    assert_eq!(answer.status, 200);
    let headers = answer.headers.to_ascii_lowercase();
    assert!(
        headers.contains("content-type: text/event-stream"),
        "{headers}"
    );
    let events = events(&answer.body);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[3], "[DONE]");
    let chunks: Vec<Value> = events[..3]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[2]["sage_receipt"]["id"].as_str().unwrap().to_owned();
    assert!(
        headers.contains(&format!("x-sage-task-id: {}", id.to_ascii_lowercase())),
        "{headers}"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "a ");
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({"content": "b"}));
    assert_eq!(chunks[2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[..2].iter().all(|c| c.get("sage_receipt").is_none()));
    assert_eq!(
        chunks[2]["sage_receipt"]["output_digest"],
        sha256_tagged(b"a b")
    );

    // A client that reads the first piece and hangs up: the delegation
    // goes on to its end, verified and kept.
    let script = backend.script(false);
    script.send(piece("first ")).unwrap();
    let body = chat.to_string();
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        stream,
        "POST /local/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("first ") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let gone_id = raw
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-sage-task-id"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| panic!("no x-sage-task-id: {raw}"));
    drop(stream);
    script.send(piece("and last")).unwrap();
    script.send(finish()).unwrap();
    drop(script);
    let path = format!("/local/v1/tasks/{gone_id}");
    let mut status = Value::Null;
    for _ in 0..100 {
        status = local(&socket, "GET", &path, &Value::Null).json();
        if status["status"] == "succeeded" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(thor.executions_of(&gone_id), 1);
    let receipt = local(
        &socket,
        "GET",
        &format!("/local/v1/receipts/{gone_id}"),
        &Value::Null,
    )
    .json();
    let file = fleet.keys("Sprout").path().with_file_name("gone.jsonl");
    std::fs::write(&file, format!("{receipt}\n")).unwrap();
    let verified =
        fleet
            .keys("Sprout")
            .run(&["proofs", "verify", file.to_str().unwrap(), "--json"]);
    verified.assert_code(0);
    assert_eq!(verified.json()["results"][0]["ok"], true);
}
