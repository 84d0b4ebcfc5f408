//! `peers.toml`: the peers an operator added by hand (method 2 of the
//! Python original's deployment guide: public keys only).
//!
//! ```toml
//! [[peer]]
//! name = "Sprout"
//! lct_id = "sprout_sage_lct"
//! public_key = "8202edaa56d72167323fcb9f63e6f55698647a773e2c7d2931c6942c6f88ca05"
//! address = "10.0.0.12:50051"   # optional
//! protocol = "v1"               # or "legacy"; optional
//!
//! [[peer]]
//! name = "Thor"
//! lct_id = "thor_sage_lct"
//! public_key = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c"
//! address = "https://thor.local:50051"
//! # For https:// only, one of (without either, the built-in web PKI roots):
//! tls_fingerprint = "sha256:3f1c..."  # exactly this certificate (names and dates ignored)
//! # tls_ca = "thor-ca.pem"          # certificates issued by this CA (relative to this file)
//! ```

use std::path::{Path, PathBuf};

use sage_crypto::{CertFingerprint, Peer, PeerSource, Protocol, PublicKey, TlsTrust};
use serde::{Deserialize, Serialize};

use crate::files::{read_checked, write_atomically, Checked, KeyDirFile};

/// The largest `peers.toml` read: a record is a few hundred bytes, so this
/// holds some ten thousand peers.
pub(crate) const MAX_PEERS_FILE_BYTES: u64 = 4 * 1024 * 1024;
use crate::KeyDirError;

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    /// The records, in the order they were added.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerRecord>,
}

/// One `[[peer]]` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRecord {
    /// Platform name.
    pub name: String,
    /// LCT id.
    pub lct_id: String,
    /// Public key, 64 hex characters.
    pub public_key: String,
    /// `HOST:PORT` or URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `v1` (default) or `legacy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// For an `https://` address: a PEM file of the CA(s) that issue the
    /// peer's certificate (a self-signed certificate is its own CA);
    /// relative to the peers file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// For an `https://` address: `sha256:HEX` of the one certificate the
    /// peer may present (pinning; names and dates are not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// What [`PeersFile::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new record.
    Added,
    /// A record of that name was replaced.
    Replaced,
}

impl PeersFile {
    /// Reads `path`; a missing file is an empty one.
    ///
    /// # Errors
    /// [`KeyDirError::Read`], [`KeyDirError::NotAFile`],
    /// [`KeyDirError::TooLarge`] or [`KeyDirError::PeersFile`] (with line
    /// and column).
    pub fn load(path: &Path) -> Result<Self, KeyDirError> {
        let read_err = |source| KeyDirError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = match read_checked(path, KeyDirFile::Peers, MAX_PEERS_FILE_BYTES) {
            Ok((bytes, _)) => bytes,
            Err(Checked::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default())
            }
            Err(Checked::Io(source)) => return Err(read_err(source)),
            Err(Checked::Refused(e)) => return Err(e),
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let file: PeersFile = toml::from_str(text).map_err(|e| KeyDirError::PeersFile {
            path: path.to_owned(),
            detail: e.to_string().trim().replace('\n', " "),
        })?;
        // Validate every record now, so a bad one is reported with the file.
        for record in &file.peers {
            record.to_peer(path)?;
        }
        Ok(file)
    }

