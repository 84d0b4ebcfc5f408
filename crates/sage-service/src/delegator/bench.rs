//! The load generator behind `sage bench`: many delegations to one target
//! ([`delegations`]) or routed over the fleet ([`routed`]), closed-loop (N in flight) or open-loop (a fixed arrival rate, latency
//! measured from each request's intended send time, so a slow server cannot
//! hide its queueing: no coordinated omission), and a bare echo endpoint to
//! measure against in the same run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use sage_crypto::{Peer, Protocol};

use crate::delegator::client::{base_url, Client};
use crate::delegator::delegation::{
    check_target, conclude, Checked, Delegation, Outgoing, TaskSpec,
};
use crate::delegator::ledger;
use crate::delegator::recorded::AttemptError;
use crate::delegator::route::{self, Attempts, Candidate, RouteError, Survey};
use crate::keydir::Identity;
use crate::{ClientError, DelegateError};
use sage_route::{RetryBudget, Router};
use sage_store::{Store, StoreError};
use sage_types::clock::now_ms;

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests.
    Requests(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The protocol of the delegations.
    pub protocol: Protocol,
    /// Requests in flight at once (closed loop), or at most (open loop).
    pub concurrency: usize,
    /// When to stop.
    pub stop: Stop,
    /// Open loop: requests per second; `None` for a closed loop.
    pub rate: Option<f64>,
    /// Whether to verify every proof.
    pub verify: bool,
    /// Where to record every verified delegation, as `sage delegate` does
    /// (only with `verify`); `None` keeps no ledger.
    pub ledger: Option<Store>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// Requests that succeeded (and verified, unless verification was off).
    pub ok: u64,
    /// Failed requests, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Wall time of the run in seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub per_second: f64,
    /// Latency of successful requests.
    pub latency_ms: Latency,
    /// CPU time (user + system) this process spent during the run, in
    /// seconds, where the system tells it (Linux).
    pub cpu_secs: Option<f64>,
    /// Set when the run stopped before its end because nearly every
    /// request was refused.
    pub stopped_early: Option<EarlyStop>,
    /// A routed run: each candidate's share, in the survey's order; empty
    /// for a run against one target.
    pub peers: Vec<Share>,
}

/// What one peer got of a routed run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Share {
    /// The peer's name.
    pub peer: String,
    /// Attempts sent to it (a request that failed over counts on each
    /// peer it tried).
    pub requests: u64,
    /// Requests whose verified proof it signed.
    pub ok: u64,
}

impl Report {
    /// Client CPU seconds per successful request; `None` when nothing
    /// succeeded or the system does not tell the CPU time.
    pub fn cpu_per_ok(&self) -> Option<f64> {
        self.cpu_secs
            .filter(|_| self.ok > 0)
            .map(|cpu| cpu / self.ok as f64)
    }
}

/// Why a run stopped early: the requests of its last window, nearly all
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EarlyStop {
    /// Requests answered in the window.
    pub requests: u64,
    /// Of which refused.
    pub refused: u64,
}

/// A run stops early once at least this many requests are done...
const EARLY_STOP_MIN_REQUESTS: u64 = 200;
/// ...and of the requests of the last [`EARLY_STOP_WINDOW`] (at least
/// [`EARLY_STOP_MIN_WINDOW`] of them) this share or more was refused: a
/// load that only measures refusals measures nothing about the node.
const EARLY_STOP_SHARE: f64 = 0.95;
const EARLY_STOP_WINDOW: Duration = Duration::from_secs(2);
const EARLY_STOP_MIN_WINDOW: u64 = 50;
/// How often progress is reported and the early stop considered.
const TICK: Duration = Duration::from_millis(250);

/// Progress, for a display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Requests done (ok or not).
    pub done: u64,
    /// Of which failed.
    pub failed: u64,
    /// Of the failed, refused by the node (a problem answer, or HTTP 429
    /// or 503).
    pub refused: u64,
    /// Since the start.
    pub elapsed: Duration,
}

