//! `PUT /v1/blobs/sha256:<hex>` and `HEAD` of the same: inputs larger than
//! a task's body, uploaded on their own and named by digest in the task.
//!
//! The order is the security argument, as for tasks: the signed grant in
//! the `sage-blob-grant` header is bounded, verified and checked (signer,
//! audience, time window, digest, size) before a byte of the body is read.
//! The body is then streamed to a temporary file under `STATE_DIR/blobs/tmp`
//! while it is hashed, never held whole; only bytes whose SHA-256 is the
//! digest, and no more of them than the grant's size, are fsynced and
//! renamed to `STATE_DIR/blobs/sha256/<hex>`, so a crash or a refusal
//! leaves no partial blob under a final name.
//!
//! A blob's modification time is when it may be deleted: its upload time
//! plus `unreferenced_blob_ttl`, until a task that names it is admitted,
//! which moves it to the end of that task's record (its `keep_until` plus
//! the task retention). It is on disk, so it holds across restarts.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use sage_crypto::digest::StreamDigest;
use sage_crypto::Peer;
use sage_types::blob::{digest_hex, BlobGrant, BLOB_GRANT_HEADER, BLOB_PAYLOAD_TYPE};
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;
use sage_types::{BlobRef, Envelope, ProblemCode};
use tokio::io::AsyncWriteExt as _;

use super::admission::{check_not_expired, check_rate};
use super::state::{Inner, Policy};
use super::tasks::verify_signed;
use super::{ApiError, AppState};

/// Largest `sage-blob-grant` header accepted: a grant is about 300 bytes
/// of JSON, its envelope and base64 well under this.
pub const MAX_GRANT_HEADER_BYTES: usize = 4096;

/// A blob's kept-until time when tasks are kept forever: far enough.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The node's blobs: `ROOT/sha256/<hex>`, uploads in progress in
/// `ROOT/tmp`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// How long a finished task's record is kept past its `keep_until`
    /// (`None`: forever), and so the blobs it names.
    retention: Option<Duration>,
    /// Held while a blob's time is judged or moved, so that the collector
    /// never deletes a blob that a task is being admitted with.
    times: Arc<Mutex<()>>,
}

impl BlobStore {
    /// Opens (creating) the blob directory `root`, and deletes the
    /// uploads a stopped node left unfinished. `retention` is the task
    /// records' (`None`: kept forever).
    ///
    /// # Errors
    /// The directories cannot be made or read.
    pub fn open(root: &Path, retention: Option<Duration>) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("sha256"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(BlobStore {
            root: root.to_owned(),
            retention,
            times: Arc::default(),
        })
    }

    /// Where the blob of `hex` is kept.
    pub fn path_of(&self, hex: &str) -> PathBuf {
        self.root.join("sha256").join(hex)
    }

    /// The size of the blob of `hex`, if the node has it.
    fn size_of(&self, hex: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.path_of(hex)) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks that every blob of `refs` is here with its size, and keeps
    /// each at least as long as a task record kept until `keep_until_ms`.
    pub(super) fn hold(&self, refs: &[BlobRef], keep_until_ms: u64) -> Result<(), ApiError> {
        let keep = match self.retention {
            Some(retention) => UNIX_EPOCH + Duration::from_millis(keep_until_ms) + retention,
            None => SystemTime::now() + FOREVER,
        };
        let _times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        for blob in refs {
            let missing = || {
                ApiError::new(
                    ProblemCode::BlobMissing,
                    format!(
                        "this node has no blob {} of {} bytes; upload it (PUT /v1/blobs/{}) before the task",
                        Untrusted(&blob.digest),
                        blob.size,
                        Untrusted(&blob.digest)
                    ),
                )
            };
            let hex = blob.hex().ok_or_else(|| {
                ApiError::new(
                    ProblemCode::Malformed,
                    format!(
                        "blob digest {} is not sha256: and 64 lowercase hex digits",
                        Untrusted(&blob.digest)
                    ),
                )
            })?;
            let file = match std::fs::File::open(self.path_of(hex)) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(internal(&e)),
            };
            let meta = file.metadata().map_err(|e| internal(&e))?;
            if meta.len() != blob.size {
                return Err(missing());
            }
            if meta.modified().map_err(|e| internal(&e))? < keep {
                file.set_modified(keep).map_err(|e| internal(&e))?;
            }
        }
        Ok(())
    }

    /// Deletes the blobs whose time to be kept (see the module) ended more
    /// than `ttl` before `now`; returns how many.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn collect_garbage(&self, ttl: Duration, now: SystemTime) -> io::Result<usize> {
        let mut deleted = 0;
        for entry in std::fs::read_dir(self.root.join("sha256"))? {
            let entry = entry?;
            let _times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            if modified + ttl < now {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(deleted)
    }

    /// Streams `body` to a temporary file while hashing it; keeps it as the
    /// blob of `hex` only if it is exactly `size` bytes whose digest is
    /// `hex`'s. Whatever is refused leaves nothing behind.
    async fn receive(&self, hex: &str, size: u64, mut body: Body) -> Result<(), ApiError> {
        let tmp = self.root.join("tmp").join(format!(
            "{hex}.{:016x}",
            rand::random::<u64>()
        ));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| internal(&e))?;
        let removing = RemoveOnDrop(Some(tmp.clone()));
        let mut digest = StreamDigest::default();
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    ProblemCode::Malformed,
                    format!("cannot read the blob's body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > size {
                return Err(ApiError::new(
                    ProblemCode::TooLarge,
                    format!("the body is longer than the {size} bytes its grant names"),
                ));
            }
            digest.update(&data);
            file.write_all(&data).await.map_err(|e| internal(&e))?;
        }
        if received != size {
            return Err(ApiError::new(
                ProblemCode::Malformed,
                format!("the body has {received} bytes, its grant names {size}"),
            ));
        }
        let got = digest.finish_tagged();
        if got != format!("sha256:{hex}") {
            return Err(ApiError::new(
                ProblemCode::DigestMismatch,
                format!("the body's digest is {got}, not sha256:{hex}; nothing was kept"),
            ));
        }
        file.sync_all().await.map_err(|e| internal(&e))?;
        drop(file);
        let dest = self.path_of(hex);
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| internal(&e))?;
        std::mem::forget(removing);
        // The rename is durable once the directory is.
        let dir = self.root.join("sha256");
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(|e| internal(&io::Error::other(e)))?
            .map_err(|e| internal(&e))?;
        Ok(())
    }
}

