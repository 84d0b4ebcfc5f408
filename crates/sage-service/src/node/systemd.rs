//! Running under systemd: the `sd_notify` protocol, the watchdog and
//! credentials, without libsystemd.
//!
//! - [`Notifier`] sends state changes (`READY=1`, `RELOADING=1`,
//!   `STOPPING=1`, `STATUS=...`, `WATCHDOG=1`), spelled by the `sd-notify`
//!   crate's [`NotifyState`], as datagrams to the socket named by
//!   `NOTIFY_SOCKET`: a filesystem path (`/run/systemd/notify`) or an
//!   abstract socket (`@name`). [`notifier`] is this process's, read once
//!   from the environment (which is left as it is), and [`ready`],
//!   [`reloading`], [`stopping`] and [`status`] send through it and do
//!   nothing outside systemd.
//! - [`watchdog_interval`] is `WATCHDOG_USEC` (when `WATCHDOG_PID` is unset
//!   or this process); [`watchdog_task`] pings at half of it.
//! - [`credential_identity`] loads the node's key from
//!   `$CREDENTIALS_DIRECTORY/sage.key`, where `LoadCredential=` puts it.
//!
//! A failure to notify is logged (at warn once, then at debug) and never
//! stops the node: systemd acts on a missing notification by itself
//! (start timeout, watchdog restart).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::keydir::{Identity, KeyDir};
use crate::KeyDirError;

/// The name of the node key's credential: `LoadCredential=sage.key:FILE`.
pub const KEY_CREDENTIAL: &str = "sage.key";

/// Sends notifications to the service manager's socket.
///
/// The socket is our own rather than `sd_notify::notify`'s: that one reads
/// `NOTIFY_SOCKET` at each call and connects to it as a path (no `@name`
/// abstract sockets), blocks on a full queue, and ends the datagram with a
/// newline, where ours carry exactly the assignments.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The socket as `NOTIFY_SOCKET` names it, for messages.
    name: String,
    /// Whether a failure to send was already logged at warn.
    warned: AtomicBool,
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET`, or `None` when it is unset or empty
    /// (not started by systemd, or `Type=` is not `notify`) or unusable
    /// (logged at warn). The variable stays set, as with `sd_notify(0, ...)`.
    pub fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty())?;
        match Notifier::at(&value) {
            Ok(notifier) => {
                tracing::debug!("systemd: notifying {}", notifier.name);
                Some(notifier)
            }
            Err(e) => {
                tracing::warn!(
                    "NOTIFY_SOCKET={}: {e}; systemd will not hear that the node is ready",
                    value.to_string_lossy()
                );
                None
            }
        }
    }

    /// A notifier sending to `socket`: an absolute path, or `@name` for the
    /// abstract socket `name` (Linux).
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] for any other form (systemd ≥ 254's
    /// `vsock:` addresses are not supported), or the error of creating the
    /// sending socket.
    pub fn at(socket: impl AsRef<OsStr>) -> io::Result<Notifier> {
        let socket = socket.as_ref();
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(Path::new(socket))?,
            Some(b'@') => abstract_addr(&bytes[1..])?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract socket name",
                ))
            }
        };
        let sender = UnixDatagram::unbound()?;
        // Never block the runtime on a full queue: a dropped notification
        // is logged, and the watchdog pings again soon.
        sender.set_nonblocking(true)?;
        Ok(Notifier {
            socket: sender,
            addr,
            name: socket.to_string_lossy().into_owned(),
            warned: AtomicBool::new(false),
        })
    }

    /// `READY=1`: start-up (or a reload) finished; `status` is what
    /// `systemctl status` shows.
    pub fn ready(&self, status: &str) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(&one_line(status)),
            NotifyState::MainPid(std::process::id()),
        ]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (the time of the request on
    /// `CLOCK_MONOTONIC`, as `Type=notify-reload` of systemd ≥ 253 wants):
    /// a reload started; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        let now = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        self.send(&[NotifyState::Reloading, now]);
    }

    /// `STOPPING=1`: shutdown started.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `STATUS=...`: a line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// `WATCHDOG=1`: the node is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends `states` as one datagram, one assignment a line; a failure is
    /// logged, never returned.
    fn send(&self, states: &[NotifyState<'_>]) {
        let message = states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            let first = message.lines().next().unwrap_or_default();
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!("cannot notify systemd at {} ({first}): {e}", self.name);
            } else {
                tracing::warn!(
                    "cannot notify systemd at {} ({first}): {e}; further failures are logged at debug",
                    self.name
                );
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// A status text as one line: a newline would start another assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// This process's notifier ([`Notifier::from_env`], read once), or `None`
/// outside systemd.
pub fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

/// [`Notifier::ready`] through [`notifier`]; nothing outside systemd.
pub fn ready(status: &str) {
    if let Some(notifier) = notifier() {
        notifier.ready(status);
    }
}

/// [`Notifier::reloading`] through [`notifier`]; nothing outside systemd.
/// Call [`ready`] when the reload is done (or failed and the old settings
/// stay).
pub fn reloading() {
    if let Some(notifier) = notifier() {
        notifier.reloading();
    }
}

/// [`Notifier::stopping`] through [`notifier`]; nothing outside systemd.
pub fn stopping() {
    if let Some(notifier) = notifier() {
        notifier.stopping();
    }
}

/// [`Notifier::status`] through [`notifier`]; nothing outside systemd.
pub fn status(status: &str) {
    if let Some(notifier) = notifier() {
        notifier.status(status);
    }
}

/// The watchdog timeout systemd set (`WatchdogSec=`, as `WATCHDOG_USEC`),
/// when it is meant for this process: `WATCHDOG_PID` unset or equal to our
/// pid. Ping at least every half of it ([`watchdog_task`] does).
///
/// Not `sd_notify::watchdog_enabled`, which takes `WATCHDOG_USEC=0` for a
/// zero interval (a ping a millisecond) and an unreadable `WATCHDOG_PID`
/// for ours.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` now and then every half of `timeout`, forever: spawn
/// it. It runs on the runtime, so a runtime that stops making progress
/// stops the pings, and systemd restarts the node.
pub async fn watchdog_task(notifier: &Notifier, timeout: Duration) {
    let period = (timeout / 2).max(Duration::from_millis(1));
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        notifier.watchdog();
    }
}

