//! The `http` executor: posts each task to an HTTP service and makes the
//! service's answer the task's result ([`HttpExecutor`], settings
//! [`HttpConfig`], modes [`HttpMode`]).
//!
//! What is sent and what is expected back, in raw and in OpenAI chat mode,
//! and how each failure is reported, is the contract of the
//! [crate documentation](crate) (`docs/executors.md`).

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName};
use sage_types::Task;
use serde_json::{json, Map, Value};

use super::sse::SseParser;
use super::{BoxFuture, Chunks, ExecError, Execution, Executor, FailureKind};
use sage_types::untrusted::Untrusted;

/// The default of [`HttpConfig::timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The default of [`HttpConfig::max_response_bytes`].
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// How much of an error answer's body is read (enough for its first 300
/// characters, which is all the message shows).
const ERROR_BODY_BYTES: usize = 4 * 1024;
/// How many characters of an error answer the message shows.
const ERROR_BODY_CHARS: usize = 300;
/// Headers the executor sets itself; a configured one would clash.
const RESERVED_HEADERS: [&str; 8] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "x-sage-task-id",
    "x-sage-task-type",
    "x-sage-issuer",
];
/// Sampling options copied from the input into a chat request.
const CHAT_OPTIONS: [&str; 5] = ["temperature", "max_tokens", "top_p", "stop", "seed"];

/// Settings of an `http` executor (kind = "http").
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// How long the whole exchange may take.
    pub timeout: Duration,
    /// Extra request headers: name, and where the value comes from.
    pub headers: Vec<(String, HeaderValue)>,
    /// What is sent and how the answer is read.
    pub mode: HttpMode,
    /// The largest answer accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for HttpConfig {
    /// No URL, 120 s, no headers, raw mode, 4 MiB.
    fn default() -> Self {
        HttpConfig {
            url: String::new(),
            timeout: DEFAULT_TIMEOUT,
            headers: Vec::new(),
            mode: HttpMode::Raw,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Where a header's value comes from.
#[derive(Clone, PartialEq)]
pub enum HeaderValue {
    /// This value.
    Literal(String),
    /// The value of the environment variable of this name, read at start.
    Env(String),
}

impl fmt::Debug for HeaderValue {
    // Literal values may be tokens: never shown. An Env holds only a name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValue::Literal(_) => f.write_str("Literal(<redacted>)"),
            HeaderValue::Env(var) => f.debug_tuple("Env").field(var).finish(),
        }
    }
}

/// How the executor talks to the service.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpMode {
    /// The input is the body; the answer is the result.
    Raw,
    /// An OpenAI-compatible chat completion with this model.
    OpenAiChat {
        /// The `model` of every request.
        model: String,
    },
}

