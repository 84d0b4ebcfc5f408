//! `sage.toml`: the config file of `sage serve` and `sage config check`.
//!
//! ```toml
//! [node]
//! name = "Thor"                  # platform name; its key is keys_dir/Thor_ed25519.key
//! lct_id = "thor_sage_lct"       # optional; default: lowercased name + "_sage_lct"
//! listen = "0.0.0.0:50051"
//! keys_dir = "keys"              # relative to the config file's directory
//! state_dir = "state"            # the node's SQLite state; default ./state or $STATE_DIRECTORY
//! durability = "power-loss"      # or "crash": no fsync on the request path
//! ledger_durability = "crash"    # the local API's ledger records; default: durability
//! task_retention_days = 30       # finished tasks are forgotten this long after they expire; 0 keeps them all
//! peers_file = "keys/peers.toml" # optional; default: keys_dir/peers.toml
//! tls_cert = "tls/thor.crt"      # optional, with tls_key: serve HTTPS only (PEM; `sage tls self-signed` makes one)
//! tls_key = "tls/thor.key"
//!
//! [limits]                       # all optional; durations as "10s", "500ms", "5m", "1h" or seconds
//! max_body_bytes = 1048576
//! clock_skew = "5m"
//! max_task_lifetime = "1h"
//! drain_timeout = "30s"
//! max_header_bytes = 65536       # request line and headers; 8192 to 1048576
//! max_connections = 4096
//! max_connections_per_address = 512   # at most max_connections
//! max_blob_bytes = 268435456     # largest PUT /v1/blobs upload (streamed to STATE_DIR/blobs)
//! unreferenced_blob_ttl = "1h"   # an uploaded blob no task names is deleted after this
//!
//! [executors.sum]                # one table per task type
//! kind = "command"               # or "http", or "builtin"
//! command = ["python3", "sum.py"]
//! timeout = "10s"
//! max_concurrency = 2            # runs at once (default 1 for command, 4 for http)
//! queue = 8                      # tasks waiting beyond that; more are refused as busy (default 2 x max_concurrency)
//! cost = { base = 1.0, per_second = 0.5 }   # ATP; optional
//! max_cost = 100.0               # refuse tasks estimated above this; optional
//! max_body_bytes = 8388608       # largest signed task of this type, if not [limits] max_body_bytes
//! pure = false                   # true: running a task twice is harmless (no side effects)
//! ```
//!
//! Unknown keys and bad values are errors that name the file, the line and
//! the key. Without an `[executors]` table the node serves the built-in
//! `echo` and simulated task types. Examples for each executor kind are in
//! `examples/`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sage_types::identity::check_lct_id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::position::Positions;
use super::{duration, Limits};
use sage_exec::command::{CommandConfig, CommandExecutor};
use sage_exec::http::{HeaderValue, HttpConfig, HttpExecutor, HttpMode};
use sage_exec::{CostModel, Echo, Entry, Executor, ExecutorSet, Leftovers, Limiter, Simulate};

/// Where `sage serve` looks for a config file when none is given.
pub const DEFAULT_PATHS: [&str; 2] = ["sage.toml", "/etc/sage/sage.toml"];

