//! One module per subcommand: its arguments and its `run`.

pub mod bench;
pub mod capabilities;
pub mod config;
pub mod delegate;
pub mod health;
pub mod key;
pub mod keygen;
pub mod peer;
pub mod proofs;
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
