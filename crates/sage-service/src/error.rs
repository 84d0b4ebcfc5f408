//! Typed errors of the service's operations. Each message says what is
//! wrong, with the file, peer or address involved; the flags and commands
//! that fix it are the caller's to add (the CLI's `advice.rs`), since a
//! program that uses this crate has no command line.

use std::path::PathBuf;
use std::time::Duration;

use sage_crypto::{FingerprintError, KeyFileError, TrustError};
use sage_types::identity::LctIdError;
use sage_types::Problem;

use crate::files::{FileKind, KeyDirFile};
use sage_types::untrusted::{Untrusted, EXPLANATION_CHARS};

/// Errors of the key directory: key files and `peers.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyDirError {
    /// A platform name that cannot be a key file name.
    #[error("invalid platform name {name:?}: use 1 to 64 ASCII letters, digits, '-' or '_'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// An LCT id given for a platform (`keygen --lct`) breaks the rules of
    /// LCT ids.
    #[error(transparent)]
    LctId(#[from] LctIdError),
    /// An LCT id recorded for a platform, in the peers file or in its
    /// `.lct` file, breaks the rules of LCT ids.
    #[error("{}: platform {name}: {source}", path.display())]
    RecordedLctId {
        /// The peers file or `.lct` file.
        path: PathBuf,
        /// The platform it is recorded for.
        name: String,
        /// What breaks the rules.
        source: LctIdError,
    },
    /// No key file for the platform.
    #[error("no key for platform {name} in {dir} (looked for {expected})")]
    NotFound {
        /// The platform.
        name: String,
        /// The key directory.
        dir: String,
        /// The file that was looked for.
        expected: String,
    },
    /// A key directory file is not a regular file (a FIFO, a device, a
    /// socket, a directory); nothing was read from it.
    #[error("{role} {} is {kind}, not a regular file", path.display())]
    NotAFile {
        /// Which file of the directory.
        role: KeyDirFile,
        /// The file, as named (a symbolic link is followed).
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// A key directory file is larger than its kind can be; it was not
    /// read whole.
    #[error("{role} {} is {size} bytes, larger than a {role} can be ({limit} bytes at most)", path.display())]
    TooLarge {
        /// Which file of the directory.
        role: KeyDirFile,
        /// The file.
        path: PathBuf,
        /// Its size, or as much of it as was read past the limit.
        size: u64,
        /// The most a file of its kind may hold.
        limit: u64,
    },
    /// The key file exists but cannot be read.
    #[error("cannot read key file {}: {source}; check that it is a file readable by this user (chmod 600, owned by the user running sage)", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The key file's bytes are not a key.
    #[error("key file {} ({size} bytes) is corrupt: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: usize,
        /// The platform it is for.
        name: String,
        /// What is wrong with it.
        source: KeyFileError,
    },
    /// `keygen` would overwrite a key.
    #[error("key file {} already exists", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// Reading a file or directory other than a key failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// `peers.toml` is not valid.
    #[error("invalid peers file {}: {detail}", path.display())]
    PeersFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        detail: String,
    },
    /// A record of `peers.toml` pins a certificate fingerprint that is not
    /// one.
    #[error("invalid peers file {}: peer {name:?}: tls_fingerprint: {source}", path.display())]
    PeerFingerprint {
        /// The file.
        path: PathBuf,
        /// The record's platform name.
        name: String,
        /// What is wrong with the fingerprint.
        source: FingerprintError,
    },
    /// Adding a peer under a name known with another key.
    #[error("peer {name} is already known with public key {existing}")]
    PeerExists {
        /// The platform.
        name: String,
        /// The key on record.
        existing: String,
    },
    /// Removing a peer that is not recorded.
    #[error("no peer named {name} in {}", path.display())]
    NoSuchPeer {
        /// The name asked for.
        name: String,
        /// The peers file.
        path: PathBuf,
    },
    /// The sources of the trust store disagree.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Errors of talking to another node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not a usable URL.
    #[error("invalid address {addr:?}: {detail}; use HOST[:PORT], http://HOST[:PORT] or https://HOST[:PORT] (port 50051 if none)")]
    BadAddress {
        /// The address.
        addr: String,
        /// What is wrong.
        detail: String,
    },
    /// No connection could be made.
    #[error("cannot reach {addr}: {detail}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The system's reason.
        detail: String,
    },
    /// The connection was made, then broke before a whole answer came: the
    /// node may have received the request, and may be running it.
    #[error("the connection to {addr} broke before the answer: {detail}")]
    Broken {
        /// The address.
        addr: String,
        /// The system's reason.
        detail: String,
    },
    /// The client could not be set up or the request not encoded: a bug
    /// or a broken TLS backend, not the peer's fault.
    #[error("{0}")]
    Setup(String),
    /// No connection within the timeout: nothing answered the connection
    /// attempt (a firewall that drops, a host that is down).
    #[error("{addr} did not accept a connection within {:.1} s: the host is down or unreachable, or a firewall drops the port", after.as_secs_f64())]
    NoConnection {
        /// The address.
        addr: String,
        /// How long it waited.
        after: Duration,
    },
    /// Connected, but no answer within the timeout.
    #[error("{addr} did not answer within {:.1} s; the node may be overloaded or the task slow", after.as_secs_f64())]
    TimedOut {
        /// The address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The node refused with a problem body.
    #[error("{addr} refused the request: {} ({}): {}", problem.code, problem.status, Untrusted(&problem.detail).up_to(EXPLANATION_CHARS))]
    Refused {
        /// The address.
        addr: String,
        /// The node's explanation.
        problem: Box<Problem>,
        /// How long the node asked to wait before the next request
        /// (`Retry-After`), if it did.
        retry_after: Option<std::time::Duration>,
    },
    /// The node answered something that is not the protocol.
    #[error("{addr} answered HTTP {status} with an unexpected body: {detail}; is it a sage node?")]
    BadResponse {
        /// The address.
        addr: String,
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The answer is longer than the client reads: it was refused by its
    /// announced length, or dropped once that many bytes had come.
    #[error("{addr} sent an answer longer than {limit} bytes, the most this client reads")]
    TooLarge {
        /// The address.
        addr: String,
        /// The most the client reads, in bytes.
        limit: usize,
    },
    /// The node answered but is not healthy.
    #[error("{addr} reports status {status:?}, not \"healthy\"; check the node's log")]
    Unhealthy {
        /// The address.
        addr: String,
        /// The status it reported.
        status: String,
    },
    /// The TLS handshake failed: the certificate is not the pinned one,
    /// not issued by the CA, not for this name, or the node does not speak
    /// TLS.
    #[error("TLS with {addr} failed: {detail}")]
    Tls {
        /// The address.
        addr: String,
        /// What went wrong.
        detail: String,
        /// Which of the usual failures it was.
        problem: TlsProblem,
    },
    /// An `http://` request met a TLS server: the port speaks HTTPS only.
    #[error("{addr} speaks HTTPS only, not plain HTTP: the node serves TLS on that port")]
    SpeaksTls {
        /// The address, as given.
        addr: String,
        /// The same with `https://`.
        https: String,
    },
    /// The TLS settings for the peer cannot be used (a CA file that cannot
    /// be read, say).
    #[error(transparent)]
    TlsSettings(#[from] TlsError),
}

/// The kind of a failed TLS handshake, for a caller that says what to do
/// about it (pin the new certificate, give a CA, use another name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The certificate is not the pinned one.
    PinMismatch,
    /// The certificate is not issued by a trusted CA.
    UnknownIssuer,
    /// The certificate does not name the address.
    WrongName,
    /// Anything else, a node that does not speak TLS included.
    Other,
}

/// Why a proof returned by a peer is not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Signed by a key that is not the target's known key.
    #[error("the proof is signed by another key ({found}), not {executor}'s known key {expected}")]
    SignedByOtherKey {
        /// The target.
        executor: String,
        /// The key on record.
        expected: String,
        /// The key ids in the proof.
        found: String,
    },
    /// The signature by the known key does not verify.
    #[error("the proof's signature does not verify against {executor}'s key {key_id}: the proof was altered in transit or forged")]
    InvalidSignature {
        /// The target.
        executor: String,
        /// Its key.
        key_id: String,
    },
    /// The proof envelope or payload is not well-formed.
    #[error("the proof is malformed: {0}")]
    Malformed(String),
    /// The proof is about another task.
    #[error("the proof is for another task: {detail}; the node answered a different request, do not trust this result")]
    ForOtherTask {
        /// Which field differs.
        detail: String,
    },
    /// A field of the proof contradicts the request.
    #[error("the proof does not match the delegation: {detail}")]
    Mismatch {
        /// Which field differs.
        detail: String,
    },
}

