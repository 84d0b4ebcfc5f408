//! Opening the database: the checks before anything is written, the
//! connection's settings, and the schema's migrations.
//!
//! The schema version is `PRAGMA user_version`; migration `n` (1-based)
//! brings version `n - 1` to `n`. All pending migrations run in one
//! transaction at open, so a database is at one version or the next, never
//! half-way. `PRAGMA application_id` marks the file as sage's, so that another
//! program's SQLite file is refused rather than written into.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{Check, StoreError};

/// "SAGE" in ASCII: the `application_id` of a sage database.
pub(super) const APPLICATION_ID: i32 = 0x5341_4745;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order: `MIGRATIONS[n - 1]` makes version `n`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: tasks run for others, their nonces, the delegation ledger and the
    // per-peer statistics derived from it.
    r#"
    CREATE TABLE tasks (
        issuer          TEXT    NOT NULL,
        task_id         TEXT    NOT NULL,
        content_digest  BLOB    NOT NULL CHECK (length(content_digest) = 32),
        envelope        BLOB    NOT NULL,
        task_type       TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('running', 'done', 'interrupted')),
        received_at_ms  INTEGER NOT NULL,
        finished_at_ms  INTEGER,
        proof           BLOB,
        CHECK (state <> 'done' OR proof IS NOT NULL),
        PRIMARY KEY (issuer, task_id)
    );
    CREATE TABLE nonces (
        issuer          TEXT    NOT NULL,
        nonce           TEXT    NOT NULL,
        keep_until_ms   INTEGER NOT NULL,
        PRIMARY KEY (issuer, nonce)
    ) WITHOUT ROWID;
    CREATE TABLE ledger (
        id              INTEGER PRIMARY KEY,
        task_id         TEXT    NOT NULL,
        peer            TEXT    NOT NULL COLLATE NOCASE,
        peer_lct        TEXT    NOT NULL,
        protocol        TEXT    NOT NULL,
        task_type       TEXT    NOT NULL,
        sent_at_ms      INTEGER NOT NULL,
        status          TEXT    NOT NULL,
        latency_ms      REAL,
        quality         REAL,
        task            BLOB    NOT NULL,
        proof           BLOB,
        error           TEXT
    );
    CREATE INDEX ledger_by_peer ON ledger (peer, sent_at_ms);
    CREATE INDEX ledger_by_task ON ledger (task_id);
    CREATE TABLE peer_stats (
        peer            TEXT    NOT NULL COLLATE NOCASE PRIMARY KEY,
        latency_ms_ewma REAL,
        quality_ewma    REAL,
        last_seen_ms    INTEGER
    );
    CREATE TABLE peer_status_counts (
        peer            TEXT    NOT NULL COLLATE NOCASE
                        REFERENCES peer_stats (peer) ON DELETE CASCADE,
        status          TEXT    NOT NULL,
        count           INTEGER NOT NULL,
        PRIMARY KEY (peer, status)
    ) WITHOUT ROWID;
    "#,
    // 2: the indexes of the two sweeps: `prune` (nonces by expiry) and
    // `interrupt_running` at start (only the running tasks, a few rows).
    r#"
    CREATE INDEX nonces_by_expiry ON nonces (keep_until_ms);
    CREATE INDEX tasks_running ON tasks (state) WHERE state = 'running';
    "#,
    // 3: a task's first envelope keeps its nonce in the task's own row, so
    // that recording a new task writes one row and one index entry; the
    // `nonces` table keeps only the nonces of retries (other envelopes of a
    // task already recorded). Rows of version 2 have NULL here: their nonces
    // are all in `nonces`.
    r#"
    ALTER TABLE tasks ADD COLUMN nonce TEXT;
    ALTER TABLE tasks ADD COLUMN keep_until_ms INTEGER;
    "#,
    // 4: a delegation is recorded before it is sent (status `sent`), and a
    // retry answered with the proof of an earlier send keeps the envelope
    // that proof names beside it.
    r#"
    ALTER TABLE ledger ADD COLUMN proof_task BLOB;
    "#,
    // 5: legacy tasks (the rows without a nonce that have a
    // `keep_until_ms`) are forgotten once their deadline and the skew have
    // passed, by `prune`, which looks them up by that time.
    r#"
    CREATE INDEX tasks_legacy_by_expiry ON tasks (keep_until_ms) WHERE nonce IS NULL;
    "#,
    // 6: the delegator's cache of its peers' signed capabilities, kept
    // until they expire, so that routing does not ask every peer again on
    // each delegation.
    r#"
    CREATE TABLE capabilities (
        peer_lct        TEXT    NOT NULL PRIMARY KEY,
        envelope        BLOB    NOT NULL,
        expires_at_ms   INTEGER NOT NULL
    );
    "#,
];

