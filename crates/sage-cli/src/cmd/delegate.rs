//! `sage delegate`.

use crate::output::{self, out};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sage_crypto::{Peer, Protocol};
use sage_route::RetryBudget;
use sage_service::delegator::client::{Client, NodeAddress};
use sage_service::delegator::delegation::{new_task_id, Delegation, TaskSpec};
use sage_service::delegator::recorded::{Attempt, AttemptError};
use sage_service::delegator::route::{self, Plan, RouteError, Survey, Tried};
use sage_service::delegator::stream::ChunkSink;
use sage_service::delegator::upload;
use sage_service::keydir::{Identity, KeyDir};
use sage_service::local::client as local_client;
use sage_service::trace::TraceId;
use sage_service::DelegateError;
use sage_types::QualityRequirements;
use serde_json::json;
use tracing::Instrument as _;

use super::{fleet, ProtocolArg};
use crate::advice;
use crate::failure::{CmdResult, Failure};
use crate::json;

/// Sign a task with the local key, send it to the target, verify the proof.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This platform's name (case-insensitive); signs the task.
    #[arg(long, required_unless_present = "via_node")]
    local: Option<String>,
    /// Hand the task to this machine's running node over its local API
    /// socket: the node signs it with its own key, routes it (or sends it
    /// to --target), verifies the proof and keeps the receipt.
    #[arg(long)]
    via_node: bool,
    /// The local API's socket [default: STATE_DIR/sage.sock].
    #[arg(long, value_name = "PATH", requires = "via_node")]
    socket: Option<PathBuf>,
    /// The peer that runs the task: name (case-insensitive) or LCT id.
    /// Without it, the best of the trusted peers whose verified
    /// capabilities serve the task type runs it, and another if it fails.
    #[arg(long)]
    target: Option<String>,
    /// Without --target: pick among these peers first (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "target")]
    prefer: Vec<String>,
    /// Without --target: never pick this peer (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "target")]
    exclude: Vec<String>,
    /// Without --target: the task may run again on another peer after an
    /// attempt that may have run it [default: as the capabilities say of
    /// its type: the builtins yes, programs and services no].
    #[arg(long, conflicts_with = "target")]
    idempotent: bool,
    #[command(flatten)]
    local_node: super::fleet::LocalNode,
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
    /// A file sent as a blob before the task (repeatable; native
    /// protocol, not with --via-node): hashed as it is read, uploaded to
    /// the peer of each attempt (the target, or the routed pick) unless it
    /// has it, and named by digest in the task's `blobs`, in the order
    /// given. --input stays the task's input.
    #[arg(long, value_name = "PATH")]
    input_file: Vec<PathBuf>,
    /// What the ledger's record of each attempt survives before the task
    /// is sent: `power-loss` (fsync first) or `crash` (no fsync: a power
    /// cut may lose the record of a task that ran) [default: power-loss].
    #[arg(long, value_enum, conflicts_with = "via_node")]
    ledger_durability: Option<super::serve::DurabilityArg>,
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
    /// Print the output to stdout as it comes (an executor that streams,
    /// such as `http` in OpenAI mode), then the verified summary on stderr
    /// (with --json: each piece as a `{"chunk": ...}` line, then the
    /// report). What is printed is verified only when the command
    /// succeeds: a stream that does not match its signed proof fails it.
    #[arg(long, conflicts_with = "via_node")]
    stream: bool,
}

