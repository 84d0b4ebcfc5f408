//! The scenarios of the Python original's deployment guide with real nodes, and every way the delegator
//! refuses a proof or a peer.

use sage_crypto::{sign_envelope, NodeKey};
use sage_types::proof::PROOF_PAYLOAD_TYPE;
use sage_types::{Envelope, Proof, Task};

use crate::fixture::{serving_thor, Fleet};
use crate::util::{FakeNode, Keys};

/// A change made to an honest proof before it is signed.
type Tamper = fn(&mut Proof);

/// Scenario 1: server and client on one machine, keys made on the fly.
#[test]
fn scenario_1_loopback_delegation_is_verified() {
    let keys = Keys::new();
    let thor_pub = keys.keygen("Thor");
    keys.keygen("Sprout");
    let thor = keys.serve("Thor", &[]);
    let input = r#"{"query": "What is SAGE consciousness architecture?", "test": true}"#;
    let run = keys.run(&[
        "delegate",
        "--local",
        "sprout",
        "--target",
        "thor",
        "--port",
        &thor.port(),
        "--task-type",
        "llm_inference",
        "--input",
        input,
        "--json",
    ]);
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["verified"], true);
    assert_eq!(out["accepted"], true);
    let proof = &out["proof"];
    assert_eq!(proof["executor"], "thor_sage_lct");
    assert_eq!(proof["issuer"], "sprout_sage_lct");
    assert_eq!(proof["status"], "succeeded");
    assert_eq!(proof["task_id"], out["task"]["task_id"]);
    assert_eq!(proof["task_digest"], out["task_digest"]);
    assert_eq!(proof["result"]["simulated"], true);
    assert_eq!(
        proof["result"]["echo"]["query"],
        "What is SAGE consciousness architecture?"
    );
    assert_eq!(proof["actual_cost"], 46.0);
    let timing = &out["timing_ms"];
    let part = |key: &str| timing[key].as_f64().unwrap();
    // The total covers the health check and the task's round trip.
    assert!(
        part("total") >= part("health_rtt") + part("round_trip"),
        "{timing}"
    );

    // The proof envelope verifies with nothing but Thor's public key.
    let envelope: Envelope = serde_json::from_value(out["signed_proof"].clone()).unwrap();
    let thor_key = sage_crypto::PublicKey::from_hex(&thor_pub).unwrap();
    let verified =
        sage_crypto::verify_envelope_with(&envelope, PROOF_PAYLOAD_TYPE, &thor_key).unwrap();
    let signed: Proof = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(serde_json::to_value(&signed).unwrap(), *proof);
    assert_eq!(thor.executions_of(proof["task_id"].as_str().unwrap()), 1);

    // The human summary shows the sections of the Python original's deployment guide.
    let run = keys.run(&[
        "delegate",
        "--local",
        "Sprout",
        "--target",
        "THOR",
        "--port",
        &thor.port(),
    ]);
    run.assert_code(0);
    run.assert_stdout(&[
        "Execution proof",
        "Result data",
        "total delegation time",
        "network overhead",
        "Security",
        "✓ proof signature verified",
    ]);
}