/// Runs `plan` against `target` at `addr`: each request a full delegation
/// (sign, send, verify unless `plan.verify` is off, and record in
/// `plan.ledger` if there is one). `progress` is called about four times
/// a second. A request refused with `Retry-After` pauses its worker that
/// long (at most until the run's end); a run whose requests are nearly all
/// refused stops early ([`Report::stopped_early`]).
pub async fn delegations(
    client: &Client,
    local: Arc<Identity>,
    target: &Peer,
    addr: &str,
    spec: &TaskSpec,
    plan: &Plan,
    progress: impl Fn(Progress) + Send + 'static,
) -> Report {
    let protocol = plan.protocol;
    let job = {
        let (client, target, addr, spec, timeout, verify, ledger) = (
            client.clone(),
            target.clone(),
            addr.to_owned(),
            spec.clone(),
            plan.timeout,
            plan.verify,
            plan.ledger.clone(),
        );
        Arc::new(move || {
            let (client, local, target, addr, spec, ledger) = (
                client.clone(),
                local.clone(),
                target.clone(),
                addr.clone(),
                spec.clone(),
                ledger.clone(),
            );
            async move {
                let (sent_at, started) = (now_ms(), Instant::now());
                let (exchanged, _) = Outgoing::sign(&local, &target, protocol, &spec)
                    .send(&client, &addr, timeout)
                    .await?;
                if !verify {
                    return Ok(());
                }
                let summary = exchanged
                    .verify(&target)
                    .map_err(|source| DelegateError::Proof {
                        target: target.name.clone(),
                        source,
                    })?;
                if let Some(store) = &ledger {
                    let latency = started.elapsed();
                    ledger::record_exchange(store, &target, &exchanged, &summary, sent_at, latency)
                        .await?;
                }
                Ok::<(), JobError>(())
            }
        })
    };
    run(plan, job, progress).await
}

/// What the attempts of a routed run share: a [`TaskSpec`] goes to a
/// picked candidate without the ledger's per-attempt reads and writes, and
/// with one health check per peer (the first time it is picked, until one
/// passes) rather than one per attempt: what a long-running delegator does
/// under load.
struct Direct {
    local: Arc<Identity>,
    clients: BTreeMap<String, Client>,
    checked: Mutex<BTreeMap<String, Checked>>,
    ledger: Option<Store>,
}

/// One routed request's attempts over the run's [`Direct`]: it keeps the
/// digests of what it sent each peer, so that a retry on the same peer
/// accepts the proof of an earlier send of the same task id.
struct Request<'d> {
    direct: &'d Direct,
    sent: Mutex<Vec<(String, String)>>,
}

impl Attempts for Request<'_> {
    async fn attempt(
        &self,
        candidate: &Candidate,
        spec: &TaskSpec,
        timeout: Duration,
    ) -> Result<Delegation, AttemptError> {
        let started = Instant::now();
        let direct = self.direct;
        let peer = &candidate.peer;
        let client = direct
            .clients
            .get(&peer.lct_id)
            .expect("a client for every candidate");
        let known = direct
            .checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer.lct_id)
            .cloned();
        let checked = match known {
            Some(checked) => checked,
            None => {
                let checked = check_target(client, peer, Protocol::V1, &candidate.addr, timeout)
                    .await
                    .map_err(AttemptError::NotSent)?;
                direct
                    .checked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer.lct_id.clone(), checked.clone());
                checked
            }
        };
        let earlier: Vec<String> = self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(lct, _)| *lct == peer.lct_id)
            .map(|(_, digest)| digest.clone())
            .collect();
        let retry;
        let spec = if earlier.is_empty() {
            spec
        } else {
            retry = TaskSpec {
                earlier_digests: earlier,
                ..spec.clone()
            };
            &retry
        };
        let outgoing = Outgoing::sign(&direct.local, peer, Protocol::V1, spec);
        if let Outgoing::V1(signed) = &outgoing {
            self.sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((peer.lct_id.clone(), signed.digest.clone()));
        }
        let sent_at = now_ms();
        let remaining = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let exchanged = outgoing
            .send(client, &candidate.addr, remaining)
            .await
            .map_err(|e| AttemptError::Sent(e.into()))?;
        if let Some(store) = &direct.ledger {
            let summary = exchanged.0.verify(peer).map_err(|source| {
                AttemptError::Sent(DelegateError::Proof {
                    target: peer.name.clone(),
                    source,
                })
            })?;
            ledger::record_exchange(store, peer, &exchanged.0, &summary, sent_at, exchanged.1)
                .await
                .map_err(AttemptError::NotKept)?;
        }
        conclude(exchanged, peer, spec, checked, started).map_err(AttemptError::Sent)
    }
}

