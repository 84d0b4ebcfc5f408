//! `sage delegate`.

use crate::output::out;
use std::path::Path;
use std::time::{Duration, Instant};

use sage_crypto::{Peer, Protocol};
use sage_service::delegator::client::{Client, NodeAddress, CONNECT_TIMEOUT};
use sage_service::delegator::delegation::{
    check_target, conclude, new_task_id, Delegation, Outgoing, TaskSpec,
};
use sage_service::delegator::ledger::{self, payload_digest};
use sage_service::keydir::{Identity, KeyDir};
use sage_service::DelegateError;
use sage_types::QualityRequirements;
use serde_json::json;

use super::ProtocolArg;
use crate::advice;
use crate::failure::{CmdResult, Failure};
use crate::json;

/// Sign a task with the local key, send it to the target, verify the proof.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This platform's name (case-insensitive); signs the task.
    #[arg(long)]
    local: String,
    /// The peer that runs the task: name (case-insensitive) or LCT id.
    #[arg(long)]
    target: String,
    /// Target address, if not the peer record's: HOST[:PORT] or
    /// http(s)://HOST[:PORT]; without a scheme, the record's (`https://`
    /// stays TLS), without a port, 50051.
    #[arg(long, value_parser = super::node_address)]
    host: Option<String>,
    /// Target port, instead of --host's (or of 127.0.0.1:PORT without
    /// --host).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    #[command(flatten)]
    reach: super::Reach,
    /// Task type.
    #[arg(long, default_value = "llm_inference")]
    task_type: String,
    /// Task input: JSON text, or @FILE to read it from a file.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Estimated cost in ATP.
    #[arg(long, default_value_t = 50.0)]
    estimated_cost: f64,
    /// Lowest quality the proof may report.
    #[arg(long, default_value_t = QualityRequirements::default().min_quality)]
    min_quality: f64,
    /// Lowest convergence the proof may report.
    #[arg(long, default_value_t = QualityRequirements::default().min_convergence)]
    min_convergence: f64,
    /// The most this task may cost, in ATP: a node whose price or ceiling
    /// is above it refuses the task before running it (native protocol).
    #[arg(long)]
    max_cost: Option<f64>,
    /// The legacy task's max_latency (seconds, or e.g. `500ms`).
    #[arg(long, default_value = "30", value_name = "DURATION", value_parser = super::positive_duration)]
    max_latency: Duration,
    /// Protocol for this call, instead of the peer record's.
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Task id, instead of a random one.
    #[arg(long)]
    task_id: Option<String>,
}

pub fn read_input(arg: &str) -> Result<serde_json::Value, Failure> {
    let (text, origin) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("--input @{path}: {e}")))?,
            format!("file {path}"),
        ),
        None => (arg.to_owned(), "--input".to_owned()),
    };
    serde_json::from_str(&text)
        .map_err(|e| Failure::Usage(format!("{origin} is not valid JSON: {e}")))
}

