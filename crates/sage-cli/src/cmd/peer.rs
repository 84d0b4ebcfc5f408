//! `sage peer add|list|remove`: the trust store.

use crate::output::out;
use std::path::Path;

use sage_crypto::{Protocol, PublicKey};
use sage_service::delegator::route::Anchor;
use sage_service::keydir::KeyDir;
use sage_service::peers_file::{AddOutcome, PeerRecord, PeersFile};
use serde_json::json;

use super::ProtocolArg;
use crate::advice;
use crate::failure::{CmdResult, Failure};
use crate::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Trust a platform's public key (recorded in DIR/peers.toml).
    Add(AddArgs),
    /// List known peers: peers.toml records and other platforms' key files.
    List(ListArgs),
    /// Stop trusting a platform (removes its peers.toml record).
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Platform name (e.g. Sprout).
    #[arg(long)]
    name: String,
    /// LCT id, if not the default NAME_sage_lct (lowercased): 1 to 128
    /// ASCII letters, digits, '-' or '_', and no other peer's.
    #[arg(long)]
    lct: Option<String>,
    /// The platform's public key, 64 hex characters (`sage key show --public-only` on it).
    #[arg(long)]
    public_key: String,
    /// Where it listens: HOST[:PORT] or http(s)://HOST[:PORT] (port 50051
    /// if none).
    #[arg(long, value_parser = super::node_address)]
    address: Option<String>,
    /// The protocol it speaks.
    #[arg(long, value_enum, default_value = "v1")]
    protocol: ProtocolArg,
    /// Replace a record of the same name that has another key.
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    tls: super::tls::TrustArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// This node's name, whose own key file is not a peer: shown apart, and
    /// it must have a key in the key directory.
    #[arg(long)]
    local: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// Platform name (case-insensitive).
    #[arg(long)]
    name: String,
}

pub fn run(keys_dir: &Path, state_dir: &Path, command: Command) -> CmdResult {
    let keys = KeyDir::new(keys_dir);
    match command {
        Command::Add(args) => add(&keys, args),
        Command::List(args) => list(&keys, state_dir, args),
        Command::Remove(args) => remove(&keys, args),
    }
}

fn add(keys: &KeyDir, args: AddArgs) -> CmdResult {
    if !sage_types::identity::is_valid_name(&args.name) {
        return Err(Failure::Usage(format!(
            "invalid platform name {:?}: use 1 to 64 ASCII letters, digits, '-' or '_'",
            args.name
        )));
    }
    let lct_id = args
        .lct
        .unwrap_or_else(|| sage_types::default_lct_id(&args.name));
    // The check `serve` makes of the LCT ids it loads, and its message.
    sage_types::identity::check_lct_id(&lct_id).map_err(|e| Failure::Usage(e.to_string()))?;
    let key = PublicKey::from_hex(&args.public_key)
        .map_err(|e| Failure::Usage(format!("--public-key: {e}")))?;
    if let Some(address) = &args.address {
        args.tls.check(address)?;
    }
    let tls_fingerprint = match &args.tls.tls_fingerprint {
        Some(fp) => Some(super::tls::parse_fingerprint(fp)?.to_string()),
        None => None,
    };
    let tls_ca = match &args.tls.tls_ca {
        Some(ca) => {
            // Check it now, and record it absolute: peers.toml resolves
            // relative paths against its own directory.
            sage_service::tls::read_certificates(ca, "CA certificate")
                .map_err(|e| Failure::Usage(format!("--tls-ca: {}", advice::message(&e))))?;
            Some(
                std::path::absolute(ca)
                    .map_err(|e| Failure::Usage(format!("--tls-ca {}: {e}", ca.display())))?,
            )
        }
        None => None,
    };
    let record = PeerRecord {
        lct_id,
        name: args.name,
        public_key: key.to_hex(),
        address: args.address,
        protocol: Some(Protocol::from(args.protocol).as_str().to_owned()),
        tls_ca,
        tls_fingerprint,
    };
    let path = keys.peers_file();
    let outcome = keys.add_peer(record.clone(), args.replace)?;
    let verb = match outcome {
        AddOutcome::Added => "added",
        AddOutcome::Replaced => "updated",
    };
    if json::enabled() {
        json::report(json!({
            "outcome": verb,
            "name": record.name,
            "lct_id": record.lct_id,
            "key_id": key.key_id().to_string(),
            "address": record.address,
            "peers_file": path,
        }));
        return Ok(());
    }
    out!(
        "{verb} peer {} ({}, {}) in {}",
        record.name,
        record.lct_id,
        key.key_id(),
        path.display()
    );
    Ok(())
}

