//! Inputs larger than a request body: `PUT /v1/blobs/sha256:<hex>` behind a
//! signed grant, tasks that name blobs, `sage delegate --input-file`, and
//! the collection of blobs no task keeps.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use sage_crypto::digest::{sha256_tagged, StreamDigest};
use sage_service::delegator::delegation::{sign_task, TaskSpec};
use sage_service::delegator::upload::{grant, LocalBlob};
use sage_types::{BlobRef, QualityRequirements};

use crate::fixture::delegation;
use crate::util::{assert_refused, http_with, parse_answer, task_ids, HttpAnswer, Keys, Node};

const SPROUT: &str = "sprout_sage_lct";
const THOR: &str = "thor_sage_lct";

/// A `hash` executor whose program hashes its task's first blob, found
/// through `SAGE_BLOBS`, a megabyte at a time.
const HASHING: &str = r#"
[executors.hash]
kind = "command"
command = ["python3", "-c", "import hashlib, json, os; p = json.loads(os.environ['SAGE_BLOBS'])[0]; h = hashlib.sha256(); f = open(p, 'rb'); [h.update(c) for c in iter(lambda: f.read(1 << 20), b'')]; print(json.dumps({'sha256': 'sha256:' + h.hexdigest(), 'path': p}))"]
timeout = "60s"

[executors.echo]
kind = "builtin"
builtin = "echo"
"#;

/// Thor serving `config` (plus `[limits]` lines `limits`); Sprout known.
fn serve(keys: &Keys, config: &str, limits: &str) -> Node {
    keys.keygen("Thor");
    keys.keygen("Sprout");
    let path = keys.path().parent().unwrap().join("sage.toml");
    std::fs::write(&path, format!("[limits]\n{limits}\n{config}")).unwrap();
    keys.serve("Thor", &["--config", path.to_str().unwrap()])
}

fn config_path(keys: &Keys) -> PathBuf {
    keys.path().parent().unwrap().join("sage.toml")
}

fn blob_of(bytes: &[u8]) -> BlobRef {
    BlobRef {
        digest: sha256_tagged(bytes),
        size: bytes.len() as u64,
    }
}

/// Sprout's grant for Thor to take `blob`.
fn sprout_grant(keys: &Keys, blob: &BlobRef) -> String {
    grant(
        &keys.key("Sprout"),
        SPROUT,
        THOR,
        blob,
        Duration::from_secs(60),
    )
}

fn put(node: &Node, blob: &BlobRef, grant: &str, body: &[u8]) -> HttpAnswer {
    let path = format!("/v1/blobs/{}", blob.digest);
    http_with(node.addr, "PUT", &path, &[("sage-blob-grant", grant)], body)
}

/// The files under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// `VmHWM` (peak resident memory) of process `pid`, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes `size` bytes of a pseudo-random sequence to `path`, a chunk at a
/// time; returns their digest.
fn write_random(path: &Path, size: usize) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut digest = StreamDigest::default();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        digest.update(&chunk[..n]);
        left -= n;
    }
    file.flush().unwrap();
    digest.finish_tagged()
}

