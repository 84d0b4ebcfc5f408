//! `sage serve`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use sage_crypto::TrustStore;
use sage_exec::{ExecutorSet, Leftovers};
use sage_service::config::{NodeConfig, Overrides, TlsFiles};
use sage_service::delegator::client::Client;
use sage_service::delegator::fleet::{Canary, Fleet};
use sage_service::delegator::route;
use sage_service::keydir::Identity;
use sage_service::local;
use sage_service::node::BlobStore;
use sage_service::node::{self, hardware, systemd, AppState, NodeSetup, Policy, Shutdown};
use sage_service::tls::ServerTls;
use sage_store::{Check, Durability, Store};

use crate::advice;
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
    /// How far task times may differ from this node's clock (seconds, or
    /// e.g. `5m`) [default: 300].
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    clock_skew: Option<Duration>,
    /// Longest validity that a task may claim (seconds, or e.g. `1h`)
    /// [default: 3600].
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    max_task_lifetime: Option<Duration>,
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
    /// How long in-flight tasks may run after SIGINT/SIGTERM (seconds, or
    /// e.g. `2m`) [default: 30].
    #[arg(long, value_name = "DURATION", value_parser = super::duration)]
    drain_timeout: Option<Duration>,
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

impl Args {
    /// What the flags set, for [`NodeConfig::resolve`].
    fn overrides(&self, keys_dir: Option<&Path>, state_dir: Option<&Path>) -> Overrides {
        Overrides {
            config: self.config.clone(),
            keys_dir: keys_dir.map(Path::to_owned),
            state_dir: state_dir.map(Path::to_owned),
            name: self.name.clone(),
            host: self.host,
            port: self.port,
            max_body_bytes: self.max_body_bytes,
            clock_skew: self.clock_skew,
            max_task_lifetime: self.max_task_lifetime,
            drain_timeout: self.drain_timeout,
            durability: self.durability.map(Durability::from),
            task_retention_days: self.task_retention_days,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

pub fn run(
    keys_dir: Option<&Path>,
    state_dir: Option<&Path>,
    logging: &crate::Logging,
    args: Args,
) -> CmdResult {
    let config = match NodeConfig::resolve(args.overrides(keys_dir, state_dir)) {
        Ok(config) => config,
        Err(e) => {
            let _ = logging.start(None, None);
            return Err(e.into());
        }
    };
    // Read once: a reload keeps the exporter it started with.
    // A bad one in the file is the config check's to report, at its line.
    let configured = config
        .file
        .telemetry
        .otlp_endpoint
        .as_deref()
        .filter(|e| sage_service::telemetry::check_endpoint(e).is_ok());
    logging.start(configured, Some(&config.name))?;
    let otlp = logging.endpoint(configured);
    let node = Opened::open(&config)?;
    node.banner(&config);
    if let Some(endpoint) = otlp {
        tracing::info!("  traces to:  {endpoint}");
    }
    node.serve(config)
}

/// What a node opens before it serves: the TLS files, the state directory
/// (under its lock), the key, the trust store and the executors.
struct Opened {
    tls: Option<ServerTls>,
    store: Store,
    identity: Identity,
    key_source: &'static str,
    lct_id: String,
    trust: TrustStore,
    leftovers: Leftovers,
    executors: ExecutorSet,
}

impl Opened {
    fn open(config: &NodeConfig) -> Result<Self, Failure> {
        // Under systemd, the key is the credential `LoadCredential=sage.key:FILE`.
        let keys = &config.keys;
        let credential = systemd::credential_identity(keys, &config.name)?;
        // What `sage config check` finds, all at once, before anything opens.
        config.check(credential.is_none())?;
        let tls = config.tls.as_ref().map(server_tls).transpose()?;
        // The state directory's lock first, so that nothing below touches a
        // live node's state; every page is then read once: damage is found
        // before any task.
        let store = Store::open_with(&config.state_dir, config.durability, Check::Whole)?;
        let (identity, key_source) = match credential {
            Some(identity) => (identity, "systemd credential sage.key"),
            None => (keys.load_identity(&config.name)?, "key directory"),
        };
        let lct_id = config
            .lct_id
            .clone()
            .unwrap_or_else(|| identity.lct_id.clone());
        let trust = keys.trust_store(&identity.name)?;
        let leftovers = Leftovers::new(config.state_dir.join(PROGRAMS_DIR));
        let executors = config.executors(Some(&leftovers))?;
        Ok(Opened {
            tls,
            store,
            identity,
            key_source,
            lct_id,
            trust,
            leftovers,
            executors,
        })
    }

    /// Logs who the node is, what it trusts and what it serves.
    fn banner(&self, config: &NodeConfig) {
        let identity = &self.identity;
        let public = identity.key.public();
        tracing::info!("SAGE federation node {}", identity.name);
        match &config.path {
            Some(path) => tracing::info!("  config:     {}", path.display()),
            None => tracing::info!("  config:     none (flags and defaults)"),
        }
        tracing::info!("  LCT id:     {}", self.lct_id);
        tracing::info!("  key file:   {}", identity.key_path.display());
        tracing::info!("  key from:   {}", self.key_source);
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
        if self.trust.is_empty() {
            tracing::warn!(
                "no known platforms: every task will be refused; add peers with `sage peer add`"
            );
        }
        for peer in self.trust.iter() {
            tracing::info!(
                "  known platform: {} ({}, {}) from {}",
                peer.name,
                peer.lct_id,
                peer.key_id,
                peer.sources_text()
            );
        }
        let served: Vec<String> = self
            .executors
            .describe()
            .iter()
            .map(|(t, k)| format!("{t}={k}"))
            .collect();
        tracing::info!("  executors:  {}", served.join(", "));
    }

    /// Cleans up after a stopped node, then serves until SIGINT or SIGTERM
    /// and closes the database.
    fn serve(self, config: NodeConfig) -> CmdResult {
        let Opened {
            tls,
            store,
            identity,
            lct_id,
            trust,
            leftovers,
            executors,
            ..
        } = self;
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
        let interrupted = runtime.block_on(store.interrupt_running(sage_types::clock::now_ms()))?;
        let retention = match config.task_retention_days {
            0 => "every task kept".to_string(),
            days => format!("finished tasks kept {days} days past their expiry"),
        };
        tracing::info!(
            "  state:      {} (durable against {:?}; {retention})",
            store.path().display(),
            config.durability
        );
        if interrupted > 0 {
            tracing::warn!("{interrupted} task(s) were running when the node stopped: marked interrupted; a retry gets a signed proof saying so");
        }
        let hardware = runtime.block_on(hardware::detect());
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
        // Canary tasks are signed with the node's own key (shared, not
        // copied).
        let signer = || Identity {
            name: identity.name.clone(),
            lct_id: lct_id.clone(),
            key: identity.key.clone(),
            key_path: identity.key_path.clone(),
            loose_mode: None,
        };
        let canary = (signer(), config.file.routing.canary_rate.unwrap_or(0.0));
        // Local applications' tasks are signed with it too.
        let local_signer = signer();
        let state = AppState::new(NodeSetup {
            name: identity.name.clone(),
            lct_id,
            key: identity.key,
            trust,
            executors,
            limits: config.limits.clone(),
            hardware,
            store: store.clone(),
        });
        let blobs = open_blobs(&config)?;
        state.set_blobs(blobs.clone());
        let (addr, retention_days) = (config.listen, config.task_retention_days);
        let local = LocalPlan::of(&config, local_signer, tls.is_some())?;
        // The local API's delegations: their ledger records as configured,
        // the node's task records as `durability` says.
        let ledger = store.with_ledger_durability(config.ledger_durability);
        let reload = Reload { config, leftovers };
        // The router starts from what this state directory's ledger saw in
        // the last hour, and is exported on /metrics from then on.
        let fleet = Arc::new(Fleet::new(sage_route::Policy::default()));
        runtime.block_on(route::rebuild_from(fleet.router(), &store))?;
        state.set_route_view(route_view(fleet.clone()));

        let closer = store.closer();
        let served = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                Failure::Failed(format!(
                    "cannot listen on {addr}: {e}; is another process using the port? (try --port)"
                ))
            })?;
            let bound = listener.local_addr()?;
            let local_socket = match local {
                Some(local) => Some(local.start(bound, &state, &ledger, &fleet)?),
                None => None,
            };
            tokio::spawn(refresh_fleet(fleet, state.clone(), store.clone(), canary));
            tokio::spawn(prune(store, retention_days, blobs, state.clone()));
            tokio::spawn(reload_on_hangup(state.clone(), reload));
            tracing::info!("  endpoints:  GET /health, GET /metrics, GET /v1/capabilities, POST /v1/tasks, PUT/HEAD /v1/blobs/sha256:…, POST /execute_task (legacy)");
            if let Some(tls) = &tls {
                tracing::info!("  TLS:        certificate {} (peers pin it with --tls-fingerprint)", tls.fingerprint());
            }
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!("listening on {scheme}://{bound}");
            // Tell systemd (if it started us) we are ready, stopping, and alive.
            systemd::ready(&format!("serving on {bound}"));
            if let (Some(notifier), Some(timeout)) = (systemd::notifier(), systemd::watchdog_interval()) {
                tokio::spawn(systemd::watchdog_task(notifier, timeout));
            }
            let signal = async {
                node::shutdown_signal().await;
                systemd::stopping();
            };
            let served = node::serve_with(listener, state, tls, signal).await;
            if let Some(path) = local_socket {
                // The next start would remove it as stale; a clean stop
                // leaves nothing behind.
                let _ = std::fs::remove_file(path);
            }
            match served? {
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
}

/// The local API, as the config asks for it.
struct LocalPlan {
    socket: PathBuf,
    allow: local::Allow,
    signer: Identity,
    max_body_bytes: usize,
    tls: bool,
    /// The loopback port and its token, if `[local] listen` is set.
    port: Option<(std::net::SocketAddr, local::Token)>,
}

impl LocalPlan {
    /// `None` when `[local] enabled = false`.
    fn of(config: &NodeConfig, signer: Identity, tls: bool) -> Result<Option<LocalPlan>, Failure> {
        let section = &config.file.local;
        if section.enabled == Some(false) {
            return Ok(None);
        }
        let port = match (section.listen, &section.token_file) {
            (None, None) => None,
            (Some(listen), Some(file)) => {
                if !listen.ip().is_loopback() {
                    return Err(Failure::Failed(format!(
                        "[local] listen = \"{listen}\" is not a loopback address: the local API's port takes a bearer token over plain HTTP, so it listens on 127.0.0.1 or ::1 only"
                    )));
                }
                Some((listen, read_token(file)?))
            }
            _ => {
                return Err(Failure::Failed(
                    "[local] listen and token_file go together: the loopback port needs the token that callers present".into(),
                ))
            }
        };
        Ok(Some(LocalPlan {
            socket: section
                .socket
                .clone()
                .unwrap_or_else(|| local::default_socket(&config.state_dir)),
            allow: local::Allow::from_config(section),
            signer,
            max_body_bytes: config.limits.max_body_bytes,
            tls,
            port,
        }))
    }

    /// Listens on the socket and serves the local API on the runtime;
    /// returns the socket's path.
    fn start(
        self,
        bound: std::net::SocketAddr,
        state: &AppState,
        store: &Store,
        fleet: &Arc<Fleet>,
    ) -> Result<PathBuf, Failure> {
        let listener =
            local::bind(&self.socket).map_err(|e| Failure::Failed(advice::message(&e)))?;
        // This node is a candidate of its own routing over plain HTTP; over
        // TLS it would need its own certificate pinned, so it is left out.
        let host = if bound.ip().is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        let node_addr =
            (!self.tls).then(|| std::net::SocketAddr::new(host, bound.port()).to_string());
        let api = local::Local::new(local::Setup {
            local: self.signer,
            state: state.clone(),
            store: store.clone(),
            fleet: fleet.clone(),
            node_addr,
            allow: self.allow.clone(),
            max_body_bytes: self.max_body_bytes,
        });
        let router = api.socket_router();
        if let Some((listen, token)) = self.port {
            let listener = std::net::TcpListener::bind(listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std)
                .map_err(|e| {
                    Failure::Failed(format!(
                        "cannot listen on [local] listen = \"{listen}\": {e}"
                    ))
                })?;
            let bound = listener.local_addr()?;
            let router = api.token_router(token);
            tokio::spawn(async move {
                if let Err(e) = local::serve_port(listener, router).await {
                    tracing::error!("the local API stopped: {e}");
                }
            });
            tracing::info!("  local API:  http://{bound} (bearer token)");
        }
        let socket = self.socket.clone();
        tokio::spawn(async move {
            if let Err(e) = local::serve(listener, router).await {
                tracing::error!("the local API stopped: {e}");
            }
        });
        tracing::info!(
            "  local API:  {} (uids {:?}, groups {:?})",
            socket.display(),
            self.allow.uids,
            self.allow.groups
        );
        Ok(socket)
    }
}

/// The local API port's token from `path`, which only the node's user may
/// read.
fn read_token(path: &Path) -> Result<local::Token, Failure> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::Failed(format!("cannot read [local] token_file {shown}: {e}")))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Failure::Failed(format!(
            "[local] token_file {shown} has mode {mode:o}: group or others can read the token; run `chmod 600 {shown}`"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Failed(format!("cannot read [local] token_file {shown}: {e}")))?;
    local::Token::new(&text)
        .ok_or_else(|| Failure::Failed(format!("[local] token_file {shown} is empty")))
}

/// How long a stopping node waits for its database to close (within the
/// systemd unit's `TimeoutStopSec=` after a full drain).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The state directory's subdirectory where running programs are recorded.
const PROGRAMS_DIR: &str = "programs";

/// What SIGHUP needs to read the policy again from the same places as at
/// start: the resolved configuration (which knows its flags and file) and
/// where `command` executors record their running programs.
#[derive(Debug, Clone)]
struct Reload {
    config: NodeConfig,
    leftovers: Leftovers,
}

impl Reload {
    /// Reads the config file and the trust store again and builds the
    /// executors; logs each setting that changed but needs a restart.
    fn policy(&self) -> Result<Policy, Failure> {
        let config = self.config.reload()?;
        for key in self.config.restart_only_changes(&config) {
            tracing::warn!("reload: {key} changed; it takes effect only after a restart");
        }
        // The checks of the start, but of what a reload reads again: not
        // the key or the TLS files, which only a restart does.
        let mut reread = config.clone();
        reread.tls = None;
        reread.check(false)?;
        Ok(Policy {
            trust: config.keys.trust_store(&config.name)?,
            executors: config.executors(Some(&self.leftovers))?,
            limits: config.limits,
        })
    }
}

/// How often a node asks its peers for their capabilities again: within
/// their minute of validity, so that a routed delegation finds them fresh.
const FLEET_REFRESH: Duration = Duration::from_secs(30);

/// At start and every [`FLEET_REFRESH`]: asks the trusted peers (as the
/// node trusts them now, reloads included) for their capabilities.
async fn refresh_fleet(
    fleet: Arc<Fleet>,
    state: AppState,
    store: Store,
    (local, canary_rate): (Identity, f64),
) {
    let mut every = tokio::time::interval(FLEET_REFRESH);
    loop {
        every.tick().await;
        let trust = state.policy().trust.clone();
        let client_for = |peer: &sage_crypto::Peer| {
            Client::with_tls_connect_timeout(&peer.tls, Duration::from_secs(2))
        };
        let canary = (canary_rate > 0.0).then_some(Canary {
            local: &local,
            rate: canary_rate,
        });
        fleet
            .refresh(
                &trust,
                &local.lct_id,
                &store,
                client_for,
                route::CAPABILITIES_WITHIN,
                canary,
            )
            .await;
    }
}

/// The router's view of each peer, as `/metrics` exports it.
fn route_view(fleet: Arc<Fleet>) -> node::RouteView {
    Arc::new(move || {
        let now = sage_types::clock::now_ms() as f64 / 1000.0;
        fleet
            .snapshot()
            .into_iter()
            .map(|p| node::RouteGauge {
                peer: p.name,
                in_flight: p.in_flight,
                latency_seconds: p.latency.as_secs_f64(),
                cooling_until: p.cooling_for.map(|d| now + d.as_secs_f64()),
                ejections: p.ejections,
                score: p.score,
            })
            .collect()
    })
}

/// The blob store of `STATE_DIR/blobs`, its unfinished uploads cleared
/// and the blobs past their time deleted, before any request.
fn open_blobs(config: &NodeConfig) -> Result<BlobStore, Failure> {
    let dir = config.blob_dir();
    let retention = match config.task_retention_days {
        0 => None,
        days => Some(Duration::from_secs(u64::from(days) * 24 * 3600)),
    };
    let blobs = BlobStore::open(&dir, retention).map_err(|e| {
        Failure::Failed(format!(
            "cannot open the blob directory {}: {e}",
            dir.display()
        ))
    })?;
    collect_blobs(&blobs, &config.limits);
    Ok(blobs)
}

/// Deletes the blobs no task keeps that are older than
/// `unreferenced_blob_ttl`.
fn collect_blobs(blobs: &BlobStore, limits: &sage_service::config::Limits) {
    match blobs.collect_garbage(limits.unreferenced_blob_ttl, std::time::SystemTime::now()) {
        Ok(0) => {}
        Ok(deleted) => tracing::info!("deleted {deleted} blob(s) that no kept task names"),
        Err(e) => tracing::warn!("cannot collect unreferenced blobs: {e}"),
    }
}

/// Every minute: forgets the nonces whose tasks can no longer be accepted
/// anyway, the finished tasks past their retention (none if it is 0), and
/// the blobs that no kept task names.
async fn prune(store: Store, retention_days: u32, blobs: BlobStore, state: AppState) {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let (blobs, limits) = (blobs.clone(), state.limits());
        let _ = tokio::task::spawn_blocking(move || collect_blobs(&blobs, &limits)).await;
        let now = sage_types::clock::now_ms();
        if let Err(e) = store.prune(now).await {
            tracing::warn!("cannot prune old nonces: {}", advice::message(&e));
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
            Err(e) => tracing::warn!("cannot prune old task records: {}", advice::message(&e)),
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
        systemd::reloading();
        let reading = reload.clone();
        // Reading files and building executors: off the runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || reading.policy())
            .await
            .unwrap_or_else(|e| Err(Failure::Failed(format!("the reload panicked: {e}"))));
        let status = match loaded {
            Ok(policy) => {
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
        systemd::ready(status);
    }
}

/// Loads the TLS certificate and key to serve with, warning when the key
/// file is readable by others.
fn server_tls(files: &TlsFiles) -> Result<ServerTls, Failure> {
    let tls = ServerTls::load(&files.cert, &files.key)?;
    if let Some(mode) = tls.key_loose_mode() {
        tracing::warn!(
            "TLS key file {} has mode {mode:o}: group or others can read it; run `chmod 600 {}`",
            files.key.display(),
            files.key.display()
        );
    }
    Ok(tls)
}
