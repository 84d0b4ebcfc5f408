//! TLS for `sage serve` and for `https://` peers, with rustls and its
//! *ring* provider (the one reqwest's rustls uses).
//!
//! - [`ServerTls`]: a node's certificate chain and private key, read and
//!   checked once at start (a garbage file or a key of another certificate
//!   is an error naming the file).
//! - [`client_config`]: the rustls client settings for a peer's
//!   [`TlsTrust`]: a CA file, or a pinned certificate fingerprint (checked
//!   by [`PinnedCertVerifier`], which ignores names and dates but still
//!   verifies the handshake's signature with the pinned certificate's key).
//! - [`self_signed`] and [`write_self_signed`]: `sage tls self-signed`;
//!   [`certificate_fingerprint`]: `sage tls fingerprint`.
//!
//! Signatures already make every task and proof tamper-evident; TLS adds
//! confidentiality of inputs and results, and hides which peers talk.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sage_crypto::{CertFingerprint, TlsTrust};
use zeroize::Zeroizing;

use crate::files::write_atomically;
use crate::{KeyDirError, TlsError, TlsProblem};

/// The crypto provider of every TLS config `sage` builds.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's TLS identity for `sage serve --tls-cert --tls-key`.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    fingerprint: CertFingerprint,
    key_loose_mode: Option<u32>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the PEM certificate chain `cert` (the node's certificate
    /// first) and the PEM private key `key` (PKCS#8, PKCS#1 or SEC1), and
    /// checks that the key is the certificate's.
    ///
    /// # Errors
    /// [`TlsError`] naming the file: unreadable, not PEM, an invalid
    /// certificate, a key of another certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates(cert, "certificate")?;
        let fingerprint = CertFingerprint::of_der(&chain[0]);
        let key_der = read_private_key(key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| unusable(cert, key, &e))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch {
                        cert: cert.to_owned(),
                        key: key.to_owned(),
                    }
                }
                rustls::Error::InvalidCertificate(detail) => TlsError::BadCertificate {
                    path: cert.to_owned(),
                    detail: format!("{detail:?}"),
                },
                other => unusable(cert, key, &other),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            key_loose_mode: loose_mode(key),
        })
    }

    /// The fingerprint of the node's certificate, for peers to pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The key file's mode when group or others may read it.
    pub fn key_loose_mode(&self) -> Option<u32> {
        self.key_loose_mode
    }

    /// The acceptor that runs the server side of handshakes.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

fn unusable(cert: &Path, key: &Path, err: &rustls::Error) -> TlsError {
    TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        detail: err.to_string(),
    }
}

#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    // systemd's credentials (`LoadCredential=`) show their ACL mask in the
    // group bits (0440 is normal there): only others count.
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .is_some_and(|dir| !dir.is_empty() && path.starts_with(dir));
    let loose = if credential { 0o007 } else { 0o077 };
    (mode & loose != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

/// The certificates of a PEM file, in order; at least one, each a valid
/// X.509 certificate.
///
/// # Errors
/// [`TlsError::Read`], [`TlsError::NotPem`] or [`TlsError::BadCertificate`]
/// naming `path`; `what` says which file it is in the message.
pub fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let not_pem = |detail: String| TlsError::NotPem {
        what,
        label: "CERTIFICATE",
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no certificate in it".into()));
    }
    for cert in &certs {
        rustls::server::ParsedCertificate::try_from(cert).map_err(|e| {
            TlsError::BadCertificate {
                path: path.to_owned(),
                detail: e.to_string(),
            }
        })?;
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| TlsError::Read {
        what: "private key",
        path: path.to_owned(),
        source,
    })?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::NotPem {
        what: "private key",
        label: "PRIVATE KEY",
        path: path.to_owned(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in it".into(),
            other => other.to_string(),
        },
    })
}

