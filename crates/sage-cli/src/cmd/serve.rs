//! `sage serve`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sage_exec::Leftovers;
use sage_service::config::file::{ConfigFile, NodeSection, DEFAULT_PATHS};
use sage_service::config::Limits;
use sage_service::keydir::KeyDir;
use sage_service::node::{self, AppState, NodeSetup, Policy, Shutdown};
use sage_service::tls::ServerTls;
use sage_store::{Check, Durability, Store};

use crate::failure::{CmdResult, Failure};

/// Run a node until SIGINT or SIGTERM. Flags override the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Config file [default: ./sage.toml if present, else /etc/sage/sage.toml if present, else flags alone].
    #[arg(long)]
    config: Option<PathBuf>,
    /// This platform's name; its key is DIR/NAME_ed25519.key [config: node.name].
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on [default: 0.0.0.0; config: node.listen].
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one and logs it [default: 50051; config: node.listen].
    #[arg(long)]
    port: Option<u16>,
    /// Largest request body accepted, in bytes [default: 1048576].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Seconds that task times may differ from this node's clock [default: 300].
    #[arg(long)]
    clock_skew: Option<u64>,
    /// Longest validity, in seconds, that a task may claim [default: 3600].
    #[arg(long)]
    max_task_lifetime: Option<u64>,
    /// What an accepted task survives before the node answers: `power-loss`
    /// (fsync first) or `crash` (no fsync on the request path, faster where
    /// fsync is slow) [default: power-loss; config: node.durability].
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// Days a finished task is kept after it expired, to answer retries
    /// from its record; 0 keeps every task [default: 30; config:
    /// node.task_retention_days].
    #[arg(long, value_name = "DAYS")]
    task_retention_days: Option<u32>,
    /// Seconds that in-flight tasks may run after SIGINT/SIGTERM [default: 30].
    #[arg(long)]
    drain_timeout: Option<u64>,
    /// Serve HTTPS only, with this PEM certificate chain (`sage tls
    /// self-signed` makes one) [config: node.tls_cert].
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert [config: node.tls_key].
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

/// `--durability` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Survive a power cut: fsync before answering.
    PowerLoss,
    /// Survive a crash of the process: no fsync on the request path.
    Crash,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Self {
        match arg {
            DurabilityArg::PowerLoss => Durability::PowerLoss,
            DurabilityArg::Crash => Durability::Crash,
        }
    }
}

/// The config file: the one given, else the first default path that
/// exists, else none.
pub fn find_config(given: Option<&Path>) -> Result<Option<(PathBuf, ConfigFile)>, Failure> {
    let path = match given {
        Some(path) => Some(path.to_owned()),
        None => DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
    };
    path.map(|path| {
        let file = ConfigFile::load(&path).map_err(|e| Failure::Failed(e.to_string()))?;
        Ok((path, file))
    })
    .transpose()
}

/// The key directory: the flag's, else the config file's, else `./keys`,
/// with the config file's `peers_file` if it names one.
fn key_dir(flag: Option<&Path>, file: &ConfigFile) -> KeyDir {
    let dir = flag
        .map(Path::to_owned)
        .or_else(|| file.node.keys_dir.clone())
        .unwrap_or_else(|| PathBuf::from("keys"));
    let keys = KeyDir::new(dir);
    match &file.node.peers_file {
        Some(peers) => keys.with_peers_file(peers),
        None => keys,
    }
}

/// Refuses limits that cannot work, naming the config file (or the flags).
pub fn check_limits(limits: &Limits, config: Option<&Path>) -> Result<(), Failure> {
    limits.check().map_err(|e| {
        let from = config.map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
        Failure::Failed(format!("{from}: [limits] {e}"))
    })
}

/// The config file's limits, with the flags' overrides, checked.
fn limits(file: &ConfigFile, config: Option<&Path>, args: &Args) -> Result<Limits, Failure> {
    let mut limits = file.limits();
    let secs = Duration::from_secs;
    limits.max_body_bytes = args.max_body_bytes.unwrap_or(limits.max_body_bytes);
    limits.clock_skew = args.clock_skew.map_or(limits.clock_skew, secs);
    limits.max_task_lifetime = args
        .max_task_lifetime
        .map_or(limits.max_task_lifetime, secs);
    limits.drain_timeout = args.drain_timeout.map_or(limits.drain_timeout, secs);
    check_limits(&limits, config)?;
    Ok(limits)
}

