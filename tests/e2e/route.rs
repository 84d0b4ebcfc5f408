//! `sage delegate` without `--target`: the fleet's candidates for a task
//! type (signed capabilities, verified), the pick, and what happens when
//! an attempt fails: another peer when nothing ran, never a second peer
//! for a task that may have run unless it is idempotent.

use std::time::{Duration, Instant};

use crate::fixture::Fleet;
use crate::util::{http, task_ids, Node, Run};

/// A fleet of Sprout (the delegator) and `executors`, each serving the
/// config `config` (empty: the builtins), and Sprout knowing each at its
/// address.
fn fleet(executors: &[&str], config: &str) -> (Fleet, Vec<Node>) {
    let configs: Vec<(&str, &str)> = executors.iter().map(|name| (*name, config)).collect();
    fleet_of(&configs)
}

/// A fleet of Sprout (the delegator) and executors, each `(name, config)`
/// serving its own config, and Sprout knowing each at its address.
pub fn fleet_of(executors: &[(&str, &str)]) -> (Fleet, Vec<Node>) {
    let mut fleet = Fleet::new().node("Sprout");
    for (name, _) in executors {
        fleet = fleet.node(name);
    }
    let fleet = fleet.trusting_each_other();
    let nodes: Vec<Node> = executors
        .iter()
        .map(|(name, config)| {
            let keys = fleet.keys(name);
            let path = keys.path().with_file_name("sage.toml");
            std::fs::write(&path, config).unwrap();
            let node = keys.serve(name, &["--config", path.to_str().unwrap()]);
            fleet
                .keys("Sprout")
                .trust(name, fleet.public(name), &["--address", &node.address()]);
            node
        })
        .collect();
    (fleet, nodes)
}