/// Why an `http` executor cannot start. No variant holds a header value.
#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    /// A header's environment variable is unset or empty.
    #[error(
        "header `{header}` takes its value from the environment variable `{var}`, \
         which is not set (or empty); set it before starting the node"
    )]
    MissingEnv {
        /// The header.
        header: String,
        /// The environment variable.
        var: String,
    },
    /// A header's name or value cannot be sent.
    #[error("header `{header}`: {detail}")]
    BadHeader {
        /// The header.
        header: String,
        /// What is wrong, without the value.
        detail: String,
    },
    /// The URL is not an `http://` or `https://` URL.
    #[error("bad URL `{url}`: {detail}")]
    BadUrl {
        /// The URL, without credentials or query when it parses.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// Runs tasks by posting them to an HTTP service; see the module
/// documentation.
pub struct HttpExecutor {
    name: String,
    url: reqwest::Url,
    /// The URL for logs and messages: no credentials, no query.
    shown_url: String,
    timeout: Duration,
    /// Resolved, and marked sensitive.
    headers: HeaderMap,
    mode: HttpMode,
    max_response_bytes: usize,
    client: reqwest::Client,
}

impl fmt::Debug for HttpExecutor {
    // Header names only: their values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpExecutor")
            .field("name", &self.name)
            .field("url", &self.shown_url)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("headers", &header_names)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// The executor `name` (for logs) with `config`: checks the URL and
    /// resolves every header now, reading environment variables once.
    ///
    /// # Errors
    /// [`HttpConfigError`] naming the URL, header or variable at fault.
    pub fn new(name: &str, config: HttpConfig) -> Result<Self, HttpConfigError> {
        HttpExecutor::with_env(name, config, |var| std::env::var(var))
    }

    /// [`HttpExecutor::new`], reading the headers' variables from `env`
    /// instead of this process's environment, which tests must not change.
    fn with_env(
        name: &str,
        config: HttpConfig,
        env: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self, HttpConfigError> {
        let url = parse_url(&config.url)?;
        let shown_url = shown(&url);
        let headers = resolve_headers(&config.headers, env)?;
        let client = reqwest::Client::builder()
            // A node talks to its service directly, whatever the environment says.
            .no_proxy()
            // A task is posted to the configured URL only, never re-sent elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .user_agent(concat!("sage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpConfigError::BadUrl {
                url: shown_url.clone(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(HttpExecutor {
            name: name.to_owned(),
            url,
            shown_url,
            timeout: config.timeout,
            headers,
            mode: config.mode,
            max_response_bytes: config.max_response_bytes,
            client,
        })
    }

    /// Sends `request` and returns a 2xx answer, its body unread; records
    /// the status in `status` as soon as it is known.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        status: &mut Option<u16>,
    ) -> Result<reqwest::Response, ExecError> {
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let code = response.status();
        *status = Some(code.as_u16());
        if !code.is_success() {
            // The body only illustrates the failure: a short, lossy excerpt.
            let body = read_at_most(&mut response, ERROR_BODY_BYTES)
                .await
                .map(|(body, _)| body)
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
            return Err(ExecError::new(
                FailureKind::HttpStatus(code.as_u16()),
                format!("HTTP {} from {}: {excerpt}", code.as_u16(), self.shown_url),
            ));
        }
        Ok(response)
    }

    /// Sends `request` and reads a 2xx answer's body; records the status
    /// in `status` as soon as it is known.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        status: &mut Option<u16>,
    ) -> Result<Vec<u8>, ExecError> {
        let mut response = self.send(request, status).await?;
        let too_large = || self.too_large();
        // Refuse early when the length is announced; count anyway, since it
        // may not be.
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes as u64)
        {
            return Err(too_large());
        }
        let (body, truncated) = read_at_most(&mut response, self.max_response_bytes)
            .await
            .map_err(|e| self.transport(e))?;
        if truncated {
            return Err(too_large());
        }
        Ok(body)
    }

    fn too_large(&self) -> ExecError {
        ExecError::new(
            FailureKind::TooLarge,
            format!(
                "response larger than {} bytes from {}",
                self.max_response_bytes, self.shown_url
            ),
        )
    }

    /// Sends a streaming chat `request` and reads its events, passing each
    /// piece of content to `chunks`; the result is the chat result of the
    /// whole, with its `output_digest`. At most `max_response_bytes` of
    /// stream are read.
    async fn stream_chat(
        &self,
        request: reqwest::RequestBuilder,
        status: &mut Option<u16>,
        chunks: &Chunks,
    ) -> Result<Value, ExecError> {
        let mut response = self.send(request, status).await?;
        let mut parser = SseParser::new();
        let mut chat = StreamedChat::default();
        let mut read = 0usize;
        let cut = |read: usize, content: usize, cause: String| {
            ExecError::new(
                FailureKind::Transport,
                format!(
                    "the stream from {} ended after {read} bytes ({content} bytes of content) before its end (`data: [DONE]` or a finish_reason){cause}",
                    self.shown_url
                ),
            )
        };
        loop {
            let bytes = match response.chunk().await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(self.timed_out()),
                Err(e) => {
                    let detail = self.transport(e).message;
                    return Err(cut(read, chat.content.len(), format!(": {detail}")));
                }
            };
            read += bytes.len();
            if read > self.max_response_bytes {
                return Err(self.too_large());
            }
            for data in parser.feed(&bytes) {
                if let Some(piece) = chat.event(&data, &self.shown_url)? {
                    // A receiver gone changes nothing: the run goes on.
                    let _ = chunks.send(piece);
                }
            }
            if chat.done {
                break;
            }
        }
        if !chat.done && chat.finish_reason.is_null() {
            return Err(cut(read, chat.content.len(), String::new()));
        }
        Ok(chat.result())
    }

    /// A failed request as a task failure, naming the URL (never with its
    /// query or credentials) and the innermost cause.
    fn transport(&self, err: reqwest::Error) -> ExecError {
        if err.is_timeout() {
            return self.timed_out();
        }
        let err = err.without_url();
        // The innermost cause says what happened ("Connection refused").
        let mut cause: &dyn std::error::Error = &err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if err.is_connect() {
            ExecError::new(
                FailureKind::Unreachable,
                format!("cannot connect to {}: {cause}", self.shown_url),
            )
        } else {
            ExecError::new(
                FailureKind::Transport,
                format!("request to {} failed: {cause}", self.shown_url),
            )
        }
    }

    fn timed_out(&self) -> ExecError {
        ExecError::new(
            FailureKind::Timeout,
            format!(
                "no answer within {} s from {}",
                self.timeout.as_secs_f64(),
                self.shown_url
            ),
        )
    }

    /// The request for `task`, or why there can be none.
    /// The request of `task`; in OpenAI mode, asking for a stream if
    /// `stream`.
    fn request(&self, task: &Task, stream: bool) -> Result<reqwest::RequestBuilder, ExecError> {
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone());
        Ok(match &self.mode {
            HttpMode::Raw => request
                .json(&task.input)
                .header("x-sage-task-id", task_header("task id", &task.task_id)?)
                .header(
                    "x-sage-task-type",
                    task_header("task type", &task.task_type)?,
                )
                .header("x-sage-issuer", task_header("issuer", &task.issuer)?),
            HttpMode::OpenAiChat { model } => {
                request.json(&chat_request(model, &task.input, stream)?)
            }
        })
    }

    /// The debug line of one exchange with the service. No bodies and no
    /// headers: they may hold secrets.
    fn log_exchange(
        &self,
        task: &Task,
        status: Option<u16>,
        started: Instant,
        ok: bool,
        streamed: bool,
    ) {
        tracing::debug!(
            executor = %self.name,
            task_id = %Untrusted(&task.task_id),
            url = %self.shown_url,
            status = ?status,
            latency_ms = started.elapsed().as_millis() as u64,
            ok,
            streamed,
            "http executor"
        );
    }

    /// The result made of a 2xx answer's body.
    fn result(&self, body: &[u8]) -> Result<Value, ExecError> {
        match &self.mode {
            HttpMode::Raw => Ok(serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))),
            HttpMode::OpenAiChat { .. } => {
                let answer: Value = serde_json::from_slice(body).map_err(|e| {
                    ExecError::new(
                        FailureKind::BadAnswer,
                        format!("answer from {} is not JSON: {e}", self.shown_url),
                    )
                })?;
                chat_result(&answer, &self.shown_url)
            }
        }
    }
}

