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
//! How long a blob is kept is [`BlobStore`](super::BlobStore)'s.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sage_crypto::Peer;
use sage_types::blob::{digest_hex, BlobGrant, BLOB_GRANT_HEADER, BLOB_PAYLOAD_TYPE};
use sage_types::clock::now_ms;
use sage_types::untrusted::Untrusted;
use sage_types::{Envelope, ProblemCode};

use super::admission::{check_not_expired, check_rate};
use super::blob_store::internal;
use super::state::{Inner, Policy};
use super::tasks::verify_signed;
use super::{ApiError, AppState};

/// Largest `sage-blob-grant` header accepted: a grant is about 300 bytes
/// of JSON, its envelope and base64 well under this.
pub const MAX_GRANT_HEADER_BYTES: usize = 4096;

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