pub fn run(keys_dir: &Path, state_dir: &Path, args: Args) -> CmdResult {
    // Validate everything before any I/O on the network.
    // How long to wait for the proof, and the task's validity.
    let timeout = args.reach.timeout_or(Duration::from_secs(60));
    let mut spec = TaskSpec {
        task_type: args.task_type.clone(),
        input: read_input(&args.input)?,
        estimated_cost: args.estimated_cost,
        quality: QualityRequirements {
            min_quality: args.min_quality,
            min_convergence: args.min_convergence,
        },
        lifetime: timeout,
        max_latency: args.max_latency,
        max_cost: args.max_cost,
        task_id: args.task_id.clone(),
        earlier_digests: Vec::new(),
    };
    let keys = KeyDir::new(keys_dir);
    let local = keys.load_identity(&args.local)?;
    refuse_self(&local, &args.target)?;
    let trust = keys.trust_store(&local.name)?;
    let target = trust.find(&args.target).cloned().ok_or_else(|| {
        Failure::Failed(format!(
            "unknown target {:?}: it is not in {} nor a key file in {}; add it with `sage peer add --name {} --public-key HEX --address HOST:PORT`",
            args.target,
            keys.peers_file().display(),
            keys.path().display(),
            args.target
        ))
    })?;
    let addr = target_address(&target, args.host.as_deref(), args.port)?;
    args.reach.tls.check(&addr)?;
    let tls = args
        .reach
        .tls
        .trust()?
        .unwrap_or_else(|| target.tls.clone());

    let protocol = args.protocol.map_or(target.protocol, Protocol::from);
    // Connection attempts end before the request's timeout, so a host that
    // is down or a port a firewall drops is reported as such.
    let connect_within = CONNECT_TIMEOUT.min(timeout.mul_f64(0.9));
    let client = args
        .reach
        .answer_limit
        .apply(Client::with_tls_connect_timeout(&tls, connect_within)?);
    let runtime = super::runtime(false)?;
    let store = super::open_store(state_dir)?;
    // Every attempt is recorded under its task id, even one that fails
    // before the task is signed.
    let task_id = args
        .task_id
        .clone()
        .unwrap_or_else(|| new_task_id(sage_types::clock::now_ms()));
    spec.task_id = Some(task_id.clone());
    // A retry: the node may answer with the proof of an earlier send,
    // which names that payload; the receipt keeps that send beside it.
    let earlier: Vec<Vec<u8>> = match &args.task_id {
        None => Vec::new(),
        Some(task_id) => runtime
            .block_on(store.ledger(Some(target.name.clone()), None))?
            .into_iter()
            .filter(|e| &e.task_id == task_id && !e.task.is_empty())
            .map(|e| e.task)
            .collect(),
    };
    spec.earlier_digests = earlier.iter().filter_map(|b| payload_digest(b)).collect();

    let started = Instant::now();
    let checked = match runtime.block_on(check_target(&client, &target, protocol, &addr, timeout)) {
        Ok(checked) => checked,
        Err(e) => {
            let recorded =
                ledger::record_failure(&store, &target, protocol, &task_id, &spec.task_type, &e);
            if let Err(store_err) = runtime.block_on(recorded) {
                tracing::warn!(
                    "cannot record the failure in the ledger: {}",
                    advice::message(&store_err)
                );
            }
            return Err(e.into());
        }
    };
    let outgoing = Outgoing::sign(&local, &target, protocol, &spec);
    let sent_at = sage_types::clock::now_ms();
    let entry = runtime
        .block_on(ledger::record_sent(
            &store,
            &target,
            protocol,
            &spec.task_type,
            &outgoing,
            sent_at,
        ))
        .map_err(|e| {
            Failure::Failed(format!(
                "the task was not sent: it cannot be recorded in the ledger: {}",
                advice::message(&e)
            ))
        })?;
    let waiting = crate::progress::Waiting::start(&target.name, !crate::json::enabled());
    let sent = runtime.block_on(outgoing.send(&client, &addr, timeout));
    drop(waiting);
    let outcome = sent
        .map_err(DelegateError::from)
        .and_then(|exchanged| conclude(exchanged, &target, &spec, checked, started));
    let recorded = runtime.block_on(ledger::record_outcome(&store, entry, &outcome, &earlier));
    let delegation = match (outcome, recorded) {
        (Ok(_), Err(e)) => {
            return Err(Failure::Failed(format!(
                "the proof verified but cannot be kept: {}",
                advice::message(&e)
            )))
        }
        (Ok(d), Ok(())) => d,
        (Err(e), recorded) => {
            if let Err(store_err) = recorded {
                tracing::warn!(
                    "cannot record the failure in the ledger: {}",
                    advice::message(&store_err)
                );
            }
            return Err(unknown_sender(e, &local, &target));
        }
    };
    if json::enabled() {
        json::report(report_json(
            &delegation,
            &local.name,
            &target,
            &addr,
            sent_at,
        ));
    } else {
        print_report(&delegation, &spec, &local.name, &target, &addr);
    }
    match &delegation.shortfall {
        None => Ok(()),
        Some(why) => Err(Failure::Failed(format!(
            "the proof is valid but the task's terms are not met: {why}"
        ))),
    }
}

/// A refusal because the target does not know this node's key, with the
/// exact line its operator must run; any other error as it is.
fn unknown_sender(error: DelegateError, local: &Identity, target: &Peer) -> Failure {
    let unknown = matches!(
        &error,
        DelegateError::Client(sage_service::ClientError::Refused { problem, .. })
            if problem.code == sage_types::problem::ProblemCode::UnknownPlatform
    );
    if !unknown {
        return error.into();
    }
    // Kept typed, so that `--json` reports the node's own code.
    let advice = advice::Advice::clause(format!(
        "on {}, add this node's key: `sage peer add --name {} --public-key {} --lct {}` (with --replace if {} was known with another key)",
        target.name,
        local.name,
        local.key.public().to_hex(),
        local.lct_id,
        local.name
    ));
    Failure::Error {
        error: Box::new(error),
        advice: Some(advice),
    }
}

/// Refuses a `--target` that names the local node: its own key file is not
/// a peer, so it would read as unknown, which `peer add` cannot fix.
pub fn refuse_self(local: &Identity, target: &str) -> Result<(), Failure> {
    if target.eq_ignore_ascii_case(&local.name) || target == local.lct_id {
        return Err(Failure::Usage(format!(
            "--target {target} is this node (--local {}): a node does not delegate to itself; name another peer (`sage peer list` shows them)",
            local.name
        )));
    }
    Ok(())
}

