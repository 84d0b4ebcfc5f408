//! What a new user meets setting up a node: `serve` needs no `--name` when
//! the key directory holds one key, and says what it found otherwise.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

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