/// A config file that cannot be used: which file, where, which key, why.
#[derive(Debug, thiserror::Error)]
#[error("{}{}{}: {problem}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), key.as_ref().map(|k| format!(": {k}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The line, where known.
    pub line: Option<usize>,
    /// The key, where known.
    pub key: Option<String>,
    /// What is wrong (boxed: some problems carry a whole key or TLS error).
    #[source]
    pub problem: Box<ConfigProblem>,
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// Not TOML, or a value of the wrong type or out of range: the TOML
    /// parser's own message (it keeps no typed cause).
    #[error("{0}")]
    Toml(String),
    /// A key of another kind of executor.
    #[error("not a setting of a {kind} executor")]
    NotForKind {
        /// The executor's kind.
        kind: &'static str,
    },
    /// A key the executor's kind requires is missing.
    #[error("a {kind} executor needs `{key}`")]
    Missing {
        /// The executor's kind.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// `max_concurrency = 0`.
    #[error("must be at least 1")]
    Zero,
    /// A URL that is not `http://` or `https://`.
    #[error("{0:?} must start with http:// or https://")]
    UrlScheme(String),
    /// `mode = "openai"` without a model.
    #[error("mode = \"openai\" needs a model = \"...\"")]
    NoModel,
    /// A mode that is neither `raw` nor `openai`.
    #[error("{0:?} is neither \"raw\" nor \"openai\"")]
    UnknownMode(String),
    /// `node.lct_id` breaks the rules of LCT ids.
    #[error(transparent)]
    LctId(#[from] sage_types::identity::LctIdError),
    /// An `http` executor that cannot be built.
    #[error(transparent)]
    Http(#[from] sage_exec::http::HttpConfigError),
    /// A `command` executor's program, named by a path, is not there.
    #[error("the program {} does not exist", .0.display())]
    NoProgram(PathBuf),
    /// A `command` executor's program, a bare name, is on no directory
    /// of the `PATH` the program gets.
    #[error("the program `{program}` is not found on PATH ({path})")]
    NotOnPath {
        /// The name.
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A `command` executor's program is not an executable file.
    #[error("the program {} is not an executable file", .0.display())]
    NotExecutable(PathBuf),
    /// The node's own key does not load.
    #[error("the node's key: {0}")]
    NodeKey(#[source] crate::KeyDirError),
    /// The limits cannot work together.
    #[error("[limits] {0}")]
    Limits(#[source] super::LimitsError),
    /// A chance outside 0 to 1.
    #[error("{0} is not a chance: give a number from 0 to 1")]
    NotAChance(f64),
    /// One of `tls_cert` and `tls_key` without the other.
    #[error("[node] tls_cert and tls_key go together")]
    TlsPair,
    /// The TLS certificate or key does not load.
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[node]`.
    #[serde(default)]
    pub node: NodeSection,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[telemetry]`.
    #[serde(default, skip_serializing_if = "TelemetrySection::is_empty")]
    pub telemetry: TelemetrySection,
    /// `[executors.TASK_TYPE]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub executors: BTreeMap<String, ExecutorSection>,
    /// `[routing]`.
    #[serde(default)]
    pub routing: RoutingSection,
    /// `[local]`.
    #[serde(default, skip_serializing_if = "LocalSection::is_empty")]
    pub local: LocalSection,
}

/// `[local]`: the API for applications on the same machine, on a Unix
/// socket that only `sage serve` listens on, never on the federation port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// Whether the socket is served [default: true].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The socket's path [default: `$RUNTIME_DIRECTORY/sage.sock` under
    /// systemd, else `STATE_DIR/sage.sock`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The user ids that may call it [default: the node's own user].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_uids: Option<Vec<u32>>,
    /// The group ids whose members (primary or supplementary) may call it
    /// [default: none].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_groups: Option<Vec<u32>>,
    /// A loopback address where the API is also served to holders of the
    /// bearer token (for containers) [default: none].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The file (mode 0600) holding that token; required with `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl LocalSection {
    fn is_empty(&self) -> bool {
        *self == LocalSection::default()
    }
}

/// `[routing]`: how the node watches the peers it would delegate to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSection {
    /// The chance (0 to 1) that a look at a peer that serves `echo` also
    /// sends it an `echo` task with a random input, whose answer is checked:
    /// a wrong one costs the peer much reputation and a cooldown. The
    /// default, 0, sends none.
    pub canary_rate: Option<f64>,
}

/// `[telemetry]`: where spans go; nowhere unless set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// An OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; spans are
    /// posted to its `/v1/traces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySection {
    fn is_empty(&self) -> bool {
        self.otlp_endpoint.is_none()
    }
}

/// `[node]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Platform name.
    pub name: Option<String>,
    /// LCT id.
    pub lct_id: Option<String>,
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Key directory.
    pub keys_dir: Option<PathBuf>,
    /// Peers file, if not `keys_dir/peers.toml`.
    pub peers_file: Option<PathBuf>,
    /// State directory (the SQLite database).
    pub state_dir: Option<PathBuf>,
    /// `power-loss` (default: fsync before answering) or `crash`.
    pub durability: Option<sage_store::Durability>,
    /// What the local API's delegations survive before their tasks are
    /// sent, in the ledger: `power-loss` or `crash` (default: `durability`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_durability: Option<sage_store::Durability>,
    /// Days a finished task is kept after its envelope expired (default
    /// 30); 0 keeps every task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_retention_days: Option<u32>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

/// `[limits]`; see [`Limits`] for what each means.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// Clock skew tolerance.
    pub clock_skew: Option<Secs>,
    /// Longest task validity.
    pub max_task_lifetime: Option<Secs>,
    /// Drain deadline at shutdown.
    pub drain_timeout: Option<Secs>,
    /// Time to send a request's headers.
    pub header_read_timeout: Option<Secs>,
    /// Time to send a request's body.
    pub body_read_timeout: Option<Secs>,
    /// Idle time of a kept-alive connection.
    pub idle_timeout: Option<Secs>,
    /// Largest request head, in bytes.
    pub max_header_bytes: Option<usize>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Connections open at once from one IP address.
    pub max_connections_per_address: Option<usize>,
    /// Requests handled at once.
    pub max_concurrent_requests: Option<usize>,
    /// Tasks per second per verified peer.
    pub peer_rate: Option<f64>,
    /// Burst of tasks per peer.
    pub peer_burst: Option<u32>,
    /// Largest uploaded blob, in bytes.
    pub max_blob_bytes: Option<u64>,
    /// How long a blob no task names is kept.
    pub unreferenced_blob_ttl: Option<Secs>,
}

/// The kinds of executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// A program run per task (see [`sage_exec::command`]).
    Command,
    /// An HTTP service (see [`sage_exec::http`]).
    Http,
    /// A built-in executor.
    Builtin,
}

