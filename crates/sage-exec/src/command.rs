//! The `command` executor: runs a program per task ([`CommandExecutor`],
//! settings [`CommandConfig`]).
//!
//! What the program gets and must give back (arguments without a shell,
//! its cleared environment, the input on stdin, the result on stdout, the
//! `_sage` quality report, exit status and stderr, the time limit that
//! kills its whole process group) is the contract of the
//! [crate documentation](crate) (`docs/executors.md`). A program's process
//! group is recorded in [`Leftovers`] while it runs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use sage_types::Task;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{BoxFuture, ExecError, Execution, Executor, FailureKind, Leftovers};
use sage_types::untrusted::Untrusted;

/// Variables of the daemon's environment that programs get.
const INHERITED_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// How much of stderr's end goes into a failure message, in characters.
const ERROR_TAIL_CHARS: usize = 500;

/// Size of the pipe read buffer.
const READ_CHUNK: usize = 64 * 1024;

/// Settings of a `command` executor (one `[executors.TYPE]` table with kind = "command").
#[derive(Clone, PartialEq)]
pub struct CommandConfig {
    /// Program and arguments, run without a shell; non-empty.
    pub command: Vec<String>,
    /// Kill the whole process group after this.
    pub timeout: Duration,
    /// Working directory of the program; the daemon's when `None`.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Most bytes of stdout kept (default 1 MiB).
    pub max_output_bytes: usize,
    /// Most bytes of stderr kept (default 64 KiB).
    pub max_stderr_bytes: usize,
}

impl Default for CommandConfig {
    fn default() -> Self {
        CommandConfig {
            command: Vec::new(),
            timeout: Duration::from_secs(60),
            working_dir: None,
            env: BTreeMap::new(),
            max_output_bytes: 1024 * 1024,
            max_stderr_bytes: 64 * 1024,
        }
    }
}

// By hand, so that `env` values (often API keys) never reach a log.
impl fmt::Debug for CommandConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandConfig")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("working_dir", &self.working_dir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("max_output_bytes", &self.max_output_bytes)
            .field("max_stderr_bytes", &self.max_stderr_bytes)
            .finish()
    }
}

/// Runs a program per task; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    name: String,
    config: CommandConfig,
    leftovers: Option<Leftovers>,
    /// The node's blob directory: a task's blobs are `DIR/sha256/<hex>`.
    blob_dir: Option<PathBuf>,
    /// Where [`INHERITED_ENV`] is read: the daemon's environment, or a
    /// test's stand-in for it.
    daemon_env: fn(&str) -> Option<OsString>,
}

impl CommandExecutor {
    /// An executor for the task type `name` (used in logs and messages).
    pub fn new(name: &str, config: CommandConfig) -> Self {
        CommandExecutor {
            name: name.to_owned(),
            config,
            leftovers: None,
            blob_dir: None,
            daemon_env: |key| std::env::var_os(key),
        }
    }

    /// Reads the inherited variables from `lookup` instead of this
    /// process's environment, which tests must not change.
    #[cfg(test)]
    fn with_daemon_env(mut self, lookup: fn(&str) -> Option<OsString>) -> Self {
        self.daemon_env = lookup;
        self
    }

    /// Records each running program's group in `leftovers`, so that a
    /// start after a kill can stop the programs this process left.
    #[must_use]
    pub fn tracked(mut self, leftovers: Leftovers) -> Self {
        self.leftovers = Some(leftovers);
        self
    }

    /// Gives programs the paths of their task's blobs, kept in `dir` (the
    /// node's `STATE_DIR/blobs`), in `SAGE_BLOBS`.
    #[must_use]
    pub fn with_blobs(mut self, dir: PathBuf) -> Self {
        self.blob_dir = Some(dir);
        self
    }

