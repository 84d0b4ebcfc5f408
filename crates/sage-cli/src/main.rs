//! `sage`: delegate AI tasks between machines with signed requests and
//! signed execution proofs.
//!
//! This binary only parses arguments, calls the libraries and prints; the
//! one place that turns errors into messages and exit codes is [`main`].
// A binary has no API: a doc comment here is worth it only where it says
// more than the item's name (clap's are the `--help` text).
#![allow(missing_docs)]

mod advice;
mod cmd;
mod failure;
mod json;
mod output;
mod progress;
mod telemetry;
mod time;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Signed task delegation between the machines of an AI fleet.
#[derive(Debug, Parser)]
#[command(name = "sage", version, about, long_about = None, after_help = EXIT_CODES)]
struct Cli {
    /// Key directory: key files and peers.toml [default: keys, or the config file's].
    #[arg(long, global = true, env = "SAGE_KEYS_DIR")]
    keys_dir: Option<PathBuf>,

    /// State directory: the node's SQLite database (tasks, proofs, nonces,
    /// ledger) [default: $STATE_DIRECTORY when systemd sets it, else ./state].
    #[arg(long, global = true, env = "SAGE_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Log lines as text, or as one JSON object per line (for journald and
    /// log shippers).
    #[arg(long, global = true, env = "SAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Print one JSON object on stdout, a failure included: its fields
    /// are in docs/cli-json.md. Exit codes are the same.
    #[arg(long, global = true)]
    json: bool,

    /// Send spans to this OTLP/HTTP collector (its /v1/traces), e.g.
    /// http://127.0.0.1:4318; off by default [serve: config
    /// telemetry.otlp_endpoint].
    #[arg(long, global = true, env = "SAGE_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// `TIME LEVEL span{fields}: message fields`.
    Text,
    /// One JSON object per line: timestamp, level, fields (message
    /// included), and the spans (the request's id among them).
    Json,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 the operation failed (refused, unreachable, invalid proof), 2 bad usage.\nLogs go to stderr; set SAGE_LOG (e.g. SAGE_LOG=debug) to change the level.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: verify signed tasks, execute them, answer with signed proofs.
    Serve(cmd::serve::Args),
    /// Sign a task, send it to a peer, and verify the proof it returns.
    Delegate(cmd::delegate::Args),
    /// Load a node with delegations: throughput, latency percentiles, errors.
    Bench(cmd::bench::Args),
    /// Show a node's task types, limits, prices and hardware, signature verified.
    Capabilities(cmd::capabilities::Args),
    /// Check that a node answers and is healthy.
    Health(cmd::health::Args),
    /// Set up a node: its key (if missing), a starter sage.toml, and the
    /// `sage peer add` line for the other machines.
    Init(cmd::init::Args),
    /// Make a new Ed25519 key for a platform.
    Keygen(cmd::keygen::Args),
    /// Inspect keys.
    #[command(subcommand)]
    Key(cmd::key::Command),
    /// Manage the peers this node trusts (peers.toml).
    #[command(subcommand)]
    Peer(cmd::peer::Command),
    /// How `sage delegate` without --target picks a peer: `route explain`.
    #[command(subcommand)]
    Route(cmd::route::Command),
    /// The delegator's receipts: list, show, export, verify offline.
    #[command(subcommand)]
    Proofs(cmd::proofs::Command),
    /// Check a config file and print the effective configuration.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// TLS certificates for `sage serve --tls-cert`: make a self-signed one, print a fingerprint.
    #[command(subcommand)]
    Tls(cmd::tls::Command),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page sage(1), or write every page into a directory.
    Man(cmd::docs::ManArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let logging = Logging {
        format: cli.log_format,
        otlp_endpoint: cli.otlp_endpoint.clone(),
    };
    // `serve` starts logging once its config says where spans go.
    let started = match &cli.command {
        Command::Serve(_) => Ok(()),
        Command::Delegate(args) => logging.start(None, args.local()),
        _ => logging.start(None, None),
    };
    if cli.json {
        json::enable(&command_path(&matches));
    }
    // `serve` may take the key directory from its config file instead.
    let keys_dir = cli
        .keys_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("keys"));
    let keys_dir = keys_dir.as_path();
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(sage_service::config::node::default_state_dir);
    let result = match cli.command {
        _ if started.is_err() => started,
        Command::Serve(_) | Command::Completions(_) | Command::Man(_) if cli.json => {
            let _ = logging.start(None, None);
            Err(failure::Failure::Usage(
                "--json is for commands that report; serve, completions and man print none".into(),
            ))
        }
        Command::Serve(args) => cmd::serve::run(
            cli.keys_dir.as_deref(),
            cli.state_dir.as_deref(),
            &logging,
            args,
        ),
        Command::Proofs(command) => cmd::proofs::run(keys_dir, &state_dir, command),
        Command::Config(command) => cmd::config::run(cli.keys_dir.as_deref(), command),
        Command::Delegate(args) => cmd::delegate::run(keys_dir, &state_dir, args),
        Command::Health(args) => cmd::health::run(keys_dir, args),
        Command::Bench(args) => cmd::bench::run(keys_dir, &state_dir, args),
        Command::Capabilities(args) => cmd::capabilities::run(keys_dir, args),
        Command::Init(args) => cmd::init::run(keys_dir, args),
        Command::Keygen(args) => cmd::keygen::run(keys_dir, args),
        Command::Key(command) => cmd::key::run(keys_dir, command),
        Command::Peer(command) => cmd::peer::run(keys_dir, &state_dir, command),
        Command::Route(command) => cmd::route::run(keys_dir, &state_dir, command),
        Command::Tls(command) => cmd::tls::run(keys_dir, command),
        Command::Completions(args) => cmd::docs::completions::<Cli>(args),
        Command::Man(args) => cmd::docs::man::<Cli>(args),
    };
    telemetry::shutdown();
    json::finish(result.as_ref().err());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("sage: {failure}");
            failure.exit_code()
        }
    }
}