#[test]
fn a_50_mb_input_file_reaches_the_program_and_neither_side_holds_it_in_memory() {
    const SIZE: usize = 50 * 1024 * 1024;
    let keys = Keys::new();
    let thor = serve(&keys, HASHING, "");
    let input = keys.path().parent().unwrap().join("frame.bin");
    let digest = write_random(&input, SIZE);
    let port = thor.port();
    let args = delegation(&[
        "--port",
        &port,
        "--task-type",
        "hash",
        "--input",
        r#"{"what": "frame"}"#,
        "--input-file",
        input.to_str().unwrap(),
        "--json",
    ]);
    let mut child = keys
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // VmHWM only grows: the last reading before the exit is the peak, near
    // enough (the upload and the wait for the proof come well before).
    let mut cli_peak = 0;
    while child.try_wait().unwrap().is_none() {
        cli_peak = cli_peak.max(peak_kib(child.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let run = crate::util::Run::from(child.wait_with_output().unwrap());
    run.assert_code(0);
    let report = run.json();
    assert_eq!(
        report["proof"]["result"]["sha256"],
        digest.as_str(),
        "{}",
        run.stdout
    );
    assert_eq!(report["task"]["blobs"][0]["digest"], digest.as_str());
    assert_eq!(report["task"]["blobs"][0]["size"], SIZE);
    assert_eq!(
        report["task"]["input"],
        serde_json::json!({"what": "frame"})
    );
    let node_peak = peak_kib(thor.pid()).unwrap();
    println!(
        "50 MiB blob: node peak RSS {} MiB, CLI peak RSS {} MiB",
        node_peak / 1024,
        cli_peak / 1024
    );
    assert!(cli_peak > 0, "the CLI's status was never read");
    assert!(node_peak < 40 * 1024, "node peak RSS {node_peak} KiB");
    assert!(cli_peak < 40 * 1024, "CLI peak RSS {cli_peak} KiB");
    // The blob is kept under its digest; a second delegation sends nothing.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let kept = keys.state_dir().join("blobs/sha256").join(hex);
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), SIZE as u64);
    let again = keys.run(&args);
    again.assert_code(0);
    assert_eq!(again.json()["proof"]["result"]["sha256"], digest.as_str());
    assert!(
        thor.log().matches("blob stored").count() == 1,
        "{}",
        thor.log()
    );
}

#[test]
fn an_upload_whose_bytes_do_not_match_its_digest_is_refused_and_nothing_stays() {
    let keys = Keys::new();
    let thor = serve(&keys, HASHING, "");
    let claimed = blob_of(b"the real frame");
    let answer = put(
        &thor,
        &claimed,
        &sprout_grant(&keys, &claimed),
        b"a forged frame",
    );
    assert_refused(&thor, &answer, 422, "digest_mismatch");
    let blobs = keys.state_dir().join("blobs");
    assert_eq!(files_under(&blobs), Vec::<PathBuf>::new());
    // Longer than the grant says: refused too, nothing kept.
    let short = blob_of(b"abc");
    let answer = http_with(
        thor.addr,
        "PUT",
        &format!("/v1/blobs/{}", short.digest),
        &[("sage-blob-grant", &sprout_grant(&keys, &short))],
        b"abcdef",
    );
    assert_eq!(
        answer.status / 100,
        4,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(files_under(&blobs), Vec::<PathBuf>::new());
    // The right bytes: 201, then HEAD finds it and a second PUT is a 200.
    let good = blob_of(b"the real frame");
    let grant = sprout_grant(&keys, &good);
    assert_eq!(put(&thor, &good, &grant, b"the real frame").status, 201);
    let head = http_with(
        thor.addr,
        "HEAD",
        &format!("/v1/blobs/{}", good.digest),
        &[("sage-blob-grant", &grant)],
        b"",
    );
    assert_eq!(head.status, 200);
    assert_eq!(put(&thor, &good, &grant, b"the real frame").status, 200);
    assert_eq!(files_under(&blobs).len(), 1);
}

/// Sends a PUT head announcing `length` bytes and none of them; the answer
/// read within 10 s, which comes only if the node refuses before reading
/// the body.
fn put_head_only(addr: SocketAddr, digest: &str, grant: Option<&str>, length: u64) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let grant = grant
        .map(|g| format!("sage-blob-grant: {g}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n{grant}Connection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the answer is whole: the node may keep the connection while
    // it waits for a body it will not read.
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer before the body was sent ({e}): {raw:?}"),
        }
        if let Some(answer) = parse_answer(&raw) {
            if answer.body.ends_with(b"}") {
                return answer;
            }
        }
    }
    parse_answer(&raw).expect("an answer")
}

#[test]
fn uploads_without_a_good_grant_are_refused_before_the_body_is_read() {
    let keys = Keys::new();
    let thor = serve(&keys, HASHING, "max_blob_bytes = 1000000");
    let blob = BlobRef {
        digest: sha256_tagged(b"x"),
        size: 500_000,
    };
    let refused =
        |grant: Option<&str>, size: u64| put_head_only(thor.addr, &blob.digest, grant, size);

    // Unsigned.
    assert_refused(&thor, &refused(None, blob.size), 403, "invalid_signature");
    // A key Thor does not know.
    let stranger = Keys::new();
    stranger.keygen("Stranger");
    let unknown = grant(
        &stranger.key("Stranger"),
        "stranger_sage_lct",
        THOR,
        &blob,
        Duration::from_secs(60),
    );
    assert_refused(
        &thor,
        &refused(Some(&unknown), blob.size),
        403,
        "unknown_platform",
    );
    // Sprout's signature over another grant: forged.
    let signed = sprout_grant(&keys, &blob);
    let mut envelope: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&signed)
            .unwrap(),
    )
    .unwrap();
    let bigger = BlobRef {
        size: 900_000,
        ..blob.clone()
    };
    let other: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(sprout_grant(&keys, &bigger))
            .unwrap(),
    )
    .unwrap();
    envelope["payload"] = other["payload"].clone();
    let forged = base64::engine::general_purpose::STANDARD.encode(envelope.to_string());
    assert_refused(
        &thor,
        &refused(Some(&forged), bigger.size),
        403,
        "invalid_signature",
    );
    // For another node.
    let elsewhere = grant(
        &keys.key("Sprout"),
        SPROUT,
        "nano_sage_lct",
        &blob,
        Duration::from_secs(60),
    );
    assert_refused(
        &thor,
        &refused(Some(&elsewhere), blob.size),
        403,
        "wrong_audience",
    );
    // Above max_blob_bytes.
    let huge = BlobRef {
        size: 2_000_000,
        ..blob.clone()
    };
    assert_refused(
        &thor,
        &refused(Some(&sprout_grant(&keys, &huge)), huge.size),
        413,
        "too_large",
    );
    // A Content-Length that is not the grant's size.
    assert_refused(
        &thor,
        &refused(Some(&signed), blob.size + 1),
        400,
        "malformed",
    );
    // A header too large to be a grant.
    let padding = "A".repeat(5000);
    assert_refused(&thor, &refused(Some(&padding), blob.size), 413, "too_large");
    assert_eq!(
        files_under(&keys.state_dir().join("blobs")),
        Vec::<PathBuf>::new()
    );
}

