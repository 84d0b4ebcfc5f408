//! The streaming answer of `POST /v1/tasks` (`docs/protocol.md`): when the
//! request asks for one and the executor streams, the output's pieces go
//! to the delegator as they come, one JSON line each, then the signed
//! proof. Everything before the run is as for any task; the run is the
//! node's own task (see `once`), so a delegator gone mid-stream changes
//! nothing but who reads the frames.
//!
//! The answer becomes a stream only once the first piece came: a run that
//! ends without one (a stored proof for a retry, a refusal, a run that
//! passes nothing on) answers as without a stream, which the delegator
//! reads too.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use http_body_util::channel::{Channel, Sender};
use sage_exec::Chunks;
use sage_types::stream::{asks_stream, Frame, STREAM_ACCEPT};
use sage_types::ProblemCode;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

use super::once::Once;
use super::ApiError;

/// Frames waiting for a slow delegator; beyond this the frames wait (the
/// run does not: the executor's pieces queue unbounded, within its own
/// `max_response_bytes`).
const FRAMES_BUFFERED: usize = 16;

/// Where the run's pieces go, and where the answer reads them; `None`
/// when the request asks no stream or the executor does not stream.
pub(super) fn channel(
    headers: &HeaderMap,
    executor_streams: bool,
) -> Option<(Chunks, UnboundedReceiver<String>)> {
    let asked = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(asks_stream);
    (asked && executor_streams).then(unbounded_channel)
}

/// How a run ended, or will: the proof (or the error) that ends a stream.
type Ending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Once, ApiError>> + Send>>;

/// What [`answer`] made of a run.
pub(super) enum Raced {
    /// The run ended before any piece came: answer it as without a stream.
    Ended(Result<Once, ApiError>),
    /// The streaming answer, under way.
    Streaming(Response),
}

/// Waits for the first piece or the end of `run`, whichever comes first.
/// A piece that is there is streamed even when the run has ended too:
/// whether the delegator sees the pieces of a run that failed midway must
/// not depend on which of the two the scheduler saw first.
pub(super) async fn answer(
    mut run: JoinHandle<Result<Once, ApiError>>,
    mut chunks: UnboundedReceiver<String>,
) -> Raced {
    let (first, end): (_, Ending) = tokio::select! {
        biased;
        first = chunks.recv() => match first {
            Some(first) => (first, Box::pin(async move { joined(run.await) })),
            None => return Raced::Ended(joined(run.await)),
        },
        ended = &mut run => match chunks.try_recv() {
            Ok(first) => (first, Box::pin(std::future::ready(joined(ended)))),
            Err(_) => return Raced::Ended(joined(ended)),
        },
    };
    let (sender, body) = Channel::<Bytes>::new(FRAMES_BUFFERED);
    tokio::spawn(frames(first, chunks, end, sender));
    let mut response = Body::new(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(STREAM_ACCEPT),
    );
    Raced::Streaming(response)
}

/// Writes the frames: each piece as it comes, then the proof (or the
/// error that left none). Stops writing when the delegator is gone.
async fn frames(
    first: String,
    mut chunks: UnboundedReceiver<String>,
    end: Ending,
    mut sender: Sender<Bytes>,
) {
    let mut piece = Some(first);
    while let Some(text) = piece {
        if sender.send_data(line(&Frame::Chunk(text))).await.is_err() {
            return; // the delegator is gone; the run goes on without it
        }
        piece = chunks.recv().await;
    }
    let last = match end.await {
        Ok(Once::Answer(signed)) => {
            // The envelope exactly as stored and as a plain answer's body.
            let mut frame = b"{\"proof\":".to_vec();
            frame.extend_from_slice(&signed);
            frame.extend_from_slice(b"}\n");
            Bytes::from(frame)
        }
        Ok(_) => line(&Frame::Error(
            ApiError::new(ProblemCode::Internal, "a streamed run ended in no answer").problem(),
        )),
        Err(e) => line(&Frame::Error(e.problem())),
    };
    let _ = sender.send_data(last).await;
}

fn joined(ended: Result<Result<Once, ApiError>, tokio::task::JoinError>) -> Result<Once, ApiError> {
    ended.map_err(|e| {
        ApiError::new(
            ProblemCode::Internal,
            format!("the request's wait for its run ended: {e}"),
        )
    })?
}

/// A frame and its line end.
fn line(frame: &Frame) -> Bytes {
    let mut bytes = serde_json::to_vec(frame).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
