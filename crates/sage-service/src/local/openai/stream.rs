//! `"stream": true` on `POST /local/v1/chat/completions`: the pieces of a
//! streaming delegation relayed as OpenAI's server-sent
//! `chat.completion.chunk` events as they arrive, each written at once.
//!
//! The pieces are unverified when they go out (see
//! [`crate::delegator::stream`]): the receipt comes only in the last chunk,
//! once the proof verified, the stream is what it signs and the ledger
//! kept it. A failure after a piece went out is an `error` event instead,
//! which OpenAI's clients raise (`openai.APIError`), with no receipt and no
//! `[DONE]`: what was shown is retracted. A failure before any piece is
//! the ordinary error answer, status and JSON.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::channel::{Channel, Sender};
use sage_types::clock::now_ms;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::tasks::{self, Ask, Unverified, Verified};
use super::super::{Api, Origin};
use super::{chat_content, error_body, failure};
use crate::delegator::stream::ChunkSink;

/// Pieces waiting for the writer; beyond this the delegation waits.
const PIECES_BUFFERED: usize = 64;
/// Events waiting for a slow client; beyond this the writer waits.
const EVENTS_BUFFERED: usize = 16;

/// The header that names the task of a stream, whose receipt exists only
/// once the stream ended.
const TASK_ID: HeaderName = HeaderName::from_static("x-sage-task-id");

type Run = JoinHandle<Result<Verified, Unverified>>;

/// What every chunk of one completion shares.
struct Chunks {
    id: String,
    created: u64,
    model: String,
}

impl Chunks {
    /// A chunk with `choice` (its `index` added) and the `extra` fields.
    fn event(&self, choice: Value, extra: Value) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let (Value::Object(chunk), Value::Object(extra)) = (&mut chunk, extra) {
            chunk.extend(extra);
        }
        sse(&chunk)
    }

    /// A piece of content; the role in the first only.
    fn piece(&self, text: &str, first: bool) -> Bytes {
        let delta = match first {
            true => json!({"role": "assistant", "content": text}),
            false => json!({"content": text}),
        };
        self.event(
            json!({"index": 0, "delta": delta, "finish_reason": null}),
            json!({}),
        )
    }

    /// The last chunk: the verified result's finish reason and usage, and
    /// the receipt.
    fn last(&self, verified: &Verified) -> Bytes {
        let summary = &verified.delegation.summary;
        let result = &summary.result;
        let mut extra = json!({
            "sage_receipt": {
                "id": summary.task_id,
                "task_digest": verified.delegation.task_digest,
                "proof_digest": verified.proof_digest(),
                "executor": verified.target.name,
                "output_digest": result["output_digest"],
            },
        });
        if !result["usage"].is_null() {
            extra["usage"] = result["usage"].clone();
        }
        let model = result["model"].as_str().unwrap_or(&self.model).to_owned();
        extra["model"] = model.into();
        self.event(
            json!({
                "index": 0,
                "delta": {},
                "finish_reason": result["finish_reason"].as_str().unwrap_or("stop"),
            }),
            extra,
        )
    }
}