/// A task of `task_type` from Sprout for Thor that names `blobs`.
fn task_naming(
    keys: &Keys,
    task_type: &str,
    blobs: Vec<BlobRef>,
    task_id: Option<String>,
) -> sage_service::delegator::delegation::SignedTask {
    let spec = TaskSpec {
        task_type: task_type.into(),
        input: serde_json::json!({"n": 1}),
        estimated_cost: 1.0,
        quality: QualityRequirements::default(),
        lifetime: Duration::from_secs(60),
        max_cost: None,
        max_latency: Duration::from_secs(30),
        task_id,
        earlier_digests: Vec::new(),
        // Signing reads the refs only: no file behind them.
        blobs: blobs
            .into_iter()
            .map(|blob| LocalBlob {
                path: PathBuf::new(),
                blob,
            })
            .collect(),
        origin: None,
    };
    sign_task(&keys.key("Sprout"), SPROUT, THOR, &spec)
}

fn submit(node: &Node, signed: &sage_service::delegator::delegation::SignedTask) -> HttpAnswer {
    let body = serde_json::to_vec(&signed.envelope).unwrap();
    http_with(node.addr, "POST", "/v1/tasks", &[], &body)
}

#[test]
fn a_task_naming_a_missing_blob_is_refused_and_not_recorded() {
    let keys = Keys::new();
    let thor = serve(&keys, HASHING, "");
    let missing = blob_of(b"never uploaded");
    let signed = task_naming(&keys, "echo", vec![missing.clone()], None);
    let answer = submit(&thor, &signed);
    assert_refused(&thor, &answer, 409, "blob_missing");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap()
        .contains(&missing.digest));
    assert!(!task_ids(&keys.state_dir()).contains(&signed.task.task_id));
    // Uploaded but of another size than the task says: missing too.
    let here = blob_of(b"uploaded");
    assert_eq!(
        put(&thor, &here, &sprout_grant(&keys, &here), b"uploaded").status,
        201
    );
    let wrong = BlobRef {
        size: 3,
        ..here.clone()
    };
    let signed = task_naming(&keys, "echo", vec![wrong], None);
    assert_refused(&thor, &submit(&thor, &signed), 409, "blob_missing");
    assert!(!task_ids(&keys.state_dir()).contains(&signed.task.task_id));
    // Right: echo answers with the refs beside the input.
    let signed = task_naming(&keys, "echo", vec![here.clone()], None);
    let answer = submit(&thor, &signed);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[test]
