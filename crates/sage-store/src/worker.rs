//! The database thread. It alone owns the connection; callers send it jobs
//! and await their replies, so that no tokio worker ever waits on SQLite.
//!
//! Group commit: the thread takes every job waiting in the channel (up to
//! [`MAX_BATCH`]) and runs them in one transaction, each inside its own
//! savepoint, then commits once (one fsync of the write-ahead log for the
//! whole batch) and only then replies. A job that fails has its savepoint
//! rolled back and gets its error; the others of the batch are not
//! affected. Should the commit itself fail, every job of the batch gets the
//! error: no caller is told that something was recorded unless it was.
//!
//! Under concurrent load, the thread gives up the processor once before it
//! commits a small batch ([`GATHER_BELOW`]), so that request handlers
//! ready to run can add their jobs: a commit writes a few pages however few
//! jobs it holds, so jobs committed together cost less each. A lone caller
//! (one job per batch) is not kept waiting for others that are not coming.
//!
//! Copying the log into the database is the checkpointer thread's work
//! ([`super::checkpoint`]); this connection's own automatic checkpoint is
//! only the backstop that lets the log start over.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::StoreError;

/// The most jobs committed together: bounds the wait of the last one.
pub(super) const MAX_BATCH: usize = 256;

/// A batch smaller than this waits for the threads ready to run before it
/// is committed (one `sched_yield`: no wait when the processors are idle).
const GATHER_BELOW: usize = 16;

/// What a job gets: the connection, inside the batch's transaction and the
/// job's savepoint, and the file's path for errors.
pub(super) struct Db<'a> {
    /// The connection.
    pub(super) conn: &'a Connection,
    /// The database file.
    pub(super) path: &'a Path,
}

impl Db<'_> {
    /// An SQLite error as a [`StoreError`] naming this database.
    pub(super) fn err(&self, error: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(self.path, error)
    }
}

/// A unit of work sent to the thread.
pub(super) trait Job: Send {
    /// Runs the work; on failure, a copy of its error.
    fn run(&mut self, db: &Db<'_>) -> Result<(), StoreError>;
    /// The batch failed (or never started): unless the job failed on its own,
    /// its outcome becomes `error`.
    fn fail(&mut self, error: &StoreError);
    /// Sends the outcome to the caller (who may have stopped waiting).
    fn reply(self: Box<Self>);
    /// How it is committed.
    fn mode(&self) -> Mode;
}

/// How a job is run and committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mode {
    /// Its commit must reach the disk before the reply (an fsync): true but
    /// for writes whose loss at a power cut is harmless.
    pub(super) durable: bool,
    /// It runs in its own savepoint, so that its failure undoes its writes
    /// alone. A job that makes at most one write, after every check that
    /// can fail, needs none (SQLite undoes a failed statement itself), and
    /// saves the savepoint's page copies: the request path's jobs are such.
    pub(super) savepoint: bool,
}

/// A job made of a closure and the channel its result goes back on.
pub(super) struct Call<T, F> {
    mode: Mode,
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Call<T, F> {
    /// The job, and the receiver of its outcome.
    pub(super) fn new(work: F, mode: Mode) -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, receiver) = oneshot::channel();
        let call = Call {
            mode,
            work: Some(work),
            outcome: None,
            reply,
        };
        (call, receiver)
    }
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, db: &Db<'_>) -> Result<(), StoreError> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| work(db))).unwrap_or_else(|panic| {
            Err(StoreError::Internal {
                path: db.path.to_path_buf(),
                detail: panic_message(panic.as_ref()),
            })
        });
        let result = match &outcome {
            Ok(_) => Ok(()),
            Err(error) => Err(error.clone()),
        };
        self.outcome = Some(outcome);
        result
    }

    fn mode(&self) -> Mode {
        self.mode
    }

    fn fail(&mut self, error: &StoreError) {
        if !matches!(self.outcome, Some(Err(_))) {
            self.outcome = Some(Err(error.clone()));
        }
    }

    fn reply(self: Box<Self>) {
        if let Some(outcome) = self.outcome {
            // The caller may be gone (its future dropped); the work stands.
            let _ = self.reply.send(outcome);
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic".to_string()
    }
}