pub fn run(keys_dir: Option<&Path>, state_dir: Option<&Path>, args: Args) -> CmdResult {
    let (config_path, file) = match find_config(args.config.as_deref())? {
        Some((path, file)) => (Some(path), file),
        None => (None, ConfigFile::default()),
    };
    let name = args
        .name
        .clone()
        .or_else(|| file.node.name.clone())
        .ok_or_else(|| {
            Failure::Usage(
                "no platform name: pass --name NAME or set [node] name in the config file".into(),
            )
        })?;
    let keys_dir_flag = keys_dir.map(Path::to_owned);
    let keys = key_dir(keys_dir_flag.as_deref(), &file);
    let listen = file
        .node
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 50051)));
    let addr = SocketAddr::new(
        args.host.unwrap_or(listen.ip()),
        args.port.unwrap_or(listen.port()),
    );
    let limits = limits(&file, config_path.as_deref(), &args)?;
    let tls = server_tls(&file, &args)?;

    let state_dir = state_dir
        .map(Path::to_owned)
        .or_else(|| file.node.state_dir.clone())
        .unwrap_or_else(crate::default_state_dir);
    let durability = args
        .durability
        .map(Durability::from)
        .or(file.node.durability)
        .unwrap_or_default();
    let retention_days = args
        .task_retention_days
        .or(file.node.task_retention_days)
        .unwrap_or(DEFAULT_TASK_RETENTION_DAYS);
    // The state directory's lock first, so that nothing below touches a
    // live node's state; every page is then read once: damage is found
    // before any task.
    let store = Store::open_with(&state_dir, durability, Check::Whole)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    // Under systemd, the key is the credential `LoadCredential=sage.key:FILE`.
    let (identity, key_source) =
        match sage_service::node::systemd::credential_identity(&keys, &name)? {
            Some(identity) => (identity, "systemd credential sage.key"),
            None => (keys.load_identity(&name)?, "key directory"),
        };
    let lct_id = file
        .node
        .lct_id
        .clone()
        .unwrap_or_else(|| identity.lct_id.clone());
    let trust = keys.trust_store(&identity.name)?;
    let leftovers = Leftovers::new(state_dir.join(PROGRAMS_DIR));
    let executors = file
        .executors(
            config_path.as_deref().unwrap_or(Path::new("(flags)")),
            &identity.name,
            Some(&leftovers),
        )
        .map_err(|e| Failure::Failed(e.to_string()))?;

    let public = identity.key.public();
    tracing::info!("SAGE federation node {}", identity.name);
    match &config_path {
        Some(path) => tracing::info!("  config:     {}", path.display()),
        None => tracing::info!("  config:     none (flags and defaults)"),
    }
    tracing::info!("  LCT id:     {lct_id}");
    tracing::info!("  key file:   {}", identity.key_path.display());
    tracing::info!("  key from:   {key_source}");
    tracing::info!(
        "  public key: {}... ({})",
        &public.to_hex()[..16],
        public.key_id()
    );
    if let Some(mode) = identity.loose_mode {
        tracing::warn!(
            "private key file {} has mode {mode:o}: group or others can read it; run `chmod 600 {}`",
            identity.key_path.display(),
            identity.key_path.display()
        );
    }
    if trust.is_empty() {
        tracing::warn!(
            "no known platforms: every task will be refused; add peers with `sage peer add`"
        );
    }
    for peer in trust.iter() {
        tracing::info!(
            "  known platform: {} ({}, {}) from {}",
            peer.name,
            peer.lct_id,
            peer.key_id,
            peer.sources_text()
        );
    }
    let served: Vec<String> = executors
        .describe()
        .iter()
        .map(|(t, k)| format!("{t}={k}"))
        .collect();
    tracing::info!("  executors:  {}", served.join(", "));

    // Under the state directory's lock (taken by the store), before the
    // tasks they ran are marked interrupted: from then on they are not
    // running.
    match leftovers.kill_left() {
        Ok(killed) if !killed.is_empty() => tracing::warn!(
            "killed {} program(s) that the stopped node's tasks left running (process groups {killed:?})",
            killed.len()
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(
            dir = %leftovers.dir().display(), %error,
            "cannot look for programs that the stopped node's tasks left running"
        ),
    }
    let runtime = super::runtime(true)?;
    let interrupted = runtime
        .block_on(store.interrupt_running(sage_types::clock::now_ms()))
        .map_err(|e| Failure::Failed(e.to_string()))?;
    let retention = match retention_days {
        0 => "every task kept".to_string(),
        days => format!("finished tasks kept {days} days past their expiry"),
    };
    tracing::info!(
        "  state:      {} (durable against {durability:?}; {retention})",
        store.path().display()
    );
    if interrupted > 0 {
        tracing::warn!("{interrupted} task(s) were running when the node stopped: marked interrupted; a retry gets a signed proof saying so");
    }
    let hardware = runtime.block_on(sage_service::node::hardware::detect());
    tracing::info!(
        "  hardware:   {} CPUs{}{}",
        hardware.cpus,
        hardware
            .gpus
            .iter()
            .map(|g| format!(", {}", g.name))
            .collect::<String>(),
        hardware
            .device_model
            .as_ref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default()
    );
    let state = AppState::new(NodeSetup {
        name: identity.name.clone(),
        lct_id,
        key: identity.key,
        trust,
        executors,
        limits,
        hardware,
        store: store.clone(),
    });
    let reload = Reload {
        args: args.clone(),
        keys_dir_flag,
        name: identity.name.clone(),
        node: file.node.clone(),
        leftovers,
    };

    let closer = store.closer();
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::Failed(format!(
                "cannot listen on {addr}: {e}; is another process using the port? (try --port)"
            ))
        })?;
        let bound = listener.local_addr()?;
        tokio::spawn(prune(store, retention_days));
        tokio::spawn(reload_on_hangup(state.clone(), reload));
        tracing::info!("  endpoints:  GET /health, GET /metrics, GET /v1/capabilities, POST /v1/tasks, POST /execute_task (legacy)");
        if let Some(tls) = &tls {
            tracing::info!("  TLS:        certificate {} (peers pin it with --tls-fingerprint)", tls.fingerprint());
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{bound}");
        // Tell systemd (if it started us) we are ready, stopping, and alive.
        sage_service::node::systemd::ready(&format!("serving on {bound}"));
        if let (Some(notifier), Some(timeout)) = (
            sage_service::node::systemd::notifier(),
            sage_service::node::systemd::watchdog_interval(),
        ) {
            tokio::spawn(sage_service::node::systemd::watchdog_task(notifier, timeout));
        }
        let signal = async {
            node::shutdown_signal().await;
            sage_service::node::systemd::stopping();
        };
        match node::serve_with(listener, state, tls, signal).await? {
            Shutdown::Drained => tracing::info!("stopped: all in-flight tasks finished"),
            Shutdown::DeadlinePassed { abandoned } => {
                tracing::warn!("stopped: drain deadline passed with {abandoned} task(s) still running: their programs were killed and the tasks marked interrupted; a retry gets a signed proof saying so")
            }
        }
        Ok(())
    });
    // The runtime's tasks (nonce pruning, the SIGHUP watcher, abandoned
    // tasks) hold the last clones of the store; once they are dropped the
    // database thread checkpoints the log into the file and closes it.
    drop(runtime);
    if !closer.wait(CLOSE_TIMEOUT) {
        tracing::warn!(
            "the database was still closing after {} s; its write-ahead log is replayed at the next start",
            CLOSE_TIMEOUT.as_secs()
        );
    }
    served
}

