//! How a command fails: bad usage (exit 2) or a failed operation (exit 1).

use crate::output::out;
use std::fmt;
use std::process::ExitCode;

/// A command's failure, printed once by `main` as `sage: {failure}`.
#[derive(Debug)]
pub enum Failure {
    /// The arguments cannot work (exit 2).
    Usage(String),
    /// The operation failed (exit 1).
    Failed(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Failed(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(msg) | Failure::Failed(msg) => f.write_str(msg),
        }
    }
}

/// Library errors are failed operations; their messages already name the fix.
macro_rules! failed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Failure {
            fn from(err: $t) -> Self {
                Failure::Failed(err.to_string())
            }
        }
    )*};
}

failed_from!(
    sage_service::KeyDirError,
    sage_service::ClientError,
    sage_service::DelegateError,
    sage_service::TlsError,
    std::io::Error
);

pub type CmdResult = Result<(), Failure>;

/// Prints `value` as one JSON object on stdout.
pub fn print_json(value: &serde_json::Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
