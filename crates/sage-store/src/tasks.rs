//! The tasks this node runs for others and the nonces it has accepted
//! (tables `tasks` and `nonces`): the work done on the database thread.

use rusqlite::{params, OptionalExtension};

use super::worker::Db;
use super::StoreError;

/// A task as received, verified and admitted, to be recorded before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// The issuer (the signer's platform name).
    pub issuer: String,
    /// The task id, unique per issuer.
    pub task_id: String,
    /// The envelope's nonce, if the protocol has one; recorded so that the
    /// same envelope is refused when it comes again.
    pub nonce: Option<String>,
    /// A SHA-256 of what the task asks, as the caller computes it: the same
    /// issuer and task id with another digest is a conflict.
    pub content_digest: [u8; 32],
    /// The exact signed request bytes.
    pub envelope: Vec<u8>,
    /// The task type.
    pub task_type: String,
    /// When it was received, in milliseconds since the unix epoch.
    pub received_at_ms: u64,
    /// Until when its nonce must be remembered (the task's expiry plus the
    /// clock skew allowed), in milliseconds since the unix epoch.
    pub keep_until_ms: u64,
}

/// What [`super::Store::begin_task`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// New: recorded as running; run it now.
    Started,
    /// The (issuer, nonce) pair was seen and is still remembered: refuse.
    Replayed,
    /// The same task (issuer, task id and digest) is running now: wait for
    /// its proof ([`super::Store::wait_done`]).
    Running,
    /// The same task has a proof: answer with these exact bytes.
    Done {
        /// The signed proof as first sent.
        proof: Vec<u8>,
    },
    /// The same task was running when the node stopped, and has no proof
    /// yet: sign one that says so ([`super::Store::set_proof_of_interrupted`]).
    Interrupted,
    /// The same issuer and task id with another digest: refuse (409).
    Conflict,
}

/// How a task that was running came to its end ([`super::Store::wait_done`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It has a proof: these exact bytes.
    Proof(Vec<u8>),
    /// It was interrupted and has no proof yet: sign one that says so
    /// ([`super::Store::set_proof_of_interrupted`]).
    Interrupted,
}

/// Milliseconds as SQLite stores them: past `i64::MAX` (the year 292 million)
/// they saturate.
pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A recorded task as `begin` reads it.
struct Existing {
    digest: Vec<u8>,
    state: String,
    proof: Option<Vec<u8>>,
    /// The nonce of its first envelope and until when it is remembered
    /// (NULL in rows of schema version 2, whose nonces are in `nonces`).
    nonce: Option<(String, i64)>,
}

pub(super) fn begin(db: &Db<'_>, record: &TaskRecord) -> Result<Begin, StoreError> {
    let conn = db.conn;
    // A new task: one row, carrying its nonce. No nonce lookup is needed:
    // the signature covers the task id, so an envelope seen before names a
    // task that is recorded. The insert comes first because new tasks are
    // the common case: one search of the index instead of a lookup and
    // then an insert.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tasks (issuer, task_id, content_digest, envelope, task_type, state,
                                received_at_ms, nonce, keep_until_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8)
             ON CONFLICT (issuer, task_id) DO NOTHING",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                record.issuer,
                record.task_id,
                &record.content_digest[..],
                record.envelope,
                record.task_type,
                ms(record.received_at_ms),
                record.nonce,
                ms(record.keep_until_ms),
            ])
        })
        .map_err(|e| db.err(e))?;
    if inserted == 1 {
        return Ok(Begin::Started);
    }
    // Recorded before: this thread is the only writer, so the row is there.
    let existing: Existing = conn
        .prepare_cached(
            "SELECT content_digest, state, proof, nonce, keep_until_ms
             FROM tasks WHERE issuer = ?1 AND task_id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![record.issuer, record.task_id], |row| {
                let nonce: Option<String> = row.get(3)?;
                let until: Option<i64> = row.get(4)?;
                Ok(Existing {
                    digest: row.get(0)?,
                    state: row.get(1)?,
                    proof: row.get(2)?,
                    nonce: nonce.zip(until),
                })
            })
        })
        .map_err(|e| db.err(e))?;
    if let Some(nonce) = &record.nonce {
        let kept_until = match &existing.nonce {
            Some((first, until)) if first == nonce => Some(*until),
            _ => conn
                .prepare_cached("SELECT keep_until_ms FROM nonces WHERE issuer = ?1 AND nonce = ?2")
                .and_then(|mut stmt| {
                    stmt.query_row(params![record.issuer, nonce], |row| row.get(0))
                        .optional()
                })
                .map_err(|e| db.err(e))?,
        };
        if kept_until.is_some_and(|until| until >= ms(record.received_at_ms)) {
            return Ok(Begin::Replayed);
        }
    }
    // A refusal: the nonce is not recorded (nothing was accepted).
    if existing.digest[..] != record.content_digest[..] {
        return Ok(Begin::Conflict);
    }
    let begin = match (existing.proof, existing.state.as_str()) {
        (Some(proof), _) => Begin::Done { proof },
        (None, "running") => Begin::Running,
        (None, "interrupted") => Begin::Interrupted,
        (None, state) => {
            return Err(StoreError::bad_value(
                db.path,
                format!(
                    "task {:?} of {:?} is {state:?} without a proof",
                    record.task_id, record.issuer
                ),
            ))
        }
    };
    if let Some(nonce) = &record.nonce {
        // A retry's envelope: remembered so that it cannot come back either.
        // The pair may be there, expired: it is remembered anew.
        conn.prepare_cached(
            "INSERT INTO nonces (issuer, nonce, keep_until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (issuer, nonce) DO UPDATE SET keep_until_ms = excluded.keep_until_ms",
        )
        .and_then(|mut stmt| stmt.execute(params![record.issuer, nonce, ms(record.keep_until_ms)]))
        .map_err(|e| db.err(e))?;
    }
    Ok(begin)
}

