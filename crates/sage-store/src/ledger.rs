//! The delegator's ledger (table `ledger`) and the per-peer statistics kept
//! from it (tables `peer_stats` and `peer_status_counts`): the work done on
//! the database thread.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::tasks::ms;
use super::worker::Db;
use super::StoreError;

/// The weight of the newest value in the moving averages of [`PeerStats`].
pub const EWMA_ALPHA: f64 = 0.2;

/// One delegation as the delegator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// The row id; 0 when inserting.
    pub id: i64,
    /// The task id.
    pub task_id: String,
    /// The peer's name (matched case-insensitively).
    pub peer: String,
    /// The peer's LCT id.
    pub peer_lct: String,
    /// The protocol spoken (`native`, `legacy`, ...).
    pub protocol: String,
    /// The task type.
    pub task_type: String,
    /// When the task was sent, in milliseconds since the unix epoch.
    pub sent_at_ms: u64,
    /// How it ended: `succeeded`, `failed`, `refused`, `unreachable`,
    /// `invalid_proof`, ...
    pub status: String,
    /// The round trip in milliseconds, when there was one. A value that is
    /// not finite is stored as none.
    pub latency_ms: Option<f64>,
    /// The quality the proof reports, if any. A value that is not finite is
    /// stored as none.
    pub quality: Option<f64>,
    /// The signed task as sent (JSON).
    pub task: Vec<u8>,
    /// The signed proof as received (JSON), if one came.
    pub proof: Option<Vec<u8>>,
    /// The signed task `proof` names, when that is not `task`: a retry
    /// answered with the proof of an earlier send of the same task.
    pub proof_task: Option<Vec<u8>>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// How a delegation recorded as sent ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// As [`LedgerEntry::status`].
    pub status: String,
    /// As [`LedgerEntry::latency_ms`].
    pub latency_ms: Option<f64>,
    /// As [`LedgerEntry::quality`].
    pub quality: Option<f64>,
    /// As [`LedgerEntry::proof`].
    pub proof: Option<Vec<u8>>,
    /// As [`LedgerEntry::proof_task`].
    pub proof_task: Option<Vec<u8>>,
    /// As [`LedgerEntry::error`].
    pub error: Option<String>,
}

/// The status of an entry recorded before its task was sent and not (yet)
/// given an outcome: the delegator is waiting, or was killed while it was.
pub const SENT: &str = "sent";

/// What the ledger says of one peer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PeerStats {
    /// The peer's name, as first recorded.
    pub peer: String,
    /// Delegations by status.
    pub by_status: BTreeMap<String, u64>,
    /// Moving average (weight [`EWMA_ALPHA`] to the newest) of the
    /// latencies recorded; none until one is.
    pub latency_ms_ewma: Option<f64>,
    /// Moving average (weight [`EWMA_ALPHA`] to the newest) of the qualities
    /// recorded; none until one is.
    pub quality_ewma: Option<f64>,
    /// The latest `sent_at_ms` recorded.
    pub last_seen_ms: Option<u64>,
}

const COLUMNS: &str = "id, task_id, peer, peer_lct, protocol, task_type, sent_at_ms, status, \
                       latency_ms, quality, task, proof, error, proof_task";

fn finite(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite())
}

pub(super) fn record(db: &Db<'_>, entry: &LedgerEntry) -> Result<i64, StoreError> {
    let id = insert(db, entry)?;
    count(db, &entry.peer, entry)?;
    Ok(id)
}

/// Inserts `entry` without counting it in its peer's statistics.
pub(super) fn insert(db: &Db<'_>, entry: &LedgerEntry) -> Result<i64, StoreError> {
    db.conn
        .prepare_cached(
            "INSERT INTO ledger (task_id, peer, peer_lct, protocol, task_type, sent_at_ms, status,
                                 latency_ms, quality, task, proof, error, proof_task)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                entry.task_id,
                entry.peer,
                entry.peer_lct,
                entry.protocol,
                entry.task_type,
                ms(entry.sent_at_ms),
                entry.status,
                finite(entry.latency_ms),
                finite(entry.quality),
                entry.task,
                entry.proof,
                entry.error,
                entry.proof_task,
            ])
        })
        .map_err(|e| db.err(e))?;
    Ok(db.conn.last_insert_rowid())
}

/// Gives entry `id`, recorded as [`SENT`], its outcome, and counts it in
/// its peer's statistics. An entry that already has an outcome is left as
/// it is ([`StoreError::UnknownDelegation`]).
pub(super) fn close(db: &Db<'_>, id: i64, outcome: &Outcome) -> Result<(), StoreError> {
    let changed = db
        .conn
        .prepare_cached(
            "UPDATE ledger SET status = ?2, latency_ms = ?3, quality = ?4, proof = ?5,
                               proof_task = ?6, error = ?7
             WHERE id = ?1 AND status = 'sent'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id,
                outcome.status,
                finite(outcome.latency_ms),
                finite(outcome.quality),
                outcome.proof,
                outcome.proof_task,
                outcome.error,
            ])
        })
        .map_err(|e| db.err(e))?;
    if changed == 0 {
        return Err(StoreError::UnknownDelegation {
            path: db.path.to_path_buf(),
            id,
        });
    }
    let entry = db
        .conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM ledger WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], entry_of))
        .map_err(|e| db.err(e))?;
    count(db, &entry.peer, &entry)
}

