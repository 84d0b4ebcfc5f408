//! How a node authenticates a peer's TLS certificate when the peer's
//! address is `https://`: [`TlsTrust`], and the [`CertFingerprint`] that
//! pins one certificate.
//!
//! TLS is optional in `sage`: every task and proof is signed, so TLS adds
//! confidentiality (of task inputs, results and of who talks to whom), not
//! integrity. This module only describes the trust; the service reads the
//! files and runs the handshakes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::sha256;
use crate::FingerprintError;

/// The SHA-256 of a certificate's DER encoding, written `sha256:` and 64
/// lowercase hex digits (the form `sage tls fingerprint` prints).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        CertFingerprint(sha256(der))
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl FromStr for CertFingerprint {
    type Err = FingerprintError;

    /// Parses `sha256:HEX`. Case is ignored, and so are `:` between hex
    /// pairs, so that `openssl x509 -fingerprint -sha256` output can be
    /// pasted after `sha256:`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError {
            given: text.to_owned(),
        };
        let trimmed = text.trim();
        let (scheme, hex_part) = trimmed.split_once(':').ok_or_else(bad)?;
        if !scheme.eq_ignore_ascii_case("sha256") {
            return Err(bad());
        }
        let digits: String = hex_part.chars().filter(|&c| c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes).map_err(|_| bad())?;
        Ok(CertFingerprint(bytes))
    }
}

/// How to authenticate the TLS server certificate of a peer reached at an
/// `https://` address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TlsTrust {
    /// The built-in web PKI roots (Mozilla's, as `reqwest` ships them):
    /// for a peer behind a publicly trusted certificate.
    #[default]
    WebPki,
    /// Certificates issued by the CA(s) in this PEM file; the address's
    /// host name or IP must be in the certificate, and it must be within
    /// its validity. A self-signed certificate is its own CA.
    Ca(PathBuf),
    /// Exactly the certificate with this fingerprint, whatever its names
    /// and validity dates: pinning, for a small fleet of self-signed
    /// certificates. The handshake's signature is still verified against
    /// that certificate's key.
    Fingerprint(CertFingerprint),
}

impl TlsTrust {
    /// Whether this is the default trust (no setting in the peer record).
    pub fn is_default(&self) -> bool {
        matches!(self, TlsTrust::WebPki)
    }
}

impl fmt::Display for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsTrust::WebPki => f.write_str("web PKI roots"),
            TlsTrust::Ca(path) => write!(f, "CA {}", path.display()),
            TlsTrust::Fingerprint(fp) => write!(f, "pinned {fp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse() {
        let fp = CertFingerprint::of_der(b"abc");
        let text = fp.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(text.parse::<CertFingerprint>().unwrap(), fp);
        assert_eq!(
            text.to_uppercase().parse::<CertFingerprint>().unwrap(),
            fp,
            "case is ignored"
        );
        let openssl = "sha256:BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";
        assert_eq!(openssl.parse::<CertFingerprint>().unwrap(), fp);
    }

    #[test]
    fn bad_fingerprints_are_refused_with_the_text() {
        for bad in [
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha1:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "sha256:ba78",
            "sha256:zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "",
        ] {
            let err = bad.parse::<CertFingerprint>().unwrap_err();
            assert_eq!(err.given, bad);
            assert!(err.to_string().contains("sha256:"), "{err}");
        }
    }
}
