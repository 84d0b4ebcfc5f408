//! `sage proofs list|show|export|verify`: the delegator's receipts.

use crate::output::out;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use sage_crypto::TrustStore;
use sage_service::delegator::ledger::{open_receipt, verify_receipt, OpenedMessage, Receipt};
use sage_service::keydir::KeyDir;
use sage_store::LedgerEntry;
use sage_types::untrusted::{Untrusted, EXPLANATION_CHARS};
use serde_json::json;

use crate::failure::{CmdResult, Failure};
use crate::json;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List delegations and their outcome, oldest first.
    List(ListArgs),
    /// Show one delegation's task and signed proof.
    Show(ShowArgs),
    /// Write every receipt (signed task and signed proof) as JSON lines.
    Export(ExportArgs),
    /// Re-check every receipt of an export offline, with only the trust store.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only delegations to this peer (case-insensitive).
    #[arg(long)]
    peer: Option<String>,
    /// Only delegations sent at or after this time: an age such as `90s`,
    /// `30m`, `12h`, `7d`, an RFC 3339 time (`2026-12-04T18:00:00Z`), or unix
    /// seconds.
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The task id.
    task_id: String,
    /// Print the receipt as `proofs export` writes it: the signed task and
    /// proof as they travelled (base64 payloads), for tools.
    #[arg(long)]
    raw: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// An export (JSON lines); `-` for stdin.
    file: PathBuf,
}

pub fn run(keys_dir: &Path, state_dir: &Path, command: Command) -> CmdResult {
    if let Command::Verify(args) = command {
        return verify(keys_dir, args);
    }
    let runtime = super::runtime(false)?;
    let store = super::open_store(state_dir)?;
    let ledger =
        |peer: Option<String>, since: Option<u64>| runtime.block_on(store.ledger(peer, since));
    match command {
        Command::List(args) => {
            let since = args.since.as_deref().map(parse_since).transpose()?;
            let entries = ledger(args.peer, since)?;
            if json::enabled() {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        let mut row = json!({"task_id": e.task_id, "peer": e.peer, "protocol": e.protocol, "task_type": e.task_type,
                               "status": e.status, "latency_ms": e.latency_ms.map(json::ms3),
                               "quality": e.quality, "error": e.error});
                        json::insert_time(&mut row, "sent_at", Some(e.sent_at_ms));
                        row
                    })
                    .collect();
                json::report(json!({ "delegations": rows }));
            } else {
                if entries.is_empty() {
                    out!("no delegations recorded in {}", state_dir.display());
                } else {
                    out!("sent  task id  task type → peer  status  latency");
                }
                for e in &entries {
                    let latency = e
                        .latency_ms
                        .map(|l| format!("{l:.2} ms"))
                        .unwrap_or_else(|| "-".into());
                    let id = display_id(&e.task_id);
                    out!(
                        "{}  {id}  {} → {}  {}  {latency}",
                        crate::time::local(e.sent_at_ms),
                        e.task_type,
                        e.peer,
                        e.status
                    );
                }
            }
            Ok(())
        }
        Command::Show(args) => {
            let entry = runtime
                .block_on(store.ledger_entry(args.task_id.clone()))?
                .ok_or_else(|| {
                    Failure::Failed(format!(
                        "no delegation with task id {} in {}",
                        args.task_id,
                        state_dir.display()
                    ))
                })?;
            let receipt = Receipt::of(&entry);
            if json::enabled() {
                let mut report = json!({ "receipt": receipt.to_json() });
                json::insert_time(&mut report, "sent_at", Some(entry.sent_at_ms));
                json::report(report);
            } else if args.raw {
                crate::failure::print_json(&receipt.to_json());
            } else {
                // A key directory is optional here: without one the
                // receipt is shown, unchecked.
                let trust = KeyDir::new(keys_dir).trust_store("").ok();
                let attempts = runtime.block_on(store.ledger_attempts(args.task_id.clone()))?;
                show(&entry, &receipt, trust.as_ref());
                print_attempts(&attempts, entry.id);
            }
            Ok(())
        }
        Command::Export(args) => {
            let entries = ledger(None, None)?;
            if json::enabled() && args.out.is_none() {
                let receipts: Vec<_> = entries
                    .iter()
                    .filter(|e| e.proof.is_some())
                    .map(|e| Receipt::of(e).to_json())
                    .collect();
                json::report(
                    json!({ "file": null, "count": receipts.len(), "receipts": receipts }),
                );
                return Ok(());
            }
            let mut out: Box<dyn std::io::Write> = match &args.out {
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    Failure::Failed(format!("cannot write {}: {e}", path.display()))
                })?),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut count = 0;
            for entry in entries.iter().filter(|e| e.proof.is_some()) {
                let line = Receipt::of(entry).to_line();
                writeln!(out, "{line}")?;
                count += 1;
            }
            out.flush()?;
            if let Some(path) = &args.out {
                eprintln!("wrote {count} receipts to {}", path.display());
                if json::enabled() {
                    json::report(json!({ "file": path, "count": count, "receipts": null }));
                }
            }
            Ok(())
        }
        Command::Verify(_) => Ok(()),
    }
}