/// The fingerprint of the first certificate in a PEM file (what
/// `sage tls fingerprint FILE` prints and peers pin).
///
/// # Errors
/// As [`read_certificates`].
pub fn certificate_fingerprint(path: &Path) -> Result<CertFingerprint, TlsError> {
    let certs = read_certificates(path, "certificate")?;
    Ok(CertFingerprint::of_der(&certs[0]))
}

/// The rustls client settings for talking to a peer with `trust`; `None`
/// for [`TlsTrust::WebPki`], where reqwest's own (built-in roots) apply.
///
/// # Errors
/// A CA file that cannot be read or holds no valid certificate.
pub fn client_config(trust: &TlsTrust) -> Result<Option<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Generate {
                detail: format!("TLS client settings: {e}"),
            })
    };
    let config = match trust {
        TlsTrust::WebPki => return Ok(None),
        TlsTrust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certificates(path, "CA certificate")? {
                roots.add(cert).map_err(|e| TlsError::BadCertificate {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            }
            builder()?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        TlsTrust::Fingerprint(pin) => builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(
                *pin,
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    Ok(Some(config))
}

/// Accepts exactly the server certificate whose SHA-256 is the pinned
/// fingerprint, whatever its names, issuer and dates; the handshake's
/// signatures are verified with that certificate's key as usual, so only
/// the holder of its private key gets through.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    /// A verifier pinning `pin`, verifying signatures with `algorithms`.
    pub fn new(pin: CertFingerprint, algorithms: WebPkiSupportedAlgorithms) -> Self {
        PinnedCertVerifier { pin, algorithms }
    }
}

/// The pinned fingerprint and the presented one differ.
#[derive(Debug)]
struct PinMismatch {
    pinned: CertFingerprint,
    presented: CertFingerprint,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate fingerprint mismatch: the server presented {}, but {} is pinned",
            self.presented, self.pinned
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = CertFingerprint::of_der(end_entity);
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                pinned: self.pin,
                presented,
            }))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS failure as a sentence (the pin mismatch as the verifier words
/// it, the rest as rustls does, with the usual cause where there is one)
/// and its kind, on which a caller can base its advice.
pub(crate) fn describe_tls_error(err: &rustls::Error) -> (String, TlsProblem) {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::Other(other)) => {
            (other.to_string(), TlsProblem::PinMismatch)
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => (
            format!("{err} (the certificate is not issued by a trusted CA)"),
            TlsProblem::UnknownIssuer,
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => (err.to_string(), TlsProblem::WrongName),
        rustls::Error::InvalidMessage(_) => (
            format!("{err}; is the node serving plain HTTP? then use an http:// address"),
            TlsProblem::Other,
        ),
        other => (other.to_string(), TlsProblem::Other),
    }
}

/// What `sage tls self-signed` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSignedPlan {
    /// The certificate's common name and the files' stem (`thor` →
    /// `thor.crt`, `thor.key`).
    pub name: String,
    /// Subject alternative names: IP addresses become IP SANs, the rest
    /// DNS names. Empty: the name alone.
    pub sans: Vec<String>,
    /// Days of validity from now.
    pub days: u32,
}

/// A self-signed certificate and its private key, in PEM.
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8); zeroized on drop.
    pub key_pem: Zeroizing<String>,
    /// The certificate's fingerprint.
    pub fingerprint: CertFingerprint,
    /// The SANs it names.
    pub sans: Vec<String>,
    /// The end of its validity, as unix seconds.
    pub not_after_unix: i64,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .field("sans", &self.sans)
            .finish_non_exhaustive()
    }
}