/// Errors of a whole delegation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelegateError {
    /// Talking to the target failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The target's proof was not accepted.
    #[error("invalid proof from {target}: {source}")]
    Proof {
        /// The target's name.
        target: String,
        /// Why.
        source: ProofError,
    },
    /// The health check found another platform at the address.
    #[error("{addr} is {found}, not {expected}")]
    WrongNode {
        /// The address.
        addr: String,
        /// The target asked for.
        expected: String,
        /// What answered.
        found: String,
    },
    /// The target's health answer names another key than its known one:
    /// its proof could not verify, so the task was not sent.
    #[error("{addr} answers as {target} with key {found}, but {target}'s known key is {expected}; the task was not sent")]
    OtherKey {
        /// The address.
        addr: String,
        /// The target's name.
        target: String,
        /// The key id on record.
        expected: String,
        /// The key id the node's health answer names.
        found: String,
    },
    /// A verified proof whose result is not the one a check task must get:
    /// the peer signed a wrong answer.
    #[error("{target} signed a wrong answer to a check task: {detail}")]
    WrongAnswer {
        /// The target's name.
        target: String,
        /// What was expected and what came.
        detail: String,
    },
    /// The native protocol was asked of a node whose health answer has
    /// none of sage's fields: the Python original.
    #[error("{addr} is a legacy (Python) node: its health answer has none of sage's fields (key_id, version); the task was not sent")]
    LegacyNode {
        /// The address.
        addr: String,
        /// The target's name.
        target: String,
    },
    /// A streaming answer that ended without a verified proof of what it
    /// streamed: cut, ended by the node's error, or a failed run's proof.
    #[error("the stream from {target} was cut: {detail}; what it streamed is not verified")]
    StreamCut {
        /// The target's name (or address).
        target: String,
        /// How it ended.
        detail: String,
    },
    /// A verified proof whose content is not what was streamed.
    #[error("the stream from {target} does not match its signed proof: {detail}; do not trust what it streamed")]
    StreamMismatch {
        /// The target's name.
        target: String,
        /// What differs.
        detail: String,
    },
}

