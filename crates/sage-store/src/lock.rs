//! One node per state directory: the exclusive lock a serving node holds on
//! `<state_dir>/sage.lock` for as long as it lives.
//!
//! A second node on the same directory would mark the first one's running
//! tasks interrupted and kill their programs at its start. The lock is an
//! `flock(2)`, so the kernel releases it when the process ends, however it
//! ends (a `kill -9` included): a stale lock file never keeps a node out.
//! The holder's pid is written into the file, so that the refusal can name
//! it. Short commands (`delegate`, `proofs`, `peer list`) do not take it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "sage.lock";

/// The exclusive lock on a state directory, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    _file: Flock<File>,
}

impl StateLock {
    /// Takes the lock on `state_dir` (creating the directory, mode 0700,
    /// and the lock file if missing), without waiting.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process holds it, naming that
    /// process; [`StoreError::Lock`] when the file cannot be opened or
    /// locked.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, StoreError> {
        super::create_dir(state_dir)?;
        let path = state_dir.join(LOCK_FILE);
        let failed = |source: std::io::Error| StoreError::Lock {
            path: path.clone(),
            source: Arc::new(source),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        let mut file = file;
        let started = std::time::Instant::now();
        let mut file = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => break locked,
                Err((mut held, Errno::EWOULDBLOCK)) => {
                    let pid = holder(&mut held);
                    // A holder that has died leaves the lock with a child
                    // it forked an instant before (a program between fork
                    // and exec still has the node's files): it is gone in
                    // a moment. A live holder is another node: refused at
                    // once.
                    if pid.is_some_and(|pid| !alive(pid)) && started.elapsed() < DEAD_HOLDER_GRACE {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        held.rewind().map_err(failed)?;
                        file = held;
                        continue;
                    }
                    return Err(StoreError::Locked {
                        dir: state_dir.to_path_buf(),
                        pid,
                    });
                }
                Err((_, errno)) => return Err(failed(std::io::Error::from(errno))),
            }
        };
        // Ours now: say who holds it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(*file, "{}", std::process::id()))
            .map_err(failed)?;
        Ok(StateLock {
            dir: state_dir.to_path_buf(),
            _file: file,
        })
    }

    /// The locked state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How long a lock whose recorded holder has died is waited for.
const DEAD_HOLDER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether process `pid` exists (signal 0 checks without sending).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// The pid the holder wrote into the lock file, if it did already.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    // A pid is a few digits: a longer file is not one.
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_left_by_a_dead_holder_is_waited_for_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        // The file names a process that has ended, as after a node killed
        // while a child it forked still held the lock for an instant.
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let dead = ended.id();
        ended.wait().unwrap();
        std::fs::write(state.join(LOCK_FILE), format!("{dead}\n")).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = StateLock::acquire(&state).expect("taken once released");
        release.join().unwrap();
        let text = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(second);
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_with_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        assert_eq!(first.dir(), state);
        match StateLock::acquire(&state) {
            Err(StoreError::Locked { dir, pid }) => {
                assert_eq!(dir, state);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let refusal = StateLock::acquire(&state).unwrap_err().to_string();
        assert!(
            refusal.contains(&format!("pid {}", std::process::id())),
            "{refusal}"
        );
        drop(first);
        StateLock::acquire(&state).expect("free again once the holder is gone");
    }

    #[test]
    fn a_lock_file_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the lock file goes: not openable for writing,
        // whoever runs the test (root included).
        std::fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
        let refusal = StateLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(refusal, StoreError::Lock { .. }), "{refusal:?}");
        let shown = refusal.to_string();
        assert!(
            shown.starts_with(&format!(
                "cannot lock {}",
                dir.path().join(LOCK_FILE).display()
            )),
            "{shown}"
        );
    }
}