/// Starts the thread that owns `conn`. It runs until every sender of
/// `jobs` is dropped, then stops the checkpointer and closes the
/// connection.
pub(super) fn spawn(
    conn: Connection,
    path: PathBuf,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    checkpointer: Checkpointer,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sage-store".to_string())
        .spawn(move || run(conn, &path, jobs, checkpointer))
}

fn run(
    conn: Connection,
    path: &Path,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    mut checkpointer: Checkpointer,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut sync = SyncLevel::default();
    let mut last_len = 0;
    while let Some(job) = jobs.blocking_recv() {
        batch.push(job);
        take_waiting(&mut jobs, &mut batch);
        // A lone job after a lone job: one caller at a time, whom a yield
        // would only keep waiting.
        if batch.len() < GATHER_BELOW && (batch.len() > 1 || last_len > 1) {
            std::thread::yield_now();
            take_waiting(&mut jobs, &mut batch);
        }
        last_len = batch.len();
        run_batch(&conn, path, &mut batch, &mut sync);
        checkpointer.committed();
    }
    // Its connection closes first, so that ours is the last: SQLite then
    // checkpoints the whole log and removes it.
    checkpointer.stop();
    // Lets SQLite refresh its statistics where they are stale; cheap.
    let _ = conn.execute_batch("PRAGMA optimize");
    if let Err((_, error)) = conn.close() {
        tracing::warn!(path = %path.display(), %error, "closing the database failed; its write-ahead log is replayed at the next open");
    }
}

/// Moves the jobs waiting in the channel into `batch`, up to [`MAX_BATCH`].
fn take_waiting(jobs: &mut mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// The connection's `synchronous` setting, as last set. SQLite applies
/// that pragma when it prepares it, so each run parses it anew: it is only
/// run when a batch needs the other setting.
#[derive(Debug, Default)]
pub(super) struct SyncLevel {
    full: Option<bool>,
}

/// Runs `batch` in one transaction, one savepoint per job, commits, then
/// replies to every job. Leaves `batch` empty.
pub(super) fn run_batch(
    conn: &Connection,
    path: &Path,
    batch: &mut Vec<Box<dyn Job>>,
    sync: &mut SyncLevel,
) {
    let db = Db { conn, path };
    if let Some(error) = run_in_transaction(&db, batch, sync) {
        for job in batch.iter_mut() {
            job.fail(&error);
        }
    }
    for job in batch.drain(..) {
        job.reply();
    }
}

/// The error that fails the whole batch, if any.
fn run_in_transaction(
    db: &Db<'_>,
    batch: &mut [Box<dyn Job>],
    sync: &mut SyncLevel,
) -> Option<StoreError> {
    let conn = db.conn;
    // Transaction control goes through the statement cache: parsing these
    // for every job cost more than running them.
    let exec = |sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    // In WAL mode, NORMAL commits without an fsync; the next FULL commit
    // syncs everything before it too. A batch is FULL if any job needs it.
    let full = batch.iter().any(|job| job.mode().durable);
    if sync.full != Some(full) {
        let pragma = if full {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        };
        if let Err(error) = conn.execute_batch(pragma) {
            return Some(db.err(error));
        }
        sync.full = Some(full);
    }
    if let Err(error) = exec("BEGIN IMMEDIATE") {
        return Some(db.err(error));
    }
    let mut aborted = None;
    for job in batch.iter_mut() {
        let savepoint = job.mode().savepoint;
        if savepoint {
            if let Err(error) = exec("SAVEPOINT job") {
                aborted = Some(db.err(error));
                break;
            }
        }
        let outcome = job.run(db);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (an I/O error, a full
            // disk): the changes of the jobs before this one are gone too.
            aborted = Some(outcome.err().unwrap_or_else(|| StoreError::Internal {
                path: db.path.to_path_buf(),
                detail: "a job ended the batch's transaction".to_string(),
            }));
            break;
        }
        if !savepoint {
            continue;
        }
        let end = if outcome.is_ok() {
            exec("RELEASE job")
        } else {
            exec("ROLLBACK TO job").and_then(|()| exec("RELEASE job"))
        };
        if let Err(error) = end {
            aborted = Some(db.err(error));
            break;
        }
    }
    let failure = match aborted {
        Some(error) => Some(error),
        None => exec("COMMIT").err().map(|e| db.err(e)),
    };
    if failure.is_some() && !conn.is_autocommit() {
        // Nothing more to report if this fails too: the batch has failed.
        let _ = conn.execute_batch("ROLLBACK");
    }
    failure
}