    /// `SAGE_BLOBS`: the JSON array of the task's blob paths, in its order.
    fn blob_paths(&self, task: &Task) -> Result<Option<String>, ExecError> {
        if task.blobs.is_empty() {
            return Ok(None);
        }
        let Some(dir) = &self.blob_dir else {
            return Err(ExecError::new(
                FailureKind::BadInput,
                "the task names blobs but this executor has no blob directory",
            ));
        };
        let paths = task
            .blobs
            .iter()
            .map(|blob| {
                blob.hex()
                    .map(|hex| dir.join("sha256").join(hex).to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        ExecError::new(FailureKind::BadInput, "a blob digest is not sha256")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(serde_json::Value::from(paths).to_string()))
    }

    async fn run(&self, task: &Task) -> Result<Execution, ExecError> {
        let Some((program, args)) = self.config.command.split_first() else {
            return Err(ExecError::new(
                FailureKind::Spawn,
                format!(
                    "the command executor of `{}` has no command to run",
                    self.name
                ),
            ));
        };
        let input = serde_json::to_vec(&task.input).map_err(|e| {
            ExecError::new(
                FailureKind::BadInput,
                format!("cannot serialize the task input: {e}"),
            )
        })?;

        let blobs = self.blob_paths(task)?;
        let mut command = Command::new(program);
        command.args(args).env_clear();
        for key in INHERITED_ENV {
            if let Some(value) = (self.daemon_env)(key) {
                command.env(key, value);
            }
        }
        command
            .envs(&self.config.env)
            .env("SAGE_TASK_ID", &task.task_id)
            .env("SAGE_TASK_TYPE", &task.task_type)
            .env("SAGE_TASK_ISSUER", &task.issuer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // After the configured variables, as the other SAGE_ ones: the node's.
        if let Some(paths) = &blobs {
            command.env("SAGE_BLOBS", paths);
        }
        if let Some(dir) = &self.config.working_dir {
            command.current_dir(dir);
        }

        let mut child = command
            .spawn()
            .map_err(|e| match &self.config.working_dir {
                Some(dir) => ExecError::new(
                    FailureKind::Spawn,
                    format!(
                        "cannot start command `{program}` in `{}`: {e}",
                        dir.display()
                    ),
                ),
                None => ExecError::new(
                    FailureKind::Spawn,
                    format!("cannot start command `{program}`: {e}"),
                ),
            })?;
        // The child leads its own group, so the group id is its pid.
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                ExecError::new(
                    FailureKind::Other,
                    "the command exited before it could be watched",
                )
            })?;
        // Declared after `child` so that it drops first, while the group's id
        // is still held by the unreaped child.
        let mut group = GroupGuard {
            pgid: Pid::from_raw(pgid),
            armed: true,
        };
        // Dropped first of the three: forgotten once the group is dealt with.
        let _record = self.leftovers.as_ref().and_then(|l| l.record(pgid));

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (max_out, max_err) = (self.config.max_output_bytes, self.config.max_stderr_bytes);
        let task_id = task.task_id.as_str();
        let finished = tokio::time::timeout(self.config.timeout, async {
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    // A program may exit without reading its input: not an error.
                    if let Err(e) = stdin.write_all(&input).await {
                        tracing::debug!(task_id = %Untrusted(task_id), error = %e, "command did not take all its input");
                    }
                } // Dropping stdin closes it: the program sees end of file.
            };
            let (_, out, err) = tokio::join!(
                feed,
                capture(stdout, max_out, Keep::Head),
                capture(stderr, max_err, Keep::Tail)
            );
            // Reaped only after the pipes close, so the group's id stays
            // reserved (and safe to kill) for as long as we read.
            let status = child.wait().await;
            (out, err, status)
        })
        .await;

        let Ok((out, err, status)) = finished else {
            group.kill();
            // SIGKILL cannot be ignored, so this returns promptly.
            if child.wait().await.is_ok() {
                group.armed = false;
            }
            return Err(ExecError::new(
                FailureKind::Timeout,
                format!(
                    "command timed out after {} s; killed its process group",
                    self.config.timeout.as_secs_f64()
                ),
            ));
        };
        let status = status.map_err(|e| {
            ExecError::new(
                FailureKind::Other,
                format!("cannot wait for command `{program}`: {e}"),
            )
        })?;
        group.armed = false;
        // Kills what the program left behind. The leader is reaped, but POSIX
        // keeps its id reserved while any member of its group lives, so this
        // reaches only the leftovers (or no one).
        group.kill();

        let out = out.map_err(|e| {
            ExecError::new(
                FailureKind::Other,
                format!("cannot read the command's stdout: {e}"),
            )
        })?;
        let err = err.map_err(|e| {
            ExecError::new(
                FailureKind::Other,
                format!("cannot read the command's stderr: {e}"),
            )
        })?;
        let stderr_text = String::from_utf8_lossy(&err.kept);
        tracing::debug!(
            task_id = %Untrusted(task_id),
            task_type = %self.name,
            status = %status,
            stdout_bytes = out.total,
            stderr_bytes = err.total,
            // Escaped: a program may echo what the peer sent.
            stderr = ?stderr_text,
            "command finished"
        );

