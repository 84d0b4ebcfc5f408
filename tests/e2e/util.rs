//! Helpers: temporary key directories, `sage` processes, raw HTTP.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sage_crypto::NodeKey;

/// The `sage` binary under test: sage-cli's `target/<profile>/sage`,
/// beside the `deps/` directory that holds this test executable, brought up
/// to date once per run.
///
/// Cargo sets `CARGO_BIN_EXE_sage`, and builds a binary before the
/// integration tests, only for the tests of the package that owns the
/// binary; this package is not that one, so `cargo test` alone would leave
/// a missing or stale `sage`. The first call therefore runs
/// `$CARGO build --workspace --bins --examples` in the same target
/// directory and profile: `--examples` makes cargo resolve features with
/// the dev-dependencies, as `cargo test --workspace` does, so the build
/// reuses the test build's libraries and only links `sage` when it is stale.
pub fn sage_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in target/<profile>/deps/");
        build_sage(profile_dir);
        let path = profile_dir.join(format!("sage{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.is_file(),
            "no sage binary at {} after building it: the e2e tests run sage-cli's \
             target/<profile>/sage, beside the deps/ directory of the test executable {}",
            path.display(),
            exe.display()
        );
        path
    })
}

/// Runs cargo to build the workspace's binaries into `profile_dir`
/// (`target/debug`, `target/release`, `target/<triple>/<profile>`).
fn build_sage(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let name = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .expect("a profile directory name");
    let profile = match name {
        "debug" => "dev",
        "release" => "release",
        other => other,
    };
    let parent = profile_dir.parent().expect("a target directory");
    let mut build = Command::new(&cargo);
    // Without the variables cargo sets for this test (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...): build scripts that watch them would see a
    // change and rebuild, back and forth with the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_tests = key.starts_with("CARGO_PKG_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_for_tests {
            build.env_remove(&*key);
        }
    }
    build.args([
        "build",
        "--workspace",
        "--bins",
        "--examples",
        "--profile",
        profile,
    ]);
    // target/<triple>/<profile> when the tests were built with --target.
    let target_dir =
        if parent.join(".rustc_info.json").is_file() || parent.join("CACHEDIR.TAG").is_file() {
            parent
        } else {
            let triple = parent
                .file_name()
                .and_then(OsStr::to_str)
                .unwrap_or_default();
            build.args(["--target", triple]);
            parent.parent().expect("a target directory")
        };
    let out = build
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} to build sage: {e}", cargo.to_string_lossy()));
    assert!(
        out.status.success(),
        "{} build --workspace --bins (to build the sage binary under test) failed:\n{}",
        cargo.to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// The `sage` binary under test.
pub fn sage() -> Command {
    let mut cmd = Command::new(sage_path());
    cmd.env_remove("SAGE_KEYS_DIR")
        .env_remove("STATE_DIRECTORY")
        // The runner's own systemd settings, if any; tests pass their own.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("SAGE_LOG", "info");
    // Never the working directory's ./state: each test passes its own.
    cmd.env(
        "SAGE_STATE_DIR",
        std::env::temp_dir().join("sage-e2e-unused-state"),
    );
    cmd
}

/// What a finished `sage` command printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Parses stdout as the one JSON object of `--json`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Checks that stderr contains every one of `parts`.
    #[track_caller]
    pub fn assert_stderr(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(
                self.stderr.contains(part),
                "stderr lacks {part:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    /// Checks that stdout contains every one of `parts`.
    #[track_caller]
    pub fn assert_stdout(&self, parts: &[&str]) -> &Self {
        for part in parts {
            assert!(
                self.stdout.contains(part),
                "stdout lacks {part:?}:\n{}",
                self.stdout
            );
        }
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} where {code} was expected\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A temporary key directory.
pub struct Keys {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl Keys {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let path = tmp.path().join("keys");
        Keys { _tmp: tmp, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state directory that goes with the key directory.
    pub fn state_dir(&self) -> PathBuf {
        self.path.with_file_name("state")
    }

    /// `sage --keys-dir DIR ARGS...` with this directory's state
    /// directory and no standard input.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = sage();
        command
            .env("SAGE_STATE_DIR", self.state_dir())
            .arg("--keys-dir")
            .arg(&self.path)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Runs `sage --keys-dir DIR ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run sage"))
    }

    /// [`Keys::run`], failing the test if the command is not done within
    /// `limit` (it is killed then): for a command that must not hang.
    #[track_caller]
    pub fn run_within(&self, limit: Duration, args: &[&str]) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sage");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let run = Run::from(child.wait_with_output().expect("wait"));
                panic!(
                    "sage {args:?} still ran after {limit:?}\nstderr:\n{}",
                    run.stderr
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Run::from(child.wait_with_output().expect("wait"))
    }

    /// `sage delegate --local Sprout --target Thor ARGS...`: the delegation
    /// most tests make.
    pub fn delegate(&self, args: &[&str]) -> Run {
        self.run(&crate::fixture::delegation(args))
    }

    /// `sage proofs export` to a file beside the key directory, then
    /// `sage proofs verify` of it, which must find `receipts` receipts and
    /// all of them valid; the export's path.
    pub fn export_and_verify(&self, receipts: usize) -> PathBuf {
        let export = self.path().with_file_name("receipts.jsonl");
        self.run(&["proofs", "export", "--out", export.to_str().unwrap()])
            .assert_code(0);
        let run = self.run(&["proofs", "verify", export.to_str().unwrap()]);
        run.assert_code(0);
        run.assert_stdout(&[&format!("all {receipts} receipts verify")]);
        export
    }

    /// `sage keygen --name NAME`; the public key hex.
    pub fn keygen(&self, name: &str) -> String {
        let run = self.run(&["keygen", "--name", name]);
        run.assert_code(0);
        run.stdout.trim().to_owned()
    }

    /// The private key of `name`, read the way the node reads it.
    pub fn key(&self, name: &str) -> Arc<NodeKey> {
        sage_service::keydir::KeyDir::new(&self.path)
            .load_identity(name)
            .expect("load key")
            .key
    }

    /// Starts `sage serve --name NAME` on a free loopback port.
    pub fn serve(&self, name: &str, extra: &[&str]) -> Node {
        Node::start(&self.path, &self.state_dir(), name, extra, &[])
    }

    /// [`Keys::serve`] with extra environment variables (systemd's
    /// `WATCHDOG_USEC`, `CREDENTIALS_DIRECTORY`; `NOTIFY_SOCKET` is always
    /// the one [`Node`] binds, see [`Node::notices`]).
    pub fn serve_with_env(&self, name: &str, extra: &[&str], env: &[(&str, &OsStr)]) -> Node {
        Node::start(&self.path, &self.state_dir(), name, extra, env)
    }
}

/// `serve --name NAME` on a free loopback port.
pub fn serve_args(name: &str) -> [&str; 7] {
    [
        "serve",
        "--name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
}

/// A running `sage serve`; killed when dropped.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    state: PathBuf,
    /// What the node sent to its notify socket after `READY=1`.
    notices: Receiver<String>,
    /// The `READY=1` notification that said the node is serving.
    ready: String,
}

/// Tells the notify sockets of the nodes of one test run apart.
static NOTIFY_SOCKETS: AtomicUsize = AtomicUsize::new(0);

impl Node {
    /// Starts `sage serve --name NAME` on the key directory and returns
    /// once it is serving (see [`Node::spawn`]). A `NOTIFY_SOCKET` in `env`
    /// is overridden.
    fn start(
        keys: &Path,
        state: &Path,
        name: &str,
        extra: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Node {
        let mut command = sage();
        command
            .envs(env.iter().copied())
            .arg("--keys-dir")
            .arg(keys)
            .args(serve_args(name))
            .args(extra);
        Node::spawn(command, &keys.with_file_name("notify"), state)
    }

    /// Starts `command`, a `sage serve` with its own arguments, on the state
    /// directory `state`, and returns once it is serving.
    ///
    /// Readiness is the node's own `READY=1`, sent to the notify socket
    /// (`NOTIFY_SOCKET`) bound here at `socket_stem-N`, whose
    /// `STATUS=serving on ADDR` names the bound address (with or without
    /// TLS).
    pub fn spawn(mut command: Command, socket_stem: &Path, state: &Path) -> Node {
        let socket_path = socket_stem.with_file_name(format!(
            "{}-{}",
            socket_stem.file_name().unwrap().to_string_lossy(),
            NOTIFY_SOCKETS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        let (notices_tx, notices) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let notice = String::from_utf8_lossy(&buf[..n]).into_owned();
                if notices_tx.send(notice).is_err() {
                    return;
                }
            }
        });
        let mut child = command
            .env("SAGE_STATE_DIR", state)
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sage serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut node = Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            state: state.to_owned(),
            notices,
            ready: String::new(),
        };
        (node.addr, node.ready) = node.wait_ready(Duration::from_secs(30));
        node
    }

    /// Waits for `READY=1` and its `STATUS=serving on ADDR`; fails the
    /// test with the log if the node exits first or is not ready in time.
    fn wait_ready(&mut self, within: Duration) -> (SocketAddr, String) {
        let deadline = Instant::now() + within;
        let (notice, addr) = loop {
            match self.notices.recv_timeout(Duration::from_millis(20)) {
                Ok(notice) => {
                    let addr: Option<SocketAddr> = notice
                        .lines()
                        .find_map(|line| line.strip_prefix("STATUS=serving on "))
                        .and_then(|addr| addr.parse().ok());
                    if let (true, Some(addr)) = (notice.starts_with("READY=1\n"), addr) {
                        break (notice, addr);
                    }
                }
                Err(_) => {
                    if let Some(status) = self.child.try_wait().expect("wait") {
                        // Let the reader thread drain the last lines.
                        std::thread::sleep(Duration::from_millis(50));
                        panic!(
                            "sage serve exited ({status}) before it was ready; log:\n{}",
                            self.log()
                        );
                    }
                    if Instant::now() > deadline {
                        let _ = self.child.kill();
                        panic!(
                            "sage serve was not ready within {within:?}; log:\n{}",
                            self.log()
                        );
                    }
                }
            }
        };
        // The start-up log is whole when the line naming the address, logged
        // just before READY=1, has come through the pipe: tests read it.
        let bound = addr.to_string();
        while !self.log().contains(&bound) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        (addr, notice)
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The process id (systemd's `MAINPID`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The `READY=1` notification (`READY=1\nSTATUS=...\nMAINPID=...`).
    pub fn ready_notice(&self) -> &str {
        &self.ready
    }

    /// The notifications sent after [`Node::ready_notice`] (watchdog
    /// pings, `STOPPING=1`, ...), as they arrive.
    pub fn notices(&self) -> &Receiver<String> {
        &self.notices
    }

    /// How many times the node ran `task_id`: its rows in the store's
    /// `tasks` table. The node records a task (`running`) before its
    /// executor starts and runs only a task it could record, and a retry or
    /// a replay finds the row and runs nothing; so the rows are the runs,
    /// whatever the log says.
    pub fn executions_of(&self, task_id: &str) -> usize {
        self.count_tasks("WHERE task_id = ?1", &[task_id])
    }

    /// How many tasks the node has recorded, of any id: what it has run
    /// or is running.
    pub fn tasks_recorded(&self) -> usize {
        self.count_tasks("", &[])
    }

    /// The rows of the node's `tasks` table that `filter` (a `WHERE`
    /// clause, or nothing) selects, read-only.
    fn count_tasks(&self, filter: &str, params: &[&str]) -> usize {
        let (conn, db) = tasks_db(&self.state);
        let count: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM tasks {filter}"),
                rusqlite::params_from_iter(params),
                |row| row.get(0),
            )
            .unwrap_or_else(|e| panic!("count the runs in {}: {e}", db.display()));
        usize::try_from(count).expect("a count")
    }

    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the node with SIGKILL, as a power cut or the OOM killer would.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(self) -> (ExitStatus, String) {
        let (status, log, _) = self.terminate_keeping_notices();
        (status, log)
    }

    /// [`Node::terminate`], with the notifications not read yet (the last
    /// is `STOPPING=1`).
    pub fn terminate_keeping_notices(mut self) -> (ExitStatus, String, Receiver<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader thread drain the last lines.
                std::thread::sleep(Duration::from_millis(50));
                let notices = std::mem::replace(&mut self.notices, std::sync::mpsc::channel().1);
                return (status, self.log(), notices);
            }
            assert!(
                Instant::now() < deadline,
                "sage serve ignored SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The problem code of a refusal, after checking the media type.
    #[track_caller]
    pub fn problem_code(&self) -> String {
        assert!(
            self.headers
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "not a problem+json answer: {}\n{}",
            self.headers,
            String::from_utf8_lossy(&self.body)
        );
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends one raw HTTP/1.1 request, as any client (or attacker) could, and
/// reads the answer until the server closes the connection.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpAnswer {
    http_with(addr, method, path, &[], body)
}

/// [`http`] with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    let raw = exchange(addr, method, path, headers, body).expect("connect");
    parse_answer(&raw)
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)))
}

/// [`http`] to a server that may be gone or die mid-answer: `None` unless
/// a whole answer came back (all the bytes its `Content-Length` says).
pub fn try_http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<HttpAnswer> {
    let answer = parse_answer(&exchange(addr, method, path, &[], body).ok()?)?;
    let length = answer.headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    (length == Some(answer.body.len())).then_some(answer)
}

/// Writes one request and reads until the server closes the connection.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    // A server may refuse before reading the whole body; that is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    Ok(raw)
}

pub fn parse_answer(raw: &[u8]) -> Option<HttpAnswer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let mut body = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// A hand-made HTTP server that answers with `respond(method, path, body)`:
/// it plays a node that misbehaves (a forger, an impostor, a mute, a
/// flood).
pub struct FakeNode {
    pub addr: SocketAddr,
    /// The body bytes each [`Reply::Flood`] wrote before it ended.
    floods: Arc<Mutex<Vec<u64>>>,
}

/// How a [`FakeNode`] answers one request.
pub enum Reply {
    /// This status and JSON body.
    Json(u16, Vec<u8>),
    /// `200` and `total` bytes of spaces, written 64 KiB at a time until
    /// the client hangs up, announced by their `Content-Length` or, without
    /// `announce`, chunked with no length.
    Flood { total: u64, announce: bool },
    /// No answer: the connection is held open.
    Mute,
    /// This status and JSON body with `Retry-After: SECS`.
    RetryAfter(u16, Vec<u8>, u64),
    /// `200` and a chunked body of `content_type`: each piece as it is
    /// received from `pieces` (a piece per chunk, written at once); when
    /// the sender is dropped, the body's end, or with `cut`, the
    /// connection closed before it.
    Stream {
        content_type: &'static str,
        pieces: std::sync::mpsc::Receiver<Vec<u8>>,
        cut: bool,
    },
}

impl FakeNode {
    /// A fake whose `respond` gives a status and body, or `None` to stay mute.
    pub fn start<F>(respond: F) -> FakeNode
    where
        F: Fn(&str, &str, &[u8]) -> Option<(u16, Vec<u8>)> + Send + Sync + 'static,
    {
        Self::replying(
            move |method, path, body| match respond(method, path, body) {
                Some((status, answer)) => Reply::Json(status, answer),
                None => Reply::Mute,
            },
        )
    }

    /// A fake whose `respond` says how to answer each request.
    pub fn replying<F>(respond: F) -> FakeNode
    where
        F: Fn(&str, &str, &[u8]) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let respond = Arc::new(respond);
        let floods = Arc::new(Mutex::new(Vec::new()));
        let flooded = floods.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let respond = respond.clone();
                let flooded = flooded.clone();
                std::thread::spawn(move || serve_one(stream, &*respond, &flooded));
            }
        });
        FakeNode { addr, floods }
    }

    /// The body bytes written by each flood that ended, once `count` have
    /// (waiting up to 20 s).
    #[track_caller]
    pub fn floods(&self, count: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let floods = self.floods.lock().unwrap().clone();
            if floods.len() >= count {
                return floods;
            }
            assert!(
                Instant::now() < deadline,
                "{} flood(s) ended, {count} expected",
                floods.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How a [`FakeNode`] answers (method, path, body).
type Respond = dyn Fn(&str, &str, &[u8]) -> Reply + Send + Sync;

/// Writes a [`Reply::Flood`] until its end or until the client hangs up;
/// the body bytes written.
fn flood(stream: &mut TcpStream, total: u64, announce: bool) -> u64 {
    let framing = if announce {
        format!("Content-Length: {total}")
    } else {
        "Transfer-Encoding: chunked".to_owned()
    };
    let head = format!("HTTP/1.1 200 X\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = [b' '; 64 * 1024];
    let mut written = 0;
    while written < total {
        let sent = if announce {
            stream.write_all(&chunk)
        } else {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| stream.write_all(&chunk))
                .and_then(|()| stream.write_all(b"\r\n"))
        };
        if sent.is_err() {
            break;
        }
        written += chunk.len() as u64;
    }
    if !announce && written >= total {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    written
}

fn serve_one(mut stream: TcpStream, respond: &Respond, floods: &Mutex<Vec<u64>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer, extra) = match respond(&method, &path, &body) {
            Reply::Json(status, answer) => (status, answer, String::new()),
            Reply::RetryAfter(status, answer, secs) => {
                (status, answer, format!("Retry-After: {secs}\r\n"))
            }
            Reply::Flood { total, announce } => {
                let written = flood(&mut stream, total, announce);
                floods.lock().unwrap().push(written);
                return;
            }
            Reply::Mute => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Reply::Stream {
                content_type,
                pieces,
                cut,
            } => {
                // Said, so that no client keeps the connection for its next
                // request: one that reused it after this close would fail
                // before any byte of the next stream came.
                let head = format!("HTTP/1.1 200 X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for piece in pieces {
                    let framed =
                        [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat();
                    if stream
                        .write_all(&framed)
                        .and_then(|()| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                }
                if !cut {
                    let _ = stream.write_all(b"0\r\n\r\n");
                }
                // One stream per connection: closing it is part of a cut.
                return;
            }
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            answer.len()
        );
        if stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&answer))
            .is_err()
        {
            return;
        }
    }
}

/// Stops a test early with the node's log when it did not get `expected`.
#[track_caller]
pub fn assert_refused(node: &Node, answer: &HttpAnswer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.problem_code().as_str()),
        (status, code),
        "answer: {}\nnode log:\n{}",
        String::from_utf8_lossy(&answer.body),
        node.log()
    );
}

/// The store of the node whose state directory is `state`, read-only, and
/// its path.
fn tasks_db(state: &Path) -> (rusqlite::Connection, PathBuf) {
    let db = state.join("sage.db");
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()));
    (conn, db)
}

/// Every task id the node whose state directory is `state` recorded (so
/// ran, or was about to: see [`Node::executions_of`]), once per row; the
/// node may be stopped or killed.
pub fn task_ids(state: &Path) -> Vec<String> {
    let (conn, db) = tasks_db(state);
    let mut query = conn
        .prepare("SELECT task_id FROM tasks")
        .unwrap_or_else(|e| panic!("read the tasks of {}: {e}", db.display()));
    let ids = query
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("read the tasks of {}: {e}", db.display()))
        .map(|id| id.expect("a task id"))
        .collect();
    ids
}
