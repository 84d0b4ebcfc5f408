//! `sage health HOST:PORT`.

use crate::output::out;
use std::path::Path;

use sage_service::delegator::client::NodeAddress;
use sage_service::keydir::KeyDir;
use sage_service::ClientError;
use sage_types::untrusted::Untrusted;
use serde_json::json;

use crate::failure::CmdResult;
use crate::json;

/// Check a node: prints platform, LCT id, status and round-trip time.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: super::NodeQuery,
}

/// The checklist for a node that cannot be reached at `addr`, with its
/// host and the port that was tried.
fn troubleshooting(addr: &str) -> String {
    let (host, port) = match NodeAddress::parse(addr) {
        Ok(a) => {
            let port = a.port();
            (a.host, port)
        }
        Err(_) => (
            "HOST".to_owned(),
            sage_service::delegator::client::DEFAULT_PORT,
        ),
    };
    format!(
        "troubleshooting:\n  - is the node running? (`sage serve --name NAME --port {port}` there, or `systemctl status sage`)\n  - is the port open? (`sudo ufw allow {port}/tcp`, or your firewall's equivalent)\n  - can this machine reach it? (`ping {host}`; same network or VPN?)\n  - does it listen on the network, not only on 127.0.0.1? (`sage serve --host 0.0.0.0`)"
    )
}

pub fn run(keys_dir: &Path, Args { node: mut args }: Args) -> CmdResult {
    let timeout = args.timeout();
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
                && matches!(
                    err,
                    ClientError::Unreachable { .. } | ClientError::NoConnection { .. }
                )
            {
                // The checklist is about reaching the node: no help once
                // a connection was made, whatever came of it.
                eprintln!("{}", troubleshooting(&args.address));
            }
            return Err(err.into());
        }
    };
    let rtt_ms = rtt.as_secs_f64() * 1000.0;
    // A known peer that answers with another key: its proofs would not
    // verify, which the user should hear before delegating.
    let other_key = peers.as_ref().and_then(|peers| {
        let known = peers.by_lct(&health.lct_id)?;
        let found = health.key_id.as_deref()?;
        (found != known.key_id.to_string()).then(|| (known.name.clone(), known.key_id.to_string()))
    });
    if let Some((name, known)) = &other_key {
        let found = Untrusted(health.key_id.as_deref().unwrap_or_default());
        let public_key = Untrusted(health.public_key.as_deref().unwrap_or("HEX"));
        eprintln!(
            "warning: {name} is known with key {known}, but this node's key is {found}: its proofs will not verify; if {name} made a new key, re-add it with `sage peer add --name {name} --public-key {public_key} --replace`"
        );
    }
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
