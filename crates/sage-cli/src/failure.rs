//! How a command fails: bad usage (exit 2) or a failed operation (exit 1).

use crate::advice::{self, Advice};
use crate::output::out;
use std::fmt;
use std::process::ExitCode;

/// A command's failure, printed once by `main` as `sage: {failure}`.
#[derive(Debug)]
pub enum Failure {
    /// The arguments cannot work (exit 2).
    Usage(String),
    /// The operation failed (exit 1), in the CLI's own words.
    Failed(String),
    /// A library's error (exit 1), kept typed. Its message includes its
    /// causes, so they are printed once, and its source chain is not
    /// printed again; `advice` is the CLI's fix for it (a flag or a
    /// command), which library errors do not know.
    Error {
        /// The error.
        error: Box<dyn std::error::Error + Send + Sync>,
        /// What to do about it, if the CLI knows ([`advice::for_error`]).
        advice: Option<Advice>,
    },
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Failed(_) | Failure::Error { .. } => ExitCode::from(1),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(msg) | Failure::Failed(msg) => f.write_str(msg),
            Failure::Error { error, advice } => {
                write!(f, "{error}")?;
                match advice {
                    Some(advice) => write!(f, "{advice}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Library errors that are failed operations, kept typed.
macro_rules! failed_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(err: $t) -> Self {
                failed(err)
            }
        }
    )*};
}

failed_from!(
    sage_service::TlsError,
    std::io::Error,
    sage_service::config::file::ConfigError,
    sage_store::StoreError,
    sage_service::delegator::ledger::ReceiptError,
    sage_service::KeyDirError,
    sage_service::ClientError,
    sage_service::DelegateError,
    sage_service::delegator::recorded::AttemptError,
    sage_service::delegator::route::RouteError,
    sage_service::local::client::LocalClientError,
);

/// A configuration that cannot be resolved; the flags that fix it are the
/// CLI's, so the advice is too.
impl From<sage_service::config::ResolveError> for Failure {
    fn from(err: sage_service::config::ResolveError) -> Self {
        use sage_service::config::ResolveError;
        match err {
            ResolveError::NoName {
                ref keys_dir,
                ref found,
            } => Failure::Usage(no_name(&err, keys_dir, found)),
            ResolveError::KeyDir(keys) => keys.into(),
            ResolveError::File(problems) => problems.into(),
            ResolveError::CertWithoutKey => Failure::Usage(format!(
                "{err}: pass --tls-key FILE (or set [node] tls_key)"
            )),
            ResolveError::KeyWithoutCert => Failure::Usage(format!(
                "{err}: pass --tls-cert FILE (or set [node] tls_cert)"
            )),
            other => failed(other),
        }
    }
}

/// Every problem of a config file, one a line, each with its own advice.
impl From<sage_service::config::check::Problems> for Failure {
    fn from(problems: sage_service::config::check::Problems) -> Self {
        match <[_; 1]>::try_from(problems.0) {
            Ok([one]) => failed(one),
            Err(all) => Failure::Failed(
                all.iter()
                    .map(|problem| advice::message(problem))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }
}

/// What `serve` without a name says: the keys it could take the name from.
fn no_name(err: &impl std::fmt::Display, keys_dir: &std::path::Path, found: &[String]) -> String {
    let dir = keys_dir.display();
    let fix = "pass --name NAME or set [node] name in the config file";
    if !found.is_empty() {
        return format!(
            "{err}: the key directory {dir} holds keys for {}; {fix}",
            found.join(", ")
        );
    }
    if keys_dir.is_dir() {
        format!("{err}: no key in {dir} to take it from; {fix} (`sage keygen --name NAME --keys-dir {dir}` makes a key)")
    } else {
        format!("{err}: the key directory {dir} does not exist; pass --keys-dir DIR (or set [node] keys_dir), or {fix}")
    }
}

/// A library error with the CLI's advice for it, if it has any.
fn failed(error: impl std::error::Error + Send + Sync + 'static) -> Failure {
    let advice = advice::for_error(&error);
    Failure::Error {
        error: Box::new(error),
        advice,
    }
}

pub type CmdResult = Result<(), Failure>;

/// Prints `value` as one JSON object on stdout.
pub fn print_json(value: &serde_json::Value) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
