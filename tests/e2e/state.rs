//! Nothing is lost across restarts: a task killed mid-run is reported
//! interrupted and never run twice, retries get the stored proof, replays
//! stay refused after a restart, and receipts verify offline.

use std::time::{Duration, Instant};

use sage_crypto::sign_envelope;
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{QualityRequirements, Task};

use crate::fixture::delegation;
use crate::util::{http, Keys, Node, Run};

/// A node whose `count` tasks append a line to `runs` and then sleep
/// `secs`: the file says how often the program ran.
fn counting_node(keys: &Keys, runs: &std::path::Path, secs: u32) -> Node {
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(
        &config,
        format!(
            "[executors.count]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> {}; sleep {secs}; echo '{{\\\"ok\\\": true}}'\"]\ntimeout = \"60s\"\nmax_concurrency = 4\n",
            runs.display()
        ),
    )
    .unwrap();
    keys.serve("Thor", &["--config", config.to_str().unwrap()])
}

fn runs_of(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn setup() -> (Keys, std::path::PathBuf) {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let runs = keys.path().with_file_name("runs.txt");
    (keys, runs)
}

fn delegate_args<'a>(node: &'a Node, port: &'a str, task_id: &'a str) -> Vec<&'a str> {
    let _ = node;
    delegation(&[
        "--port",
        port,
        "--task-type",
        "count",
        "--task-id",
        task_id,
        "--timeout",
        "30",
        "--json",
    ])
}

/// The same `count` delegation twice, both succeeding: the task and its
/// retry.
fn delegate_twice(keys: &Keys, node: &Node, port: &str, task_id: &str) -> (Run, Run) {
    let first = keys.run(&delegate_args(node, port, task_id));
    first.assert_code(0);
    let again = keys.run(&delegate_args(node, port, task_id));
    again.assert_code(0);
    (first, again)
}

#[test]
fn a_task_killed_mid_run_is_reported_interrupted_and_never_run_twice() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 4);
    let port = node.port();
    let first = keys.spawn(&delegate_args(&node, &port, "t-killed"));
    wait_until("the program started", || runs_of(&runs) == 1);
    node.kill_hard();
    let out = first.join().unwrap();
    assert!(
        out.code != 0,
        "the delegation of a killed node cannot succeed"
    );

    // Restarted on the same state: the task is marked interrupted.
    let node = counting_node(&keys, &runs, 4);
    assert!(
        node.wait_for_log("were running when the node stopped"),
        "{}",
        node.log()
    );
    let port = node.port();
    let run = keys.run(&delegate_args(&node, &port, "t-killed"));
    run.assert_code(1);
    let out = run.json();
    assert_eq!(out["verified"], true, "a signed proof of the interruption");
    assert_eq!(out["proof"]["status"], "failed");
    assert!(
        out["proof"]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{out}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_of(&runs), 1, "the program ran exactly once");
}

#[test]
fn a_retry_of_a_finished_task_gets_the_same_proof_without_a_second_run() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 0);
    let port = node.port();
    let (first, again) = delegate_twice(&keys, &node, &port, "t-retry");
    assert_eq!(
        first.json()["signed_proof"],
        again.json()["signed_proof"],
        "the stored proof, unchanged"
    );
    assert_eq!(runs_of(&runs), 1);

    // The ledger holds both, and the peer's statistics count them.
    let list = keys.run(&["proofs", "list", "--peer", "thor", "--json"]);
    list.assert_code(0);
    assert_eq!(list.json()["delegations"].as_array().unwrap().len(), 2);
    let thor = keys.peer_record("Thor");
    assert_eq!(thor["stats"]["by_status"]["succeeded"], 2, "{thor}");
    assert!(thor["stats"]["latency_ms_ewma"].as_f64().unwrap() > 0.0);
}

fn signed_task(keys: &Keys, task_id: &str, nonce: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let task = Task {
        task_id: task_id.into(),
        task_type: "count".into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: now,
        expires_at: now + 60_000,
        nonce: nonce.into(),
        input: serde_json::json!({}),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    };
    let env = sign_envelope(
        &keys.key("Sprout"),
        TASK_PAYLOAD_TYPE,
        &serde_json::to_vec(&task).unwrap(),
    );
    serde_json::to_vec(&env).unwrap()
}