/// Makes a self-signed ECDSA P-256 server certificate: its own CA (no CA
/// constraint, so it can be pinned or given to peers as `tls_ca`), valid
/// from an hour ago (for clocks a little behind) for `plan.days` days.
///
/// # Errors
/// [`TlsError::Generate`] for a SAN that is neither an IP address nor a
/// DNS name, or no days of validity.
pub fn self_signed(plan: &SelfSignedPlan) -> Result<SelfSigned, TlsError> {
    let bad = |detail: String| TlsError::Generate { detail };
    if plan.days == 0 {
        return Err(bad("its validity must be at least 1 day".into()));
    }
    let sans = if plan.sans.is_empty() {
        vec![plan.name.clone()]
    } else {
        plan.sans.clone()
    };
    let mut names = Vec::with_capacity(sans.len());
    for san in &sans {
        names.push(match san.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) if is_dns_name(san) => rcgen::SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|e| bad(format!("{san:?}: {e}")))?,
            ),
            Err(_) => {
                return Err(bad(format!(
                    "{san:?} is neither an IP address nor a DNS name (letters, digits, '-' and '.')"
                )))
            }
        });
    }
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = names;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, plan.name.clone());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(plan.days));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // a positive serial
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| bad(format!("cannot make a key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| bad(format!("cannot sign the certificate: {e}")))?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
        fingerprint: CertFingerprint::of_der(cert.der()),
        sans,
        not_after_unix: params.not_after.unix_timestamp(),
    })
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Where [`write_self_signed`] wrote.
#[derive(Debug)]
pub struct SelfSignedFiles {
    /// `DIR/NAME.crt`, mode 0644.
    pub cert_path: PathBuf,
    /// `DIR/NAME.key`, mode 0600.
    pub key_path: PathBuf,
    /// What was written.
    pub cert: SelfSigned,
}

