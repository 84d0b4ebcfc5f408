//! One module per subcommand: its arguments and its `run`.

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
