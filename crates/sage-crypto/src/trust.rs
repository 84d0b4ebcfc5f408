//! The trust store: the peers a node knows, by name, LCT id and key id.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::{KeyId, PublicKey, TlsTrust, TrustError};

/// Which wire protocol a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `sage`'s native protocol (DSSE envelopes on `/v1/tasks`).
    #[default]
    V1,
    /// The Python original's protocol (`/execute_task`).
    Legacy,
}

impl Protocol {
    /// The name used in `peers.toml` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::Legacy => "legacy",
        }
    }
}

/// Where the store learned of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// A record in a peers file (method 2 of the Python original's
    /// deployment guide).
    PeersFile(PathBuf),
    /// Another platform's key file in the key directory (method 1 of the
    /// Python original's deployment guide, for testing); only its public
    /// half is used.
    KeyFile(PathBuf),
    /// Given directly by a caller (tests, one-off commands).
    Given,
}

impl fmt::Display for PeerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSource::PeersFile(path) => write!(f, "peers file {}", path.display()),
            PeerSource::KeyFile(path) => write!(f, "key file {}", path.display()),
            PeerSource::Given => f.write_str("command line"),
        }
    }
}

/// A known peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Platform name (`Sprout`).
    pub name: String,
    /// LCT id (`sprout_sage_lct`).
    pub lct_id: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// Id of `public_key`.
    pub key_id: KeyId,
    /// Where it listens (`HOST:PORT` or a URL), when known.
    pub address: Option<String>,
    /// The protocol to speak to it.
    pub protocol: Protocol,
    /// How to trust its TLS certificate when its address is `https://`.
    pub tls: TlsTrust,
    /// Where the store learned of it (one or more places that agree).
    pub sources: Vec<PeerSource>,
}

impl Peer {
    /// A peer with the default LCT id, no address and the native protocol.
    pub fn new(name: &str, public_key: PublicKey, source: PeerSource) -> Self {
        Peer {
            name: name.to_owned(),
            lct_id: sage_types::default_lct_id(name),
            public_key,
            key_id: public_key.key_id(),
            address: None,
            protocol: Protocol::V1,
            tls: TlsTrust::WebPki,
            sources: vec![source],
        }
    }

    /// The sources as one human-readable line.
    pub fn sources_text(&self) -> String {
        let parts: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        parts.join(", ")
    }
}

/// The peers a node knows. Lookups by key id and LCT id are exact; by name
/// they ignore case (`thor` finds `Thor`).
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    peers: Vec<Peer>,
    by_key: HashMap<String, usize>,
    by_lct: HashMap<String, usize>,
}

impl TrustStore {
    /// Adds `peer`. A second record of the same platform with the same key
    /// merges into the first (its sources are added, a missing address or
    /// TLS setting is filled in).
    ///
    /// # Errors
    /// [`TrustError::ConflictingKeys`] when the platform is known with
    /// another key, [`TrustError::Ambiguous`] when its key or LCT id belongs
    /// to another platform.
    pub fn insert(&mut self, peer: Peer) -> Result<(), TrustError> {
        if let Some(index) = self.index_by_name(&peer.name) {
            let known = &mut self.peers[index];
            if known.public_key != peer.public_key || known.lct_id != peer.lct_id {
                return Err(TrustError::ConflictingKeys {
                    name: known.name.clone(),
                    first_key: format!("{} ({})", known.key_id, known.lct_id),
                    first_source: known.sources_text(),
                    second_key: format!("{} ({})", peer.key_id, peer.lct_id),
                    second_source: peer.sources_text(),
                });
            }
            if known.address.is_none() {
                known.address = peer.address;
            }
            if known.tls.is_default() {
                known.tls = peer.tls;
            }
            known.sources.extend(peer.sources);
            return Ok(());
        }
        if let Some(&i) = self.by_key.get(peer.key_id.as_str()) {
            return Err(self.ambiguous("key", peer.key_id.to_string(), i, &peer));
        }
        if let Some(&i) = self.by_lct.get(&peer.lct_id) {
            return Err(self.ambiguous("LCT id", peer.lct_id.clone(), i, &peer));
        }
        let index = self.peers.len();
        self.by_key.insert(peer.key_id.to_string(), index);
        self.by_lct.insert(peer.lct_id.clone(), index);
        self.peers.push(peer);
        Ok(())
    }

