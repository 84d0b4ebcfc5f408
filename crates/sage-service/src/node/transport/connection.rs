//! One accepted connection: the TLS handshake when there is one, then
//! hyper's HTTP/1.1 connection over a [`Guarded`] stream that enforces the
//! header read timeout and answers a head over `max_header_bytes` itself,
//! under a loop that closes it when idle, when the registry picks it to
//! make room, or when the server shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use sage_types::problem::PROBLEM_CONTENT_TYPE;
use sage_types::{Problem, ProblemCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::activity::{Activity, InFlight};
use super::body::DeadlineBody;
use super::registry::Registered;
use super::Phase;
use crate::config::{Limits, MAX_HEADER_BYTES_RANGE};
use crate::node::metrics::CloseReason;
use crate::node::AppState;
use crate::tls::ServerTls;

/// hyper's limit on the header fields of a request (its default): more
/// are refused as too large, as a head over `max_header_bytes` is.
const MAX_HEADER_FIELDS: usize = 100;

/// How the status line of hyper's own answer to a head it refuses as too
/// large begins. The router never answers 431, so these bytes written while
/// a head is being read can only be that answer.
const HYPER_HEAD_REFUSAL: &[u8] = b"HTTP/1.1 431 ";

/// How long a refused client may take to read its answer: meanwhile what
/// it still sends is read and dropped, so that it gets the answer rather
/// than a reset.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection of a server shares.
pub(super) struct Shared {
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    state: AppState,
}

impl Shared {
    pub(super) fn new(app: Router, state: AppState, tls: Option<&ServerTls>) -> Self {
        Shared {
            tls: tls.map(ServerTls::acceptor),
            app,
            state,
        }
    }

    /// Counts a connection closed for `reason`.
    pub(super) fn closed(&self, reason: CloseReason) {
        self.state.inner().metrics.connection_closed(reason);
    }
}

/// A connection's limits: the node's when it was accepted (a reload
/// applies to the connections accepted after it).
#[derive(Debug, Clone, Copy)]
pub(super) struct PerConnection {
    header_read: Duration,
    body_read: Duration,
    idle: Duration,
    max_header_bytes: usize,
}

impl PerConnection {
    pub(super) fn new(limits: &Limits) -> Self {
        PerConnection {
            header_read: limits.header_read_timeout,
            body_read: limits.body_read_timeout,
            idle: limits.idle_timeout,
            // Checked at load; clamped for limits made in code, as hyper
            // panics below its smallest buffer.
            max_header_bytes: limits.max_header_bytes.clamp(
                *MAX_HEADER_BYTES_RANGE.start(),
                *MAX_HEADER_BYTES_RANGE.end(),
            ),
        }
    }

    /// hyper's HTTP/1.1 settings for a connection under these limits.
    fn http(&self) -> http1::Builder {
        let mut http = http1::Builder::new();
        // Our own header timeout instead (see the module documentation).
        http.keep_alive(true).header_read_timeout(None);
        // The head's bound, exact: hyper counts from its first byte to its
        // last header line and refuses a longer one (431, which [`Guarded`]
        // replaces with ours). The read buffer's bound: it holds at most
        // that much of an unfinished head (hyper's default is ~400 KB), and
        // body bytes in pieces no larger.
        http.max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes);
        http
    }
}

/// Serves one accepted connection until it closes; the slot (`_permit`)
/// and its place in the registry are given back when this returns.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    limits: PerConnection,
    mut phase: watch::Receiver<Phase>,
    _permit: OwnedSemaphorePermit,
    registered: Registered,
) {
    let Some(acceptor) = &shared.tls else {
        return serve_http(stream, peer, &shared, limits, &registered, phase).await;
    };
    let limit = limits.header_read;
    let handshake = async {
        if speaks_plain_http(&stream).await {
            answer_https_only(stream, &registered).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                None
            }
        }
    };
    let tls = tokio::select! {
        done = tokio::time::timeout(limit, handshake) => match done {
            Ok(Some(tls)) => tls,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%peer, "closing connection: TLS handshake not done within {} s (header_read_timeout)", limit.as_secs_f64());
                return;
            }
        },
        () = registered.evicted() => {
            tracing::debug!(%peer, "closing connection in its TLS handshake: the idlest, to make room (max_connections)");
            shared.closed(CloseReason::EvictedIdle);
            return;
        }
        () = leaving_serving(&mut phase) => return,
    };
    serve_http(tls, peer, &shared, limits, &registered, phase).await;
}