/// Errors of TLS material: certificates, private keys, fingerprints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file cannot be read.
    #[error("cannot read TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate`, `private key` or `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{} is not a PEM {what} file: {detail}; expected a block starting with \"-----BEGIN {label}-----\"", path.display())]
    NotPem {
        /// `certificate`, `private key` or `CA certificate`.
        what: &'static str,
        /// The PEM label expected (`CERTIFICATE`, `PRIVATE KEY`).
        label: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser found.
        detail: String,
    },
    /// A PEM certificate whose contents are not a valid certificate.
    #[error("{} holds an invalid certificate: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is not the one of the certificate.
    #[error("private key {} does not belong to certificate {} (their public keys differ); pass the key that was made with the certificate", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate and key cannot be used for another reason (an
    /// unsupported key type, say).
    #[error("cannot serve TLS with certificate {} and key {}: {detail}", cert.display(), key.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The TLS library's reason.
        detail: String,
    },
    /// A file `sage tls self-signed` would overwrite.
    #[error("{} already exists", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Writing a certificate or key failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// A certificate cannot be made as asked (a name that is neither a DNS
    /// name nor an IP address, say).
    #[error("cannot make the certificate: {detail}")]
    Generate {
        /// What is wrong.
        detail: String,
    },
}

impl ClientError {
    /// The stable snake_case code of this failure: a node's refusal
    /// carries the node's own problem code.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Refused { problem, .. } => problem.code.as_str(),
            ClientError::BadAddress { .. } => "bad_address",
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Broken { .. } => "broken",
            ClientError::NoConnection { .. } => "no_connection",
            ClientError::TimedOut { .. } => "timed_out",
            ClientError::BadResponse { .. } => "bad_response",
            ClientError::TooLarge { .. } => "answer_too_large",
            ClientError::Unhealthy { .. } => "unhealthy",
            ClientError::Tls { .. } => "tls",
            ClientError::SpeaksTls { .. } => "speaks_tls",
            ClientError::TlsSettings(_) => "tls_files",
            #[allow(unreachable_patterns)]
            _ => "client",
        }
    }
}

impl DelegateError {
    /// The stable snake_case code of this failure, shared by `--json` and
    /// the local API's problems.
    pub fn code(&self) -> &'static str {
        match self {
            DelegateError::Client(e) => e.code(),
            DelegateError::Proof { .. } => "invalid_proof",
            DelegateError::WrongNode { .. } => "wrong_node",
            DelegateError::OtherKey { .. } => "other_key",
            DelegateError::WrongAnswer { .. } => "wrong_answer",
            DelegateError::LegacyNode { .. } => "legacy_node",
            DelegateError::StreamCut { .. } => "stream_cut",
            DelegateError::StreamMismatch { .. } => "stream_mismatch",
            #[allow(unreachable_patterns)]
            _ => "delegation_failed",
        }
    }
}
