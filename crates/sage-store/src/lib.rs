//! The node's durable state, in one SQLite file: `<state_dir>/sage.db`.
//!
//! A node that is killed or loses power loses nothing it acknowledged, runs
//! no task twice and refuses replayed envelopes after a restart:
//!
//! - `tasks`: every task run for another node, keyed by (issuer, task id),
//!   with the exact request and proof bytes, so that a retry is answered
//!   with the same proof ([`Store::begin_task`], [`Store::finish_task`]).
//!   At start, tasks that were running become interrupted
//!   ([`Store::interrupt_running`]); finished tasks are forgotten after
//!   the node's retention ([`Store::prune_tasks`]).
//!   The nonce of a task's first envelope is kept in its row.
//! - `nonces`: the nonces of retries (other envelopes of a recorded task),
//!   until their envelopes could no longer be accepted anyway
//!   ([`Store::prune`]).
//! - `ledger`: the delegator's record of what it sent where and what came
//!   back, with per-peer statistics kept in the same transactions
//!   ([`Store::record_delegation`], [`Store::peer_stats`]).
//!
//! # Durability and threading
//!
//! The file is in WAL mode: a durable change is reported only once it is
//! on the disk (the connection stays at `synchronous=NORMAL` and the log is
//! synced with `fdatasync` after each durable commit, as the workspace's
//! `.cargo/config.toml` builds SQLite). One connection, held by one party
//! at a time: a caller whose job is alone runs it on its own thread (the
//! runtime's other tasks move to another worker meanwhile), and jobs that
//! come while the connection is taken wait for the database thread, which
//! commits every job waiting in its queue in one transaction (one fsync
//! for all of them), each in its own savepoint so that one job's error
//! does not fail the others. The thread stops when the last clone of the
//! [`Store`] is dropped.
//!
//! A task whose run may be repeated harmlessly can be recorded with its
//! sync overlapping the run ([`Store::begin_task_overlapped`]): committed
//! without a sync, the log synced beside it, and [`Synced::wait`] says
//! when it is on the disk (`log_sync.rs`).
//!
//! A job whose caller stops waiting (its future dropped) still runs and is
//! committed: a `begin_task` that reports `Started` to nobody leaves a task
//! `running` until the next start marks it interrupted.
//!
//! # Schema
//!
//! Versioned by `PRAGMA user_version` and migrated at open (see `schema.rs`);
//! a file written by a newer sage is refused ([`StoreError::TooNew`]), and
//! one that is not a sound sage database is reported
//! ([`StoreError::Corrupt`]) and never recreated.

mod checkpoint;
mod error;
mod ledger;
mod lock;
mod log_sync;
mod schema;
mod tasks;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

pub use error::StoreError;
pub use ledger::{LedgerEntry, Outcome, PeerStats, EWMA_ALPHA, SENT};
pub use lock::{StateLock, LOCK_FILE};
pub use log_sync::Synced;
pub use tasks::{Begin, Ended, TaskRecord};

use checkpoint::Checkpointer;
use worker::{Call, Db, Job, Mode};

/// The database's file name in the state directory.
pub const DB_FILE: &str = "sage.db";

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: u32 = schema::SCHEMA_VERSION;

/// How many jobs may wait for the database thread before callers wait to
/// send theirs.
const QUEUE: usize = 1024;

/// The most task rows one transaction of [`Store::prune_tasks`] looks at:
/// it holds up the requests' own writes meanwhile.
const PRUNE_TASKS_LIMIT: u32 = 1000;

/// How often [`Store::wait_done`] looks at the database when no signal
/// comes. Only the node that holds the state directory's lock writes task
/// records, and it signals every change: this is a safety net.
const POLL: Duration = Duration::from_millis(500);

/// What a commit survives before the caller hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// A power cut (fsync of the log before the reply; the default): an
    /// accepted task is never forgotten, whatever happens to the machine.
    #[default]
    PowerLoss,
    /// A crash or kill of the process, not of the machine (no fsync on the
    /// request path): much faster where fsync is slow; after a power cut
    /// the last accepted tasks may be forgotten, so one could run again.
    Crash,
}