/// Completes when the server stops serving (or is gone).
async fn leaving_serving(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Serving).await;
}

/// Whether a client on the TLS port starts with an HTTP method rather
/// than a TLS handshake record (which starts with byte 0x16).
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Tells a plain-HTTP client that this port speaks HTTPS, then closes.
async fn answer_https_only(stream: TcpStream, registered: &Registered) {
    let problem = Problem::new(
        ProblemCode::Malformed,
        sage_types::problem::HTTPS_ONLY_DETAIL,
    );
    // Boxed, as a refused head's answer is (see `refusal`).
    Box::pin(answer_and_close(
        stream,
        "400 Bad Request",
        &problem,
        registered,
    ))
    .await;
}

/// The answer to a request head hyper refused: over `max_header_bytes`,
/// or with more header fields than hyper takes.
fn head_too_large(max_header_bytes: usize) -> Problem {
    let mut problem = Problem::new(
        ProblemCode::TooLarge,
        format!(
            "the request head (request line and headers) is over this node's limit of {max_header_bytes} bytes (max_header_bytes) or has more than {MAX_HEADER_FIELDS} header fields"
        ),
    );
    // `too_large` is 413 for a body; a head's status is 431 (RFC 6585).
    problem.status = 431;
    problem
}

/// Writes one answer (`status`, `problem` as the body) and closes without
/// a reset: after shutting down its side, reads what the client still
/// sends and drops it, for up to [`LINGER`] or until the connection is
/// picked to make room.
async fn answer_and_close<I>(mut io: I, status: &str, problem: &Problem, registered: &Registered)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {PROBLEM_CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let answered = async {
        io.write_all(head.as_bytes()).await?;
        io.write_all(&body).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 2048];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER, answered) => {}
        () = registered.evicted() => {}
    }
}

/// HTTP/1.1 on `io` until the client closes, the connection is idle too
/// long, a timeout cuts it, the registry picks it to make room, or the
/// server shuts down.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    shared: &Shared,
    limits: PerConnection,
    registered: &Registered,
    mut phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = registered.activity().clone();
    let io = Guarded::new(io, activity.clone(), limits.header_read);
    let service = RequestService {
        client: ClientAddr(peer),
        app: shared.app.clone(),
        activity: activity.clone(),
        body_read_timeout: limits.body_read,
    };
    let mut conn = limits.http().serve_connection(TokioIo::new(io), service);
    let mut closing = false;
    if *phase.borrow_and_update() != Phase::Serving {
        Pin::new(&mut conn).graceful_shutdown();
        closing = true;
    }
    let idle = limits.idle;
    // Once an idle connection is being closed: the most its last answer may
    // take to be written. A client that stops reading does not keep its
    // slot (and hyper's buffers) past it.
    let mut close_by: Option<Instant> = None;
    let ended = loop {
        let idle_check = activity.idle_deadline(idle);
        let hard_stop = close_by.unwrap_or(idle_check);
        tokio::select! {
            ended = &mut conn => break ended,
            () = tokio::time::sleep_until(idle_check), if !closing => {
                if activity.idle_for(idle) {
                    tracing::debug!(%peer, "closing connection idle for {} s (idle_timeout)", idle.as_secs_f64());
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                    close_by = Some(Instant::now() + limits.header_read);
                }
            }
            () = tokio::time::sleep_until(hard_stop), if close_by.is_some() => {
                tracing::debug!(%peer, "dropping connection: its answer was not read within {} s of closing it", limits.header_read.as_secs_f64());
                return;
            }
            () = registered.evicted() => {
                shared.closed(CloseReason::EvictedIdle);
                if !activity.in_request() {
                    tracing::debug!(%peer, "closing the idlest connection to make room (max_connections)");
                    return;
                }
                // A request began since it was picked: that one is answered.
                tracing::debug!(%peer, "closing connection after its request, to make room (max_connections)");
                if !closing {
                    Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                    close_by = Some(Instant::now() + limits.header_read);
                }
            }
            changed = phase.changed() => {
                let now = match changed {
                    Ok(()) => *phase.borrow_and_update(),
                    Err(_) => Phase::Stopped,
                };
                match now {
                    Phase::Serving => {}
                    Phase::Draining => if !closing {
                        Pin::new(&mut conn).graceful_shutdown();
                        closing = true;
                    },
                    Phase::Stopped => return,
                }
            }
        }
    };
    // hyper is done with the stream; its buffers go now, before a refused
    // client is answered and lingered on.
    let guarded = conn.into_parts().io.into_inner();
    if let Some(refusal) = refusal(guarded, ended, peer, shared, limits, registered) {
        refusal.await;
    }
}

