//! Syncing the write-ahead log apart from the commit: the durable record
//! of a task whose run may overlap with its way to the disk.
//!
//! A task whose executor is pure (running it twice is harmless) may start
//! before its record is on the disk, as long as nothing is answered until
//! it is: a power cut in between loses a record whose task was never
//! answered, and a retry runs it again, which changes nothing. Such a
//! record is committed without a sync, and its sync is asked of a
//! [`Syncer`], which runs `fdatasync` of the log on a blocking thread
//! while the caller goes on: the syncs of callers that ask meanwhile are
//! one, the next, since one sync covers every commit before it.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::StoreError;

/// How far the log is known to be on the disk, in tickets.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every ticket up to this one is synced.
    synced: u64,
    /// The last failed sync, and the highest ticket it was to cover.
    failed: Option<(u64, Arc<std::io::Error>)>,
}

#[derive(Debug, Default)]
struct State {
    /// The last ticket handed out.
    issued: u64,
    /// A sync is running (it will look at `issued` again when done).
    running: bool,
    /// The log, once opened.
    file: Option<Arc<File>>,
}

/// The syncs of the log asked for apart from commits.
#[derive(Debug)]
pub(super) struct Syncer {
    /// The database file, for errors.
    db: PathBuf,
    /// The log (`sage.db-wal`).
    log: PathBuf,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
}

/// A sync asked for: [`Synced::wait`] returns once it is done.
#[derive(Debug)]
pub struct Synced {
    wait: Option<(u64, watch::Receiver<Progress>, PathBuf)>,
}

impl Synced {
    /// Nothing to wait for: the commit was synced already, or need not be.
    pub fn done() -> Synced {
        Synced { wait: None }
    }

    /// Whether there is a sync to wait for.
    #[cfg(test)]
    pub(super) fn pending(&self) -> bool {
        self.wait.is_some()
    }

    /// Waits until the commit this was asked after is on the disk.
    ///
    /// # Errors
    /// [`StoreError::Sync`] when the sync failed: the commit may be lost at
    /// a power cut.
    pub async fn wait(self) -> Result<(), StoreError> {
        let Some((ticket, mut progress, db)) = self.wait else {
            return Ok(());
        };
        let seen = progress
            .wait_for(|p| p.synced >= ticket || p.failed.as_ref().is_some_and(|f| f.0 >= ticket))
            .await
            .map(|p| p.clone());
        match seen {
            Ok(p) if p.synced >= ticket => Ok(()),
            Ok(Progress {
                failed: Some((_, source)),
                ..
            }) => Err(StoreError::Sync { path: db, source }),
            // The syncer is gone with the store: nothing says it synced.
            _ => Err(StoreError::Closed { path: db }),
        }
    }
}

impl Syncer {
    /// The syncer of the log of the database at `db`.
    pub(super) fn new(db: PathBuf) -> Arc<Syncer> {
        let mut log = db.as_os_str().to_owned();
        log.push("-wal");
        Arc::new(Syncer {
            db,
            log: log.into(),
            state: Mutex::new(State::default()),
            progress: watch::Sender::new(Progress::default()),
        })
    }

    /// Every ticket up to this one is synced.
    #[cfg(test)]
    pub(super) fn synced(&self) -> u64 {
        self.progress.borrow().synced
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Asks for a sync of everything committed so far, and starts one on a
    /// blocking thread unless one runs (which then runs again for this
    /// ticket). Outside a tokio runtime, syncs here and now.
    pub(super) fn request(self: &Arc<Self>) -> Synced {
        let mut state = self.lock();
        state.issued += 1;
        let ticket = state.issued;
        let start = !state.running;
        state.running = true;
        drop(state);
        let synced = Synced {
            wait: Some((ticket, self.progress.subscribe(), self.db.clone())),
        };
        if start {
            let syncer = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || syncer.run());
                }
                Err(_) => syncer.run(),
            }
        }
        synced
    }

    /// Syncs until no ticket is left uncovered.
    fn run(&self) {
        // The highest ticket answered, by a sync or by a failed one.
        let mut answered = {
            let progress = self.progress.borrow();
            progress
                .synced
                .max(progress.failed.as_ref().map_or(0, |f| f.0))
        };
        loop {
            let (target, file) = {
                let mut state = self.lock();
                if state.issued <= answered {
                    state.running = false;
                    return;
                }
                (state.issued, state.file.clone())
            };
            let outcome = match file {
                Some(file) => file.sync_data(),
                None => File::open(&self.log).and_then(|file| {
                    file.sync_data()?;
                    self.lock().file = Some(Arc::new(file));
                    Ok(())
                }),
            };
            // A failure answers its waiters with the error; tickets issued
            // meanwhile get a sync of their own, tried again.
            self.progress.send_modify(|p| match outcome {
                Ok(()) => p.synced = target,
                Err(error) => p.failed = Some((target, Arc::new(error))),
            });
            answered = target;
        }
    }
}