fn routed(fleet: &Fleet, extra: &[&str]) -> Run {
    let mut args = vec!["delegate", "--local", "Sprout", "--json"];
    args.extend_from_slice(extra);
    fleet.keys("Sprout").run(&args)
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn without_a_target_the_task_goes_to_a_peer_that_serves_its_type() {
    let (fleet, nodes) = fleet(&["Thor", "Legion"], "");
    let run = routed(&fleet, &["--task-type", "echo", "--input", r#"{"n": 1}"#]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["verified"], true);
    assert_eq!(names(&json["route"]["candidates"]), ["Legion", "Thor"]);
    let ran_on = json["target"].as_str().unwrap().to_owned();
    let task_id = json["task"]["task_id"].as_str().unwrap().to_owned();
    let runs: usize = nodes.iter().map(|n| n.executions_of(&task_id)).sum();
    assert_eq!(runs, 1, "ran once, on {ran_on}");
    assert_eq!(json["route"]["attempts"].as_array().unwrap().len(), 1);

    // --exclude leaves a peer out, and says why.
    let run = routed(
        &fleet,
        &[
            "--task-type",
            "echo",
            "--exclude",
            "thor",
            "--exclude",
            "Legion",
        ],
    );
    run.assert_code(1);
    assert_eq!(run.json()["error"]["code"], "no_candidate");
    run.assert_stderr(&["no peer serves echo", "Legion: excluded", "Thor: excluded"]);

    // A task type nobody serves: each peer's reason, and the way out.
    let run = routed(&fleet, &["--task-type", "vision3d"]);
    run.assert_code(1);
    run.assert_stderr(&[
        "no peer serves vision3d",
        "Thor: does not serve the task type",
        "sage capabilities ADDRESS",
    ]);

    // The capabilities are kept until they expire: a second delegation
    // asks no peer for them again.
    let asked = |node: &Node| {
        let metrics = String::from_utf8(http(node.addr, "GET", "/metrics", b"").body).unwrap();
        metrics
            .lines()
            .filter(|l| l.starts_with("sage_requests_total{endpoint=\"/v1/capabilities\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before: Vec<u64> = nodes.iter().map(asked).collect();
    assert_eq!(before, [1, 1], "each asked once so far");
    routed(&fleet, &["--task-type", "echo"]).assert_code(0);
    let after: Vec<u64> = nodes.iter().map(asked).collect();
    assert_eq!(before, after, "capabilities asked again");
}

#[test]
fn a_peer_that_cannot_take_the_task_hands_it_to_the_next_one() {
    let (fleet, nodes) = fleet(&["Thor", "Legion"], "");
    // Both answered for their capabilities, which are kept a minute.
    routed(&fleet, &["--task-type", "echo"]).assert_code(0);
    // Thor is preferred, and now down: nothing was sent, so Legion runs it.
    let thor_addr = nodes[0].address();
    let mut nodes = nodes.into_iter();
    nodes.next().unwrap().kill_hard();
    let legion = nodes.next().unwrap();
    let run = routed(
        &fleet,
        &[
            "--task-type",
            "echo",
            "--prefer",
            "Thor",
            "--task-id",
            "t-failover",
        ],
    );
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["target"], "Legion");
    let attempts = json["route"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["peer"], "Thor");
    assert!(
        attempts[0]["outcome"]
            .as_str()
            .unwrap()
            .contains(&thor_addr),
        "{attempts:?}"
    );
    assert_eq!(attempts[1]["peer"], "Legion");
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(legion.executions_of("t-failover"), 1);
    // Both attempts are in the ledger, under the one task id.
    let list = fleet
        .keys("Sprout")
        .run(&["proofs", "list", "--json"])
        .json();
    let rows: Vec<(String, String)> = list["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["task_id"] == "t-failover")
        .map(|d| {
            (
                d["peer"].as_str().unwrap().to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("Thor".to_owned(), "unreachable".to_owned()),
            ("Legion".to_owned(), "succeeded".to_owned())
        ]
    );
    // `proofs show` tells the whole story: the receipt, and each attempt.
    let show = fleet.keys("Sprout").run(&["proofs", "show", "t-failover"]);
    show.assert_code(0).assert_stdout(&[
        "proof:     ✓ signed by Legion: succeeded",
        "attempts (this one marked *)",
        "  1. ",
        "Thor  unreachable: cannot reach",
        "* 2. ",
        "Legion  succeeded",
    ]);
}

#[test]
fn a_peer_with_a_new_key_is_passed_over_before_anything_is_sent() {
    let (fleet, nodes) = fleet(&["Thor", "Legion"], "");
    // Thor's node restarts with a new key; Sprout still knows the old one.
    let mut nodes = nodes.into_iter();
    nodes.next().unwrap().kill_hard();
    let legion = nodes.next().unwrap();
    let thor_keys = fleet.keys("Thor");
    thor_keys
        .run(&["keygen", "--name", "Thor", "--force"])
        .assert_code(0);
    let thor = thor_keys.serve("Thor", &[]);
    fleet.keys("Sprout").trust(
        "Thor",
        fleet.public("Thor"),
        &["--address", &thor.address()],
    );
    let run = routed(
        &fleet,
        &[
            "--task-type",
            "echo",
            "--prefer",
            "Thor",
            "--task-id",
            "t-key",
        ],
    );
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["target"], "Legion");
    // The capabilities Thor signs with its new key do not verify: it is no
    // candidate at all, and never sees the task.
    let left = json["route"]["left"].as_array().unwrap();
    assert!(
        left.iter()
            .any(|l| l["peer"] == "Thor" && l["reason"].as_str().unwrap().contains("do not verify")),
        "{left:?}"
    );
    assert_eq!(thor.executions_of("t-key"), 0);
    assert_eq!(legion.executions_of("t-key"), 1);
}

/// Waits until `node` runs a task.
fn running(node: &Node) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let metrics = String::from_utf8(http(node.addr, "GET", "/metrics", b"").body).unwrap();
        if metrics.lines().any(|l| l == "sage_tasks_in_flight 1") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_task_that_may_have_run_runs_on_a_second_peer_only_if_idempotent() {
    let slow = "[executors.slow]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 2; cat\"]\ntimeout = \"30s\"\n";
    for idempotent in [false, true] {
        let (fleet, nodes) = fleet(&["Thor", "Legion"], slow);
        let task_id = format!("t-slow-{idempotent}");
        let mut args = vec![
            "delegate",
            "--local",
            "Sprout",
            "--json",
            "--task-type",
            "slow",
            "--prefer",
            "Thor",
            "--task-id",
            &task_id,
            "--timeout",
            "30s",
        ];
        if idempotent {
            args.push("--idempotent");
        }
        let delegating = fleet.keys("Sprout").spawn(&args);
        let mut nodes = nodes.into_iter();
        let thor = nodes.next().unwrap();
        let legion = nodes.next().unwrap();
        assert!(running(&thor), "Thor never ran the task");
        // Thor dies mid-run: the task may have run there.
        thor.kill_hard();
        let run = delegating.join().unwrap();
        if idempotent {
            run.assert_code(0);
            assert_eq!(run.json()["target"], "Legion");
            assert_eq!(legion.executions_of(&task_id), 1);
        } else {
            run.assert_code(1);
            assert_eq!(run.json()["error"]["code"], "may_have_run");
            run.assert_stderr(&["Thor may have run the task, which is not idempotent"]);
            assert_eq!(legion.executions_of(&task_id), 0, "run on a second peer");
        }
    }
}

/// The value of `series` (a whole `name{labels}`) in `node`'s metrics.
fn metric(node: &Node, series: &str) -> Option<f64> {
    let text = String::from_utf8(http(node.addr, "GET", "/metrics", b"").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_running_node_watches_its_peers_and_exports_what_its_router_knows() {
    let fleet = Fleet::new()
        .node("Thor")
        .node("Sprout")
        .node("Legion")
        .trusting_each_other();
    let sprout = fleet.keys("Sprout").serve("Sprout", &[]);
    // Legion's node answers with a key Thor does not know.
    let legion_keys = fleet.keys("Legion");
    legion_keys
        .run(&["keygen", "--name", "Legion", "--force"])
        .assert_code(0);
    let legion = legion_keys.serve("Legion", &[]);
    let thor_keys = fleet.keys("Thor");
    thor_keys.trust(
        "Sprout",
        fleet.public("Sprout"),
        &["--address", &sprout.address()],
    );
    thor_keys.trust(
        "Legion",
        fleet.public("Legion"),
        &["--address", &legion.address()],
    );
    let thor = thor_keys.serve("Thor", &[]);

    // Its first look at the peers happens as it starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    let cooling = loop {
        let until = metric(&thor, "sage_route_cooling_until_seconds{peer=\"Legion\"}");
        if until.is_some_and(|u| u > 0.0) || Instant::now() > deadline {
            break until;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        cooling.is_some_and(|u| u > now),
        "Legion not cooling: {cooling:?}\n{}",
        thor.log()
    );
    assert!(
        thor.log().contains("a peer's capabilities do not verify"),
        "{}",
        thor.log()
    );
    assert_eq!(
        metric(&thor, "sage_route_cooling_until_seconds{peer=\"Sprout\"}"),
        Some(0.0)
    );
    let score =
        |peer: &str| metric(&thor, &format!("sage_route_score{{peer=\"{peer}\"}}")).unwrap();
    assert!(
        score("Legion") < score("Sprout"),
        "{} vs {}",
        score("Legion"),
        score("Sprout")
    );
    assert_eq!(
        metric(&thor, "sage_route_in_flight{peer=\"Sprout\"}"),
        Some(0.0)
    );
}

#[test]
fn a_peer_that_answers_a_canary_wrongly_is_cooled_down_and_loses_its_standing() {
    let fleet = Fleet::new()
        .node("Thor")
        .node("Sprout")
        .node("Legion")
        .trusting_each_other();
    let sprout = fleet.keys("Sprout").serve("Sprout", &[]);
    // Legion serves `echo` with a program that answers something else.
    let legion_keys = fleet.keys("Legion");
    let lying = legion_keys.path().with_file_name("sage.toml");
    std::fs::write(
        &lying,
        "[executors.echo]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"cat >/dev/null; echo '{\\\"text\\\": \\\"not what you sent\\\"}'\"]\n",
    )
    .unwrap();
    let legion = legion_keys.serve("Legion", &["--config", lying.to_str().unwrap()]);
    let thor_keys = fleet.keys("Thor");
    thor_keys.trust(
        "Sprout",
        fleet.public("Sprout"),
        &["--address", &sprout.address()],
    );
    thor_keys.trust(
        "Legion",
        fleet.public("Legion"),
        &["--address", &legion.address()],
    );
    let config = thor_keys.path().with_file_name("sage.toml");
    std::fs::write(&config, "[routing]\ncanary_rate = 1.0\n").unwrap();
    let thor = thor_keys.serve("Thor", &["--config", config.to_str().unwrap()]);

    assert!(
        thor.wait_for_log("a peer signed a wrong answer to a canary task"),
        "{}",
        thor.log()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&thor, "sage_route_cooling_until_seconds{peer=\"Legion\"}") == Some(0.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(&thor, "sage_route_cooling_until_seconds{peer=\"Legion\"}").unwrap() > 0.0);
    assert_eq!(
        metric(&thor, "sage_route_cooling_until_seconds{peer=\"Sprout\"}"),
        Some(0.0)
    );
    let score =
        |peer: &str| metric(&thor, &format!("sage_route_score{{peer=\"{peer}\"}}")).unwrap();
    assert!(
        score("Legion") < score("Sprout") / 2.0,
        "{} vs {}",
        score("Legion"),
        score("Sprout")
    );
    // The canaries are delegations like any other: in Thor's ledger, the
    // wrong answer recorded as such.
    let statuses = || -> Vec<(String, String)> {
        let list = thor_keys.run(&["proofs", "list", "--json"]).json();
        list["delegations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["peer"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // Sprout's canary may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while statuses().iter().any(|(_, status)| status == "sent") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses = statuses();
    assert!(
        statuses.contains(&("Legion".into(), "wrong_answer".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("Sprout".into(), "succeeded".into())),
        "{statuses:?}"
    );
    // A canary_rate that is not a chance is refused at start.
    std::fs::write(&config, "[routing]\ncanary_rate = 2\n").unwrap();
    let run = thor_keys.run(&["config", "check", "--config", config.to_str().unwrap()]);
    run.assert_code(1)
        .assert_stderr(&["routing.canary_rate", "is not a chance"]);
}

/// A `work` executor that takes `ms` milliseconds a task.
fn work(ms: u32) -> String {
    format!(
        "[executors.work]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep {}; cat\"]\nmax_concurrency = 8\ntimeout = \"30s\"\n",
        f64::from(ms) / 1000.0
    )
}

/// `sage bench` routed, as Sprout: its JSON report's share of each peer
/// (requests, ok), by name.
fn shares(report: &serde_json::Value) -> std::collections::BTreeMap<String, (u64, u64)> {
    report["sage"]["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["peer"].as_str().unwrap().to_owned(),
                (s["requests"].as_u64().unwrap(), s["ok"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The failed requests of a bench report, all kinds.
fn errors(report: &serde_json::Value) -> u64 {
    report["sage"]["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn routed_load_goes_mostly_to_the_fast_peer_and_survives_losing_one() {
    // A debug node on a loaded machine adds tens of milliseconds of its
    // own to every task, with as much noise: the slow peer is slow enough
    // that no such noise makes it look like the fast one.
    let (fast, medium, slow) = (work(5), work(50), work(250));
    let (fleet, nodes) = fleet_of(&[("Fast", &fast), ("Medium", &medium), ("Slow", &slow)]);
    let bench = |requests: &str| {
        vec![
            "bench",
            "--local",
            "Sprout",
            "--json",
            "--task-type",
            "work",
            "--input",
            "{}",
            "--requests",
            requests,
            "--concurrency",
            "4",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let args = bench("200");
    let run = fleet
        .keys("Sprout")
        .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["sage"]["ok"], 200, "{report}");
    assert_eq!(report["target"], serde_json::Value::Null);
    let got = shares(&report);
    assert_eq!(got.len(), 3, "{report}");
    let oks: u64 = got.values().map(|(_, ok)| ok).sum();
    assert_eq!(oks, 200, "{report}");
    assert!(got["Fast"].0 > got["Slow"].0, "{got:?}");
    assert!(got["Fast"].0 > got["Medium"].0, "{got:?}");
    assert!(got["Slow"].0 >= 1, "the slow peer is still tried: {got:?}");

    // Fast dies under load: every request either verifies elsewhere or is
    // counted as a failure, and no task runs on two nodes.
    let args = bench("300");
    let loading = fleet
        .keys("Sprout")
        .spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut nodes = nodes.into_iter();
    let fast_node = nodes.next().unwrap();
    let before = task_ids(&fleet.keys("Fast").state_dir()).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while task_ids(&fleet.keys("Fast").state_dir()).len() < before + 30 {
        assert!(Instant::now() < deadline, "Fast took no load");
        std::thread::sleep(Duration::from_millis(10));
    }
    fast_node.kill_hard();
    let run = loading.join().unwrap();
    let report = run.json();
    let ok = report["sage"]["ok"].as_u64().unwrap();
    assert_eq!(ok + errors(&report), 300, "{report}");
    assert!(ok >= 250, "most requests verified elsewhere: {report}");
    let got = shares(&report);
    assert!(got["Medium"].1 + got["Slow"].1 >= 1, "{got:?}");
    let mut runs: std::collections::BTreeMap<String, usize> = Default::default();
    for name in ["Fast", "Medium", "Slow"] {
        for id in task_ids(&fleet.keys(name).state_dir()) {
            *runs.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks run twice: {twice:?}");
    // Every verified request ran somewhere: the nodes' tasks cover them.
    assert!(
        runs.len() as u64 >= 200 + ok,
        "{} rows, {ok} ok",
        runs.len()
    );
    drop(nodes);
}

#[test]
fn this_machines_own_node_is_a_candidate_unless_no_local() {
    let (fleet, nodes) = fleet(&["Thor"], "");
    // Sprout's own node, serving with the delegator's key.
    let sprout = fleet.keys("Sprout").serve("Sprout", &[]);
    let local = ["--local-node", &sprout.address()];
    let mut args = vec![
        "--task-type",
        "echo",
        "--exclude",
        "Thor",
        "--task-id",
        "t-local",
    ];
    args.extend_from_slice(&local);
    let run = routed(&fleet, &args);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["target"], "Sprout", "{json}");
    assert_eq!(names(&json["route"]["candidates"]), ["Sprout"]);
    // It ran there, signed by the node's own key, and nowhere else.
    assert_eq!(sprout.executions_of("t-local"), 1);
    assert_eq!(nodes[0].executions_of("t-local"), 0);
    let own = fleet
        .keys("Sprout")
        .run(&["key", "show", "--name", "Sprout", "--json"])
        .json();
    assert_eq!(json["executor_key_id"], own["key_id"]);

    // --no-local leaves it out: with Thor excluded too, nobody is left.
    let mut args = vec!["--task-type", "echo", "--exclude", "Thor", "--no-local"];
    args.extend_from_slice(&local);
    let run = routed(&fleet, &args);
    run.assert_code(1);
    assert_eq!(run.json()["error"]["code"], "no_candidate");

    // Both: the pick is the router's, and either may run it.
    let mut args = vec!["--task-type", "echo"];
    args.extend_from_slice(&local);
    let run = routed(&fleet, &args);
    run.assert_code(0);
    assert_eq!(
        names(&run.json()["route"]["candidates"]),
        ["Sprout", "Thor"]
    );
}

#[test]
fn a_peer_that_went_down_is_cooled_down_then_brought_back_once_it_restarts() {
    let (fleet, nodes) = fleet(&["Thor", "Legion"], "");
    // Both answered for their capabilities (kept a minute).
    routed(&fleet, &["--task-type", "echo", "--no-local"]).assert_code(0);
    let thor_port = nodes[0].port();
    let mut nodes = nodes.into_iter();
    nodes.next().unwrap().kill_hard();
    let _legion = nodes.next().unwrap();
    // Thor, preferred and down: each delegation fails over to Legion, and
    // the failures in the ledger cool Thor down.
    for _ in 0..3 {
        let run = routed(
            &fleet,
            &["--task-type", "echo", "--prefer", "Thor", "--no-local"],
        );
        run.assert_code(0);
        assert_eq!(run.json()["target"], "Legion");
    }
    let standing = |fleet: &Fleet| {
        let explained = fleet
            .keys("Sprout")
            .run(&[
                "route",
                "explain",
                "--task-type",
                "echo",
                "--no-local",
                "--json",
            ])
            .json();
        explained["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Thor")
            .map(|p| p["standing"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(standing(&fleet), "cooling");
    // Thor comes back on its port; once its cooldown ends, the next
    // delegation that prefers it runs there.
    let thor_keys = fleet.keys("Thor");
    let mut serve = crate::util::sage();
    serve.arg("--keys-dir").arg(thor_keys.path()).args([
        "serve",
        "--name",
        "Thor",
        "--host",
        "127.0.0.1",
        "--port",
        &thor_port,
    ]);
    let thor = Node::spawn(
        serve,
        &thor_keys.path().with_file_name("notify-back"),
        &thor_keys.state_dir(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while standing(&fleet) != "in" {
        assert!(Instant::now() < deadline, "Thor is still out");
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = routed(
        &fleet,
        &[
            "--task-type",
            "echo",
            "--prefer",
            "Thor",
            "--no-local",
            "--task-id",
            "t-back",
        ],
    );
    run.assert_code(0);
    assert_eq!(run.json()["target"], "Thor");
    assert_eq!(thor.executions_of("t-back"), 1);
}

#[test]
fn a_routed_delegation_refuses_the_flags_that_name_one_node() {
    let (fleet, nodes) = fleet(&["Thor"], "");
    let fingerprint = format!("sha256:{}", "ab".repeat(32));
    for (extra, says) in [
        (
            vec!["--host", "127.0.0.1"],
            "--host, --port and --protocol name one node",
        ),
        (
            vec!["--port", "50051"],
            "--host, --port and --protocol name one node",
        ),
        (
            vec!["--protocol", "legacy"],
            "--host, --port and --protocol name one node",
        ),
        (
            vec!["--tls-fingerprint", fingerprint.as_str()],
            "--tls-ca and --tls-fingerprint are for one node",
        ),
    ] {
        let mut args = vec!["--task-type", "echo", "--task-id", "t-one-node"];
        args.extend_from_slice(&extra);
        let run = routed(&fleet, &args);
        run.assert_code(2).assert_stderr(&[says]);
        assert_eq!(run.json()["error"]["code"], "usage");
    }
    // Nothing was sent, nor recorded.
    assert_eq!(nodes[0].executions_of("t-one-node"), 0);
}