/// What is left to do with the stream once hyper is done: answering a head
/// it refused. Boxed: every connection's future would otherwise hold room
/// for a second stream and the answer's buffers, which few ever need.
fn refusal<'a, I>(
    guarded: Guarded<I>,
    ended: Result<(), hyper::Error>,
    peer: SocketAddr,
    shared: &'a Shared,
    limits: PerConnection,
    registered: &'a Registered,
) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'a,
{
    if !guarded.refused_head {
        if let Err(e) = ended {
            tracing::debug!(%peer, "connection closed: {e}");
        }
        return None;
    }
    Some(Box::pin(refuse_head(
        guarded.io, peer, shared, limits, registered,
    )))
}

/// Answers a request head hyper refused as too large, and closes.
async fn refuse_head<I>(
    io: I,
    peer: SocketAddr,
    shared: &Shared,
    limits: PerConnection,
    registered: &Registered,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let max_header_bytes = limits.max_header_bytes;
    tracing::debug!(%peer, max_header_bytes, "refusing a request head over max_header_bytes (431) and closing");
    shared.closed(CloseReason::HeadTooLarge);
    let problem = head_too_large(max_header_bytes);
    answer_and_close(
        io,
        "431 Request Header Fields Too Large",
        &problem,
        registered,
    )
    .await;
}

/// The connection's stream, noting activity, cutting a request head that
/// does not complete within the header read timeout (counted from its
/// first byte), and holding back hyper's bodyless answer to a head too
/// large, so that the connection answers with a problem instead.
struct Guarded<I> {
    io: I,
    activity: Arc<Activity>,
    header_read_timeout: Duration,
    /// Allocated at the first request head, then reset for each.
    header_deadline: Option<Pin<Box<Sleep>>>,
    /// hyper refused the head as too large; nothing more is written.
    refused_head: bool,
}

impl<I> Guarded<I> {
    fn new(io: I, activity: Arc<Activity>, header_read_timeout: Duration) -> Self {
        // The first request head is due within the header read timeout of
        // the connection's start: a connection that sends nothing is not
        // kept until the idle timeout.
        activity.begin_head();
        let first = Instant::now() + header_read_timeout;
        Guarded {
            io,
            activity,
            header_read_timeout,
            header_deadline: Some(Box::pin(tokio::time::sleep_until(first))),
            refused_head: false,
        }
    }

