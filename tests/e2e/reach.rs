//! Reaching a node: the address forms every command takes (default port
//! 50051, IPv6, schemes), the TLS flags and their one validation, and the
//! messages for the usual ways of reaching the wrong thing (the local node
//! itself, a peer with a new key, a Python node, an HTTPS-only port, a
//! closed port, a key directory that is not there).

use crate::fixture::{delegation, delegation_from, serving_thor, Fleet};
use crate::legacy::{python_keys, PythonNode};
use crate::tls::{self_signed, serve_tls};
use crate::util::{self, Keys, Run};

/// A fingerprint of the right form, pinning no certificate of the tests.
const SOME_FINGERPRINT: &str =
    "sha256:abababababababababababababababababababababababababababababababab";

/// A loopback port where nothing listens: bound, learnt, closed.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn every_address_form_reaches_the_node_and_junk_is_a_usage_error() {
    let (keys, thor) = serving_thor();
    let port = thor.port();
    for address in [
        thor.address(),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}/"),
        format!("HTTP://127.0.0.1:{port}"),
    ] {
        keys.run(&["health", &address])
            .assert_code(0)
            .assert_stdout(&["Thor (thor_sage_lct)"]);
    }
    // --host takes a whole address, scheme included, and keeps it single.
    let host = format!("http://127.0.0.1:{port}");
    keys.delegate(&["--host", &host, "--task-type", "echo"])
        .assert_code(0)
        .assert_stdout(&[&format!("at http://127.0.0.1:{port}")]);
    keys.delegate(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--task-type",
        "echo",
    ])
    .assert_code(0);

    for junk in [
        "https://https://localhost:50051",
        "127.0.0.1:50051/health",
        "ftp://127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:http",
        "[::1",
        "",
    ] {
        let runs: [(&str, Run); 4] = [
            ("health", keys.run(&["health", junk])),
            ("capabilities", keys.run(&["capabilities", junk])),
            (
                "delegate --host",
                keys.delegate(&["--host", junk, "--task-type", "echo"]),
            ),
            (
                "peer add --address",
                keys.run(&[
                    "peer",
                    "add",
                    "--name",
                    "Nova",
                    "--public-key",
                    &"ab".repeat(32),
                    "--address",
                    junk,
                ]),
            ),
        ];
        for (command, run) in runs {
            assert_eq!(run.code, 2, "{command} {junk:?}:\n{}", run.stderr);
            assert!(
                run.stderr.contains("invalid address"),
                "{command} {junk:?}:\n{}",
                run.stderr
            );
        }
    }
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--target",
        "127.0.0.1:1/x",
        "--requests",
        "1",
    ]);
    run.assert_code(2)
        .assert_stderr(&["--target", "invalid address"]);
    // What the scheme did twice is named.
    keys.run(&["health", "https://https://localhost:50051"])
        .assert_stderr(&["the scheme is given twice"]);
    // Nothing was added by the refused peer add.
    assert!(!keys.run(&["peer", "list"]).stdout.contains("Nova"));
}

#[test]
fn an_address_without_a_port_means_50051() {
    let keys = Keys::with(&["Sprout"]);
    let run = keys.run(&["health", "127.0.0.1", "--timeout", "2s"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("ufw allow 50051/tcp"),
        "health tried another port than 50051 (or something listens there):\n{}",
        run.stderr
    );
}

#[test]
fn a_fingerprint_on_plain_http_is_refused_by_each_command() {
    let (keys, thor) = serving_thor();
    let http = format!("http://{}", thor.address());
    let thor_pub = keys.run(&["key", "show", "--name", "Thor", "--public-only"]);
    let thor_pub = thor_pub.stdout.trim();
    let pin = ["--tls-fingerprint", SOME_FINGERPRINT];
    let with_pin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&pin);
        keys.run(&all)
    };
    let runs = [
        ("health", with_pin(&["health", &http])),
        ("capabilities", with_pin(&["capabilities", &http])),
        (
            "delegate",
            with_pin(&delegation(&["--host", &http, "--task-type", "echo"])),
        ),
        (
            "bench",
            with_pin(&[
                "bench",
                "--local",
                "Sprout",
                "--target",
                &http,
                "--requests",
                "1",
            ]),
        ),
        (
            "peer add",
            with_pin(&[
                "peer",
                "add",
                "--name",
                "Thor",
                "--public-key",
                thor_pub,
                "--address",
                &http,
                "--replace",
            ]),
        ),
    ];
    let https = format!("use https://{}", thor.address());
    for (command, run) in runs {
        assert_eq!(run.code, 2, "{command}:\n{}", run.stderr);
        assert!(
            run.stderr.contains("are for https:// addresses") && run.stderr.contains(&https),
            "{command}:\n{}",
            run.stderr
        );
    }
    // A HOST:PORT address is plain HTTP too.
    keys.run(&["health", &thor.address(), "--tls-ca", "/nonexistent.pem"])
        .assert_code(2)
        .assert_stderr(&["are for https:// addresses"]);
    // Nothing ran on Thor.
    assert!(!thor.log().contains("task executed"), "{}", thor.log());
}