impl ExecutorKind {
    /// The name written in the file.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Command => "command",
            ExecutorKind::Http => "http",
            ExecutorKind::Builtin => "builtin",
        }
    }
}

/// One `[executors.TASK_TYPE]` table. One flat table rather than one per
/// kind, so that a wrong key or value is reported at its own line; which
/// keys each kind takes is checked after parsing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorSection {
    /// `command`, `http` or `builtin`.
    pub kind: ExecutorKind,
    /// command: program and arguments, no shell.
    pub command: Option<NonEmpty>,
    /// command: working directory.
    pub working_dir: Option<PathBuf>,
    /// command: extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// command: stdout bound in bytes (default 1 MiB).
    pub max_output_bytes: Option<usize>,
    /// command: stderr bound in bytes (default 64 KiB).
    pub max_stderr_bytes: Option<usize>,
    /// http: `http://` or `https://` URL.
    pub url: Option<String>,
    /// http: `raw` (default) or `openai` (chat/completions).
    pub mode: Option<String>,
    /// http: the model, for `mode = "openai"`.
    pub model: Option<String>,
    /// http: headers, a literal value or `{ env = "VAR" }` for a secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderSpec>,
    /// http: response bound in bytes (default 4 MiB).
    pub max_response_bytes: Option<usize>,
    /// builtin: `echo` or `simulate`.
    pub builtin: Option<BuiltinKind>,
    /// command and http: give up after this (default 60 s and 120 s).
    pub timeout: Option<Secs>,
    /// command and http: runs at once (default 1 and 4).
    pub max_concurrency: Option<usize>,
    /// command and http: tasks waiting beyond that (default 2 x max_concurrency).
    pub queue: Option<usize>,
    /// Price.
    pub cost: Option<CostSection>,
    /// Ceiling on a task's estimate.
    pub max_cost: Option<f64>,
    /// Largest request body (the signed task) for this type, if not
    /// `[limits] max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Running a task twice is harmless (default false; the builtins are).
    pub pure: Option<bool>,
}

/// The built-in executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinKind {
    /// The result is the input.
    Echo,
    /// The simulation of the Python original's deployment guide.
    Simulate,
}

/// `cost = { base = .., per_second = .. }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostSection {
    /// ATP per run.
    #[serde(default)]
    pub base: f64,
    /// ATP per second of execution.
    #[serde(default)]
    pub per_second: f64,
}

/// A header value in the file: literal text, or the name of an
/// environment variable that holds a secret. Literal values are shown as
/// `<redacted>` by `sage config check`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum HeaderSpec {
    /// Literal text.
    Literal(String),
    /// `{ env = "VAR" }`.
    Env {
        /// The variable's name.
        env: String,
    },
}

impl Serialize for HeaderSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HeaderSpec::Literal(_) => s.serialize_str("<redacted>"),
            HeaderSpec::Env { env } => {
                let mut map = BTreeMap::new();
                map.insert("env", env);
                map.serialize(s)
            }
        }
    }
}