impl Args {
    /// The signing platform's name, as given (none with --via-node, where
    /// the node signs).
    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }
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
        task_id: None,
        earlier_digests: Vec::new(),
        blobs: Vec::new(),
        origin: None,
    };
    if !args.input_file.is_empty() && args.via_node {
        return Err(Failure::Usage(
            "--input-file is not for --via-node: the node cannot read this command's files".into(),
        ));
    }
    if args.via_node {
        return via_node(state_dir, &args, spec, timeout);
    }
    let keys = KeyDir::new(keys_dir);
    let local_name = args
        .local
        .as_deref()
        .ok_or_else(|| Failure::Usage("--local is required without --via-node".into()))?;
    let local = keys.load_identity(local_name)?;
    if let Some(target) = &args.target {
        refuse_self(&local, target)?;
    }
    let trust = keys.trust_store(&local.name)?;
    // Every attempt is recorded under its task id, even one that fails
    // before the task is signed.
    let task_id = args
        .task_id
        .clone()
        .unwrap_or_else(|| new_task_id(sage_types::clock::now_ms()));
    spec.task_id = Some(task_id);
    let connect_within = fleet::connect_within(timeout);
    let runtime = super::runtime(false)?;
    // Hashed once; each attempt uploads them to its peer.
    for path in &args.input_file {
        let file = runtime
            .block_on(upload::hash_file(path))
            .map_err(|e| Failure::Usage(format!("--input-file: {e}")))?;
        spec.blobs.push(file);
    }
    let store = super::open_store(state_dir)?
        .with_ledger_durability(args.ledger_durability.map(Into::into).unwrap_or_default());
    // One trace for the whole delegation: every request of every attempt.
    let trace = Trace::new(&spec.task_type);
    let Some(target_name) = &args.target else {
        return routed(
            &args,
            &local,
            &trust,
            &store,
            &runtime,
            &spec,
            timeout,
            connect_within,
            &trace,
        );
    };
    let target = trust.find(target_name).cloned().ok_or_else(|| {
        Failure::Failed(format!(
            "unknown target {target_name:?}: it is not in {} nor a key file in {}; add it with `sage peer add --name {target_name} --public-key HEX --address HOST:PORT`",
            keys.peers_file().display(),
            keys.path().display(),
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
    let client = args
        .reach
        .answer_limit
        .apply(Client::with_tls_connect_timeout(&tls, connect_within)?)
        .traced(trace.id);
    if !args.input_file.is_empty() && protocol == Protocol::Legacy {
        return Err(Failure::Usage(
            "--input-file needs the native protocol: the legacy one has no blobs".into(),
        ));
    }
    let sent_at = sage_types::clock::now_ms();
    let waiting =
        crate::progress::Waiting::start(&target.name, !crate::json::enabled() && !args.stream);
    let attempt = Attempt {
        client: &client,
        store: &store,
        local: &local,
        target: &target,
        addr: &addr,
        protocol,
        spec: &spec,
        timeout,
        expect: None,
    };
    let result = runtime.block_on(
        async {
            match args.stream {
                false => attempt.run().await,
                true => printing(|sink| async move { attempt.run_streaming(&sink).await }).await,
            }
        }
        .instrument(trace.span.clone()),
    );
    drop(waiting);
    let delegation = result.map_err(|e| attempt_failure(e, &local, &target))?;
    report(
        &delegation,
        &spec,
        &local.name,
        &target,
        &addr,
        (sent_at, trace.id),
        None,
    )
}

/// `delegate --via-node`: the task in the local API's request, the node's
/// answer printed.
fn via_node(state_dir: &Path, args: &Args, spec: TaskSpec, timeout: Duration) -> CmdResult {
    let one_node = args.host.is_some()
        || args.port.is_some()
        || args.protocol.is_some()
        || !args.exclude.is_empty()
        || args.task_id.is_some()
        || args.reach.tls.trust()?.is_some();
    if one_node {
        return Err(Failure::Usage(
            "--host, --port, --protocol, --exclude, --task-id and the TLS flags are not for --via-node: the node reaches its peers as its records say".into(),
        ));
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| state_dir.join("sage.sock"));
    let mut request = json!({
        "task_type": spec.task_type,
        "input": spec.input,
        "timeout": timeout.as_secs_f64(),
        "quality": spec.quality,
        "estimated_cost": spec.estimated_cost,
        "max_cost": spec.max_cost,
        "prefer": args.prefer,
    });
    if let Some(target) = &args.target {
        request["target"] = target.clone().into();
    }
    if args.idempotent {
        request["idempotent"] = true.into();
    }
    let runtime = super::runtime(false)?;
    let waiting = crate::progress::Waiting::start("the local node", !crate::json::enabled());
    // The node bounds the delegation by `timeout`; the answer gets a little more.
    let answer = runtime.block_on(local_client::request(
        &socket,
        "POST",
        "/local/v1/tasks",
        Some(request.to_string().as_bytes()),
        timeout + Duration::from_secs(10),
    ));
    drop(waiting);
    let answer = answer?;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
        Failure::Failed(format!(
            "the local API's answer (status {}) is not JSON: {e}",
            answer.status
        ))
    })?;
    if answer.status != 200 {
        return Err(local_client::LocalClientError::problem(&body, answer.status).into());
    }
    if json::enabled() {
        let mut report = body.clone();
        report["via_node"] = socket.display().to_string().into();
        json::report_as("delegate via-node", report);
    } else {
        print_via_node(&body, &spec, &socket);
    }
    match body["shortfall"].as_str() {
        None => Ok(()),
        Some(why) => Err(Failure::Failed(format!(
            "the proof is valid but the task's terms are not met: {why}"
        ))),
    }
}

fn print_via_node(body: &serde_json::Value, spec: &TaskSpec, socket: &Path) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let executor = &body["executor"];
    out!(
        "Delegated {} via the local node ({}) to {}",
        spec.task_type,
        socket.display(),
        text(&executor["name"])
    );
    if let Some(attempts) = body["attempts"].as_array().filter(|a| a.len() > 1) {
        for (i, a) in attempts.iter().enumerate() {
            out!(
                "  attempt {}: {} ({})",
                i + 1,
                text(&a["peer"]),
                text(&a["outcome"])
            );
        }
    }
    out!();
    out!("Execution proof (verified by the node)");
    out!("  task id:      {}", text(&body["task_id"]));
    out!(
        "  executor:     {} ({})",
        text(&executor["name"]),
        text(&executor["lct_id"])
    );
    out!("  status:       {}", text(&body["status"]));
    out!();
    out!("Result data");
    let result = serde_json::to_string_pretty(&body["result"]).unwrap_or_default();
    for line in result.lines() {
        out!("  {line}");
    }
    out!();
    out!("Timing");
    let timing = &body["timing"];
    out!("  total delegation time: {} ms", timing["total_ms"]);
    out!("  execution (reported):  {} ms", timing["execution_ms"]);
    out!();
    out!(
        "Receipt (`sage proofs show {}`)",
        text(&body["receipt"]["id"])
    );
    out!("  task digest:  {}", text(&body["receipt"]["task_digest"]));
    out!("  proof digest: {}", text(&body["receipt"]["proof_digest"]));
}

