//! The key directory: this node's key file, other platforms' key files and
//! `peers.toml`, and the trust store built from them.
//!
//! Layout (compatible with the Python original's `sage/data/keys/`):
//! - `Name_ed25519.key`: 32 bytes of seed (Python original) or 64 bytes of
//!   seed and public key (`sage keygen`), mode 0600;
//! - `Name_ed25519.lct`: optional, the platform's LCT id when it is not the
//!   default `name_sage_lct`;
//! - `peers.toml`: peers added with `sage peer add` (see [`crate::peers_file`]).
//!
//! Each of these files is looked at before it is read: one that is not a
//! regular file (a FIFO, a device, a socket, a directory) or is larger
//! than its kind can be is refused, naming it, and is never read. A
//! symbolic link to a regular file is followed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sage_crypto::{NodeKey, Peer, PeerSource, PublicKey, TrustError, TrustStore};
use sage_types::identity::{check_lct_id, is_valid_name};

use crate::files::{loose_mode, read_checked, write_atomically, Checked};
pub use crate::files::{FileKind, KeyDirFile};
use crate::peers_file::{AddOutcome, PeerRecord, PeersFile};
use crate::KeyDirError;

const KEY_SUFFIX: &str = "_ed25519.key";
const LCT_SUFFIX: &str = "_ed25519.lct";
const PEERS_FILE: &str = "peers.toml";

/// The largest key file read, in bytes. A key file is 32 or 64 bytes; the
/// bound keeps a wrong file (a disk image, a log) from being read whole
/// into memory, while one near a key's size (a PEM key, a hex dump) is
/// still read and reported as corrupt with its size.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// The largest `.lct` file read: it holds one LCT id, a short line; the
/// key file's bound is ample.
const MAX_LCT_FILE_BYTES: u64 = MAX_KEY_FILE_BYTES;

/// A key directory on disk.
#[derive(Debug, Clone)]
pub struct KeyDir {
    root: PathBuf,
    peers: Option<PathBuf>,
}

/// This node's identity: name, LCT id and private key.
#[derive(Debug)]
pub struct Identity {
    /// Platform name as written in the key file's name.
    pub name: String,
    /// LCT id.
    pub lct_id: String,
    /// The private key, shared (never copied) between the node that signs
    /// proofs with it and the delegations it signs.
    pub key: Arc<NodeKey>,
    /// The key file.
    pub key_path: PathBuf,
    /// The file's permission bits when group or others may read it.
    pub loose_mode: Option<u32>,
}