/// The node's identity with its key from the credential [`KEY_CREDENTIAL`]
/// in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`), when that
/// variable is set and the file exists; `None` otherwise (then load it from
/// the key directory). The LCT id still comes from `keys`.
///
/// # Errors
/// Those of [`KeyDir::load_identity_from`].
pub fn credential_identity(keys: &KeyDir, name: &str) -> Result<Option<Identity>, KeyDirError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|v| !v.is_empty());
    credential_identity_in(dir.map(PathBuf::from).as_deref(), keys, name)
}

fn credential_identity_in(
    dir: Option<&Path>,
    keys: &KeyDir,
    name: &str,
) -> Result<Option<Identity>, KeyDirError> {
    let Some(path) = dir.map(|d| d.join(KEY_CREDENTIAL)).filter(|p| p.exists()) else {
        return Ok(None);
    };
    let mut identity = keys.load_identity_from(name, &path)?;
    // systemd makes credential files 0400 in a directory only the service
    // can enter, and grants a service user that does not own them read
    // access with an ACL, whose mask shows in the group bits (0440): only
    // other-readable is loose here.
    identity.loose_mode = identity.loose_mode.filter(|mode| mode & 0o007 != 0);
    Ok(Some(identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// Now on `CLOCK_MONOTONIC`, in microseconds, as `MONOTONIC_USEC` has it.
    fn monotonic_usec() -> Option<u64> {
        match NotifyState::monotonic_usec_now().ok()? {
            NotifyState::MonotonicUsec(usec) => u64::try_from(usec).ok(),
            _ => None,
        }
    }

    fn receiver() -> (tempfile::TempDir, UnixDatagram, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, socket, path)
    }

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_the_exact_datagrams_to_a_path() {
        let (_dir, socket, path) = receiver();
        let notifier = Notifier::at(&path).unwrap();
        let pid = std::process::id();

        notifier.ready("serving on 127.0.0.1:50051");
        assert_eq!(
            recv(&socket),
            format!("READY=1\nSTATUS=serving on 127.0.0.1:50051\nMAINPID={pid}")
        );
        notifier.status("draining\n3 tasks");
        assert_eq!(recv(&socket), "STATUS=draining 3 tasks");
        notifier.watchdog();
        assert_eq!(recv(&socket), "WATCHDOG=1");
        notifier.stopping();
        assert_eq!(recv(&socket), "STOPPING=1");

        let before = monotonic_usec().unwrap();
        notifier.reloading();
        let after = monotonic_usec().unwrap();
        let message = recv(&socket);
        let usec: u64 = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{message:?}"))
            .parse()
            .unwrap();
        assert!(before <= usec && usec <= after, "{before} {usec} {after}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("sage-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::at(format!("@{name}")).unwrap();
        notifier.stopping();
        assert_eq!(recv(&socket), "STOPPING=1");
    }

    #[test]
    fn other_socket_forms_are_refused() {
        for bad in ["", "run/notify", "vsock:2:1234"] {
            let err = Notifier::at(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn a_missing_socket_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::at(dir.path().join("gone")).unwrap();
        notifier.ready("x");
        notifier.watchdog();
        assert!(notifier.warned.load(Ordering::Relaxed));
    }

    #[test]
    fn watchdog_is_for_us_only() {
        let d = |ms| Some(Duration::from_millis(ms));
        assert_eq!(parse_watchdog(Some("30000000"), None, 7), d(30_000));
        assert_eq!(parse_watchdog(Some("200000"), Some("7"), 7), d(200));
        assert_eq!(parse_watchdog(Some("200000"), Some(""), 7), d(200));
        assert_eq!(parse_watchdog(Some("200000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("200000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
    }

    #[tokio::test]
    async fn watchdog_pings_at_half_the_timeout() {
        let (_dir, socket, path) = receiver();
        let notifier = Notifier::at(&path).unwrap();
        // 40 ms timeout: pings at 0, 20, 40, ... ms.
        let pinging = watchdog_task(&notifier, Duration::from_millis(40));
        let _ = tokio::time::timeout(Duration::from_millis(150), pinging).await;
        let mut pings = 0;
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(n) = socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            pings += 1;
        }
        // About 8; a busy machine may delay some, never burst them.
        assert!((3..=9).contains(&pings), "{pings} pings");
    }

    #[test]
    fn the_key_comes_from_the_credential_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path().join("keys"));
        keys.generate("Thor", Some("thor_lab_lct"), false).unwrap();
        let creds = dir.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();

        // No directory, or no credential in it: the key directory's key.
        assert!(credential_identity_in(None, &keys, "Thor")
            .unwrap()
            .is_none());
        assert!(credential_identity_in(Some(&creds), &keys, "Thor")
            .unwrap()
            .is_none());

        let other = KeyDir::new(dir.path().join("other"));
        let made = other.generate("Thor", None, false).unwrap();
        let path = creds.join(KEY_CREDENTIAL);
        std::fs::copy(&made.key_path, &path).unwrap();
        for (mode, loose) in [(0o400, None), (0o440, None), (0o444, Some(0o444))] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let identity = credential_identity_in(Some(&creds), &keys, "thor")
                .unwrap()
                .unwrap();
            assert_eq!(identity.key.public(), made.key.public());
            assert_eq!(identity.name, "Thor");
            assert_eq!(identity.lct_id, "thor_lab_lct");
            assert_eq!(identity.key_path, path);
            assert_eq!(identity.loose_mode, loose, "mode {mode:o}");
        }

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, [1u8; 40]).unwrap();
        let err = credential_identity_in(Some(&creds), &keys, "Thor").unwrap_err();
        assert!(
            matches!(err, KeyDirError::Corrupt { size: 40, .. }),
            "{err}"
        );
    }
}