#[test]
fn delegate_and_bench_pin_a_tls_node_with_the_flag() {
    let keys = Keys::new();
    let thor_pub = keys.keygen("Thor");
    keys.keygen("Sprout");
    let tls_dir = keys.path().with_file_name("tls");
    let (cert, key, fingerprint) = self_signed(&keys, &tls_dir, "Thor", &["127.0.0.1"]);
    let thor = serve_tls(&keys, &cert, &key, &[]);
    // Recorded with its https:// address but no trust of its own.
    let https = format!("https://{}", thor.address());
    keys.trust("Thor", &thor_pub, &["--address", &https, "--replace"]);

    keys.delegate(&["--task-type", "echo"])
        .assert_code(1)
        .assert_stderr(&["TLS with https://", "--tls-fingerprint"]);
    keys.delegate(&["--task-type", "echo", "--tls-fingerprint", &fingerprint])
        .assert_code(0)
        .assert_stdout(&["proof signature verified against Thor's known key"]);
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--target",
        "Thor",
        "--requests",
        "3",
        "--concurrency",
        "1",
        "--json",
        "--tls-fingerprint",
        &fingerprint,
    ]);
    run.assert_code(0);
    assert_eq!(run.json()["sage"]["ok"], 3, "{}", run.stdout);
    // The pin is checked: another one fails the handshake.
    keys.delegate(&["--task-type", "echo", "--tls-fingerprint", SOME_FINGERPRINT])
        .assert_code(1)
        .assert_stderr(&["certificate fingerprint mismatch"]);
}

#[test]
fn delegating_to_the_local_node_says_so() {
    let (keys, _thor) = serving_thor();
    for target in ["Sprout", "sprout", "sprout_sage_lct"] {
        let run = keys.run(&delegation_from("Sprout", target, &["--task-type", "echo"]));
        run.assert_code(2).assert_stderr(&[
            "is this node (--local Sprout)",
            "does not delegate to itself",
        ]);
        assert!(!run.stderr.contains("peer add"), "{}", run.stderr);
    }
    let run = keys.run(&[
        "bench",
        "--local",
        "Sprout",
        "--target",
        "Sprout",
        "--requests",
        "1",
    ]);
    run.assert_code(2).assert_stderr(&["is this node"]);
}

