//! `sage bench` against real nodes: counts, errors by kind, both protocols.

use crate::fixture::serving_thor;
use crate::util::{Keys, Node, Run};

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
    run.assert_stderr(&["no request succeeded"]);
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