/// One server-sent event carrying `data`.
fn sse(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Delegates `ask` with a streaming answer asked for, and answers the
/// chat completion as a stream of events once the first piece (or the
/// verified end) is there; an error answer if the delegation failed
/// before any piece.
pub(in crate::local) async fn answer(
    api: Arc<Api>,
    origin: Origin,
    ask: Ask,
    requested: String,
) -> Response {
    let chunks = Chunks {
        id: format!("chatcmpl-{}", ask.task_id()),
        created: now_ms() / 1000,
        model: requested,
    };
    let task_id = ask.task_id();
    let (sender, mut pieces) = mpsc::channel::<String>(PIECES_BUFFERED);
    // The node's own task: a client gone mid-stream leaves the delegation
    // to its end, its outcome in the ledger.
    let run: Run = tokio::spawn(async move {
        let sink = ChunkSink::new(sender);
        tasks::delegate_streaming(&api, &origin, &ask, &sink).await
    });
    // `None`: the delegation ended (its sink with it) before any piece.
    let first = pieces.recv().await;
    let (events, body) = Channel::<Bytes>::new(EVENTS_BUFFERED);
    match first {
        Some(first) => {
            tokio::spawn(relay(chunks, first, pieces, run, events));
        }
        None => {
            let verified = match joined(run.await) {
                Ok(verified) => verified,
                Err(unverified) => return failure(&unverified),
            };
            let content = match chat_content(&verified) {
                Ok(content) => content.to_owned(),
                Err(refused) => return *refused,
            };
            // An answer that came whole (an executor that does not stream,
            // a stored proof): one piece, then the end.
            tokio::spawn(whole(chunks, content, verified, events));
        }
    }
    let mut response = Body::new(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&task_id) {
        headers.insert(TASK_ID, value);
    }
    response
}

/// Writes each piece as it comes, then the end the delegation came to.
/// Stops writing (and reading pieces) when the client is gone.
async fn relay(
    chunks: Chunks,
    first: String,
    mut pieces: mpsc::Receiver<String>,
    run: Run,
    mut events: Sender<Bytes>,
) {
    let mut piece = Some(first);
    let mut is_first = true;
    while let Some(text) = piece {
        if events
            .send_data(chunks.piece(&text, is_first))
            .await
            .is_err()
        {
            return; // the client is gone; the delegation goes on
        }
        is_first = false;
        piece = pieces.recv().await;
    }
    let ended = joined(run.await).and_then(|verified| match chat_content(&verified) {
        Ok(_) => Ok(verified),
        Err(_) => Err(Unverified {
            status: StatusCode::BAD_GATEWAY,
            code: "execution_failed",
            detail: format!(
                "the verified result of {}'s streamed run is not a chat's",
                verified.target.name
            ),
            task_id: Some(verified.delegation.summary.task_id.clone()),
            attempts: Some(verified.tried.clone()),
        }),
    });
    match ended {
        Ok(verified) => {
            if events.send_data(chunks.last(&verified)).await.is_ok() {
                let _ = events
                    .send_data(Bytes::from_static(b"data: [DONE]\n\n"))
                    .await;
            }
        }
        Err(unverified) => {
            tracing::warn!(
                task_id = unverified.task_id.as_deref().unwrap_or_default(),
                code = unverified.code,
                detail = %unverified.detail,
                "a streamed chat completion failed after pieces were relayed: the client gets an error event and no receipt"
            );
            let event = error_body(
                unverified.status,
                unverified.code,
                unverified.detail.clone(),
                unverified.extra(),
            );
            let _ = events.send_data(sse(&event)).await;
        }
    }
}

/// The events of an answer verified whole: its content, the end.
async fn whole(chunks: Chunks, content: String, verified: Verified, mut events: Sender<Bytes>) {
    for event in [
        chunks.piece(&content, true),
        chunks.last(&verified),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ] {
        if events.send_data(event).await.is_err() {
            return;
        }
    }
}

fn joined(
    ended: Result<Result<Verified, Unverified>, tokio::task::JoinError>,
) -> Result<Verified, Unverified> {
    ended.unwrap_or_else(|e| {
        Err(Unverified {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            detail: format!("the streamed delegation ended without an outcome: {e}"),
            task_id: None,
            attempts: None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_one_event_with_the_role_in_the_first_only() {
        let chunks = Chunks {
            id: "chatcmpl-t".into(),
            created: 7,
            model: "m".into(),
        };
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        let first = text(chunks.piece("Hé", true));
        assert!(
            first.starts_with("data: ") && first.ends_with("\n\n"),
            "{first}"
        );
        let event: Value = serde_json::from_str(first[6..].trim_end()).unwrap();
        assert_eq!(event["object"], "chat.completion.chunk");
        assert_eq!(event["id"], "chatcmpl-t");
        assert_eq!(
            event["choices"][0]["delta"],
            json!({"role": "assistant", "content": "Hé"})
        );
        assert_eq!(event["choices"][0]["finish_reason"], Value::Null);
        let next = text(chunks.piece("x", false));
        let event: Value = serde_json::from_str(next[6..].trim_end()).unwrap();
        assert_eq!(event["choices"][0]["delta"], json!({"content": "x"}));
    }
}
