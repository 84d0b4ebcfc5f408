//! What the user can do about a library error. Library errors say what is
//! wrong; the flags and commands that fix it belong to the command line,
//! so this module looks at an error's type and adds them after its
//! message.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

use sage_crypto::FingerprintError;
use sage_service::delegator::client::{NodeAddress, DEFAULT_PORT};
use sage_service::delegator::recorded::AttemptError;
use sage_service::delegator::route::RouteError;
use sage_service::{ClientError, DelegateError, KeyDirError, ProofError, TlsError, TlsProblem};
use sage_store::StoreError;

/// The CLI's fix for an error, written to follow its message: it starts
/// with its own joint (`; `, `. `, `: `, `, ` or ` (`), so that message
/// and advice read as one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice(Cow<'static, str>);

impl Advice {
    /// Advice that is a clause of its own: `message; text`.
    pub fn clause(text: impl Into<Cow<'static, str>>) -> Self {
        Advice(Cow::Owned(format!("; {}", text.into())))
    }

    /// Advice that follows the message as written, joint included.
    const fn joined(text: &'static str) -> Self {
        Advice(Cow::Borrowed(text))
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The advice for `error`, or for the first of its causes that has one. A
/// cause's message ends the message of the error that holds it, so its
/// advice still comes last.
pub fn for_error(error: &(dyn Error + 'static)) -> Option<Advice> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(advice) = own(error) {
            return Some(advice);
        }
        next = error.source();
    }
    None
}

/// `error`'s message followed by the CLI's advice for it, for the places
/// that put a library error into a sentence of their own.
pub fn message(error: &(dyn Error + 'static)) -> String {
    match for_error(error) {
        Some(advice) => format!("{error}{advice}"),
        None => error.to_string(),
    }
}

/// The advice for `error` itself, by its type.
fn own(error: &(dyn Error + 'static)) -> Option<Advice> {
    if let Some(err) = error.downcast_ref::<KeyDirError>() {
        return key_dir(err);
    }
    if let Some(err) = error.downcast_ref::<DelegateError>() {
        return delegate(err);
    }
    if let Some(err) = error.downcast_ref::<AttemptError>() {
        return err.delegate_error().and_then(delegate);
    }
    if let Some(err) = error.downcast_ref::<RouteError>() {
        return route(err);
    }
    if let Some(err) = error.downcast_ref::<ClientError>() {
        return client(err);
    }
    if let Some(err) = error.downcast_ref::<ProofError>() {
        return proof(err);
    }
    if let Some(err) = error.downcast_ref::<TlsError>() {
        return tls(err);
    }
    if let Some(err) = error.downcast_ref::<StoreError>() {
        return store(err);
    }
    error
        .downcast_ref::<FingerprintError>()
        .map(|_| Advice::joined(", as `sage tls fingerprint CERT.pem` prints"))
}

fn key_dir(err: &KeyDirError) -> Option<Advice> {
    Some(match err {
        // A mistyped --keys-dir: a key made there would be of no use.
        KeyDirError::NotFound { dir, .. } if !std::path::Path::new(dir).is_dir() => {
            Advice::clause(format!(
                "the key directory {dir} does not exist: pass --keys-dir DIR (or set SAGE_KEYS_DIR) to the directory that holds the keys"
            ))
        }
        KeyDirError::NotFound { name, dir, .. } => Advice::clause(format!(
            "create one with `sage keygen --name {name} --keys-dir {dir}`"
        )),
        KeyDirError::Corrupt { name, .. } => Advice::clause(format!(
            "restore it from a backup, or make a new key with `sage keygen --name {name} --force` and give peers the new public key"
        )),
        KeyDirError::Exists { .. } => Advice::joined(
            "; pass --force to replace it (the old key is lost and peers must re-add the new public key)",
        ),
        KeyDirError::PeerExists { .. } => {
            Advice::joined("; pass --replace to trust the new key instead")
        }
        KeyDirError::NotAFile { .. } => Advice::joined(
            "; replace it with the file itself (a symbolic link to a regular file is fine)",
        ),
        KeyDirError::TooLarge { .. } => {
            Advice::joined("; it is not what its name says: restore the right file")
        }
        _ => return None,
    })
}

/// A delegation's failure: its transparent variants show the inner
/// error's message, whose advice is found by type here, not as a cause.
/// After one attempt, its own advice; after several, the list says more.
fn route(err: &RouteError) -> Option<Advice> {
    match err {
        RouteError::NoCandidate { task_type, .. } => Some(Advice::clause(format!(
            "`sage capabilities ADDRESS` shows what a node serves; record a peer that serves {task_type} with `sage peer add --name NAME --public-key HEX --address ADDRESS`, or name one with --target"
        ))),
        RouteError::Exhausted { tried, last } | RouteError::MayHaveRun { tried, last, .. }
            if tried.len() == 1 =>
        {
            last.delegate_error().and_then(delegate)
        }
        _ => None,
    }
}

fn delegate(err: &DelegateError) -> Option<Advice> {
    match err {
        DelegateError::Client(err) => client(err),
        DelegateError::Proof { source, .. } => proof(source),
        DelegateError::WrongNode { .. } => Some(Advice::joined(
            "; check --host/--port or the peer's address",
        )),
        DelegateError::OtherKey { target, .. } => Some(Advice::clause(format!(
            "if {target} made a new key, re-add it with `sage peer add --name {target} --public-key HEX --replace` (`sage key show --public-only` on it prints HEX); otherwise something else answers at its address"
        ))),
        DelegateError::LegacyNode { .. } => Some(Advice::joined(
            ": pass --protocol legacy or set protocol = \"legacy\" in its peer record",
        )),
        _ => None,
    }
}

/// The port `addr` names, or the default one it stands for.
fn port_of(addr: &str) -> u16 {
    NodeAddress::parse(addr).map_or(DEFAULT_PORT, |a| a.port())
}

fn client(err: &ClientError) -> Option<Advice> {
    Some(match err {
        ClientError::Unreachable { addr, .. } => Advice(Cow::Owned(format!(
            ". Is `sage serve` running there? Check the host and port, and that the port is open in the firewall (e.g. `sudo ufw allow {}/tcp`)",
            port_of(addr)
        ))),
        ClientError::NoConnection { addr, .. } => Advice(Cow::Owned(format!(
            ". Check `ping` to the host, that `sage serve` runs there, and that the port is open (e.g. `sudo ufw allow {}/tcp`)",
            port_of(addr)
        ))),
        ClientError::SpeaksTls { https, .. } => Advice::clause(format!(
            "use {https} (with --tls-fingerprint or --tls-ca for a self-signed certificate)"
        )),
        ClientError::TimedOut { .. } => Advice::joined(
            ": raise --timeout (within the node's max_task_lifetime) or check the node's log",
        ),
        ClientError::TooLarge { .. } => Advice::joined(
            "; if the node's answers are meant to be that long, raise --max-answer-bytes",
        ),
        ClientError::Tls { problem, .. } => return handshake(*problem),
        ClientError::TlsSettings(err) => return tls(err),
        _ => return None,
    })
}

/// What to do about a failed TLS handshake: the flags that give a peer
/// its trust, or the command that makes a certificate.
fn handshake(problem: TlsProblem) -> Option<Advice> {
    Some(Advice::joined(match problem {
        TlsProblem::PinMismatch => "; if the node made a new certificate, pin the new one (`sage tls fingerprint CERT` on it, then `sage peer add ... --tls-fingerprint ... --replace`)",
        TlsProblem::UnknownIssuer => "; give the peer `--tls-ca CA.pem`, or pin its certificate with `--tls-fingerprint sha256:...`",
        TlsProblem::WrongName => "; use an address named in the certificate, or make one that names it (`sage tls self-signed --san HOST`)",
        _ => return None,
    }))
}

fn proof(err: &ProofError) -> Option<Advice> {
    match err {
        ProofError::SignedByOtherKey { executor, .. } => Some(Advice::clause(format!(
            "if {executor} changed its key, re-add it with `sage peer add --replace`, otherwise something else answered at its address"
        ))),
        _ => None,
    }
}

fn tls(err: &TlsError) -> Option<Advice> {
    match err {
        TlsError::NotPem { .. } => Some(Advice::joined(" (`sage tls self-signed` writes one)")),
        TlsError::Exists { .. } => Some(Advice::joined(
            "; pass --force to replace it (nodes that pinned the old certificate must pin the new one)",
        )),
        _ => None,
    }
}

fn store(err: &StoreError) -> Option<Advice> {
    match err {
        StoreError::Closed { .. } => Some(Advice::joined("; restart sage (the log has the cause)")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use sage_service::delegator::client::Client;
    use sage_service::keydir::KeyDir;
    use sage_service::peers_file::{PeerRecord, PeersFile};
    use sage_service::tls::{write_self_signed, SelfSignedPlan};

    use crate::failure::Failure;

    const SPROUT: &str = "8202edaa56d72167323fcb9f63e6f55698647a773e2c7d2931c6942c6f88ca05";
    const THOR: &str = "eccfbf4734253857294266e60b63b594b1919e72f19b89aaab3256ed471cc95c";

    /// What `sage` prints for a library error: its message and the advice.
    fn shown(error: impl Into<Failure>) -> String {
        error.into().to_string()
    }

    #[test]
    fn bad_or_missing_key_files_get_the_keygen_command() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        fs::write(keys.key_path("Thor"), [1u8; 40]).unwrap();
        let err = shown(keys.load_identity("Thor").unwrap_err());
        assert!(err.contains("sage keygen --name Thor --force"), "{err}");

        let err = shown(keys.load_identity("Sprout").unwrap_err());
        assert!(err.contains("sage keygen --name Sprout"), "{err}");
    }

    #[test]
    fn a_new_key_for_a_known_peer_gets_replace() {
        let record = |key: &str| PeerRecord {
            name: "Sprout".into(),
            lct_id: "sprout_sage_lct".into(),
            public_key: key.into(),
            address: None,
            protocol: None,
            tls_ca: None,
            tls_fingerprint: None,
        };
        let mut file = PeersFile::default();
        file.add(record(SPROUT), false).unwrap();
        let err = shown(file.add(record(THOR), false).unwrap_err());
        assert!(err.contains("--replace"), "{err}");
    }

    #[test]
    fn existing_certificate_files_get_force() {
        let dir = tempfile::tempdir().unwrap();
        let plan = SelfSignedPlan {
            name: "thor".into(),
            sans: Vec::new(),
            days: 30,
        };
        write_self_signed(dir.path(), &plan, false).unwrap();
        let err = write_self_signed(dir.path(), &plan, false).unwrap_err();
        let err = shown(err);
        assert!(err.contains("--force"), "{err}");
    }

    #[test]
    fn failed_handshakes_get_the_trust_flags() {
        use sage_service::{ClientError, TlsProblem};
        for (problem, fix) in [
            (TlsProblem::PinMismatch, "pin the new one"),
            (TlsProblem::UnknownIssuer, "give the peer `--tls-ca CA.pem`"),
            (TlsProblem::WrongName, "`sage tls self-signed --san HOST`"),
        ] {
            let err = shown(ClientError::Tls {
                addr: "https://thor:50051".into(),
                detail: "invalid peer certificate".into(),
                problem,
            });
            assert!(
                err.starts_with("TLS with https://thor:50051 failed: invalid peer certificate; ")
                    && err.contains(fix),
                "{err}"
            );
        }
        let err = shown(ClientError::Tls {
            addr: "https://thor:50051".into(),
            detail: "received corrupt message".into(),
            problem: TlsProblem::Other,
        });
        assert_eq!(
            err,
            "TLS with https://thor:50051 failed: received corrupt message"
        );
    }

    #[test]
    fn a_closed_port_gets_the_checklist() {
        // Bind, learn the port, close: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(
                Client::new()
                    .unwrap()
                    .health(&format!("127.0.0.1:{port}"), Duration::from_secs(2)),
            )
            .unwrap_err();
        let err = shown(err);
        assert!(err.contains("Is `sage serve` running there?"), "{err}");
    }
}