#[test]
fn a_replayed_envelope_is_refused_after_a_restart() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 0);
    let envelope = signed_task(&keys, "t-replay", "00112233445566778899aabbccddeeff");
    assert_eq!(http(node.addr, "POST", "/v1/tasks", &envelope).status, 200);
    let (status, _) = node.terminate();
    assert!(status.success());
    let node = counting_node(&keys, &runs, 0);
    let answer = http(node.addr, "POST", "/v1/tasks", &envelope);
    assert_eq!(
        (answer.status, answer.problem_code().as_str()),
        (409, "replayed")
    );
    assert_eq!(runs_of(&runs), 1);
}

#[test]
fn concurrent_retries_of_one_task_run_it_once() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 1);
    // Eight envelopes of the same task (same id and content, own nonces), at once.
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|i| signed_task(&keys, "t-concurrent", &format!("{i:032x}")))
        .collect();
    let addr = node.addr;
    let answers: Vec<_> = bodies
        .into_iter()
        .map(|body| std::thread::spawn(move || http(addr, "POST", "/v1/tasks", &body)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.body, answers[0].body, "every retry gets the one proof");
    }
    assert_eq!(runs_of(&runs), 1);
}

#[test]
fn proofs_verify_refuses_an_export_with_one_byte_changed() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 0);
    let port = node.port();
    keys.run(&delegate_args(&node, &port, "t-a")).assert_code(0);
    keys.run(&delegate_args(&node, &port, "t-b")).assert_code(0);
    let export = keys.export_and_verify(2);

    // One byte of the second proof's signed payload.
    let text = std::fs::read_to_string(&export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut receipt: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let payload = receipt["proof"]["payload"].as_str().unwrap().to_owned();
    let mut bytes = payload.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    receipt["proof"]["payload"] = serde_json::Value::String(String::from_utf8(bytes).unwrap());
    lines[1] = serde_json::to_string(&receipt).unwrap();
    std::fs::write(&export, lines.join("\n") + "\n").unwrap();
    let run = keys.run(&["proofs", "verify", export.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stdout(&["line 1: ✓", "line 2: ✗"]);
    run.assert_stderr(&["1 of 2 receipts do not verify"]);

    // And `proofs show --raw` gives one receipt, as the export has it.
    let run = keys.run(&["proofs", "show", "t-a", "--raw"]);
    run.assert_code(0);
    assert_eq!(run.json()["task_id"], "t-a");
    let exported: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(run.json(), exported);
}

/// The ledger's delegations, as `sage proofs list --json` gives them.
fn ledger_of(keys: &Keys) -> Vec<serde_json::Value> {
    let run = keys.run(&["proofs", "list", "--json"]);
    run.assert_code(0);
    run.json()["delegations"].as_array().unwrap().clone()
}

/// A retry answered with the stored proof keeps, beside it, the envelope
/// that proof names: every receipt of the export verifies.
#[test]
fn the_receipt_of_a_retry_verifies_offline() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 0);
    let port = node.port();
    let (first, retry) = delegate_twice(&keys, &node, &port, "t-twice");
    assert_eq!(runs_of(&runs), 1, "the retry got the stored proof");
    assert_eq!(first.json()["signed_proof"], retry.json()["signed_proof"]);
    assert_ne!(first.json()["task_digest"], retry.json()["task_digest"]);

    keys.export_and_verify(2);
    let ledger = ledger_of(&keys);
    let statuses: Vec<_> = ledger
        .iter()
        .map(|e| (&e["task_id"], &e["status"]))
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses
        .iter()
        .all(|(id, status)| *id == "t-twice" && *status == "succeeded"));
}

