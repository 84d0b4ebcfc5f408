//! The HTTP client a node uses to talk to others.

use std::time::{Duration, Instant};

use sage_crypto::TlsTrust;
use sage_types::blob::BLOB_GRANT_HEADER;
use sage_types::health::HEALTHY;
use sage_types::legacy::{read_response, LegacyRequest, ReceivedResponse};
use sage_types::{Envelope, Health, Problem};

use super::stream::{ChunkSink, StreamEnd, TaskAnswer};
use crate::telemetry;
use crate::trace::{TraceId, TRACEPARENT};
use crate::ClientError;
use sage_types::stream::{Frame, STREAM_ACCEPT, STREAM_MEDIA_TYPE};
use sage_types::untrusted::Untrusted;
use tracing::Instrument as _;

/// An HTTP client for `sage` nodes. Clone it freely: connections are pooled
/// and shared.
///
/// Its TLS trust (for `https://` addresses) is fixed when it is built: use
/// [`Client::with_tls`] with the peer's [`TlsTrust`] to talk to a peer with
/// a pinned or privately issued certificate.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    connect_timeout: Duration,
    max_answer_bytes: usize,
    trace: Option<TraceId>,
}

/// How long a connection attempt may take: a host that is down or a
/// firewall that drops packets shows as [`ClientError::NoConnection`]
/// after this, whatever the request's timeout. Long enough for two lost
/// SYNs on a slow link.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest answer a client reads by default, in bytes (8 MiB). The
/// largest answer a node sends with its defaults is a proof of a result
/// near an `http` executor's `max_response_bytes` (4 MiB), which its
/// envelope carries base64-encoded (4/3 of the size); the rest is room for
/// the JSON escaping of a text result and the proof's other fields.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

// A node's proof of a default-sized result must fit, encoded, with a MiB
// to spare.
const _: () = assert!(
    DEFAULT_MAX_ANSWER_BYTES > sage_exec::http::DEFAULT_MAX_RESPONSE_BYTES / 3 * 4 + 1024 * 1024
);

impl Client {
    /// A client that trusts the built-in web PKI roots for `https://`.
    /// Proxy settings from the environment are ignored: a fleet talks to
    /// its nodes directly.
    ///
    /// # Errors
    /// When the TLS backend cannot start.
    pub fn new() -> Result<Self, ClientError> {
        Self::with_tls(&TlsTrust::WebPki)
    }

    /// A client whose `https://` connections trust what `trust` says: the
    /// web PKI roots, the CA(s) of a PEM file, or exactly one certificate
    /// by fingerprint. Plain `http://` addresses work the same with any.
    ///
    /// # Errors
    /// [`ClientError::TlsSettings`] for a CA file that cannot be read or
    /// holds no certificate.
    pub fn with_tls(trust: &TlsTrust) -> Result<Self, ClientError> {
        Self::build(trust, CONNECT_TIMEOUT)
    }

    /// As [`Client::with_tls`], with connection attempts bounded by
    /// `connect_timeout` instead of [`CONNECT_TIMEOUT`]: below a request's
    /// own timeout, so that a connection nobody accepts is reported as
    /// such and not as a slow answer.
    ///
    /// # Errors
    /// As [`Client::with_tls`].
    pub fn with_tls_connect_timeout(
        trust: &TlsTrust,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::build(trust, connect_timeout)
    }