/// Counts `entry` in `peer`'s statistics.
fn count(db: &Db<'_>, peer: &str, entry: &LedgerEntry) -> Result<(), StoreError> {
    let conn = db.conn;
    let latency = finite(entry.latency_ms);
    let quality = finite(entry.quality);
    // The averages move only with entries that carry a value.
    conn.prepare_cached(
        "INSERT INTO peer_stats (peer, latency_ms_ewma, quality_ewma, last_seen_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (peer) DO UPDATE SET
           latency_ms_ewma = CASE
             WHEN excluded.latency_ms_ewma IS NULL THEN latency_ms_ewma
             WHEN latency_ms_ewma IS NULL THEN excluded.latency_ms_ewma
             ELSE ?5 * excluded.latency_ms_ewma + (1.0 - ?5) * latency_ms_ewma END,
           quality_ewma = CASE
             WHEN excluded.quality_ewma IS NULL THEN quality_ewma
             WHEN quality_ewma IS NULL THEN excluded.quality_ewma
             ELSE ?5 * excluded.quality_ewma + (1.0 - ?5) * quality_ewma END,
           last_seen_ms = max(coalesce(last_seen_ms, excluded.last_seen_ms), excluded.last_seen_ms)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            peer,
            latency,
            quality,
            ms(entry.sent_at_ms),
            EWMA_ALPHA
        ])
    })
    .map_err(|e| db.err(e))?;
    conn.prepare_cached(
        "INSERT INTO peer_status_counts (peer, status, count) VALUES (?1, ?2, 1)
         ON CONFLICT (peer, status) DO UPDATE SET count = count + 1",
    )
    .and_then(|mut stmt| stmt.execute(params![peer, entry.status]))
    .map_err(|e| db.err(e))?;
    Ok(())
}

fn entry_of(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        id: row.get(0)?,
        task_id: row.get(1)?,
        peer: row.get(2)?,
        peer_lct: row.get(3)?,
        protocol: row.get(4)?,
        task_type: row.get(5)?,
        sent_at_ms: row.get(6)?,
        status: row.get(7)?,
        latency_ms: row.get(8)?,
        quality: row.get(9)?,
        task: row.get(10)?,
        proof: row.get(11)?,
        error: row.get(12)?,
        proof_task: row.get(13)?,
    })
}

pub(super) fn list(
    db: &Db<'_>,
    peer: Option<&str>,
    since_ms: Option<u64>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    // One statement per filter, so that SQLite can use the (peer, sent_at_ms)
    // index when a peer is given.
    let since = since_ms.map(ms).unwrap_or(i64::MIN);
    let result = match peer {
        Some(peer) => db
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM ledger WHERE peer = ?1 AND sent_at_ms >= ?2
                 ORDER BY sent_at_ms, id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![peer, since], entry_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
        None => db
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM ledger WHERE sent_at_ms >= ?1 ORDER BY sent_at_ms, id"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![since], entry_of)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
    };
    result.map_err(|e| db.err(e))
}

pub(super) fn entry(db: &Db<'_>, task_id: &str) -> Result<Option<LedgerEntry>, StoreError> {
    db.conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ledger WHERE task_id = ?1
             ORDER BY proof IS NOT NULL DESC, sent_at_ms DESC, id DESC LIMIT 1"
        ))
        .and_then(|mut stmt| stmt.query_row(params![task_id], entry_of).optional())
        .map_err(|e| db.err(e))
}

pub(super) fn attempts(db: &Db<'_>, task_id: &str) -> Result<Vec<LedgerEntry>, StoreError> {
    db.conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ledger WHERE task_id = ?1 ORDER BY sent_at_ms, id"
        ))
        .and_then(|mut stmt| {
            stmt.query_map(params![task_id], entry_of)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| db.err(e))
}

pub(super) fn put_capabilities(
    db: &Db<'_>,
    peer_lct: &str,
    envelope: &[u8],
    expires_at_ms: u64,
) -> Result<(), StoreError> {
    db.conn
        .prepare_cached(
            "INSERT INTO capabilities (peer_lct, envelope, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_lct) DO UPDATE SET
               envelope = excluded.envelope, expires_at_ms = excluded.expires_at_ms",
        )
        .and_then(|mut stmt| stmt.execute(params![peer_lct, envelope, ms(expires_at_ms)]))
        .map(|_| ())
        .map_err(|e| db.err(e))
}

pub(super) fn capabilities(
    db: &Db<'_>,
    peer_lct: &str,
    now_ms: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    db.conn
        .prepare_cached(
            "SELECT envelope FROM capabilities WHERE peer_lct = ?1 AND expires_at_ms > ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![peer_lct, ms(now_ms)], |row| row.get(0))
                .optional()
        })
        .map_err(|e| db.err(e))
}

pub(super) fn stats(db: &Db<'_>) -> Result<Vec<PeerStats>, StoreError> {
    type Line = (
        String,
        Option<f64>,
        Option<f64>,
        Option<u64>,
        Option<String>,
        Option<u64>,
    );
    let lines: Vec<Line> = db
        .conn
        .prepare_cached(
            "SELECT s.peer, s.latency_ms_ewma, s.quality_ewma, s.last_seen_ms, c.status, c.count
             FROM peer_stats AS s LEFT JOIN peer_status_counts AS c ON c.peer = s.peer
             ORDER BY s.peer, c.status",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })?
            .collect()
        })
        .map_err(|e| db.err(e))?;
    let mut stats: Vec<PeerStats> = Vec::new();
    for (peer, latency, quality, last_seen, status, count) in lines {
        let same_peer = stats.last().is_some_and(|last| last.peer == peer);
        if !same_peer {
            stats.push(PeerStats {
                peer,
                by_status: BTreeMap::new(),
                latency_ms_ewma: latency,
                quality_ewma: quality,
                last_seen_ms: last_seen,
            });
        }
        if let (Some(status), Some(count), Some(last)) = (status, count, stats.last_mut()) {
            last.by_status.insert(status, count);
        }
    }
    Ok(stats)
}