fn list(keys: &KeyDir, state_dir: &Path, args: ListArgs) -> CmdResult {
    // Without --local, the only key of the directory is this node's, as
    // `serve` takes it; with several, each is listed as a peer.
    let local = super::this_node(keys, args.local)?;
    let this = local
        .as_deref()
        .map(|name| keys.load_identity(name))
        .transpose()?;
    let store = keys.trust_store(local.as_deref().unwrap_or(""))?;
    let ledger = Ledger::read(state_dir);
    let stats_of = |name: &str| {
        ledger
            .stats
            .iter()
            .find(|s| s.peer.eq_ignore_ascii_case(name))
    };
    let route_of = |lct_id: &str| ledger.route.iter().find(|r| r.key == lct_id);
    if json::enabled() {
        let peers: Vec<_> = store
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "lct_id": p.lct_id,
                    "public_key": p.public_key.to_hex(),
                    "key_id": p.key_id.to_string(),
                    "address": p.address,
                    "protocol": p.protocol.as_str(),
                    "tls": tls_json(&p.tls),
                    "sources": p.sources.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "stats": stats_of(&p.name).map(stats_json),
                    "route": route_of(&p.lct_id).map(|r| route_json(r, &ledger.anchor)),
                })
            })
            .collect();
        let this = this.as_ref().map(super::key::identity_json);
        json::report(json!({ "this_node": this, "peers": peers }));
        return Ok(());
    }
    if let Some(this) = &this {
        let public = this.key.public();
        out!("this node: {} ({})", this.name, this.lct_id);
        out!("  key:      {public} ({})", public.key_id());
        out!("  file:     {}", this.key_path.display());
        out!("peers:");
    }
    if store.is_empty() {
        out!(
            "no known peers in {} (add one with `sage peer add`)",
            keys.path().display()
        );
    }
    for p in store.iter() {
        out!("{} ({})", p.name, p.lct_id);
        out!("  key:      {} ({})", p.public_key, p.key_id);
        out!("  address:  {}", p.address.as_deref().unwrap_or("-"));
        out!("  protocol: {}", p.protocol.as_str());
        if !p.tls.is_default() {
            out!("  tls:      {}", p.tls);
        }
        out!("  from:     {}", p.sources_text());
        if let Some(st) = stats_of(&p.name) {
            let counts: Vec<String> = st
                .by_status
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let latency = st
                .latency_ms_ewma
                .map(|l| format!("{l:.2} ms"))
                .unwrap_or_else(|| "-".into());
            let quality = st
                .quality_ewma
                .map(|q| format!("{q:.2}"))
                .unwrap_or_else(|| "-".into());
            out!(
                "  stats:    {}; latency ~{latency}, quality ~{quality}",
                counts.join(", ")
            );
            if let Some(seen) = st.last_seen_ms {
                out!("  seen:     {}", crate::time::local(seen));
            }
        }
        if let Some(r) = route_of(&p.lct_id) {
            let cooling = r
                .cooling_until
                .map(|until| {
                    format!(
                        ", cooling until {}",
                        crate::time::local(ledger.anchor.wall_ms(until))
                    )
                })
                .unwrap_or_default();
            let ejections = match r.ejections {
                1 => "1 ejection".to_owned(),
                n => format!("{n} ejections"),
            };
            out!(
                "  route:    score {:.3}, latency ~{:.2} ms, {ejections}{cooling}",
                r.score,
                r.latency.as_secs_f64() * 1000.0,
            );
        }
    }
    Ok(())
}

fn remove(keys: &KeyDir, args: RemoveArgs) -> CmdResult {
    let path = keys.peers_file();
    let mut file = PeersFile::load(&path)?;
    if !file.remove(&args.name) {
        return Err(sage_service::KeyDirError::NoSuchPeer {
            name: args.name,
            path,
        }
        .into());
    }
    file.save(&path)?;
    if json::enabled() {
        json::report(json!({ "name": args.name, "peers_file": path }));
        return Ok(());
    }
    out!("removed peer {} from {}", args.name, path.display());
    Ok(())
}

/// A peer's delegation statistics in `peer list --json`.
fn stats_json(st: &sage_store::PeerStats) -> serde_json::Value {
    let mut stats = json!({
        "by_status": st.by_status,
        "latency_ms_ewma": st.latency_ms_ewma.map(json::ms3),
        "quality_ewma": st.quality_ewma,
    });
    json::insert_time(&mut stats, "last_seen", st.last_seen_ms);
    stats
}

/// A peer's TLS trust in `peer list --json`: null for the default.
fn tls_json(tls: &sage_crypto::TlsTrust) -> serde_json::Value {
    match tls {
        sage_crypto::TlsTrust::Ca(path) => json!({ "ca": path }),
        sage_crypto::TlsTrust::Fingerprint(fp) => json!({ "fingerprint": fp.to_string() }),
        _ => serde_json::Value::Null,
    }
}

/// A peer's standing with the router rebuilt from the ledger, in `peer
/// list --json`.
fn route_json(r: &sage_route::PeerSnapshot<String>, anchor: &Anchor) -> serde_json::Value {
    let mut route = json!({
        "score": r.score,
        "weight": r.weight,
        "latency_ms": json::duration_ms(r.latency),
        "ejections": r.ejections,
    });
    json::insert_time(
        &mut route,
        "cooling_until",
        r.cooling_until.map(|until| anchor.wall_ms(until)),
    );
    route
}

/// What the ledger says of the peers: its statistics, and the router that
/// `delegate` rebuilds from it. Empty without a state directory.
struct Ledger {
    stats: Vec<sage_store::PeerStats>,
    route: Vec<sage_route::PeerSnapshot<String>>,
    anchor: Anchor,
}

impl Ledger {
    fn read(state_dir: &Path) -> Self {
        let mut ledger = Ledger {
            stats: Vec::new(),
            route: Vec::new(),
            anchor: Anchor::now(),
        };
        if !state_dir.join("sage.db").exists() {
            return ledger;
        }
        let (Ok(store), Ok(runtime)) = (super::open_store(state_dir), super::runtime(false)) else {
            return ledger;
        };
        ledger.stats = runtime.block_on(store.peer_stats()).unwrap_or_default();
        if let Ok((router, anchor)) = super::fleet::rebuilt_router(&runtime, &store) {
            ledger.route = router.snapshot();
            ledger.anchor = anchor;
        }
        ledger
    }
}
