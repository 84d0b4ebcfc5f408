//! `sage bench` against real nodes: counts, errors by kind, both protocols.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::fixture::serving_thor;
use crate::util::{FakeNode, Keys, Node, Reply, Run};

/// `sage bench --local Sprout --target THOR --json EXTRA...`.
fn bench(keys: &Keys, thor: &Node, extra: &[&str]) -> Run {
    let address = thor.address();
    let mut args = vec!["bench", "--local", "Sprout", "--target", &address, "--json"];
    args.extend_from_slice(extra);
    keys.run(&args)
}

#[test]
fn bench_counts_verified_delegations_and_compares_with_the_baseline() {
    let (keys, thor) = serving_thor();
    let run = bench(
        &keys,
        &thor,
        &["--requests", "200", "--concurrency", "4", "--baseline"],
    );
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["sage"]["ok"], 200);
    assert_eq!(out["sage"]["errors"], serde_json::json!({}));
    assert_eq!(out["verified"], true);
    assert_eq!(out["baseline"]["ok"], 200);
    let ratio = out["ratio_to_baseline"].as_f64().unwrap();
    assert!(ratio > 0.0, "{out}");
    let l = &out["sage"]["latency_ms"];
    assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
    assert!(l["p99"].as_f64().unwrap() <= l["max"].as_f64().unwrap());
    // Every request was a task the node really executed.
    assert!(thor.wait_for_log("task executed"));
}

#[test]
fn bench_counts_refusals_by_kind_and_fails_when_nothing_succeeds() {
    let (keys, thor) = serving_thor();
    let run = bench(&keys, &thor, &["--requests", "20", "--task-type", "shell"]);
    run.assert_code(1);
    assert_eq!(run.json()["sage"]["errors"]["refused:unsupported_task"], 20);
    run.assert_stderr(&["no request succeeded (20 refused:unsupported_task)"]);
    // Stderr is a pipe here: no progress line.
    assert!(
        !run.stderr.contains('\r') && !run.stderr.contains(" refused, "),
        "{}",
        run.stderr
    );

    // The summary's CPU line divides by successes: none, so no figure.
    let address = thor.address();
    let text = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--target",
        &address,
        "--requests",
        "20",
        "--task-type",
        "shell",
    ]);
    text.assert_code(1);
    text.assert_stdout(&["client CPU:", "(n/a per successful request)"]);
}

#[test]
fn bench_picks_a_served_task_type_when_the_node_serves_no_echo() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let config = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(
        &config,
        "[executors.cat]\nkind = \"command\"\ncommand = [\"cat\"]\nmax_concurrency = 4\n",
    )
    .unwrap();
    let thor = keys.serve("Thor", &["--config", config.to_str().unwrap()]);
    let run = bench(&keys, &thor, &["--requests", "20", "--concurrency", "2"]);
    run.assert_code(0);
    run.assert_stderr(&["task type: cat (of cat served by Thor; choose with --task-type)"]);
    let out = run.json();
    assert_eq!(out["sage"]["ok"], 20, "{out}");
    assert_eq!(out["sage"]["errors"], serde_json::json!({}));
}

#[test]
fn bench_stops_early_when_nearly_everything_is_refused() {
    let (keys, thor) = serving_thor();
    // Without the early stop this would refuse for a minute.
    let run = bench(&keys, &thor, &["--duration", "60", "--task-type", "shell"]);
    run.assert_code(1);
    run.assert_stderr(&[
        "stopped early:",
        "requests were refused",
        "refused:unsupported_task",
    ]);
    let out = run.json();
    let stop = &out["sage"]["stopped_early"];
    let (requests, refused) = (
        stop["requests"].as_u64().unwrap(),
        stop["refused"].as_u64().unwrap(),
    );
    assert!(requests >= 50 && refused == requests, "{out}");
    assert_eq!(out["sage"]["ok"], 0);
}

