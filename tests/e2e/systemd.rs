//! Running as a systemd service: the unit file passes `systemd-analyze
//! verify`, `sage serve` speaks the notify protocol (ready, watchdog,
//! stopping) to a socket the test binds, and takes its key from
//! `$CREDENTIALS_DIRECTORY`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::util::{http, Keys};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/systemd/sage.service"
);

/// `packaging/systemd/sage.service`, with `ExecStart=` pointing at the
/// binary under test (verify wants it to exist), passes `systemd-analyze
/// verify` without a word about it.
#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let sage = crate::util::sage_path().display();
    let mut rewritten = 0;
    let unit: String = unit
        .lines()
        .map(
            |line| match line.strip_prefix("ExecStart=/usr/local/bin/sage ") {
                Some(args) => {
                    rewritten += 1;
                    format!("ExecStart=\"{sage}\" {args}\n")
                }
                None => format!("{line}\n"),
            },
        )
        .collect();
    assert_eq!(rewritten, 1, "one ExecStart=/usr/local/bin/sage line");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sage.service");
    std::fs::write(&path, unit).unwrap();

    let help = match Command::new("systemd-analyze")
        .args(["verify", "--help"])
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}): install it with `apt-get install systemd` \
             (Debian/Ubuntu package `systemd`) to check packaging/systemd/sage.service"
        ),
    };
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]);
    // systemd >= 250: fail on this unit's problems only, not on those of
    // units it pulls in (network-online.target, ...), which are the host's.
    if help.contains("--recursive-errors") {
        verify.arg("--recursive-errors=no");
    }
    let out = verify
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only lines about this unit count: others are about the host's units.
    let about_ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("sage.service"))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify {} ({}):\n{text}",
        path.display(),
        out.status
    );
}

/// The next message other than `WATCHDOG=1`, and how many of those came first.
fn next_other(rx: &Receiver<String>, within: Duration) -> (Option<String>, usize) {
    let deadline = Instant::now() + within;
    let mut pings = 0;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) if m == "WATCHDOG=1" => pings += 1,
            Ok(m) => return (Some(m), pings),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return (None, pings)
            }
        }
    }
}

#[test]
fn serve_notifies_ready_watchdog_and_stopping() {
    let keys = Keys::with(&["Thor"]);
    // The node's notify socket is the one util.rs binds for readiness.
    let node = keys.serve_with_env(
        "Thor",
        &[],
        // 200 ms: a ping every 100 ms.
        &[("WATCHDOG_USEC", OsStr::new("200000"))],
    );
    let rx = node.notices();

    let ready = node.ready_notice();
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=serving on {}\nMAINPID={}",
            node.addr,
            node.pid()
        )
    );
    // Ready means serving.
    assert_eq!(http(node.addr, "GET", "/health", b"").status, 200);

    let (other, pings) = next_other(rx, Duration::from_millis(1200));
    assert_eq!(other, None, "only watchdog pings while serving");
    assert!(pings >= 5, "{pings} watchdog pings in 1.2 s at 100 ms");

    let (status, log, rx) = node.terminate_keeping_notices();
    assert!(status.success(), "{status}\n{log}");
    let (stopping, _) = next_other(&rx, Duration::from_secs(5));
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"), "log:\n{log}");
    assert!(!log.contains("cannot notify systemd"), "{log}");
}

#[test]
fn serve_without_our_watchdog_pid_does_not_ping() {
    let keys = Keys::with(&["Thor"]);
    let node = keys.serve_with_env(
        "Thor",
        &[],
        &[
            ("WATCHDOG_USEC", OsStr::new("200000")),
            // Meant for another process (pid 1 is never sage here).
            ("WATCHDOG_PID", OsStr::new("1")),
        ],
    );
    let ready = Some(node.ready_notice());
    assert!(ready.is_some_and(|m| m.starts_with("READY=1\n")));
    let (other, pings) = next_other(node.notices(), Duration::from_millis(500));
    assert_eq!((other, pings), (None, 0));
    drop(node);
}

/// `LoadCredential=sage.key:FILE`: the key in `$CREDENTIALS_DIRECTORY`
/// wins over the key directory's, and signs the proofs.
#[test]
fn serve_reads_the_key_from_the_systemd_credential() {
    // Thor's key directory has an old key for Thor, and Sprout's key.
    let thor_keys = Keys::new();
    let old_pub = thor_keys.keygen("Thor");
    let sprout_pub = thor_keys.keygen("Sprout");
    // The credential is another key for Thor, mode 0400 as systemd makes it.
    let source = Keys::new();
    let cred_pub = source.keygen("Thor");
    let creds = tempfile::tempdir().unwrap();
    let cred = creds.path().join("sage.key");
    std::fs::copy(source.path().join("Thor_ed25519.key"), &cred).unwrap();
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o400)).unwrap();

    let thor = thor_keys.serve_with_env(
        "Thor",
        &[],
        &[("CREDENTIALS_DIRECTORY", creds.path().as_os_str())],
    );
    let log = thor.log();
    assert!(
        log.contains("key from:   systemd credential sage.key")
            && log.contains(&format!("public key: {}...", &cred_pub[..16]))
            && !log.contains(&old_pub[..16])
            && !log.contains("group or others can read it"),
        "{log}"
    );

    // Sprout, which knows Thor by the credential's key, gets a verified proof.
    let sprout_keys = Keys::copying(&thor_keys, &["Sprout"]);
    sprout_keys.trust("Thor", &cred_pub, &[]);
    let run = sprout_keys.delegate(&["--port", &thor.port(), "--json"]);
    run.assert_code(0);
    assert_eq!(run.json()["verified"], true);
    assert_ne!(sprout_pub, cred_pub);
}
