//! Refusals as `application/problem+json` (RFC 9457) with stable codes.

use serde::{Deserialize, Serialize};

/// Media type of a [`Problem`] body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The `detail` of the `malformed` problem a node serving TLS answers a
/// plain-HTTP request with, by which a client knows the port speaks HTTPS.
pub const HTTPS_ONLY_DETAIL: &str = "this port serves HTTPS only: use an https:// address (and the node's certificate fingerprint or CA)";

/// Machine-readable reason for a refusal. The wire names are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemCode {
    /// The signer's key is not in the receiver's trust store.
    UnknownPlatform,
    /// A signature does not verify, or the signer is not the task's issuer.
    InvalidSignature,
    /// The task names another platform as its audience.
    WrongAudience,
    /// The task has expired, or claims to be issued in the future.
    Expired,
    /// This (issuer, nonce) was accepted before.
    Replayed,
    /// The body is not the expected JSON, envelope or payload.
    Malformed,
    /// The body (413) or the request head (431) exceeds the receiver's limit.
    TooLarge,
    /// No executor serves this task type.
    UnsupportedTask,
    /// The task's cost estimate is above what it or the executor allows.
    OverBudget,
    /// The sender is sending too fast.
    RateLimited,
    /// The receiver is at capacity; retry later.
    Busy,
    /// The task could not be executed at all.
    ExecutorFailed,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// The receiver failed; details are in its log.
    Internal,
    /// An uploaded blob's bytes do not hash to the digest it was sent as.
    DigestMismatch,
    /// A task names a blob the receiver does not have (or of another size).
    BlobMissing,
}

impl ProblemCode {
    /// The stable wire name (`invalid_signature`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::UnknownPlatform => "unknown_platform",
            ProblemCode::InvalidSignature => "invalid_signature",
            ProblemCode::WrongAudience => "wrong_audience",
            ProblemCode::Expired => "expired",
            ProblemCode::Replayed => "replayed",
            ProblemCode::Malformed => "malformed",
            ProblemCode::TooLarge => "too_large",
            ProblemCode::UnsupportedTask => "unsupported_task",
            ProblemCode::OverBudget => "over_budget",
            ProblemCode::RateLimited => "rate_limited",
            ProblemCode::Busy => "busy",
            ProblemCode::ExecutorFailed => "executor_failed",
            ProblemCode::NotFound => "not_found",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::Internal => "internal",
            ProblemCode::DigestMismatch => "digest_mismatch",
            ProblemCode::BlobMissing => "blob_missing",
        }
    }

    /// The HTTP status that carries this code (`too_large` of a request
    /// head, which the transport answers before any handler, is 431).
    pub fn http_status(self) -> u16 {
        match self {
            ProblemCode::Malformed => 400,
            // 403 for the authentication failures, as the Python original does.
            ProblemCode::UnknownPlatform
            | ProblemCode::InvalidSignature
            | ProblemCode::WrongAudience
            | ProblemCode::Expired => 403,
            ProblemCode::NotFound => 404,
            ProblemCode::MethodNotAllowed => 405,
            ProblemCode::Replayed | ProblemCode::BlobMissing => 409,
            ProblemCode::TooLarge => 413,
            ProblemCode::UnsupportedTask
            | ProblemCode::OverBudget
            | ProblemCode::DigestMismatch => 422,
            ProblemCode::RateLimited => 429,
            ProblemCode::Internal => 500,
            ProblemCode::ExecutorFailed => 502,
            ProblemCode::Busy => 503,
        }
    }

    /// A short human title.
    pub fn title(self) -> &'static str {
        match self {
            ProblemCode::UnknownPlatform => "Unknown platform",
            ProblemCode::InvalidSignature => "Invalid signature",
            ProblemCode::WrongAudience => "Task meant for another platform",
            ProblemCode::Expired => "Task outside its validity window",
            ProblemCode::Replayed => "Task already received",
            ProblemCode::Malformed => "Malformed request",
            ProblemCode::TooLarge => "Request too large",
            ProblemCode::UnsupportedTask => "Unsupported task type",
            ProblemCode::OverBudget => "Task over budget",
            ProblemCode::RateLimited => "Too many requests",
            ProblemCode::Busy => "Node busy",
            ProblemCode::ExecutorFailed => "Executor failed",
            ProblemCode::NotFound => "Endpoint not found",
            ProblemCode::MethodNotAllowed => "Method not allowed",
            ProblemCode::Internal => "Internal error",
            ProblemCode::DigestMismatch => "Blob does not match its digest",
            ProblemCode::BlobMissing => "Blob not on this node",
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:sage:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The stable machine-readable code.
    pub code: ProblemCode,
    /// Short human summary of the code.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly was wrong, for the sender to act on.
    pub detail: String,
}

impl Problem {
    /// A problem of `code` with `detail`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:sage:problem:{}", code.as_str()),
            code,
            title: code.title().to_owned(),
            status: code.http_status(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_uses_the_stable_code() {
        let p = Problem::new(ProblemCode::InvalidSignature, "signature 0 does not verify");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:sage:problem:invalid_signature");
        assert_eq!(v["code"], "invalid_signature");
        assert_eq!(v["status"], 403);
        assert_eq!(serde_json::from_value::<Problem>(v).unwrap(), p);
    }

    #[test]
    fn as_str_agrees_with_serde() {
        for code in [
            ProblemCode::UnknownPlatform,
            ProblemCode::WrongAudience,
            ProblemCode::TooLarge,
            ProblemCode::UnsupportedTask,
            ProblemCode::OverBudget,
            ProblemCode::RateLimited,
            ProblemCode::ExecutorFailed,
            ProblemCode::MethodNotAllowed,
            ProblemCode::DigestMismatch,
            ProblemCode::BlobMissing,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