#[test]
fn bench_honours_retry_after() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let tasks = Arc::new(AtomicU64::new(0));
    let counted = tasks.clone();
    let fake = FakeNode::replying(move |method, path, _| {
        match (method, path) {
        ("GET", "/health") => Reply::Json(
            200,
            serde_json::to_vec(&serde_json::json!({
                "status": "healthy", "platform": "Thor", "lct_id": "thor_sage_lct", "timestamp": 1.0,
                "version": "0.1.0"
            }))
            .unwrap(),
        ),
        ("POST", "/v1/tasks") => {
            counted.fetch_add(1, Ordering::Relaxed);
            let problem = serde_json::json!({
                "type": "urn:sage:problem:rate_limited", "code": "rate_limited",
                "title": "rate limited", "status": 429, "detail": "slow down"
            });
            Reply::RetryAfter(429, serde_json::to_vec(&problem).unwrap(), 1)
        }
        _ => Reply::Json(404, b"{}".to_vec()),
    }
    });
    let address = fake.addr.to_string();
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--target",
        &address,
        "--json",
        "--duration",
        "3",
        "--concurrency",
        "2",
        "--task-type",
        "echo",
    ]);
    run.assert_code(1);
    let sent = tasks.load(Ordering::Relaxed);
    // Two workers, each pausing a second after every refusal, over 3 s:
    // about six requests; without the pause, thousands.
    assert!((1..=12).contains(&sent), "{sent} requests: {}", run.stdout);
    assert_eq!(run.json()["sage"]["errors"]["refused:rate_limited"], sent);
}

#[test]
fn bench_drives_the_legacy_endpoint_open_loop() {
    let (keys, thor) = serving_thor();
    let run = bench(
        &keys,
        &thor,
        &["--protocol", "legacy", "--requests", "30", "--rate", "300"],
    );
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["protocol"], "legacy");
    assert_eq!(out["sage"]["ok"], 30);
    // 30 requests due at 300/s span at least 97 ms of schedule.
    assert!(out["sage"]["elapsed_ms"].as_f64().unwrap() >= 97.0, "{out}");
    assert!(thor.wait_for_log("legacy task executed"));
}

#[test]
fn bench_with_a_ledger_keeps_a_receipt_of_every_delegation() {
    let (keys, thor) = serving_thor();
    let bench = |extra: &[&str]| {
        let mut args = vec!["--requests", "30", "--concurrency", "4"];
        args.extend_from_slice(extra);
        bench(&keys, &thor, &args)
    };
    let run = bench(&["--ledger"]);
    run.assert_code(0);
    assert_eq!(run.json()["sage"]["ok"], 30);
    let list = keys.run(&["proofs", "list", "--peer", "Thor", "--json"]);
    list.assert_code(0);
    assert_eq!(list.json()["delegations"].as_array().unwrap().len(), 30);
    keys.export_and_verify(30);

    // Without --ledger nothing more is kept; unverified proofs never are.
    bench(&[]).assert_code(0);
    let list = keys.run(&["proofs", "list", "--json"]);
    assert_eq!(list.json()["delegations"].as_array().unwrap().len(), 30);
    bench(&["--ledger", "--no-verify"]).assert_code(2);
}

#[test]
fn bench_draws_a_progress_line_on_a_terminal() {
    // util-linux's `script` gives the command a terminal; without it there
    // is nothing to test here.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no `script`: skipped");
        return;
    }
    let (keys, thor) = serving_thor();
    let command = format!(
        "{} --keys-dir {} bench --local Sprout --target {} --duration 2 --concurrency 2",
        crate::util::sage_path().display(),
        keys.path().display(),
        thor.address()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("SAGE_STATE_DIR", keys.state_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    // Redrawn in place, then erased before the summary.
    assert!(
        shown.contains("\r") && shown.contains(" ok, 0 refused, ") && shown.contains("\r\x1b[K"),
        "{shown:?}"
    );
    assert!(shown.contains("verified delegations/s"), "{shown}");
}

#[test]
fn routed_bench_refuses_what_needs_one_node_and_says_when_no_peer_serves() {
    let (keys, _thor) = serving_thor();
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--no-verify",
        "--requests",
        "1",
    ]);
    run.assert_code(2);
    run.assert_stderr(&["--no-verify needs --target"]);
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--protocol",
        "legacy",
        "--requests",
        "1",
    ]);
    run.assert_code(2);
    run.assert_stderr(&["--protocol names one node's protocol"]);
    // Thor's record has no address: nothing to route to, and why.
    let run = keys.run(&["bench", "--local", "Sprout", "--requests", "1", "--json"]);
    run.assert_code(1);
    assert_eq!(run.json()["error"]["code"], "no_candidate");
    run.assert_stderr(&["no peer serves echo", "Thor: no address on record"]);
}
