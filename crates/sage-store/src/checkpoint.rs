//! The checkpointer thread: copies the write-ahead log into the database
//! file, and waits for the disk, off the database thread.
//!
//! A checkpoint syncs the log, copies its pages into the database and syncs
//! the database: with `synchronous = NORMAL` these are the only fsyncs, and
//! when the database thread ran them itself (SQLite's automatic checkpoint)
//! every request waited on them, tens of milliseconds a few times a second
//! under load. Here a second connection does that work in the background
//! (a `PASSIVE` checkpoint never blocks the writer), each time the
//! database thread reports [`COMMITS_PER_CHECKPOINT`] more commits. The
//! writer keeps SQLite's automatic checkpoint as the backstop that lets the
//! log start over from its beginning: by the time it runs, the background
//! has copied and synced nearly everything, so it has a few pages left.
//!
//! The log starts over only when a write begins while every page of it is
//! in the database; under unbroken load that moment can be missed again and
//! again. Past [`RESTART_FRAMES`] the thread therefore makes it happen: a
//! `RESTART` checkpoint holds the writer back while it copies the rest.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Commits of the database thread between two background checkpoints:
/// with a few pages per commit, well under 1 MB of log.
pub(super) const COMMITS_PER_CHECKPOINT: u32 = 64;

/// Pages in the log (about 64 MB) past which the next checkpoint makes the
/// log start over, holding the writer back for as long as that takes.
pub(super) const RESTART_FRAMES: i64 = 16_000;

/// How long a `RESTART` checkpoint waits for the writer's transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The database thread's handle on the checkpointer.
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    thread: JoinHandle<()>,
    commits: u32,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .and_then(|conn| {
                // NORMAL syncs the log before a checkpoint and the database
                // after it: what keeps the file sound at a power cut.
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(conn)
            })
            .map_err(|e| StoreError::from_sqlite(path, e))?;
        let (wake, woken) = mpsc::sync_channel(1);
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("sage-checkpoint".to_string())
            .spawn(move || run(&conn, &owned, &woken))
            .map_err(|e| StoreError::Spawn {
                path: path.to_path_buf(),
                source: std::sync::Arc::new(e),
            })?;
        Ok(Checkpointer {
            wake,
            thread,
            commits: 0,
        })
    }

    /// Counts a commit; every [`COMMITS_PER_CHECKPOINT`], wakes the thread
    /// (unless a wake is pending already: it never blocks).
    pub(super) fn committed(&mut self) {
        self.commits += 1;
        if self.commits >= COMMITS_PER_CHECKPOINT {
            self.commits = 0;
            // Full: a wake is pending, which covers this one. Disconnected:
            // the thread is gone (it only stops when told to).
            let _ = self.wake.try_send(());
        }
    }

    /// Stops the thread and waits until its connection is closed, so that
    /// the database thread's connection is the last one (whose close
    /// checkpoints everything and removes the log).
    pub(super) fn stop(self) {
        drop(self.wake);
        let _ = self.thread.join();
    }
}

fn run(conn: &Connection, path: &Path, woken: &Receiver<()>) {
    let mut log_frames = 0;
    while woken.recv().is_ok() {
        let sql = if log_frames >= RESTART_FRAMES {
            "PRAGMA wal_checkpoint(RESTART)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        // (busy, pages in the log, pages of it now in the database); -1
        // when the database has no log (it could not use WAL mode).
        match conn.query_row(sql, [], |row| row.get::<_, i64>(1)) {
            Ok(frames) => log_frames = frames,
            Err(error) => {
                // The writer's own checkpoint still runs: nothing is lost,
                // the log only grows until it does.
                tracing::warn!(path = %path.display(), %error, "background checkpoint failed; the database thread checkpoints instead");
            }
        }
    }
}
