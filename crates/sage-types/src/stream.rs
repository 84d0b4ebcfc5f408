//! The streaming answer of `POST /v1/tasks` (see `docs/protocol.md`): asked
//! for by a request header, never by the signed task; one JSON object per
//! line, the output's pieces first, the signed proof last.

use serde::{Deserialize, Serialize};

use crate::{Envelope, Problem};

/// The media type of a streaming answer, as its `Content-Type` says.
pub const STREAM_MEDIA_TYPE: &str = "application/vnd.sage.stream";

/// The `Accept` value that asks a node for a streaming answer, and the
/// `Content-Type` of one.
pub const STREAM_ACCEPT: &str = "application/vnd.sage.stream; version=1";

/// One line of a streaming answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Frame {
    /// A piece of the output, as the executor passed it on: unverified
    /// until the proof that ends the stream.
    Chunk(String),
    /// The signed proof envelope, exactly the non-streaming answer's body;
    /// the last line.
    Proof(Envelope),
    /// The node could not finish the answer (a store failure): the last
    /// line, and no proof.
    Error(Problem),
}

/// Whether an `Accept` header's value asks for a streaming answer.
pub fn asks_stream(accept: &str) -> bool {
    accept
        .split(',')
        .any(|media| media.split(';').next().map(str::trim) == Some(STREAM_MEDIA_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_one_keyed_object_each() {
        let chunk = serde_json::to_string(&Frame::Chunk("hé\n".into())).unwrap();
        assert_eq!(chunk, r#"{"chunk":"hé\n"}"#);
        let back: Frame = serde_json::from_str(&chunk).unwrap();
        assert_eq!(back, Frame::Chunk("hé\n".into()));
        assert!(serde_json::from_str::<Frame>(r#"{"chunk":"a","proof":{}}"#).is_err());
    }

    #[test]
    fn the_stream_is_asked_by_its_media_type_whatever_its_parameters() {
        assert!(asks_stream(STREAM_ACCEPT));
        assert!(asks_stream("application/json, application/vnd.sage.stream"));
        assert!(!asks_stream("application/json"));
        assert!(!asks_stream("application/vnd.sage.streamer"));
    }
}
