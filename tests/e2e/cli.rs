//! `sage keygen`, `sage key show`, `sage peer ...`, `sage health` and usage errors.

use std::os::unix::fs::PermissionsExt as _;

use crate::util::{sage, Keys};

// Keys of the legacy vectors (tests/data/legacy-v0.json).
const THOR_SEED: &str = "c6c702b4fd10ebd761c56d27763601fc170a05787cad539fb1b437d0eb2a68ee";
const THOR_PUB: &str = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c";
const SPROUT_PUB: &str = "8202edaa56d72167323fcb9f63e6f55698647a773e2c7d2931c6942c6f88ca05";

#[test]
fn keygen_writes_a_private_key_file_and_never_overwrites_it() {
    let keys = Keys::new();
    let run = keys.run(&["keygen", "--name", "Thor", "--json"]);
    run.assert_code(0);
    let out = run.json();
    let public = out["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public.len(), 64);
    assert_eq!(out["lct_id"], "thor_sage_lct");

    let path = keys.path().join("Thor_ed25519.key");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 64);
    assert_eq!(hex::encode(&bytes[32..]), public);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The private half appears nowhere in the output.
    assert!(!run.stdout.contains(&hex::encode(&bytes[..32])));

    let run = keys.run(&["keygen", "--name", "Thor"]);
    run.assert_code(1);
    run.assert_stderr(&["already exists", "--force"]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    let run = keys.run(&["keygen", "--name", "Thor", "--force"]);
    run.assert_code(0);
    assert_ne!(run.stdout.trim(), public);
}

#[test]
fn key_show_reads_both_file_layouts() {
    let keys = Keys::new();
    let public = keys.keygen("Legion");
    let run = keys.run(&["key", "show", "--name", "legion"]);
    run.assert_code(0);
    run.assert_stdout(&["name:       Legion"]);
    assert!(run.stdout.contains("lct id:     legion_sage_lct"));
    assert!(run.stdout.contains(&public));
    let run = keys.run(&["key", "show", "--name", "Legion", "--public-only"]);
    run.assert_code(0);
    assert_eq!(run.stdout, format!("{public}\n"));

    // The Python original's 32-byte seed file.
    std::fs::write(
        keys.path().join("Thor_ed25519.key"),
        hex::decode(THOR_SEED).unwrap(),
    )
    .unwrap();
    let run = keys.run(&["key", "show", "--name", "Thor", "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["public_key"], THOR_PUB);
}

#[test]
fn custom_lct_ids_are_kept() {
    let keys = Keys::new();
    let run = keys.run(&[
        "keygen",
        "--name",
        "Legion",
        "--lct",
        "legion_rtx4090_lct",
        "--json",
    ]);
    run.assert_code(0);
    let run = keys.run(&["key", "show", "--name", "Legion", "--json"]);
    assert_eq!(run.json()["lct_id"], "legion_rtx4090_lct");
}

#[test]
fn corrupt_and_unreadable_key_files_are_refused_with_the_fix() {
    let keys = Keys::with(&["Thor"]);
    let path = keys.path().join("Thor_ed25519.key");

    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let run = keys.run(&["key", "show", "--name", "Thor"]);
    run.assert_code(1);
    run.assert_stderr(&[
        "Thor_ed25519.key",
        "64 bytes",
        "does not belong to its seed",
        "sage keygen --name Thor --force",
    ]);

    std::fs::write(&path, b"hello").unwrap();
    let run = keys.run(&["serve", "--name", "Thor", "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&["(5 bytes) is corrupt", "32 bytes (seed) or 64 bytes"]);

    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let run = keys.run(&["key", "show", "--name", "Thor"]);
    run.assert_code(1);
    run.assert_stderr(&["Thor_ed25519.key is a directory, not a regular file"]);

    let run = keys.run(&["key", "show", "--name", "Sprout"]);
    run.assert_code(1);
    run.assert_stderr(&["sage keygen --name Sprout"]);
}

/// `mkfifo PATH`.
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn key_files_that_are_not_regular_files_are_refused_before_they_are_read() {
    let keys = Keys::with(&["Thor"]);
    let legion = keys.path().join("Legion_ed25519.key");
    let within = std::time::Duration::from_secs(20);

    // A peer's key file that is a FIFO: nobody writes to it, so a read
    // would wait forever.
    mkfifo(&legion);
    let run = keys.run_within(within, &["serve", "--name", "Thor", "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&[&format!(
        "sage: key file {} is a FIFO (named pipe), not a regular file",
        legion.display()
    )]);
    assert!(!run.stderr.contains("chmod"), "{}", run.stderr);
    std::fs::remove_file(&legion).unwrap();

    // A link to an endless device.
    std::os::unix::fs::symlink("/dev/zero", &legion).unwrap();
    let run = keys.run_within(within, &["serve", "--name", "Thor", "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&[&format!(
        "sage: key file {} is a character device, not a regular file",
        legion.display()
    )]);
    let run = keys.run_within(within, &["peer", "list"]);
    run.assert_code(1);
    run.assert_stderr(&["Legion_ed25519.key is a character device"]);
    std::fs::remove_file(&legion).unwrap();

    // A file far larger than a key.
    std::fs::File::create(&legion)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let run = keys.run_within(within, &["key", "show", "--name", "Legion"]);
    run.assert_code(1);
    run.assert_stderr(&[&format!(
        "sage: key file {} is 1073741824 bytes, larger than a key file can be (65536 bytes at most)",
        legion.display()
    )]);
    std::fs::remove_file(&legion).unwrap();

    // The peers file, the same.
    let peers = keys.path().join("peers.toml");
    mkfifo(&peers);
    let run = keys.run_within(within, &["peer", "list"]);
    run.assert_code(1);
    run.assert_stderr(&[&format!(
        "sage: peers file {} is a FIFO (named pipe), not a regular file",
        peers.display()
    )]);
    std::fs::remove_file(&peers).unwrap();
}

#[test]
fn symlinks_to_key_files_are_followed() {
    let keys = Keys::new();
    let vault = Keys::with(&["Thor"]);
    let legion_pub = vault.keygen("Legion");
    std::fs::create_dir_all(keys.path()).unwrap();
    for name in ["Thor", "Legion"] {
        let file = format!("{name}_ed25519.key");
        std::os::unix::fs::symlink(vault.path().join(&file), keys.path().join(&file)).unwrap();
    }
    let node = keys.serve("Thor", &[]);
    assert!(
        node.log().contains("known platform: Legion"),
        "{}",
        node.log()
    );
    // The key file's mode (0600) is what counts, not the link's.
    assert!(!node.log().contains("chmod"), "{}", node.log());
    let run = keys.run(&["key", "show", "--name", "Legion", "--public-only"]);
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), legion_pub);
}

#[test]
fn serve_warns_about_a_key_others_can_read() {
    let keys = Keys::with(&["Thor"]);
    let path = keys.path().join("Thor_ed25519.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = keys.serve("Thor", &[]);
    assert!(
        node.log().contains("has mode 644") && node.log().contains("chmod 600"),
        "{}",
        node.log()
    );
}

#[test]
fn peers_are_added_listed_and_removed() {
    let keys = Keys::new();
    keys.trust("Sprout", SPROUT_PUB, &["--address", "127.0.0.1:50052"]);
    let run = keys.run(&["peer", "list", "--json"]);
    run.assert_code(0);
    let peers = run.json()["peers"].as_array().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["name"], "Sprout");
    assert_eq!(peers[0]["lct_id"], "sprout_sage_lct");
    assert_eq!(peers[0]["public_key"], SPROUT_PUB);
    assert_eq!(peers[0]["address"], "127.0.0.1:50052");
    assert!(peers[0]["sources"][0]
        .as_str()
        .unwrap()
        .contains("peers.toml"));

    // Another key under the same name needs --replace.
    let run = keys.run(&["peer", "add", "--name", "sprout", "--public-key", THOR_PUB]);
    run.assert_code(1);
    run.assert_stderr(&["--replace"]);
    keys.trust("Sprout", THOR_PUB, &["--replace"]);
    assert_eq!(
        keys.run(&["peer", "list", "--json"]).json()["peers"][0]["public_key"],
        THOR_PUB
    );

    // Method 1: another platform's key file is a peer too, and says so
    // (the only key file of a directory is this node's; here are two).
    keys.keygen("Legion");
    keys.keygen("Thor");
    let run = keys.run(&["peer", "list"]);
    run.assert_stdout(&["Legion (legion_sage_lct)", "key file"]);
    assert!(!run.stdout.contains("this node"), "{}", run.stdout);

    keys.run(&["peer", "remove", "--name", "SPROUT"])
        .assert_code(0);
    let run = keys.run(&["peer", "remove", "--name", "Sprout"]);
    run.assert_code(1);
    run.assert_stderr(&["no peer named Sprout"]);
}

#[test]
fn peer_add_refuses_an_lct_id_another_peer_claims_as_serve_does() {
    let keys = Keys::with(&["Thor"]);
    let legion_pub = keys.keygen("Legion");
    let add = |name: &str, key: &str, lct: &str| {
        keys.run(&[
            "peer",
            "add",
            "--name",
            name,
            "--public-key",
            key,
            "--lct",
            lct,
        ])
    };
    add("Sprout", SPROUT_PUB, "sprout_sage_lct").assert_code(0);
    let peers = keys.path().join("peers.toml");
    let before = std::fs::read(&peers).unwrap();

    let claimed = "LCT id sprout_sage_lct is claimed by both Sprout and Sprout2";
    let run = add("Sprout2", THOR_PUB, "sprout_sage_lct");
    run.assert_code(1);
    run.assert_stderr(&[&format!("sage: {claimed}")]);
    // A key file's platform counts too (serve takes key files after the
    // records, hence the order).
    let run = add("Sprout2", THOR_PUB, "legion_sage_lct");
    run.assert_code(1);
    run.assert_stderr(&["LCT id legion_sage_lct is claimed by both Sprout2 and Legion"]);
    // So does a key another platform holds.
    let run = add("Sprout2", &legion_pub, "sprout2_sage_lct");
    run.assert_code(1);
    run.assert_stderr(&["is claimed by both Sprout2 and Legion"]);
    assert_eq!(
        std::fs::read(&peers).unwrap(),
        before,
        "the peers file changed"
    );

    // Re-adding the same peer, and changing its own LCT id, are no claims
    // of another's.
    add("Sprout", SPROUT_PUB, "sprout_sage_lct").assert_code(0);
    add("Sprout", SPROUT_PUB, "sprout_lab_lct").assert_code(0);
    add("Sprout2", THOR_PUB, "sprout_sage_lct").assert_code(0);

    // `serve` refuses the same conflict, written by hand, in the same words.
    let text = std::fs::read_to_string(&peers).unwrap();
    std::fs::write(&peers, text.replace("sprout_lab_lct", "sprout_sage_lct")).unwrap();
    let run = keys.run_within(
        std::time::Duration::from_secs(30),
        &["serve", "--name", "Thor", "--port", "0"],
    );
    run.assert_code(1);
    run.assert_stderr(&[&format!("sage: {claimed}")]);
}

#[test]
fn lct_ids_outside_the_rules_are_refused_by_peer_add_keygen_and_serve() {
    let keys = Keys::with(&["Thor"]);
    keys.trust("Sprout", SPROUT_PUB, &[]);
    let peers = keys.path().join("peers.toml");
    let before = std::fs::read(&peers).unwrap();
    // "thor_sage_lct" with a Cyrillic о (U+043E) for the o.
    let lookalike = "th\u{43e}r_sage_lct";
    let rule = "invalid LCT id \"th\\u{43e}r_sage_lct\": it holds U+043E; \
                an LCT id is 1 to 128 ASCII letters, digits, '-' or '_'";

    let exact = format!("sage: {rule}");
    let cases: [(&str, &[&str]); 4] = [
        (lookalike, &[&exact]),
        (
            "",
            &["invalid LCT id", "an LCT id is 1 to 128 ASCII letters"],
        ),
        (
            "legion.lct",
            &["invalid LCT id", "an LCT id is 1 to 128 ASCII letters"],
        ),
        (
            "legion lct",
            &["invalid LCT id", "an LCT id is 1 to 128 ASCII letters"],
        ),
    ];
    for (lct, stderr) in cases {
        let run = keys.run(&[
            "peer",
            "add",
            "--name",
            "Legion",
            "--public-key",
            THOR_PUB,
            "--lct",
            lct,
        ]);
        run.assert_code(2);
        run.assert_stderr(stderr);
    }
    assert_eq!(
        std::fs::read(&peers).unwrap(),
        before,
        "the peers file changed"
    );

    let run = keys.run(&["keygen", "--name", "Legion", "--lct", lookalike]);
    run.assert_code(1);
    run.assert_stderr(&[&format!("sage: {rule}")]);
    assert!(!keys.path().join("Legion_ed25519.key").exists());

    // The same id written into the peers file by hand stops `serve` with
    // the same words, naming the file and the record.
    let text = std::fs::read_to_string(&peers).unwrap();
    std::fs::write(&peers, text.replace("sprout_sage_lct", lookalike)).unwrap();
    let run = keys.run(&["serve", "--name", "Thor", "--port", "0"]);
    run.assert_code(1);
    run.assert_stderr(&[&format!(
        "sage: {}: platform Sprout: {rule}",
        peers.display()
    )]);
}

#[test]
fn bad_arguments_exit_2() {
    let keys = Keys::new();
    keys.run(&["peer", "add", "--name", "Sprout", "--public-key", "abcd"])
        .assert_code(2);
    keys.run(&[
        "peer",
        "add",
        "--name",
        "../etc",
        "--public-key",
        SPROUT_PUB,
    ])
    .assert_code(2);
    keys.run(&[
        "delegate",
        "--local",
        "a",
        "--target",
        "b",
        "--input",
        "{not json",
    ])
    .assert_code(2);
    keys.run(&[
        "delegate",
        "--local",
        "a",
        "--target",
        "b",
        "--timeout",
        "-1",
    ])
    .assert_code(2);
    keys.run(&["frobnicate"]).assert_code(2);
    let out = sage().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes: 0 success, 1"));
}

#[test]
fn health_reports_a_running_node() {
    let keys = Keys::new();
    let public = keys.keygen("Thor");
    let node = keys.serve("Thor", &[]);
    let run = keys.run(&["health", &node.address(), "--json"]);
    run.assert_code(0);
    let out = run.json();
    assert_eq!(out["healthy"], true);
    assert_eq!(out["health"]["platform"], "Thor");
    assert_eq!(out["health"]["lct_id"], "thor_sage_lct");
    assert_eq!(out["health"]["public_key"], public);
    assert!(out["rtt_ms"].as_f64().unwrap() > 0.0);
    let run = keys.run(&["health", &format!("http://{}", node.address())]);
    run.assert_code(0);
    run.assert_stdout(&["Thor (thor_sage_lct)", "healthy"]);
}

#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    // Enough peers that `peer list` fills the pipe before the reader is
    // gone, so the write fails with EPIPE (as `sage peer list | head -1`).
    let keys = Keys::new();
    std::fs::create_dir_all(keys.path()).unwrap();
    let mut toml = String::new();
    for i in 0..3000 {
        let public = sage_crypto::NodeKey::generate().public().to_hex();
        toml.push_str(&format!(
            "[[peer]]\nname = \"Peer{i}\"\nlct_id = \"peer{i}_sage_lct\"\npublic_key = \"{public}\"\n\n"
        ));
    }
    std::fs::write(keys.path().join("peers.toml"), toml).unwrap();
    let mut child = sage()
        .arg("--keys-dir")
        .arg(keys.path())
        .args(["peer", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // 128 + SIGPIPE, as a shell reports a filter cut off by `head`.
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}