    fn ambiguous(&self, what: &'static str, value: String, i: usize, peer: &Peer) -> TrustError {
        TrustError::Ambiguous {
            what,
            value,
            first: self.peers[i].name.clone(),
            second: peer.name.clone(),
        }
    }

    fn index_by_name(&self, name: &str) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The peer whose key has this id.
    pub fn by_key_id(&self, key_id: &str) -> Option<&Peer> {
        self.by_key.get(key_id).map(|&i| &self.peers[i])
    }

    /// The peer with this LCT id.
    pub fn by_lct(&self, lct_id: &str) -> Option<&Peer> {
        self.by_lct.get(lct_id).map(|&i| &self.peers[i])
    }

    /// The peer with this name (ignoring case), or else this LCT id.
    pub fn find(&self, name_or_lct: &str) -> Option<&Peer> {
        self.index_by_name(name_or_lct)
            .map(|i| &self.peers[i])
            .or_else(|| self.by_lct(name_or_lct))
    }

    /// All peers in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;

    fn peer(name: &str, key: &NodeKey, source: PeerSource) -> Peer {
        Peer::new(name, key.public(), source)
    }

    #[test]
    fn lookups_by_name_ignore_case_and_by_id_are_exact() {
        let key = NodeKey::generate();
        let mut store = TrustStore::default();
        store.insert(peer("Thor", &key, PeerSource::Given)).unwrap();
        assert_eq!(store.find("thor").unwrap().name, "Thor");
        assert_eq!(store.find("thor_sage_lct").unwrap().name, "Thor");
        assert!(store.by_lct("THOR_sage_lct").is_none());
        assert_eq!(
            store
                .by_key_id(key.public().key_id().as_str())
                .unwrap()
                .name,
            "Thor"
        );
        assert!(store.by_key_id("ed25519:00").is_none());
    }

    #[test]
    fn agreeing_sources_merge() {
        let key = NodeKey::generate();
        let mut store = TrustStore::default();
        let mut from_file = peer("Sprout", &key, PeerSource::PeersFile("peers.toml".into()));
        from_file.address = Some("10.0.0.2:50051".into());
        let pin = TlsTrust::Fingerprint(crate::CertFingerprint::of_der(b"cert"));
        from_file.tls = pin.clone();
        store.insert(from_file).unwrap();
        store
            .insert(peer(
                "sprout",
                &key,
                PeerSource::KeyFile("Sprout_ed25519.key".into()),
            ))
            .unwrap();
        assert_eq!(store.len(), 1);
        let sprout = store.find("Sprout").unwrap();
        assert_eq!(sprout.sources.len(), 2);
        assert_eq!(sprout.address.as_deref(), Some("10.0.0.2:50051"));
        assert_eq!(
            sprout.tls, pin,
            "the key file's default TLS trust does not override"
        );
        assert_eq!(
            sprout.sources_text(),
            "peers file peers.toml, key file Sprout_ed25519.key"
        );
    }

    #[test]
    fn conflicts_are_refused() {
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let mut store = TrustStore::default();
        store.insert(peer("Sprout", &a, PeerSource::Given)).unwrap();

        let err = store
            .insert(peer("SPROUT", &b, PeerSource::Given))
            .unwrap_err();
        assert!(matches!(err, TrustError::ConflictingKeys { .. }));
        assert!(err.to_string().contains("remove the stale one"), "{err}");

        let err = store
            .insert(peer("Other", &a, PeerSource::Given))
            .unwrap_err();
        assert!(
            matches!(err, TrustError::Ambiguous { what: "key", .. }),
            "{err}"
        );

        let mut same_lct = peer("Other", &b, PeerSource::Given);
        same_lct.lct_id = "sprout_sage_lct".into();
        let err = store.insert(same_lct).unwrap_err();
        assert!(
            matches!(err, TrustError::Ambiguous { what: "LCT id", .. }),
            "{err}"
        );
        assert_eq!(store.len(), 1);
    }
}