    fn build(trust: &TlsTrust, connect_timeout: Duration) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            // Its own bound, so that no answer to the connection attempt
            // (a firewall that drops) is told apart from a slow task.
            .connect_timeout(connect_timeout)
            .user_agent(concat!("sage/", env!("CARGO_PKG_VERSION")));
        if let Some(config) = crate::tls::client_config(trust)? {
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            connect_timeout,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            trace: None,
        })
    }

    /// The same client, reading answers of at most `limit` bytes instead
    /// of [`DEFAULT_MAX_ANSWER_BYTES`]: a longer one fails with
    /// [`ClientError::TooLarge`] without being read whole.
    #[must_use]
    pub fn with_max_answer_bytes(mut self, limit: usize) -> Self {
        self.max_answer_bytes = limit;
        self
    }

    /// The same client, sending a `traceparent` of `trace` on every
    /// request, each with a span id of its own: the requests of one
    /// delegation share one trace.
    #[must_use]
    pub fn traced(mut self, trace: TraceId) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The longest answer this client reads, in bytes.
    pub fn max_answer_bytes(&self) -> usize {
        self.max_answer_bytes
    }

    /// `GET /health` with its round-trip time; a node that answers but not
    /// `"healthy"` is an error.
    ///
    /// # Errors
    /// [`ClientError`] naming the cause.
    pub async fn health(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<(Health, Duration), ClientError> {
        let url = format!("{}/health", base_url(addr)?);
        let started = Instant::now();
        let health: Health = self
            .answer(addr, self.http.get(&url), timeout, "a health answer")
            .await?;
        let rtt = started.elapsed();
        if health.status != HEALTHY {
            return Err(ClientError::Unhealthy {
                addr: addr.to_owned(),
                status: health.status,
            });
        }
        Ok((health, rtt))
    }

    /// `GET /v1/capabilities`: the node's signed self-description (not yet
    /// verified).
    ///
    /// # Errors
    /// A transport error, a refusal, or an answer that is not an envelope.
    pub async fn capabilities(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Envelope, ClientError> {
        let url = format!("{}/v1/capabilities", base_url(addr)?);
        self.answer(
            addr,
            self.http.get(&url),
            timeout,
            "a capabilities envelope",
        )
        .await
    }

    /// `POST /v1/tasks` with a signed task envelope; the answer is the
    /// (not yet verified) proof envelope.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the node's problem, or a transport error.
    pub async fn submit_task(
        &self,
        addr: &str,
        task: &Envelope,
        timeout: Duration,
    ) -> Result<Envelope, ClientError> {
        self.post_json(addr, "/v1/tasks", task, timeout, "a proof envelope")
            .await
    }

    /// [`Client::submit_task`] asking for a streaming answer: each piece of
    /// the output is handed to `sink` as it arrives, unverified; the
    /// answer says how the stream ended, or is the plain proof envelope
    /// of a node that answered without a stream. Frames and the whole are
    /// bounded by [`Client::max_answer_bytes`].
    ///
    /// # Errors
    /// As [`Client::submit_task`], before a piece was handed on; a break
    /// after one is [`StreamEnd::Cut`].
    pub async fn submit_task_streaming(
        &self,
        addr: &str,
        task: &Envelope,
        timeout: Duration,
        sink: &ChunkSink,
    ) -> Result<TaskAnswer, ClientError> {
        let url = format!("{}/v1/tasks", base_url(addr)?);
        let body = serde_json::to_vec(task)
            .map_err(|e| ClientError::Setup(format!("cannot encode the request to {addr}: {e}")))?;
        let (traceparent, span) = telemetry::outgoing(self.trace, addr);
        let mut request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                format!("{STREAM_ACCEPT}, application/json"),
            )
            .body(body);
        if let Some(header) = traceparent {
            request = request.header(TRACEPARENT, header.to_string());
        }
        let mut response = request
            .timeout(timeout)
            .send()
            .instrument(span)
            .await
            .map_err(|e| transport_error(addr, timeout, self.connect_timeout, &e))?;
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with(STREAM_MEDIA_TYPE));
        if response.status() != 200 || !streamed {
            let (_, body) = self
                .whole(addr, timeout, response, |status| status == 200)
                .await?;
            return parse(addr, &body, "a proof envelope").map(TaskAnswer::Whole);
        }
        let limit = self.max_answer_bytes;
        let (mut line, mut received, mut read) = (Vec::new(), String::new(), 0usize);
        let end = loop {
            let bytes = match response.chunk().await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    break StreamEnd::Cut(format!(
                        "the answer ended after {read} bytes without a proof"
                    ))
                }
                Err(e) => {
                    let e = transport_error(addr, timeout, timeout, &e);
                    break StreamEnd::Cut(format!("after {read} bytes: {e}"));
                }
            };
            read += bytes.len();
            if read > limit {
                return Err(ClientError::TooLarge {
                    addr: addr.to_owned(),
                    limit,
                });
            }
            let mut ended = None;
            for &byte in bytes.iter() {
                if byte != b'\n' {
                    line.push(byte);
                    continue;
                }
                let frame: Frame =
                    serde_json::from_slice(&line).map_err(|e| ClientError::BadResponse {
                        addr: addr.to_owned(),
                        status: 200,
                        detail: format!("not a frame of a task stream: {e}"),
                    })?;
                line.clear();
                match frame {
                    Frame::Chunk(piece) => {
                        received.push_str(&piece);
                        sink.pass(piece).await;
                    }
                    Frame::Proof(proof) => {
                        ended = Some(StreamEnd::Proof(proof));
                        break;
                    }
                    Frame::Error(problem) => {
                        ended = Some(StreamEnd::Cut(format!(
                            "the node ended it without a proof ({}): {}",
                            problem.code,
                            Untrusted(&problem.detail)
                        )));
                        break;
                    }
                }
            }
            if let Some(end) = ended {
                break end;
            }
        };
        Ok(TaskAnswer::Streamed { received, end })
    }

    /// `POST /execute_task` of the Python original's protocol; the answer is
    /// the (not yet verified) signed proof, read as Python's `json.loads`
    /// reads it, and the body as received.
    ///
    /// # Errors
    /// As [`Client::submit_task`]; a Python node's refusals come as
    /// [`ClientError::BadResponse`] with its status.
    pub async fn execute_task_legacy(
        &self,
        addr: &str,
        request: &LegacyRequest,
        timeout: Duration,
    ) -> Result<(ReceivedResponse, Vec<u8>), ClientError> {
        let body = self
            .post_body(addr, "/execute_task", request, timeout)
            .await?;
        let response = read_response(&body).map_err(|e| ClientError::BadResponse {
            addr: addr.to_owned(),
            status: 200,
            detail: format!("not a legacy proof: {e}"),
        })?;
        Ok((response, body))
    }

    /// `HEAD /v1/blobs/DIGEST` with a signed grant: whether the node has
    /// the blob. Any answer but 200 reads as no (an upload then says why).
    ///
    /// # Errors
    /// A transport error.
    pub async fn has_blob(
        &self,
        addr: &str,
        digest: &str,
        grant: &str,
        timeout: Duration,
    ) -> Result<bool, ClientError> {
        let url = format!("{}/v1/blobs/{digest}", base_url(addr)?);
        let response = self
            .http
            .head(&url)
            .header(BLOB_GRANT_HEADER, grant)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(addr, timeout, self.connect_timeout, &e))?;
        Ok(response.status().as_u16() == 200)
    }

    /// `PUT /v1/blobs/DIGEST` of `size` bytes streamed from `file`, with a
    /// signed grant; returns whether the node stored it (201) rather than
    /// having it already (200).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with the node's problem, or a transport error.
    pub async fn put_blob(
        &self,
        addr: &str,
        digest: &str,
        grant: &str,
        (file, size): (tokio::fs::File, u64),
        timeout: Duration,
    ) -> Result<bool, ClientError> {
        let url = format!("{}/v1/blobs/{digest}", base_url(addr)?);
        let request = self
            .http
            .put(&url)
            .header(BLOB_GRANT_HEADER, grant)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap(FileBody::new(file, size)));
        let (status, _) = self
            .answer_status(addr, request, timeout, |status| matches!(status, 200 | 201))
            .await?;
        Ok(status == 201)
    }

    /// Posts `body` to `url` and reads the answer: the load generator's
    /// baseline request.
    ///
    /// # Errors
    /// A transport error, or [`ClientError::BadResponse`] for a non-200.
    pub async fn post_echo(
        &self,
        url: &str,
        body: axum::body::Bytes,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.answer_body(url, self.http.post(url).body(body), timeout)
            .await
            .map(drop)
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
        expected: &str,
    ) -> Result<T, ClientError> {
        let body = self.post_body(addr, path, body, timeout).await?;
        parse(addr, &body, expected)
    }

    /// Posts `body` as JSON and returns the body of a `200` answer.
    async fn post_body(
        &self,
        addr: &str,
        path: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{path}", base_url(addr)?);
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Setup(format!("cannot encode the request to {addr}: {e}")))?;
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.answer_body(addr, request, timeout).await
    }

    /// Sends `request` and reads a `200` answer as `T`; anything else is a
    /// refusal or a bad answer.
    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        expected: &str,
    ) -> Result<T, ClientError> {
        let body = self.answer_body(addr, request, timeout).await?;
        parse(addr, &body, expected)
    }

    /// Sends `request` and returns the body of a `200` answer; anything
    /// else is a refusal or a bad answer.
    async fn answer_body(
        &self,
        addr: &str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        self.answer_status(addr, request, timeout, |status| status == 200)
            .await
            .map(|(_, body)| body)
    }

    /// Sends `request` and returns the status and body of an answer whose
    /// status is `ok`; anything else is a refusal or a bad answer.
    async fn answer_status(
        &self,
        addr: &str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
        ok: impl Fn(u16) -> bool,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let (traceparent, span) = telemetry::outgoing(self.trace, addr);
        let request = match traceparent {
            Some(header) => request.header(TRACEPARENT, header.to_string()),
            None => request,
        };
        let response = request
            .timeout(timeout)
            .send()
            .instrument(span)
            .await
            .map_err(|e| transport_error(addr, timeout, self.connect_timeout, &e))?;
        self.whole(addr, timeout, response, ok).await
    }

    /// Reads `response` whole: the status and body of an answer whose
    /// status is `ok`, else the refusal.
    async fn whole(
        &self,
        addr: &str,
        timeout: Duration,
        response: reqwest::Response,
        ok: impl Fn(u16) -> bool,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let retry_after = retry_after(&response);
        let (status, body) = read(addr, timeout, self.max_answer_bytes, response).await?;
        if !ok(status) {
            let refused = refusal(addr, status, &body, retry_after);
            if let ClientError::Refused { problem, .. } = &refused {
                if problem.detail == sage_types::problem::HTTPS_ONLY_DETAIL {
                    return Err(speaks_tls(addr).unwrap_or(refused));
                }
            }
            return Err(refused);
        }
        Ok((status, body))
    }
}

