//! One module per subcommand: its arguments and its `run`.

pub mod bench;
pub mod delegate;
pub mod health;
pub mod key;
pub mod keygen;
pub mod peer;
pub mod serve;

/// A current-thread-free runtime for the async commands.
pub fn runtime() -> Result<tokio::runtime::Runtime, crate::failure::Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
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
