//! Content-addressed blobs: inputs too large for a task's body, uploaded
//! on their own (`PUT /v1/blobs/sha256:<hex>`) and named by a task.

use serde::{Deserialize, Serialize};

/// `payloadType` of an envelope that carries a [`BlobGrant`].
pub const BLOB_PAYLOAD_TYPE: &str = "application/vnd.sage.blob+json; version=1";

/// The request header that carries a signed [`BlobGrant`]: the base64 of
/// the envelope's JSON.
pub const BLOB_GRANT_HEADER: &str = "sage-blob-grant";

/// The prefix of a blob digest.
pub const SHA256_PREFIX: &str = "sha256:";

/// A blob a task refers to, by its digest and its size. Inside the signed
/// task, so the signature covers the digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// `sha256:` and 64 lowercase hex digits of the bytes' SHA-256.
    pub digest: String,
    /// The number of bytes.
    pub size: u64,
}

impl BlobRef {
    /// The 64 hex digits of the digest, if it is a well-formed one.
    pub fn hex(&self) -> Option<&str> {
        digest_hex(&self.digest)
    }
}

/// The 64 lowercase hex digits of `digest` (`sha256:<hex>`), if well formed.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// What an uploader signs to be let to upload one blob to one node: the
/// blob's digest and size, who sends it, for whom, and for how long.
/// Times are unix milliseconds, with the same rules as a task's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobGrant {
    /// `sha256:<hex>`: must be the path's.
    pub digest: String,
    /// The blob's size in bytes: the body may not be longer.
    pub size: u64,
    /// LCT id of the uploader; must be the signer's.
    pub issuer: String,
    /// LCT id of the node meant to keep the blob.
    pub audience: String,
    /// When the uploader signed it (unix ms).
    pub issued_at: u64,
    /// After this instant (unix ms) the grant lets nothing in.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_sha256_digests_are_well_formed() {
        let hex = "ab".repeat(32);
        assert_eq!(digest_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(digest_hex(&format!("sha256:{}", hex.to_uppercase())), None);
        assert_eq!(digest_hex(&format!("sha512:{hex}")), None);
        assert_eq!(digest_hex(&format!("sha256:{}", &hex[1..])), None);
        assert_eq!(digest_hex("sha256:../../etc/passwd"), None);
    }
}
