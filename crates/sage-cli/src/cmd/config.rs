//! `sage config check`.

use crate::output::{out, out_part};
use std::path::{Path, PathBuf};

use sage_service::config::check::check_file;
use sage_service::config::file::{ConfigFile, DEFAULT_PATHS};

use crate::failure::{CmdResult, Failure};
use crate::json;
use serde_json::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate a config file (executors included) and print the effective
    /// configuration, defaults filled in and secrets redacted.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Config file [default: ./sage.toml, else /etc/sage/sage.toml].
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(keys_dir: Option<&Path>, command: Command) -> CmdResult {
    let Command::Check(args) = command;
    let path = match &args.config {
        Some(path) => path.clone(),
        None => DEFAULT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| {
                Failure::Failed(format!(
                    "no config file: looked for {}; pass --config FILE",
                    DEFAULT_PATHS.join(", ")
                ))
            })?,
    };
    // Everything serve would fail on, all at once: the text, the
    // executors' programs, URLs and secrets, the node's key, the TLS files.
    let mut file = check_file(&path, keys_dir)?;
    let platform = file.node.name.clone().unwrap_or_else(|| "node".into());
    let executors = file.executors(&path, &platform, None, None)?;
    fill_defaults(&mut file);
    if json::enabled() {
        let served: Vec<_> = executors
            .describe()
            .iter()
            .map(|(t, k)| json!({ "task_type": t, "kind": k }))
            .collect();
        json::report(json!({
            "file": path,
            "valid": true,
            "executors": served,
            "config": serde_json::to_value(&file).unwrap_or_default(),
        }));
        return Ok(());
    }
    out!("# effective configuration of {}", path.display());
    if file.executors.is_empty() {
        let served: Vec<String> = executors
            .describe()
            .iter()
            .map(|(t, k)| format!("{t}={k}"))
            .collect();
        out!("# no [executors]: built-in {}", served.join(", "));
    }
    out_part!("{}", file.to_toml());
    Ok(())
}

fn fill_defaults(file: &mut ConfigFile) {
    use sage_service::config::file::Secs;
    let limits = file.limits();
    let node = &mut file.node;
    node.listen
        .get_or_insert(std::net::SocketAddr::from(([0, 0, 0, 0], 50051)));
    let keys = node
        .keys_dir
        .get_or_insert_with(|| PathBuf::from("keys"))
        .clone();
    node.peers_file
        .get_or_insert_with(|| Path::new(&keys).join("peers.toml"));
    let l = &mut file.limits;
    l.max_body_bytes = Some(limits.max_body_bytes);
    l.clock_skew = Some(Secs(limits.clock_skew));
    l.max_task_lifetime = Some(Secs(limits.max_task_lifetime));
    l.drain_timeout = Some(Secs(limits.drain_timeout));
    l.header_read_timeout = Some(Secs(limits.header_read_timeout));
    l.body_read_timeout = Some(Secs(limits.body_read_timeout));
    l.idle_timeout = Some(Secs(limits.idle_timeout));
    l.max_header_bytes = Some(limits.max_header_bytes);
    l.max_connections = Some(limits.max_connections);
    l.max_connections_per_address = Some(limits.connections_per_address());
    l.max_concurrent_requests = Some(limits.max_concurrent_requests);
    l.max_blob_bytes = Some(limits.max_blob_bytes);
    l.unreferenced_blob_ttl = Some(Secs(limits.unreferenced_blob_ttl));
    // peer_rate and peer_burst stay absent when unset: no limit.
}
