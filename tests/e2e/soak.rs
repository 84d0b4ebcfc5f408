//! Long runs, out of the default test run (`#[ignore]`); `.ci/run` runs
//! them for a bounded time: `SAGE_SOAK_SECS` (default 20) each.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sage_crypto::{sign_envelope, NodeKey};
use sage_types::task::TASK_PAYLOAD_TYPE;
use sage_types::{Envelope, QualityRequirements, Task};

use crate::util::{http, try_http, Keys, Node};

/// Clients sending tasks at once.
const CLIENTS: usize = 8;

fn soak_time() -> Duration {
    let secs = std::env::var("SAGE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// A node whose `record` tasks append their input to `runs`, one line per
/// run of the program.
fn recording_node(keys: &Keys, runs: &Path) -> Node {
    let config = keys.path().with_file_name("sage.toml");
    let script = format!(
        "line=$(cat); printf '%s\\\\n' \\\"$line\\\" >> '{}'; sleep 0.02; echo '{{\\\"ok\\\": true}}'",
        runs.display()
    );
    std::fs::write(
        &config,
        format!("[executors.record]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"{script}\"]\ntimeout = \"30s\"\nmax_concurrency = {CLIENTS}\n"),
    )
    .unwrap();
    keys.serve("Thor", &["--config", config.to_str().unwrap()])
}

/// The envelope of task `n`; each `attempt` makes a new nonce (and so a
/// new envelope) for the same task.
fn task(key: &NodeKey, n: u64, attempt: u64) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let task = Task {
        task_id: format!("soak-{n:06}"),
        task_type: "record".into(),
        issuer: "sprout_sage_lct".into(),
        audience: "thor_sage_lct".into(),
        issued_at: now,
        expires_at: now + 300_000,
        nonce: format!("{n:016x}{attempt:016x}"),
        input: serde_json::json!({ "n": n }),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        max_cost: None,
        blobs: Vec::new(),
        origin: None,
    };
    serde_json::to_vec(&sign_envelope(
        key,
        TASK_PAYLOAD_TYPE,
        &serde_json::to_vec(&task).unwrap(),
    ))
    .unwrap()
}

/// The proof's payload in an answer.
fn proof_of(answer: &[u8]) -> serde_json::Value {
    let envelope: Envelope = serde_json::from_slice(answer).unwrap();
    serde_json::from_slice(&envelope.payload_bytes().unwrap()).unwrap()
}

/// Kills the node with SIGKILL again and again while clients send it
/// tasks (each until it is answered), restarting it on the same state each
/// time. Then, with the node up once more, checks what it promises:
///
/// - every answer a client received is what a retry of that task gets,
///   byte for byte;
/// - a retry of every task sent gets a signed proof: it succeeded, or it
///   was interrupted by a kill;
/// - no program ran twice, and each task that succeeded ran once;
/// - every envelope that was answered is refused when sent again;
/// - no record of a running program is left.
#[test]
#[ignore = "soak: .ci/run runs it with SAGE_SOAK_SECS"]
fn a_node_killed_again_and_again_loses_no_answer_and_runs_nothing_twice() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let key = Arc::new(keys.key("Sprout"));
    let runs = keys.path().with_file_name("runs.txt");
    let mut node = recording_node(&keys, &runs);
    let target = Arc::new(Mutex::new(node.addr));
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Task number -> (the envelope sent, the answer received).
    let answered = Arc::new(Mutex::new(HashMap::<u64, (Vec<u8>, Vec<u8>)>::new()));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (key, target, next, stop, answered) = (
                key.clone(),
                target.clone(),
                next.clone(),
                stop.clone(),
                answered.clone(),
            );
            std::thread::spawn(move || {
                'tasks: while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    // As `sage delegate --task-id` does: until an answer
                    // comes, the same task again in a new envelope.
                    for attempt in 0.. {
                        let body = task(&key, n, attempt);
                        let addr: SocketAddr = *target.lock().unwrap();
                        match try_http(addr, "POST", "/v1/tasks", &body) {
                            Some(answer) if answer.status == 200 => {
                                answered.lock().unwrap().insert(n, (body, answer.body));
                                continue 'tasks;
                            }
                            // Refused, or the node is down or died under
                            // the request.
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                        if stop.load(Ordering::Relaxed) {
                            break 'tasks;
                        }
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + soak_time();
    let mut kills = 0;
    while Instant::now() < deadline {
        // 150-450 ms between kills, varied so that they land at every
        // step of a task.
        std::thread::sleep(Duration::from_millis(150 + (kills * 97) % 300));
        node.kill_hard();
        kills += 1;
        node = recording_node(&keys, &runs);
        *target.lock().unwrap() = node.addr;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let sent = next.load(Ordering::Relaxed);
    let answered = answered.lock().unwrap();
    assert!(
        kills >= 3 && !answered.is_empty(),
        "{kills} kills, {} answers",
        answered.len()
    );

    // Every task once more, as a retry: a new envelope of the same task.
    let mut outcome = BTreeMap::new();
    for n in 0..sent {
        let retry = http(node.addr, "POST", "/v1/tasks", &task(&key, n, u64::MAX));
        assert_eq!(
            retry.status,
            200,
            "task {n}: {}",
            String::from_utf8_lossy(&retry.body)
        );
        if let Some((_, first)) = answered.get(&n) {
            assert_eq!(
                &retry.body, first,
                "task {n}: a retry gets the answer given before"
            );
        }
        let proof = proof_of(&retry.body);
        let status = match proof["status"].as_str().unwrap() {
            "succeeded" => "succeeded",
            "failed" if proof["result"]["error"].to_string().contains("interrupted") => {
                "interrupted"
            }
            other => panic!("task {n}: {other}: {proof}"),
        };
        outcome.insert(n, status);
    }

    // A kill while the node wrote a program's input leaves that program
    // to run on a truncated input: a line that names no task.
    let (mut ran, mut unnamed) = (HashMap::<u64, usize>::new(), 0);
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        match serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|input| input["n"].as_u64())
        {
            Some(n) => *ran.entry(n).or_default() += 1,
            None => unnamed += 1,
        }
    }
    let mut interrupted_unrun = 0;
    for (n, status) in &outcome {
        let times = ran.get(n).copied().unwrap_or(0);
        match *status {
            "succeeded" => assert_eq!(times, 1, "task {n} succeeded: its program ran once"),
            _ => {
                assert!(
                    times <= 1,
                    "task {n} was interrupted: its program ran {times} times"
                );
                interrupted_unrun += usize::from(times == 0);
            }
        }
    }
    assert!(
        ran.keys().all(|n| *n < sent),
        "only tasks that were sent ran"
    );
    assert!(
        unnamed <= interrupted_unrun,
        "{unnamed} runs on a truncated input, but only {interrupted_unrun} interrupted tasks could have made them"
    );

    for (n, (envelope, _)) in answered.iter() {
        let replay = http(node.addr, "POST", "/v1/tasks", envelope);
        assert_eq!(
            (replay.status, replay.problem_code().as_str()),
            (409, "replayed"),
            "task {n}: a replayed envelope"
        );
    }
    // Each program's record went with it: done, or killed at a start.
    let records = std::fs::read_dir(keys.state_dir().join("programs"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "records of running programs left behind");

    let interrupted = outcome.values().filter(|s| **s == "interrupted").count();
    eprintln!(
        "soak: {kills} kills, {sent} tasks, {} answered during the kills, {interrupted} interrupted, {unnamed} runs on a truncated input",
        answered.len()
    );
}
