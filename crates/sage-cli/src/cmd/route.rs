//! `sage route explain`: what `delegate` without `--target` would do, and
//! why, without sending a task.

use crate::output::out;
use std::path::Path;
use std::time::Duration;

use sage_route::{Explained, Standing};
use sage_service::delegator::route::{Anchor, Left, Survey};
use sage_service::keydir::KeyDir;
use serde_json::{json, Value};

use super::fleet;
use crate::failure::{CmdResult, Failure};
use crate::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show what `sage delegate` without --target would do for a task type,
    /// sending nothing: each trusted peer in or out and why, the parts of
    /// its cost, and the peer the router favours.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The task type to route.
    #[arg(long)]
    task_type: String,
    /// This platform's name (case-insensitive) [default: the key
    /// directory's only key].
    #[arg(long)]
    local: Option<String>,
    /// Pick among these peers first (repeatable), as `delegate --prefer`.
    #[arg(long, value_name = "NAME")]
    prefer: Vec<String>,
    /// Never pick this peer (repeatable), as `delegate --exclude`.
    #[arg(long, value_name = "NAME")]
    exclude: Vec<String>,
    /// The most the task may cost, in ATP: a peer whose price is above it
    /// is left out.
    #[arg(long)]
    max_cost: Option<f64>,
    #[command(flatten)]
    local_node: super::fleet::LocalNode,
    /// How long to wait for the peers' capabilities (seconds, or e.g.
    /// `500ms`) [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = super::positive_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    answer_limit: super::AnswerLimit,
}

pub fn run(keys_dir: &Path, state_dir: &Path, command: Command) -> CmdResult {
    match command {
        Command::Explain(args) => explain(keys_dir, state_dir, args),
    }
}

/// One trusted peer as `explain` shows it.
struct Row<'a> {
    name: &'a str,
    lct_id: &'a str,
    /// The survey's reason it is no candidate.
    left: Option<&'a Left>,
    preferred: bool,
    /// The router's view of it.
    seen: Explained<String>,
    /// Whether the router would pick it.
    favoured: bool,
}