/// Runs `plan` with every request a routed delegation over `survey`'s
/// candidates: picked by one `router` shared by the whole run (its
/// in-flight counts, latency estimates and cooldowns live across requests,
/// as in a long-running delegator), failed over as [`route::run`] says,
/// with `constraints`' preferences already in the survey. `client_for`
/// makes each candidate's client once. Every proof is verified (the
/// router learns from verified proofs); `plan.ledger` records them.
///
/// # Errors
/// The client of a candidate cannot be made.
pub async fn routed(
    survey: Arc<Survey>,
    router: Router<String>,
    local: Arc<Identity>,
    client_for: impl Fn(&Peer) -> Result<Client, ClientError>,
    spec: &TaskSpec,
    plan: &Plan,
    progress: impl Fn(Progress) + Send + 'static,
) -> Result<Report, ClientError> {
    let mut clients = BTreeMap::new();
    for candidate in &survey.candidates {
        clients.insert(candidate.peer.lct_id.clone(), client_for(&candidate.peer)?);
    }
    let attempts = Arc::new(Direct {
        local: local.clone(),
        clients,
        checked: Mutex::new(BTreeMap::new()),
        ledger: plan.ledger.clone(),
    });
    let budget = Arc::new(RetryBudget::default());
    let shares: Arc<Mutex<BTreeMap<String, Share>>> = Arc::new(Mutex::new(
        survey
            .candidates
            .iter()
            .map(|c| {
                let share = Share {
                    peer: c.peer.name.clone(),
                    ..Share::default()
                };
                (c.peer.name.clone(), share)
            })
            .collect(),
    ));
    let job = {
        let (survey, spec, timeout, shares) =
            (survey.clone(), spec.clone(), plan.timeout, shares.clone());
        Arc::new(move || {
            let (survey, router, budget, attempts, local, spec, shares) = (
                survey.clone(),
                router.clone(),
                budget.clone(),
                attempts.clone(),
                local.clone(),
                spec.clone(),
                shares.clone(),
            );
            async move {
                let plan = route::Plan {
                    local: &local,
                    spec: &spec,
                    idempotent: None,
                    timeout,
                };
                let request = Request {
                    direct: &attempts,
                    sent: Mutex::new(Vec::new()),
                };
                let result = route::run(&survey, &router, &budget, &request, plan).await;
                let (tried, ran_on) = match &result {
                    Ok(routed) => (&routed.tried[..], Some(&routed.target.name)),
                    Err(
                        RouteError::Exhausted { tried, .. } | RouteError::MayHaveRun { tried, .. },
                    ) => (&tried[..], None),
                    Err(RouteError::NoCandidate { .. }) => (&[][..], None),
                };
                {
                    let mut shares = shares.lock().unwrap_or_else(|p| p.into_inner());
                    for t in tried {
                        shares.entry(t.peer.clone()).or_default().requests += 1;
                    }
                    if let Some(name) = ran_on {
                        shares.entry(name.clone()).or_default().ok += 1;
                    }
                }
                result.map(|_| ()).map_err(JobError::Route)
            }
        })
    };
    let mut report = run(plan, job, progress).await;
    let shares = std::mem::take(&mut *shares.lock().unwrap_or_else(|p| p.into_inner()));
    report.peers = survey
        .candidates
        .iter()
        .filter_map(|c| shares.get(&c.peer.name).cloned())
        .collect();
    Ok(report)
}

/// Runs `plan` against the bare echo endpoint at `url` with `body`: the
/// same HTTP client and load, no signing, no verification.
pub async fn baseline(client: &Client, addr: &str, body: Bytes, plan: &Plan) -> Report {
    let url = match base_url(addr) {
        Ok(base) => format!("{base}/echo"),
        Err(_) => return run(plan, Arc::new(|| async { Ok(()) }), |_| {}).await,
    };
    let (client, timeout) = (client.clone(), plan.timeout);
    let job = Arc::new(move || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            client
                .post_echo(&url, body, timeout)
                .await
                .map_err(JobError::from)
        }
    });
    run(plan, job, |_| {}).await
}

/// Starts a bare axum endpoint, `POST /echo`, that answers with its body:
/// what serving costs without signing or verifying anything. It runs on a
/// thread and runtime of its own, as a node's server would, so that it
/// never shares the load generator's thread.
///
/// # Errors
/// When no loopback port can be bound.
pub fn start_echo_server() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let app = axum::Router::new().route("/echo", post(|body: Bytes| async move { body }));
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(listener, app).await;
            }
        });
    });
    Ok(addr)
}