/// How much of the file [`Store::open_with`] reads to check it before use.
/// Either way, a file that is not a sage database is refused, and damage
/// met later is reported ([`StoreError::Corrupt`]), never repaired or
/// recreated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Check {
    /// Every page (`PRAGMA quick_check`): damage anywhere is found before
    /// anything runs. Reads the whole file: seconds for hundreds of MB from
    /// a cold cache. For a node's start.
    #[default]
    Whole,
    /// The header and the schema: for short commands, whose time would
    /// otherwise grow with the database. Damage is found when a damaged
    /// page is read.
    Header,
}

/// The node's durable state. Cheap to clone: clones share one database
/// thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// What the ledger's writes survive through this handle
    /// ([`Store::with_ledger_durability`]); the store's own by default.
    ledger: Durability,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// The connection, taken by the thread or a leading caller.
    shared: Arc<worker::Shared>,
    /// The calls in progress ([`InProgress`]).
    calls: AtomicUsize,
    /// The log's syncs apart from commits ([`Store::begin_task_overlapped`]).
    syncer: Arc<log_sync::Syncer>,
    waiters: Waiters,
    /// The database thread, until a [`Closer`] takes it.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The state directory's lock, for a node's store; `None` for a short
    /// command's, which may run beside a node.
    lock: Option<StateLock>,
}

/// Waits for a store's database thread to end ([`Store::closer`]).
#[derive(Debug)]
pub struct Closer {
    thread: Option<JoinHandle<()>>,
}

impl Closer {
    /// Waits at most `timeout` for the database thread to close the
    /// database, which it does once every clone of the store is dropped.
    /// Blocks: call it off the async runtime. False if it was still
    /// running at the deadline (nothing is lost: the log is replayed at the
    /// next open).
    pub fn wait(self, timeout: Duration) -> bool {
        let Some(thread) = self.thread else {
            return true;
        };
        let deadline = std::time::Instant::now() + timeout;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // It has ended; a panic in it was already reported by the panic hook.
        let _ = thread.join();
        true
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens a node's state: takes the state directory's lock
    /// ([`StateLock`]), then opens `<state_dir>/sage.db`, creating the
    /// directory (mode 0700 on unix) and the database if missing, checking
    /// it ([`Check::Whole`]) and migrating its schema, and starts the
    /// database thread. The lock is held until the last clone is dropped.
    ///
    /// This blocks for as long as the checks take (they read the whole file
    /// once): call it at start, or from `spawn_blocking`.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another node holds the directory; any
    /// error of the database's opening.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(state_dir, Durability::PowerLoss, Check::Whole)
    }