/// `proofs show`: the delegation, whether its proof verifies with the
/// trust store, and both signed messages field by field.
fn show(entry: &LedgerEntry, receipt: &Receipt, trust: Option<&TrustStore>) {
    out!("delegation {}", display_id(&entry.task_id));
    out!(
        "  sent:      {} to {} ({}), protocol {}",
        crate::time::local(entry.sent_at_ms),
        entry.peer,
        entry.peer_lct,
        entry.protocol
    );
    out!("  outcome:   {}", entry.status);
    if let Some(error) = &entry.error {
        out!("  error:     {}", Untrusted(error).up_to(EXPLANATION_CHARS));
    }
    let verdict = match (trust, &receipt.proof) {
        (_, None) => "no proof came back".to_owned(),
        (None, Some(_)) => "not checked: no key directory to check it with".to_owned(),
        (Some(trust), Some(_)) => match verify_receipt(receipt, trust) {
            Ok(verified) => format!(
                "✓ signed by {}: {}",
                verified.signer,
                verified
                    .status
                    .map_or("a legacy proof, which states no status", |s| s.as_str())
            ),
            Err(e) => format!("✗ {e}"),
        },
    };
    out!("  proof:     {verdict}");
    let opened = open_receipt(receipt);
    for (title, message) in [("task", &opened.task), ("proof", &opened.proof)] {
        match message {
            Some(message) => print_message(title, message),
            None if title == "proof" && receipt.proof.is_none() => {}
            None => out!("{title}: cannot be opened (`--raw` shows it as stored)"),
        }
    }
}

/// Every attempt of the delegation, when there was more than the one
/// shown (`shown` is its row id): a routed delegation's failover, or a
/// retry under the same task id.
fn print_attempts(attempts: &[LedgerEntry], shown: i64) {
    if attempts.len() < 2 {
        return;
    }
    out!();
    out!("attempts (this one marked *)");
    for (i, a) in attempts.iter().enumerate() {
        let mark = if a.id == shown { "*" } else { " " };
        let error = a
            .error
            .as_deref()
            .map(|e| format!(": {}", Untrusted(e).up_to(EXPLANATION_CHARS)))
            .unwrap_or_default();
        out!(
            "{mark} {}. {}  {}  {}{error}",
            i + 1,
            crate::time::local(a.sent_at_ms),
            a.peer,
            a.status
        );
    }
}