impl KeyDir {
    /// The key directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        KeyDir {
            root: root.into(),
            peers: None,
        }
    }

    /// The same directory with its peers file elsewhere.
    pub fn with_peers_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.peers = Some(path.into());
        self
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Where `peers.toml` lives.
    pub fn peers_file(&self) -> PathBuf {
        self.peers
            .clone()
            .unwrap_or_else(|| self.root.join(PEERS_FILE))
    }

    /// Where `keygen` writes the key of `name`.
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}{KEY_SUFFIX}"))
    }

    /// The key files in the directory, as (platform name, path), sorted.
    ///
    /// # Errors
    /// [`KeyDirError::Read`] when the directory cannot be listed (a missing
    /// directory has no key files).
    pub fn key_files(&self) -> Result<Vec<(String, PathBuf)>, KeyDirError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(KeyDirError::Read {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut found: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let file_name = entry.file_name().into_string().ok()?;
                let name = file_name.strip_suffix(KEY_SUFFIX)?;
                is_valid_name(name).then(|| (name.to_owned(), entry.path()))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The key file of `name`, matched ignoring case (`thor` finds
    /// `Thor_ed25519.key`), with the name as the file spells it.
    fn find_key_file(&self, name: &str) -> Result<(String, PathBuf), KeyDirError> {
        check_name(name)?;
        let exact = self.key_path(name);
        if exact.exists() {
            return Ok((name.to_owned(), exact));
        }
        self.key_files()?
            .into_iter()
            .find(|(found, _)| found.eq_ignore_ascii_case(name))
            .ok_or_else(|| KeyDirError::NotFound {
                name: name.to_owned(),
                dir: self.root.display().to_string(),
                expected: exact.display().to_string(),
            })
    }

    /// Loads the identity of platform `name`.
    ///
    /// # Errors
    /// [`KeyDirError::NotFound`], [`KeyDirError::NotAFile`],
    /// [`KeyDirError::TooLarge`], [`KeyDirError::Unreadable`] or
    /// [`KeyDirError::Corrupt`], each naming the file.
    pub fn load_identity(&self, name: &str) -> Result<Identity, KeyDirError> {
        let (name, path) = self.find_key_file(name)?;
        let (key, loose_mode) = read_key_file(&name, &path)?;
        Ok(Identity {
            lct_id: self.lct_of(&name)?,
            loose_mode,
            key_path: path,
            key: Arc::new(key),
            name,
        })
    }

    /// Loads the identity of platform `name` with its private key read from
    /// `key_path` instead of the directory (a systemd credential, see
    /// [`crate::node::systemd::credential_identity`]). The name is spelled as the
    /// directory's key file spells it, if it has one; the LCT id comes from
    /// the directory as for [`KeyDir::load_identity`].
    ///
    /// # Errors
    /// [`KeyDirError::InvalidName`], [`KeyDirError::NotAFile`],
    /// [`KeyDirError::TooLarge`], [`KeyDirError::Unreadable`] or
    /// [`KeyDirError::Corrupt`] (naming `key_path`), or a `.lct` file that
    /// cannot be read.
    pub fn load_identity_from(&self, name: &str, key_path: &Path) -> Result<Identity, KeyDirError> {
        let name = match self.find_key_file(name) {
            Ok((spelled, _)) => spelled,
            Err(KeyDirError::NotFound { .. }) => name.to_owned(),
            Err(e) => return Err(e),
        };
        let (key, loose_mode) = read_key_file(&name, key_path)?;
        Ok(Identity {
            lct_id: self.lct_of(&name)?,
            loose_mode,
            key_path: key_path.to_owned(),
            key: Arc::new(key),
            name,
        })
    }

    /// Makes a new key for `name` (mode 0600), refusing to replace an
    /// existing one unless `force`. Records `lct_id` when it is not the
    /// default.
    ///
    /// # Errors
    /// [`KeyDirError::Exists`], [`KeyDirError::InvalidName`],
    /// [`KeyDirError::LctId`] or [`KeyDirError::Write`].
    pub fn generate(
        &self,
        name: &str,
        lct_id: Option<&str>,
        force: bool,
    ) -> Result<Identity, KeyDirError> {
        check_name(name)?;
        if let Some(lct_id) = lct_id {
            check_lct_id(lct_id)?;
        }
        let path = self.key_path(name);
        if !force {
            // Another spelling of the same platform would shadow this one.
            if let Ok((_, existing)) = self.find_key_file(name) {
                return Err(KeyDirError::Exists { path: existing });
            }
        }
        let key = NodeKey::generate();
        write_atomically(&path, &key.to_key_file()[..], 0o600, force)?;

        let default = sage_types::default_lct_id(name);
        let lct_id = lct_id.unwrap_or(&default).to_owned();
        let lct_path = self.root.join(format!("{name}{LCT_SUFFIX}"));
        if lct_id != default {
            write_atomically(&lct_path, format!("{lct_id}\n").as_bytes(), 0o644, true)?;
        } else if lct_path.exists() {
            fs::remove_file(&lct_path).map_err(|source| KeyDirError::Write {
                path: lct_path,
                source,
            })?;
        }
        Ok(Identity {
            name: name.to_owned(),
            lct_id,
            key: Arc::new(key),
            key_path: path,
            loose_mode: None,
        })
    }

    /// The LCT id of `name`: the `.lct` file's content, else the default.
    fn lct_of(&self, name: &str) -> Result<String, KeyDirError> {
        let path = self.root.join(format!("{name}{LCT_SUFFIX}"));
        let text = match read_checked(&path, KeyDirFile::Lct, MAX_LCT_FILE_BYTES) {
            Ok((bytes, _)) => String::from_utf8(bytes.to_vec()).map_err(|e| KeyDirError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(Checked::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(Checked::Io(source)) => return Err(KeyDirError::Read { path, source }),
            Err(Checked::Refused(e)) => return Err(e),
        };
        match text.trim() {
            "" => Ok(sage_types::default_lct_id(name)),
            lct_id => {
                check_lct_id(lct_id).map_err(|source| KeyDirError::RecordedLctId {
                    path,
                    name: name.to_owned(),
                    source,
                })?;
                Ok(lct_id.to_owned())
            }
        }
    }

    /// The trust store of a node named `local`: the records of `peers.toml`
    /// and, for testing setups (method 1 of the Python original's
    /// deployment guide), every other platform's key file in the directory
    /// (public half only).
    ///
    /// # Errors
    /// A bad peers file or key file, or sources that disagree on a key.
    pub fn trust_store(&self, local: &str) -> Result<TrustStore, KeyDirError> {
        let peers_path = self.peers_file();
        let file = PeersFile::load(&peers_path)?;
        self.build_trust(&file, &peers_path, local, Err)
    }

    /// The trust store of `file` (at `peers_path`) and the directory's key
    /// files, without `local`'s; `refused` decides what a peer that cannot
    /// join does: stop with an error, or leave it out.
    fn build_trust(
        &self,
        file: &PeersFile,
        peers_path: &Path,
        local: &str,
        mut refused: impl FnMut(TrustError) -> Result<(), TrustError>,
    ) -> Result<TrustStore, KeyDirError> {
        let mut store = TrustStore::default();
        for record in &file.peers {
            if record.name.eq_ignore_ascii_case(local) {
                continue;
            }
            if let Err(error) = store.insert(record.to_peer(peers_path)?) {
                refused(error)?;
            }
        }
        for (name, path) in self.key_files()? {
            if name.eq_ignore_ascii_case(local) {
                continue;
            }
            let public = read_key_file(&name, &path)?.0.public();
            let mut peer = Peer::new(&name, public, PeerSource::KeyFile(path));
            peer.lct_id = self.lct_of(&name)?;
            if let Err(error) = store.insert(peer) {
                refused(error)?;
            }
        }
        Ok(store)
    }

    /// Adds `record` to the peers file, or replaces the record of its name
    /// (see [`PeersFile::add`]), once it passes the checks `serve` makes of
    /// the peers it loads, with the same errors: the record itself (its
    /// name, LCT id, key, TLS settings), and that no other peer of the
    /// directory, recorded or a key file, claims its LCT id or its key.
    /// Other platforms' conflicts are not this record's and are left to
    /// `serve` to report. A refused record leaves the file unchanged.
    ///
    /// # Errors
    /// [`KeyDirError::PeersFile`] or [`KeyDirError::RecordedLctId`] for a
    /// bad record, [`KeyDirError::PeerExists`] (see [`PeersFile::add`]),
    /// [`KeyDirError::Trust`] for a claim another peer holds, or an error
    /// reading or writing the directory.
    pub fn add_peer(&self, record: PeerRecord, replace: bool) -> Result<AddOutcome, KeyDirError> {
        let path = self.peers_file();
        let mut file = PeersFile::load(&path)?;
        record.to_peer(&path)?;
        let name = record.name.clone();
        let outcome = file.add(record, replace)?;
        // Every platform counts, this node's own key file too: a peer that
        // claims this node's LCT id or key is refused as well.
        self.build_trust(&file, &path, "", |error| {
            if concerns(&error, &name) {
                Err(error)
            } else {
                Ok(())
            }
        })?;
        file.save(&path)?;
        Ok(outcome)
    }
}

/// The public key of platform `name` as a one-off trust store entry.
pub fn given_peer(name: &str, lct_id: Option<&str>, key: PublicKey) -> Peer {
    let mut peer = Peer::new(name, key, PeerSource::Given);
    if let Some(lct) = lct_id {
        peer.lct_id = lct.to_owned();
    }
    peer
}

/// Whether `error` is about the platform `name`.
fn concerns(error: &TrustError, name: &str) -> bool {
    match error {
        TrustError::ConflictingKeys { name: known, .. } => known.eq_ignore_ascii_case(name),
        TrustError::Ambiguous { first, second, .. } => {
            first.eq_ignore_ascii_case(name) || second.eq_ignore_ascii_case(name)
        }
        _ => true,
    }
}

fn check_name(name: &str) -> Result<(), KeyDirError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(KeyDirError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// The key in the key file at `path`, and the file's permission bits when
/// group or others may read it.
fn read_key_file(name: &str, path: &Path) -> Result<(NodeKey, Option<u32>), KeyDirError> {
    let (bytes, metadata) =
        read_checked(path, KeyDirFile::Key, MAX_KEY_FILE_BYTES).map_err(|e| match e {
            Checked::Io(source) => KeyDirError::Unreadable {
                path: path.to_owned(),
                source,
            },
            Checked::Refused(e) => e,
        })?;
    let key = NodeKey::from_key_file(&bytes).map_err(|source| KeyDirError::Corrupt {
        path: path.to_owned(),
        size: bytes.len(),
        name: name.to_owned(),
        source,
    })?;
    Ok((key, loose_mode(&metadata)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::open_checked;
    use crate::peers_file::MAX_PEERS_FILE_BYTES;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn keygen_writes_a_private_64_byte_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path().join("keys"));
        let made = keys.generate("Thor", None, false).unwrap();
        let bytes = fs::read(&made.key_path).unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(&bytes[32..], made.key.public().as_bytes());
        let mode = fs::metadata(&made.key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let err = keys.generate("thor", None, false).unwrap_err();
        assert!(matches!(err, KeyDirError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&made.key_path).unwrap(), bytes);

        let again = keys.generate("Thor", None, true).unwrap();
        assert_ne!(again.key.public(), made.key.public());
        let loaded = keys.load_identity("THOR").unwrap();
        assert_eq!(loaded.name, "Thor");
        assert_eq!(loaded.lct_id, "thor_sage_lct");
        assert_eq!(loaded.key.public(), again.key.public());
        assert_eq!(loaded.loose_mode, None);
    }

    #[test]
    fn custom_lct_ids_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        keys.generate("Legion", Some("legion_rtx4090_lct"), false)
            .unwrap();
        keys.generate("Thor", None, false).unwrap();
        assert_eq!(
            keys.load_identity("Legion").unwrap().lct_id,
            "legion_rtx4090_lct"
        );
        let store = keys.trust_store("Thor").unwrap();
        assert_eq!(store.find("legion").unwrap().lct_id, "legion_rtx4090_lct");
    }

    #[test]
    fn bad_key_files_name_the_file_and_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let path = keys.key_path("Thor");
        fs::write(&path, [1u8; 40]).unwrap();
        let err = keys.load_identity("Thor").unwrap_err().to_string();
        assert!(
            err.contains("Thor_ed25519.key") && err.contains("40 bytes"),
            "{err}"
        );

        let mut full = [0u8; 64];
        full[..32].copy_from_slice(&[9u8; 32]);
        fs::write(&path, full).unwrap();
        let err = keys.load_identity("Thor").unwrap_err();
        assert!(
            matches!(
                err,
                KeyDirError::Corrupt {
                    size: 64,
                    source: sage_crypto::KeyFileError::PublicHalfMismatch,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Runs `f` on another thread and fails the test if it takes more than
    /// 10 s: a read that blocks on a FIFO must show as a failure, not hang
    /// the test run.
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the key directory read blocked")
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn files_that_are_not_regular_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let path = keys.key_path("Thor");
        let refused = |keys: &KeyDir| {
            let keys = keys.clone();
            promptly(move || keys.load_identity("Thor").unwrap_err())
        };

        fs::create_dir(&path).unwrap();
        let err = refused(&keys);
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    kind: FileKind::Directory,
                    role: KeyDirFile::Key,
                    ..
                }
            ),
            "{err}"
        );
        fs::remove_dir(&path).unwrap();

        mkfifo(&path);
        let err = refused(&keys);
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "key file {} is a FIFO (named pipe), not a regular file",
                path.display()
            )
        );
        // Nothing about permissions: they are not the problem.
        assert!(!message.contains("chmod"), "{message}");
        fs::remove_file(&path).unwrap();

        // Followed, a link to a device is the device.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = refused(&keys);
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    kind: FileKind::CharDevice,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        fs::remove_file(&path).unwrap();

        let socket = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = refused(&keys);
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    kind: FileKind::Socket,
                    ..
                }
            ),
            "{err}"
        );
        drop(socket);
        fs::remove_file(&path).unwrap();

        // As a peer's key file, the same.
        keys.generate("Sprout", None, false).unwrap();
        mkfifo(&path);
        let trust = {
            let keys = keys.clone();
            promptly(move || keys.trust_store("Sprout").unwrap_err())
        };
        assert!(
            matches!(
                trust,
                KeyDirError::NotAFile {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{trust}"
        );
    }

    #[test]
    fn a_fifo_swapped_in_after_the_look_does_not_block_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Thor_ed25519.key");
        mkfifo(&path);
        // The open itself, as if the file had been a regular one when
        // looked at: no writer ever comes.
        let err =
            promptly(move || open_checked(&path, KeyDirFile::Key, MAX_KEY_FILE_BYTES).unwrap_err());
        assert!(
            matches!(
                err,
                Checked::Refused(KeyDirError::NotAFile {
                    kind: FileKind::Fifo,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn files_larger_than_their_kind_are_refused_naming_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let path = keys.key_path("Thor");
        fs::write(&path, vec![0u8; MAX_KEY_FILE_BYTES as usize + 1]).unwrap();
        let err = keys.load_identity("Thor").unwrap_err();
        assert!(
            matches!(
                err,
                KeyDirError::TooLarge {
                    size: 65537,
                    limit: 65536,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "key file {} is 65537 bytes, larger than a key file can be (65536 bytes at most)",
                path.display()
            )
        );
        // At the bound it is read, and is no key.
        fs::write(&path, vec![0u8; MAX_KEY_FILE_BYTES as usize]).unwrap();
        let err = keys.load_identity("Thor").unwrap_err();
        assert!(
            matches!(err, KeyDirError::Corrupt { size: 65536, .. }),
            "{err}"
        );

        let lct = dir.path().join("Thor_ed25519.lct");
        keys.generate("Thor", None, true).unwrap();
        fs::write(&lct, vec![b'a'; MAX_LCT_FILE_BYTES as usize + 1]).unwrap();
        let err = keys.load_identity("Thor").unwrap_err();
        assert!(
            matches!(
                err,
                KeyDirError::TooLarge {
                    role: KeyDirFile::Lct,
                    ..
                }
            ),
            "{err}"
        );
        fs::remove_file(&lct).unwrap();
        mkfifo(&lct);
        let err = promptly(move || keys.load_identity("Thor").unwrap_err());
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    role: KeyDirFile::Lct,
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_peers_file_that_is_not_regular_or_too_large_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let peers = keys.peers_file();
        mkfifo(&peers);
        let err = {
            let keys = keys.clone();
            promptly(move || keys.trust_store("Thor").unwrap_err())
        };
        assert!(
            matches!(
                err,
                KeyDirError::NotAFile {
                    role: KeyDirFile::Peers,
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("peers file "), "{err}");
        fs::remove_file(&peers).unwrap();
        let file = fs::File::create(&peers).unwrap();
        file.set_len(MAX_PEERS_FILE_BYTES + 1).unwrap();
        let err = keys.trust_store("Thor").unwrap_err();
        assert!(
            matches!(
                err,
                KeyDirError::TooLarge {
                    role: KeyDirFile::Peers,
                    ..
                }
            ),
            "{err}"
        );
    }

    fn record(name: &str, key: &NodeKey, lct_id: &str) -> PeerRecord {
        PeerRecord {
            name: name.into(),
            lct_id: lct_id.into(),
            public_key: key.public().to_hex(),
            address: None,
            protocol: None,
            tls_ca: None,
            tls_fingerprint: None,
        }
    }

    #[test]
    fn add_peer_refuses_what_the_trust_store_would_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let legion = keys.generate("Legion", None, false).unwrap();
        let (sprout, other) = (NodeKey::generate(), NodeKey::generate());
        let added = keys
            .add_peer(record("Sprout", &sprout, "sprout_sage_lct"), false)
            .unwrap();
        assert_eq!(added, AddOutcome::Added);
        let before = fs::read(keys.peers_file()).unwrap();
        let refused = |record: PeerRecord| {
            let error = keys.add_peer(record, false).unwrap_err();
            assert_eq!(fs::read(keys.peers_file()).unwrap(), before);
            error
        };

        let error = refused(record("Other", &other, "sprout_sage_lct"));
        assert!(
            matches!(
                &error,
                KeyDirError::Trust(TrustError::Ambiguous { what: "LCT id", first, second, .. })
                    if first == "Sprout" && second == "Other"
            ),
            "{error}"
        );
        // The message is the trust store's, as `serve` prints it.
        let mut store = TrustStore::default();
        store
            .insert(
                record("Sprout", &sprout, "sprout_sage_lct")
                    .to_peer(&keys.peers_file())
                    .unwrap(),
            )
            .unwrap();
        let direct = store
            .insert(
                record("Other", &other, "sprout_sage_lct")
                    .to_peer(&keys.peers_file())
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(error.to_string(), direct.to_string());

        let error = refused(record("Other", &other, "legion_sage_lct"));
        assert!(
            error
                .to_string()
                .contains("claimed by both Other and Legion"),
            "{error}"
        );
        let error = refused(record("Other", &legion.key, "other_sage_lct"));
        assert!(error.to_string().starts_with("key "), "{error}");
        let error = refused(record("Other", &other, "\u{43e}ther_sage_lct"));
        assert!(
            matches!(error, KeyDirError::RecordedLctId { .. }),
            "{error}"
        );

        // Replacing a record's own LCT id is no claim of another's.
        keys.add_peer(record("SPROUT", &sprout, "sprout_lab_lct"), false)
            .unwrap();
        keys.add_peer(record("Other", &other, "sprout_sage_lct"), false)
            .unwrap();
        assert_eq!(keys.trust_store("").unwrap().len(), 3);
    }

    #[test]
    fn an_lct_file_outside_the_rules_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        keys.generate("Thor", None, false).unwrap();
        let err = keys
            .generate("Legion", Some("legion lct"), false)
            .unwrap_err();
        assert!(matches!(err, KeyDirError::LctId(_)), "{err}");
        assert!(!keys.key_path("Legion").exists());
        keys.generate("Legion", None, false).unwrap();
        let lct = dir.path().join("Legion_ed25519.lct");
        fs::write(&lct, "l\u{435}gion_sage_lct\n").unwrap();
        let err = keys.trust_store("Thor").unwrap_err();
        assert!(
            matches!(&err, KeyDirError::RecordedLctId { path, name, .. } if *path == lct && name == "Legion"),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_to_a_key_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = KeyDir::new(dir.path().join("vault"));
        let made = elsewhere.generate("Thor", None, false).unwrap();
        let keys = KeyDir::new(dir.path().join("keys"));
        fs::create_dir(keys.path()).unwrap();
        std::os::unix::fs::symlink(&made.key_path, keys.key_path("Thor")).unwrap();
        let loaded = keys.load_identity("Thor").unwrap();
        assert_eq!(loaded.key.public(), made.key.public());
        // The mode is the file's, not the link's (links are 0777).
        assert_eq!(loaded.loose_mode, None);
        fs::set_permissions(&made.key_path, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(keys.load_identity("Thor").unwrap().loose_mode, Some(0o640));
    }

    #[test]
    fn group_readable_key_is_flagged() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let made = keys.generate("Thor", None, false).unwrap();
        fs::set_permissions(&made.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(keys.load_identity("Thor").unwrap().loose_mode, Some(0o644));
    }

    #[test]
    fn python_seed_files_serve_as_peers_and_identities() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        fs::write(keys.key_path("Sprout"), [5u8; 32]).unwrap();
        keys.generate("Thor", None, false).unwrap();
        let store = keys.trust_store("Thor").unwrap();
        assert_eq!(store.len(), 1);
        let sprout = store.find("sprout").unwrap();
        assert_eq!(sprout.public_key, NodeKey::from_seed(&[5u8; 32]).public());
        assert!(matches!(sprout.sources[0], PeerSource::KeyFile(_)));
        assert_eq!(
            keys.load_identity("Sprout").unwrap().key.public(),
            sprout.public_key
        );
    }
}
