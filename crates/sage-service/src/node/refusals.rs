//! What the log says about refusals: a flood of them must not flood the
//! log, and the first of each kind must not be lost in it.
//!
//! The first refusal of each code from each sender is logged at info with
//! its detail; the repeats at debug, and every [`SUMMARY_EVERY`] one info
//! line per sender and code counts them (`refused 8500 requests from
//! Sprout: unsupported_task`). A sender is the verified peer's name, or the
//! client's address when the refusal came before a signature was verified.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use sage_types::untrusted::Untrusted;
use sage_types::ProblemCode;

/// How often the repeats are counted in the log.
pub(super) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Most senders and codes remembered: a scan from many addresses cannot
/// grow the table without bound; past it, repeats are counted as `others`.
const MAX_KINDS: usize = 4096;

/// Who a refusal was for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Sender {
    /// A peer whose signature verified.
    Peer(String),
    /// Not verified (yet): the client's address.
    Address(std::net::IpAddr),
    /// Past [`MAX_KINDS`].
    Others,
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Peer(name) => write!(f, "{}", Untrusted(name)),
            Sender::Address(ip) => write!(f, "{ip} (unverified)"),
            Sender::Others => f.write_str("others"),
        }
    }
}

impl Sender {
    /// The verified peer, else the client's address.
    pub(super) fn of(peer: Option<&str>, client: Option<SocketAddr>) -> Self {
        match (peer, client) {
            (Some(name), _) => Sender::Peer(name.to_owned()),
            (None, Some(addr)) => Sender::Address(addr.ip()),
            (None, None) => Sender::Others,
        }
    }
}

/// The refusals seen, by sender and code.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// Repeats since the last summary, of every kind seen so far.
    kinds: Mutex<HashMap<(Sender, ProblemCode), u64>>,
}

impl RefusalLog {
    /// Logs one refusal: at info if it is the first of its kind, else at
    /// debug, counted for the next summary. `detail` is as sent back
    /// (bounded); it is escaped here.
    pub(super) fn refused(&self, sender: Sender, code: ProblemCode, endpoint: &str, detail: &str) {
        if self.first(&sender, code) {
            tracing::info!(code = code.as_str(), from = %sender, endpoint, detail = %Untrusted(detail), "request refused (repeats are counted every {} s)", SUMMARY_EVERY.as_secs());
        } else {
            tracing::debug!(code = code.as_str(), from = %sender, endpoint, detail = %Untrusted(detail), "request refused");
        }
    }

    /// Whether this is the first of its kind; counts it otherwise.
    fn first(&self, sender: &Sender, code: ProblemCode) -> bool {
        let key = (sender.clone(), code);
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = kinds.get_mut(&key) {
            *count += 1;
            return false;
        }
        if kinds.len() < MAX_KINDS {
            kinds.insert(key, 0);
            return true;
        }
        *kinds.entry((Sender::Others, code)).or_insert(0) += 1;
        false
    }

    /// Logs and resets the counts of repeats since the last summary.
    pub(super) fn summarize(&self) {
        for (sender, code, count) in self.take_repeats() {
            tracing::info!(
                code = code.as_str(),
                from = %sender,
                count,
                "refused {count} requests from {sender}: {} (since the last count)",
                code.as_str()
            );
        }
    }

    /// The kinds repeated since the last call, with their counts, reset.
    fn take_repeats(&self) -> Vec<(Sender, ProblemCode, u64)> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let mut repeats: Vec<_> = kinds
            .iter_mut()
            .filter(|(_, count)| **count > 0)
            .map(|((sender, code), count)| (sender.clone(), *code, std::mem::take(count)))
            .collect();
        repeats.sort_by_key(|r| std::cmp::Reverse(r.2));
        repeats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_kind_stands_alone_and_repeats_are_counted_once_per_summary() {
        let log = RefusalLog::default();
        let sprout = || Sender::Peer("Sprout".into());
        assert!(log.first(&sprout(), ProblemCode::UnsupportedTask));
        for _ in 0..3 {
            assert!(!log.first(&sprout(), ProblemCode::UnsupportedTask));
        }
        // Another code, another sender: firsts of their own.
        assert!(log.first(&sprout(), ProblemCode::Replayed));
        let addr = Sender::of(None, Some("192.0.2.7:4000".parse().unwrap()));
        assert!(log.first(&addr, ProblemCode::UnsupportedTask));
        assert!(!log.first(&addr, ProblemCode::UnsupportedTask));

        let repeats = log.take_repeats();
        assert_eq!(
            repeats,
            [
                (sprout(), ProblemCode::UnsupportedTask, 3),
                (addr.clone(), ProblemCode::UnsupportedTask, 1)
            ]
        );
        // Counted once: the next summary starts from zero, and a kind seen
        // before is still not a first.
        assert!(log.take_repeats().is_empty());
        assert!(!log.first(&sprout(), ProblemCode::UnsupportedTask));
        assert_eq!(log.take_repeats().len(), 1);
        assert_eq!(addr.to_string(), "192.0.2.7 (unverified)");
    }

    #[test]
    fn many_senders_do_not_grow_the_table_past_its_bound() {
        let log = RefusalLog::default();
        for i in 0..(MAX_KINDS as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            log.first(&Sender::Address(ip.into()), ProblemCode::InvalidSignature);
        }
        assert!(log.kinds.lock().unwrap().len() <= MAX_KINDS + 1);
        let repeats = log.take_repeats();
        assert_eq!(
            repeats,
            [(Sender::Others, ProblemCode::InvalidSignature, 100)]
        );
    }
}
