//! `sage bench`: the load generator.

use crate::output::out;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sage_crypto::{Peer, Protocol};
use sage_route::{Policy, Router};
use sage_service::delegator::bench::{self, Plan, Report, Stop};
use sage_service::delegator::client::{Client, CONNECT_TIMEOUT};
use sage_service::delegator::delegation::{check_target, sign_task, TaskSpec};
use sage_service::delegator::route::{self, Constraints};
use sage_service::keydir::KeyDir;
use sage_types::QualityRequirements;
use serde_json::json;

use super::delegate::read_input;
use super::ProtocolArg;
use crate::failure::{CmdResult, Failure};
use crate::json;

/// Load a node with delegations and report throughput, latency and errors.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This platform's name; signs the tasks.
    #[arg(long)]
    local: String,
    /// The node under load: a peer name, or the address of a known peer
    /// (HOST:PORT or http(s)://HOST[:PORT]). Without it, every request is
    /// a routed delegation over the trusted peers whose verified
    /// capabilities serve the task type, as `sage delegate` without
    /// --target, picked by one router shared by the whole run.
    #[arg(long)]
    target: Option<String>,
    /// Without --target: pick among these peers first (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "target")]
    prefer: Vec<String>,
    /// Without --target: never pick this peer (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "target")]
    exclude: Vec<String>,
    #[command(flatten)]
    reach: super::Reach,
    /// Protocol, instead of the peer record's.
    #[arg(long, value_enum)]
    protocol: Option<ProtocolArg>,
    /// Requests in flight at once (with --rate: at most).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run (seconds, or e.g. `1m`; the default, 10 s, unless
    /// --requests is given).
    #[arg(long, conflicts_with = "requests", value_name = "DURATION", value_parser = super::positive_duration)]
    duration: Option<Duration>,
    /// Requests to send, instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: send this many requests per second whatever the answers
    /// (latency counts from each request's intended send time).
    #[arg(long)]
    rate: Option<f64>,
    /// Task type [default: `echo` if the node serves it, else the first
    /// type its verified capabilities list; without --target, `echo`].
    #[arg(long)]
    task_type: Option<String>,
    /// Task input: JSON text, or @FILE.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Do not verify the proofs (measures the node alone).
    #[arg(long)]
    no_verify: bool,
    /// Record every verified delegation in the ledger of the state
    /// directory, as `sage delegate` does (measures the delegator's writes).
    #[arg(long, conflicts_with = "no_verify")]
    ledger: bool,
    /// What each --ledger record survives before it counts as done:
    /// `power-loss` (fsync, shared by the records committed together) or
    /// `crash` (no fsync) [default: power-loss].
    #[arg(long, value_enum, requires = "ledger")]
    ledger_durability: Option<super::serve::DurabilityArg>,
    /// Also load a bare echo endpoint started in this process, the same
    /// way, and report sage's throughput as a ratio of it.
    #[arg(long)]
    baseline: bool,
}