    /// Writes the file atomically (a temporary file renamed over it).
    ///
    /// # Errors
    /// [`KeyDirError::Write`].
    pub fn save(&self, path: &Path) -> Result<(), KeyDirError> {
        let text = toml::to_string(self).map_err(|e| KeyDirError::PeersFile {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let header = "# Peers this node trusts (sage peer add/remove edit this file).\n\n";
        write_atomically(path, format!("{header}{text}").as_bytes(), 0o644, true)
    }

    /// Adds `record`, or replaces the record of the same name (ignoring
    /// case) when `replace` is set or the key is unchanged.
    ///
    /// # Errors
    /// [`KeyDirError::PeerExists`] when the name is known with another key
    /// and `replace` is not set.
    pub fn add(&mut self, record: PeerRecord, replace: bool) -> Result<AddOutcome, KeyDirError> {
        let Some(existing) = self
            .peers
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(&record.name))
        else {
            self.peers.push(record);
            return Ok(AddOutcome::Added);
        };
        let same_key = existing.public_key.eq_ignore_ascii_case(&record.public_key);
        if !same_key && !replace {
            return Err(KeyDirError::PeerExists {
                name: existing.name.clone(),
                existing: existing.public_key.clone(),
            });
        }
        *existing = record;
        Ok(AddOutcome::Replaced)
    }

    /// Removes the record named `name` (ignoring case); whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.peers.len();
        self.peers.retain(|p| !p.name.eq_ignore_ascii_case(name));
        self.peers.len() != before
    }
}

impl PeerRecord {
    /// The trust-store peer this record describes.
    ///
    /// # Errors
    /// [`KeyDirError::PeersFile`] naming the record and what is wrong,
    /// [`KeyDirError::PeerFingerprint`] for a pin that is not a fingerprint, or
    /// [`KeyDirError::RecordedLctId`] for an LCT id that breaks the rules
    /// of [`sage_types::identity::check_lct_id`].
    pub fn to_peer(&self, path: &Path) -> Result<Peer, KeyDirError> {
        let bad = |detail: String| KeyDirError::PeersFile {
            path: path.to_owned(),
            detail: format!("peer {:?}: {detail}", self.name),
        };
        if !sage_types::identity::is_valid_name(&self.name) {
            return Err(bad(
                "name must be 1 to 64 ASCII letters, digits, '-' or '_'".into(),
            ));
        }
        sage_types::identity::check_lct_id(&self.lct_id).map_err(|source| {
            KeyDirError::RecordedLctId {
                path: path.to_owned(),
                name: self.name.clone(),
                source,
            }
        })?;
        let key = PublicKey::from_hex(&self.public_key).map_err(|e| bad(e.to_string()))?;
        let protocol = match self.protocol.as_deref() {
            None | Some("v1") => Protocol::V1,
            Some("legacy") => Protocol::Legacy,
            Some(other) => {
                return Err(bad(format!(
                    "protocol {other:?} is neither \"v1\" nor \"legacy\""
                )))
            }
        };
        let tls = match (&self.tls_ca, &self.tls_fingerprint) {
            (None, None) => TlsTrust::WebPki,
            (Some(_), Some(_)) => {
                return Err(bad("set tls_ca or tls_fingerprint, not both".into()))
            }
            (Some(ca), None) => TlsTrust::Ca(
                path.parent()
                    .filter(|_| ca.is_relative())
                    .map_or_else(|| ca.clone(), |dir| dir.join(ca)),
            ),
            (None, Some(fp)) => {
                TlsTrust::Fingerprint(fp.parse::<CertFingerprint>().map_err(|source| {
                    KeyDirError::PeerFingerprint {
                        path: path.to_owned(),
                        name: self.name.clone(),
                        source,
                    }
                })?)
            }
        };
        if let (false, Some(address)) = (tls.is_default(), &self.address) {
            if !address.trim().starts_with("https://") {
                return Err(bad(format!(
                    "tls_ca and tls_fingerprint apply to https:// addresses, and the address is {address:?}"
                )));
            }
        }
        let mut peer = Peer::new(&self.name, key, PeerSource::PeersFile(PathBuf::from(path)));
        peer.lct_id = self.lct_id.clone();
        peer.address = self.address.clone();
        peer.protocol = protocol;
        peer.tls = tls;
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPROUT: &str = "8202edaa56d72167323fcb9f63e6f55698647a773e2c7d2931c6942c6f88ca05";
    const THOR: &str = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c";

    fn record(name: &str, key: &str) -> PeerRecord {
        PeerRecord {
            name: name.into(),
            lct_id: sage_types::default_lct_id(name),
            public_key: key.into(),
            address: Some("127.0.0.1:50052".into()),
            protocol: None,
            tls_ca: None,
            tls_fingerprint: None,
        }
    }

    #[test]
    fn add_save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        assert_eq!(PeersFile::load(&path).unwrap(), PeersFile::default());

        let mut file = PeersFile::default();
        assert_eq!(
            file.add(record("Sprout", SPROUT), false).unwrap(),
            AddOutcome::Added
        );
        file.save(&path).unwrap();
        let loaded = PeersFile::load(&path).unwrap();
        assert_eq!(loaded, file);
        let peer = loaded.peers[0].to_peer(&path).unwrap();
        assert_eq!(peer.public_key.to_hex(), SPROUT);
        assert_eq!(peer.address.as_deref(), Some("127.0.0.1:50052"));

        let mut file = loaded;
        assert!(file.remove("sprout"));
        assert!(!file.remove("sprout"));
        assert!(file.peers.is_empty());
    }

