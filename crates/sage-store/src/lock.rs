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
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::Locked {
                    dir: state_dir.to_path_buf(),
                    pid: holder(&mut file),
                })
            }
            Err((_, errno)) => return Err(failed(std::io::Error::from(errno))),
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