/// The schema version this code writes and knows.
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Opens `path` (creating an empty database if there is no file), checks
/// that it is a sound sage database this code can use, sets the
/// connection up, and migrates it to `target`. Nothing is written to a file
/// that fails a check.
#[cfg(test)]
pub(super) fn open(path: &Path, target: u32, check: Check) -> Result<Connection, StoreError> {
    open_migrating(path, target, check).map(|(conn, _)| conn)
}

/// As [`open`], with the schema version the file had if it was migrated
/// (0: a new file).
pub(super) fn open_migrating(
    path: &Path,
    target: u32,
    check: Check,
) -> Result<(Connection, Option<u32>), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })?;
    let sql = |e| StoreError::from_sqlite(path, e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;

    // The first read of the header: a file that is not SQLite fails here,
    // before anything could be written to it.
    let (app_id, version, objects) = identify(&conn).map_err(|e| classify_at_open(path, e))?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(StoreError::bad_value(
            path,
            format!("it belongs to another program: SQLite application_id {app_id:#010x}"),
        ));
    }
    if app_id == 0 && version == 0 && objects > 0 {
        return Err(StoreError::bad_value(
            path,
            format!("it is an SQLite database of another program: {objects} schema objects and no sage schema version"),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(too_new(path, version));
    }
    if check == Check::Whole {
        quick_check(&conn, path)?;
    }

    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            mode,
            "the database cannot use write-ahead logging here; it keeps a rollback journal (slower, as durable)"
        );
    }
    // FULL: the migrations' commits are on the disk before anything else
    // runs. The database's owner then keeps a WAL connection at NORMAL and
    // syncs the log itself after each durable commit (`worker::LogSync`).
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql)?;
    // This connection's own checkpoint, at ~16 MB of log, is what lets the
    // log start over; the checkpointer thread (checkpoint.rs) has copied
    // and synced nearly all of it by then, so it waits on little. The page
    // cache stays at SQLite's default 2 MB: every commit walks the whole
    // cache (pcache1Truncate), and a 32 MB cache cost more there than it
    // saved in reads.
    conn.pragma_update(None, "wal_autocheckpoint", 4000)
        .map_err(sql)?;
    conn.set_prepared_statement_cache_capacity(64);

    migrate(&conn, path, target)?;
    Ok((conn, (version < target).then_some(version)))
}

/// `application_id`, `user_version` and the number of schema objects.
fn identify(conn: &Connection) -> rusqlite::Result<(i32, u32, i64)> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let objects: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
    Ok((app_id, version, objects))
}

/// Errors of the first reads: anything but a lock means the file is not a
/// usable database.
fn classify_at_open(path: &Path, error: rusqlite::Error) -> StoreError {
    match StoreError::from_sqlite(path, error) {
        StoreError::Database { path, source } => match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
                StoreError::Open { path, source }
            }
            _ => StoreError::Corrupt {
                path,
                detail: source.to_string(),
            },
        },
        other => other,
    }
}

/// `PRAGMA quick_check`: the b-trees and their pages are consistent (not
/// the indexes' contents, which a full `integrity_check` reads too).
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| classify_at_open(path, e))?;
    let lines = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(|e| classify_at_open(path, e))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::bad_value(
            path,
            format!("quick_check: {}", lines.join("; ")),
        ))
    }
}

fn too_new(path: &Path, found: u32) -> StoreError {
    StoreError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: SCHEMA_VERSION,
    }
}

/// Applies the migrations from the database's version up to `target`, all
/// in one transaction.
pub(super) fn migrate(conn: &Connection, path: &Path, target: u32) -> Result<(), StoreError> {
    let sql = |e| StoreError::from_sqlite(path, e);
    // IMMEDIATE: take the write lock before reading the version, so that two
    // processes opening the same file cannot both migrate it.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql)?;
    let result = migrate_in_transaction(conn, path, target);
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(sql),
        Err(error) => {
            // Nothing to add if the rollback fails too: the transaction is
            // then already gone.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn migrate_in_transaction(conn: &Connection, path: &Path, target: u32) -> Result<(), StoreError> {
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(too_new(path, version));
    }
    if version >= target {
        return Ok(());
    }
    for next in version + 1..=target {
        let step = MIGRATIONS
            .get(next as usize - 1)
            .ok_or_else(|| too_new(path, next))?;
        let failed = |e| StoreError::Migrate {
            path: path.to_path_buf(),
            version: next,
            source: Arc::new(e),
        };
        conn.execute_batch(step).map_err(failed)?;
        // PRAGMA takes no parameters; these are integers of ours.
        conn.execute_batch(&format!(
            "PRAGMA user_version = {next}; PRAGMA application_id = {APPLICATION_ID};"
        ))
        .map_err(failed)?;
        tracing::debug!(path = %path.display(), version = next, "database schema step applied");
    }
    Ok(())
}