    #[test]
    fn a_new_key_for_a_known_name_needs_replace() {
        let mut file = PeersFile::default();
        file.add(record("Sprout", SPROUT), false).unwrap();
        // Same key again: fine (an address update, say).
        assert_eq!(
            file.add(record("SPROUT", SPROUT), false).unwrap(),
            AddOutcome::Replaced
        );
        let err = file.add(record("Sprout", THOR), false).unwrap_err();
        assert!(matches!(err, KeyDirError::PeerExists { .. }));
        assert_eq!(file.peers[0].public_key, SPROUT);
        assert_eq!(
            file.add(record("Sprout", THOR), true).unwrap(),
            AddOutcome::Replaced
        );
        assert_eq!(file.peers[0].public_key, THOR);
    }

    #[test]
    fn bad_files_name_the_line_or_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");

        std::fs::write(
            &path,
            "[[peer]]\nname = \"Sprout\"\nlct_id = \"s\"\npublic_key = \"abc\"\n",
        )
        .unwrap();
        let err = PeersFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("peer \"Sprout\"") && err.contains("64 hexadecimal"),
            "{err}"
        );

        std::fs::write(&path, "[[peer]]\nname = \"Sprout\"\ncolour = 1\n").unwrap();
        let err = PeersFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("colour"), "{err}");

        let mut bad = record("Sprout", SPROUT);
        bad.protocol = Some("v9".into());
        let err = bad.to_peer(&path).unwrap_err().to_string();
        assert!(err.contains("\"v9\""), "{err}");
    }

    #[test]
    fn tls_settings_become_the_peers_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        let fp = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

        let mut pinned = record("Thor", THOR);
        pinned.address = Some("https://127.0.0.1:50052".into());
        pinned.tls_fingerprint = Some(fp.into());
        let mut file = PeersFile::default();
        file.add(pinned.clone(), false).unwrap();
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("tls_fingerprint = \"{fp}\"")),
            "{text}"
        );
        let loaded = PeersFile::load(&path).unwrap();
        assert_eq!(loaded.peers[0], pinned);
        assert_eq!(
            loaded.peers[0].to_peer(&path).unwrap().tls,
            TlsTrust::Fingerprint(fp.parse().unwrap())
        );

        // A relative CA file is found beside the peers file.
        let mut with_ca = pinned.clone();
        with_ca.tls_fingerprint = None;
        with_ca.tls_ca = Some("thor-ca.pem".into());
        assert_eq!(
            with_ca.to_peer(&path).unwrap().tls,
            TlsTrust::Ca(dir.path().join("thor-ca.pem"))
        );

        let mut both = with_ca.clone();
        both.tls_fingerprint = Some(fp.into());
        let err = both.to_peer(&path).unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");

        let mut bad_fp = pinned.clone();
        bad_fp.tls_fingerprint = Some("sha256:abc".into());
        let err = bad_fp.to_peer(&path).unwrap_err().to_string();
        assert!(
            err.contains("tls_fingerprint") && err.contains("sha256:abc"),
            "{err}"
        );

        let mut plain = pinned;
        plain.address = Some("127.0.0.1:50052".into());
        let err = plain.to_peer(&path).unwrap_err().to_string();
        assert!(err.contains("https://"), "{err}");
    }
}
