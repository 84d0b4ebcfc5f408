//! TLS with the real binary: `sage tls self-signed`, `sage serve
//! --tls-cert`, and delegations to an `https://` peer pinned by
//! fingerprint or trusted through its certificate as a CA.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::{self, Keys, Node};

/// `sage tls self-signed --name NAME --san 127.0.0.1` in `dir`: the
/// certificate, the key and the fingerprint printed.
pub fn self_signed(
    keys: &Keys,
    dir: &Path,
    name: &str,
    sans: &[&str],
) -> (PathBuf, PathBuf, String) {
    let mut args = vec![
        "tls",
        "self-signed",
        "--name",
        name,
        "--out-dir",
        dir.to_str().unwrap(),
    ];
    for san in sans {
        args.extend(["--san", san]);
    }
    let run = keys.run(&args);
    run.assert_code(0);
    let fingerprint = run.stdout.trim().to_owned();
    assert!(
        fingerprint.starts_with("sha256:") && fingerprint.len() == 71,
        "{fingerprint}"
    );
    run.assert_stderr(&[
        "sage serve --tls-cert",
        &format!("--tls-fingerprint {fingerprint}"),
    ]);
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        fingerprint,
    )
}

pub fn serve_tls(keys: &Keys, cert: &Path, key: &Path, extra: &[&str]) -> Node {
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    keys.serve("Thor", &args)
}

/// Records Thor at `https://ADDR` with `tls` flags (replacing the record).
fn add_thor(keys: &Keys, thor_pub: &str, node: &Node, tls: &[&str]) {
    let address = format!("https://{}", node.address());
    let mut args = vec![
        "peer",
        "add",
        "--name",
        "Thor",
        "--public-key",
        thor_pub,
        "--address",
        &address,
        "--replace",
    ];
    args.extend_from_slice(tls);
    keys.run(&args).assert_code(0);
}

fn delegate(keys: &Keys) -> util::Run {
    keys.delegate(&[
        "--task-type",
        "echo",
        "--input",
        r#"{"secret": "only for Thor"}"#,
    ])
}

#[test]
fn delegation_over_https_to_a_pinned_self_signed_node() {
    let keys = Keys::new();
    let thor_pub = keys.keygen("Thor");
    keys.keygen("Sprout");
    let tls_dir = keys.path().with_file_name("tls");
    let (cert, key, fingerprint) = self_signed(&keys, &tls_dir, "Thor", &["127.0.0.1"]);

    // The key is private; the files are not overwritten without --force.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let again = keys.run(&[
        "tls",
        "self-signed",
        "--name",
        "Thor",
        "--out-dir",
        tls_dir.to_str().unwrap(),
    ]);
    again.assert_code(1).assert_stderr(&["Thor.crt", "--force"]);
    let run = keys.run(&["tls", "fingerprint", cert.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), fingerprint, "the files were kept");

    let thor = serve_tls(&keys, &cert, &key, &[]);
    assert!(thor.wait_for_log("listening on https://"), "{}", thor.log());
    assert!(thor.log().contains(&fingerprint), "{}", thor.log());

    // Pinned by fingerprint: the delegation succeeds and verifies.
    add_thor(
        &keys,
        &thor_pub,
        &thor,
        &["--tls-fingerprint", &fingerprint],
    );
    let run = delegate(&keys);
    run.assert_code(0)
        .assert_stdout(&["proof signature verified against Thor's known key"]);
    // --host/--port keep the recorded https:// scheme and its pin.
    let run = keys.delegate(&[
        "--host",
        "127.0.0.1",
        "--port",
        &thor.port(),
        "--task-type",
        "echo",
    ]);
    run.assert_code(0)
        .assert_stdout(&["proof signature verified against Thor's known key"]);

    // Another pin: refused at the handshake, naming both fingerprints.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    add_thor(&keys, &thor_pub, &thor, &["--tls-fingerprint", &wrong]);
    delegate(&keys).assert_code(1).assert_stderr(&[
        "TLS with https://",
        "certificate fingerprint mismatch",
        &fingerprint,
        &wrong,
    ]);

    // The certificate as its own CA: the address's IP is its SAN.
    add_thor(
        &keys,
        &thor_pub,
        &thor,
        &["--tls-ca", cert.to_str().unwrap()],
    );
    delegate(&keys).assert_code(0);
    let thor_record = keys.peer_record("Thor");
    assert!(thor_record["tls"]["ca"]
        .as_str()
        .unwrap()
        .ends_with("Thor.crt"));

    // `sage health`: the peer record's trust for its address, or flags.
    let https = format!("https://{}", thor.address());
    keys.run(&["health", &https]).assert_code(0);
    let stranger = Keys::new();
    stranger
        .run(&["health", &https])
        .assert_code(1)
        .assert_stderr(&["TLS with", "not issued by a trusted CA"]);
    stranger
        .run(&["health", &https, "--tls-fingerprint", &fingerprint])
        .assert_code(0);
    stranger
        .run(&["health", &https, "--tls-fingerprint", &wrong])
        .assert_code(1)
        .assert_stderr(&["fingerprint mismatch"]);
    // A CA whose certificate does not name the host asked for.
    stranger
        .run(&[
            "health",
            &format!("https://localhost:{}", thor.port()),
            "--tls-ca",
            cert.to_str().unwrap(),
        ])
        .assert_code(1)
        .assert_stderr(&["not valid for name \"localhost\""]);

    // Plain HTTP to the TLS port: told to use https://.
    stranger
        .run(&["health", &thor.address()])
        .assert_code(1)
        .assert_stderr(&["HTTPS only", "https://"]);
    // Unless the address, typed without a scheme, is a known peer's: its
    // record's https:// and pin apply.
    keys.run(&["health", &thor.address()])
        .assert_code(0)
        .assert_stdout(&[&format!("at https://127.0.0.1:{}", thor.port())]);
    keys.run(&["health", &format!("http://{}", thor.address())])
        .assert_code(1)
        .assert_stderr(&["HTTPS only"]);
    let answer = util::http(thor.addr, "GET", "/health", b"");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.problem_code(), "malformed");

    // Shuts down like a plain node.
    let (status, log) = thor.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("stopped: all in-flight tasks finished"),
        "{log}"
    );
}