/// Scenario 3: two nodes with separate key directories, peers added by
/// public key with addresses, each delegating to the other.
#[test]
fn scenario_3_two_nodes_delegate_to_each_other() {
    // Each learns the other's public key first (no address yet: ports are picked at start).
    let fleet = Fleet::new()
        .node("Thor")
        .node("Sprout")
        .trusting_each_other();
    let (thor_keys, sprout_keys) = (fleet.keys("Thor"), fleet.keys("Sprout"));
    let thor = thor_keys.serve("Thor", &[]);
    let sprout = sprout_keys.serve("Sprout", &[]);
    // Record the addresses; the key is unchanged, so no --replace is needed.
    thor_keys.trust(
        "Sprout",
        fleet.public("Sprout"),
        &["--address", &sprout.address()],
    );
    sprout_keys.trust(
        "Thor",
        fleet.public("Thor"),
        &["--address", &thor.address()],
    );

    let run = sprout_keys.delegate(&["--task-type", "echo", "--input", r#"{"n": 1}"#, "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["proof"]["result"], serde_json::json!({"n": 1}));
    assert_eq!(run.json()["proof"]["executor"], "thor_sage_lct");

    let run = thor_keys.run(&[
        "delegate",
        "--local",
        "Thor",
        "--target",
        "sprout",
        "--task-type",
        "vision",
        "--json",
    ]);
    run.assert_code(0);
    assert_eq!(run.json()["proof"]["executor"], "sprout_sage_lct");
    assert_eq!(
        run.json()["proof"]["result"]["output"],
        "Executed vision on Sprout"
    );

    // The serve banners list where each known platform came from.
    assert!(
        thor.log().contains("known platform: Sprout"),
        "{}",
        thor.log()
    );
    assert!(thor.log().contains("peers.toml"), "{}", thor.log());
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let (keys, thor) = serving_thor();
    keys.delegate(&["--port", &thor.port(), "--task-type", "echo"])
        .assert_code(0);
    let (status, log) = thor.terminate();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("received SIGTERM"), "{log}");
    assert!(
        log.contains("stopped: all in-flight tasks finished"),
        "{log}"
    );
    // The database was closed, not left to the next start: its log was
    // copied into the file and removed.
    assert!(!log.contains("still closing"), "{log}");
    assert!(
        !keys.state_dir().join("sage.db-wal").exists(),
        "a write-ahead log is left after a clean stop"
    );
}

#[test]
fn unreachable_unknown_and_silent_targets_are_reported() {
    let keys = Keys::with(&["Thor", "Sprout"]);

    // Nothing listens on a port that was just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let run = keys.delegate(&["--port", &port]);
    run.assert_code(1);
    run.assert_stderr(&["cannot reach 127.0.0.1:", "Is `sage serve` running there?"]);

    let run = keys.run(&[
        "delegate", "--local", "Sprout", "--target", "Legion", "--port", &port,
    ]);
    run.assert_code(1);
    run.assert_stderr(&["unknown target \"Legion\"", "sage peer add"]);

    // A node that accepts the connection and never answers.
    let mute = FakeNode::start(|_, _, _| None);
    let run = keys.delegate(&[
        "--host",
        "127.0.0.1",
        "--port",
        &mute.addr.port().to_string(),
        "--timeout",
        "1",
    ]);
    run.assert_code(1);
    run.assert_stderr(&["did not answer within"]);

    // `sage health` says the same, with the troubleshooting advice.
    let run = keys.run(&["health", &format!("127.0.0.1:{port}")]);
    run.assert_code(1);
    run.assert_stderr(&["troubleshooting", "ufw"]);
}

/// Thor's health answer, as a fake Thor gives it.
pub fn thor_health() -> Vec<u8> {
    let health = serde_json::json!({"status": "healthy", "platform": "Thor", "lct_id": "thor_sage_lct", "timestamp": 1.0, "version": "0.1.0"});
    serde_json::to_vec(&health).unwrap()
}

/// A fake Thor at the address: healthy, but its proofs are made by `forge`
/// from the task it receives.
fn fake_thor(forge: impl Fn(&Task, &[u8]) -> Envelope + Send + Sync + 'static) -> FakeNode {
    FakeNode::start(move |method, path, body| match (method, path) {
        ("GET", "/health") => Some((200, thor_health())),
        ("POST", "/v1/tasks") => {
            let env: Envelope = serde_json::from_slice(body).unwrap();
            let payload = env.payload_bytes().unwrap();
            let task: Task = serde_json::from_slice(&payload).unwrap();
            Some((200, serde_json::to_vec(&forge(&task, &payload)).unwrap()))
        }
        _ => Some((404, b"{}".to_vec())),
    })
}

pub fn honest_proof(task: &Task, payload: &[u8]) -> Proof {
    let result = task.input.clone();
    Proof {
        executor: "thor_sage_lct".into(),
        issuer: task.issuer.clone(),
        task_id: task.task_id.clone(),
        task_digest: sage_crypto::digest::sha256_tagged(payload),
        status: sage_types::ProofStatus::Succeeded,
        executor_kind: "echo".into(),
        exit_status: None,
        result_digest: sage_crypto::digest::json_digest(&result),
        result,
        started_at: 0,
        finished_at: 0,
        latency_ms: 0.1,
        actual_cost: 0.0,
        quality: 1.0,
        convergence: 1.0,
        iterations: 1,
    }
}

pub fn sign_proof(key: &NodeKey, proof: &Proof) -> Envelope {
    sign_envelope(key, PROOF_PAYLOAD_TYPE, &serde_json::to_vec(proof).unwrap())
}

fn delegate_to(keys: &Keys, fake: &FakeNode) -> crate::util::Run {
    keys.delegate(&[
        "--host",
        "127.0.0.1",
        "--port",
        &fake.addr.port().to_string(),
        "--task-type",
        "echo",
        "--json",
    ])
}

#[test]
fn forged_proofs_are_refused() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let thor_key = keys.key("Thor");

    // Control: the fake with Thor's real key and an honest proof passes, so
    // each refusal below is due to its one forgery.
    let k = thor_key.clone();
    let run = delegate_to(
        &keys,
        &fake_thor(move |t, p| sign_proof(&k, &honest_proof(t, p))),
    );
    run.assert_code(0);

    // Signed by some other key.
    let run = delegate_to(
        &keys,
        &fake_thor(|t, p| sign_proof(&NodeKey::generate(), &honest_proof(t, p))),
    );
    run.assert_code(1);
    run.assert_stderr(&["signed by another key"]);

    // Thor's key id, but the payload altered after signing.
    let k = thor_key.clone();
    let run = delegate_to(
        &keys,
        &fake_thor(move |t, p| {
            let mut env = sign_proof(&k, &honest_proof(t, p));
            let mut altered = honest_proof(t, p);
            altered.quality = 0.99;
            env.payload =
                Envelope::new(PROOF_PAYLOAD_TYPE, &serde_json::to_vec(&altered).unwrap()).payload;
            env
        }),
    );
    run.assert_code(1);
    run.assert_stderr(&["signature does not verify"]);

    // Validly signed by Thor, but tampered with before signing: for another
    // task, with a digest of other payload bytes, a result that does not
    // match its digest.
    let tampered: [(Tamper, &str); 3] = [
        (
            |proof| proof.task_id = "task_from_yesterday".into(),
            "proof is for another task",
        ),
        (
            |proof| proof.task_digest = sage_crypto::digest::sha256_tagged(b"other bytes"),
            "task digest",
        ),
        (
            |proof| proof.result = serde_json::json!({"swapped": true}),
            "result digest",
        ),
    ];
    for (tamper, refusal) in tampered {
        let k = thor_key.clone();
        let run = delegate_to(
            &keys,
            &fake_thor(move |t, p| {
                let mut proof = honest_proof(t, p);
                tamper(&mut proof);
                sign_proof(&k, &proof)
            }),
        );
        run.assert_code(1);
        run.assert_stderr(&[refusal]);
    }

    // A valid proof below the required quality: verified, but not accepted.
    let k = thor_key.clone();
    let run = delegate_to(
        &keys,
        &fake_thor(move |t, p| {
            let mut proof = honest_proof(t, p);
            proof.quality = 0.1;
            sign_proof(&k, &proof)
        }),
    );
    run.assert_code(1);
    assert_eq!(run.json()["verified"], true);
    assert_eq!(run.json()["accepted"], false);
    run.assert_stderr(&["quality 0.1 is below the required 0.6"]);
}