        if let Some(failure) = failure(status, &stderr_text, err.was_cut()) {
            return Err(failure);
        }
        let mut execution = Execution::of(result_of(&out));
        execution.exit_status = Some(0);
        take_report(&mut execution);
        Ok(execution)
    }
}

impl Executor for CommandExecutor {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(self.run(task))
    }
}

/// Kills the process group on drop unless disarmed, so that a dropped
/// execution leaves no process behind.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = %self.pgid, error = %e, "cannot kill a command's process group")
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// Which part of an overlong stream to keep.
#[derive(Clone, Copy)]
enum Keep {
    Head,
    Tail,
}

/// Part of what a program wrote on a pipe.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    /// Bytes written in all.
    total: u64,
}

impl Captured {
    fn was_cut(&self) -> bool {
        self.total > self.kept.len() as u64
    }
}

/// Reads `pipe` to its end, keeping at most `limit` bytes; the rest is read
/// and counted, so the writer never blocks on a full pipe.
async fn capture<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    limit: usize,
    keep: Keep,
) -> std::io::Result<Captured> {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return Ok(captured);
    };
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        captured.total += n as u64;
        match keep {
            Keep::Head => {
                let room = limit.saturating_sub(captured.kept.len());
                captured.kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Keep::Tail => {
                captured.kept.extend_from_slice(&buf[..n]);
                // Trimmed in batches rather than on every read.
                if captured.kept.len() > limit.saturating_add(READ_CHUNK) {
                    let excess = captured.kept.len() - limit;
                    captured.kept.drain(..excess);
                }
            }
        }
    }
    if captured.kept.len() > limit {
        let excess = captured.kept.len() - limit;
        captured.kept.drain(..excess);
    }
    Ok(captured)
}

/// The error of a program that did not exit 0, if it did not.
fn failure(status: ExitStatus, stderr: &str, stderr_cut: bool) -> Option<ExecError> {
    let (head, kind) = match (status.code(), status.signal()) {
        (Some(0), _) => return None,
        (Some(code), _) => (
            format!("command exited with status {code}"),
            FailureKind::Exited(code),
        ),
        (None, Some(signal)) => {
            let name = Signal::try_from(signal).map_or("an unknown signal", Signal::as_str);
            (
                format!("command was killed by signal {name} ({signal})"),
                FailureKind::Signaled(signal),
            )
        }
        (None, None) => (
            format!("command ended abnormally ({status})"),
            FailureKind::Other,
        ),
    };
    let stderr = stderr.trim();
    let message = if stderr.is_empty() {
        head
    } else {
        let (tail, cut) = last_chars(stderr, ERROR_TAIL_CHARS);
        let ellipsis = if cut || stderr_cut { "…" } else { "" };
        format!("{head}: {ellipsis}{tail}")
    };
    Some(ExecError::new(kind, message))
}

/// The last `n` characters of `text`, and whether that is not all of it.
fn last_chars(text: &str, n: usize) -> (&str, bool) {
    if n == 0 {
        return ("", !text.is_empty());
    }
    match text.char_indices().rev().nth(n - 1) {
        Some((start, _)) if start > 0 => (&text[start..], true),
        _ => (text, false),
    }
}

/// The result of a program that wrote `out` on stdout.
fn result_of(out: &Captured) -> Value {
    if out.was_cut() {
        return json!({
            "output": String::from_utf8_lossy(&out.kept),
            "truncated": true,
            "output_bytes": out.total,
        });
    }
    if let Ok(value) = serde_json::from_slice(&out.kept) {
        return value;
    }
    let text = String::from_utf8_lossy(&out.kept);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Value::String(text.to_owned())
}

