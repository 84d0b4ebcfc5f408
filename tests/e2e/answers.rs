//! Answers longer than the client reads: `sage delegate` and `sage health`
//! stop reading at `--max-answer-bytes`, fail with a message naming the
//! node and the limit, and `delegate` keeps the failed attempt in its
//! ledger.

use crate::util::{FakeNode, Keys, Reply, Run};

/// What a flooding node sends: far more than any bound, so that a client
/// that read it whole would be seen to.
const FLOOD: u64 = 100 * 1024 * 1024;

/// The default of `--max-answer-bytes` (8 MiB), as printed.
const DEFAULT_LIMIT: &str = "8388608 bytes";

fn healthy_thor() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "status": "healthy", "platform": "Thor", "lct_id": "thor_sage_lct", "timestamp": 1.0, "version": "0.1.0"
    }))
    .unwrap()
}

/// A Thor that answers its health check, then floods the answer to a task
/// of either protocol.
fn flooding_thor(announce: bool) -> FakeNode {
    FakeNode::replying(move |method, path, _| match (method, path) {
        ("GET", "/health") => Reply::Json(200, healthy_thor()),
        ("POST", "/v1/tasks" | "/execute_task") => Reply::Flood {
            total: FLOOD,
            announce,
        },
        _ => Reply::Json(404, b"{}".to_vec()),
    })
}

/// Every flood ended well before its end: the client hung up.
#[track_caller]
fn assert_cut_short(fake: &FakeNode, count: usize) {
    for written in fake.floods(count) {
        assert!(
            written < FLOOD / 2,
            "the client read {written} of {FLOOD} bytes"
        );
    }
}

/// An `echo` delegation from Sprout to `thor`, with `extra` arguments.
fn delegate_echo(keys: &Keys, thor: &FakeNode, extra: &[&str]) -> Run {
    let port = thor.addr.port().to_string();
    let mut args = vec![
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--task-type",
        "echo",
    ];
    args.extend_from_slice(extra);
    keys.delegate(&args)
}

#[test]
fn a_flooded_proof_fails_the_delegation_and_is_kept_in_the_ledger() {
    let keys = Keys::with(&["Thor", "Sprout"]);

    // No length announced: the client counts as it reads.
    let chunked = flooding_thor(false);
    let addr = chunked.addr.to_string();
    let run = delegate_echo(&keys, &chunked, &[]);
    run.assert_code(1);
    run.assert_stderr(&[
        &format!("sage: {addr} sent an answer longer than {DEFAULT_LIMIT}"),
        "raise --max-answer-bytes",
    ]);
    assert_cut_short(&chunked, 1);

    // An announced length above the bound, with a bound of one's own, and
    // the legacy protocol's answer the same.
    let announced = flooding_thor(true);
    for protocol in ["v1", "legacy"] {
        let run = delegate_echo(
            &keys,
            &announced,
            &["--protocol", protocol, "--max-answer-bytes", "100000"],
        );
        run.assert_code(1);
        run.assert_stderr(&[&format!(
            "{} sent an answer longer than 100000 bytes",
            announced.addr
        )]);
    }
    assert_cut_short(&announced, 2);

    // Each failed attempt is in the ledger with its outcome.
    let run = keys.run(&["proofs", "list", "--json"]);
    run.assert_code(0);
    let entries = run.json()["delegations"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3, "{entries:?}");
    for (entry, limit) in entries
        .iter()
        .zip([DEFAULT_LIMIT, "100000 bytes", "100000 bytes"])
    {
        assert_eq!(entry["peer"], "Thor", "{entry}");
        assert_eq!(entry["status"], "too_large", "{entry}");
        assert!(entry["error"].as_str().unwrap().contains(limit), "{entry}");
    }
    assert_eq!(entries[2]["protocol"], "legacy");
    keys.run(&["proofs", "list"])
        .assert_code(0)
        .assert_stdout(&["echo → Thor  too_large"]);
}

#[test]
fn a_flooded_health_answer_fails_health_and_delegate() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    for announce in [true, false] {
        let fake = FakeNode::replying(move |_, _, _| Reply::Flood {
            total: FLOOD,
            announce,
        });
        let addr = fake.addr.to_string();
        let run = keys.run(&["health", &addr]);
        run.assert_code(1);
        run.assert_stderr(&[&format!(
            "sage: {addr} sent an answer longer than {DEFAULT_LIMIT}"
        )]);
        // The node answered: the advice on reaching it does not apply.
        assert!(!run.stderr.contains("troubleshooting"), "{}", run.stderr);

        let run = keys.run(&["health", &addr, "--max-answer-bytes", "4096", "--json"]);
        run.assert_code(1);
        let json = run.json();
        assert_eq!(json["error"]["code"], "answer_too_large", "{json}");
        let error = json["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            error.contains(&format!("{addr} sent an answer longer than 4096 bytes")),
            "{error}"
        );

        // A delegation fails at its health check, before anything is sent.
        let run = keys.delegate(&[
            "--host",
            "127.0.0.1",
            "--port",
            &fake.addr.port().to_string(),
        ]);
        run.assert_code(1);
        run.assert_stderr(&[&format!(
            "{addr} sent an answer longer than {DEFAULT_LIMIT}"
        )]);
        assert_cut_short(&fake, 3);
    }
    let run = keys.run(&["proofs", "list", "--json"]);
    let statuses: Vec<_> = run.json()["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(statuses, ["too_large", "too_large"]);
}

#[test]
fn max_answer_bytes_must_be_a_positive_count() {
    let keys = Keys::new();
    for bad in ["0", "-1", "8MiB"] {
        let flag = format!("--max-answer-bytes={bad}");
        let run = keys.run(&["health", "127.0.0.1:1", &flag]);
        run.assert_code(2);
        run.assert_stderr(&["--max-answer-bytes"]);
    }
}
