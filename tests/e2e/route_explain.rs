//! The router's state made visible: `sage route explain` (what a routed
//! `delegate` would do, sending nothing) and the router's view in `sage
//! peer list`, both rebuilt from the ledger.

use serde_json::Value;

use crate::fixture::Fleet;
use crate::route::fleet_of;
use crate::util::Run;

const CAT: &str = "[executors.cat]\nkind = \"command\"\ncommand = [\"cat\"]\n";

/// `sage delegate --local Sprout --target TARGET` of a `cat` task.
fn delegate_to(fleet: &Fleet, target: &str) -> Run {
    fleet.keys("Sprout").run(&[
        "delegate",
        "--local",
        "Sprout",
        "--target",
        target,
        "--task-type",
        "cat",
        "--input",
        r#"{"n": 1}"#,
        "--json",
    ])
}

fn explain(fleet: &Fleet, extra: &[&str]) -> Run {
    let mut args = vec!["route", "explain", "--task-type", "cat"];
    args.extend_from_slice(extra);
    fleet.keys("Sprout").run(&args)
}

/// The row of `name` in `route explain --json`'s peers.
#[track_caller]
fn row<'a>(explained: &'a Value, name: &str) -> &'a Value {
    explained["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {explained}"))
}

/// How many delegations Sprout's ledger holds.
fn ledger_len(fleet: &Fleet) -> usize {
    let list = fleet
        .keys("Sprout")
        .run(&["proofs", "list", "--json"])
        .json();
    list["delegations"].as_array().unwrap().len()
}

#[test]
fn route_explain_says_who_is_in_who_is_out_and_why_and_sends_nothing() {
    // Thor and Loki serve `cat`, Legion too but is excluded, Odin serves
    // only the builtins.
    let (fleet, nodes) = fleet_of(&[("Legion", CAT), ("Loki", CAT), ("Odin", ""), ("Thor", CAT)]);
    let mut nodes = nodes.into_iter();
    let (legion, loki, odin, thor) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    // A verified delegation makes Thor measured and well thought of.
    delegate_to(&fleet, "Thor").assert_code(0);
    let before = ledger_len(&fleet);

    // Without --local: the key directory's only key, Sprout's.
    let run = explain(&fleet, &["--exclude", "Legion", "--json"]);
    run.assert_code(0);
    let explained = run.json();
    assert_eq!(explained["local"], "Sprout");
    assert_eq!(explained["picked"], "Thor", "{explained}");
    let thor_row = row(&explained, "Thor");
    assert_eq!(thor_row["standing"], "in");
    assert_eq!(thor_row["favoured"], true);
    assert!(thor_row["cooling"].is_null(), "{thor_row}");
    assert!(thor_row["score"].as_f64().unwrap() > 0.75, "{thor_row}");
    assert_eq!(row(&explained, "Loki")["standing"], "in");
    assert_eq!(row(&explained, "Loki")["favoured"], false);
    assert_eq!(row(&explained, "Legion")["standing"], "out");
    assert_eq!(row(&explained, "Legion")["reason"], "excluded");
    assert_eq!(row(&explained, "Odin")["standing"], "out");
    assert_eq!(
        row(&explained, "Odin")["reason"],
        "does not serve the task type"
    );

    // Loki goes down, and fails every delegation sent to it: the ledger
    // says `unreachable` each time, three in a row and more.
    loki.kill_hard();
    for _ in 0..8 {
        let run = delegate_to(&fleet, "Loki");
        run.assert_code(1);
        assert_eq!(run.json()["error"]["code"], "unreachable", "{}", run.stdout);
    }
    let before = before + 8;
    // Its capabilities are still the cached ones, so it is a candidate,
    // set aside for now.
    let run = explain(&fleet, &["--local", "Sprout", "--json"]);
    run.assert_code(0);
    let explained = run.json();
    let loki_row = row(&explained, "Loki");
    assert_eq!(loki_row["standing"], "cooling", "{loki_row}");
    let cooling = &loki_row["cooling"];
    let now = sage_types::clock::now_ms();
    assert!(
        cooling["until_ms"].as_u64().unwrap() > now,
        "cooling until the past: {cooling}"
    );
    assert!(cooling["until"].is_string(), "{cooling}");
    assert!(
        cooling["reason"].as_str().unwrap().contains("fail"),
        "{cooling}"
    );
    assert_eq!(loki_row["favoured"], false);
    assert!(
        loki_row["score"].as_f64().unwrap() < row(&explained, "Thor")["score"].as_f64().unwrap(),
        "{explained}"
    );
    assert_eq!(explained["picked"], "Thor");
    // Legion, no longer excluded, is in; --prefer makes it the pick.
    assert_eq!(row(&explained, "Legion")["standing"], "in");
    let run = explain(&fleet, &["--prefer", "Legion", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["picked"], "Legion", "{}", run.stdout);
    assert_eq!(row(&run.json(), "Legion")["preferred"], true);

    // The human table: a header row, one row per peer, the reasons.
    let run = explain(&fleet, &["--exclude", "Legion"]);
    run.assert_code(0);
    let header = run.stdout.lines().next().unwrap();
    for column in [
        "PEER",
        "STATUS",
        "LATENCY",
        "IN-FLIGHT",
        "SCORE",
        "COST",
        "PICK",
    ] {
        assert!(header.contains(column), "no {column} in {header:?}");
    }
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", run.stdout))
            .to_owned()
    };
    assert!(line("Loki").contains("cooling until"), "{}", run.stdout);
    assert!(line("Legion").contains("excluded"), "{}", run.stdout);
    assert!(
        line("Odin").contains("does not serve the task type"),
        "{}",
        run.stdout
    );
    assert!(line("Thor").contains("yes"), "{}", run.stdout);
    run.assert_stdout(&["the router favours Thor for cat"]);

    // Nothing was sent: no node recorded a task beyond the one delegation,
    // and the ledger holds only the delegations made.
    assert_eq!(thor.tasks_recorded(), 1);
    assert_eq!(legion.tasks_recorded(), 0);
    assert_eq!(odin.tasks_recorded(), 0);
    assert_eq!(ledger_len(&fleet), before);
}