/// How long a stopping node waits for its database to close (within the
/// systemd unit's `TimeoutStopSec=` after a full drain).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The state directory's subdirectory where running programs are recorded.
const PROGRAMS_DIR: &str = "programs";

/// Days a finished task is kept past its expiry unless told otherwise: a
/// retry that late is unlikely, and at a few KB per task the database stays
/// bounded by the work of a month.
const DEFAULT_TASK_RETENTION_DAYS: u32 = 30;

/// What SIGHUP needs to read the policy again from the same places as at
/// start: the flags, the config file, the key directory.
#[derive(Debug, Clone)]
struct Reload {
    args: Args,
    keys_dir_flag: Option<PathBuf>,
    /// This node's platform name: a reload does not change who it is.
    name: String,
    /// The `[node]` table the node started with: what only a restart changes.
    node: NodeSection,
    /// Where `command` executors record their running programs.
    leftovers: Leftovers,
}

impl Reload {
    /// Reads the config file (the one given, or the first default path that
    /// exists now) and the trust store, and builds the executors.
    fn policy(&self) -> Result<Policy, Failure> {
        let (path, file) = match find_config(self.args.config.as_deref())? {
            Some((path, file)) => (Some(path), file),
            None => (None, ConfigFile::default()),
        };
        self.warn_fixed(&file.node);
        let limits = limits(&file, path.as_deref(), &self.args)?;
        let keys = key_dir(self.keys_dir_flag.as_deref(), &file);
        let trust = keys.trust_store(&self.name)?;
        let executors = file
            .executors(
                path.as_deref().unwrap_or(Path::new("(flags)")),
                &self.name,
                Some(&self.leftovers),
            )
            .map_err(|e| Failure::Failed(e.to_string()))?;
        Ok(Policy {
            trust,
            executors,
            limits,
        })
    }