/// Every attempt is in the ledger with its task id and how it ended, also
/// those that never got a proof.
#[test]
fn failed_attempts_are_recorded_with_their_task_id() {
    let (keys, runs) = setup();
    let node = counting_node(&keys, &runs, 0);
    let port = node.port();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port().to_string()
    };
    let attempt = |port: &str, task_type: &str, task_id: Option<&str>| {
        let mut args = delegation(&["--port", port, "--task-type", task_type, "--timeout", "10"]);
        if let Some(task_id) = task_id {
            args.extend(["--task-id", task_id]);
        }
        keys.run(&args).assert_code(1);
    };
    attempt(&closed, "count", Some("t-down"));
    attempt(&port, "no-such-type", Some("t-refused"));
    attempt(&closed, "count", None);

    let ledger = ledger_of(&keys);
    let seen: Vec<(&str, &str)> = ledger
        .iter()
        .map(|e| {
            (
                e["task_id"].as_str().unwrap(),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], ("t-down", "unreachable"));
    assert_eq!(seen[1], ("t-refused", "refused"));
    assert_eq!(seen[2].1, "unreachable");
    assert!(seen[2].0.starts_with("task_"), "a fresh task id: {seen:?}");
    assert_eq!(runs_of(&runs), 0);
}

#[test]
fn receipt_commands_refuse_bad_input() {
    let (keys, _) = setup();
    let empty = keys.path().with_file_name("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let run = keys.run(&["proofs", "verify", empty.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stderr(&["holds no receipt"]);

    std::fs::write(&empty, "{\"not\": \"a receipt\"}\n").unwrap();
    let run = keys.run(&["proofs", "verify", empty.to_str().unwrap()]);
    run.assert_code(1);
    run.assert_stdout(&["line 1: ✗ not a receipt"]);

    keys.run(&["proofs", "list", "--since", "yesterday"])
        .assert_code(2);
    let run = keys.run(&["proofs", "show", "no-such-task"]);
    run.assert_code(1);
    run.assert_stderr(&["no delegation with task id no-such-task"]);

    // A state directory holding something that is not a sage database.
    let (keys, _) = setup();
    std::fs::create_dir_all(keys.state_dir()).unwrap();
    std::fs::write(
        keys.state_dir().join("sage.db"),
        b"this is not SQLite at all, not even close",
    )
    .unwrap();
    let run = keys.run(&["proofs", "list"]);
    run.assert_code(1);
    run.assert_stderr(&[
        "sage.db",
        "is damaged or is not a sage database",
        "left untouched",
    ]);
    assert_eq!(
        std::fs::read(keys.state_dir().join("sage.db")).unwrap(),
        b"this is not SQLite at all, not even close",
        "a corrupt database is reported, never recreated"
    );
}

#[test]
fn an_age_or_time_too_large_for_the_clock_is_refused_not_a_crash() {
    let (keys, _) = setup();
    for since in [
        "999999999999999999d",
        "999999999999999999",
        "99999999999999999999999h",
        "1.5",
    ] {
        let run = keys.run(&["proofs", "list", "--since", since]);
        run.assert_code(2);
        run.assert_stderr(&["give unix seconds or an age like 30m, 12h, 7d"]);
    }
    for since in ["90s", "1h 30m", "7d", "1764554629"] {
        keys.run(&["proofs", "list", "--since", since])
            .assert_code(0);
    }
    for timeout in ["0", "0s", "-1", "soon"] {
        let flag = format!("--timeout={timeout}");
        let run = keys.run(&["health", "127.0.0.1:9", &flag]);
        run.assert_code(2);
        run.assert_stderr(&["--timeout"]);
    }
}

#[test]
fn the_task_retention_comes_from_the_flag_or_the_config() {
    let keys = Keys::with(&["Thor"]);
    let node = keys.serve("Thor", &["--task-retention-days", "7"]);
    assert!(
        node.log()
            .contains("finished tasks kept 7 days past their expiry"),
        "{}",
        node.log()
    );
    drop(node);

    let config = keys.path().with_file_name("retention.toml");
    std::fs::write(&config, "[node]\ntask_retention_days = 0\n").unwrap();
    let node = keys.serve("Thor", &["--config", config.to_str().unwrap()]);
    assert!(node.log().contains("every task kept"), "{}", node.log());
    drop(node);

    // Unset: the default.
    let node = keys.serve("Thor", &[]);
    assert!(
        node.log()
            .contains("finished tasks kept 30 days past their expiry"),
        "{}",
        node.log()
    );
}

/// The fsync(2) and fdatasync(2) calls on the state's write-ahead log of
/// one `sage delegate` to Thor with `extra` arguments, traced with strace.
fn syncs_of_one_delegation(keys: &Keys, node: &Node, extra: &[&str]) -> (usize, usize, String) {
    let trace = keys.path().with_file_name("strace.txt");
    let traced = std::process::Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(crate::util::sage_path())
        .env("SAGE_STATE_DIR", keys.state_dir())
        .arg("--keys-dir")
        .arg(keys.path())
        .args(["delegate", "--local", "Sprout", "--target", "Thor"])
        .args(["--port", &node.port()])
        .args(extra)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run strace ({e}): install it with `apt-get install strace`")
        });
    assert!(
        traced.status.success(),
        "{}",
        String::from_utf8_lossy(&traced.stderr)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    let syncs_of_log = |call: &str| {
        trace
            .lines()
            .filter(|l| l.contains(&format!(" {call}(")) && l.contains("sage.db-wal>"))
            .count()
    };
    (syncs_of_log("fdatasync"), syncs_of_log("fsync"), trace)
}