fn blobs_no_task_names_are_collected_and_named_ones_survive_a_restart() {
    let keys = Keys::new();
    let thor = serve(&keys, HASHING, "unreferenced_blob_ttl = \"1s\"");
    let (named, loose) = (blob_of(b"named by a task"), blob_of(b"named by none"));
    assert_eq!(
        put(
            &thor,
            &named,
            &sprout_grant(&keys, &named),
            b"named by a task"
        )
        .status,
        201
    );
    assert_eq!(
        put(
            &thor,
            &loose,
            &sprout_grant(&keys, &loose),
            b"named by none"
        )
        .status,
        201
    );
    let signed = task_naming(&keys, "hash", vec![named.clone()], None);
    let answer = submit(&thor, &signed);
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    // Killed, as a crash: the next start collects what no task keeps.
    thor.kill_hard();
    std::thread::sleep(Duration::from_millis(2100));
    let thor = keys.serve("Thor", &["--config", config_path(&keys).to_str().unwrap()]);
    let kept: Vec<String> = files_under(&keys.state_dir().join("blobs"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        kept,
        vec![named.hex().unwrap().to_owned()],
        "{}",
        thor.log()
    );
    assert!(thor.log().contains("deleted 1 blob(s)"), "{}", thor.log());
    // The named blob still serves a retry of its task (signed again, same
    // task id): the stored proof.
    let retry = task_naming(
        &keys,
        "hash",
        vec![named.clone()],
        Some(signed.task.task_id.clone()),
    );
    let again = submit(&thor, &retry);
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(thor.executions_of(&signed.task.task_id), 1);
}

#[test]
fn a_routed_delegation_uploads_the_blob_to_the_peer_it_picks() {
    let (fleet, nodes) = crate::route::fleet_of(&[("Thor", HASHING), ("Legion", HASHING)]);
    let sprout = fleet.keys("Sprout");
    let input = sprout.path().with_file_name("frame.bin");
    let digest = write_random(&input, 3 * 1024 * 1024 + 7);
    let path = input.to_str().unwrap();
    let run = sprout.run(&[
        "delegate",
        "--local",
        "Sprout",
        "--task-type",
        "hash",
        "--input-file",
        path,
        "--json",
    ]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(
        report["proof"]["result"]["sha256"],
        digest.as_str(),
        "{}",
        run.stdout
    );
    let ran_on = report["target"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    for (name, node) in ["Thor", "Legion"].iter().zip(&nodes) {
        let kept = fleet
            .keys(name)
            .state_dir()
            .join("blobs/sha256")
            .join(hex)
            .exists();
        assert_eq!(
            kept,
            *name == ran_on,
            "{name} (the task ran on {ran_on}): {}",
            node.log()
        );
    }
    // Not for --via-node, whose node cannot read this command's files.
    let run = sprout.run(&["delegate", "--via-node", "--input-file", path]);
    run.assert_code(2);
    run.assert_stderr(&["--input-file is not for --via-node"]);
}

#[test]
fn a_peer_that_refuses_the_upload_hands_the_task_to_the_next_one() {
    let small = format!("[limits]\nmax_blob_bytes = 1000\n{HASHING}");
    let (fleet, nodes) = crate::route::fleet_of(&[("Thor", &small), ("Legion", HASHING)]);
    let sprout = fleet.keys("Sprout");
    let input = sprout.path().with_file_name("frame.bin");
    let digest = write_random(&input, 4096);
    let path = input.to_str().unwrap();
    // Thor first: its refusal of the upload sent no task, so Legion gets it.
    let run = sprout.run(&[
        "delegate",
        "--local",
        "Sprout",
        "--task-type",
        "hash",
        "--input-file",
        path,
        "--prefer",
        "Thor",
        "--json",
    ]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["target"], "Legion", "{}", run.stdout);
    assert_eq!(report["proof"]["result"]["sha256"], digest.as_str());
    let attempts = report["route"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{}", run.stdout);
    assert_eq!(attempts[0]["peer"], "Thor");
    let outcome = attempts[0]["outcome"].as_str().unwrap();
    assert!(outcome.contains("too_large"), "{outcome}");
    assert_eq!(nodes[0].tasks_recorded(), 0, "{}", nodes[0].log());
}

#[test]
fn an_input_file_that_cannot_be_read_or_go_by_the_legacy_protocol_is_refused_before_anything_is_sent(
) {
    let (fleet, nodes) = crate::route::fleet_of(&[("Thor", HASHING)]);
    let sprout = fleet.keys("Sprout");
    let input = sprout.path().with_file_name("frame.bin");
    write_random(&input, 1024);
    let base = [
        "delegate",
        "--local",
        "Sprout",
        "--target",
        "Thor",
        "--task-type",
        "hash",
    ];
    let missing = sprout.path().with_file_name("no-such-frame.bin");
    let run = sprout.run(&[&base[..], &["--input-file", missing.to_str().unwrap()]].concat());
    run.assert_code(2);
    run.assert_stderr(&["--input-file: cannot read", "no-such-frame.bin"]);
    let run = sprout.run(
        &[
            &base[..],
            &[
                "--input-file",
                input.to_str().unwrap(),
                "--protocol",
                "legacy",
            ],
        ]
        .concat(),
    );
    run.assert_code(2);
    run.assert_stderr(&["--input-file needs the native protocol"]);
    let blobs = fleet.keys("Thor").state_dir().join("blobs/sha256");
    let kept = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "nothing uploaded: {}", nodes[0].log());
}
