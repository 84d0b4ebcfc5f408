//! Programs that a killed node left running.
//!
//! While a program runs, a file named for its process group (in
//! `<state_dir>/programs/`) holds a `Stamp` of the group's leader and
//! one of the node that owns it (boot id, pid, start time in clock ticks
//! since boot); the next start kills each group whose leader `/proc`
//! still shows with the same stamp, and leaves alone the groups of an
//! owner still alive. Why, and what an operator sees, is
//! in the [crate documentation](crate) (`docs/executors.md`, "Programs
//! left after a crash").

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Where the records are kept, and who keeps them.
#[derive(Debug, Clone)]
pub struct Leftovers {
    dir: PathBuf,
    /// This process; `None` without `/proc`, and then nothing is recorded.
    owner: Option<Stamp>,
}

/// A process as this boot knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    boot: String,
    pid: i32,
    start_ticks: u64,
}

impl Stamp {
    /// Process `pid` now, if it exists.
    fn of(pid: i32) -> Option<Stamp> {
        Stamp::in_boot(boot_id()?, pid)
    }

    /// Process `pid` of the boot `boot` (this one).
    fn in_boot(boot: String, pid: i32) -> Option<Stamp> {
        Some(Stamp {
            boot,
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    fn to_line(&self) -> String {
        format!("{} {} {}", self.boot, self.pid, self.start_ticks)
    }

    fn parse(text: &str) -> Option<Stamp> {
        let mut words = text.split_whitespace();
        let stamp = Stamp {
            boot: words.next()?.to_owned(),
            pid: words.next()?.parse().ok()?,
            start_ticks: words.next()?.parse().ok()?,
        };
        Some(stamp)
    }

    /// Still the same process: same boot, same pid, same start.
    fn alive(&self) -> bool {
        Stamp::of(self.pid).as_ref() == Some(self)
    }
}

/// The record of one running program's group; removed when dropped.
#[derive(Debug)]
pub(crate) struct Record {
    path: PathBuf,
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Leftovers {
    /// Records kept in `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let owner = i32::try_from(std::process::id()).ok().and_then(Stamp::of);
        Leftovers {
            dir: dir.into(),
            owner,
        }
    }

    /// The directory of the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the group `pgid`, whose leader was just started; `None` if
    /// it cannot (no `/proc`, a read-only state directory): the program
    /// runs anyway, and is only not found after a kill.
    pub(crate) fn record(&self, pgid: i32) -> Option<Record> {
        let owner = self.owner.as_ref()?;
        let leader = Stamp::in_boot(owner.boot.clone(), pgid)?;
        let path = self.dir.join(pgid.to_string());
        let text = format!("{}\n{}\n", leader.to_line(), owner.to_line());
        match write_record(&self.dir, &path, &text) {
            Ok(()) => Some(Record { path }),
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "cannot record a command's process group");
                None
            }
        }
    }

    /// At start: kills every recorded group whose leader is still the
    /// process that was recorded and whose node is gone, and forgets every
    /// record of a node that is gone. Returns the groups killed.
    ///
    /// # Errors
    /// The directory cannot be read (a missing one is not an error).
    pub fn kill_left(&self) -> io::Result<Vec<i32>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut killed = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let text = fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines().map(Stamp::parse);
            let (leader, owner) = match (lines.next().flatten(), lines.next().flatten()) {
                (Some(leader), Some(owner)) => (leader, owner),
                // Cut short by the kill, or not ours: nothing to verify.
                _ => {
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            if owner.alive() {
                continue; // Another node on this state directory runs it.
            }
            if leader.alive() {
                match killpg(Pid::from_raw(leader.pid), Signal::SIGKILL) {
                    Ok(()) => killed.push(leader.pid),
                    Err(Errno::ESRCH) => {}
                    Err(error) => {
                        tracing::warn!(pgid = leader.pid, %error, "cannot kill a command's process group");
                    }
                }
            }
            let _ = fs::remove_file(&path);
        }
        Ok(killed)
    }
}

fn write_record(dir: &Path, path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // No sync: the record only has to outlive this process, not the
    // machine (a power cut stops the program too).
    fs::write(path, text)
}

/// This boot's id: a start time only means something within one boot.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`,
/// field 22).
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything:
    // the fields after it start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` begins with field 3; field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    use std::process::{Child, Command};

    fn sleeper() -> (Child, i32) {
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        (child, pgid)
    }

    /// What a record left by a node that is gone looks like.
    fn record_of_gone_node(dir: &Path, pgid: i32, leader: &Stamp) {
        let gone = Stamp {
            pid: i32::MAX,
            ..leader.clone()
        };
        fs::create_dir_all(dir).unwrap();
        let text = format!("{}\n{}\n", leader.to_line(), gone.to_line());
        fs::write(dir.join(pgid.to_string()), text).unwrap();
    }

    #[test]
    fn a_record_lasts_as_long_as_its_program_and_names_a_live_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let leftovers = Leftovers::new(tmp.path().join("programs"));
        let (mut child, pgid) = sleeper();
        let record = leftovers.record(pgid).expect("recorded");
        let path = leftovers.dir().join(pgid.to_string());
        assert!(path.exists());
        // Its owner (this process) is alive: a start now leaves it alone.
        assert_eq!(leftovers.kill_left().unwrap(), Vec::<i32>::new());
        assert!(path.exists());
        drop(record);
        assert!(!path.exists(), "removed once the program is done");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_group_of_a_gone_node_is_killed_if_its_leader_is_the_one_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("programs");
        let (mut child, pgid) = sleeper();
        let leader = Stamp::of(pgid).unwrap();
        record_of_gone_node(&dir, pgid, &leader);

        let killed = Leftovers::new(&dir).kill_left().unwrap();
        assert_eq!(killed, vec![pgid]);
        assert_eq!(child.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "record forgotten");
    }

    #[test]
    fn a_group_whose_leader_is_another_process_now_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("programs");
        let (mut child, pgid) = sleeper();
        let mut leader = Stamp::of(pgid).unwrap();
        // The recorded leader started earlier: this pid was reused.
        leader.start_ticks -= 1;
        record_of_gone_node(&dir, pgid, &leader);
        // And a record from another boot, and a torn one.
        let other_boot = Stamp {
            boot: "00000000-0000-0000-0000-000000000000".into(),
            ..Stamp::of(pgid).unwrap()
        };
        record_of_gone_node(&dir, pgid + 1, &other_boot);
        fs::write(dir.join("torn"), "abc").unwrap();

        assert_eq!(Leftovers::new(&dir).kill_left().unwrap(), Vec::<i32>::new());
        assert_eq!(child.try_wait().unwrap(), None, "still running");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "records forgotten");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn no_directory_means_nothing_left() {
        let tmp = tempfile::tempdir().unwrap();
        let leftovers = Leftovers::new(tmp.path().join("none"));
        assert_eq!(leftovers.kill_left().unwrap(), Vec::<i32>::new());
    }
}
