//! `sage health HOST:PORT`.

use crate::output::out;
use std::path::Path;

use sage_service::keydir::KeyDir;
use serde_json::json;

use crate::failure::CmdResult;
use crate::json;

/// Check a node: prints platform, LCT id, status and round-trip time.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: super::NodeQuery,
}

const TROUBLESHOOTING: &str = "troubleshooting:\n  - is the node running? (`sage serve --name NAME` there, or `systemctl status sage`)\n  - is the port open? (`sudo ufw allow 50051/tcp`, or your firewall's equivalent)\n  - can this machine reach it? (`ping HOST`; same network or VPN?)\n  - does it listen on the network, not only on 127.0.0.1? (`sage serve --host 0.0.0.0`)";

pub fn run(keys_dir: &Path, Args { node: args }: Args) -> CmdResult {
    let timeout = args.timeout;
    // A known peer at this address lends its TLS settings; the key
    // directory is optional here, so a bad one is no error.
    let peers = KeyDir::new(keys_dir).trust_store("").ok();
    let client = args.client(peers.as_ref())?;
    let runtime = super::runtime(false)?;
    let result = runtime.block_on(client.health(&args.address, timeout));
    let (health, rtt) = match result {
        Ok(ok) => ok,
        Err(err) => {
            if !json::enabled()
                && !matches!(
                    err,
                    sage_service::ClientError::Tls { .. }
                        | sage_service::ClientError::TooLarge { .. }
                )
            {
                // The checklist is about reaching the node: no help once
                // a TLS handshake failed or the node answered.
                eprintln!("{TROUBLESHOOTING}");
            }
            return Err(err.into());
        }
    };
    let rtt_ms = rtt.as_secs_f64() * 1000.0;
    // A summary of what it serves; a Python node has no capabilities.
    let caps = super::capabilities::fetch_unverified(&client, &runtime, &args.address);
    if json::enabled() {
        let mut report = json!({
            "address": args.address,
            "healthy": true,
            "rtt_ms": json::ms3(rtt_ms),
            "health": health,
            "capabilities": caps,
        });
        // The node's own clock, in unix seconds on the wire.
        let answered = (health.timestamp.is_finite() && health.timestamp >= 0.0)
            .then(|| (health.timestamp * 1000.0).round() as u64);
        json::insert_time(&mut report, "answered_at", answered);
        json::report(report);
    } else {
        out!(
            "{} ({}) at {}: {}",
            health.platform,
            health.lct_id,
            args.address,
            health.status
        );
        out!("round trip: {rtt_ms:.2} ms");
        if let Some(key_id) = &health.key_id {
            out!("key id:     {key_id}");
        }
        if let Some(version) = &health.version {
            out!("version:    sage {version}");
        }
        if let Some(caps) = &caps {
            super::capabilities::print_summary(caps);
            out!(
                "(unverified summary; `sage capabilities {}` checks its signature)",
                args.address
            );
        }
    }
    Ok(())
}