#[test]
fn route_explain_needs_a_local_name_when_the_key_directory_holds_several() {
    let (fleet, _nodes) = fleet_of(&[("Thor", CAT)]);
    let sprout = fleet.keys("Sprout");
    sprout.keygen("Extra");
    let run = sprout.run(&["route", "explain", "--task-type", "cat"]);
    run.assert_code(2);
    run.assert_stderr(&["pass --local NAME"]);
}

/// The `route` object of `name` in `peer list --json`.
fn route_of(list: &Value, name: &str) -> Value {
    list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))["route"]
        .clone()
}

#[test]
fn peer_list_shows_the_router_rebuilt_from_the_ledger_the_same_each_time() {
    let (fleet, nodes) = fleet_of(&[("Loki", CAT), ("Thor", CAT)]);
    let mut nodes = nodes.into_iter();
    nodes.next().unwrap().kill_hard();
    for _ in 0..3 {
        delegate_to(&fleet, "Thor").assert_code(0);
        delegate_to(&fleet, "Loki").assert_code(1);
    }
    let sprout = fleet.keys("Sprout");
    let first = sprout.run(&["peer", "list", "--json"]);
    first.assert_code(0);
    let second = sprout.run(&["peer", "list", "--json"]);
    second.assert_code(0);
    let (first, second) = (first.json(), second.json());
    for name in ["Thor", "Loki"] {
        let (a, b) = (route_of(&first, name), route_of(&second, name));
        let (sa, sb) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        // The same ledger, the same numbers; only the decay of the moments
        // between the two runs (a 24 h half-life) tells them apart.
        assert!((sa - sb).abs() < 1e-4, "{name}: {a} then {b}");
        assert_eq!(a["ejections"], b["ejections"], "{name}: {a} then {b}");
    }
    let thor = route_of(&first, "Thor");
    let loki = route_of(&first, "Loki");
    assert!(
        loki["score"].as_f64().unwrap() < thor["score"].as_f64().unwrap(),
        "Loki failed, Thor did not: {loki} {thor}"
    );
    // Three failures in a row ejected Loki once.
    assert_eq!(loki["ejections"], 1, "{loki}");
    assert_eq!(thor["ejections"], 0, "{thor}");

    // The human listing says the same, to three decimals.
    let run = sprout.run(&["peer", "list"]);
    run.assert_code(0);
    let score = format!("score {:.3}", thor["score"].as_f64().unwrap());
    run.assert_stdout(&[&score, "route:"]);
}