/// A durable commit syncs the write-ahead log with fdatasync(2), not
/// fsync(2), which would also write the file's timestamps to the disk at
/// every commit. The bundled SQLite only does so when built with
/// `HAVE_FDATASYNC` (`.cargo/config.toml`); this traces the delegator,
/// whose record of the task as sent is one durable commit.
#[test]
fn durable_commits_sync_the_log_with_fdatasync() {
    let (keys, _) = setup();
    let node = keys.serve("Thor", &[]);
    let (fdatasyncs, fsyncs, trace) = syncs_of_one_delegation(&keys, &node, &[]);
    assert!(fdatasyncs >= 1, "{trace}");
    assert_eq!(fsyncs, 0, "{trace}");
}

/// A delegation's ledger costs one sync by default (the record of the
/// task as sent, before it leaves; its outcome rides on the log), and
/// none with `--ledger-durability crash`; either way the receipt is kept.
#[test]
fn ledger_durability_sets_the_syncs_of_a_delegation() {
    let (keys, _) = setup();
    let node = keys.serve("Thor", &[]);
    // The first open creates the database: its schema's commits are synced.
    syncs_of_one_delegation(&keys, &node, &[]);
    let (default, _, trace) = syncs_of_one_delegation(&keys, &node, &[]);
    let (crash, _, crash_trace) =
        syncs_of_one_delegation(&keys, &node, &["--ledger-durability", "crash"]);
    let (power_loss, _, power_loss_trace) =
        syncs_of_one_delegation(&keys, &node, &["--ledger-durability", "power-loss"]);
    eprintln!("syncs: default {default}, crash {crash}, power-loss {power_loss}");
    // The `sent` row's commit, then the receipt's: both on the disk.
    assert_eq!(default, 2, "{trace}");
    assert_eq!(power_loss, 2, "{power_loss_trace}");
    assert_eq!(crash, 0, "{crash_trace}");
    let listed = keys.run(&["proofs", "list", "--json"]);
    listed.assert_code(0);
    let entries = listed.json()["delegations"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 4, "{entries:?}");
    for entry in &entries {
        assert_eq!(entry["status"], "succeeded", "{entry}");
    }
}

