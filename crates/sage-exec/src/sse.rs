//! Server-sent events as an OpenAI-compatible backend streams them: the
//! `data` of each event, read from bytes that may be split anywhere.
//!
//! Lines end with `\n`, `\r\n` or `\r`; a line starting with `:` is a
//! comment; `data:` lines of one event are joined with `\n`; an empty line
//! ends the event. Other fields (`event`, `id`, `retry`) are ignored: the
//! chat stream does not use them. An event the stream ends inside of is
//! not dispatched, as the SSE standard says.

/// Reads events from bytes fed in pieces; see the module.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The start of a line whose end has not come yet.
    line: Vec<u8>,
    /// The `data` lines of the event being read.
    data: Vec<String>,
    /// Whether the event being read has a `data` field at all.
    has_data: bool,
    /// The last byte fed was a `\r`: a `\n` right after it ends no line.
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds the next `bytes` of the stream; returns the `data` of every
    /// event they complete, in order. Invalid UTF-8 is replaced, as the
    /// standard's decoder does.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => self.end_line(&mut events),
                _ => self.line.push(byte),
            }
        }
        events
    }

    /// Bytes of a line still waiting for its end: a stream that stops
    /// here was cut inside a line.
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                events.push(std::mem::take(&mut self.data).join("\n"));
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            self.has_data = true;
            self.data.push(String::from_utf8_lossy(value).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(pieces: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::new();
        pieces.iter().flat_map(|p| parser.feed(p)).collect()
    }

    #[test]
    fn events_end_at_an_empty_line() {
        assert_eq!(
            all(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]),
            ["{\"a\":1}", "[DONE]"]
        );
    }

    #[test]
    fn an_event_split_across_reads_anywhere_is_the_same_event() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"h\xc3\xa9\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n";
        let whole = all(&[stream]);
        assert_eq!(whole.len(), 2);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(all(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn data_lines_of_one_event_are_joined_with_newlines() {
        assert_eq!(
            all(&[b"data: first\ndata:second\ndata\n\n"]),
            ["first\nsecond\n"]
        );
    }

    #[test]
    fn comments_and_other_fields_are_skipped() {
        assert_eq!(
            all(&[b": keep-alive\n\nevent: x\nid: 3\nretry: 10\ndata: y\n\n: bye\n\n"]),
            ["y"]
        );
    }

    #[test]
    fn a_lone_cr_ends_a_line() {
        assert_eq!(all(&[b"data: a\r\rdata: b\r", b"\r"]), ["a", "b"]);
    }

    #[test]
    fn an_event_the_stream_ends_inside_of_is_not_dispatched() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: [DONE]\n").is_empty());
        assert_eq!(parser.pending(), 0);
        assert!(parser.feed(b"data: par").is_empty());
        assert_eq!(parser.pending(), 9);
    }
}