pub(super) fn finish(
    db: &Db<'_>,
    issuer: &str,
    task_id: &str,
    proof: &[u8],
    now_ms: u64,
) -> Result<(), StoreError> {
    let changed = db
        .conn
        .prepare_cached(
            "UPDATE tasks SET state = 'done', proof = ?3, finished_at_ms = ?4
             WHERE issuer = ?1 AND task_id = ?2 AND proof IS NULL",
        )
        .and_then(|mut stmt| stmt.execute(params![issuer, task_id, proof, ms(now_ms)]))
        .map_err(|e| db.err(e))?;
    if changed == 1 {
        return Ok(());
    }
    // The update takes a task in any state: only a missing row or a proof
    // already there leaves it unchanged.
    unchanged_proof(db, issuer, task_id, proof, another_proof)
}

pub(super) fn set_interrupted_proof(
    db: &Db<'_>,
    issuer: &str,
    task_id: &str,
    proof: &[u8],
) -> Result<(), StoreError> {
    let changed = db
        .conn
        .prepare_cached(
            "UPDATE tasks SET proof = ?3
             WHERE issuer = ?1 AND task_id = ?2 AND state = 'interrupted' AND proof IS NULL",
        )
        .and_then(|mut stmt| stmt.execute(params![issuer, task_id, proof]))
        .map_err(|e| db.err(e))?;
    if changed == 1 {
        return Ok(());
    }
    unchanged_proof(db, issuer, task_id, proof, |state| {
        format!("it is {state}, not interrupted: only a task interrupted by a restart gets an interruption proof")
    })
}

/// Why an `UPDATE` that gives a task its proof changed no row: the task is
/// unknown, already holds this very proof (a retry, no error), holds
/// another, or holds none in a state that takes none (`without_proof`
/// words that).
fn unchanged_proof(
    db: &Db<'_>,
    issuer: &str,
    task_id: &str,
    proof: &[u8],
    without_proof: impl FnOnce(&str) -> String,
) -> Result<(), StoreError> {
    match state_of(db, issuer, task_id)? {
        None => Err(unknown(db, issuer, task_id)),
        Some((_, Some(stored))) if stored == proof => Ok(()),
        Some((state, Some(_))) => Err(wrong_state(db, issuer, task_id, another_proof(&state))),
        Some((state, None)) => Err(wrong_state(db, issuer, task_id, without_proof(&state))),
    }
}

fn another_proof(state: &str) -> String {
    format!("it is {state} and already has another proof, which retries are answered with; a task is proved once")
}

pub(super) fn interrupt_running(db: &Db<'_>, now_ms: u64) -> Result<usize, StoreError> {
    db.conn
        .prepare_cached(
            "UPDATE tasks SET state = 'interrupted', finished_at_ms = ?1 WHERE state = 'running'",
        )
        .and_then(|mut stmt| stmt.execute(params![ms(now_ms)]))
        .map_err(|e| db.err(e))
}