/// One signed message's fields, one per line; times of the signed fields
/// (unix ms) also as local RFC 3339, JSON values indented below their name.
fn print_message(title: &str, message: &OpenedMessage) {
    out!();
    match message.key_ids.as_slice() {
        [] => out!("{title}"),
        ids => out!("{title} (signed by key {})", ids.join(", ")),
    }
    let Some(fields) = message.fields.as_object() else {
        out!("  {}", message.fields);
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0) + 1;
    for (name, value) in fields {
        let label = format!("{name}:");
        match value {
            serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                out!("  {label}");
                let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
                for line in pretty.lines() {
                    out!("    {line}");
                }
            }
            // Signed by a peer, still chosen by it: escaped for the terminal.
            serde_json::Value::String(text) => out!(
                "  {label:width$} {}",
                Untrusted(text).up_to(EXPLANATION_CHARS)
            ),
            serde_json::Value::Number(n) if MS_FIELDS.contains(&name.as_str()) => {
                match n.as_u64() {
                    Some(ms) => out!("  {label:width$} {} ({ms})", crate::time::local(ms)),
                    None => out!("  {label:width$} {n}"),
                }
            }
            other => out!("  {label:width$} {other}"),
        }
    }
}

/// The signed fields that hold unix milliseconds.
const MS_FIELDS: [&str; 4] = ["issued_at", "expires_at", "started_at", "finished_at"];

/// A task id as printed; a legacy refusal may have none.
fn display_id(id: &str) -> &str {
    if id.is_empty() {
        "-"
    } else {
        id
    }
}

fn verify(keys_dir: &Path, args: VerifyArgs) -> CmdResult {
    let trust = KeyDir::new(keys_dir).trust_store("")?;
    let reader: Box<dyn std::io::BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| Failure::Failed(format!("cannot read {}: {e}", args.file.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut results = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let outcome = Receipt::from_line(line.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|r| {
                verify_receipt(&r, &trust)
                    .map(|verified| (r.task_id.clone(), verified))
                    .map_err(|e| e.to_string())
            });
        results.push((i + 1, outcome));
    }
    let bad = results.iter().filter(|(_, r)| r.is_err()).count();
    if json::enabled() {
        let rows: Vec<_> = results
            .iter()
            .map(|(line, r)| match r {
                Ok((task_id, verified)) => {
                    json!({"line": line, "ok": true, "task_id": task_id, "signer": verified.signer,
                           "status": verified.status.map(|s| s.as_str())})
                }
                Err(e) => json!({"line": line, "ok": false, "error": e}),
            })
            .collect();
        json::report(json!({ "receipts": results.len(), "invalid": bad, "results": rows }));
    } else {
        for (line, r) in &results {
            match r {
                Ok((task_id, verified)) => out!(
                    "line {line}: ✓ {task_id} proven by {}: {}",
                    verified.signer,
                    verified
                        .status
                        .map_or("a legacy proof, which states no status", |s| s.as_str())
                ),
                Err(e) => out!("line {line}: ✗ {e}"),
            }
        }
    }
    if results.is_empty() {
        return Err(Failure::Failed(format!(
            "{} holds no receipt",
            args.file.display()
        )));
    }
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} of {} receipts do not verify",
            results.len()
        )));
    }
    if !json::enabled() {
        out!("all {} receipts verify", results.len());
    }
    Ok(())
}

/// Unix seconds, an RFC 3339 time, or an age (`90s`, `30m`, `12h`, `7d`)
/// before now, as unix ms.
fn parse_since(text: &str) -> Result<u64, Failure> {
    use sage_service::config::duration::{millis, parse_duration};
    let bad = || {
        Failure::Usage(format!(
            "--since {text:?}: give unix seconds or an age like 30m, 12h, 7d, or an RFC 3339 time like 2026-12-04T18:00:00Z"
        ))
    };
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    if let Some(ms) = crate::time::parse_rfc3339(text) {
        return Ok(ms);
    }
    // A bare number is a time, never an age: `1.5` or `-3` is neither.
    if text.trim().parse::<f64>().is_ok() {
        return Err(bad());
    }
    let age = parse_duration(text).ok().and_then(millis).ok_or_else(bad)?;
    Ok(sage_types::clock::now_ms().saturating_sub(age))
}
