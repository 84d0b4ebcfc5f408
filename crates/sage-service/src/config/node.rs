//! The one place that resolves a serving node's configuration: the
//! command line's [`Overrides`] over the config file over the environment
//! over the defaults, into a [`NodeConfig`].
//!
//! A SIGHUP re-reads the file with the same overrides
//! ([`NodeConfig::reload`]); what only a restart can change is named by
//! [`NodeConfig::restart_only_changes`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sage_exec::{ExecutorSet, Leftovers};
use sage_store::Durability;

use super::check::{self, Problems};
use super::file::{ConfigError, ConfigFile, TlsFiles, DEFAULT_PATHS};
use super::{Limits, LimitsError};
use crate::keydir::KeyDir;

/// The address a node listens on when neither flag nor file says.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 50051);

/// Days a finished task is kept past its expiry unless told otherwise: a
/// retry that late is unlikely, and at a few KB per task the database stays
/// bounded by the work of a month.
pub const DEFAULT_TASK_RETENTION_DAYS: u32 = 30;

/// The state directory when neither flag nor file names one: systemd's
/// `$STATE_DIRECTORY` (`StateDirectory=`), else `./state`.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("state"))
}

/// What the command line sets; each value given wins over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The config file; `None`: the first of [`DEFAULT_PATHS`] that exists.
    pub config: Option<PathBuf>,
    /// The key directory.
    pub keys_dir: Option<PathBuf>,
    /// The state directory.
    pub state_dir: Option<PathBuf>,
    /// The platform name.
    pub name: Option<String>,
    /// The address to listen on.
    pub host: Option<IpAddr>,
    /// The port to listen on.
    pub port: Option<u16>,
    /// `max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// `clock_skew`.
    pub clock_skew: Option<Duration>,
    /// `max_task_lifetime`.
    pub max_task_lifetime: Option<Duration>,
    /// `drain_timeout`.
    pub drain_timeout: Option<Duration>,
    /// What an accepted task survives.
    pub durability: Option<Durability>,
    /// Days a finished task is kept.
    pub task_retention_days: Option<u32>,
    /// The TLS certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key.
    pub tls_key: Option<PathBuf>,
}

/// A serving node's configuration, every source applied.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The config file read, if any.
    pub path: Option<PathBuf>,
    /// Its content (empty when there is none), for the executors.
    pub file: ConfigFile,
    /// This node's platform name.
    pub name: String,
    /// The LCT id the file sets, if any (else the key's).
    pub lct_id: Option<String>,
    /// The key directory, with the file's `peers_file`.
    pub keys: KeyDir,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The state directory.
    pub state_dir: PathBuf,
    /// What an accepted task survives.
    pub durability: Durability,
    /// What the ledger's records of the local API's delegations survive
    /// before their tasks are sent.
    pub ledger_durability: Durability,
    /// Days a finished task is kept past its expiry; 0 keeps every task.
    pub task_retention_days: u32,
    /// HTTPS, if set.
    pub tls: Option<TlsFiles>,
    /// The limits, checked.
    pub limits: Limits,
    overrides: Overrides,
}

