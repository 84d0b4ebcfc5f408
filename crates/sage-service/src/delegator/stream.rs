//! A streaming delegation: the node's answer to a task sent with a stream
//! asked for (`docs/protocol.md`) hands each piece of the output on as it
//! arrives, to a [`ChunkSink`]; the proof at the end is verified as any
//! other, and what was streamed must be exactly what it signs
//! ([`check_streamed`]).
//!
//! The pieces are not verified when they are handed on: only the
//! delegation's result says whether they were right. A caller that shows
//! them as they come (`sage delegate --stream`, an OpenAI-compatible
//! relay) must treat a failed delegation as the retraction of what it
//! showed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sage_exec::http::output_digest;
use sage_types::untrusted::Untrusted;
use sage_types::{Envelope, ProofStatus};
use tokio::sync::mpsc;

use crate::DelegateError;

/// Where a streaming delegation hands the output's pieces as they arrive,
/// unverified (see the module). Clones share whether anything was handed
/// on: a routed delegation fails over to another peer only before that.
#[derive(Debug, Clone)]
pub struct ChunkSink {
    sender: mpsc::Sender<String>,
    passed_on: Arc<AtomicBool>,
}

impl ChunkSink {
    /// A sink that sends each piece on `sender`; a closed receiver is no
    /// reason to stop: the delegation still reads and verifies the proof.
    pub fn new(sender: mpsc::Sender<String>) -> Self {
        ChunkSink {
            sender,
            passed_on: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a piece was handed on.
    pub fn passed_on(&self) -> bool {
        self.passed_on.load(Ordering::Acquire)
    }

    /// Hands `piece` on, waiting while the receiver is full.
    pub(crate) async fn pass(&self, piece: String) {
        self.passed_on.store(true, Ordering::Release);
        let _ = self.sender.send(piece).await;
    }
}

/// What a node answered a task sent with a stream asked for.
#[derive(Debug, Clone)]
pub enum TaskAnswer {
    /// A plain answer (a stored proof, an executor that does not stream):
    /// the proof envelope; nothing was handed on.
    Whole(Envelope),
    /// A streaming answer: the pieces received, concatenated (each handed
    /// on), and how it ended.
    Streamed {
        /// The pieces, in order.
        received: String,
        /// The end.
        end: StreamEnd,
    },
}

/// How a streaming answer ended.
#[derive(Debug, Clone)]
pub enum StreamEnd {
    /// With the proof envelope, not yet verified.
    Proof(Envelope),
    /// Without a proof: the node's error, the connection's, or the
    /// stream's end; what happened.
    Cut(String),
}

/// Checks that `received`, what `target` streamed, is what its verified
/// proof signs (its `status` and `result`): the run succeeded, its
/// `result.content` is `received` byte for byte and its
/// `result.output_digest` is the digest of those bytes.
///
/// # Errors
/// [`DelegateError::StreamCut`] for a failed run (what was streamed is
/// not its output), [`DelegateError::StreamMismatch`] for another content.
pub fn check_streamed(
    received: &str,
    (status, result): (ProofStatus, &serde_json::Value),
    target: &str,
) -> Result<(), DelegateError> {
    let mismatch = |detail: String| {
        Err(DelegateError::StreamMismatch {
            target: target.to_owned(),
            detail,
        })
    };
    if status != ProofStatus::Succeeded {
        let error = result.get("error").and_then(|e| e.as_str());
        return Err(DelegateError::StreamCut {
            target: target.to_owned(),
            detail: format!(
                "its signed proof says the run failed after {} bytes were streamed: {}",
                received.len(),
                Untrusted(error.unwrap_or("no reason given")).up_to(300)
            ),
        });
    }
    let Some(content) = result.get("content").and_then(|c| c.as_str()) else {
        return mismatch("the proof's result has no `content`".into());
    };
    if content != received {
        return mismatch(format!(
            "{} bytes streamed, {} bytes of content signed",
            received.len(),
            content.len()
        ));
    }
    let digest = output_digest(received);
    match result.get("output_digest").and_then(|d| d.as_str()) {
        Some(signed) if signed == digest => Ok(()),
        Some(signed) => mismatch(format!(
            "the signed output digest is {}, the bytes streamed hash to {digest}",
            Untrusted(signed)
        )),
        None => mismatch("the proof's result has no `output_digest`".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    type Signed = (ProofStatus, serde_json::Value);

    fn signed(content: &str, digest: &str) -> Signed {
        (
            ProofStatus::Succeeded,
            json!({"content": content, "output_digest": digest}),
        )
    }

    fn check(received: &str, (status, result): &Signed) -> Result<(), DelegateError> {
        check_streamed(received, (*status, result), "Thor")
    }

    #[test]
    fn the_bytes_streamed_must_be_the_signed_content_and_digest() {
        let good = output_digest("héllo");
        assert!(check("héllo", &signed("héllo", &good)).is_ok());
        let codes = |received: &str, proof: &Signed| check(received, proof).unwrap_err().code();
        assert_eq!(codes("hello", &signed("héllo", &good)), "stream_mismatch");
        assert_eq!(
            codes("héllo", &signed("héllo", &output_digest("other"))),
            "stream_mismatch"
        );
        let no_digest = (ProofStatus::Succeeded, json!({"content": "héllo"}));
        assert_eq!(codes("héllo", &no_digest), "stream_mismatch");
        let failed = (ProofStatus::Failed, json!({"error": "backend gone"}));
        let e = check("hé", &failed).unwrap_err();
        assert_eq!(e.code(), "stream_cut");
        assert!(e.to_string().contains("backend gone"), "{e}");
    }

    #[tokio::test]
    async fn a_sink_says_whether_a_piece_was_handed_on_even_with_no_reader() {
        let (sender, receiver) = mpsc::channel(1);
        let sink = ChunkSink::new(sender);
        let clone = sink.clone();
        assert!(!sink.passed_on());
        drop(receiver);
        clone.pass("x".into()).await;
        assert!(sink.passed_on());
    }
}
