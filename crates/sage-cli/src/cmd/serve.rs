//! `sage serve`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sage_service::config::Limits;
use sage_service::executor::ExecutorSet;
use sage_service::keydir::KeyDir;
use sage_service::server::{self, AppState, NodeSetup, Shutdown};

use crate::failure::{CmdResult, Failure};

/// Run a node until SIGINT or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This platform's name; its key is DIR/NAME_ed25519.key.
    #[arg(long)]
    name: String,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on (0: any free port, logged at start).
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Seconds that task times may differ from this node's clock.
    #[arg(long, default_value_t = Limits::default().clock_skew.as_secs())]
    clock_skew: u64,
    /// Longest validity, in seconds, that a task may claim.
    #[arg(long, default_value_t = Limits::default().max_task_lifetime.as_secs())]
    max_task_lifetime: u64,
    /// Most accepted tasks remembered against replay at once; each is kept
    /// for its lifetime plus the clock skew.
    #[arg(long, default_value_t = Limits::default().replay_capacity)]
    replay_capacity: usize,
    /// Seconds that in-flight tasks may run after SIGINT/SIGTERM.
    #[arg(long, default_value_t = Limits::default().drain_timeout.as_secs())]
    drain_timeout: u64,
}

pub fn run(keys_dir: &Path, args: Args) -> CmdResult {
    let keys = KeyDir::new(keys_dir);
    let identity = keys.load_identity(&args.name)?;
    let trust = keys.trust_store(&identity.name)?;
    let ip: std::net::IpAddr = args
        .host
        .parse()
        .map_err(|_| Failure::Usage(format!("--host {:?} is not an IP address", args.host)))?;
    let addr = SocketAddr::new(ip, args.port);
    let limits = Limits {
        max_body_bytes: args.max_body_bytes,
        clock_skew: Duration::from_secs(args.clock_skew),
        max_task_lifetime: Duration::from_secs(args.max_task_lifetime),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        replay_capacity: args.replay_capacity,
    };

    let public = identity.key.public();
    tracing::info!("SAGE federation node {}", identity.name);
    tracing::info!("  LCT id:     {}", identity.lct_id);
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
    let executors = ExecutorSet::builtin(&identity.name);
    let served: Vec<String> = executors
        .describe()
        .iter()
        .map(|(t, k)| format!("{t}={k}"))
        .collect();
    tracing::info!("  executors:  {}", served.join(", "));

    let state = AppState::new(NodeSetup {
        name: identity.name.clone(),
        lct_id: identity.lct_id.clone(),
        key: identity.key,
        trust,
        executors,
        limits,
    });

    let runtime = super::runtime(true)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::Failed(format!(
                "cannot listen on {addr}: {e}; is another process using the port? (try --port)"
            ))
        })?;
        let bound = listener.local_addr()?;
        tracing::info!("  endpoints:  GET /health, POST /v1/tasks");
        tracing::info!("listening on http://{bound}");
        match server::serve(listener, state, server::shutdown_signal()).await? {
            Shutdown::Drained => tracing::info!("stopped: all in-flight tasks finished"),
            Shutdown::DeadlinePassed { abandoned } => {
                tracing::warn!(
                    "stopped: drain deadline passed with {abandoned} task(s) still running"
                )
            }
        }
        Ok(())
    })
}