#[test]
fn a_known_peer_with_a_new_key_is_caught_before_the_task_is_sent() {
    let fleet = Fleet::new()
        .node("Thor")
        .node("Sprout")
        .trusting_each_other();
    let sprout = fleet.keys("Sprout");
    let old = sprout.peer_record("Thor")["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Thor makes a new key; Sprout still knows the old one.
    let thor_keys = fleet.keys("Thor");
    thor_keys
        .run(&["keygen", "--name", "Thor", "--force"])
        .assert_code(0);
    let new = thor_keys
        .run(&["key", "show", "--name", "Thor", "--json"])
        .json()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(old, new);
    let thor = thor_keys.serve("Thor", &[]);
    let port = thor.port();

    let task_id = "task_reach_new_key";
    let run = sprout.delegate(&["--port", &port, "--task-type", "echo", "--task-id", task_id]);
    run.assert_code(1).assert_stderr(&[
        &old,
        &new,
        "the task was not sent",
        "sage peer add --name Thor --public-key HEX --replace",
    ]);
    let run = sprout.delegate(&["--port", &port, "--task-type", "echo", "--json"]);
    assert_eq!(run.json()["error"]["code"], "other_key");
    assert_eq!(
        thor.executions_of(task_id),
        0,
        "the task ran:\n{}",
        thor.log()
    );

    // health names both keys and the fix, capabilities likewise.
    let run = sprout.run(&["health", &thor.address()]);
    run.assert_code(0)
        .assert_stderr(&["warning: Thor is known with key", &old, &new, "--replace"]);
    let run = sprout.run(&["capabilities", &thor.address()]);
    run.assert_code(1)
        .assert_stderr(&["Thor is known with key", &old, &new, "--replace"]);
    assert!(!run.stderr.contains("add the node with"), "{}", run.stderr);

    // Once re-added, the delegation goes through.
    let public = thor_keys.run(&["key", "show", "--name", "Thor", "--public-only"]);
    sprout.trust("Thor", public.stdout.trim(), &["--replace"]);
    sprout
        .delegate(&["--port", &port, "--task-type", "echo"])
        .assert_code(0);
}

#[test]
fn a_python_node_reached_with_v1_is_named_a_legacy_node() {
    let (keys, _v) = python_keys();
    let sprout = PythonNode::start(&keys, "Sprout");
    let port = sprout.port.to_string();
    let run = keys.run(&delegation_from(
        "Thor",
        "Sprout",
        &["--port", &port, "--task-type", "vision"],
    ));
    run.assert_code(1).assert_stderr(&[
        "is a legacy (Python) node",
        "pass --protocol legacy or set protocol = \"legacy\" in its peer record",
    ]);
    // No 404 page, nor its status: the port itself may hold the digits.
    let said = run.stderr.replace(&format!("127.0.0.1:{port}"), "ADDR");
    assert!(!said.contains("404"), "{}", run.stderr);
    let run = keys.run(&delegation_from(
        "Thor",
        "Sprout",
        &["--port", &port, "--task-type", "vision", "--json"],
    ));
    assert_eq!(run.json()["error"]["code"], "legacy_node");
    // With the flag it is the delegation it should be.
    keys.run(&delegation_from(
        "Thor",
        "Sprout",
        &[
            "--port",
            &port,
            "--task-type",
            "vision",
            "--protocol",
            "legacy",
        ],
    ))
    .assert_code(0);
}

#[test]
fn plain_http_to_an_https_only_port_says_use_https() {
    let keys = Keys::new();
    keys.keygen("Thor");
    keys.keygen("Sprout");
    let tls_dir = keys.path().with_file_name("tls");
    let (cert, key, _) = self_signed(&keys, &tls_dir, "Thor", &["127.0.0.1"]);
    let thor = serve_tls(&keys, &cert, &key, &[]);
    let https = format!("use https://{}", thor.address());

    let run = keys.run(&["health", &thor.address()]);
    run.assert_code(1)
        .assert_stderr(&["speaks HTTPS only, not plain HTTP", &https]);
    assert!(!run.stderr.contains("troubleshooting"), "{}", run.stderr);
    let run = keys.run(&["health", &thor.address(), "--json"]);
    assert_eq!(run.json()["error"]["code"], "speaks_tls");
    let run = keys.delegate(&["--port", &thor.port(), "--task-type", "echo"]);
    run.assert_code(1)
        .assert_stderr(&["speaks HTTPS only, not plain HTTP", &https]);
}

#[test]
fn hints_name_the_port_that_was_tried() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let port = closed_port().to_string();
    let ufw = format!("ufw allow {port}/tcp");
    let run = keys.run(&["health", &format!("127.0.0.1:{port}")]);
    run.assert_code(1)
        .assert_stderr(&["troubleshooting", &ufw, &format!("--port {port}")]);
    assert!(!run.stderr.contains("50051"), "{}", run.stderr);
    let run = keys.delegate(&["--port", &port, "--task-type", "echo"]);
    run.assert_code(1).assert_stderr(&["cannot reach", &ufw]);
    assert!(!run.stderr.contains("50051"), "{}", run.stderr);
}

#[test]
fn a_missing_key_directory_is_named_not_filled() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    let typo = keys.path().with_file_name("kyes");
    let run = Run::from(
        util::sage()
            .arg("--keys-dir")
            .arg(&typo)
            .args(delegation(&["--port", "1", "--task-type", "echo"]))
            .output()
            .unwrap(),
    );
    run.assert_code(1).assert_stderr(&[
        &format!("the key directory {} does not exist", typo.display()),
        "--keys-dir",
    ]);
    assert!(!run.stderr.contains("sage keygen"), "{}", run.stderr);
    assert!(!typo.exists());
    // In a directory that exists, a missing key still gets keygen.
    keys.run(&delegation_from("Nova", "Thor", &[]))
        .assert_code(1)
        .assert_stderr(&["sage keygen --name Nova"]);
}

#[test]
fn every_command_that_reaches_a_node_takes_one_timeout_flag_with_units() {
    let keys = Keys::with(&["Thor", "Sprout"]);
    // A node that accepts and never answers.
    let mute = util::FakeNode::start(|_, _, _| None);
    let address = mute.addr.to_string();
    let thor_pub = keys.key("Thor").public().to_hex();
    keys.run(&[
        "peer",
        "add",
        "--name",
        "Thor",
        "--public-key",
        &thor_pub,
        "--address",
        &address,
        "--replace",
    ])
    .assert_code(0);
    let commands: [Vec<&str>; 4] = [
        vec!["health", &address],
        vec!["capabilities", &address],
        delegation(&["--task-type", "echo"]),
        vec![
            "bench",
            "--local",
            "Sprout",
            "--target",
            "Thor",
            "--requests",
            "1",
        ],
    ];
    for command in &commands {
        let mut args = command.clone();
        args.extend(["--timeout", "300ms"]);
        let run = keys.run_within(std::time::Duration::from_secs(20), &args);
        run.assert_code(1);
        run.assert_stderr(&["0.3 s"]);
        assert!(!run.stderr.contains("troubleshooting"), "{}", run.stderr);
        for bad in ["0", "soon"] {
            let mut args = command.clone();
            args.extend(["--timeout", bad]);
            keys.run(&args).assert_code(2).assert_stderr(&["--timeout"]);
        }
    }
}
