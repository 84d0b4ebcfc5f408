//! What a new user meets setting up a node: `serve` needs no `--name` when
//! the key directory holds one key, and says what it found otherwise.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use crate::fixture::delegation;
use crate::util::{http, sage, Keys};

#[test]
fn serve_without_a_name_takes_the_only_key_in_the_key_directory() {
    let keys = Keys::new();
    keys.keygen("Thor");
    // Readiness from the notify socket: `STATUS=serving on ADDR`.
    let socket_path = keys.path().with_file_name("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = sage()
        .env("SAGE_STATE_DIR", keys.state_dir())
        .env("NOTIFY_SOCKET", &socket_path)
        .arg("--keys-dir")
        .arg(keys.path())
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let addr = loop {
        let n = socket.recv(&mut buf).expect("a notification within 30 s");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(addr) = text
            .lines()
            .find_map(|l| l.strip_prefix("STATUS=serving on "))
        {
            break addr.parse().unwrap();
        }
    };
    let health = http(addr, "GET", "/health", b"").json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health["platform"], "Thor", "{health}");
}

#[test]
fn serve_without_a_name_lists_the_keys_it_found_or_says_there_are_none() {
    let keys = Keys::new();
    let serve = ["serve", "--host", "127.0.0.1", "--port", "0"];
    let limit = Duration::from_secs(30);

    let run = keys.run_within(limit, &serve);
    run.assert_code(2);
    run.assert_stderr(&["no platform name", "does not exist", "--keys-dir"]);

    std::fs::create_dir(keys.path()).unwrap();
    let run = keys.run_within(limit, &serve);
    run.assert_code(2);
    run.assert_stderr(&[
        "no platform name",
        "no key in",
        "--name NAME",
        "sage keygen",
    ]);

    keys.keygen("Thor");
    keys.keygen("Sprout");
    let run = keys.run_within(limit, &serve);
    run.assert_code(2);
    run.assert_stderr(&[
        "no platform name",
        "holds keys for Sprout, Thor",
        "--name NAME",
    ]);
    assert!(!keys.state_dir().join("sage.db").exists());
}

/// `sage init` for `name` in `keys`, listening on loopback; the config
/// file and the `sage peer add` line it printed, as argv without `sage`.
fn init(keys: &Keys, name: &str) -> (std::path::PathBuf, Vec<String>) {
    let config = keys.path().with_file_name("sage.toml");
    let run = keys.run(&[
        "init",
        "--name",
        name,
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:50051",
    ]);
    run.assert_code(0);
    run.assert_stderr(&["made", "wrote", "sage serve --config"]);
    let line: Vec<String> = run.stdout.split_whitespace().map(str::to_owned).collect();
    assert_eq!(line[..3], ["sage", "peer", "add"], "{}", run.stdout);
    (config, line[1..].to_vec())
}

