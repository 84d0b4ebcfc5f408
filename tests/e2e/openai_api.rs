//! The local API's OpenAI-compatible endpoints, driven by the real
//! `openai` Python package: a mock OpenAI backend, a peer (Thor) whose
//! `http` executor in OpenAI mode fronts it, and a node (Sprout) whose
//! local API turns a chat completion into a signed, routed, verified and
//! recorded task for Thor.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::fixture::fake_llm_seen;
use crate::local_api::{local, local_port, payload_digest, python_ok, sprout_with_token};
use crate::route::fleet_of;

/// The model Thor's executor asks its backend for.
const MODEL: &str = "tiny-chat";
const TOKEN: &str = "openai-s3cret";
/// The Python examples a user copies.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python");

/// `tests/e2e/openai_client.py SOCKET PORT TOKEN MODEL`, which must
/// succeed; its report.
fn python_client(socket: &Path, port: std::net::SocketAddr) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/openai_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(socket)
        .arg(port.port().to_string())
        .arg(TOKEN)
        .arg(MODEL)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}\n{stderr}"))
}

#[test]
fn the_openai_package_lists_models_and_gets_verified_chat_completions() {
    let (llm, seen) = fake_llm_seen();
    let thor_config = format!(
        "[executors.llm_inference]\nkind = \"http\"\nurl = \"http://{}/v1/chat/completions\"\nmode = \"openai\"\nmodel = \"{MODEL}\"\ntimeout = \"5s\"\n\n[executors.echo]\nkind = \"builtin\"\nbuiltin = \"echo\"\n",
        llm.addr
    );
    let (fleet, mut nodes) = fleet_of(&[("Thor", &thor_config)]);
    let thor = nodes.remove(0);
    let keys = fleet.keys("Sprout");

    // Thor's capabilities say which model its task type answers with.
    let caps = keys.run(&["capabilities", &thor.address()]);
    caps.assert_code(0);
    caps.assert_stdout(&["task type:  llm_inference (http, model tiny-chat"]);
    let caps = keys.run(&["capabilities", &thor.address(), "--json"]);
    let served = caps.json()["capabilities"]["task_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["task_type"].clone(), t.get("model").cloned()))
        .collect::<Vec<_>>();
    assert!(
        served.contains(&(json!("llm_inference"), Some(json!(MODEL)))),
        "{served:?}"
    );
    assert!(
        served.contains(&(json!("echo"), None)),
        "a builtin has no model: {served:?}"
    );

    let (sprout, _) = sprout_with_token(keys, TOKEN);
    let socket = keys.state_dir().join("sage.sock");

    // The list, as the socket gives it: one entry for the one model.
    let listed = local(&socket, "GET", "/local/v1/models", &Value::Null);
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(listed["object"], "list");
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{listed}");
    assert_eq!(data[0]["id"], MODEL);
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "sage");
    assert!(data[0]["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(data[0]["sage"]["nodes"], json!(["Thor"]));
    assert_eq!(data[0]["sage"]["task_types"], json!(["llm_inference"]));

    let one = local(
        &socket,
        "GET",
        &format!("/local/v1/models/{MODEL}"),
        &Value::Null,
    );
    assert_eq!((one.status, one.json()["id"].clone()), (200, json!(MODEL)));

    // Sprout itself serves `llm_inference` too, with the simulating
    // builtin and no model: a chat completion must go to Thor only.
    let report = python_client(&socket, local_port(&sprout));
    assert_eq!(report["models"], json!([MODEL]));
    let over_socket = &report["socket"];
    assert_eq!(over_socket["content"], "echo: hello over the socket");
    assert_eq!(over_socket["model"], MODEL);
    assert_eq!(over_socket["executor"], "Thor");
    assert_eq!(report["port"]["content"], "echo: hello over the port");
    assert_eq!(report["wrong_token"], "refused");
    assert_eq!(
        report["unknown_model"],
        json!({"status": 404, "code": "model_not_found"})
    );

    // The backend got the messages and the options the executor copies;
    // the option it does not know stayed behind.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["messages"][0]["content"], "Be brief.");
    assert_eq!(seen[0]["temperature"], 0.2);
    assert_eq!(seen[0]["max_tokens"], 16);
    assert_eq!(seen[0]["model"], MODEL);
    assert!(seen[0].get("user").is_none(), "{}", seen[0]);

    // Each completion is a task Thor ran once, whose receipt, as the local
    // API gives it, verifies with Thor's key and has the digests the
    // headers gave.
    let ids = [
        over_socket["receipt_id"].as_str().unwrap(),
        report["port"]["receipt_id"].as_str().unwrap(),
    ];
    let mut lines = String::new();
    for id in ids {
        assert_eq!(thor.executions_of(id), 1, "{id}");
        let receipt = local(
            &socket,
            "GET",
            &format!("/local/v1/receipts/{id}"),
            &Value::Null,
        );
        assert_eq!(receipt.status, 200, "{id}");
        let receipt = receipt.json();
        if id == ids[0] {
            assert_eq!(payload_digest(&receipt["task"]), over_socket["task_digest"]);
            assert_eq!(
                payload_digest(&receipt["proof"]),
                over_socket["proof_digest"]
            );
        }
        lines.push_str(&format!("{receipt}\n"));
    }
    let file = keys.path().with_file_name("receipts.jsonl");
    std::fs::write(&file, lines).unwrap();
    let verified = keys.run(&["proofs", "verify", file.to_str().unwrap(), "--json"]);
    verified.assert_code(0);
    let results = verified.json()["results"].clone();
    for (result, id) in results.as_array().unwrap().iter().zip(ids) {
        assert_eq!(
            (&result["ok"], &result["task_id"], &result["signer"]),
            (&json!(true), &json!(id), &json!("Thor")),
            "{results}"
        );
    }

    // The examples of examples/python do the same, as a user runs them.
    let example = python_ok;
    let socket_arg = socket.to_str().unwrap();
    let (stdout, stderr) = example(&[
        &format!("{EXAMPLES}/openai_chat.py"),
        "--socket",
        socket_arg,
        "hello from the example",
    ]);
    assert_eq!(stdout, "echo: hello from the example\n", "{stderr}");
    assert!(stderr.contains("ran on Thor"), "{stderr}");
    let (stdout, _) = example(&[
        "-c",
        &format!(
            "import json, sys; sys.path.insert(0, {EXAMPLES:?}); from sage_local import Node; \
             completion, receipt = Node({socket_arg:?}).chat({MODEL:?}, [{{'role': 'user', 'content': 'hi'}}]); \
             print(json.dumps([completion['choices'][0]['message']['content'], receipt]))"
        ),
    ]);
    let [content, receipt]: [Value; 2] = serde_json::from_str(&stdout).unwrap();
    assert_eq!(content, "echo: hi");
    assert_eq!(receipt["executor"], "Thor");
    let id = receipt["receipt_id"].as_str().unwrap();
    assert_eq!(thor.executions_of(id), 1, "{receipt}");
}

#[test]
fn chat_completion_failures_are_in_openais_error_shape() {
    let (fleet, _) = fleet_of(&[("Thor", "")]);
    let keys = fleet.keys("Sprout");
    let _sprout = keys.serve("Sprout", &[]);
    let socket = keys.state_dir().join("sage.sock");

    // No node serves a model: an empty list, and a 404 for any model.
    let listed = local(&socket, "GET", "/local/v1/models", &Value::Null).json();
    assert_eq!(listed, json!({"object": "list", "data": []}));
    let unknown = local(
        &socket,
        "POST",
        "/local/v1/chat/completions",
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(unknown.status, 404);
    let error = &unknown.json()["error"];
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"].as_str().unwrap().contains("\"m\""),
        "{error}"
    );
    let retrieve = local(&socket, "GET", "/local/v1/models/org/m", &Value::Null);
    assert_eq!(retrieve.status, 404);
    assert_eq!(retrieve.json()["error"]["code"], "model_not_found");

    let bad = local(
        &socket,
        "POST",
        "/local/v1/chat/completions",
        &json!({"messages": []}),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "bad_request");
}