/// Where to reach `target`: its record's address, or `--host` (its scheme,
/// else the record's) with `--port` over the port.
fn target_address(target: &Peer, host: Option<&str>, port: Option<u16>) -> Result<String, Failure> {
    let recorded = target
        .address
        .as_deref()
        .and_then(|a| NodeAddress::parse(a).ok());
    let recorded_scheme = recorded.as_ref().and_then(|a| a.scheme);
    let mut addr = match (host, port, &target.address) {
        (Some(host), _, _) => {
            NodeAddress::parse(host).map_err(|e| Failure::Usage(format!("--host: {e}")))?
        }
        (None, Some(_), _) => NodeAddress {
            scheme: None,
            host: "127.0.0.1".into(),
            port: None,
        },
        (None, None, Some(address)) => return Ok(address.clone()),
        (None, None, None) => {
            return Err(Failure::Usage(format!(
                "no address for {}: pass --host/--port, or record one with `sage peer add --name {} --address HOST:PORT --replace ...`",
                target.name, target.name
            )))
        }
    };
    if addr.scheme.is_none() {
        addr.scheme = recorded_scheme;
    }
    if port.is_some() {
        addr.port = port;
    }
    Ok(match addr.scheme {
        Some(scheme) => format!("{}://{}", scheme.as_str(), addr.host_port()),
        None => addr.host_port(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report_json(
    d: &Delegation,
    local: &str,
    target: &Peer,
    addr: &str,
    sent_at: u64,
) -> serde_json::Value {
    let mut report = json!({
        "verified": true,
        "accepted": d.shortfall.is_none(),
        "shortfall": d.shortfall,
        "protocol": d.protocol.as_str(),
        "local": local,
        "target": target.name,
        "address": addr,
        "task_digest": d.task_digest,
        "executor_key_id": target.key_id.to_string(),
        "timing_ms": {
            "health_rtt": json::duration_ms(d.health_rtt),
            "round_trip": json::duration_ms(d.round_trip),
            "execution": json::ms3(d.summary.latency_ms),
            "network_overhead": json::ms3((ms(d.round_trip) - d.summary.latency_ms).max(0.0)),
            "total": json::duration_ms(d.total),
        },
    });
    json::insert_time(&mut report, "sent_at", Some(sent_at));
    // Inserted, not passed to json!, which re-serializes them and panics on
    // a Python node's NaN (a value serde_json holds but cannot rebuild).
    for (key, value) in [
        ("task", &d.task),
        ("proof", &d.proof),
        ("signed_proof", &d.signed_proof),
    ] {
        report[key] = value.clone();
    }
    report
}

fn print_report(d: &Delegation, spec: &TaskSpec, local: &str, target: &Peer, addr: &str) {
    let p = &d.summary;
    let legacy = d.protocol == Protocol::Legacy;
    let via = if legacy { " (legacy protocol)" } else { "" };
    out!(
        "Delegated {} from {local} to {} at {addr}{via}",
        spec.task_type,
        target.name
    );
    out!();
    out!("Execution proof");
    out!("  task id:      {}", p.task_id);
    out!("  executor:     {} ({})", target.name, target.lct_id);
    out!("  status:       {}", p.status.as_str());
    out!(
        "  quality:      {} (required {})",
        p.quality,
        spec.quality.min_quality
    );
    out!(
        "  convergence:  {} (required {})",
        p.convergence,
        spec.quality.min_convergence
    );
    out!("  iterations:   {}", p.iterations);
    out!(
        "  actual cost:  {} ATP (estimated {})",
        p.actual_cost,
        spec.estimated_cost
    );
    out!();
    out!("Result data");
    let result = serde_json::to_string_pretty(&p.result).unwrap_or_default();
    for line in result.lines() {
        out!("  {line}");
    }
    out!();
    out!("Timing");
    out!("  total delegation time: {:.3} ms", ms(d.total));
    out!("  execution (reported):  {:.3} ms", p.latency_ms);
    out!(
        "  network overhead:      {:.3} ms",
        (ms(d.round_trip) - p.latency_ms).max(0.0)
    );
    out!("  health check:          {:.3} ms", ms(d.health_rtt));
    out!();
    out!("Security");
    if legacy {
        out!("  ✓ task signed with {local}'s Ed25519 key (legacy: no audience, no nonce)");
    } else {
        out!(
            "  ✓ task signed with {local}'s Ed25519 key, for {} only, with a fresh nonce",
            p.executor
        );
    }
    out!(
        "  ✓ proof signature verified against {}'s known key {}",
        target.name,
        target.key_id
    );
    match &p.task_digest {
        Some(digest) => out!(
            "  ✓ proof names this task ({}) and its exact payload {digest}",
            p.task_id
        ),
        None => out!(
            "  ✓ proof names this task ({}); a legacy proof does not bind the payload digest",
            p.task_id
        ),
    }
    if let Some(digest) = &p.result_digest {
        out!("  ✓ result digest {digest}");
    }
    match &d.shortfall {
        None => out!("  ✓ quality requirements met"),
        Some(why) => out!("  ✗ {why}"),
    }
}