    /// As [`Store::open`], with the given durability and check.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(
        state_dir: &Path,
        durability: Durability,
        check: Check,
    ) -> Result<Store, StoreError> {
        let lock = StateLock::acquire(state_dir)?;
        Self::start(state_dir, durability, check, Some(lock))
    }

    /// Opens the state for a short command (`delegate`, `proofs`, `peer
    /// list`) without the directory's lock, so that it works beside a
    /// running node: the header and schema are checked ([`Check::Header`]).
    /// Such a store records delegations; it never touches the node's task
    /// records ([`Store::interrupt_running`] is refused).
    ///
    /// # Errors
    /// As [`Store::open`], but for the lock.
    pub fn open_shared(state_dir: &Path) -> Result<Store, StoreError> {
        Self::start(state_dir, Durability::PowerLoss, Check::Header, None)
    }

    fn start(
        state_dir: &Path,
        durability: Durability,
        check: Check,
        lock: Option<StateLock>,
    ) -> Result<Store, StoreError> {
        create_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let (conn, migrated_from) = schema::open_migrating(&path, SCHEMA_VERSION, check)?;
        if let Some(from) = migrated_from {
            // Worth a line when a node starts; a short command's first
            // open of a new directory is routine.
            if lock.is_some() {
                tracing::info!(path = %path.display(), from, to = SCHEMA_VERSION, "database schema migrated");
            } else {
                tracing::debug!(path = %path.display(), from, to = SCHEMA_VERSION, "database schema migrated");
            }
        }
        let checkpointer = Checkpointer::start(&path)?;
        let (jobs, receiver) = mpsc::channel(QUEUE);
        let (shared, thread) = worker::spawn(conn, path.clone(), receiver, checkpointer)?;
        let syncer = log_sync::Syncer::new(path.clone());
        Ok(Store {
            ledger: durability,
            inner: Arc::new(Inner {
                path,
                durability,
                jobs,
                shared,
                syncer,
                calls: AtomicUsize::new(0),
                waiters: Waiters::default(),
                thread: Mutex::new(Some(thread)),
                lock,
            }),
        })
    }

    /// This store, its ledger's writes made with `durability` instead of
    /// the store's own: a delegator that sends many tasks at once may
    /// choose [`Durability::Crash`] for its ledger (no fsync per record)
    /// while the node's task records keep theirs. The handle shares the
    /// database thread with `self`.
    #[must_use]
    pub fn with_ledger_durability(&self, durability: Durability) -> Store {
        Store {
            inner: self.inner.clone(),
            ledger: durability,
        }
    }

    /// What the ledger's writes made through this handle survive.
    pub fn ledger_durability(&self) -> Durability {
        self.ledger
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What a stopping process waits on so that it leaves the database
    /// closed: the last checkpoint copies the log into the file and removes
    /// it. The first call gets the database thread; later ones wait for
    /// nothing.
    pub fn closer(&self) -> Closer {
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        Closer { thread }
    }

    /// Runs `work` in the next batch's transaction (on the database thread,
    /// or on this one when it is alone: `worker::lead`), and replies once
    /// the commit is on disk.
    async fn call<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(
            work,
            Mode {
                durable: true,
                savepoint: true,
            },
        )
        .await
    }

    /// Runs `work` as [`worker::Mode`] says (see there when a job may go
    /// without a savepoint); durable only if the node's durability asks.
    async fn submit<T, F>(&self, work: F, mode: Mode) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let mode = Mode {
            durable: mode.durable && self.inner.durability == Durability::PowerLoss,
            ..mode
        };
        self.send(work, mode).await
    }

    /// Runs `work`, which only reads: it needs no savepoint, and no sync
    /// (a durable job would have its whole batch synced).
    async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        self.send(work, mode).await
    }

    /// Runs a ledger write as `mode` says, durable only if this handle's
    /// ledger durability asks ([`Store::with_ledger_durability`]).
    async fn submit_ledger<T, F>(&self, work: F, mode: Mode) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let mode = Mode {
            durable: mode.durable && self.ledger == Durability::PowerLoss,
            ..mode
        };
        self.send(work, mode).await
    }

    /// Sends `work` to the database thread as it is, and waits for its
    /// outcome.
    async fn send<T, F>(&self, work: F, mode: Mode) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (call, reply) = Call::new(work, mode);
        let closed = || StoreError::Closed {
            path: self.inner.path.clone(),
        };
        // Alone: no other call of this store is in progress, so nothing
        // could join its batch. Under load there nearly always is one, and
        // leading then would only split the thread's batches.
        let alone = self.inner.calls.fetch_add(1, Ordering::AcqRel) == 0;
        let _call = InProgress(&self.inner.calls);
        let job: Box<dyn Job> = Box::new(call);
        let queued = if alone {
            worker::lead(&self.inner.shared, &self.inner.jobs, job)
        } else {
            Err(job)
        };
        if let Err(job) = queued {
            self.inner.jobs.send(job).await.map_err(|_| closed())?;
        }
        reply.await.map_err(|_| closed())?
    }

    /// Records a verified, admitted task before it runs, in one transaction:
    ///
    /// 1. if (issuer, task id) is new: recorded as running, with its nonce
    ///    remembered until `keep_until_ms`: [`Begin::Started`]. No nonce
    ///    is looked up: the signature covers the task id, so an envelope
    ///    that was seen before names a task that is recorded;
    /// 2. if the task is recorded and this envelope's nonce (its first, or
    ///    a retry's) is remembered until `received_at_ms` or later:
    ///    [`Begin::Replayed`];
    /// 3. if it is recorded with another digest: [`Begin::Conflict`] (the
    ///    nonce is not recorded);
    /// 4. else, the retry's nonce is recorded (so this envelope cannot be
    ///    replayed either) and: [`Begin::Done`] if a proof is stored,
    ///    whatever the state; otherwise [`Begin::Running`] or
    ///    [`Begin::Interrupted`].
    pub async fn begin_task(&self, record: TaskRecord) -> Result<Begin, StoreError> {
        // One write at most, after every check: no savepoint needed.
        let mode = Mode {
            durable: true,
            savepoint: false,
        };
        self.submit(move |db| tasks::begin(db, &record), mode).await
    }

    /// As [`Store::begin_task`], but the record's way to the disk overlaps
    /// with what the caller does next: it is committed without a sync, and
    /// the sync runs meanwhile; [`Synced::wait`] says when it is done. For
    /// a task whose run is harmless to repeat (a pure executor), and only
    /// if nothing about it is answered before that wait returns: a power
    /// cut before then forgets a task nobody heard of. Without durable
    /// commits ([`Durability::Crash`]) there is nothing to wait for; without
    /// a write-ahead log the record is synced before this returns.
    pub async fn begin_task_overlapped(
        &self,
        record: TaskRecord,
    ) -> Result<(Begin, Synced), StoreError> {
        if self.inner.durability != Durability::PowerLoss || !self.inner.shared.wal {
            return Ok((self.begin_task(record).await?, Synced::done()));
        }
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        let begun = self
            .submit(move |db| tasks::begin(db, &record), mode)
            .await?;
        Ok((begun, self.inner.syncer.request()))
    }

    /// Stores the proof of a task begun here and marks it done. Finishing
    /// again with the same bytes does nothing; with other bytes it is
    /// refused ([`StoreError::WrongState`]): retries get the first proof.
    pub async fn finish_task(
        &self,
        issuer: &str,
        task_id: &str,
        proof: Vec<u8>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let (issuer, task_id) = (issuer.to_string(), task_id.to_string());
        // Not synced: the task was durably recorded as running before it ran,
        // so a power cut that loses this write makes the task `interrupted`
        // at the next start (a retry gets a signed proof saying so); it is
        // never run again. One fsync per task instead of two.
        // One write (the update), or none and an error: no savepoint.
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        let (issuer, task_id) = self
            .submit(
                move |db| {
                    tasks::finish(db, &issuer, &task_id, &proof, now_ms)?;
                    Ok((issuer, task_id))
                },
                mode,
            )
            .await?;
        self.inner.waiters.signal(&issuer, &task_id);
        Ok(())
    }

    /// Marks every task still `running` as `interrupted`, finished at
    /// `now_ms`: at start, before serving (the node stopped while they
    /// ran), and at a stop whose drain deadline passed. Returns how many
    /// there were.
    ///
    /// # Errors
    /// [`StoreError::NotLocked`] for a store opened without the state
    /// directory's lock ([`Store::open_shared`]): the running tasks may
    /// belong to a live node.
    pub async fn interrupt_running(&self, now_ms: u64) -> Result<usize, StoreError> {
        if self.inner.lock.is_none() {
            return Err(StoreError::NotLocked {
                path: self.inner.path.clone(),
            });
        }
        self.call(move |db| tasks::interrupt_running(db, now_ms))
            .await
    }

    /// Marks one running task as interrupted, finished at `now_ms`: its run
    /// ended without a proof (the run panicked, or its proof could not be
    /// stored), so that a retry gets a signed proof saying so instead of
    /// waiting for a run that is over. A task that is not running is left
    /// as it is; returns whether this one was.
    pub async fn interrupt_task(
        &self,
        issuer: &str,
        task_id: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (issuer, task_id) = (issuer.to_string(), task_id.to_string());
        let (changed, issuer, task_id) = self
            .call(move |db| {
                let changed = tasks::interrupt_one(db, &issuer, &task_id, now_ms)?;
                Ok((changed, issuer, task_id))
            })
            .await?;
        self.inner.waiters.signal(&issuer, &task_id);
        Ok(changed)
    }

    /// Stores the signed proof that says an interrupted task was
    /// interrupted; the task stays `interrupted`, and later retries get
    /// [`Begin::Done`] with these bytes. Storing the same bytes again does
    /// nothing; a task that is not interrupted, or already has another
    /// proof, is refused ([`StoreError::WrongState`]).
    pub async fn set_proof_of_interrupted(
        &self,
        issuer: &str,
        task_id: &str,
        proof: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (issuer, task_id) = (issuer.to_string(), task_id.to_string());
        let (issuer, task_id) = self
            .call(move |db| {
                tasks::set_interrupted_proof(db, &issuer, &task_id, &proof)?;
                Ok((issuer, task_id))
            })
            .await?;
        self.inner.waiters.signal(&issuer, &task_id);
        Ok(())
    }

    /// How many envelopes the replay guard remembers: one per recorded task
    /// (its first nonce, kept with it) plus the retries' nonces not yet
    /// pruned. An upper bound: first nonces past their time are counted,
    /// and so are rows pruned between two that were not.
    pub async fn replay_guard_size(&self) -> Result<u64, StoreError> {
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        self.submit(tasks::replay_guard_size, mode).await
    }

    /// Forgets the nonces, and the finished legacy tasks, kept until before
    /// `now_ms`; returns how many.
    pub async fn prune(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.call(move |db| tasks::prune(db, now_ms)).await
    }

    /// Forgets finished tasks (done or interrupted) whose envelopes could
    /// no longer be accepted since before `before_ms` (their expiry plus
    /// the clock skew allowed), oldest first; returns how many were
    /// deleted. Each transaction looks at the `PRUNE_TASKS_LIMIT` oldest
    /// rows, so that requests' writes come in between. A task re-signed
    /// after that (same task id, new envelope) runs again: retention bounds
    /// how long retries are answered from the record. Running tasks are
    /// kept.
    pub async fn prune_tasks(&self, before_ms: u64) -> Result<u64, StoreError> {
        let mut forgotten = 0;
        loop {
            let count = self.prune_oldest_tasks(before_ms).await?;
            forgotten += count;
            if count < u64::from(PRUNE_TASKS_LIMIT) {
                return Ok(forgotten);
            }
        }
    }

    /// One transaction of [`Store::prune_tasks`].
    async fn prune_oldest_tasks(&self, before_ms: u64) -> Result<u64, StoreError> {
        // One statement; a deletion lost at a power cut is made again.
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        self.submit(
            move |db| tasks::prune_tasks(db, before_ms, PRUNE_TASKS_LIMIT),
            mode,
        )
        .await
    }

    /// Waits at most `timeout` for the end of a task (one that
    /// [`Begin::Running`] was answered for): its proof, or its interruption
    /// ([`Store::interrupt_task`]). Woken by [`Store::finish_task`],
    /// [`Store::set_proof_of_interrupted`] and [`Store::interrupt_task`],
    /// and looking at the database every `POLL` besides. `None` if the
    /// task is still running at the deadline; [`StoreError::UnknownTask`]
    /// if there is no such task.
    pub async fn wait_done(
        &self,
        issuer: &str,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<Ended>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = (issuer.to_string(), task_id.to_string());
        let waiter = self.inner.waiters.register(key.clone());
        loop {
            // Listen before looking, so that a signal between the look and
            // the wait is not missed.
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (issuer, task_id) = key.clone();
            let mode = Mode {
                durable: false,
                savepoint: false,
            };
            if let Some(ended) = self
                .submit(move |db| tasks::ended(db, &issuer, &task_id), mode)
                .await?
            {
                return Ok(Some(ended));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(POLL);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// Appends a delegation to the ledger and updates its peer's statistics
    /// in the same transaction; returns the entry's id (`entry.id` is
    /// ignored). Durable as the handle's ledger durability says.
    pub async fn record_delegation(&self, entry: LedgerEntry) -> Result<i64, StoreError> {
        let mode = Mode {
            durable: true,
            savepoint: true,
        };
        self.submit_ledger(move |db| ledger::record(db, &entry), mode)
            .await
    }

    /// Records a delegation about to be sent, with status
    /// [`SENT`], without counting it in its peer's statistics yet; returns
    /// the entry's id for [`Store::close_delegation`]. Durable as the
    /// handle's ledger durability says: with [`Durability::PowerLoss`], a
    /// task is on the disk as sent before it leaves.
    pub async fn open_delegation(&self, mut entry: LedgerEntry) -> Result<i64, StoreError> {
        entry.status = ledger::SENT.to_owned();
        // One insert: SQLite undoes a failed statement itself.
        let mode = Mode {
            durable: true,
            savepoint: false,
        };
        self.submit_ledger(move |db| ledger::insert(db, &entry), mode)
            .await
    }

    /// Gives the delegation `id` (from [`Store::open_delegation`]) its
    /// outcome and counts it in its peer's statistics. Durable as the
    /// handle's ledger durability says: with [`Durability::PowerLoss`] a
    /// receipt reported to the caller is on the disk, not only the record
    /// that the task was sent; with [`Durability::Crash`] neither is
    /// synced on its own.
    pub async fn close_delegation(&self, id: i64, outcome: Outcome) -> Result<(), StoreError> {
        let mode = Mode {
            durable: true,
            savepoint: true,
        };
        self.submit_ledger(move |db| ledger::close(db, id, &outcome), mode)
            .await
    }

    /// The ledger, oldest first: all of it, or one peer's (its name matched
    /// case-insensitively), or what was sent at or after `since_ms`.
    pub async fn ledger(
        &self,
        peer: Option<String>,
        since_ms: Option<u64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |db| ledger::list(db, peer.as_deref(), since_ms))
            .await
    }

    /// The latest ledger entry of a task id that holds a proof, else its
    /// latest entry, if any.
    pub async fn ledger_entry(&self, task_id: String) -> Result<Option<LedgerEntry>, StoreError> {
        self.read(move |db| ledger::entry(db, &task_id)).await
    }

    /// Every ledger entry of a task id, oldest first: the attempts of one
    /// delegation, on one peer or several.
    pub async fn ledger_attempts(&self, task_id: String) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |db| ledger::attempts(db, &task_id)).await
    }

    /// Keeps a peer's signed capabilities (the envelope as received, checked
    /// by the caller) until `expires_at_ms`, replacing what was kept.
    pub async fn put_capabilities(
        &self,
        peer_lct: String,
        envelope: Vec<u8>,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        // A cache, fetched again when lost; one statement.
        let mode = Mode {
            durable: false,
            savepoint: false,
        };
        self.send(
            move |db| ledger::put_capabilities(db, &peer_lct, &envelope, expires_at_ms),
            mode,
        )
        .await
    }

    /// The capabilities envelope kept for a peer, if it has not expired at
    /// `now_ms`. It is as the peer sent it: verify it before use.
    pub async fn capabilities(
        &self,
        peer_lct: String,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |db| ledger::capabilities(db, &peer_lct, now_ms))
            .await
    }

    /// Every peer's statistics, sorted by name (case-insensitively).
    pub async fn peer_stats(&self) -> Result<Vec<PeerStats>, StoreError> {
        self.read(ledger::stats).await
    }
}