/// Why one request of a run failed.
#[derive(Debug, thiserror::Error)]
enum JobError {
    /// The delegation failed.
    #[error(transparent)]
    Delegate(#[from] DelegateError),
    /// Its proof verified but could not be recorded in the ledger.
    #[error(transparent)]
    Ledger(#[from] StoreError),
    /// A routed delegation found no verified proof.
    #[error(transparent)]
    Route(RouteError),
}

impl From<ClientError> for JobError {
    fn from(error: ClientError) -> Self {
        JobError::Delegate(error.into())
    }
}

/// The wait a refusal asks for with `Retry-After`.
fn retry_after(err: &JobError) -> Option<Duration> {
    match err {
        JobError::Delegate(DelegateError::Client(ClientError::Refused { retry_after, .. })) => {
            *retry_after
        }
        _ => None,
    }
}

/// Whether a failure is the node saying no (rather than not answering).
fn is_refusal(kind: &str) -> bool {
    kind.starts_with("refused:") || kind == "http_429" || kind == "http_503"
}

/// The kind of a failure, for counting.
fn kind(err: &JobError) -> String {
    let err = match err {
        JobError::Delegate(err) => err,
        JobError::Ledger(_) => return "ledger".into(),
        JobError::Route(RouteError::NoCandidate { .. }) => return "no_candidate".into(),
        JobError::Route(RouteError::MayHaveRun { .. }) => return "may_have_run".into(),
        JobError::Route(RouteError::Exhausted { last, .. }) => match last {
            AttemptError::NotSent(err) | AttemptError::Sent(err) => err,
            AttemptError::NotRecorded(_) | AttemptError::NotKept(_) => return "ledger".into(),
        },
    };
    delegate_kind(err)
}

/// The kind of a delegation's failure, for counting.
fn delegate_kind(err: &DelegateError) -> String {
    match err {
        DelegateError::Client(ClientError::Refused { problem, .. }) => {
            format!("refused:{}", problem.code)
        }
        DelegateError::Client(ClientError::Unreachable { .. }) => "unreachable".into(),
        DelegateError::Client(ClientError::Broken { .. }) => "broken".into(),
        DelegateError::Client(ClientError::TimedOut { .. }) => "timed_out".into(),
        DelegateError::Client(ClientError::TooLarge { .. }) => "too_large".into(),
        DelegateError::Client(ClientError::BadResponse { status, .. }) => format!("http_{status}"),
        DelegateError::Client(_) => "client".into(),
        DelegateError::Proof { .. } => "invalid_proof".into(),
        DelegateError::WrongNode { .. } => "wrong_node".into(),
        DelegateError::OtherKey { .. } => "other_key".into(),
        DelegateError::LegacyNode { .. } => "legacy_node".into(),
        DelegateError::WrongAnswer { .. } => "wrong_answer".into(),
        DelegateError::StreamCut { .. } | DelegateError::StreamMismatch { .. } => err.code().into(),
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

async fn run<F, Fut>(
    plan: &Plan,
    job: Arc<F>,
    progress: impl Fn(Progress) + Send + 'static,
) -> Report
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
{
    let cpu_before = cpu_time();
    let start = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop_early = Arc::new(Mutex::new(None::<EarlyStop>));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let deadline = match plan.stop {
        Stop::After(d) => Some(start + d),
        Stop::Requests(_) => None,
    };
    let limit = match plan.stop {
        Stop::Requests(n) => n,
        Stop::After(_) => u64::MAX,
    };
    // Claims the next request slot, if the run is not over.
    let claim = {
        let (issued, stop_early) = (issued.clone(), stop_early.clone());
        move || {
            deadline.is_none_or(|d| Instant::now() < d)
                && stop_early
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none()
                && issued.fetch_add(1, Ordering::Relaxed) < limit
        }
    };
    // The pause a refusal asks for, cut at the run's end (a run of so many
    // requests has none: then at the per-request timeout).
    let longest = plan.timeout;
    let pause = move |outcome: &Result<(), JobError>| {
        let wait = outcome.as_ref().err().and_then(retry_after)?;
        Some(match deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait.min(longest),
        })
    };
    let record = {
        let (tally, done, failed, refused) =
            (tally.clone(), done.clone(), failed.clone(), refused.clone());
        move |from: Instant, outcome: &Result<(), JobError>| {
            let micros = from.elapsed().as_micros() as u64;
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(()) => t.latencies_us.push(micros),
                Err(e) => {
                    let kind = kind(e);
                    if is_refusal(&kind) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    *t.errors.entry(kind).or_default() += 1;
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    };

    let ticker = {
        let (done, failed, refused, stop_early) = (
            done.clone(),
            failed.clone(),
            refused.clone(),
            stop_early.clone(),
        );
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.tick().await;
            // (done, refused) at each of the window's ticks, oldest first.
            let ticks = (EARLY_STOP_WINDOW.as_millis() / TICK.as_millis()) as usize;
            let mut window = std::collections::VecDeque::with_capacity(ticks + 1);
            window.push_back((0, 0));
            loop {
                every.tick().await;
                let now = Progress {
                    done: done.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                    refused: refused.load(Ordering::Relaxed),
                    elapsed: start.elapsed(),
                };
                progress(now);
                window.push_back((now.done, now.refused));
                if window.len() > ticks + 1 {
                    window.pop_front();
                }
                let (done_then, refused_then) = window.front().copied().unwrap_or((0, 0));
                let (requests, refusals) = (now.done - done_then, now.refused - refused_then);
                if now.done >= EARLY_STOP_MIN_REQUESTS
                    && requests >= EARLY_STOP_MIN_WINDOW
                    && refusals as f64 >= EARLY_STOP_SHARE * requests as f64
                {
                    *stop_early.lock().unwrap_or_else(|p| p.into_inner()) = Some(EarlyStop {
                        requests,
                        refused: refusals,
                    });
                    break;
                }
            }
        })
    };

    let concurrency = plan.concurrency.max(1);
    match plan.rate {
        None => {
            // Closed loop: each worker sends its next request when the last is answered.
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (job, claim, record) = (job.clone(), claim.clone(), record.clone());
                    tokio::spawn(async move {
                        while claim() {
                            let sent = Instant::now();
                            let outcome = job().await;
                            record(sent, &outcome);
                            if let Some(wait) = pause(&outcome) {
                                tokio::time::sleep(wait).await;
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                let _ = worker.await;
            }
        }
        Some(rate) => {
            // Open loop: request i is due at start + i / rate, whatever the
            // server does; its latency counts from then, queueing included.
            let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let mut tasks = tokio::task::JoinSet::new();
            let mut due = start;
            // A refusal's Retry-After holds the whole schedule, which then
            // resumes from the end of the pause rather than catching up.
            let paused_until = Arc::new(Mutex::new(None::<Instant>));
            while claim() {
                let resume = paused_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                if let Some(resume) = resume.filter(|r| *r > due) {
                    tokio::time::sleep_until(resume.into()).await;
                    due = resume;
                    if !claim() {
                        break;
                    }
                }
                tokio::time::sleep_until(due.into()).await;
                let (job, record, slots) = (job.clone(), record.clone(), slots.clone());
                let paused_until = paused_until.clone();
                let intended = due;
                tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let outcome = job().await;
                    record(intended, &outcome);
                    if let Some(wait) = pause(&outcome) {
                        let resume = Instant::now() + wait;
                        let mut until = paused_until.lock().unwrap_or_else(|p| p.into_inner());
                        *until = Some(until.map_or(resume, |u| u.max(resume)));
                    }
                });
                due += interval;
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    ticker.abort();
    let elapsed = start.elapsed();
    let cpu_secs = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let ok = tally.latencies_us.len() as u64;
    let stopped_early = *stop_early.lock().unwrap_or_else(|p| p.into_inner());
    Report {
        ok,
        errors: tally.errors,
        elapsed_secs: elapsed.as_secs_f64(),
        per_second: ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: percentiles(&mut tally.latencies_us),
        cpu_secs,
        stopped_early,
        peers: Vec::new(),
    }
}

fn percentiles(us: &mut [u64]) -> Latency {
    if us.is_empty() {
        return Latency::default();
    }
    us.sort_unstable();
    let at =
        |q: f64| us[((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1000.0;
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
        mean: us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0,
    }
}

/// User + system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux architecture sage runs on.
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut us: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let l = percentiles(&mut us);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(l.mean, 500.5);
        assert_eq!(percentiles(&mut []), Latency::default());
    }

    #[test]
    fn cpu_time_is_read_on_linux() {
        let t = cpu_time().unwrap();
        assert!(t >= 0.0);
    }

    #[tokio::test]
    async fn baseline_counts_and_stops_by_requests() {
        let addr = start_echo_server().unwrap();
        let client = Client::new().unwrap();
        let plan = Plan {
            protocol: Protocol::V1,
            concurrency: 4,
            stop: Stop::Requests(50),
            rate: None,
            verify: true,
            ledger: None,
            timeout: Duration::from_secs(5),
        };
        let report = baseline(&client, &addr.to_string(), Bytes::from_static(b"{}"), &plan).await;
        assert_eq!(report.ok, 50);
        assert!(report.errors.is_empty());
        assert!(report.latency_ms.p50 > 0.0);

        let open = Plan {
            rate: Some(200.0),
            stop: Stop::Requests(20),
            ..plan
        };
        let report = baseline(&client, &addr.to_string(), Bytes::from_static(b"{}"), &open).await;
        assert_eq!(report.ok, 20);
        // 20 requests due at 200/s take at least 95 ms of schedule.
        assert!(report.elapsed_secs >= 0.095, "{report:?}");
    }
}
