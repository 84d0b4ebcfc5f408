//! One module per subcommand: its arguments and its `run`.

use std::time::Duration;

pub mod bench;
pub mod capabilities;
pub mod config;
pub mod delegate;
pub mod docs;
pub mod fleet;
pub mod health;
pub mod init;
pub mod key;
pub mod keygen;
pub mod peer;
pub mod proofs;
pub mod route;
pub mod serve;
pub mod tls;

/// The async runtime of a command. One thread for one request at a time:
/// no hop between threads on the way (it halves a lone delegation's CPU);
/// a thread per core for a server or a load of concurrent requests.
pub fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, crate::failure::Failure> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        crate::failure::Failure::Failed(format!("cannot start the async runtime: {e}"))
    })
}

/// The state database for a short command (`delegate`, `proofs`, `peer
/// list`), beside a node that may run on the same directory (its lock is
/// not taken). Only its header and schema are checked at open, so that the
/// command's time does not grow with the file; `serve` checks every page
/// at start, and damage met here is reported all the same.
pub fn open_store(
    state_dir: &std::path::Path,
) -> Result<sage_store::Store, crate::failure::Failure> {
    Ok(sage_store::Store::open_shared(state_dir)?)
}

/// This node's name: `--local`, else the key directory's only key (as
/// `serve` takes it); `None` when the directory holds several or none.
pub fn this_node(
    keys: &sage_service::keydir::KeyDir,
    local: Option<String>,
) -> Result<Option<String>, crate::failure::Failure> {
    Ok(match local {
        Some(name) => Some(name),
        None => match keys.key_files()?.as_slice() {
            [(name, _)] => Some(name.clone()),
            _ => None,
        },
    })
}

/// `--max-answer-bytes`: the bound on each answer a command reads from a
/// node.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct AnswerLimit {
    /// The longest answer read from a node, in bytes: a longer one fails
    /// the command (exit 1) and is not read whole.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = sage_service::delegator::client::DEFAULT_MAX_ANSWER_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_answer_bytes: u64,
}

impl AnswerLimit {
    /// `client`, bounded by the flag.
    pub fn apply(
        self,
        client: sage_service::delegator::client::Client,
    ) -> sage_service::delegator::client::Client {
        client.with_max_answer_bytes(usize::try_from(self.max_answer_bytes).unwrap_or(usize::MAX))
    }
}

/// How a command reaches a node: the TLS trust for an `https://` address,
/// how long to wait, and how much of an answer to read. One group, so
/// `delegate`, `bench`, `health` and `capabilities` take the same flags,
/// checked the same way.
#[derive(Debug, clap::Args)]
pub struct Reach {
    #[command(flatten)]
    pub tls: tls::TrustArgs,
    /// How long to wait for the node (seconds, or e.g. `500ms`, `2m`)
    /// [default: 5s for health and capabilities; 60s for delegate, also the
    /// task's validity; 30s per request for bench].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    pub answer_limit: AnswerLimit,
}

impl Reach {
    /// `--timeout`, or the command's own default.
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }
}

/// The arguments of a command that asks one node one question (`health`,
/// `capabilities`).
#[derive(Debug, clap::Args)]
pub struct NodeQuery {
    /// The node: HOST[:PORT] or http(s)://HOST[:PORT] (port 50051 if
    /// none; IPv6 as [::1]:50051).
    #[arg(value_parser = node_address)]
    pub address: String,
    #[command(flatten)]
    pub reach: Reach,
}

impl NodeQuery {
    /// How long a question waits for its answer unless `--timeout` says.
    const TIMEOUT: Duration = Duration::from_secs(5);

    /// `--timeout`, or 5 s.
    pub fn timeout(&self) -> Duration {
        self.reach.timeout_or(Self::TIMEOUT)
    }

    /// A client for the node, with the TLS settings of the flags or of a
    /// known peer at its address, and the answer bound. An address typed
    /// without a scheme takes that of the known peer recorded at the same
    /// host and port, so `health thor:50051` reaches an `https://` peer
    /// with its pinned certificate.
    pub fn client(
        &mut self,
        peers: Option<&sage_crypto::TrustStore>,
    ) -> Result<sage_service::delegator::client::Client, crate::failure::Failure> {
        let known = peers
            .and_then(|peers| tls::peer_at(peers, &self.address))
            .and_then(|peer| peer.address.clone());
        if let Some(recorded) = known {
            self.address = recorded;
        }
        let trust = self.reach.tls.trust_for(peers, &self.address)?;
        Ok(self
            .reach
            .answer_limit
            .apply(sage_service::delegator::client::Client::with_tls(&trust)?))
    }
}

/// Checks a node's address as typed (`HOST[:PORT]`, `http(s)://HOST[:PORT]`)
/// and keeps it as typed, for the messages that name it.
pub fn node_address(text: &str) -> Result<String, String> {
    sage_service::delegator::client::NodeAddress::parse(text)
        .map(|_| text.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a duration flag: seconds (`30`, `0.5`) or text with units
/// (`500ms`, `2m`, `1h 30m`), the syntax of `sage.toml`'s durations.
pub fn duration(text: &str) -> Result<Duration, String> {
    sage_service::config::duration::parse_duration(text)
        .map_err(|e| format!("{e}: give seconds or text like 500ms, 30s, 2m"))
}

/// [`duration`], refusing zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be above zero".into()),
        d => Ok(d),
    }
}

/// `--protocol` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProtocolArg {
    /// sage's native protocol.
    V1,
    /// The Python original's protocol.
    Legacy,
}

impl From<ProtocolArg> for sage_crypto::Protocol {
    fn from(arg: ProtocolArg) -> Self {
        match arg {
            ProtocolArg::V1 => sage_crypto::Protocol::V1,
            ProtocolArg::Legacy => sage_crypto::Protocol::Legacy,
        }
    }
}