    /// Logs each `[node]` setting that changed but needs a restart.
    fn warn_fixed(&self, now: &NodeSection) {
        let before = &self.node;
        let changed = [
            ("name", before.name != now.name),
            ("lct_id", before.lct_id != now.lct_id),
            ("listen", before.listen != now.listen),
            ("state_dir", before.state_dir != now.state_dir),
            ("durability", before.durability != now.durability),
            (
                "task_retention_days",
                before.task_retention_days != now.task_retention_days,
            ),
            ("tls_cert", before.tls_cert != now.tls_cert),
            ("tls_key", before.tls_key != now.tls_key),
        ];
        for (key, differs) in changed {
            if differs {
                tracing::warn!(
                    "reload: [node] {key} changed; it takes effect only after a restart"
                );
            }
        }
    }
}

/// Every minute: forgets the nonces whose tasks can no longer be accepted
/// anyway, and the finished tasks past their retention (none if it is 0).
async fn prune(store: Store, retention_days: u32) {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let now = sage_types::clock::now_ms();
        if let Err(e) = store.prune(now).await {
            tracing::warn!("cannot prune old nonces: {e}");
        }
        if retention_days == 0 {
            continue;
        }
        let before = now.saturating_sub(u64::from(retention_days) * DAY_MS);
        match store.prune_tasks(before).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(
                "forgot {forgotten} finished task(s) past the {retention_days}-day retention"
            ),
            Err(e) => tracing::warn!("cannot prune old task records: {e}"),
        }
    }
}

/// On each SIGHUP: re-reads the config and the trust store and swaps them
/// in. Connections and in-flight tasks are not touched: requests that
/// started before keep the old policy, the next ones get the new. A file
/// that does not load keeps the old policy, and the log says why.
///
/// The handler is installed at once (before the node reports ready), so a
/// SIGHUP never finds the default action, which would end the process.
fn reload_on_hangup(
    state: AppState,
    reload: Reload,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup());
    async move {
        let mut hangups = match hangups {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}): reloading needs a restart");
                return;
            }
        };
        reload_loop(&state, &reload, &mut hangups).await;
    }
}

async fn reload_loop(state: &AppState, reload: &Reload, hangups: &mut tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("received SIGHUP: reloading the config and the trust store");
        sage_service::node::systemd::reloading();
        let reading = reload.clone();
        // Reading files and building executors: off the runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || reading.policy())
            .await
            .unwrap_or_else(|e| Err(Failure::Failed(format!("the reload panicked: {e}"))));
        let status = match loaded {
            Ok(policy) => {
                if policy.limits.max_connections != state.limits().max_connections {
                    tracing::warn!("reload: [limits] max_connections changed; it takes effect only after a restart");
                }
                let peers = policy.trust.len();
                let change = state.reload(policy);
                tracing::info!(
                    peers,
                    added = ?change.added,
                    removed = ?change.removed,
                    rekeyed = ?change.rekeyed,
                    "reloaded: new requests use the new config and trust store"
                );
                "serving (reloaded)"
            }
            Err(e) => {
                tracing::error!("reload failed; keeping the previous config and trust store: {e}");
                "serving (reload failed: previous config kept; see the log)"
            }
        };
        sage_service::node::systemd::ready(status);
    }
}

/// The TLS certificate and key to serve with, flags over the config file;
/// both or neither.
fn server_tls(file: &ConfigFile, args: &Args) -> Result<Option<ServerTls>, Failure> {
    let cert = args.tls_cert.clone().or_else(|| file.node.tls_cert.clone());
    let key = args.tls_key.clone().or_else(|| file.node.tls_key.clone());
    let (cert, key) =
        match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(Failure::Usage(
                "a TLS certificate without its key: pass --tls-key FILE (or set [node] tls_key)"
                    .into(),
            )),
            (None, Some(_)) => return Err(Failure::Usage(
                "a TLS key without its certificate: pass --tls-cert FILE (or set [node] tls_cert)"
                    .into(),
            )),
        };
    let tls = ServerTls::load(&cert, &key).map_err(|e| Failure::Failed(e.to_string()))?;
    if let Some(mode) = tls.key_loose_mode() {
        tracing::warn!(
            "TLS key file {} has mode {mode:o}: group or others can read it; run `chmod 600 {}`",
            key.display(),
            key.display()
        );
    }
    Ok(Some(tls))
}
