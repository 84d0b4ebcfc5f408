//! The node's blobs on disk: `STATE_DIR/blobs/sha256/<hex>`, uploads in
//! progress in `STATE_DIR/blobs/tmp`, and when a blob may be deleted.
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
use http_body_util::BodyExt as _;
use sage_crypto::digest::StreamDigest;
use sage_types::untrusted::Untrusted;
use sage_types::{BlobRef, ProblemCode};
use tokio::io::AsyncWriteExt as _;

use super::problem::ApiError;

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
    pub(super) fn size_of(&self, hex: &str) -> io::Result<Option<u64>> {
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
    pub(super) async fn receive(
        &self,
        hex: &str,
        size: u64,
        mut body: Body,
    ) -> Result<(), ApiError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{hex}.{:016x}", rand::random::<u64>()));
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

pub(super) fn internal(e: &io::Error) -> ApiError {
    ApiError::new(ProblemCode::Internal, format!("blob store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sage_types::clock::now_ms;

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
        store
            .hold(std::slice::from_ref(&held_ref), now_ms + 10_000)
            .unwrap();
        // A wrong size is a missing blob.
        let wrong = BlobRef {
            size: 3,
            ..held_ref
        };
        assert_eq!(
            store.hold(&[wrong], now_ms).unwrap_err().code,
            ProblemCode::BlobMissing
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        assert_eq!(
            store
                .collect_garbage(Duration::from_secs(5), later)
                .unwrap(),
            1
        );
        assert!(store.path_of(&held).exists());
        assert!(!store.path_of(&loose).exists());
        // Past the task's keep_until, its retention and the ttl: gone.
        let much_later = SystemTime::now() + Duration::from_secs(10 + 60 + 6);
        assert_eq!(
            store
                .collect_garbage(Duration::from_secs(5), much_later)
                .unwrap(),
            1
        );
        assert!(!store.path_of(&held).exists());
    }

    #[test]
    fn opening_clears_unfinished_uploads() {
        let dir = tempfile::tempdir().unwrap();
        BlobStore::open(dir.path(), None).unwrap();
        std::fs::write(dir.path().join("tmp").join("half"), b"x").unwrap();
        BlobStore::open(dir.path(), None).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
