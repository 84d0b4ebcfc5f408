//! Blobs sent before the task that names them: a file hashed as it is
//! read, a signed grant for one node, and the upload (`HEAD` first, so a
//! retry does not send the bytes again), streamed from the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sage_crypto::digest::StreamDigest;
use sage_crypto::{sign_envelope, NodeKey};
use sage_types::blob::{BlobGrant, BLOB_PAYLOAD_TYPE};
use sage_types::clock::now_ms;
use sage_types::BlobRef;
use tokio::io::AsyncReadExt as _;

use super::client::Client;
use crate::ClientError;

/// A file to send as a blob, with its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBlob {
    /// Where it is read from.
    pub path: PathBuf,
    /// Its digest and size, as the task names it.
    pub blob: BlobRef,
}

/// A file that cannot be read as a blob.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct BlobFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Hashes the file at `path`, reading it a chunk at a time.
///
/// # Errors
/// The file cannot be opened or read.
pub async fn hash_file(path: &Path) -> Result<LocalBlob, BlobFileError> {
    let failed = |source| BlobFileError {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await.map_err(failed)?;
    let mut digest = StreamDigest::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = file.read(&mut buf).await.map_err(failed)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        size += n as u64;
    }
    Ok(LocalBlob {
        path: path.to_owned(),
        blob: BlobRef {
            digest: digest.finish_tagged(),
            size,
        },
    })
}

/// The `sage-blob-grant` header value: a grant from `issuer` for
/// `audience` (LCT ids) to upload `blob`, valid for `lifetime`, signed.
pub fn grant(
    key: &NodeKey,
    issuer: &str,
    audience: &str,
    blob: &BlobRef,
    lifetime: Duration,
) -> String {
    let now = now_ms();
    let grant = BlobGrant {
        digest: blob.digest.clone(),
        size: blob.size,
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        issued_at: now,
        expires_at: now + lifetime.as_millis() as u64,
    };
    // Strings and integers only: serializing cannot fail.
    let payload = serde_json::to_vec(&grant).expect("a grant always serializes");
    let envelope = sign_envelope(key, BLOB_PAYLOAD_TYPE, &payload);
    let json = serde_json::to_vec(&envelope).expect("an envelope always serializes");
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// What an upload came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// The node had the blob: nothing was sent.
    Present,
    /// The bytes were sent and stored.
    Sent,
}

/// Sends `local` to the node at `addr` unless it has it, under a grant
/// signed by `key` for `audience`.
///
/// # Errors
/// The node's refusal or a transport error ([`ClientError`]), or the file
/// cannot be opened ([`ClientError::Setup`]).
pub async fn upload(
    client: &Client,
    addr: &str,
    (key, issuer, audience): (&NodeKey, &str, &str),
    local: &LocalBlob,
    timeout: Duration,
) -> Result<Uploaded, ClientError> {
    let grant = grant(key, issuer, audience, &local.blob, timeout);
    let digest = &local.blob.digest;
    if client.has_blob(addr, digest, &grant, timeout).await? {
        return Ok(Uploaded::Present);
    }
    let file = tokio::fs::File::open(&local.path)
        .await
        .map_err(|e| ClientError::Setup(format!("cannot open {}: {e}", local.path.display())))?;
    client
        .put_blob(addr, digest, &grant, (file, local.blob.size), timeout)
        .await?;
    Ok(Uploaded::Sent)
}