/// `delegate` without `--target`: the fleet's best candidate for the task
/// type runs it, another if it fails (see `sage_service::delegator::route`).
#[allow(clippy::too_many_arguments)]
fn routed(
    args: &Args,
    local: &Identity,
    trust: &sage_crypto::TrustStore,
    store: &sage_store::Store,
    runtime: &tokio::runtime::Runtime,
    spec: &TaskSpec,
    timeout: Duration,
    connect_within: Duration,
    trace: &Trace,
) -> CmdResult {
    if args.host.is_some() || args.port.is_some() || args.protocol.is_some() {
        return Err(Failure::Usage(
            "--host, --port and --protocol name one node: give --target too, or leave them out to route"
                .into(),
        ));
    }
    super::fleet::refuse_tls_flags(&args.reach.tls)?;
    let untraced = fleet::client_for(connect_within, args.reach.answer_limit);
    let client_for = |peer: &Peer| untraced(peer).map(|c| c.traced(trace.id));
    let constraints = fleet::constraints(
        &args.prefer,
        &args.exclude,
        args.max_cost,
        args.local_node.address(),
    );
    let (router, _) = fleet::rebuilt_router(runtime, store)?;
    // The capability requests belong to the delegation's trace.
    let in_trace = trace.span.enter();
    let survey = fleet::survey(
        runtime,
        trust,
        local,
        &spec.task_type,
        &constraints,
        store,
        client_for,
        timeout,
    );
    drop(in_trace);
    let sent_at = sage_types::clock::now_ms();
    let plan = Plan {
        local,
        spec,
        idempotent: args.idempotent.then_some(true),
        timeout,
    };
    let waiting =
        crate::progress::Waiting::start("the fleet", !crate::json::enabled() && !args.stream);
    let budget = RetryBudget::default();
    let (survey_of, router_of, budget_of) = (&survey, &router, &budget);
    let result = runtime.block_on(
        async {
            if !args.stream {
                return route::delegate(&survey, &router, &budget, store, client_for, plan).await;
            }
            printing(|sink| async move {
                let (survey, router, budget) = (survey_of, router_of, budget_of);
                route::delegate_streaming(survey, router, budget, store, client_for, plan, &sink)
                    .await
            })
            .await
        }
        .instrument(trace.span.clone()),
    );
    drop(waiting);
    let routed = result.map_err(|e| match e {
        // One attempt, refused for an unknown key: the fix is the same.
        RouteError::Exhausted { tried, last } if tried.len() == 1 => {
            match survey
                .candidates
                .iter()
                .find(|c| c.peer.name == tried[0].peer)
            {
                Some(c) => attempt_failure(last, local, &c.peer),
                None => Failure::from(last),
            }
        }
        other => other.into(),
    })?;
    report(
        &routed.delegation,
        spec,
        &local.name,
        &routed.target,
        &routed.addr,
        (sent_at, trace.id),
        Some((&survey, &routed.tried)),
    )
}