/// The node's system calls while `sage delegate` sends one task of
/// `task_type` to it: `strace -f` attached to the running node, with file
/// paths (`-y`), showing its log syncs and the writes of its answers.
fn trace_the_node_during_a_delegation(keys: &Keys, node: &Node, task_type: &str) -> Vec<String> {
    let trace = keys.path().with_file_name("node-strace.txt");
    let errors = keys.path().with_file_name("node-strace.err");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-s", "16", "-e"])
        .arg("trace=fdatasync,fsync,write,writev,sendto,sendmsg")
        .arg("-o")
        .arg(&trace)
        .args(["-p", &node.pid().to_string()])
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run strace ({e}): install it with `apt-get install strace`")
        });
    wait_until("strace attached to the node", || {
        std::fs::read_to_string(&errors)
            .unwrap_or_default()
            .contains("attached")
    });
    let port = node.port();
    keys.run(&delegation(&["--port", &port, "--task-type", task_type]))
        .assert_code(0);
    // SIGTERM: strace detaches and writes out what it has.
    let stopped = std::process::Command::new("kill")
        .arg(strace.id().to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    strace.wait().unwrap();
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// With a pure executor (`echo` is), the record's sync to the disk runs
/// beside the run, and the answer still waits for it: between the answer
/// to the delegator's health check and the answer with the proof, the
/// node's `fdatasync` of the log has returned.
#[test]
fn an_overlapped_run_is_answered_only_once_its_record_is_on_the_disk() {
    let (keys, _) = setup();
    let node = keys.serve("Thor", &[]);
    let trace = trace_the_node_during_a_delegation(&keys, &node, "echo");
    let answers: Vec<usize> = (0..trace.len())
        .filter(|&i| trace[i].contains("\"HTTP/1.1 200"))
        .collect();
    let [.., health, proof] = answers[..] else {
        panic!("two answers, the health check's and the task's: {trace:#?}");
    };
    let between = &trace[health..proof];
    assert!(
        between
            .iter()
            .any(|l| l.contains(" fdatasync(") && l.contains("sage.db-wal>")),
        "the log is synced: {trace:#?}"
    );
    // Returned, not only begun: a whole call, or the end of one that
    // another thread's line interrupted.
    let returned = |l: &&String| {
        l.ends_with(" = 0")
            && (l.contains("<... fdatasync resumed>")
                || (l.contains(" fdatasync(") && l.contains("sage.db-wal>")))
    };
    assert!(
        between.iter().any(|l| returned(&l)),
        "the sync returned before the answer: {trace:#?}"
    );
}

/// A program that a node killed with SIGKILL left running (no systemd
/// here to kill it) is killed when the node starts again.
#[test]
fn a_program_left_running_by_a_killed_node_is_killed_at_the_next_start() {
    let (keys, marks) = setup();
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(
        &config,
        format!(
            "[executors.count]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo started >> {m}; sleep 2; echo finished >> {m}; echo '{{}}'\"]\ntimeout = \"60s\"\n",
            m = marks.display()
        ),
    )
    .unwrap();
    let serve = || keys.serve("Thor", &["--config", config.to_str().unwrap()]);
    let node = serve();
    let port = node.port();
    let first = keys.spawn(&delegate_args(&node, &port, "t-left"));
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    wait_until("the program started", || marked().contains("started"));
    node.kill_hard();
    first.join().unwrap();

    let node = serve();
    assert!(
        node.wait_for_log("killed 1 program(s) that the stopped node's tasks left running"),
        "{}",
        node.log()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(marked(), "started\n", "the program never finished");
}

/// A node whose `mark` tasks write `started`, sleep `secs`, then write
/// `finished` to `marks`: the file says whether a run reached its end.
fn marking_node(keys: &Keys, marks: &std::path::Path, secs: u32, extra: &[&str]) -> Node {
    let config = keys.path().with_file_name("mark.toml");
    std::fs::write(
        &config,
        format!(
            "[executors.mark]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo started >> {m}; sleep {secs}; echo finished >> {m}; echo '{{\\\"ok\\\": true}}'\"]\ntimeout = \"60s\"\n",
            m = marks.display()
        ),
    )
    .unwrap();
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    keys.serve("Thor", &args)
}

/// `sage delegate` of a `mark` task to Thor at `port`, printing JSON.
fn mark_args<'a>(port: &'a str, task_id: &'a str, timeout: &'a str) -> Vec<&'a str> {
    delegation(&[
        "--port",
        port,
        "--task-type",
        "mark",
        "--task-id",
        task_id,
        "--timeout",
        timeout,
        "--json",
    ])
}