/// A request body of `size` bytes read from a file as it is sent, a chunk
/// at a time, so that an upload never holds the file in memory.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Box<[u8]>,
}

impl FileBody {
    /// The bytes sent per frame.
    const CHUNK: usize = 64 * 1024;

    fn new(file: tokio::fs::File, size: u64) -> Self {
        FileBody {
            file,
            remaining: size,
            buf: vec![0; Self::CHUNK].into_boxed_slice(),
        }
    }
}

impl hyper::body::Body for FileBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want =
            usize::try_from(this.remaining).map_or(this.buf.len(), |r| r.min(this.buf.len()));
        let mut read = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut this.file), cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was sent",
                ))))
            }
            Poll::Ready(Ok(())) => {
                let chunk = axum::body::Bytes::copy_from_slice(read.filled());
                this.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// A `200` answer's body read as `T`.
fn parse<T: serde::de::DeserializeOwned>(
    addr: &str,
    body: &[u8],
    expected: &str,
) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::BadResponse {
        addr: addr.to_owned(),
        status: 200,
        detail: format!("not {expected}: {e}"),
    })
}

/// The port a node listens on when an address names none, whatever its
/// scheme: `sage serve`'s default.
pub const DEFAULT_PORT: u16 = 50051;

/// The scheme of a node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A node's address as a user types it: `HOST`, `HOST:PORT`,
/// `http://HOST[:PORT]` or `https://HOST[:PORT]`, with an IPv6 host in
/// brackets (`[::1]:50051`). What it leaves out is kept apart from what it
/// says, so that a caller can fill the scheme or port from elsewhere (a
/// peer record); [`NodeAddress::scheme`] and [`NodeAddress::port`] give
/// the defaults, `http` and [`DEFAULT_PORT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The scheme, if given.
    pub scheme: Option<Scheme>,
    /// The host name or IP address (an IPv6 one without brackets).
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
}