/// One call of the store in progress, counted until it ends or its future
/// is dropped.
struct InProgress<'a>(&'a AtomicUsize);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Creates the state directory, private to its user on unix.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source: Arc::new(e),
    })
}

type TaskKey = (String, String);

/// The tasks being waited for, each with its signal and its waiters' count.
#[derive(Default)]
struct Waiters {
    map: Mutex<HashMap<TaskKey, (Arc<Notify>, usize)>>,
}

/// One waiter's registration; removes the entry with the last waiter.
struct Waiter<'a> {
    waiters: &'a Waiters,
    key: TaskKey,
    notify: Arc<Notify>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskKey, (Arc<Notify>, usize)>> {
        self.map.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn register(&self, key: TaskKey) -> Waiter<'_> {
        let mut map = self.lock();
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = entry.0.clone();
        Waiter {
            waiters: self,
            key,
            notify,
        }
    }

    fn signal(&self, issuer: &str, task_id: &str) {
        let map = self.lock();
        // Almost always: no retry is waiting, and no key need be built.
        if map.is_empty() {
            return;
        }
        if let Some((notify, _)) = map.get(&(issuer.to_string(), task_id.to_string())) {
            notify.notify_waiters();
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        if let Some(entry) = map.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.key);
            }
        }
    }
}