/// The subcommands run, as typed: `proofs show`.
fn command_path(matches: &clap::ArgMatches) -> String {
    let mut names = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        names.push(name);
        at = sub;
    }
    names.join(" ")
}

/// How the run logs: the format, and the `--otlp-endpoint` given.
pub struct Logging {
    format: LogFormat,
    otlp_endpoint: Option<String>,
}

impl Logging {
    /// The endpoint spans go to: the flag's, else `configured`.
    pub fn endpoint<'a>(&'a self, configured: Option<&'a str>) -> Option<&'a str> {
        self.otlp_endpoint.as_deref().or(configured)
    }

    /// Starts logging, and exporting spans if [`Logging::endpoint`] names
    /// a collector (`platform` is the resource's platform name). A bad
    /// endpoint is an error, and logging starts without it. Only the
    /// first call does anything.
    pub fn start(
        &self,
        configured: Option<&str>,
        platform: Option<&str>,
    ) -> Result<(), failure::Failure> {
        static STARTED: AtomicBool = AtomicBool::new(false);
        if STARTED.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_env("SAGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let lines: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match self.format {
            LogFormat::Text => Box::new(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            LogFormat::Json => Box::new(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    .json()
                    .with_current_span(false)
                    .with_span_list(true),
            ),
        };
        let (spans, result) = match self.endpoint(configured) {
            None => (None, Ok(())),
            Some(endpoint) => match telemetry::layer(endpoint, platform) {
                Ok(layer) => (Some(layer), Ok(())),
                Err(failure) => (None, Err(failure)),
            },
        };
        // Beneath the filter: what is not logged is not exported either.
        tracing_subscriber::registry()
            .with(filter)
            .with(spans)
            .with(lines)
            .init();
        if result.is_ok() && self.endpoint(configured).is_some() {
            sage_service::telemetry::enable();
        }
        result
    }
}