#[test]
fn a_silent_tls_client_is_cut_off_after_the_header_read_timeout() {
    let keys = Keys::with(&["Thor"]);
    let dir = keys.path().with_file_name("tls");
    let (cert, key, _) = self_signed(&keys, &dir, "Thor", &["127.0.0.1"]);
    let config = keys.path().with_file_name("sage.toml");
    std::fs::write(&config, "[limits]\nheader_read_timeout = \"1s\"\n").unwrap();
    let thor = serve_tls(&keys, &cert, &key, &["--config", config.to_str().unwrap()]);
    let mut silent = std::net::TcpStream::connect(thor.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = silent
        .read_to_end(&mut rest)
        .unwrap_or_else(|e| panic!("not closed within 20 s ({e}); log:\n{}", thor.log()));
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(950));
}

#[test]
fn unusable_tls_files_stop_serve_naming_the_file() {
    let keys = Keys::with(&["Thor"]);
    let dir = keys.path().with_file_name("tls");
    let (cert, key, _) = self_signed(&keys, &dir, "Thor", &["127.0.0.1"]);
    let (_, other_key, _) = self_signed(&keys, &dir, "Other", &["127.0.0.1"]);
    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let serve = |cert: &Path, key: &Path| {
        keys.serve_to_end(
            "Thor",
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
        )
    };
    serve(&garbage, &key)
        .assert_code(1)
        .assert_stderr(&["garbage.crt", "not a PEM certificate"]);
    serve(&cert, &other_key)
        .assert_code(1)
        .assert_stderr(&["Other.key", "does not belong to certificate"]);
    serve(&dir.join("missing.crt"), &key)
        .assert_code(1)
        .assert_stderr(&["missing.crt"]);
    keys.run(&[
        "serve",
        "--name",
        "Thor",
        "--tls-cert",
        cert.to_str().unwrap(),
    ])
    .assert_code(2)
    .assert_stderr(&["--tls-key"]);
}

#[test]
fn a_certificate_lifetime_out_of_range_is_refused_and_writes_nothing() {
    let keys = Keys::new();
    let dir = keys.path().with_file_name("tls");
    for days in ["0", "36501", "4000000"] {
        let run = keys.run(&[
            "tls",
            "self-signed",
            "--name",
            "thor",
            "--out-dir",
            dir.to_str().unwrap(),
            "--days",
            days,
        ]);
        run.assert_code(2)
            .assert_stderr(&["--days must be from 1 to 36500"]);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    assert!(!dir.join("thor.key").exists() && !dir.join("thor.crt").exists());
}
