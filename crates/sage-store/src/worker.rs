//! The connection's owner: the database thread, or a caller that runs its
//! own job when it is alone. Exactly one of them holds the connection (a
//! mutex, [`Shared`]) and runs a transaction at a time.
//!
//! A caller whose job would be the only one (no other call of the store in
//! progress, no job waiting in the queue, nobody holding the connection or
//! waiting for it) takes
//! the connection and commits its job itself, on its own thread
//! ([`lead`]): the two hand-offs to the thread and back cost more than the
//! transaction. Its tokio worker gives its other tasks to another thread
//! meanwhile (`block_in_place`), so the runtime still never waits on
//! SQLite; on a current-thread runtime, where that is not possible, every
//! job goes to the thread. Callers that find the connection taken queue
//! their jobs for the thread, which takes it next: under load, batches
//! form as before.
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
//! The connection stays at `synchronous = NORMAL`; a durable batch's
//! commit is followed by an `fdatasync` of the log ([`LogSync`]).
//!
//! Copying the log into the database is the checkpointer thread's work
//! ([`super::checkpoint`]); this connection's own automatic checkpoint is
//! only the backstop that lets the log start over.

use std::any::Any;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
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

/// The connection and what goes with it: held by whoever runs a
/// transaction, the database thread or a leading caller ([`lead`]), one at
/// a time.
pub(super) struct Owner {
    conn: Connection,
    path: PathBuf,
    pub(super) sync: LogSync,
    checkpointer: Checkpointer,
    /// The jobs of the batch being run; kept for its allocation.
    batch: Vec<Box<dyn Job>>,
    /// How many jobs the last batch held.
    last_len: usize,
}

impl Owner {
    /// Runs the jobs in `self.batch` as one transaction.
    fn commit_batch(&mut self) {
        self.last_len = self.batch.len();
        run_batch(&self.conn, &self.path, &mut self.batch, &mut self.sync);
        self.checkpointer.committed();
    }

    fn close(self) {
        let Owner {
            conn,
            path,
            sync,
            checkpointer,
            ..
        } = self;
        drop(sync);
        // Its connection closes first, so that ours is the last: SQLite then
        // checkpoints the whole log and removes it.
        checkpointer.stop();
        // Lets SQLite refresh its statistics where they are stale; cheap.
        let _ = conn.execute_batch("PRAGMA optimize");
        if let Err((_, error)) = conn.close() {
            tracing::warn!(path = %path.display(), %error, "closing the database failed; its write-ahead log is replayed at the next open");
        }
    }
}