/// Moves a `_sage` quality report out of the result into the figures.
fn take_report(execution: &mut Execution) {
    let Value::Object(result) = &mut execution.result else {
        return;
    };
    if !matches!(result.get("_sage"), Some(Value::Object(_))) {
        return;
    }
    let Some(Value::Object(report)) = result.remove("_sage") else {
        return;
    };
    let fraction = |key: &str| {
        report
            .get(key)
            .and_then(Value::as_f64)
            .map(|x| x.clamp(0.0, 1.0))
    };
    if let Some(quality) = fraction("quality") {
        execution.quality = quality;
    }
    if let Some(convergence) = fraction("convergence") {
        execution.convergence = convergence;
    }
    if let Some(iterations) = report.get("iterations").and_then(Value::as_u64) {
        execution.iterations = u32::try_from(iterations).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;
    use std::path::Path;
    use std::time::Instant;

    fn task(input: Value) -> Task {
        Task {
            quality: sage_types::QualityRequirements {
                min_quality: 0.0,
                min_convergence: 0.0,
            },
            ..sage_types::testing::task("summarize", input)
        }
    }

    fn config(command: &[&str]) -> CommandConfig {
        CommandConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(30),
            ..CommandConfig::default()
        }
    }

    fn sh(script: &str) -> CommandConfig {
        config(&["sh", "-c", script])
    }

    async fn run(config: CommandConfig, input: Value) -> Result<Execution, ExecError> {
        CommandExecutor::new("summarize", config)
            .execute(&task(input))
            .await
    }

    /// Waits for `path` to hold a pid.
    async fn read_pid(path: &Path) -> i32 {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no pid in {}", path.display());
    }

    /// Whether `pid` is dead (gone, or a zombie nobody reaped yet), within ~2 s.
    async fn is_dead(pid: i32) -> bool {
        for _ in 0..40 {
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                return true;
            }
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                if state.starts_with('Z') || state.starts_with('X') {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn json_output_is_the_result() {
        let out = run(
            sh(r#"echo '{"answer": 42, "list": [1, 2.5]}'"#),
            json!(null),
        )
        .await
        .unwrap();
        assert_eq!(out.result, json!({"answer": 42, "list": [1, 2.5]}));
        assert_eq!(out.exit_status, Some(0));
        assert_eq!(
            (out.quality, out.convergence, out.iterations),
            (1.0, 1.0, 1)
        );
    }

    #[tokio::test]
    async fn sage_report_is_taken_out_of_the_result() {
        let script = r#"echo '{"summary": "s", "_sage": {"quality": 0.82, "convergence": 1.5, "iterations": 4, "other": 1}}'"#;
        let out = run(sh(script), json!(null)).await.unwrap();
        assert_eq!(out.result, json!({"summary": "s"}));
        assert_eq!(
            (out.quality, out.convergence, out.iterations),
            (0.82, 1.0, 4)
        );

        let out = run(sh(r#"echo '{"_sage": {"quality": -2}}'"#), json!(null))
            .await
            .unwrap();
        assert_eq!(out.result, json!({}));
        assert_eq!(
            (out.quality, out.convergence, out.iterations),
            (0.0, 1.0, 1)
        );

        // Not an object: not a report, left alone.
        let out = run(sh(r#"echo '{"_sage": 0.5}'"#), json!(null))
            .await
            .unwrap();
        assert_eq!(out.result, json!({"_sage": 0.5}));
        assert_eq!(out.quality, 1.0);
    }

    #[tokio::test]
    async fn other_output_is_text() {
        let out = run(sh("printf 'hello world\\n'"), json!(null))
            .await
            .unwrap();
        assert_eq!(out.result, json!("hello world"));
        let out = run(sh("printf 'two\\nlines\\n\\n'"), json!(null))
            .await
            .unwrap();
        assert_eq!(out.result, json!("two\nlines\n"));
        let out = run(sh("true"), json!(null)).await.unwrap();
        assert_eq!(out.result, json!(""));
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_status_and_stderr() {
        let err = run(
            sh("echo partial; echo 'something broke' >&2; exit 3"),
            json!(null),
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_status(), Some(3));
        assert_eq!(err.message, "command exited with status 3: something broke");
    }

    #[tokio::test]
    async fn long_stderr_leaves_its_end_in_the_message() {
        let script = "yes 'noise' | head -c 199998 >&2; echo 'the real cause' >&2; exit 1";
        let err = run(sh(script), json!(null)).await.unwrap_err();
        assert_eq!(err.exit_status(), Some(1));
        assert!(err.message.starts_with("command exited with status 1: …"));
        assert!(
            err.message.ends_with("noise\nthe real cause"),
            "{}",
            err.message
        );
        assert!(err.message.chars().count() < 600);
    }

    #[tokio::test]
    async fn killed_by_a_signal_names_it() {
        let err = run(sh("echo dying >&2; kill -9 $$"), json!(null))
            .await
            .unwrap_err();
        assert_eq!(err.exit_status(), None);
        assert_eq!(
            err.message,
            "command was killed by signal SIGKILL (9): dying"
        );
    }

    /// A daemon environment holding a secret meant for another executor.
    fn daemon_env_with_secret(key: &str) -> Option<OsString> {
        match key {
            "SAGE_DAEMON_SECRET" => Some("hunter2".into()),
            _ => std::env::var_os(key),
        }
    }

    #[tokio::test]
    async fn stdin_is_the_input_and_the_environment_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let script = "import json, os, sys\n\
                      print(json.dumps({'stdin': sys.stdin.read(), 'env': dict(os.environ), 'cwd': os.getcwd()}))";
        let mut config = config(&["python3", "-c", script]);
        config.working_dir = Some(dir.path().to_owned());
        config.env.insert("SAGE_EXTRA".into(), "configured".into());
        config
            .env
            .insert("SAGE_TASK_ID".into(), "overridden".into());
        let input = json!({"query": "hi", "n": [1, 2.5, "é"], "nested": {"a": null}});

        let out = CommandExecutor::new("summarize", config)
            .with_daemon_env(daemon_env_with_secret)
            .execute(&task(input.clone()))
            .await
            .unwrap();
        assert_eq!(
            out.result["stdin"],
            json!(serde_json::to_string(&input).unwrap())
        );
        let env = &out.result["env"];
        assert_eq!(env["SAGE_TASK_ID"], "task-42");
        assert_eq!(env["SAGE_TASK_TYPE"], "summarize");
        assert_eq!(env["SAGE_TASK_ISSUER"], "sprout_sage_lct");
        assert_eq!(env["SAGE_EXTRA"], "configured");
        assert!(env.get("PATH").is_some());
        if let Ok(home) = std::env::var("HOME") {
            assert_eq!(env["HOME"], json!(home));
        }
        assert!(env.get("SAGE_DAEMON_SECRET").is_none(), "{env}");
        let cwd = out.result["cwd"].as_str().unwrap();
        assert_eq!(
            Path::new(cwd).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    #[tokio::test]
    async fn the_program_gets_only_the_listed_variables() {
        // `env` itself, not a wrapper (a `python3` shim may add its own).
        let mut config = config(&["env", "-0"]);
        config.env.insert("SAGE_EXTRA".into(), "configured".into());
        let out = CommandExecutor::new("summarize", config)
            .with_daemon_env(daemon_env_with_secret)
            .execute(&task(json!(null)))
            .await
            .unwrap();
        let listed = [
            "SAGE_TASK_ID",
            "SAGE_TASK_TYPE",
            "SAGE_TASK_ISSUER",
            "SAGE_EXTRA",
        ];
        let env = out.result.as_str().unwrap();
        let keys: Vec<&str> = env
            .split('\0')
            .filter(|e| !e.is_empty())
            .map(|e| e.split_once('=').map_or(e, |(key, _)| key))
            .collect();
        for key in &keys {
            assert!(
                INHERITED_ENV.contains(key) || listed.contains(key),
                "{key} in {keys:?}"
            );
        }
        for key in listed {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }

    #[tokio::test]
    async fn a_program_that_writes_before_reading_does_not_deadlock() {
        // 300 kB each way: far more than a pipe holds.
        let input = json!({"blob": "a".repeat(300_000)});
        let bytes = serde_json::to_vec(&input).unwrap().len() as u64;
        let out = run(sh("yes e | head -c 300000 >&2; wc -c"), input)
            .await
            .unwrap();
        assert_eq!(out.result.as_u64(), Some(bytes));
    }

    #[tokio::test]
    async fn oversized_output_is_truncated_and_counted() {
        let mut config = sh("yes x | head -c 2097152");
        config.max_output_bytes = 1024 * 1024;
        let out = run(config, json!(null)).await.unwrap();
        assert_eq!(out.result["truncated"], true);
        assert_eq!(out.result["output_bytes"], 2 * 1024 * 1024);
        assert_eq!(out.result["output"].as_str().unwrap().len(), 1024 * 1024);
        assert_eq!(out.exit_status, Some(0));
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let err = run(config(&["/nonexistent/sage-no-such-program"]), json!(null))
            .await
            .unwrap_err();
        assert_eq!(err.exit_status(), None);
        assert!(
            err.message
                .starts_with("cannot start command `/nonexistent/sage-no-such-program`: "),
            "{}",
            err.message
        );

        let mut config = config(&["true"]);
        config.working_dir = Some("/nonexistent/dir".into());
        let err = run(config, json!(null)).await.unwrap_err();
        assert!(
            err.message.contains("`/nonexistent/dir`"),
            "{}",
            err.message
        );

        let err = run(CommandConfig::default(), json!(null))
            .await
            .unwrap_err();
        assert!(err.message.contains("no command"), "{}", err.message);
    }

    /// A config that runs `script` with `sh -c`, given as `$1` a file
    /// (in the directory returned, which the caller keeps) to write a pid to.
    fn with_pidfile(script: &str) -> (tempfile::TempDir, std::path::PathBuf, CommandConfig) {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let config = config(&["sh", "-c", script, "sh", pidfile.to_str().unwrap()]);
        (dir, pidfile, config)
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let (_dir, pidfile, mut config) = with_pidfile("sleep 30 & echo $! > \"$1\"; wait");
        config.timeout = Duration::from_millis(500);

        let started = Instant::now();
        let err = run(config, json!(null)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.message,
            "command timed out after 0.5 s; killed its process group"
        );
        assert_eq!(err.exit_status(), None);
        let grandchild = read_pid(&pidfile).await;
        assert!(is_dead(grandchild).await, "sleep {grandchild} survived");
    }

    #[tokio::test]
    async fn dropping_the_execution_kills_the_whole_group() {
        let (_dir, pidfile, config) = with_pidfile("sleep 30 & echo $! > \"$1\"; wait");
        let executor = CommandExecutor::new("summarize", config);
        let task = task(json!(null));

        // The execution is dropped as soon as the grandchild exists.
        let grandchild = tokio::select! {
            result = executor.execute(&task) => panic!("finished: {result:?}"),
            pid = read_pid(&pidfile) => pid,
        };
        assert!(is_dead(grandchild).await, "sleep {grandchild} survived");
    }

    #[tokio::test]
    async fn leftovers_die_when_the_program_exits() {
        let (_dir, pidfile, config) =
            with_pidfile("sleep 30 >/dev/null 2>&1 & echo $! > \"$1\"; echo done");
        let out = run(config, json!(null)).await.unwrap();
        assert_eq!(out.result, json!("done"));
        let leftover = read_pid(&pidfile).await;
        assert!(is_dead(leftover).await, "sleep {leftover} survived");
    }

    #[tokio::test]
    async fn each_failure_carries_its_kind() {
        let err = run(sh("exit 3"), json!(null)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Exited(3));
        assert_eq!(err.kind.as_str(), "exited");
        assert_eq!(err.exit_status(), Some(3));

        let err = run(sh("kill -9 $$"), json!(null)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Signaled(9));
        assert_eq!(err.kind.as_str(), "signaled");

        let mut slow = config(&["sleep", "30"]);
        slow.timeout = Duration::from_millis(200);
        let err = run(slow, json!(null)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Timeout);
        assert_eq!(err.exit_status(), None);

        let err = run(config(&["/nonexistent/sage-no-such-program"]), json!(null))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Spawn);

        let mut elsewhere = config(&["true"]);
        elsewhere.working_dir = Some("/nonexistent/dir".into());
        let err = run(elsewhere, json!(null)).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Spawn);

        let err = run(CommandConfig::default(), json!(null))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Spawn);
    }

    #[test]
    fn last_chars_cuts_on_character_boundaries() {
        assert_eq!(last_chars("héllo", 3), ("llo", true));
        assert_eq!(last_chars("héllo", 4), ("éllo", true));
        assert_eq!(last_chars("héllo", 5), ("héllo", false));
        assert_eq!(last_chars("héllo", 9), ("héllo", false));
        assert_eq!(last_chars("", 3), ("", false));
    }

    #[test]
    fn debug_hides_env_values() {
        let mut config = CommandConfig::default();
        config.env.insert("API_KEY".into(), "hunter2".into());
        let shown = format!("{config:?}");
        assert!(shown.contains("API_KEY") && !shown.contains("hunter2"));
    }
}