impl Executor for HttpExecutor {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn model(&self) -> Option<&str> {
        match &self.mode {
            HttpMode::Raw => None,
            HttpMode::OpenAiChat { model } => Some(model),
        }
    }

    fn execute<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Execution, ExecError>> {
        Box::pin(async move {
            let request = self.request(task, false)?;
            let started = Instant::now();
            let mut status = None;
            // One deadline for connecting, sending and reading the answer.
            let body = match tokio::time::timeout(self.timeout, self.exchange(request, &mut status))
                .await
            {
                Ok(body) => body,
                Err(_) => Err(self.timed_out()),
            };
            let outcome = body.and_then(|body| self.result(&body));
            self.log_exchange(task, status, started, outcome.is_ok(), false);
            outcome.map(Execution::of)
        })
    }

    fn streams(&self) -> bool {
        matches!(self.mode, HttpMode::OpenAiChat { .. })
    }

    fn execute_streaming<'a>(
        &'a self,
        task: &'a Task,
        chunks: Chunks,
    ) -> BoxFuture<'a, Result<Execution, ExecError>> {
        if !self.streams() {
            return self.execute(task);
        }
        Box::pin(async move {
            let request = self.request(task, true)?;
            let started = Instant::now();
            let mut status = None;
            let streamed = self.stream_chat(request, &mut status, &chunks);
            let outcome = match tokio::time::timeout(self.timeout, streamed).await {
                Ok(outcome) => outcome,
                Err(_) => Err(self.timed_out()),
            };
            self.log_exchange(task, status, started, outcome.is_ok(), true);
            outcome.map(Execution::of)
        })
    }
}

/// Parses and checks the configured URL.
fn parse_url(raw: &str) -> Result<reqwest::Url, HttpConfigError> {
    let bad = |url: String, detail: &str| HttpConfigError::BadUrl {
        url,
        detail: detail.to_owned(),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(bad(String::new(), "no URL given"));
    }
    // An unparsable URL is shown as given: there is nothing else to show.
    let url = reqwest::Url::parse(raw).map_err(|e| bad(raw.to_owned(), &e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            shown(&url),
            "only http:// and https:// URLs are supported",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(shown(&url), "no host"));
    }
    Ok(url)
}

/// `url` without credentials, query or fragment, for logs and messages.
fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    // Neither can fail on an http(s) URL; on others they change nothing.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// Resolves the configured headers, reading variables from `env` now.
fn resolve_headers(
    headers: &[(String, HeaderValue)],
    env: impl Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<HeaderMap, HttpConfigError> {
    let mut map = HeaderMap::new();
    for (header, source) in headers {
        let bad = |detail: String| HttpConfigError::BadHeader {
            header: header.clone(),
            detail,
        };
        let name = HeaderName::from_bytes(header.trim().as_bytes())
            .map_err(|_| bad("not a valid header name".to_owned()))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(bad("set by the executor itself".to_owned()));
        }
        let value = match source {
            HeaderValue::Literal(value) => value.clone(),
            HeaderValue::Env(var) => match env(var) {
                // Values kept in files often end with a newline.
                Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
                Ok(_) | Err(std::env::VarError::NotPresent) => {
                    return Err(HttpConfigError::MissingEnv {
                        header: header.clone(),
                        var: var.clone(),
                    })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(bad(format!(
                        "the environment variable `{var}` does not hold UTF-8 text"
                    )))
                }
            },
        };
        // The error would not show the value anyway; ours says why.
        let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            bad("the value holds characters a header cannot carry (a newline?)".to_owned())
        })?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