/// Why a node's configuration cannot be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The config file cannot be read or used: every problem found.
    #[error(transparent)]
    File(#[from] Problems),
    /// Neither flag nor file names the platform, and the key directory
    /// does not hold exactly one key to take it from.
    #[error("no platform name")]
    NoName {
        /// The key directory looked in.
        keys_dir: PathBuf,
        /// The platforms it holds keys of (none, or more than one).
        found: Vec<String>,
    },
    /// The key directory, looked in for the platform name, cannot be listed.
    #[error(transparent)]
    KeyDir(#[from] crate::KeyDirError),
    /// A TLS certificate is set without its key.
    #[error("a TLS certificate without its key")]
    CertWithoutKey,
    /// A TLS key is set without its certificate.
    #[error("a TLS key without its certificate")]
    KeyWithoutCert,
    /// The limits cannot work.
    #[error("{}: [limits] {source}", from.as_deref().map_or_else(|| "flags".into(), |p| p.display().to_string()))]
    Limits {
        /// The config file they come from (`None`: flags and defaults).
        from: Option<PathBuf>,
        /// What is wrong.
        source: LimitsError,
    },
}

/// The config file: the one given, else the first default path that
/// exists, else none.
///
/// # Errors
/// The file given or found cannot be read or used: every problem of its
/// text ([`ConfigFile::load_all`]).
pub fn find_config(given: Option<&Path>) -> Result<Option<(PathBuf, ConfigFile)>, Problems> {
    let path = match given {
        Some(path) => Some(path.to_owned()),
        None => DEFAULT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok(None);
    };
    match ConfigFile::load_all(&path) {
        (Some(file), problems) if problems.is_empty() => Ok(Some((path, file))),
        (_, problems) => Err(Problems(problems)),
    }
}

/// Checks `limits`, naming the config file they come from in the error.
///
/// # Errors
/// [`ResolveError::Limits`].
pub fn check_limits(limits: &Limits, from: Option<&Path>) -> Result<(), ResolveError> {
    limits.check().map_err(|source| ResolveError::Limits {
        from: from.map(Path::to_owned),
        source,
    })
}

/// The platform of the only key in `keys`: a node set up with one key
/// needs no name.
fn only_key(keys: &KeyDir) -> Result<String, ResolveError> {
    let mut found: Vec<String> = keys
        .key_files()?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    if found.len() == 1 {
        return Ok(found.remove(0));
    }
    Err(ResolveError::NoName {
        keys_dir: keys.path().to_owned(),
        found,
    })
}

impl NodeConfig {
    /// Resolves the configuration from `overrides`, the config file, the
    /// environment and the defaults.
    ///
    /// # Errors
    /// The file cannot be used, no platform name, half a TLS pair, or
    /// limits that cannot work.
    pub fn resolve(overrides: Overrides) -> Result<Self, ResolveError> {
        Self::resolve_named(overrides, None)
    }

    /// Reads the config file again (the one given, or the first default
    /// path that exists now) with the same overrides. The platform name
    /// stays: a reload does not change who the node is.
    ///
    /// # Errors
    /// As [`NodeConfig::resolve`].
    pub fn reload(&self) -> Result<Self, ResolveError> {
        Self::resolve_named(self.overrides.clone(), Some(&self.name))
    }

    fn resolve_named(overrides: Overrides, name: Option<&str>) -> Result<Self, ResolveError> {
        let (path, file) = match find_config(overrides.config.as_deref())? {
            Some((path, file)) => (Some(path), file),
            None => (None, ConfigFile::default()),
        };
        let node = &file.node;
        let keys = KeyDir::new(
            overrides
                .keys_dir
                .clone()
                .or_else(|| node.keys_dir.clone())
                .unwrap_or_else(|| PathBuf::from("keys")),
        );
        let keys = match &node.peers_file {
            Some(peers) => keys.with_peers_file(peers),
            None => keys,
        };
        let name = match name {
            Some(name) => name.to_owned(),
            None => match overrides.name.clone().or_else(|| node.name.clone()) {
                Some(name) => name,
                None => only_key(&keys)?,
            },
        };
        let listen = node.listen.unwrap_or(DEFAULT_LISTEN);
        let durability = overrides.durability.or(node.durability).unwrap_or_default();
        let listen = SocketAddr::new(
            overrides.host.unwrap_or(listen.ip()),
            overrides.port.unwrap_or(listen.port()),
        );
        let mut limits = file.limits();
        let given = |flag: Option<Duration>, file: Duration| flag.unwrap_or(file);
        limits.max_body_bytes = overrides.max_body_bytes.unwrap_or(limits.max_body_bytes);
        limits.clock_skew = given(overrides.clock_skew, limits.clock_skew);
        limits.max_task_lifetime = given(overrides.max_task_lifetime, limits.max_task_lifetime);
        limits.drain_timeout = given(overrides.drain_timeout, limits.drain_timeout);
        check_limits(&limits, path.as_deref())?;
        let cert = overrides.tls_cert.clone().or_else(|| node.tls_cert.clone());
        let key = overrides.tls_key.clone().or_else(|| node.tls_key.clone());
        let tls = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => return Err(ResolveError::CertWithoutKey),
            (None, Some(_)) => return Err(ResolveError::KeyWithoutCert),
        };
        Ok(NodeConfig {
            name,
            lct_id: node.lct_id.clone(),
            keys,
            listen,
            state_dir: overrides
                .state_dir
                .clone()
                .or_else(|| node.state_dir.clone())
                .unwrap_or_else(default_state_dir),
            durability,
            ledger_durability: node.ledger_durability.unwrap_or(durability),
            task_retention_days: overrides
                .task_retention_days
                .or(node.task_retention_days)
                .unwrap_or(DEFAULT_TASK_RETENTION_DAYS),
            tls,
            limits,
            path,
            file,
            overrides,
        })
    }

    /// The executors the file configures (the built-in set when it has
    /// none); `command` executors record their programs in `leftovers`,
    /// and, when given them (a serving node), get their tasks' blobs from
    /// [`NodeConfig::blob_dir`].
    ///
    /// # Errors
    /// An executor that cannot be built (a secret variable not set).
    pub fn executors(&self, leftovers: Option<&Leftovers>) -> Result<ExecutorSet, ConfigError> {
        let path = self.path.as_deref().unwrap_or(Path::new("(flags)"));
        let blobs = leftovers.map(|_| self.blob_dir());
        self.file
            .executors(path, &self.name, leftovers, blobs.as_deref())
    }

    /// Where uploaded blobs are kept: `STATE_DIR/blobs`.
    pub fn blob_dir(&self) -> PathBuf {
        self.state_dir.join("blobs")
    }

    /// What the configuration names that would fail the node: the
    /// executors' programs, URLs and headers, its key (when `key_in_dir`:
    /// not taken from a systemd credential) and its TLS files; the checks
    /// of `sage config check` ([`check::named_problems`]).
    ///
    /// # Errors
    /// [`Problems`], all of them.
    pub fn check(&self, key_in_dir: bool) -> Result<(), Problems> {
        let path = self.path.as_deref().unwrap_or(Path::new("(flags)"));
        let node = check::Node {
            name: Some(&self.name),
            keys: &self.keys,
            tls: self.tls.as_ref(),
            key_in_dir,
        };
        check::named_problems(path, &self.file, node).into_result()
    }

    /// The settings that differ in `reloaded` but that a running node
    /// keeps until it restarts, as `[table] key`.
    pub fn restart_only_changes(&self, reloaded: &NodeConfig) -> Vec<&'static str> {
        let (before, now) = (&self.file.node, &reloaded.file.node);
        [
            ("[node] name", before.name != now.name),
            ("[node] lct_id", before.lct_id != now.lct_id),
            ("[node] listen", before.listen != now.listen),
            ("[node] state_dir", before.state_dir != now.state_dir),
            ("[node] durability", before.durability != now.durability),
            (
                "[node] ledger_durability",
                before.ledger_durability != now.ledger_durability,
            ),
            (
                "[node] task_retention_days",
                before.task_retention_days != now.task_retention_days,
            ),
            ("[node] tls_cert", before.tls_cert != now.tls_cert),
            ("[node] tls_key", before.tls_key != now.tls_key),
            (
                "[limits] max_connections",
                self.limits.max_connections != reloaded.limits.max_connections,
            ),
            (
                "[telemetry] otlp_endpoint",
                self.file.telemetry.otlp_endpoint != reloaded.file.telemetry.otlp_endpoint,
            ),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("sage.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `overrides` resolved with `config` as the file.
    fn resolve(config: &Path, overrides: Overrides) -> Result<NodeConfig, ResolveError> {
        NodeConfig::resolve(Overrides {
            config: Some(config.to_owned()),
            ..overrides
        })
    }

    #[test]
    fn without_a_name_the_only_key_in_the_key_directory_names_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let resolve = || {
            NodeConfig::resolve(Overrides {
                config: Some(file(dir.path(), "")),
                keys_dir: Some(keys.clone()),
                ..Overrides::default()
            })
        };
        let found = |result: Result<NodeConfig, ResolveError>| match result {
            Err(ResolveError::NoName { keys_dir, found }) => {
                assert_eq!(keys_dir, keys);
                found
            }
            other => panic!("{:?}", other.map(|c| c.name)),
        };
        // A directory that does not exist, then one without keys.
        assert!(found(resolve()).is_empty());
        std::fs::create_dir(&keys).unwrap();
        assert!(found(resolve()).is_empty());

        KeyDir::new(&keys).generate("Thor", None, false).unwrap();
        assert_eq!(resolve().unwrap().name, "Thor");

        KeyDir::new(&keys).generate("Sprout", None, false).unwrap();
        assert_eq!(found(resolve()), ["Sprout", "Thor"]);
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(
            dir.path(),
            "[node]\nname = \"Thor\"\nlisten = \"127.0.0.1:6000\"\ntask_retention_days = 3\n[limits]\nclock_skew = 7\nmax_body_bytes = 4096\n",
        );
        let resolved = resolve(
            &config,
            Overrides {
                port: Some(7000),
                max_body_bytes: Some(8192),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(resolved.name, "Thor");
        assert_eq!(resolved.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(resolved.limits.max_body_bytes, 8192);
        assert_eq!(resolved.limits.clock_skew, Duration::from_secs(7));
        assert_eq!(resolved.task_retention_days, 3);
        assert_eq!(resolved.durability, Durability::default());
        assert_eq!(resolved.path.as_deref(), Some(config.as_path()));
        assert_eq!(resolved.tls, None);
    }

    #[test]
    fn what_cannot_be_resolved_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(dir.path(), "[limits]\nmax_connections = 0\n");
        let given = |overrides: Overrides| resolve(&config, overrides);
        assert!(matches!(
            given(Overrides::default()),
            Err(ResolveError::NoName { .. })
        ));
        let named = || Overrides {
            name: Some("Thor".into()),
            ..Overrides::default()
        };
        match given(named()) {
            Err(e @ ResolveError::Limits { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "{}: [limits] max_connections must be at least 1",
                    config.display()
                )
            ),
            other => panic!("{other:?}"),
        }
        std::fs::write(&config, "").unwrap();
        let half = given(Overrides {
            tls_key: Some("key.pem".into()),
            ..named()
        });
        assert!(
            matches!(half, Err(ResolveError::KeyWithoutCert)),
            "{half:?}"
        );
    }

    #[test]
    fn a_reload_keeps_the_name_and_names_what_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(
            dir.path(),
            "[node]\nname = \"Thor\"\nlisten = \"127.0.0.1:6000\"\n",
        );
        let first = resolve(&config, Overrides::default()).unwrap();
        file(
            dir.path(),
            "[node]\nname = \"Sprout\"\nlisten = \"127.0.0.1:6001\"\n[limits]\nmax_connections = 9\n",
        );
        let second = first.reload().unwrap();
        assert_eq!(second.name, "Thor");
        assert_eq!(
            first.restart_only_changes(&second),
            ["[node] name", "[node] listen", "[limits] max_connections"]
        );
        assert!(second.restart_only_changes(&second).is_empty());
    }
}