/// Deletes an unfinished upload's file, however its request ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn internal(e: &io::Error) -> ApiError {
    ApiError::new(ProblemCode::Internal, format!("blob store: {e}"))
}

/// `PUT /v1/blobs/sha256:<hex>`: 201 when stored, 200 when the node had it.
pub(super) async fn put(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    let inner = state.inner();
    let blobs = inner.blobs()?;
    let (hex, grant, signer) = authorize(inner, &policy, &name, &headers, true)?;
    let peer = signer.name.clone();
    check_rate(inner, &policy.limits, signer).map_err(|e| e.from_peer(&peer))?;
    let stored = match blobs.size_of(hex).map_err(|e| internal(&e))? {
        Some(size) if size == grant.size => false,
        _ => {
            blobs
                .receive(hex, grant.size, body)
                .await
                .map_err(|e| e.from_peer(&peer))?;
            tracing::info!(digest = %grant.digest, size = grant.size, issuer = %Untrusted(&grant.issuer), "blob stored");
            true
        }
    };
    let status = if stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answer = serde_json::json!({"digest": grant.digest, "size": grant.size, "stored": stored});
    Ok((status, axum::Json(answer)).into_response())
}

/// `HEAD /v1/blobs/sha256:<hex>`: 200 (with its `Content-Length`) when the
/// node has the blob, 404 when not. The same grant as the upload's, so that
/// no one learns what a node holds without being allowed to upload it.
pub(super) async fn head(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    let inner = state.inner();
    let blobs = inner.blobs()?;
    let (hex, grant, _) = authorize(inner, &policy, &name, &headers, false)?;
    match blobs.size_of(hex).map_err(|e| internal(&e))? {
        Some(size) if size == grant.size => {
            Ok((StatusCode::OK, [(header::CONTENT_LENGTH, size)]).into_response())
        }
        _ => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

/// The checks of an upload's grant, all before its body is read: the
/// path's digest, the header's size, the signature by a known key (or the
/// node's own), the issuer, the audience, the time window, the size limit
/// and, of an upload (`body`), the `Content-Length`.
fn authorize<'a, 'n>(
    inner: &'a Inner,
    policy: &'a Policy,
    name: &'n str,
    headers: &HeaderMap,
    body: bool,
) -> Result<(&'n str, BlobGrant, &'a Peer), ApiError> {
    use ProblemCode::*;
    let refuse = |code, detail: String| Err(ApiError::new(code, detail));
    let Some(hex) = digest_hex(name) else {
        return refuse(
            Malformed,
            format!(
                "{} is not sha256: and 64 lowercase hex digits",
                Untrusted(name)
            ),
        );
    };
    let Some(value) = headers.get(BLOB_GRANT_HEADER) else {
        return refuse(
            InvalidSignature,
            format!("an upload needs a {BLOB_GRANT_HEADER} header: a grant signed by a key this node trusts"),
        );
    };
    if value.len() > MAX_GRANT_HEADER_BYTES {
        return refuse(
            TooLarge,
            format!("the {BLOB_GRANT_HEADER} header exceeds {MAX_GRANT_HEADER_BYTES} bytes"),
        );
    }
    let envelope: Envelope = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| {
            ApiError::new(
                Malformed,
                format!("the {BLOB_GRANT_HEADER} header is not the base64 of an envelope's JSON"),
            )
        })?;
    let verified = verify_signed(inner, policy, &envelope, BLOB_PAYLOAD_TYPE)?;
    let signer = verified.signer;
    let from = |e: ApiError| e.from_peer(&signer.name);
    let grant: BlobGrant = serde_json::from_slice(&verified.payload).map_err(|e| {
        from(ApiError::new(
            Malformed,
            format!("signed payload is not a blob grant: {e}"),
        ))
    })?;
    let limits = &policy.limits;
    let now = now_ms();
    let skew = limits.clock_skew.as_millis() as u64;
    let problem = if grant.issuer != signer.lct_id {
        Some((
            InvalidSignature,
            format!(
                "grant claims issuer {} but is signed by the key of {} ({})",
                Untrusted(&grant.issuer),
                signer.name,
                signer.lct_id
            ),
        ))
    } else if grant.audience != inner.lct_id {
        Some((
            WrongAudience,
            format!(
                "grant is meant for {}, this node is {}",
                Untrusted(&grant.audience),
                inner.lct_id
            ),
        ))
    } else if grant.expires_at < grant.issued_at
        || grant.issued_at > now.saturating_add(skew)
        || grant.expires_at - grant.issued_at > limits.max_task_lifetime.as_millis() as u64
    {
        Some((
            Expired,
            format!(
                "grant's validity window is not within this node's clock (allowed skew {} s) and task lifetime ({} s)",
                limits.clock_skew.as_secs(),
                limits.max_task_lifetime.as_secs()
            ),
        ))
    } else if grant.digest != name {
        Some((
            Malformed,
            format!(
                "grant is for {}, not {}",
                Untrusted(&grant.digest),
                Untrusted(name)
            ),
        ))
    } else if grant.size > limits.max_blob_bytes {
        Some((
            TooLarge,
            format!(
                "blob of {} bytes exceeds this node's limit of {} bytes (max_blob_bytes)",
                grant.size, limits.max_blob_bytes
            ),
        ))
    } else {
        None
    };
    if let Some((code, detail)) = problem {
        return Err(from(ApiError::new(code, detail)));
    }
    check_not_expired(limits, grant.expires_at, now).map_err(from)?;
    if let Some(length) = headers.get(header::CONTENT_LENGTH).filter(|_| body) {
        let length: Option<u64> = length.to_str().ok().and_then(|l| l.parse().ok());
        if length != Some(grant.size) {
            return Err(from(ApiError::new(
                Malformed,
                format!(
                    "Content-Length is not the grant's size of {} bytes",
                    grant.size
                ),
            )));
        }
    }
    Ok((hex, grant, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_blob_outlives_the_ttl_and_an_unheld_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), Some(Duration::from_secs(60))).unwrap();
        let (held, loose) = ("a".repeat(64), "b".repeat(64));
        std::fs::write(store.path_of(&held), b"xy").unwrap();
        std::fs::write(store.path_of(&loose), b"z").unwrap();
        let now_ms = now_ms();
        let held_ref = BlobRef {
            digest: format!("sha256:{held}"),
            size: 2,
        };
        store.hold(&[held_ref.clone()], now_ms + 10_000).unwrap();
        // A wrong size is a missing blob.
        let wrong = BlobRef { size: 3, ..held_ref };
        assert_eq!(
            store.hold(&[wrong], now_ms).unwrap_err().code,
            ProblemCode::BlobMissing
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        assert_eq!(store.collect_garbage(Duration::from_secs(5), later).unwrap(), 1);
        assert!(store.path_of(&held).exists());
        assert!(!store.path_of(&loose).exists());
        // Past the task's keep_until, its retention and the ttl: gone.
        let much_later = SystemTime::now() + Duration::from_secs(10 + 60 + 6);
        assert_eq!(store.collect_garbage(Duration::from_secs(5), much_later).unwrap(), 1);
        assert!(!store.path_of(&held).exists());
    }

    #[test]
    fn opening_clears_unfinished_uploads() {
        let dir = tempfile::tempdir().unwrap();
        BlobStore::open(dir.path(), None).unwrap();
        std::fs::write(dir.path().join("tmp").join("half"), b"x").unwrap();
        BlobStore::open(dir.path(), None).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
