//! Text that came from a peer, made safe to log and to echo.
//!
//! A task id, a task type, a name or a header value is chosen by whoever
//! sent it. Logged as it is, a newline in it would write a forged line into
//! the node's log (and a terminal escape would rewrite the operator's
//! screen); echoed whole in a refusal, a megabyte of it would come back.
//! [`Untrusted`] displays such text escaped and cut to a bounded prefix.

use std::fmt;

/// The most characters of peer-supplied text shown.
pub const SHOWN_CHARS: usize = 256;

/// Displays `0` with control, format and other invisible characters
/// escaped as Rust writes them (`\n`, `\u{202e}`), quotes and backslashes
/// too, and at most [`SHOWN_CHARS`] characters of it, then `…`.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl<'a> Untrusted<'a> {
    /// The same, showing up to `max_chars` characters: for a peer's
    /// explanation (a refusal's detail, an executor's error), whose whole
    /// text the user may need.
    pub fn up_to(self, max_chars: usize) -> Shown<'a> {
        Shown {
            text: self.0,
            max_chars,
        }
    }
}

/// Peer-supplied text shown escaped, up to a given length (see
/// [`Untrusted::up_to`]).
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a> {
    text: &'a str,
    max_chars: usize,
}

/// The most characters of a peer's explanation shown (see
/// [`Untrusted::up_to`]).
pub const EXPLANATION_CHARS: usize = 1024;

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.up_to(SHOWN_CHARS).fmt(f)
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(self.max_chars) {
            write!(f, "{}", c.escape_debug())?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_is_cut() {
        assert_eq!(Untrusted("t-1").to_string(), "t-1");
        assert_eq!(
            Untrusted("t\nINFO forged line\r\u{1b}[2J").to_string(),
            "t\\nINFO forged line\\r\\u{1b}[2J"
        );
        assert_eq!(Untrusted("a\u{202e}b").to_string(), "a\\u{202e}b");
        assert_eq!(Untrusted("é😀").to_string(), "é😀");
        let long = "x".repeat(10_000);
        let shown = Untrusted(&long).to_string();
        assert_eq!(shown, format!("{}…", "x".repeat(SHOWN_CHARS)));
        assert!(!Untrusted(&"\n".repeat(10_000)).to_string().contains('\n'));
        assert_eq!(
            Untrusted(&long).up_to(3).to_string(),
            "xxx…",
            "a longer or shorter cut"
        );
    }
}
