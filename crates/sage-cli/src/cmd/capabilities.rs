//! `sage capabilities HOST:PORT`: a node's signed self-description, verified.

use crate::output::out;
use std::path::Path;
use std::time::Duration;

use sage_crypto::{verify_envelope, VerifyError};
use sage_service::delegator::client::Client;
use sage_service::keydir::KeyDir;
use sage_types::capabilities::{Capabilities, CAPABILITIES_PAYLOAD_TYPE};
use sage_types::untrusted::Untrusted;
use serde_json::json;

use crate::failure::{CmdResult, Failure};
use crate::json;

/// Show what a node serves and runs on, after verifying its signature
/// against the known peers.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    node: super::NodeQuery,
}

pub fn run(keys_dir: &Path, Args { node: mut args }: Args) -> CmdResult {
    let timeout = args.timeout();
    let trust = KeyDir::new(keys_dir).trust_store("")?;
    let client = args.client(Some(&trust))?;
    let envelope = super::runtime(false)?.block_on(client.capabilities(&args.address, timeout))?;
    let verified = verify_envelope(&envelope, CAPABILITIES_PAYLOAD_TYPE, &trust).map_err(|e| {
        let VerifyError::UnknownKey { key_ids } = &e else {
            return Failure::Failed(format!(
                "the capabilities of {} do not verify: {e}",
                args.address
            ));
        };
        // Who the node says it is (unverified): a known peer with a new
        // key is told apart from a node that is not known at all.
        let claimed = envelope
            .payload_bytes()
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Capabilities>(&bytes).ok())
            .and_then(|caps| trust.by_lct(&caps.lct_id).cloned());
        match claimed {
            Some(peer) => Failure::Failed(format!(
                "the capabilities of {} are signed by key {}, but {} is known with key {}; if {} made a new key, re-add it with `sage peer add --name {} --public-key HEX --replace` (`sage key show --public-only` on it prints HEX)",
                args.address,
                Untrusted(key_ids),
                peer.name,
                peer.key_id,
                peer.name,
                peer.name
            )),
            None => Failure::Failed(format!(
                "the capabilities of {} do not verify: {e}; add the node with `sage peer add`",
                args.address
            )),
        }
    })?;
    let caps: Capabilities = serde_json::from_slice(&verified.payload)
        .map_err(|e| Failure::Failed(format!("the signed capabilities are malformed: {e}")))?;
    if caps.lct_id != verified.signer.lct_id {
        return Err(Failure::Failed(format!(
            "the capabilities claim to be {} but are signed by {} ({})",
            caps.lct_id, verified.signer.name, verified.signer.lct_id
        )));
    }
    if json::enabled() {
        json::report(
            json!({ "verified": true, "address": args.address, "signer": verified.signer.name, "key_id": verified.signer.key_id.to_string(), "capabilities": caps }),
        );
        return Ok(());
    }
    out!(
        "{} ({}) at {}, sage {}",
        caps.platform,
        caps.lct_id,
        args.address,
        caps.version
    );
    out!(
        "✓ signed by {}'s known key {}",
        verified.signer.name,
        verified.signer.key_id
    );
    print_summary(&caps);
    Ok(())
}

/// The task types and hardware, one line each.
pub fn print_summary(caps: &Capabilities) {
    let hw = &caps.hardware;
    let memory = hw
        .memory_bytes
        .map(|b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    out!(
        "hardware:   {} CPUs{}{memory}",
        hw.cpus,
        hw.cpu_model
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    for gpu in &hw.gpus {
        let mem = gpu
            .memory_mib
            .map(|m| format!(", {m} MiB"))
            .unwrap_or_default();
        let driver = gpu
            .driver
            .as_ref()
            .map(|d| format!(", driver {d}"))
            .unwrap_or_default();
        out!("gpu:        {}{mem}{driver}", gpu.name);
    }
    if let Some(model) = &hw.device_model {
        out!("device:     {model}");
    }
    for t in &caps.task_types {
        let limit = match (t.max_concurrency, t.queue_depth) {
            (Some(max), Some(queue)) => format!(
                ", {}/{max} running, {}/{queue} waiting",
                t.running, t.waiting
            ),
            _ => String::new(),
        };
        let cost = t
            .cost
            .map(|c| format!(", cost {} + {}/s ATP", c.base, c.per_second))
            .unwrap_or_default();
        let ceiling = t
            .max_cost
            .map(|m| format!(", max {m} ATP"))
            .unwrap_or_default();
        // A peer's words: escaped like every other text it sends.
        let model = t
            .model
            .as_ref()
            .map(|m| format!(", model {}", Untrusted(m)))
            .unwrap_or_default();
        out!(
            "task type:  {} ({}{model}{limit}{cost}{ceiling})",
            t.task_type,
            t.kind
        );
    }
}

/// Fetches the capabilities for `sage health`'s summary, unverified.
pub fn fetch_unverified(
    client: &Client,
    runtime: &tokio::runtime::Runtime,
    addr: &str,
) -> Option<Capabilities> {
    let envelope = runtime
        .block_on(client.capabilities(addr, Duration::from_secs(5)))
        .ok()?;
    serde_json::from_slice(&envelope.payload_bytes().ok()?).ok()
}