/// A list that must not be empty (a command).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NonEmpty(pub Vec<String>);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        if list.is_empty() || list[0].is_empty() {
            return Err(serde::de::Error::custom(
                "the command needs at least a program: [\"prog\", \"arg\", ...]",
            ));
        }
        Ok(NonEmpty(list))
    }
}

/// A duration: seconds as a number, or text such as `"500ms"`, `"10s"`,
/// `"5m"`, `"1h 30m"` (see [`duration::parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Secs(pub Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(secs) => duration::from_secs_f64(secs),
            Raw::Text(text) => duration::parse_duration(&text),
        }
        .map(Secs)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{e}: use seconds or text like \"500ms\", \"10s\", \"5m\", \"1h\""
            ))
        })
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }
}

impl ConfigFile {
    /// Reads and checks `path`. Relative paths in it are taken relative to
    /// the file's directory.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (file, mut problems) = Self::load_all(path);
        match file {
            Some(file) if problems.is_empty() => Ok(file),
            _ => Err(problems.remove(0)),
        }
    }

    /// Reads and checks `path` as [`ConfigFile::load`] does, but finds
    /// every problem of the text, each with its line: every unknown key,
    /// and every executor table's problem. The file is returned when the
    /// rest of it could be read (an unknown key is then left out), so that
    /// what it names can be checked too.
    pub fn load_all(path: &Path) -> (Option<Self>, Vec<ConfigError>) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                let problem = ConfigError {
                    path: path.to_owned(),
                    line: None,
                    key: None,
                    problem: Box::new(ConfigProblem::Read(e)),
                };
                return (None, vec![problem]);
            }
        };
        let (file, problems) = Self::parse_all(path, &text);
        let Some(mut file) = file else {
            return (None, problems);
        };
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        rebase(&mut file.node.keys_dir);
        rebase(&mut file.node.peers_file);
        rebase(&mut file.node.state_dir);
        rebase(&mut file.node.tls_cert);
        rebase(&mut file.node.tls_key);
        for section in file.executors.values_mut() {
            rebase(&mut section.working_dir);
        }
        (Some(file), problems)
    }

    /// Parses and checks `text`, reporting errors against `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the line and key.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        match Self::parse_all(path, text) {
            (Some(file), problems) if problems.is_empty() => Ok(file),
            (_, mut problems) => Err(problems.remove(0)),
        }
    }

    /// Parses and checks `text`, finding every unknown key and every
    /// executor table's problem; see [`ConfigFile::load_all`].
    pub fn parse_all(path: &Path, text: &str) -> (Option<Self>, Vec<ConfigError>) {
        let positions = Positions::new(text);
        let mut problems = Vec::new();
        // serde stops at the first unknown key: each one found is blanked
        // out (offsets and lines kept) and the text read again.
        let mut read = text.to_owned();
        let parsed = loop {
            let e = match toml::from_str::<ConfigFile>(&read) {
                Ok(file) => break Some(file),
                Err(e) => e,
            };
            let start = e.span().map(|span| span.start);
            let message = e.message().trim().to_owned();
            let blank = start
                .filter(|_| message.starts_with("unknown field"))
                .and_then(|offset| positions.entry_at(offset))
                .filter(|span| read[span.clone()].trim() != "");
            problems.push(ConfigError {
                path: path.to_owned(),
                line: start.map(|offset| positions.line(offset)),
                key: start.and_then(|offset| positions.key_at(offset)),
                problem: Box::new(ConfigProblem::Toml(message)),
            });
            let Some(span) = blank else { break None };
            let blanked: String = read[span.clone()]
                .chars()
                .map(|c| if c == '\n' { c } else { ' ' })
                .collect();
            read.replace_range(span, &blanked);
        };
        let Some(file) = parsed else {
            return (None, problems);
        };
        for (task_type, section) in &file.executors {
            if let Err((key, problem)) = section.check() {
                problems.push(ConfigError {
                    path: path.to_owned(),
                    line: positions.line_of_key(&["executors", task_type], key),
                    key: Some(format!("executors.{task_type}.{key}")),
                    problem,
                });
            }
        }
        if let Some(rate) = file.routing.canary_rate {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(ConfigError {
                    path: path.to_owned(),
                    line: positions.line_of_key(&["routing"], "canary_rate"),
                    key: Some("routing.canary_rate".into()),
                    problem: Box::new(ConfigProblem::NotAChance(rate)),
                });
            }
        }
        if let Some(endpoint) = &file.telemetry.otlp_endpoint {
            if crate::telemetry::check_endpoint(endpoint).is_err() {
                problems.push(ConfigError {
                    path: path.to_owned(),
                    line: positions.line_of_key(&["telemetry"], "otlp_endpoint"),
                    key: Some("telemetry.otlp_endpoint".into()),
                    problem: Box::new(ConfigProblem::UrlScheme(endpoint.clone())),
                });
            }
        }
        // The rules `serve` and `peer add` apply to every LCT id.
        if let Some(lct_id) = &file.node.lct_id {
            if let Err(e) = check_lct_id(lct_id) {
                problems.push(ConfigError {
                    path: path.to_owned(),
                    line: positions.line_of_key(&["node"], "lct_id"),
                    key: Some("node.lct_id".into()),
                    problem: Box::new(e.into()),
                });
            }
        }
        (Some(file), problems)
    }

    /// The limits: the file's values over the defaults.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let l = &self.limits;
        Limits {
            max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            clock_skew: l.clock_skew.map_or(d.clock_skew, |s| s.0),
            max_task_lifetime: l.max_task_lifetime.map_or(d.max_task_lifetime, |s| s.0),
            drain_timeout: l.drain_timeout.map_or(d.drain_timeout, |s| s.0),
            header_read_timeout: l.header_read_timeout.map_or(d.header_read_timeout, |s| s.0),
            body_read_timeout: l.body_read_timeout.map_or(d.body_read_timeout, |s| s.0),
            idle_timeout: l.idle_timeout.map_or(d.idle_timeout, |s| s.0),
            max_header_bytes: l.max_header_bytes.unwrap_or(d.max_header_bytes),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_connections_per_address: l.max_connections_per_address,
            max_concurrent_requests: l
                .max_concurrent_requests
                .unwrap_or(d.max_concurrent_requests),
            peer_rate: l.peer_rate.or(d.peer_rate),
            peer_burst: l.peer_burst.or(d.peer_burst),
            max_blob_bytes: l.max_blob_bytes.unwrap_or(d.max_blob_bytes),
            unreferenced_blob_ttl: l
                .unreferenced_blob_ttl
                .map_or(d.unreferenced_blob_ttl, |s| s.0),
        }
    }

    /// The executors of a node named `platform`: the file's, or the
    /// built-in set when it has none. `command` executors record their
    /// running programs in `leftovers` when given (a serving node).
    ///
    /// # Errors
    /// An `http` executor whose secret header variable is not set.
    pub fn executors(
        &self,
        path: &Path,
        platform: &str,
        leftovers: Option<&Leftovers>,
        blobs: Option<&Path>,
    ) -> Result<ExecutorSet, ConfigError> {
        if self.executors.is_empty() {
            return Ok(ExecutorSet::builtin(platform));
        }
        let mut set = ExecutorSet::default();
        for (task_type, section) in &self.executors {
            let entry = section
                .build(task_type, platform, leftovers, blobs)
                .map_err(|e| ConfigError {
                    path: path.to_owned(),
                    line: None,
                    key: Some(format!("executors.{task_type}")),
                    problem: Box::new(e.into()),
                })?;
            set.insert(task_type, entry);
        }
        Ok(set)
    }

    /// The file as `sage config check` shows it (secrets redacted).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