/// A delegator that gives up (its timeout, a dropped connection) does not
/// end the task: the node owns the run, which reaches its end once, and a
/// retry gets its proof.
#[test]
fn a_delegator_that_gives_up_does_not_kill_or_strand_the_task() {
    let (keys, marks) = setup();
    let node = marking_node(&keys, &marks, 3, &[]);
    let port = node.port();
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    let gave_up = keys.run(&mark_args(&port, "t-gave-up", "1"));
    gave_up.assert_code(1);
    assert_eq!(marked(), "started\n", "the program started once");
    wait_until("the program reached its end", || {
        marked().contains("finished")
    });

    // The retry gets the proof of that run, without a second one.
    let retry = keys.run(&mark_args(&port, "t-gave-up", "30"));
    retry.assert_code(0);
    assert_eq!(
        retry.json()["proof"]["status"],
        "succeeded",
        "{}",
        retry.stdout
    );
    assert_eq!(marked(), "started\nfinished\n", "one run, to its end");

    // Both attempts are in the ledger; the receipt of the second verifies.
    let ledger = ledger_of(&keys);
    let statuses: Vec<_> = ledger
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["timed_out", "succeeded"]);
    keys.export_and_verify(1);
}

/// A retry that comes while the first run goes on waits for it, within its
/// own validity, instead of being told to come back.
#[test]
fn a_retry_waits_for_the_run_in_progress_within_its_own_timeout() {
    let (keys, marks) = setup();
    let node = marking_node(&keys, &marks, 3, &[]);
    let port = node.port();
    let first = keys.spawn(&mark_args(&port, "t-waited", "1"));
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    wait_until("the program started", || marked().contains("started"));
    let retry = keys.run(&mark_args(&port, "t-waited", "30"));
    retry.assert_code(0);
    assert_eq!(retry.json()["proof"]["status"], "succeeded");
    assert!(first.join().unwrap().code != 0);
    assert_eq!(marked(), "started\nfinished\n");
}

/// A graceful stop lets a running task finish within the drain timeout
/// even when its delegator is gone; what is still running at the deadline
/// is marked interrupted at once (its program killed), as after a crash.
#[test]
fn a_graceful_stop_drains_detached_tasks_then_marks_the_rest_interrupted() {
    let (keys, marks) = setup();
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    let node = marking_node(&keys, &marks, 2, &["--drain-timeout", "10"]);
    let port = node.port();
    keys.run(&mark_args(&port, "t-drained", "1")).assert_code(1);
    let (status, log) = node.terminate();
    assert!(status.success(), "{log}");
    assert_eq!(marked(), "started\nfinished\n", "drained to its end: {log}");
    assert!(log.contains("all in-flight tasks finished"), "{log}");

    std::fs::remove_file(&marks).unwrap();
    let node = marking_node(&keys, &marks, 5, &["--drain-timeout", "1"]);
    let port = node.port();
    keys.run(&mark_args(&port, "t-cut", "1")).assert_code(1);
    let (status, log) = node.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("1 task(s) still running"), "{log}");
    assert!(log.contains("marked interrupted"), "{log}");
    // Restarted: nothing is left running to be marked at start, and the
    // retry is told, in a signed proof, that the task was interrupted.
    let node = marking_node(&keys, &marks, 5, &[]);
    assert!(
        !node.log().contains("were running when the node stopped"),
        "{}",
        node.log()
    );
    let port = node.port();
    let retry = keys.run(&mark_args(&port, "t-cut", "30"));
    retry.assert_code(1);
    assert_eq!(retry.json()["proof"]["status"], "failed");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        marked(),
        "started\n",
        "killed at the deadline, never run again"
    );
}

/// One node per state directory: a second `serve` on it is refused, naming
/// the directory and the process that holds it, and changes nothing.
#[test]
fn a_second_node_on_one_state_directory_is_refused() {
    let (keys, marks) = setup();
    let node = marking_node(&keys, &marks, 3, &[]);
    let port = node.port();
    let running = keys.spawn(&mark_args(&port, "t-locked", "30"));
    let marked = || std::fs::read_to_string(&marks).unwrap_or_default();
    wait_until("the program started", || marked().contains("started"));
    let second = keys.serve_to_end("Thor", &[]);
    second.assert_code(1);
    let dir = keys.state_dir();
    second.assert_stderr(&[&dir.display().to_string(), &format!("pid {}", node.pid())]);
    // The first node's task was not marked interrupted: it ends well.
    let out = running.join().unwrap();
    assert!(out.code == 0, "{}", out.stderr);
    assert_eq!(marked(), "started\nfinished\n");
    // Short commands work beside the running node.
    keys.run(&["proofs", "list"]).assert_code(0);
    keys.run(&["peer", "list"]).assert_code(0);
}