pub fn run(keys_dir: &Path, state_dir: &Path, args: Args) -> CmdResult {
    let timeout = args.reach.timeout_or(Duration::from_secs(30));
    // The questions before the load (health, capabilities) wait no longer
    // than a request may.
    let ask_within = timeout.min(Duration::from_secs(5));
    let stop = match (args.duration, args.requests) {
        (_, Some(0)) => return Err(Failure::Usage("--requests must be at least 1".into())),
        (_, Some(n)) => Stop::Requests(n),
        (Some(duration), None) => Stop::After(duration),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    if args.concurrency == 0 {
        return Err(Failure::Usage("--concurrency must be at least 1".into()));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(Failure::Usage(
            "--rate must be a positive number of requests per second".into(),
        ));
    }
    let input = read_input(&args.input)?;
    let mut spec = TaskSpec {
        task_type: args.task_type.clone().unwrap_or_default(),
        input,
        estimated_cost: 1.0,
        quality: QualityRequirements {
            min_quality: 0.0,
            min_convergence: 0.0,
        },
        lifetime: timeout,
        max_latency: timeout,
        max_cost: None,
        task_id: None,
        earlier_digests: Vec::new(),
        blobs: Vec::new(),
        origin: None,
    };
    let keys = KeyDir::new(keys_dir);
    let local = Arc::new(keys.load_identity(&args.local)?);
    let Some(target_arg) = args.target.clone() else {
        return routed(state_dir, &keys, local, &args, spec, stop, timeout);
    };
    super::delegate::refuse_self(&local, &target_arg)?;
    let trust = keys.trust_store(&local.name)?;
    let named = trust.find(&target_arg);
    let addr = match named {
        Some(peer) => peer.address.clone().ok_or_else(|| {
            Failure::Usage(format!(
                "no address for {}: give --target HOST:PORT",
                peer.name
            ))
        })?,
        // Not a peer's name: an address, if it looks like one.
        None if target_arg.contains([':', '[']) => super::node_address(&target_arg)
            .map_err(|e| Failure::Usage(format!("--target: {e}")))?,
        None => {
            return Err(Failure::Failed(format!(
                "unknown target {:?}: give a peer name or HOST:PORT",
                target_arg
            )))
        }
    };
    args.reach.tls.check(&addr)?;
    // The TLS trust of the flags, else of the target, by name or by its
    // recorded address.
    let tls = match args.reach.tls.trust()? {
        Some(tls) => tls,
        None => named
            .or_else(|| super::tls::peer_at(&trust, &addr))
            .map(|peer| peer.tls.clone())
            .unwrap_or_default(),
    };
    let client = args.reach.answer_limit.apply(Client::with_tls(&tls)?);
    let runtime = super::runtime(args.concurrency > 1)?;

    // The target by name, or by address (then the node says who it is).
    let target: Peer = match named {
        Some(peer) => peer.clone(),
        None => {
            let (health, _) = runtime.block_on(client.health(&addr, ask_within))?;
            trust.by_lct(&health.lct_id).cloned().ok_or_else(|| {
                Failure::Failed(format!(
                    "{} is {} ({}), not a known peer: add it with `sage peer add`",
                    addr, health.platform, health.lct_id
                ))
            })?
        }
    };
    let protocol = args.protocol.map_or(target.protocol, Protocol::from);
    let plan = Plan {
        protocol,
        concurrency: args.concurrency,
        stop,
        rate: args.rate,
        verify: !args.no_verify,
        ledger: if args.ledger {
            Some(super::open_store(state_dir)?.with_ledger_durability(ledger_durability(&args)))
        } else {
            None
        },
        timeout,
    };

    let line = crate::progress::Line::new(!json::enabled());
    let report = runtime.block_on(async {
        check_target(&client, &target, protocol, &addr, ask_within).await?;
        if args.task_type.is_none() {
            spec.task_type = default_task_type(&client, &target, &addr, ask_within).await;
        }
        let progress = line.clone();
        let sage = bench::delegations(
            &client,
            local.clone(),
            &target,
            &addr,
            &spec,
            &plan,
            move |p| draw(&progress, p),
        )
        .await;
        line.clear();
        let baseline = if args.baseline {
            // The same body size as a real task envelope.
            let body = sign_task(&local.key, &local.lct_id, &target.lct_id, &spec)
                .envelope
                .to_bytes();
            let echo = bench::start_echo_server()?;
            Some(bench::baseline(&client, &echo.to_string(), body.into(), &plan).await)
        } else {
            None
        };
        Ok::<_, Failure>((sage, baseline))
    })?;
    let (sage, baseline) = report;
    let ratio = ratio(&sage, baseline.as_ref());
    if json::enabled() {
        json::report(json!({
            "target": target.name,
            "address": addr,
            "protocol": protocol.as_str(),
            "concurrency": plan.concurrency,
            "rate": plan.rate,
            "verified": plan.verify,
            "route": null,
            "sage": report_json(&sage),
            "baseline": baseline.as_ref().map(report_json),
            "ratio_to_baseline": ratio.map(|r| (r * 1000.0).round() / 1000.0),
        }));
    } else {
        out!(
            "sage bench: {} at {addr}, {} protocol, {}",
            target.name,
            protocol.as_str(),
            mode(&plan)
        );
        print_all(&sage, baseline.as_ref(), ratio, plan.verify);
    }
    outcome(&sage)
}

/// `sage bench` without `--target`: routed delegations over the fleet.
fn routed(
    state_dir: &Path,
    keys: &KeyDir,
    local: Arc<sage_service::keydir::Identity>,
    args: &Args,
    mut spec: TaskSpec,
    stop: Stop,
    timeout: Duration,
) -> CmdResult {
    if args.protocol.is_some() {
        return Err(Failure::Usage(
            "--protocol names one node's protocol: give --target too, or leave it out to route"
                .into(),
        ));
    }
    super::fleet::refuse_tls_flags(&args.reach.tls)?;
    if args.no_verify {
        return Err(Failure::Usage(
            "--no-verify needs --target: routing learns from verified proofs".into(),
        ));
    }
    if spec.task_type.is_empty() {
        spec.task_type = "echo".to_owned();
    }
    let trust = keys.trust_store(&local.name)?;
    let store = super::open_store(state_dir)?;
    let connect_within = CONNECT_TIMEOUT.min(timeout.mul_f64(0.9));
    let answer_limit = args.reach.answer_limit;
    let client_for = |peer: &Peer| {
        Client::with_tls_connect_timeout(&peer.tls, connect_within).map(|c| answer_limit.apply(c))
    };
    // A load on this machine's own node would measure it against itself.
    let constraints = Constraints {
        prefer: args.prefer.clone(),
        exclude: args.exclude.clone(),
        max_cost: None,
        local_node: None,
        model: None,
    };
    let plan = Plan {
        protocol: Protocol::V1,
        concurrency: args.concurrency,
        stop,
        rate: args.rate,
        verify: true,
        ledger: args
            .ledger
            .then(|| store.with_ledger_durability(ledger_durability(args))),
        timeout,
    };
    let runtime = super::runtime(args.concurrency > 1)?;
    let line = crate::progress::Line::new(!json::enabled());
    let (survey, sage, baseline) = runtime.block_on(async {
        let survey = route::survey(
            &trust,
            &local,
            &spec.task_type,
            &constraints,
            &store,
            client_for,
            timeout.min(route::CAPABILITIES_WITHIN),
        )
        .await;
        if survey.candidates.is_empty() {
            let none = route::RouteError::NoCandidate {
                task_type: spec.task_type.clone(),
                left: survey
                    .left
                    .iter()
                    .map(|(peer, why)| (peer.name.clone(), why.to_string()))
                    .collect(),
            };
            return Err(Failure::from(none));
        }
        let survey = Arc::new(survey);
        // One router for the whole run, starting from what earlier
        // delegations of this state directory saw (the last hour).
        let router = Router::new(Policy::default());
        route::rebuild_from(&router, &store).await?;
        let progress = line.clone();
        let sage = bench::routed(
            survey.clone(),
            router,
            local.clone(),
            client_for,
            &spec,
            &plan,
            move |p| draw(&progress, p),
        )
        .await?;
        line.clear();
        let baseline = if args.baseline {
            let first = &survey.candidates[0].peer;
            let body = sign_task(&local.key, &local.lct_id, &first.lct_id, &spec)
                .envelope
                .to_bytes();
            let echo = bench::start_echo_server()?;
            let client = client_for(first)?;
            Some(bench::baseline(&client, &echo.to_string(), body.into(), &plan).await)
        } else {
            None
        };
        Ok::<_, Failure>((survey, sage, baseline))
    })?;
    let ratio = ratio(&sage, baseline.as_ref());
    let names: Vec<&str> = survey
        .candidates
        .iter()
        .map(|c| c.peer.name.as_str())
        .collect();
    if json::enabled() {
        json::report(json!({
            "target": null,
            "address": null,
            "protocol": Protocol::V1.as_str(),
            "concurrency": plan.concurrency,
            "rate": plan.rate,
            "verified": plan.verify,
            "route": {
                "candidates": names,
                "left": survey.left.iter().map(|(peer, why)| json!({"peer": peer.name, "reason": why.to_string()})).collect::<Vec<_>>(),
            },
            "sage": report_json(&sage),
            "baseline": baseline.as_ref().map(report_json),
            "ratio_to_baseline": ratio.map(|r| (r * 1000.0).round() / 1000.0),
        }));
    } else {
        out!(
            "sage bench: routed among {}, {}",
            names.join(", "),
            mode(&plan)
        );
        for (peer, why) in &survey.left {
            out!("  not {}: {why}", peer.name);
        }
        print_all(&sage, baseline.as_ref(), ratio, plan.verify);
    }
    outcome(&sage)
}

/// The progress line of a run.
fn draw(line: &crate::progress::Line, p: bench::Progress) {
    let secs = p.elapsed.as_secs_f64();
    line.draw(&format!(
        "{secs:>5.1} s  {} requests, {} ok, {} refused, {:.0}/s",
        p.done,
        p.done - p.failed,
        p.refused,
        p.done as f64 / secs.max(1e-9)
    ));
}

/// The run's throughput as a share of the baseline's.
fn ratio(sage: &Report, baseline: Option<&Report>) -> Option<f64> {
    baseline.map(|b| sage.per_second / b.per_second.max(1e-9))
}

/// Closed or open loop, in words.
fn mode(plan: &Plan) -> String {
    match plan.rate {
        Some(rate) => format!(
            "open loop at {rate}/s, at most {} in flight",
            plan.concurrency
        ),
        None => format!("closed loop, {} in flight", plan.concurrency),
    }
}

/// The run's report, the baseline's and their ratio, as text.
fn print_all(sage: &Report, baseline: Option<&Report>, ratio: Option<f64>, verified: bool) {
    print_report("sage", sage, verified);
    if let (Some(b), Some(r)) = (baseline, ratio) {
        print_report("baseline (bare echo)", b, false);
        out!(
            "ratio: sage does {:.2} of the baseline's requests per second",
            r
        );
    }
}

/// The exit of a run: a failure when it stopped early or nothing succeeded.
fn outcome(sage: &Report) -> CmdResult {
    if let Some(stop) = sage.stopped_early {
        return Err(Failure::Failed(format!(
            "stopped early: {} of the last {} requests were refused ({})",
            stop.refused,
            stop.requests,
            error_counts(sage)
        )));
    }
    if sage.ok == 0 {
        return Err(Failure::Failed(format!(
            "no request succeeded ({})",
            error_counts(sage)
        )));
    }
    Ok(())
}

/// A run's measures: durations in milliseconds and rates to three decimals.
fn report_json(r: &Report) -> serde_json::Value {
    let l = &r.latency_ms;
    json!({
        "ok": r.ok,
        "errors": r.errors,
        "elapsed_ms": json::ms3(r.elapsed_secs * 1000.0),
        "per_second": json::ms3(r.per_second),
        "latency_ms": {
            "p50": json::ms3(l.p50),
            "p90": json::ms3(l.p90),
            "p99": json::ms3(l.p99),
            "p999": json::ms3(l.p999),
            "max": json::ms3(l.max),
            "mean": json::ms3(l.mean),
        },
        "cpu_ms": r.cpu_secs.map(|s| json::ms3(s * 1000.0)),
        "stopped_early": r.stopped_early.map(|stop| json!({
            "refused": stop.refused,
            "requests": stop.requests,
        })),
        "peers": r.peers.iter().map(|s| json!({
            "peer": s.peer,
            "requests": s.requests,
            "ok": s.ok,
        })).collect::<Vec<_>>(),
    })
}

/// The failures by kind, as `3 refused:busy, 1 timed_out`.
fn error_counts(r: &Report) -> String {
    r.errors
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The task type to load `target` with when none is given: `echo` if its
/// capabilities, verified with its known key, list it, else the first they
/// list. Said on stderr, since the choice is not the user's.
async fn default_task_type(client: &Client, target: &Peer, addr: &str, within: Duration) -> String {
    use sage_types::capabilities::{Capabilities, CAPABILITIES_PAYLOAD_TYPE};
    let served = async {
        let envelope = client.capabilities(addr, within).await.ok()?;
        let verified = sage_crypto::verify_envelope_with(
            &envelope,
            CAPABILITIES_PAYLOAD_TYPE,
            &target.public_key,
        )
        .ok()?;
        let caps: Capabilities = serde_json::from_slice(&verified.payload).ok()?;
        Some(
            caps.task_types
                .into_iter()
                .map(|t| t.task_type)
                .collect::<Vec<_>>(),
        )
    }
    .await;
    let picked = match &served {
        Some(types) if types.iter().any(|t| t == "echo") => "echo".to_owned(),
        Some(types) if !types.is_empty() => types[0].clone(),
        _ => "echo".to_owned(),
    };
    match served {
        Some(types) if !types.is_empty() => eprintln!(
            "task type: {picked} (of {} served by {}; choose with --task-type)",
            types.join(", "),
            target.name
        ),
        _ => eprintln!(
            "task type: {picked} ({} lists no verified capabilities; choose with --task-type)",
            target.name
        ),
    }
    picked
}

fn print_report(name: &str, r: &Report, verified: bool) {
    let what = if verified {
        "verified delegations"
    } else {
        "requests"
    };
    out!("{name}:");
    out!(
        "  {:.0} {what}/s ({} in {:.2} s)",
        r.per_second,
        r.ok,
        r.elapsed_secs
    );
    let l = &r.latency_ms;
    out!(
        "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    if let Some(cpu) = r.cpu_secs {
        let per_ok = r
            .cpu_per_ok()
            .map_or_else(|| "n/a".to_owned(), |per| format!("{:.0} µs", per * 1e6));
        out!("  client CPU: {cpu:.2} s ({per_ok} per successful request)");
    }
    if let Some(stop) = r.stopped_early {
        out!(
            "  stopped early: {} of the last {} requests refused",
            stop.refused,
            stop.requests
        );
    }
    let attempts: u64 = r.peers.iter().map(|s| s.requests).sum();
    for s in &r.peers {
        out!(
            "  {}: {} requests ({:.1}%), {} ok",
            s.peer,
            s.requests,
            100.0 * s.requests as f64 / attempts.max(1) as f64,
            s.ok
        );
    }
    if r.errors.is_empty() {
        out!("  errors: none");
    }
    for (kind, n) in &r.errors {
        out!("  errors: {n} {kind}");
    }
}

/// `--ledger-durability`, or its default.
fn ledger_durability(args: &Args) -> sage_store::Durability {
    args.ledger_durability.map(Into::into).unwrap_or_default()
}