impl ExecutorSection {
    /// Which keys each kind takes, and what they must say together.
    /// Errors name the key at fault.
    fn check(&self) -> Result<(), (&'static str, Box<ConfigProblem>)> {
        let kind = self.kind;
        let set: [(&'static str, bool, &[ExecutorKind]); 14] = {
            use ExecutorKind::*;
            [
                ("command", self.command.is_some(), &[Command]),
                ("working_dir", self.working_dir.is_some(), &[Command]),
                ("env", !self.env.is_empty(), &[Command]),
                (
                    "max_output_bytes",
                    self.max_output_bytes.is_some(),
                    &[Command],
                ),
                (
                    "max_stderr_bytes",
                    self.max_stderr_bytes.is_some(),
                    &[Command],
                ),
                ("url", self.url.is_some(), &[Http]),
                ("mode", self.mode.is_some(), &[Http]),
                ("model", self.model.is_some(), &[Http]),
                ("headers", !self.headers.is_empty(), &[Http]),
                (
                    "max_response_bytes",
                    self.max_response_bytes.is_some(),
                    &[Http],
                ),
                ("builtin", self.builtin.is_some(), &[Builtin]),
                ("timeout", self.timeout.is_some(), &[Command, Http]),
                (
                    "max_concurrency",
                    self.max_concurrency.is_some(),
                    &[Command, Http],
                ),
                ("queue", self.queue.is_some(), &[Command, Http]),
            ]
        };
        let kind_name = kind.name();
        if let Some((key, _, _)) = set
            .iter()
            .find(|(_, present, kinds)| *present && !kinds.contains(&kind))
        {
            return Err((key, Box::new(ConfigProblem::NotForKind { kind: kind_name })));
        }
        let required = match kind {
            ExecutorKind::Command => ("command", self.command.is_some()),
            ExecutorKind::Http => ("url", self.url.is_some()),
            ExecutorKind::Builtin => ("builtin", self.builtin.is_some()),
        };
        if !required.1 {
            return Err((
                "kind",
                Box::new(ConfigProblem::Missing {
                    kind: kind_name,
                    key: required.0,
                }),
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err(("max_concurrency", Box::new(ConfigProblem::Zero)));
        }
        if self.max_body_bytes == Some(0) {
            return Err(("max_body_bytes", Box::new(ConfigProblem::Zero)));
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(("url", Box::new(ConfigProblem::UrlScheme(url.clone()))));
            }
        }
        match (self.mode.as_deref(), &self.model) {
            (None | Some("raw"), _) | (Some("openai"), Some(_)) => Ok(()),
            (Some("openai"), None) => Err(("mode", Box::new(ConfigProblem::NoModel))),
            (Some(other), _) => Err((
                "mode",
                Box::new(ConfigProblem::UnknownMode(other.to_owned())),
            )),
        }
    }

    pub(super) fn build(
        &self,
        task_type: &str,
        platform: &str,
        leftovers: Option<&Leftovers>,
        blobs: Option<&Path>,
    ) -> Result<Entry, sage_exec::http::HttpConfigError> {
        let max = self
            .max_concurrency
            .unwrap_or(if self.kind == ExecutorKind::Http {
                4
            } else {
                1
            })
            .max(1);
        let limiter = Some(Limiter::new(max, self.queue.unwrap_or(2 * max)));
        let (executor, limiter): (Arc<dyn Executor>, _) = match self.kind {
            ExecutorKind::Command => {
                let d = CommandConfig::default();
                let config = CommandConfig {
                    command: self
                        .command
                        .as_ref()
                        .map(|c| c.0.clone())
                        .unwrap_or_default(),
                    timeout: self.timeout.map_or(d.timeout, |t| t.0),
                    working_dir: self.working_dir.clone(),
                    env: self.env.clone(),
                    max_output_bytes: self.max_output_bytes.unwrap_or(d.max_output_bytes),
                    max_stderr_bytes: self.max_stderr_bytes.unwrap_or(d.max_stderr_bytes),
                };
                let executor = CommandExecutor::new(task_type, config);
                let executor = match leftovers {
                    Some(leftovers) => executor.tracked(leftovers.clone()),
                    None => executor,
                };
                let executor = match blobs {
                    Some(dir) => executor.with_blobs(dir.to_owned()),
                    None => executor,
                };
                (Arc::new(executor), limiter)
            }
            ExecutorKind::Http => {
                let d = HttpConfig::default();
                let config = HttpConfig {
                    url: self.url.clone().unwrap_or_default(),
                    timeout: self.timeout.map_or(d.timeout, |t| t.0),
                    headers: self
                        .headers
                        .iter()
                        .map(|(name, spec)| {
                            let value = match spec {
                                HeaderSpec::Literal(v) => HeaderValue::Literal(v.clone()),
                                HeaderSpec::Env { env } => HeaderValue::Env(env.clone()),
                            };
                            (name.clone(), value)
                        })
                        .collect(),
                    mode: match (self.mode.as_deref(), &self.model) {
                        (Some("openai"), Some(model)) => HttpMode::OpenAiChat {
                            model: model.clone(),
                        },
                        _ => HttpMode::Raw,
                    },
                    max_response_bytes: self.max_response_bytes.unwrap_or(d.max_response_bytes),
                };
                let executor = HttpExecutor::new(task_type, config)?;
                (Arc::new(executor), limiter)
            }
            ExecutorKind::Builtin => {
                let executor: Arc<dyn Executor> = match self.builtin {
                    Some(BuiltinKind::Simulate) => Arc::new(Simulate::new(platform)),
                    _ => Arc::new(Echo),
                };
                (executor, None)
            }
        };
        Ok(Entry {
            executor,
            limiter,
            cost: self.cost.map(|c| CostModel {
                base: c.base,
                per_second: c.per_second,
            }),
            max_cost: self.max_cost,
            max_body_bytes: self.max_body_bytes,
            pure: self.pure.unwrap_or(false),
        })
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

/// The certificate chain and key a node serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("sage.toml"), text)
    }

    const FULL_EXAMPLE: &str = r#"
[node]
name = "Thor"
listen = "127.0.0.1:50051"
keys_dir = "keys"

[executors.sum]
kind = "command"
command = ["python3", "-c", "import sys, json; print(json.dumps({'sum': sum(json.load(sys.stdin)['numbers'])}))"]
timeout = "10s"
max_concurrency = 2
"#;

    #[test]
    fn the_documented_example_parses() {
        let file = parse(FULL_EXAMPLE).unwrap();
        assert_eq!(file.node.name.as_deref(), Some("Thor"));
        let sum = &file.executors["sum"];
        assert_eq!(sum.kind, ExecutorKind::Command);
        assert_eq!(sum.command.as_ref().unwrap().0[0], "python3");
        assert_eq!(sum.timeout.unwrap().0, Duration::from_secs(10));
        assert_eq!(sum.max_concurrency, Some(2));
        let set = file
            .executors(Path::new("sage.toml"), "Thor", None, None)
            .unwrap();
        let entry = set.get("sum").unwrap();
        assert_eq!(entry.executor.kind(), "command");
        let limiter = entry.limiter.as_ref().unwrap();
        assert_eq!((limiter.max_concurrency(), limiter.queue_depth()), (2, 4));
        assert!(
            set.get("echo").is_none(),
            "a file with executors serves only those"
        );
        assert!(!entry.pure(), "a program may have side effects");
    }

    #[test]
    fn pure_is_the_operators_word_for_any_kind() {
        let file = parse(&format!("{FULL_EXAMPLE}pure = true\n\n[executors.copy]\nkind = \"builtin\"\nbuiltin = \"echo\"\n")).unwrap();
        let set = file
            .executors(Path::new("sage.toml"), "Thor", None, None)
            .unwrap();
        assert!(set.get("sum").unwrap().pure());
        assert!(set.get("copy").unwrap().pure(), "a builtin is, unsaid");
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let err = parse("[node]\nname = \"Thor\"\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("colour")),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("sage.toml:3: colour: unknown field `colour`"),
            "{err}"
        );

        let err = parse("[limits]\nclock_skew = \"5 fortnights\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("clock_skew")),
            "{err}"
        );
        assert!(
            err.problem.to_string().contains("invalid duration"),
            "{err}"
        );

        let err = parse("[executors.x]\nkind = \"command\"\ncommand = []\n").unwrap_err();
        assert!(
            err.problem.to_string().contains("needs at least a program"),
            "{err}"
        );

        let err = parse("\n[executors.chat]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/v1/chat/completions\"\nmode = \"openai\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(5), Some("executors.chat.mode")),
            "{err}"
        );
        assert!(err.problem.to_string().contains("needs a model"), "{err}");

        let err =
            parse("[executors.x]\nkind = \"command\"\ncommand = [\"true\"]\nurl = \"http://a/\"\n")
                .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("executors.x.url")),
            "{err}"
        );
        assert!(
            err.problem
                .to_string()
                .contains("not a setting of a command executor"),
            "{err}"
        );

        let err =
            parse("[executors.x]\nkind = \"command\"\ncommand = \"python3 sum.py\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("command")),
            "{err}"
        );

        let err = parse("[executors.x]\nkind = \"http\"\n").unwrap_err();
        assert!(err.problem.to_string().contains("needs `url`"), "{err}");

        let err = parse("[executors.x]\nkind = \"gpu\"\n").unwrap_err();
        assert!(
            err.problem.to_string().contains("unknown variant `gpu`"),
            "{err}"
        );

        let err = parse("[node]\nlisten = \"thor:50051\"\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_line() {
        let text = "[node]\nname = \"Thor\"\ncolour = \"red\"\n[executors]\nx.kind = \"command\"\nx.command = [\"true\"]\nx.speed = 3\n[limits]\nsize = [\n  1,\n]\nclock_skew = \"soon\"\n";
        let (file, problems) = ConfigFile::parse_all(Path::new("sage.toml"), text);
        let found: Vec<_> = problems
            .iter()
            .map(|e| (e.line, e.key.as_deref().unwrap_or("")))
            .collect();
        // The bad duration comes last: each unknown key is blanked out and
        // the text read again until another kind of error stops it.
        assert_eq!(
            found,
            [
                (Some(3), "colour"),
                (Some(7), "speed"),
                (Some(9), "size"),
                (Some(12), "clock_skew")
            ],
            "{problems:?}"
        );
        assert!(file.is_none());
        let (file, problems) = ConfigFile::parse_all(
            Path::new("sage.toml"),
            "[node]\nname = \"Thor\"\nnode_name = 1\n",
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(file.unwrap().node.name.as_deref(), Some("Thor"));
    }

    #[test]
    fn errors_are_placed_by_the_documents_spans_not_by_scanning_lines() {
        let at = |text: &str| {
            let err = parse(text).unwrap_err();
            (err.line, err.key)
        };
        // A value in an inline table: its own key, not the line's first.
        assert_eq!(
            at("[executors.x]\nkind = \"command\"\ncommand = [\"true\"]\ncost = { base = 1.0, per_second = \"fast\" }\n"),
            (Some(4), Some("per_second".into()))
        );
        // A value after a multi-line array.
        assert_eq!(
            at("[executors.x]\nkind = \"command\"\ncommand = [\n  \"true\",\n]\ntimeout = \"soon\"\n"),
            (Some(6), Some("timeout".into()))
        );
        // Dotted keys and a spaced header: no `[executors.x]` line exists.
        assert_eq!(
            at("[executors]\nx.kind = \"command\"\nx.command = [\"true\"]\nx.url = \"http://a/\"\n"),
            (Some(4), Some("executors.x.url".into()))
        );
        assert_eq!(
            at("[ executors.chat ]\nkind = \"http\"\nurl = \"http://a/\"\nmode = \"openai\"\n"),
            (Some(4), Some("executors.chat.mode".into()))
        );
    }

    #[test]
    fn durations_read_every_unit() {
        let file = parse(
            "[limits]\nclock_skew = \"500ms\"\nmax_task_lifetime = \"2m\"\ndrain_timeout = 7\n",
        )
        .unwrap();
        let limits = file.limits();
        assert_eq!(limits.clock_skew, Duration::from_millis(500));
        assert_eq!(limits.max_task_lifetime, Duration::from_secs(120));
        assert_eq!(limits.drain_timeout, Duration::from_secs(7));
        assert_eq!(limits.max_body_bytes, Limits::default().max_body_bytes);
    }

    #[test]
    fn the_connection_bounds_are_read_and_checked() {
        let file = parse(
            "[limits]\nmax_header_bytes = 16384\nmax_connections = 100\nmax_connections_per_address = 10\n",
        )
        .unwrap();
        let limits = file.limits();
        assert_eq!(limits.max_header_bytes, 16384);
        assert_eq!(limits.connections_per_address(), 10);
        assert_eq!(limits.check(), Ok(()));
        let defaults = parse("").unwrap().limits();
        assert_eq!(defaults.max_header_bytes, 65536);
        assert_eq!(defaults.connections_per_address(), 512);
        let over = parse("[limits]\nmax_connections = 100\nmax_connections_per_address = 101\n")
            .unwrap()
            .limits();
        assert!(over
            .check()
            .unwrap_err()
            .to_string()
            .contains("at most max_connections (100)"));
        let small = parse("[limits]\nmax_header_bytes = 4096\n")
            .unwrap()
            .limits();
        assert!(small
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("max_header_bytes must be from 8192"));
    }

    #[test]
    fn the_shown_config_never_holds_a_literal_header_value() {
        let file = parse(
            "[executors.chat]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { Authorization = \"Bearer s3cret\", X-Key = { env = \"CHAT_KEY\" } }\n",
        )
        .unwrap();
        let shown = file.to_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("CHAT_KEY"),
            "{shown}"
        );
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sage.toml");
        std::fs::write(&path, "[node]\nkeys_dir = \"keys\"\n").unwrap();
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.node.keys_dir.unwrap(), dir.path().join("keys"));
    }
}
