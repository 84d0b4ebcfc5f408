//! The key directory: this node's key file, other platforms' key files and
//! `peers.toml`, and the trust store built from them.
//!
//! Layout (compatible with the Python original's `sage/data/keys/`):
//! - `Name_ed25519.key`: 32 bytes of seed (Python original) or 64 bytes of
//!   seed and public key (`sage keygen`), mode 0600;
//! - `Name_ed25519.lct`: optional, the platform's LCT id when it is not the
//!   default `name_sage_lct`;
//! - `peers.toml`: peers added with `sage peer add` (see [`crate::peers_file`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sage_crypto::{NodeKey, Peer, PeerSource, PublicKey, TrustStore};
use sage_types::identity::is_valid_name;

use crate::peers_file::PeersFile;
use crate::KeyDirError;

const KEY_SUFFIX: &str = "_ed25519.key";
const LCT_SUFFIX: &str = "_ed25519.lct";
const PEERS_FILE: &str = "peers.toml";

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
    /// The private key.
    pub key: NodeKey,
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
    /// [`KeyDirError::NotFound`], [`KeyDirError::Unreadable`] or
    /// [`KeyDirError::Corrupt`], each naming the file and the fix.
    pub fn load_identity(&self, name: &str) -> Result<Identity, KeyDirError> {
        let (name, path) = self.find_key_file(name)?;
        let key = read_key_file(&name, &path)?;
        Ok(Identity {
            lct_id: self.lct_of(&name)?,
            loose_mode: loose_mode(&path),
            key_path: path,
            key,
            name,
        })
    }

    /// Loads the identity of platform `name` with its private key read from
    /// `key_path` instead of the directory (a systemd credential, see
    /// [`crate::systemd::credential_identity`]). The name is spelled as the
    /// directory's key file spells it, if it has one; the LCT id comes from
    /// the directory as for [`KeyDir::load_identity`].
    ///
    /// # Errors
    /// [`KeyDirError::InvalidName`], [`KeyDirError::Unreadable`] or
    /// [`KeyDirError::Corrupt`] (naming `key_path`), or a `.lct` file that
    /// cannot be read.
    pub fn load_identity_from(&self, name: &str, key_path: &Path) -> Result<Identity, KeyDirError> {
        let name = match self.find_key_file(name) {
            Ok((spelled, _)) => spelled,
            Err(KeyDirError::NotFound { .. }) => name.to_owned(),
            Err(e) => return Err(e),
        };
        let key = read_key_file(&name, key_path)?;
        Ok(Identity {
            lct_id: self.lct_of(&name)?,
            loose_mode: loose_mode(key_path),
            key_path: key_path.to_owned(),
            key,
            name,
        })
    }

    /// Makes a new key for `name` (mode 0600), refusing to replace an
    /// existing one unless `force`. Records `lct_id` when it is not the
    /// default.
    ///
    /// # Errors
    /// [`KeyDirError::Exists`], [`KeyDirError::InvalidName`] or
    /// [`KeyDirError::Write`].
    pub fn generate(
        &self,
        name: &str,
        lct_id: Option<&str>,
        force: bool,
    ) -> Result<Identity, KeyDirError> {
        check_name(name)?;
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
            key,
            key_path: path,
            loose_mode: None,
        })
    }

    /// The LCT id of `name`: the `.lct` file's content, else the default.
    fn lct_of(&self, name: &str) -> Result<String, KeyDirError> {
        let path = self.root.join(format!("{name}{LCT_SUFFIX}"));
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
            Ok(_) => Ok(sage_types::default_lct_id(name)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(sage_types::default_lct_id(name))
            }
            Err(source) => Err(KeyDirError::Read { path, source }),
        }
    }

    /// The trust store of a node named `local`: the records of `peers.toml`
    /// and, for testing setups (the guide's method 1), every other
    /// platform's key file in the directory (public half only).
    ///
    /// # Errors
    /// A bad peers file or key file, or sources that disagree on a key.
    pub fn trust_store(&self, local: &str) -> Result<TrustStore, KeyDirError> {
        let mut store = TrustStore::default();
        let peers_path = self.peers_file();
        for record in PeersFile::load(&peers_path)?.peers {
            if record.name.eq_ignore_ascii_case(local) {
                continue;
            }
            store.insert(record.to_peer(&peers_path)?)?;
        }
        for (name, path) in self.key_files()? {
            if name.eq_ignore_ascii_case(local) {
                continue;
            }
            let public = read_key_file(&name, &path)?.public();
            let mut peer = Peer::new(&name, public, PeerSource::KeyFile(path));
            peer.lct_id = self.lct_of(&name)?;
            store.insert(peer)?;
        }
        Ok(store)
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

fn check_name(name: &str) -> Result<(), KeyDirError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(KeyDirError::InvalidName {
            name: name.to_owned(),
        })
    }
}

fn read_key_file(name: &str, path: &Path) -> Result<NodeKey, KeyDirError> {
    let bytes =
        zeroize::Zeroizing::new(fs::read(path).map_err(|source| KeyDirError::Unreadable {
            path: path.to_owned(),
            source,
        })?);
    NodeKey::from_key_file(&bytes).map_err(|source| KeyDirError::Corrupt {
        path: path.to_owned(),
        size: bytes.len(),
        name: name.to_owned(),
        source,
    })
}

#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

/// Flushes a directory's entries to the disk (a no-op where a directory
/// cannot be opened as a file).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// created with `mode`, synced, then moved into place, and the directory
/// synced: readers never see a half-written file, and a power cut loses
/// neither the bytes nor the name. Without `replace`, an existing `path` is an error.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    replace: bool,
) -> Result<(), KeyDirError> {
    let write_err = |source| KeyDirError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        fs::create_dir_all(dir)?;
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            // A hard link fails if `path` appeared meanwhile: never clobber.
            fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))?;
        }
        // The new name must survive a power cut too, not only the bytes.
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyDirError::Exists {
                path: path.to_owned(),
            }
        } else {
            write_err(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn bad_key_files_name_the_file_its_size_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        let path = keys.key_path("Thor");
        fs::write(&path, [1u8; 40]).unwrap();
        let err = keys.load_identity("Thor").unwrap_err().to_string();
        assert!(
            err.contains("Thor_ed25519.key") && err.contains("40 bytes"),
            "{err}"
        );
        assert!(err.contains("sage keygen --name Thor --force"), "{err}");

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

        let err = keys.load_identity("Sprout").unwrap_err().to_string();
        assert!(err.contains("sage keygen --name Sprout"), "{err}");
    }

    #[test]
    fn unreadable_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        // A directory where the key file should be cannot be read as one.
        fs::create_dir(keys.key_path("Thor")).unwrap();
        let err = keys.load_identity("Thor").unwrap_err();
        assert!(matches!(err, KeyDirError::Unreadable { .. }), "{err}");
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