/// A task field as a header value.
fn task_header(what: &str, value: &str) -> Result<reqwest::header::HeaderValue, ExecError> {
    reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        ExecError::new(
            FailureKind::BadInput,
            format!("the {what} cannot be sent as an HTTP header"),
        )
    })
}

/// The chat completion request for `input`.
fn chat_request(model: &str, input: &Value, stream: bool) -> Result<Value, ExecError> {
    let needs = "input needs `prompt` (a string) or `messages` (an array)";
    let input = input
        .as_object()
        .ok_or_else(|| ExecError::new(FailureKind::BadInput, needs))?;
    // A null field counts as absent.
    let field = |key: &str| input.get(key).filter(|v| !v.is_null());
    let mut messages = match (field("messages"), field("prompt")) {
        (Some(Value::Array(messages)), _) => messages.clone(),
        (Some(_), _) => {
            return Err(ExecError::new(
                FailureKind::BadInput,
                "input `messages` must be an array",
            ))
        }
        (None, Some(Value::String(prompt))) => vec![json!({"role": "user", "content": prompt})],
        (None, Some(_)) => {
            return Err(ExecError::new(
                FailureKind::BadInput,
                "input `prompt` must be a string",
            ))
        }
        (None, None) => return Err(ExecError::new(FailureKind::BadInput, needs)),
    };
    match field("system") {
        Some(Value::String(system)) => {
            messages.insert(0, json!({"role": "system", "content": system}));
        }
        Some(_) => {
            return Err(ExecError::new(
                FailureKind::BadInput,
                "input `system` must be a string",
            ))
        }
        None => {}
    }
    let mut request = Map::new();
    request.insert("model".into(), Value::String(model.to_owned()));
    request.insert("messages".into(), Value::Array(messages));
    for key in CHAT_OPTIONS {
        if let Some(value) = field(key) {
            request.insert(key.into(), value.clone());
        }
    }
    request.insert("stream".into(), Value::Bool(stream));
    Ok(Value::Object(request))
}

/// The result made of a chat completion answer.
fn chat_result(answer: &Value, url: &str) -> Result<Value, ExecError> {
    let missing = |what: &str| {
        ExecError::new(
            FailureKind::BadAnswer,
            format!("answer from {url} has no `{what}`: not an OpenAI chat completion"),
        )
    };
    let choice = answer
        .get("choices")
        .and_then(|choices| choices.get(0))
        .ok_or_else(|| missing("choices[0]"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| missing("choices[0].message"))?;
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| missing("choices[0].message.content"))?;
    let copy = |value: Option<&Value>| value.cloned().unwrap_or(Value::Null);
    Ok(json!({
        "content": content,
        "model": copy(answer.get("model")),
        "finish_reason": copy(choice.get("finish_reason")),
        "usage": copy(answer.get("usage")),
    }))
}

/// What a chat stream said so far.
#[derive(Debug, Default)]
struct StreamedChat {
    content: String,
    model: Value,
    finish_reason: Value,
    usage: Value,
    /// `data: [DONE]` came.
    done: bool,
}

impl StreamedChat {
    /// Takes in one event's `data`; returns its piece of content, if any.
    fn event(&mut self, data: &str, url: &str) -> Result<Option<String>, ExecError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let event: Value = serde_json::from_str(data).map_err(|e| {
            ExecError::new(
                FailureKind::BadAnswer,
                format!("an event of the stream from {url} is not JSON: {e}"),
            )
        })?;
        let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
        if let Some(model) = present(event.get("model")) {
            self.model = model;
        }
        if let Some(usage) = present(event.get("usage")) {
            self.usage = usage;
        }
        let Some(choice) = event.get("choices").and_then(|c| c.get(0)) else {
            return Ok(None);
        };
        if let Some(reason) = present(choice.get("finish_reason")) {
            self.finish_reason = reason;
        }
        match choice.pointer("/delta/content") {
            Some(Value::String(piece)) if !piece.is_empty() => {
                self.content.push_str(piece);
                Ok(Some(piece.clone()))
            }
            _ => Ok(None),
        }
    }

    /// The result: as a whole answer's, with the digest of the content.
    fn result(self) -> Value {
        json!({
            "output_digest": output_digest(&self.content),
            "content": self.content,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
        })
    }
}

