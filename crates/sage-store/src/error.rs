//! [`StoreError`]: what can go wrong with the node's database, each naming
//! the file and the fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::ErrorCode;

/// Errors of the node's durable state ([`super::Store`]).
///
/// Sources are behind an [`Arc`] so that one failed commit can be reported
/// to every caller whose work was in it (the error is `Clone`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {}: {source}; check that its parent exists and is writable by the user running sage, or choose another state directory", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The system's reason.
        source: Arc<std::io::Error>,
    },
    /// Another process holds the state directory's lock: a node runs there.
    #[error("the state directory {} is in use by another sage serve ({}); one node per state directory", dir.display(), match pid { Some(pid) => format!("pid {pid}"), None => "pid not known yet".to_owned() })]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The process that holds it, as it wrote in the lock file.
        pid: Option<u32>,
    },
    /// A store opened without the state directory's lock was asked to
    /// change what only the node that holds it may.
    #[error("{} was opened without the state directory's lock: only the node that holds it may mark its running tasks interrupted", path.display())]
    NotLocked {
        /// The database file.
        path: PathBuf,
    },
    /// The lock file could not be opened, written or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The system's reason.
        source: Arc<std::io::Error>,
    },
    /// The database file could not be opened or created.
    #[error("cannot open the database {}: {source}; check that the state directory and the file are readable and writable by the user running sage", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        source: Arc<rusqlite::Error>,
    },
    /// The file is not a sound sage database. It was left as it is.
    #[error("the database {} is damaged or is not a sage database ({detail}); it was left untouched: restore it from a backup, or move it aside to start with an empty state (tasks and nonces recorded in it are then forgotten)", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The database was written by a newer sage, with a schema this one does
    /// not know.
    #[error("the database {} has schema version {found}, newer than the {supported} this sage knows: upgrade sage (a newer version wrote it), or restore a backup made by this version", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version (`PRAGMA user_version`).
        found: u32,
        /// The newest schema version this code knows.
        supported: u32,
    },
    /// Bringing an older schema up to date failed; nothing was changed.
    #[error("cannot migrate the database {} to schema version {version}: {source}; the database was left at its previous version: check free disk space and permissions, or restore a backup", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version that failed.
        version: u32,
        /// SQLite's reason.
        source: Arc<rusqlite::Error>,
    },
    /// Another connection (most likely another sage process) holds the
    /// database locked for longer than the busy timeout.
    #[error("the database {} is locked by another process; is another sage node running with the same state directory? stop it or give this node its own", path.display())]
    Busy {
        /// The database file.
        path: PathBuf,
    },
    /// The disk holding the database is full.
    #[error("the disk holding the database {} is full; free some space (nothing was recorded for this request)", path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// Any other failure of SQLite.
    #[error("the database {} failed: {source}; check the disk and the permissions of the state directory", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        source: Arc<rusqlite::Error>,
    },
    /// A commit could not be synced to the disk: what it recorded may be
    /// lost at a power cut, so it is reported as failed.
    #[error("cannot sync the write-ahead log of {} to the disk: {source}; check the disk for errors (dmesg)", path.display())]
    Sync {
        /// The database file.
        path: PathBuf,
        /// The system's reason.
        source: Arc<std::io::Error>,
    },
    /// No task is recorded under this issuer and task id.
    #[error("no task {task_id:?} of issuer {issuer:?} in {}: it must be begun (begin_task) before it is finished", path.display())]
    UnknownTask {
        /// The database file.
        path: PathBuf,
        /// The issuer.
        issuer: String,
        /// The task id.
        task_id: String,
    },
    /// No ledger entry of this id awaits an outcome.
    #[error("no ledger entry {id} awaiting an outcome in {}", path.display())]
    UnknownDelegation {
        /// The database file.
        path: PathBuf,
        /// The entry's id.
        id: i64,
    },
    /// The task is not in a state that allows the change.
    #[error("task {task_id:?} of issuer {issuer:?} in {}: {detail}", path.display())]
    WrongState {
        /// The database file.
        path: PathBuf,
        /// The issuer.
        issuer: String,
        /// The task id.
        task_id: String,
        /// Why the change is refused.
        detail: String,
    },
    /// The database thread could not be started.
    #[error("cannot start the database thread for {}: {source}; the system is out of threads or memory", path.display())]
    Spawn {
        /// The database file.
        path: PathBuf,
        /// The system's reason.
        source: Arc<std::io::Error>,
    },
    /// A bug: the database thread panicked while doing this request's work,
    /// which was rolled back. The thread goes on with the next requests.
    #[error("internal error in the database thread for {}: {detail}; this is a bug in sage, please report it", path.display())]
    Internal {
        /// The database file.
        path: PathBuf,
        /// The panic's message.
        detail: String,
    },
    /// The database thread has stopped (it panicked); nothing more can be
    /// recorded.
    #[error("the database thread for {} has stopped", path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
    },
}

impl StoreError {
    /// Classifies an error of SQLite met while using the open database.
    pub(super) fn from_sqlite(path: &Path, error: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { path },
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: error.to_string(),
            },
            _ => StoreError::Database {
                path,
                source: Arc::new(error),
            },
        }
    }

    /// A value read back from the database that cannot be what was written.
    pub(super) fn bad_value(path: &Path, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}