#[test]
fn init_makes_a_node_that_serves_and_prints_the_line_its_peers_run() {
    let thor = Keys::new();
    let sprout = Keys::new();
    let (thor_config, thor_line) = init(&thor, "Thor");
    let (_, sprout_line) = init(&sprout, "Sprout");
    assert!(thor_line.contains(&"127.0.0.1:50051".to_owned()));

    thor.run(&["config", "check", "--config", thor_config.to_str().unwrap()])
        .assert_code(0)
        .assert_stdout(&["[executors.echo]", "[executors.cat]"]);
    // Each runs the other's line as printed.
    thor.run(&argv(&sprout_line)).assert_code(0);
    sprout.run(&argv(&thor_line)).assert_code(0);

    let node = thor.serve("Thor", &["--config", thor_config.to_str().unwrap()]);
    for task_type in ["echo", "cat"] {
        let port = node.port();
        let run = sprout.run(&delegation(&[
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--task-type",
            task_type,
            "--input",
            r#"{"n": 1}"#,
            "--json",
        ]));
        run.assert_code(0);
        assert_eq!(
            run.json()["proof"]["result"],
            serde_json::json!({"n": 1}),
            "{task_type}"
        );
    }

    // The receipts verify offline, each with the status its proof signs.
    let export = sprout.path().with_file_name("receipts.jsonl");
    sprout
        .run(&["proofs", "export", "--out", export.to_str().unwrap()])
        .assert_code(0);
    let run = sprout.run(&["proofs", "verify", export.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(
        run.stdout.matches("proven by Thor: succeeded").count(),
        2,
        "{}",
        run.stdout
    );

    // Again: the config is not replaced without --force, the key never.
    let public = thor
        .run(&["key", "show", "--name", "Thor", "--public-only"])
        .stdout;
    let again = [
        "init",
        "--name",
        "Thor",
        "--config",
        thor_config.to_str().unwrap(),
    ];
    let run = thor.run(&again);
    run.assert_code(1);
    run.assert_stderr(&["already exists", "--force"]);
    let run = thor.run(&[&again[..], &["--force"]].concat());
    run.assert_code(0);
    run.assert_stderr(&["kept the existing key"]);
    assert!(run.stdout.contains(public.trim()), "{}", run.stdout);
}

fn argv(line: &[String]) -> Vec<&str> {
    line.iter().map(String::as_str).collect()
}

#[test]
fn a_new_state_directory_is_migrated_quietly_by_a_command_and_in_one_line_by_serve() {
    let keys = Keys::new();
    keys.keygen("Thor");
    let run = keys.run(&["proofs", "list"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("migrated"), "{}", run.stderr);

    let other = Keys::new();
    other.keygen("Thor");
    let node = other.serve("Thor", &[]);
    let (_, log) = node.terminate();
    let migrated: Vec<&str> = log.lines().filter(|l| l.contains("migrated")).collect();
    assert_eq!(migrated.len(), 1, "{log}");
    assert!(migrated[0].contains("database schema migrated"), "{log}");
    assert!(migrated[0].contains("from=0"), "{log}");
}

#[test]
fn times_read_as_rfc_3339_and_peer_list_shows_this_node_apart() {
    let keys = Keys::new();
    let thor_pub = keys.keygen("Thor");
    keys.keygen("Sprout");
    // A delegation that fails still leaves its row in the ledger.
    keys.run(&[
        "peer",
        "add",
        "--name",
        "Thor",
        "--public-key",
        &thor_pub,
        "--address",
        "127.0.0.1:9",
    ])
    .assert_code(0);
    keys.delegate(&["--task-type", "echo", "--input", "{}"])
        .assert_code(1);

    let run = keys.run(&["proofs", "list"]);
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "sent  task id  task type → peer  status  latency");
    let sent = lines[1].split("  ").next().unwrap();
    let json = keys.run(&["proofs", "list", "--json"]).json();
    let sent_ms = json["delegations"][0]["sent_at_ms"].as_u64().unwrap();
    // Local RFC 3339 to the second: `YYYY-MM-DDTHH:MM:SS+HH:MM`.
    assert_eq!(sent.len(), 25, "{sent}");
    assert_eq!(&sent[10..11], "T", "{sent}");

    // --since takes that time back: the row is at or after it, not after
    // a second later.
    let since = |text: &str| {
        let run = keys.run(&["proofs", "list", "--json", "--since", text]);
        run.assert_code(0);
        run.json()["delegations"].as_array().unwrap().len()
    };
    let whole_second = sent_ms / 1000 * 1000;
    assert_eq!(since(sent), 1);
    assert_eq!(since(&format!("{}", whole_second / 1000 + 1)), 0);

    let run = keys.run(&["peer", "list", "--local", "Sprout"]);
    run.assert_code(0);
    run.assert_stdout(&[
        "this node: Sprout (sprout_sage_lct)",
        "peers:",
        "Thor (thor_sage_lct)",
    ]);
    assert!(
        !run.stdout
            .split("peers:")
            .nth(1)
            .unwrap()
            .contains("Sprout ("),
        "{}",
        run.stdout
    );
    let run = keys.run(&["peer", "list", "--local", "Sprot"]);
    run.assert_code(1);
    run.assert_stderr(&["no key for platform Sprot"]);
}

#[test]
fn init_into_a_directory_that_does_not_exist_makes_nothing() {
    let keys = Keys::new();
    let config = keys.path().with_file_name("etc").join("sage.toml");
    let run = keys.run(&[
        "init",
        "--name",
        "Thor",
        "--config",
        config.to_str().unwrap(),
    ]);
    run.assert_code(2);
    run.assert_stderr(&["--config", "is not a directory"]);
    assert!(!keys.path().exists(), "a key was made");
    assert!(!config.exists());

    // An address its peers could not use is refused as `peer add` would.
    let config = keys.path().with_file_name("sage.toml");
    let run = keys.run(&[
        "init",
        "--name",
        "Thor",
        "--config",
        config.to_str().unwrap(),
        "--address",
        "https://https://thor:50051",
    ]);
    run.assert_code(2);
    run.assert_stderr(&["--address"]);
    assert!(!keys.path().exists(), "a key was made");
    assert!(!config.exists());
}

#[test]
fn proofs_show_opens_both_signed_messages_and_says_whether_the_proof_verifies() {
    let (keys, thor) = crate::fixture::serving_thor();
    let port = thor.port();
    keys.delegate(&[
        "--task-type",
        "echo",
        "--input",
        r#"{"text": "hi\u001b[2J"}"#,
        "--port",
        &port,
        "--task-id",
        "t-show",
    ])
    .assert_code(0);

    let run = keys.run(&["proofs", "show", "t-show"]);
    run.assert_code(0);
    run.assert_stdout(&[
        "delegation t-show",
        "to Thor (thor_sage_lct), protocol v1",
        "outcome:   succeeded",
        "proof:     ✓ signed by Thor: succeeded",
        "task (signed by key ",
        "task_type:",
        "echo",
        "proof (signed by key ",
        "status:",
        "result_digest:",
    ]);
    // Times of the signed fields read as RFC 3339, unix ms beside them.
    let issued = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("issued_at:"))
        .unwrap();
    assert!(issued.contains('T') && issued.contains(" ("), "{issued}");
    // The input, indented JSON; the terminal escape it carries stays escaped.
    assert!(run.stdout.contains("\\u001b[2J"), "{}", run.stdout);
    assert!(!run.stdout.contains('\u{1b}'), "{}", run.stdout);
    // No base64 envelope in sight: that is `--raw`.
    let raw = keys.run(&["proofs", "show", "t-show", "--raw"]);
    let payload = raw.json()["proof"]["payload"].as_str().unwrap().to_owned();
    assert!(!run.stdout.contains(&payload[..40]));

    // Checked with a trust store that holds another key for Thor: refused.
    let other = Keys::new();
    other.keygen("Thor");
    let moved = keys.path().join("Thor_ed25519.key");
    std::fs::rename(&moved, keys.path().join("Thor.bak")).unwrap();
    std::fs::copy(other.path().join("Thor_ed25519.key"), &moved).unwrap();
    let run = keys.run(&["proofs", "show", "t-show"]);
    run.assert_code(0);
    run.assert_stdout(&["proof:     ✗ "]);

    let run = keys.run(&["proofs", "show", "t-none"]);
    run.assert_code(1);
    run.assert_stderr(&["no delegation with task id t-none"]);
}

#[test]
fn peer_list_takes_the_only_key_of_the_directory_as_this_node() {
    let keys = Keys::new();
    keys.keygen("Sprout");
    let thor = Keys::new();
    let thor_pub = thor.keygen("Thor");
    keys.run(&["peer", "add", "--name", "Thor", "--public-key", &thor_pub])
        .assert_code(0);
    let run = keys.run(&["peer", "list"]);
    run.assert_code(0);
    run.assert_stdout(&[
        "this node: Sprout (sprout_sage_lct)",
        "peers:",
        "Thor (thor_sage_lct)",
    ]);
    assert!(
        !run.stdout
            .split("peers:")
            .nth(1)
            .unwrap()
            .contains("Sprout ("),
        "{}",
        run.stdout
    );
    let json = keys.run(&["peer", "list", "--json"]).json();
    assert_eq!(json["this_node"]["name"], "Sprout");
    assert_eq!(json["peers"].as_array().unwrap().len(), 1);
}