fn explain(keys_dir: &Path, state_dir: &Path, args: ExplainArgs) -> CmdResult {
    let keys = KeyDir::new(keys_dir);
    let Some(local) = super::this_node(&keys, args.local.clone())? else {
        return Err(Failure::Usage(format!(
            "pass --local NAME: the key directory {} does not hold exactly one key",
            keys.path().display()
        )));
    };
    let local = keys.load_identity(&local)?;
    let trust = keys.trust_store(&local.name)?;
    let timeout = args
        .timeout
        .unwrap_or(sage_service::delegator::route::CAPABILITIES_WITHIN);
    let runtime = super::runtime(false)?;
    let store = super::open_store(state_dir)?;
    let client_for = fleet::client_for(fleet::connect_within(timeout), args.answer_limit);
    let constraints = fleet::constraints(
        &args.prefer,
        &args.exclude,
        args.max_cost,
        args.local_node.address(),
    );
    let (router, anchor) = fleet::rebuilt_router(&runtime, &store)?;
    let survey = fleet::survey(
        &runtime,
        &trust,
        &local,
        &args.task_type,
        &constraints,
        &store,
        client_for,
        timeout,
    );
    // The pool `delegate` picks from: the preferred candidates while there
    // is one, else every candidate.
    let preferred: Vec<String> = survey
        .candidates
        .iter()
        .filter(|c| c.preferred)
        .map(|c| c.peer.lct_id.clone())
        .collect();
    let pool = if preferred.is_empty() {
        survey
            .candidates
            .iter()
            .map(|c| c.peer.lct_id.clone())
            .collect()
    } else {
        preferred
    };
    let favoured = router
        .explain(&pool)
        .into_iter()
        .find(|e| e.favoured)
        .map(|e| e.key);
    let rows = rows(&survey, &router, favoured.as_deref());
    if json::enabled() {
        json::report(json!({
            "local": local.name,
            "task_type": args.task_type,
            "picked": rows.iter().find(|r| r.favoured).map(|r| r.name),
            "peers": rows.iter().map(|r| row_json(r, &anchor)).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    print_rows(&rows, &anchor, &args.task_type);
    Ok(())
}

/// Every trusted peer of the survey, by name, with the router's view.
fn rows<'a>(
    survey: &'a Survey,
    router: &sage_route::Router<String>,
    favoured: Option<&str>,
) -> Vec<Row<'a>> {
    let mut peers: Vec<(&sage_crypto::Peer, Option<&Left>, bool)> = survey
        .candidates
        .iter()
        .map(|c| (&c.peer, None, c.preferred))
        .chain(survey.left.iter().map(|(p, why)| (p, Some(why), false)))
        .collect();
    peers.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let keys: Vec<String> = peers.iter().map(|(p, _, _)| p.lct_id.clone()).collect();
    router
        .explain(&keys)
        .into_iter()
        .zip(peers)
        .map(|(seen, (peer, left, preferred))| Row {
            name: &peer.name,
            lct_id: &peer.lct_id,
            left,
            preferred,
            favoured: favoured == Some(peer.lct_id.as_str()),
            seen,
        })
        .collect()
}

/// `in`, `cooling` (a candidate set aside for now) or `out`.
fn standing(row: &Row) -> &'static str {
    match (row.left, row.seen.standing) {
        (Some(_), _) => "out",
        (None, Standing::Ready) => "in",
        (None, Standing::Cooling { .. }) => "cooling",
    }
}

/// Why a row is as it is: the survey's reason, or the cooldown's.
fn why(row: &Row, anchor: &Anchor) -> String {
    let cooling = match row.seen.standing {
        Standing::Cooling { until, reason, .. } => Some(format!(
            "cooling until {}: {}",
            crate::time::local(anchor.wall_ms(until)),
            fleet::ejection_text(&reason)
        )),
        Standing::Ready => None,
    };
    let mut parts: Vec<String> = row.left.map(ToString::to_string).into_iter().collect();
    parts.extend(cooling);
    if row.preferred {
        parts.push("preferred".into());
    }
    if parts.is_empty() {
        "ready".into()
    } else {
        parts.join("; ")
    }
}

fn row_json(row: &Row, anchor: &Anchor) -> Value {
    let seen = &row.seen;
    let cooling = match seen.standing {
        Standing::Cooling {
            until,
            remaining,
            reason,
        } => {
            let mut cooling = json!({
                "remaining_ms": json::duration_ms(remaining),
                "reason": fleet::ejection_text(&reason),
            });
            json::insert_time(&mut cooling, "until", Some(anchor.wall_ms(until)));
            cooling
        }
        Standing::Ready => Value::Null,
    };
    json!({
        "name": row.name,
        "lct_id": row.lct_id,
        "standing": standing(row),
        "reason": row.left.map(ToString::to_string),
        "preferred": row.preferred,
        "cooling": cooling,
        "latency_ms": json::duration_ms(seen.latency),
        "in_flight": seen.in_flight,
        "score": seen.score,
        "weight": seen.weight,
        "cost_ms": json::ms3(seen.cost_ms),
        "favoured": row.favoured,
    })
}

fn print_rows(rows: &[Row], anchor: &Anchor, task_type: &str) {
    if rows.is_empty() {
        out!("no trusted peers to route {task_type} to (add one with `sage peer add`)");
        return;
    }
    let name_width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    out!(
        "{:<name_width$}  {:<7}  {:>10}  {:>9}  {:>5}  {:>6}  {:>10}  {:<4}  WHY",
        "PEER",
        "STATUS",
        "LATENCY",
        "IN-FLIGHT",
        "SCORE",
        "WEIGHT",
        "COST",
        "PICK"
    );
    for row in rows {
        let seen = &row.seen;
        out!(
            "{:<name_width$}  {:<7}  {:>10}  {:>9}  {:>5.3}  {:>6.3}  {:>10}  {:<4}  {}",
            row.name,
            standing(row),
            format!("{:.2} ms", seen.latency.as_secs_f64() * 1000.0),
            seen.in_flight,
            seen.score,
            seen.weight,
            format!("{:.2} ms", seen.cost_ms),
            if row.favoured { "yes" } else { "" },
            why(row, anchor)
        );
    }
    match rows.iter().find(|r| r.favoured) {
        Some(row) if standing(row) == "cooling" => out!(
            "\nevery candidate is cooling: {task_type} would wait for {}, back first",
            row.name
        ),
        Some(row) => out!(
            "\nthe router favours {} for {task_type}: the cheapest ready candidate, picked whenever it is drawn",
            row.name
        ),
        None => out!("\nno peer would take {task_type}: `sage delegate` would fail"),
    }
}