/// What the database thread and the callers share.
pub(super) struct Shared {
    /// `None` once the thread has closed the connection.
    owner: Mutex<Option<Owner>>,
    /// The thread has jobs and waits for the connection: callers queue
    /// behind it rather than take the connection before it again.
    pub(super) thread_waits: AtomicBool,
    /// The database is in WAL mode, with the log synced apart from commits.
    pub(super) wal: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Owner>> {
        // A panic while holding it was a job's, caught and rolled back, or
        // the commit's, which failed its batch: the connection is sound.
        self.owner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Starts the thread that owns `conn` when no caller leads. It runs until
/// every sender of `jobs` is dropped, then stops the checkpointer and
/// closes the connection.
pub(super) fn spawn(
    conn: Connection,
    path: PathBuf,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    checkpointer: Checkpointer,
) -> Result<(Arc<Shared>, JoinHandle<()>), StoreError> {
    let sync = LogSync::set_up(&conn, &path)?;
    let wal = matches!(sync, LogSync::Log { .. });
    let shared = Arc::new(Shared {
        wal,
        owner: Mutex::new(Some(Owner {
            conn,
            path: path.clone(),
            sync,
            checkpointer,
            batch: Vec::with_capacity(MAX_BATCH),
            last_len: 0,
        })),
        thread_waits: AtomicBool::new(false),
    });
    let ours = shared.clone();
    let thread = std::thread::Builder::new()
        .name("sage-store".to_string())
        .spawn(move || run(&ours, jobs))
        .map_err(|e| StoreError::Spawn {
            path,
            source: Arc::new(e),
        })?;
    Ok((shared, thread))
}

/// Runs `job` on the caller's own thread, as a batch of one, when nothing
/// is there to batch it with: no job waits in the queue, and neither the
/// thread nor another caller holds the connection. Saves the two hand-offs
/// to the thread and back. The caller's tokio worker gives its other tasks
/// to another thread meanwhile (`block_in_place`), so the runtime still
/// never waits on SQLite. Gives `job` back when it must go to the thread:
/// something else is running (its jobs will form the next batch), or the
/// runtime has one thread, which must not block.
pub(super) fn lead(
    shared: &Shared,
    queue: &mpsc::Sender<Box<dyn Job>>,
    job: Box<dyn Job>,
) -> Result<(), Box<dyn Job>> {
    if !may_block_in_place()
        || shared.thread_waits.load(Ordering::Acquire)
        || queue.capacity() < queue.max_capacity()
    {
        return Err(job);
    }
    let mut guard = match shared.owner.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
        Err(TryLockError::WouldBlock) => return Err(job),
    };
    let Some(owner) = guard.as_mut() else {
        // Closed: the thread's queue says so.
        return Err(job);
    };
    tokio::task::block_in_place(move || {
        owner.batch.push(job);
        owner.commit_batch();
    });
    Ok(())
}

/// Whether this thread may block in place: on a multi-thread runtime (a
/// worker hands its tasks over; any other thread of it just blocks), not
/// on a current-thread one, where `block_in_place` panics, nor outside
/// any runtime.
fn may_block_in_place() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

fn run(shared: &Shared, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Some(job) = jobs.blocking_recv() {
        shared.thread_waits.store(true, Ordering::Release);
        let mut guard = shared.lock();
        shared.thread_waits.store(false, Ordering::Release);
        let Some(owner) = guard.as_mut() else {
            // Only this thread closes the connection, after this loop.
            return;
        };
        owner.batch.push(job);
        take_waiting(&mut jobs, &mut owner.batch);
        // A lone job after a lone job: one caller at a time, whom a yield
        // would only keep waiting. Callers that come meanwhile find the
        // connection taken and queue their jobs, which join this batch.
        if owner.batch.len() < GATHER_BELOW && (owner.batch.len() > 1 || owner.last_len > 1) {
            std::thread::yield_now();
            take_waiting(&mut jobs, &mut owner.batch);
        }
        owner.commit_batch();
    }
    let owner = shared.lock().take();
    if let Some(owner) = owner {
        owner.close();
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

/// How a durable batch reaches the disk.
///
/// In WAL mode the connection stays at `synchronous = NORMAL` (commits
/// without an fsync; the log synced before each checkpoint) and a durable
/// batch's commit is followed by an `fdatasync` of the log: what `FULL`
/// does, without flipping the setting, which SQLite applies only when it
/// parses the pragma, for every switch between durable and other batches.
/// The log's file is the same inode as long as a connection is open
/// (SQLite deletes it only when the last one closes), so it is opened once.
///
/// With a rollback journal (a file system without WAL), `NORMAL` is not
/// as safe, so `synchronous` is switched to `FULL` for durable batches.
#[derive(Debug)]
pub(super) enum LogSync {
    /// WAL mode: the log, opened at the first durable commit.
    Log {
        /// The log's path (`sage.db-wal`).
        path: PathBuf,
        /// Its file, once opened.
        file: Option<File>,
    },
    /// A rollback journal: the `synchronous` setting as last set.
    Level {
        /// Whether it is `FULL`, once set.
        full: Option<bool>,
    },
}

impl Default for LogSync {
    fn default() -> Self {
        LogSync::Level { full: None }
    }
}

impl LogSync {
    /// The scheme for `conn`, whose database is at `path`, set up.
    fn set_up(conn: &Connection, path: &Path) -> Result<LogSync, StoreError> {
        let err = |e| StoreError::from_sqlite(path, e);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(LogSync::default());
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        Ok(LogSync::Log {
            path: log.into(),
            file: None,
        })
    }

    /// Before a batch: the `synchronous` setting it needs, if that
    /// changes.
    fn before(&mut self, conn: &Connection, durable: bool) -> rusqlite::Result<()> {
        let LogSync::Level { full } = self else {
            return Ok(());
        };
        if *full != Some(durable) {
            let pragma = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            conn.execute_batch(pragma)?;
            *full = Some(durable);
        }
        Ok(())
    }

    /// After a durable batch's commit: the log on the disk.
    fn after_durable_commit(&mut self, db: &Path) -> Result<(), StoreError> {
        let LogSync::Log { path, file } = self else {
            return Ok(());
        };
        let sync = |file: &File| file.sync_data();
        let result = match file {
            Some(file) => sync(file),
            None => File::open(&*path).and_then(|opened| {
                sync(&opened)?;
                *file = Some(opened);
                Ok(())
            }),
        };
        result.map_err(|e| StoreError::Sync {
            path: db.to_path_buf(),
            source: Arc::new(e),
        })
    }
}

/// Runs `batch` in one transaction, one savepoint per job, commits, then
/// replies to every job. Leaves `batch` empty.
pub(super) fn run_batch(
    conn: &Connection,
    path: &Path,
    batch: &mut Vec<Box<dyn Job>>,
    sync: &mut LogSync,
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
    sync: &mut LogSync,
) -> Option<StoreError> {
    let conn = db.conn;
    // Transaction control goes through the statement cache: parsing these
    // for every job cost more than running them.
    let exec = |sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    // A batch is durable if any of its jobs needs it to be.
    let durable = batch.iter().any(|job| job.mode().durable);
    if let Err(error) = sync.before(conn, durable) {
        return Some(db.err(error));
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
        None => match exec("COMMIT") {
            Err(error) => Some(db.err(error)),
            // Committed but maybe not on the disk: no caller is told
            // that it was recorded durably.
            Ok(()) if durable => sync.after_durable_commit(db.path).err(),
            Ok(()) => None,
        },
    };
    if failure.is_some() && !conn.is_autocommit() {
        // Nothing more to report if this fails too: the batch has failed.
        let _ = conn.execute_batch("ROLLBACK");
    }
    failure
}