/// Makes a self-signed certificate ([`self_signed`]) and writes it to
/// `dir/NAME.crt` and its key to `dir/NAME.key` (mode 0600), each
/// atomically. Without `force`, an existing file is an error and nothing
/// is written.
///
/// # Errors
/// [`TlsError::Exists`], [`TlsError::Write`], or as [`self_signed`].
pub fn write_self_signed(
    dir: &Path,
    plan: &SelfSignedPlan,
    force: bool,
) -> Result<SelfSignedFiles, TlsError> {
    if !sage_types::identity::is_valid_name(&plan.name) {
        return Err(TlsError::Generate {
            detail: format!(
                "invalid name {:?}: use 1 to 64 ASCII letters, digits, '-' or '_' (it names the files)",
                plan.name
            ),
        });
    }
    let cert_path = dir.join(format!("{}.crt", plan.name));
    let key_path = dir.join(format!("{}.key", plan.name));
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(TlsError::Exists { path: path.clone() });
            }
        }
    }
    let cert = self_signed(plan)?;
    let write = |path: &Path, bytes: &[u8], mode| {
        write_atomically(path, bytes, mode, force).map_err(|e| match e {
            KeyDirError::Exists { path } => TlsError::Exists { path },
            KeyDirError::Write { path, source } => TlsError::Write { path, source },
            other => TlsError::Write {
                path: path.to_owned(),
                source: std::io::Error::other(other.to_string()),
            },
        })
    };
    // The certificate first: if writing the key then fails, no orphan key
    // is left to block a re-run without --force; remove the certificate.
    write(&cert_path, cert.cert_pem.as_bytes(), 0o644)?;
    if let Err(e) = write(&key_path, cert.key_pem.as_bytes(), 0o600) {
        let _ = std::fs::remove_file(&cert_path);
        return Err(e);
    }
    Ok(SelfSignedFiles {
        cert_path,
        key_path,
        cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sans: &[&str]) -> SelfSignedPlan {
        SelfSignedPlan {
            name: "thor".into(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            days: 30,
        }
    }

    #[test]
    fn a_self_signed_certificate_loads_and_its_fingerprint_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let files =
            write_self_signed(dir.path(), &plan(&["thor.local", "192.0.2.10"]), false).unwrap();
        assert_eq!(files.cert.sans, ["thor.local", "192.0.2.10"]);
        let tls = ServerTls::load(&files.cert_path, &files.key_path).unwrap();
        assert_eq!(tls.fingerprint(), files.cert.fingerprint);
        assert_eq!(tls.key_loose_mode(), None, "the key is written 0600");
        assert_eq!(
            certificate_fingerprint(&files.cert_path).unwrap(),
            files.cert.fingerprint
        );
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        assert!(!format!("{:?}", files.cert).contains("PRIVATE"));
    }

    #[test]
    fn existing_files_are_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_self_signed(dir.path(), &plan(&[]), false).unwrap();
        let err = write_self_signed(dir.path(), &plan(&[]), false).unwrap_err();
        assert!(
            matches!(&err, TlsError::Exists { path } if path.ends_with("thor.crt")),
            "{err}"
        );
        assert_eq!(
            certificate_fingerprint(&first.cert_path).unwrap(),
            first.cert.fingerprint
        );
        let second = write_self_signed(dir.path(), &plan(&[]), true).unwrap();
        assert_ne!(second.cert.fingerprint, first.cert.fingerprint);
        assert_eq!(
            certificate_fingerprint(&second.cert_path).unwrap(),
            second.cert.fingerprint
        );
    }

    #[test]
    fn bad_material_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let thor = write_self_signed(dir.path(), &plan(&[]), false).unwrap();
        let mut other = plan(&[]);
        other.name = "other".into();
        let other = write_self_signed(dir.path(), &other, false).unwrap();

        let err = ServerTls::load(&thor.cert_path, &other.key_path).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("other.key"), "{err}");

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = ServerTls::load(&garbage, &thor.key_path).unwrap_err();
        assert!(matches!(err, TlsError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("garbage.crt"), "{err}");

        // PEM armour around bytes that are no certificate.
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = ServerTls::load(&garbage, &thor.key_path).unwrap_err();
        assert!(matches!(err, TlsError::BadCertificate { .. }), "{err}");

        // The certificate given as the key.
        let err = ServerTls::load(&thor.cert_path, &thor.cert_path).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: "private key",
                    ..
                }
            ),
            "{err}"
        );

        let missing = dir.path().join("missing.crt");
        let err = ServerTls::load(&missing, &thor.key_path).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let err = client_config(&TlsTrust::Ca(garbage.clone())).unwrap_err();
        assert!(err.to_string().contains("garbage.crt"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(self_signed(&plan(&["thor.local", "::1", "*.fleet.lan"])).is_ok());
        for bad in ["thor local", "-thor", "thor..local", "thör"] {
            let err = self_signed(&plan(&[bad])).unwrap_err();
            assert!(matches!(err, TlsError::Generate { .. }), "{bad}: {err}");
        }
        let mut zero = plan(&[]);
        zero.days = 0;
        assert!(self_signed(&zero).is_err());
        let dir = tempfile::tempdir().unwrap();
        let mut escape = plan(&[]);
        escape.name = "../thor".into();
        assert!(write_self_signed(dir.path(), &escape, false).is_err());
    }

    #[test]
    fn the_pin_verifier_accepts_only_the_pinned_certificate() {
        let thor = self_signed(&plan(&[])).unwrap();
        let der = CertificateDer::from_pem_slice(thor.cert_pem.as_bytes()).unwrap();
        let algorithms = provider().signature_verification_algorithms;
        let name = ServerName::try_from("anything.invalid").unwrap();
        let verify = |pin| {
            PinnedCertVerifier::new(pin, algorithms).verify_server_cert(
                &der,
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
        };
        assert!(verify(thor.fingerprint).is_ok());
        let wrong = CertFingerprint::of_der(b"another certificate");
        let err = verify(wrong).unwrap_err();
        let (text, problem) = describe_tls_error(&err);
        assert_eq!(problem, TlsProblem::PinMismatch);
        assert!(
            text.contains("fingerprint mismatch")
                && text.contains(&thor.fingerprint.to_string())
                && text.contains(&wrong.to_string()),
            "{text}"
        );
    }
}