impl NodeAddress {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`ClientError::BadAddress`] saying what is wrong: an empty address,
    /// another scheme or a doubled one, a path, a bad port or host.
    pub fn parse(text: &str) -> Result<NodeAddress, ClientError> {
        let trimmed = text.trim();
        let bad = |detail: &str| ClientError::BadAddress {
            addr: trimmed.to_owned(),
            detail: detail.to_owned(),
        };
        // A trailing slash is the URL's root, not a path.
        let rest = trimmed.strip_suffix('/').unwrap_or(trimmed);
        if rest.is_empty() {
            return Err(bad("empty address"));
        }
        let (scheme, rest) = match rest.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    _ => return Err(bad("only http:// and https:// are supported")),
                };
                if rest.contains("://") {
                    return Err(bad("the scheme is given twice"));
                }
                (Some(scheme), rest)
            }
            None => (None, rest),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(bad("an address names a node, not a path: give HOST:PORT"));
        }
        if rest.contains('@') {
            return Err(bad("user names are not supported"));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address in brackets"));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("expected ':PORT' after the IPv6 address")),
                },
            }
        } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            // A bare IPv6 address: its colons are not a port's.
            (rest, None)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(bad(
                "the host has characters no host name or IP address has",
            ));
        }
        let port = match port {
            None => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(NodeAddress {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    /// The scheme: the one given, else `http`.
    pub fn scheme(&self) -> Scheme {
        self.scheme.unwrap_or(Scheme::Http)
    }

    /// The port: the one given, else [`DEFAULT_PORT`].
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// `HOST:PORT`, an IPv6 host in brackets, with the default port if
    /// none was given.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port())
        } else {
            format!("{}:{}", self.host, self.port())
        }
    }
}