    /// Bytes came: when no request is in flight they begin a request head,
    /// which starts the header clock.
    fn on_read(&mut self) {
        let activity = &self.activity;
        activity.touch();
        if !activity.in_request() && !activity.begin_head() {
            let deadline = Instant::now() + self.header_read_timeout;
            match &mut self.header_deadline {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.header_deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
    }

    /// Whether the head being read is past its deadline; registers for a
    /// wake-up at the deadline otherwise.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.activity.head_pending() {
            return false;
        }
        self.header_deadline
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// Whether hyper is about to write, with `first`, its answer to a head
    /// it refuses as too large; if so the stream takes note and fails the
    /// write, which ends hyper's connection with nothing sent.
    fn holds_back(&mut self, first: &[u8]) -> bool {
        if !self.refused_head
            && self.activity.head_pending()
            && !self.activity.in_request()
            && first.starts_with(HYPER_HEAD_REFUSAL)
        {
            self.refused_head = true;
        }
        self.refused_head
    }

    /// One write of hyper's, which starts with `first`: held back when it
    /// is the refusal of a head too large ([`Self::holds_back`]), else
    /// made by `write` on the inner stream, and counted as activity when
    /// it moved a byte.
    fn write_with(
        &mut self,
        first: &[u8],
        write: impl FnOnce(&mut I) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.holds_back(first) {
            return Poll::Ready(Err(Self::head_refused_error()));
        }
        let written = write(&mut self.io);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        written
    }

    fn head_refused_error() -> io::Error {
        io::Error::other("request head too large (max_header_bytes); answered by the connection")
    }

    fn header_timeout_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "request headers not received within {} s (header_read_timeout)",
                self.header_read_timeout.as_secs_f64()
            ),
        )
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.head_overdue(cx) => Poll::Ready(Err(this.header_timeout_error())),
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(buf, |io| Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.get_mut()
            .write_with(first, |io| Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused_head {
            // The connection still has its answer to write.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The address of the client that sent a request: an extension of every
/// request the transport hands on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Hands each request to the router with a body that must arrive in
/// time, and counts it in flight meanwhile.
#[derive(Clone)]
struct RequestService {
    client: ClientAddr,
    app: Router,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(self.activity.clone());
        let deadline = Instant::now() + self.body_read_timeout;
        let (activity, limit) = (self.activity.clone(), self.body_read_timeout);
        let mut request = request
            .map(|incoming| Body::new(DeadlineBody::new(incoming, deadline, limit, activity)));
        request.extensions_mut().insert(self.client);
        let app = self.app.clone();
        Box::pin(async move {
            let Ok(mut response) = app.oneshot(request).await;
            if in_flight.activity().take_body_timed_out() {
                // The rest of the body is not worth waiting for.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            drop(in_flight);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_millis(100);

    fn guarded() -> (
        tokio::io::DuplexStream,
        Guarded<tokio::io::DuplexStream>,
        Arc<Activity>,
    ) {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Arc::new(Activity::new());
        (
            client,
            Guarded::new(server, activity.clone(), HEADER),
            activity,
        )
    }

    #[tokio::test]
    async fn a_head_that_does_not_complete_is_cut_at_the_header_timeout() {
        let (mut client, mut server, _activity) = guarded();
        client.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        let cut = tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf))
            .await
            .expect("cut within 10 s")
            .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::TimedOut);
        assert!(cut.to_string().contains("header_read_timeout"), "{cut}");
    }

    #[tokio::test]
    async fn a_silent_new_connection_is_cut_at_the_header_timeout() {
        let (_client, mut server, _activity) = guarded();
        let mut buf = [0u8; 16];
        let cut = tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf))
            .await
            .expect("cut within 10 s")
            .unwrap_err();
        assert_eq!(cut.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_complete_head_stops_the_clock_and_silence_between_requests_never_starts_it() {
        let (mut client, mut server, activity) = guarded();
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        // hyper parsed the head and called the service.
        let request = InFlight::begin(activity.clone());
        let waited = tokio::time::timeout(HEADER * 3, server.read(&mut buf)).await;
        assert!(waited.is_err(), "the clock ran past the head: {waited:?}");
        // Body bytes while the request is in flight do not start it either.
        client.write_all(b"x").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        assert!(!activity.head_pending());
        drop(request);
        // Silence between requests is idleness (the loop's), not a head.
        let waited = tokio::time::timeout(HEADER * 3, server.read(&mut buf)).await;
        assert!(waited.is_err(), "a read without bytes ended: {waited:?}");
        // The next request's first byte starts it again.
        client.write_all(b"G").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        let cut = tokio::time::timeout(Duration::from_secs(10), server.read(&mut buf))
            .await
            .expect("cut within 10 s");
        assert!(cut.is_err());
    }

    #[tokio::test]
    async fn hypers_bodyless_head_refusal_is_held_back_and_noted() {
        let (mut client, mut server, activity) = guarded();
        client.write_all(b"GET / HTTP/1.1\r\nX: ").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        assert!(activity.head_pending());
        let refused = server
            .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("max_header_bytes"),
            "{refused}"
        );
        assert!(server.refused_head);
        // Nothing more goes out, not even a shutdown: the connection
        // answers on the inner stream itself.
        assert!(server.write_all(b"more").await.is_err());
        server.shutdown().await.unwrap();
        server.io.write_all(b"ours").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ours");
    }

    #[tokio::test]
    async fn an_answer_to_a_request_goes_through() {
        let (mut client, mut server, activity) = guarded();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        drop(InFlight::begin(activity.clone()));
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        assert!(!server.refused_head);
        let mut got = [0u8; 19];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
    }
}
