//! `sage serve`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sage_service::config::file::{ConfigFile, DEFAULT_PATHS};
use sage_service::keydir::KeyDir;
use sage_service::server::{self, AppState, NodeSetup, Shutdown};
use sage_service::store::{Durability, Store};

use crate::failure::{CmdResult, Failure};

/// Run a node until SIGINT or SIGTERM. Flags override the config file.
#[derive(Debug, clap::Args)]
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
    /// Seconds that in-flight tasks may run after SIGINT/SIGTERM [default: 30].
    #[arg(long)]
    drain_timeout: Option<u64>,
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
    let keys_dir = keys_dir
        .map(Path::to_owned)
        .or_else(|| file.node.keys_dir.clone())
        .unwrap_or_else(|| PathBuf::from("keys"));
    let mut keys = KeyDir::new(&keys_dir);
    if let Some(peers) = &file.node.peers_file {
        keys = keys.with_peers_file(peers);
    }
    let listen = file
        .node
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 50051)));
    let addr = SocketAddr::new(
        args.host.unwrap_or(listen.ip()),
        args.port.unwrap_or(listen.port()),
    );
    let mut limits = file.limits();
    let secs = Duration::from_secs;
    limits.max_body_bytes = args.max_body_bytes.unwrap_or(limits.max_body_bytes);
    limits.clock_skew = args.clock_skew.map_or(limits.clock_skew, secs);
    limits.max_task_lifetime = args
        .max_task_lifetime
        .map_or(limits.max_task_lifetime, secs);
    limits.drain_timeout = args.drain_timeout.map_or(limits.drain_timeout, secs);

    let state_dir = state_dir
        .map(Path::to_owned)
        .or_else(|| file.node.state_dir.clone())
        .unwrap_or_else(crate::default_state_dir);
    let durability = args
        .durability
        .map(Durability::from)
        .or(file.node.durability)
        .unwrap_or_default();
    let store =
        Store::open_with(&state_dir, durability).map_err(|e| Failure::Failed(e.to_string()))?;
    let identity = keys.load_identity(&name)?;
    let lct_id = file
        .node
        .lct_id
        .clone()
        .unwrap_or_else(|| identity.lct_id.clone());
    let trust = keys.trust_store(&identity.name)?;
    let executors = file
        .executors(
            config_path.as_deref().unwrap_or(Path::new("(flags)")),
            &identity.name,
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

    let runtime = super::runtime(true)?;
    let interrupted = runtime
        .block_on(store.interrupt_running(sage_service::clock::now_ms()))
        .map_err(|e| Failure::Failed(e.to_string()))?;
    tracing::info!(
        "  state:      {} (durable against {durability:?})",
        store.path().display()
    );
    if interrupted > 0 {
        tracing::warn!("{interrupted} task(s) were running when the node stopped: marked interrupted; a retry gets a signed proof saying so");
    }
    let hardware = runtime.block_on(sage_service::hardware::detect());
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

    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::Failed(format!(
                "cannot listen on {addr}: {e}; is another process using the port? (try --port)"
            ))
        })?;
        let bound = listener.local_addr()?;
        // Forget nonces whose tasks can no longer be accepted anyway.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                if let Err(e) = store.prune(sage_service::clock::now_ms()).await {
                    tracing::warn!("cannot prune old nonces: {e}");
                }
            }
        });
        tracing::info!("  endpoints:  GET /health, GET /v1/capabilities, POST /v1/tasks, POST /execute_task (legacy)");
        tracing::info!("listening on http://{bound}");
        match server::serve(listener, state, server::shutdown_signal()).await? {
            Shutdown::Drained => tracing::info!("stopped: all in-flight tasks finished"),
            Shutdown::DeadlinePassed { abandoned } => {
                tracing::warn!("stopped: drain deadline passed with {abandoned} task(s) still running")
            }
        }
        Ok(())
    })
}