/// Runs `delegation` with a sink whose pieces are printed as they come:
/// to stdout as they are, or as `{"chunk": ...}` lines with `--json`. The
/// summary that follows goes to stderr, so that stdout holds the output
/// alone.
async fn printing<T, F>(delegation: impl FnOnce(ChunkSink) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let (sender, mut pieces) = tokio::sync::mpsc::channel::<String>(64);
    let printer = tokio::spawn(async move {
        let mut ends_line = true;
        while let Some(piece) = pieces.recv().await {
            if json::enabled() {
                let line = json!({ "chunk": piece }).to_string();
                output::piece(&format!("{line}\n"));
            } else {
                output::piece(&piece);
                ends_line = piece.ends_with('\n');
            }
        }
        ends_line
    });
    let outcome = delegation(ChunkSink::new(sender)).await;
    // The sink is gone with the delegation: the printer ends once it has
    // printed every piece.
    let ends_line = printer.await.unwrap_or(true);
    if !json::enabled() {
        output::report_to_stderr();
        if !ends_line {
            // The summary on a line of its own where both streams show.
            eprintln!();
        }
    }
    outcome
}

/// The trace of one delegation: its id, sent in every request's
/// `traceparent`, and the span that its requests' spans are children of
/// when spans are exported.
struct Trace {
    id: TraceId,
    span: tracing::Span,
}

impl Trace {
    /// A new trace: the exported span's when spans are exported, so that
    /// the id reported is the one the collector shows.
    fn new(task_type: &str) -> Trace {
        let span = tracing::info_span!("delegate", task_type);
        let id = sage_service::telemetry::trace_id_of(&span).unwrap_or_else(TraceId::random);
        Trace { id, span }
    }
}

/// Prints the verified delegation (and, when it was routed, the route),
/// and fails if its proof does not meet the task's terms.
fn report(
    delegation: &Delegation,
    spec: &TaskSpec,
    local: &str,
    target: &Peer,
    addr: &str,
    (sent_at, trace): (u64, TraceId),
    route: Option<(&Survey, &[Tried])>,
) -> CmdResult {
    if json::enabled() {
        let mut object = report_json(delegation, local, target, addr, sent_at);
        object["trace_id"] = trace.to_string().into();
        object["streamed"] = delegation.streamed.into();
        if let Some((survey, tried)) = route {
            object["route"] = route_json(survey, tried);
        }
        json::report(object);
    } else {
        if let Some((survey, tried)) = route {
            print_route(survey, tried);
        }
        print_report(delegation, spec, local, target, addr);
    }
    match &delegation.shortfall {
        None => Ok(()),
        Some(why) => Err(Failure::Failed(format!(
            "the proof is valid but the task's terms are not met: {why}"
        ))),
    }
}

/// The route as `--json` reports it.
fn route_json(survey: &Survey, tried: &[Tried]) -> serde_json::Value {
    json!({
        "candidates": survey.candidates.iter().map(|c| c.peer.name.clone()).collect::<Vec<_>>(),
        "left": survey.left.iter().map(|(peer, why)| json!({"peer": peer.name, "reason": why.to_string()})).collect::<Vec<_>>(),
        "attempts": tried.iter().map(|t| json!({"peer": t.peer, "outcome": t.outcome})).collect::<Vec<_>>(),
    })
}

/// The route, before the delegation's report.
fn print_route(survey: &Survey, tried: &[Tried]) {
    let names: Vec<&str> = survey
        .candidates
        .iter()
        .map(|c| c.peer.name.as_str())
        .collect();
    out!("Routed among {}", names.join(", "));
    for (peer, why) in &survey.left {
        out!("  not {}: {why}", peer.name);
    }
    if tried.len() > 1 {
        for (i, t) in tried.iter().enumerate() {
            out!("  attempt {}: {} ({})", i + 1, t.peer, t.outcome);
        }
    }
    out!();
}

/// A failed attempt as the CLI reports it: the delegation's own error
/// (its code and advice), a refusal for an unknown key with the line that
/// fixes it.
fn attempt_failure(error: AttemptError, local: &Identity, target: &Peer) -> Failure {
    match error {
        AttemptError::Sent(e) => unknown_sender(e, local, target),
        AttemptError::NotSent(e) => e.into(),
        other => other.into(),
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