impl std::str::FromStr for NodeAddress {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        NodeAddress::parse(text)
    }
}

/// The full URL of the node's root, without the trailing slash:
/// `https://[::1]:50051`.
impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme().as_str(), self.host_port())
    }
}

/// The base URL of a node given as a [`NodeAddress`] is written:
/// `127.0.0.1` is `http://127.0.0.1:50051`.
///
/// # Errors
/// [`ClientError::BadAddress`], as [`NodeAddress::parse`].
pub fn base_url(addr: &str) -> Result<String, ClientError> {
    NodeAddress::parse(addr).map(|a| a.to_string())
}

/// The status and body of `response`, reading at most `limit` bytes of
/// it: an announced length above `limit` is refused before any of the body
/// is read, and a body that turns out longer is dropped (with its
/// connection) as soon as the count passes `limit`, so that no node can
/// make the client hold more than that.
///
/// # Errors
/// [`ClientError::TooLarge`], or a transport error while reading.
async fn read(
    addr: &str,
    timeout: Duration,
    limit: usize,
    mut response: reqwest::Response,
) -> Result<(u16, Vec<u8>), ClientError> {
    let status = response.status().as_u16();
    let too_large = || ClientError::TooLarge {
        addr: addr.to_owned(),
        limit,
    };
    let announced = response.content_length();
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    // Within the limit, so an announced length is safe to reserve.
    let mut body = Vec::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(addr, timeout, timeout, &e))?
    {
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// The wait an answer's `Retry-After` asks for, in its delay-seconds form
/// (what sage nodes send; an HTTP date is not read).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

fn refusal(addr: &str, status: u16, body: &[u8], retry_after: Option<Duration>) -> ClientError {
    match serde_json::from_slice::<Problem>(body) {
        Ok(problem) => ClientError::Refused {
            addr: addr.to_owned(),
            problem: Box::new(problem),
            retry_after,
        },
        Err(_) => ClientError::BadResponse {
            addr: addr.to_owned(),
            status,
            detail: Untrusted(&String::from_utf8_lossy(&body[..body.len().min(1024)])).to_string(),
        },
    }
}

fn transport_error(
    addr: &str,
    timeout: Duration,
    connect_timeout: Duration,
    err: &reqwest::Error,
) -> ClientError {
    if err.is_connect() && err.is_timeout() {
        return ClientError::NoConnection {
            addr: addr.to_owned(),
            after: connect_timeout.min(timeout),
        };
    }
    if err.is_timeout() {
        return ClientError::TimedOut {
            addr: addr.to_owned(),
            after: timeout,
        };
    }
    // The innermost cause says what happened ("Connection refused"), unless
    // a TLS error is on the way: then that does.
    let mut cause: &dyn std::error::Error = err;
    loop {
        // A TLS server's alert where an HTTP status line should be.
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_parse() && hyper.to_string().contains("version") {
                if let Some(tls) = speaks_tls(addr) {
                    return tls;
                }
            }
        }
        if let Some(tls) = as_tls_error(cause) {
            let (detail, problem) = crate::tls::describe_tls_error(tls);
            return ClientError::Tls {
                addr: addr.to_owned(),
                detail,
                problem,
            };
        }
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    if err.is_connect() {
        ClientError::Unreachable {
            addr: addr.to_owned(),
            detail: cause.to_string(),
        }
    } else {
        ClientError::Broken {
            addr: addr.to_owned(),
            detail: cause.to_string(),
        }
    }
}

/// [`ClientError::SpeaksTls`] for a plain-HTTP `addr`, which a TLS server
/// answered as TLS servers do.
fn speaks_tls(addr: &str) -> Option<ClientError> {
    let mut parsed = NodeAddress::parse(addr).ok()?;
    if parsed.scheme() != Scheme::Http {
        return None;
    }
    parsed.scheme = Some(Scheme::Https);
    Some(ClientError::SpeaksTls {
        addr: addr.to_owned(),
        https: parsed.to_string(),
    })
}

/// The rustls error in `cause`, which is either one or an I/O error that
/// carries one, maybe inside another I/O error (the way TLS streams report
/// handshake failures; `io::Error::source` skips the error it carries).
fn as_tls_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = cause;
    loop {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let carried = cause.downcast_ref::<std::io::Error>()?.get_ref()?;
        cause = carried;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_nobody_answers_is_no_connection_not_a_slow_node() {
        // A listener that never accepts: once its accept queue is full the
        // kernel drops further SYNs, as a firewall that drops would.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        while let Ok(stream) =
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        {
            held.push(stream);
            assert!(held.len() < 100_000, "the accept queue never filled");
        }
        let client = Client::build(&TlsTrust::WebPki, Duration::from_millis(300)).unwrap();
        let error = client
            .health(&addr.to_string(), Duration::from_secs(30))
            .await
            .unwrap_err();
        match &error {
            ClientError::NoConnection { after, .. } => {
                assert_eq!(*after, Duration::from_millis(300));
            }
            other => panic!("expected NoConnection, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("firewall drops the port"), "{message}");
    }

    #[test]
    fn addresses_become_base_urls() {
        for (given, url) in [
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            ("127.0.0.1", "http://127.0.0.1:50051"),
            ("http://thor.local:1/", "http://thor.local:1"),
            ("https://thor.local", "https://thor.local:50051"),
            ("HTTPS://thor.local:443", "https://thor.local:443"),
            ("[::1]:7", "http://[::1]:7"),
            ("https://[::1]", "https://[::1]:50051"),
            ("::1", "http://[::1]:50051"),
        ] {
            assert_eq!(base_url(given).unwrap(), url, "{given}");
        }
        for bad in [
            "ftp://x",
            " ",
            "https://https://localhost:50051",
            "thor/health",
            "http://thor:50051/v1",
            "thor:0",
            "thor:http",
            "thor:99999",
            "[::1",
            "[thor]:1",
            "th or:1",
            ":50051",
        ] {
            assert!(
                matches!(base_url(bad), Err(ClientError::BadAddress { .. })),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind, learn the port, close: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new().unwrap();
        let err = client
            .health(&format!("127.0.0.1:{port}"), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    }

    /// A server that answers the first request on each connection with a
    /// `200` of `total` bytes, with its `Content-Length` or chunked
    /// without one; the handle gives the body bytes it managed to write
    /// before the client hung up.
    async fn flood(
        announce: bool,
        total: u64,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<u64>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let framing = if announce {
                format!("Content-Length: {total}")
            } else {
                "Transfer-Encoding: chunked".to_owned()
            };
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n");
            socket.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0u64;
            while written < total {
                let framed = if announce {
                    socket.write_all(&chunk).await
                } else {
                    let size = format!("{:x}\r\n", chunk.len());
                    async {
                        socket.write_all(size.as_bytes()).await?;
                        socket.write_all(&chunk).await?;
                        socket.write_all(b"\r\n").await
                    }
                    .await
                };
                if framed.is_err() {
                    break;
                }
                written += chunk.len() as u64;
            }
            written
        });
        (addr, writer)
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_limit_is_refused_without_being_read() {
        const TOTAL: u64 = 100 * 1024 * 1024;
        for announce in [true, false] {
            let (addr, writer) = flood(announce, TOTAL).await;
            let client = Client::new().unwrap().with_max_answer_bytes(1024 * 1024);
            let error = client
                .health(&addr.to_string(), Duration::from_secs(30))
                .await
                .unwrap_err();
            match &error {
                ClientError::TooLarge { addr: at, limit } => {
                    assert_eq!(
                        (at.as_str(), *limit),
                        (addr.to_string().as_str(), 1024 * 1024)
                    );
                }
                other => panic!("expected TooLarge, got {other:?}"),
            }
            let message = error.to_string();
            assert!(
                message.contains(&addr.to_string()) && message.contains("1048576 bytes"),
                "{message}"
            );
            // The client hung up long before the end: what was written is
            // at most the limit and the sockets' buffers.
            let written = tokio::time::timeout(Duration::from_secs(20), writer)
                .await
                .expect("the server noticed the client hang up")
                .unwrap();
            assert!(
                written < TOTAL / 2,
                "announce {announce}: {written} bytes written"
            );
        }
    }

    #[tokio::test]
    async fn an_answer_of_exactly_the_limit_is_read() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let body = br#"{"status": "healthy", "platform": "Thor", "lct_id": "thor_sage_lct", "timestamp": 1.0}"#;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = socket.read(&mut head).await.unwrap();
                // Without a length: the client counts what comes.
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}",
                    String::from_utf8_lossy(body)
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let at = addr.to_string();
        let timeout = Duration::from_secs(5);
        let exact = Client::new().unwrap().with_max_answer_bytes(body.len());
        let (health, _) = exact.health(&at, timeout).await.unwrap();
        assert_eq!(health.platform, "Thor");
        let short = Client::new().unwrap().with_max_answer_bytes(body.len() - 1);
        let error = short.health(&at, timeout).await.unwrap_err();
        assert!(matches!(error, ClientError::TooLarge { .. }), "{error}");
        server.abort();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts connections but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let err = Client::new()
            .unwrap()
            .health(&addr.to_string(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::TimedOut { .. }), "{err}");
        hold.abort();
    }
}