#[test]
fn a_refusal_is_reported_with_its_code() {
    let (keys, thor) = serving_thor();
    let run = keys.delegate(&["--port", &thor.port(), "--task-type", "shell"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("refused the request: unsupported_task (422)"),
        "{}",
        run.stderr
    );
}

#[test]
fn another_platform_at_the_address_is_refused_before_anything_is_sent() {
    let keys = Keys::with(&["Thor", "Sprout", "Legion"]);
    // Legion answers where Thor was expected.
    let legion = keys.serve("Legion", &[]);
    let run = keys.delegate(&["--port", &legion.port()]);
    run.assert_code(1);
    run.assert_stderr(&["is Legion (legion_sage_lct), not Thor (thor_sage_lct)"]);
    assert!(!legion.log().contains("task executed"), "{}", legion.log());
}

/// A task id with a newline cannot write a line of its own into the node's
/// log: the native protocol refuses it as malformed, the legacy one (whose
/// ids are free text) has it logged escaped.
#[test]
fn a_task_id_with_a_newline_cannot_forge_a_log_line() {
    let (keys, thor) = serving_thor();
    let forged = "t1\nFORGED task executed";
    let run = keys.delegate(&["--port", &thor.port(), "--task-id", forged]);
    run.assert_code(1);
    run.assert_stderr(&["malformed", "control characters"]);
    let run = keys.delegate(&[
        "--port",
        &thor.port(),
        "--task-id",
        forged,
        "--protocol",
        "legacy",
    ]);
    run.assert_code(0);
    let log = thor.log();
    assert!(log.contains(r"t1\nFORGED"), "escaped in the log: {log}");
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a forged line: {log}"
    );
}

/// What a peer says in a refusal reaches the delegator's terminal escaped:
/// no terminal control sequence, no line of its own.
#[test]
fn a_peers_refusal_cannot_write_to_the_terminal() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let hostile = "\u{1b}[2J\nFORGED ✓ proof verified";
    let thor = FakeNode::start(move |method, path, _| {
        let health = serde_json::json!({"status": "healthy", "platform": "Thor", "lct_id": "thor_sage_lct", "timestamp": 1.0, "version": "0.1.0"});
        match (method, path) {
            ("GET", "/health") => Some((200, serde_json::to_vec(&health).unwrap())),
            ("POST", "/v1/tasks") => {
                let problem = serde_json::json!({"type": "urn:sage:problem:busy", "title": "busy", "status": 503, "detail": hostile, "code": "busy"});
                Some((503, serde_json::to_vec(&problem).unwrap()))
            }
            _ => Some((404, b"{}".to_vec())),
        }
    });
    let port = thor.addr.port().to_string();
    let run = keys.delegate(&["--port", &port]);
    run.assert_code(1);
    run.assert_stderr(&["refused", r"\u{1b}[2J\nFORGED"]);
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
    assert!(
        !run.stderr.lines().any(|line| line.starts_with("FORGED")),
        "{}",
        run.stderr
    );
}

/// Every task type the Python original defines is served by default,
/// `consolidation` included, over both protocols.
#[test]
fn every_task_type_of_the_original_is_served_by_default() {
    let (keys, thor) = serving_thor();
    for task_type in [
        "llm_inference",
        "vision",
        "coordination",
        "consciousness",
        "consolidation",
    ] {
        for protocol in ["v1", "legacy"] {
            let run = keys.delegate(&[
                "--port",
                &thor.port(),
                "--task-type",
                task_type,
                "--protocol",
                protocol,
                "--json",
            ]);
            run.assert_code(0);
        }
    }
}
