//! [`ApiError`]: every refusal, as one `application/problem+json` response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sage_crypto::VerifyError;
use sage_types::problem::PROBLEM_CONTENT_TYPE;
use sage_types::{Problem, ProblemCode};

use sage_types::untrusted::Untrusted;

/// A refusal: a stable code and a detail for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code; it decides the status.
    pub code: ProblemCode,
    /// What exactly was wrong.
    pub detail: String,
    /// Seconds after which a retry may succeed (`busy`, `rate_limited`).
    pub retry_after: Option<u64>,
    /// The verified peer refused, for the log (`None`: not verified).
    pub peer: Option<String>,
}

/// A refusal as the log sees it, carried on its response to the layer
/// that logs and counts every answer.
#[derive(Debug, Clone)]
pub(super) struct Refused {
    pub(super) code: ProblemCode,
    pub(super) peer: Option<String>,
    /// As sent back: cut, not yet escaped.
    pub(super) detail: String,
}

impl ApiError {
    /// A refusal of `code`.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            retry_after: None,
            peer: None,
        }
    }

    /// Names the verified peer that is refused.
    pub fn from_peer(mut self, name: &str) -> Self {
        self.peer = Some(name.to_owned());
        self
    }

    /// Adds a `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<VerifyError> for ApiError {
    fn from(err: VerifyError) -> Self {
        let code = match &err {
            VerifyError::UnknownKey { .. } => ProblemCode::UnknownPlatform,
            VerifyError::BadSignature { .. } | VerifyError::SignatureCount { count: 0, .. } => {
                ProblemCode::InvalidSignature
            }
            _ => ProblemCode::Malformed,
        };
        let detail = match &err {
            VerifyError::UnknownKey { .. } => {
                format!("{err}; this node does not know the sender's key: its operator must add it with `sage peer add` (with `--replace` for a known peer's new key)")
            }
            _ => err.to_string(),
        };
        ApiError::new(code, detail)
    }
}

/// The most characters of a detail sent back: details quote what the
/// sender sent (a task id, a parser's complaint about a field name), and a
/// refusal must not echo a megabyte of it.
const MAX_DETAIL_CHARS: usize = 1024;

impl ApiError {
    /// The detail as the sender is shown it: an internal error's cause is
    /// logged, not sent; a long detail is cut.
    fn shown_detail(&self) -> String {
        if self.code == ProblemCode::Internal {
            // The caller learns little; the log has the cause.
            tracing::error!(detail = %Untrusted(&self.detail), "internal error");
            "the node failed to handle the request; see its log".to_owned()
        } else if self.detail.chars().nth(MAX_DETAIL_CHARS).is_some() {
            let mut cut: String = self.detail.chars().take(MAX_DETAIL_CHARS).collect();
            cut.push('…');
            cut
        } else {
            self.detail.clone()
        }
    }

    /// The problem as the sender is shown it, for an answer that is
    /// already under way (a stream's last frame).
    pub(super) fn problem(&self) -> Problem {
        Problem::new(self.code, self.shown_detail())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = self.shown_detail();
        let refused = Refused {
            code: self.code,
            peer: self.peer,
            detail: detail.clone(),
        };
        let problem = Problem::new(self.code, detail);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, body).into_response();
        // For the refusal counts and the log (see `observe`).
        response.extensions_mut().insert(refused);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ProblemCode::NotFound,
        format!("Endpoint not found: {}", Untrusted(uri.path())),
    )
}

pub(super) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        ProblemCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            Untrusted(method.as_str()),
            Untrusted(uri.path())
        ),
    )
}