pub(super) fn interrupt_one(
    db: &Db<'_>,
    issuer: &str,
    task_id: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    db.conn
        .prepare_cached(
            "UPDATE tasks SET state = 'interrupted', finished_at_ms = ?3
             WHERE issuer = ?1 AND task_id = ?2 AND state = 'running'",
        )
        .and_then(|mut stmt| stmt.execute(params![issuer, task_id, ms(now_ms)]))
        .map(|changed| changed == 1)
        .map_err(|e| db.err(e))
}

pub(super) fn prune(db: &Db<'_>, now_ms: u64) -> Result<u64, StoreError> {
    // A legacy task (no nonce) can no longer be accepted past its
    // `keep_until_ms` either, and its record serves nothing else.
    let delete = |sql: &str| {
        db.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute(params![ms(now_ms)]))
            .map(|count| count as u64)
            .map_err(|e| db.err(e))
    };
    Ok(delete("DELETE FROM nonces WHERE keep_until_ms < ?1")?
        + delete(
            "DELETE FROM tasks WHERE nonce IS NULL AND keep_until_ms < ?1 AND state <> 'running'",
        )?)
}

/// Deletes the rows of finished tasks whose nonces need no keeping since
/// before `before_ms`, among the `limit` oldest rows. Rows are numbered in
/// the order tasks came, so the oldest are at the start of the table and
/// nothing else is read. (A row of schema 2 has no `keep_until_ms`: its
/// nonce is in `nonces`, and it goes by the time it came.)
pub(super) fn prune_tasks(db: &Db<'_>, before_ms: u64, limit: u32) -> Result<u64, StoreError> {
    db.conn
        .prepare_cached(
            "DELETE FROM tasks WHERE rowid IN (
                SELECT rowid FROM (SELECT rowid, state, received_at_ms, keep_until_ms
                                   FROM tasks ORDER BY rowid LIMIT ?2)
                WHERE state <> 'running' AND coalesce(keep_until_ms, received_at_ms) < ?1)",
        )
        .and_then(|mut stmt| stmt.execute(params![ms(before_ms), limit]))
        .map(|count| count as u64)
        .map_err(|e| db.err(e))
}

pub(super) fn replay_guard_size(db: &Db<'_>) -> Result<u64, StoreError> {
    // Rows are numbered in order and deleted from the oldest, so the span
    // of their numbers counts them without a scan (deleted rows in between
    // count too: an upper bound); retries' nonces are few.
    db.conn
        .prepare_cached(
            "SELECT (SELECT coalesce(max(rowid) - min(rowid) + 1, 0) FROM tasks)
                    + (SELECT count(*) FROM nonces)",
        )
        .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(|e| db.err(e))
}

/// How a task ended, if it has: its proof, or its interruption.
pub(super) fn ended(db: &Db<'_>, issuer: &str, task_id: &str) -> Result<Option<Ended>, StoreError> {
    match state_of(db, issuer, task_id)? {
        None => Err(unknown(db, issuer, task_id)),
        Some((_, Some(proof))) => Ok(Some(Ended::Proof(proof))),
        Some((state, None)) if state == "interrupted" => Ok(Some(Ended::Interrupted)),
        Some(_) => Ok(None),
    }
}

/// A task's state and its proof, if any.
type StateAndProof = (String, Option<Vec<u8>>);

fn state_of(db: &Db<'_>, issuer: &str, task_id: &str) -> Result<Option<StateAndProof>, StoreError> {
    db.conn
        .prepare_cached("SELECT state, proof FROM tasks WHERE issuer = ?1 AND task_id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![issuer, task_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(|e| db.err(e))
}

fn unknown(db: &Db<'_>, issuer: &str, task_id: &str) -> StoreError {
    StoreError::UnknownTask {
        path: db.path.to_path_buf(),
        issuer: issuer.to_string(),
        task_id: task_id.to_string(),
    }
}

fn wrong_state(db: &Db<'_>, issuer: &str, task_id: &str, detail: String) -> StoreError {
    StoreError::WrongState {
        path: db.path.to_path_buf(),
        issuer: issuer.to_string(),
        task_id: task_id.to_string(),
        detail,
    }
}
