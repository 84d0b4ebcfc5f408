//! W3C Trace Context across machines: the `traceparent` header a
//! delegator puts on every request of a delegation, and what a node makes
//! of it.
//!
//! The header is informational and unsigned: it never decides anything.
//! A node that gets a malformed one ignores it. Without an OTLP exporter
//! ([`crate::telemetry`]) a node only records the trace id in its request
//! span's fields, so that its log lines carry it; with one, the node's
//! request span continues the delegator's trace, and the delegator's
//! header names its own span.

use std::fmt;

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// The one version of the header this node writes and reads.
const VERSION: &str = "00";

/// The `sampled` flag.
const SAMPLED: u8 = 0x01;

/// A trace's id: 16 bytes, not all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// A new random id, for a delegation that starts a trace.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 16] = rand::random();
            if bytes != [0; 16] {
                return TraceId(bytes);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// One `traceparent`: the trace, the span of the request's sender, and the
/// flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The sender's span: the parent of the receiver's.
    pub parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// A request of the trace `trace_id` with a new random span id, sampled.
    pub fn child_of(trace_id: TraceId) -> Self {
        let parent_id = loop {
            let bytes: [u8; 8] = rand::random();
            if bytes != [0; 8] {
                break bytes;
            }
        };
        TraceParent {
            trace_id,
            parent_id,
            flags: SAMPLED,
        }
    }

    /// Reads a header value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
    /// neither id all zeros. Anything else is `None`.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() != 55 || !value.starts_with(VERSION) {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        lower_hex(&bytes[3..35], &mut trace_id)?;
        lower_hex(&bytes[36..52], &mut parent_id)?;
        lower_hex(&bytes[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceId(trace_id),
            parent_id,
            flags: flags[0],
        })
    }

    /// Whether the sender samples the trace.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Decodes lowercase hex only: W3C forbids uppercase, and `hex` takes both.
fn lower_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if !text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode_to_slice(text, out).ok()
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION}-{}-{}-{:02x}",
            self.trace_id,
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_header_reads_and_prints_back_the_same() {
        let parsed = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(parsed.to_string(), GOOD);
        assert_eq!(
            parsed.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(parsed.sampled());
    }

    #[test]
    fn anything_else_is_ignored() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn children_of_a_trace_share_it_with_their_own_span_ids() {
        let trace = TraceId::random();
        let a = TraceParent::child_of(trace);
        let b = TraceParent::child_of(trace);
        assert_eq!(a.trace_id, b.trace_id);
        assert_ne!(a.parent_id, b.parent_id);
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
    }
}