/// `sha256:` and the hex digest of `content`'s UTF-8 bytes: what a
/// receiver of the stream checks the bytes it got against.
pub fn output_digest(content: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(content.as_bytes()))
    )
}

/// Reads at most `limit` bytes of the body, chunk by chunk; says whether
/// there was more.
async fn read_at_most(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap as Headers, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "s3cret-token-value";
    const MODEL: &str = "test-model";

    /// What the test server saw: the last request's headers and body.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Option<(Headers, Value)>>>);

    impl Seen {
        fn last(&self) -> (Headers, Value) {
            self.0.lock().unwrap().clone().expect("a request")
        }
    }

    /// Plays an OpenAI-compatible server: checks the token and the model,
    /// answers with the last user message.
    async fn chat(
        State(seen): State<Seen>,
        headers: Headers,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        *seen.0.lock().unwrap() = Some((headers.clone(), body.clone()));
        let bearer = format!("Bearer {SECRET}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
            return (StatusCode::UNAUTHORIZED, Json(json!({"error": "no token"})));
        }
        if body["model"] != MODEL {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "model"})));
        }
        let Some(messages) = body["messages"].as_array() else {
            return (StatusCode::BAD_REQUEST, Json(json!({"error": "messages"})));
        };
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| m["content"].clone())
            .unwrap_or(Value::Null);
        (
            StatusCode::OK,
            Json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": last_user},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            })),
        )
    }

    /// Answers with the body and the X-Sage-* headers it got.
    async fn raw(State(seen): State<Seen>, headers: Headers, body: String) -> Json<Value> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let parsed: Value = serde_json::from_str(&body).unwrap();
        *seen.0.lock().unwrap() = Some((headers.clone(), parsed.clone()));
        Json(json!({
            "body": parsed,
            "task_id": header("x-sage-task-id"),
            "task_type": header("x-sage-task-type"),
            "issuer": header("x-sage-issuer"),
            "content_type": header("content-type"),
        }))
    }

    async fn server() -> (String, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/raw", post(raw))
            .route("/text", post(|| async { "plain words" }))
            .route(
                "/empty-chat",
                post(|| async { Json(json!({"choices": []})) }),
            )
            .route(
                "/fail",
                post(|| async {
                    let body = format!("model exploded: out of memory {}", "x".repeat(1000));
                    (StatusCode::INTERNAL_SERVER_ERROR, body)
                }),
            )
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "too late"
                }),
            )
            .route("/big", post(|| async { "y".repeat(2048) }))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn task(input: Value) -> Task {
        Task {
            estimated_cost: 1.0,
            ..sage_types::testing::task("llm_inference", input)
        }
    }

    /// The environment `var=value` alone.
    fn only(var: &str, value: &str) -> impl Fn(&str) -> Result<String, std::env::VarError> {
        let (var, value) = (var.to_owned(), value.to_owned());
        move |asked| {
            if asked == var {
                Ok(value.clone())
            } else {
                Err(std::env::VarError::NotPresent)
            }
        }
    }

    /// A chat executor whose token comes from the variable `var`.
    fn chat_executor(base: &str, var: &str) -> HttpExecutor {
        HttpExecutor::with_env(
            "llama",
            HttpConfig {
                url: format!("{base}/v1/chat/completions"),
                headers: vec![("Authorization".into(), HeaderValue::Env(var.into()))],
                mode: HttpMode::OpenAiChat {
                    model: MODEL.into(),
                },
                ..HttpConfig::default()
            },
            only(var, &format!("Bearer {SECRET}\n")),
        )
        .unwrap()
    }

    /// A chat executor at `url`, without headers.
    fn plain_chat_executor(url: String) -> HttpExecutor {
        HttpExecutor::new(
            "llama",
            HttpConfig {
                url,
                mode: HttpMode::OpenAiChat {
                    model: MODEL.into(),
                },
                ..HttpConfig::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn only_a_chat_executor_names_its_model() {
        let chat = plain_chat_executor("http://127.0.0.1:9/v1/chat/completions".into());
        assert_eq!(chat.model(), Some(MODEL));
        let raw = bounded_executor("http://127.0.0.1:9/raw".into(), 1024);
        assert_eq!(raw.model(), None);
    }

    /// A raw executor at `url` that reads at most `max_response_bytes`.
    fn bounded_executor(url: String, max_response_bytes: usize) -> HttpExecutor {
        HttpExecutor::new(
            "svc",
            HttpConfig {
                url,
                max_response_bytes,
                ..HttpConfig::default()
            },
        )
        .unwrap()
    }

    /// How a raw executor at `url` fails an empty input.
    async fn raw_error(url: String) -> ExecError {
        raw_executor(url)
            .execute(&task(json!({})))
            .await
            .unwrap_err()
    }

    /// A port nothing listens on: bound, learnt, closed.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn raw_executor(url: String) -> HttpExecutor {
        HttpExecutor::new(
            "svc",
            HttpConfig {
                url,
                timeout: Duration::from_millis(300),
                ..HttpConfig::default()
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn openai_chat_answers_with_content_model_and_usage() {
        let (base, seen) = server().await;
        let executor = chat_executor(&base, "SAGE_TEST_HTTP_TOKEN_SUCCESS");
        assert_eq!(executor.kind(), "http");
        let out = executor
            .execute(&task(json!({"messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "hello there"},
            ]})))
            .await
            .unwrap();
        assert_eq!(
            out.result,
            json!({
                "content": "hello there",
                "model": MODEL,
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            })
        );
        assert_eq!(out.exit_status, None);
        let (headers, body) = seen.last();
        assert_eq!(body["stream"], false);
        assert_eq!(body["messages"].as_array().unwrap().len(), 3);
        // Raw mode's headers are not sent to a chat server.
        assert!(headers.get("x-sage-task-id").is_none());
    }

    #[tokio::test]
    async fn prompt_and_system_become_messages_and_options_are_copied() {
        let (base, seen) = server().await;
        let executor = chat_executor(&base, "SAGE_TEST_HTTP_TOKEN_PROMPT");
        let out = executor
            .execute(&task(json!({
                "prompt": "what is 2+2?",
                "system": "be brief",
                "temperature": 0.2,
                "max_tokens": 16,
                "seed": 7,
                "unrelated": "dropped",
            })))
            .await
            .unwrap();
        assert_eq!(out.result["content"], "what is 2+2?");
        let (_, body) = seen.last();
        assert_eq!(
            body,
            json!({
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is 2+2?"},
                ],
                "temperature": 0.2,
                "max_tokens": 16,
                "seed": 7,
                "stream": false,
            })
        );
    }

    #[tokio::test]
    async fn chat_input_without_prompt_or_messages_fails_before_sending() {
        // Nothing listens at this URL: the failure must come first.
        let executor = plain_chat_executor("http://127.0.0.1:9/v1/chat/completions".into());
        for input in [json!({"query": "hi"}), json!("hi"), json!({"prompt": 3})] {
            let err = executor.execute(&task(input)).await.unwrap_err();
            assert!(err.message.starts_with("input "), "{err}");
        }
        let err = executor.execute(&task(json!({}))).await.unwrap_err();
        assert!(
            err.message.contains("input needs `prompt`") && err.message.contains("`messages`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_chat_answer_without_content_fails_naming_what_is_missing() {
        let (base, _) = server().await;
        let executor = plain_chat_executor(format!("{base}/empty-chat"));
        let err = executor
            .execute(&task(json!({"prompt": "hi"})))
            .await
            .unwrap_err();
        assert!(err.message.contains("choices[0]"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_env_var_stops_the_start_without_showing_values() {
        let err = HttpExecutor::new(
            "llama",
            HttpConfig {
                url: "http://127.0.0.1:1/".into(),
                headers: vec![
                    ("X-Other".into(), HeaderValue::Literal(SECRET.into())),
                    (
                        "Authorization".into(),
                        HeaderValue::Env("SAGE_TEST_HTTP_NEVER_SET".into()),
                    ),
                ],
                ..HttpConfig::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, HttpConfigError::MissingEnv { header, var }
                if header == "Authorization" && var == "SAGE_TEST_HTTP_NEVER_SET"),
            "{err:?}"
        );
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("SAGE_TEST_HTTP_NEVER_SET"), "{shown}");
        assert!(!shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn bad_urls_and_headers_are_refused() {
        for url in ["", "ftp://host/x", "localhost:8080", "not a url"] {
            let config = HttpConfig {
                url: url.into(),
                ..HttpConfig::default()
            };
            let err = HttpExecutor::new("x", config).unwrap_err();
            assert!(
                matches!(err, HttpConfigError::BadUrl { .. }),
                "{url}: {err}"
            );
        }
        for (name, value) in [
            ("Bad Name", "v"),
            ("Content-Type", "text/plain"),
            ("X-Sage-Issuer", "me"),
            ("X-Token", "line\nbreak-secret"),
        ] {
            let config = HttpConfig {
                url: "http://127.0.0.1:1/".into(),
                headers: vec![(name.into(), HeaderValue::Literal(value.into()))],
                ..HttpConfig::default()
            };
            let err = HttpExecutor::new("x", config).unwrap_err();
            assert!(matches!(err, HttpConfigError::BadHeader { .. }), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[tokio::test]
    async fn raw_mode_posts_the_input_with_the_task_headers() {
        let (base, _) = server().await;
        let out = raw_executor(format!("{base}/raw"))
            .execute(&task(json!({"query": "hi", "n": [1, 2]})))
            .await
            .unwrap();
        assert_eq!(
            out.result,
            json!({
                "body": {"query": "hi", "n": [1, 2]},
                "task_id": "task-42",
                "task_type": "llm_inference",
                "issuer": "sprout_sage_lct",
                "content_type": "application/json",
            })
        );
    }

    #[tokio::test]
    async fn raw_mode_keeps_a_text_answer_as_a_string() {
        let (base, _) = server().await;
        let out = raw_executor(format!("{base}/text"))
            .execute(&task(json!({})))
            .await
            .unwrap();
        assert_eq!(out.result, json!("plain words"));
    }

    #[tokio::test]
    async fn a_500_fails_with_the_status_and_the_start_of_the_body() {
        let (base, _) = server().await;
        let err = raw_error(format!("{base}/fail?key=hidden")).await;
        assert!(
            err.message
                .starts_with(&format!("HTTP 500 from {base}/fail: model exploded")),
            "{err}"
        );
        assert!(!err.message.contains("hidden"), "{err}");
        assert!(err.message.len() < 400, "{err}");
        assert_eq!(err.exit_status(), None);
    }

    #[tokio::test]
    async fn a_slow_service_times_out() {
        let (base, _) = server().await;
        let started = Instant::now();
        let err = raw_error(format!("{base}/slow")).await;
        assert!(err.message.contains("no answer within 0.3 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_without_secrets() {
        let port = closed_port();
        let err = raw_error(format!("http://user:pw@127.0.0.1:{port}/run?token=abc")).await;
        assert!(
            err.message
                .contains(&format!("cannot connect to http://127.0.0.1:{port}/run:")),
            "{err}"
        );
        assert!(err.message.to_lowercase().contains("refused"), "{err}");
        assert!(!err.message.contains("token") && !err.message.contains("pw@"));
    }

    #[tokio::test]
    async fn an_oversized_answer_fails() {
        let (base, _) = server().await;
        let executor = bounded_executor(format!("{base}/big"), 1024);
        let err = executor.execute(&task(json!({}))).await.unwrap_err();
        assert!(
            err.message.contains("response larger than 1024 bytes"),
            "{err}"
        );
    }

    /// A server that streams its answer in chunks, with no length announced.
    async fn chunked_server(chunks: usize, chunk: usize) -> String {
        let pieces = vec!["z".repeat(chunk).into_bytes(); chunks];
        pieces_server(pieces, true).await
    }

    /// A server that answers `pieces` as the chunks of a chunked body,
    /// then ends it properly (`end`) or closes the connection.
    async fn pieces_server(pieces: Vec<Vec<u8>>, end: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let pieces = pieces.clone();
                tokio::spawn(async move {
                    // Read the request head and its body before answering.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    socket.write_all(head.as_bytes()).await.unwrap();
                    for piece in pieces {
                        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                        framed.extend_from_slice(&piece);
                        framed.extend_from_slice(b"\r\n");
                        if socket.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                    if end {
                        let _ = socket.write_all(b"0\r\n\r\n").await;
                    }
                });
            }
        });
        format!("http://{addr}/stream")
    }

    /// The SSE events of a chat stream of `pieces`, with a finish reason
    /// and usage, split at awkward places.
    fn chat_events(pieces: &[&str]) -> Vec<Vec<u8>> {
        let mut stream = String::from(": a comment first\n\n");
        for piece in pieces {
            let event = json!({"model": MODEL, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
            stream.push_str(&format!("data: {event}\n\n"));
        }
        let last = json!({"model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage =
            json!({"model": MODEL, "choices": [], "usage": {"completion_tokens": pieces.len()}});
        stream.push_str(&format!(
            "data: {last}\r\n\r\ndata: {usage}\n\ndata: [DONE]\n\n"
        ));
        stream.into_bytes().chunks(7).map(<[u8]>::to_vec).collect()
    }

    #[tokio::test]
    async fn a_chat_stream_passes_each_piece_on_and_proves_the_whole() {
        let pieces = ["Hel", "lo, ", "wörld", "!"];
        let url = pieces_server(chat_events(&pieces), true).await;
        let executor = plain_chat_executor(url);
        assert!(executor.streams());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let out = executor
            .execute_streaming(&task(json!({"prompt": "hi"})), tx)
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(piece) = rx.recv().await {
            got.push(piece);
        }
        assert_eq!(got, pieces);
        let content = pieces.concat();
        assert_eq!(out.result["content"], content);
        assert_eq!(out.result["model"], MODEL);
        assert_eq!(out.result["finish_reason"], "stop");
        assert_eq!(out.result["usage"]["completion_tokens"], 4);
        assert_eq!(out.result["output_digest"], output_digest(&content));
        assert!(output_digest("").starts_with("sha256:e3b0c442"));
    }

    #[tokio::test]
    async fn a_chat_stream_cut_before_its_end_fails_saying_how_much_came() {
        let mut events = chat_events(&["one ", "two"]);
        // Cut after the content, before the finish reason.
        let whole: Vec<u8> = events.concat();
        let text = String::from_utf8(whole).unwrap();
        let cut = text.find("\"stop\"").unwrap() - 60;
        events = vec![text.as_bytes()[..cut].to_vec()];
        let url = pieces_server(events, false).await;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let e = plain_chat_executor(url)
            .execute_streaming(&task(json!({"prompt": "hi"})), tx)
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Transport, "{e}");
        assert!(e.message.contains(&format!("{cut} bytes")), "{e}");
    }

    #[tokio::test]
    async fn a_chat_stream_is_bounded_by_max_response_bytes() {
        let url = pieces_server(chat_events(&["x"; 200]), true).await;
        let mut executor = plain_chat_executor(url);
        executor.max_response_bytes = 1000;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let e = executor
            .execute_streaming(&task(json!({"prompt": "hi"})), tx)
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::TooLarge, "{e}");
    }

    #[tokio::test]
    async fn without_a_stream_asked_the_request_says_stream_false() {
        let (base, seen) = server().await;
        let executor = chat_executor(&base, "SAGE_TEST_HTTP_TOKEN_NO_STREAM");
        executor
            .execute(&task(json!({"prompt": "hi"})))
            .await
            .unwrap();
        assert_eq!(seen.last().1["stream"], false);
    }

    #[tokio::test]
    async fn a_streamed_answer_is_bounded_while_it_is_read() {
        let executor = |url| bounded_executor(url, 1000);
        let err = executor(chunked_server(100, 100).await)
            .execute(&task(json!({})))
            .await
            .unwrap_err();
        assert!(
            err.message.contains("response larger than 1000 bytes"),
            "{err}"
        );
        // Within the bound, the same stream is read whole.
        let out = executor(chunked_server(5, 100).await)
            .execute(&task(json!({})))
            .await
            .unwrap();
        assert_eq!(out.result, json!("z".repeat(500)));
    }

    #[tokio::test]
    async fn each_failure_carries_its_kind() {
        let (base, _) = server().await;
        let err = raw_error(format!("{base}/fail")).await;
        assert_eq!(err.kind, FailureKind::HttpStatus(500));
        assert_eq!(err.kind.as_str(), "http_status");

        let err = raw_error(format!("{base}/slow")).await;
        assert_eq!(err.kind, FailureKind::Timeout);

        let port = closed_port();
        let err = raw_error(format!("http://127.0.0.1:{port}/run")).await;
        assert_eq!(err.kind, FailureKind::Unreachable);
        assert_eq!(err.kind.as_str(), "unreachable");

        let small = bounded_executor(format!("{base}/big"), 1024);
        let err = small.execute(&task(json!({}))).await.unwrap_err();
        assert_eq!(err.kind, FailureKind::TooLarge);

        let chat = |path: &str| plain_chat_executor(format!("{base}{path}"));
        let err = chat("/empty-chat")
            .execute(&task(json!({"prompt": "hi"})))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::BadAnswer);
        let err = chat("/v1/chat/completions")
            .execute(&task(json!({"query": "hi"})))
            .await
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::BadInput);
        assert_eq!(err.exit_status(), None);
    }

    #[test]
    fn debug_output_shows_no_header_value() {
        let var = "SAGE_TEST_HTTP_TOKEN_DEBUG";
        let config = HttpConfig {
            url: "https://api.example.invalid/v1/chat/completions".into(),
            headers: vec![
                ("Authorization".into(), HeaderValue::Env(var.into())),
                ("X-Api-Key".into(), HeaderValue::Literal(SECRET.into())),
            ],
            mode: HttpMode::OpenAiChat {
                model: MODEL.into(),
            },
            ..HttpConfig::default()
        };
        let config_debug = format!("{config:?}");
        let executor =
            HttpExecutor::with_env("remote", config, only(var, "env-secret-value")).unwrap();
        let executor_debug = format!("{executor:?}");
        for shown in [&config_debug, &executor_debug] {
            assert!(!shown.contains("env-secret-value"), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
        assert!(
            config_debug.contains("Literal(<redacted>)"),
            "{config_debug}"
        );
        assert!(
            executor_debug.contains("authorization") && executor_debug.contains("x-api-key"),
            "{executor_debug}"
        );
    }

    #[test]
    fn the_defaults_are_documented_ones() {
        let config = HttpConfig::default();
        assert_eq!(config.timeout, Duration::from_secs(120));
        assert_eq!(config.max_response_bytes, 4 * 1024 * 1024);
        assert_eq!(config.mode, HttpMode::Raw);
        assert!(config.url.is_empty() && config.headers.is_empty());
    }
}
