//! Platform identities: a platform name (`Thor`) and its LCT id (`thor_sage_lct`).

use std::fmt;

/// The longest LCT id, in bytes: room for the default id of the longest
/// platform name (64 characters and `_sage_lct`) and for ids of one's own.
pub const MAX_LCT_ID_LEN: usize = 128;

/// The default LCT id of a platform: its lowercased name followed by `_sage_lct`.
///
/// ```
/// assert_eq!(sage_types::default_lct_id("Thor"), "thor_sage_lct");
/// ```
pub fn default_lct_id(name: &str) -> String {
    format!("{}_sage_lct", name.to_lowercase())
}

/// Whether `name` is usable as a platform name: it becomes part of a key file
/// name, so it is 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Why a text cannot be an LCT id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LCT id \"{}\": {problem}; an LCT id is 1 to 128 ASCII letters, digits, '-' or '_'", id.escape_default())]
pub struct LctIdError {
    /// The text given.
    pub id: String,
    /// What breaks the rules.
    pub problem: LctIdProblem,
}

/// What makes a text not an LCT id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LctIdProblem {
    /// It is empty.
    Empty,
    /// It is longer than [`MAX_LCT_ID_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// It holds a character other than an ASCII letter, digit, `-` or `_`.
    Character {
        /// The first such character.
        found: char,
    },
}

impl fmt::Display for LctIdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LctIdProblem::Empty => f.write_str("it is empty"),
            LctIdProblem::TooLong { len } => write!(f, "it is {len} bytes long"),
            LctIdProblem::Character { found } if found.is_ascii_graphic() => {
                write!(f, "it holds '{found}'")
            }
            // Written by code point: a look-alike of a Latin letter, a
            // space or a control character would not show as itself.
            LctIdProblem::Character { found } => {
                write!(f, "it holds U+{:04X}", u32::from(*found))
            }
        }
    }
}

/// Checks that `id` can be an LCT id: 1 to [`MAX_LCT_ID_LEN`] ASCII
/// letters, digits, `-` or `_`, the characters of platform names. Nothing
/// outside ASCII: an id with a letter of another script that looks like a
/// Latin one (a Cyrillic `о` for an `o`) would read as another platform's
/// id in logs and listings while being a different one.
///
/// ```
/// use sage_types::identity::{check_lct_id, LctIdProblem};
/// assert!(check_lct_id("thor_sage_lct").is_ok());
/// let error = check_lct_id("th\u{43e}r_sage_lct").unwrap_err();
/// assert_eq!(error.problem, LctIdProblem::Character { found: '\u{43e}' });
/// ```
///
/// # Errors
/// [`LctIdError`] saying what breaks the rules.
pub fn check_lct_id(id: &str) -> Result<(), LctIdError> {
    let problem = if id.is_empty() {
        Some(LctIdProblem::Empty)
    } else if let Some(found) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(LctIdProblem::Character { found })
    } else if id.len() > MAX_LCT_ID_LEN {
        Some(LctIdProblem::TooLong { len: id.len() })
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(LctIdError {
            id: id.to_owned(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lct_is_lowercased() {
        assert_eq!(default_lct_id("Sprout"), "sprout_sage_lct");
        assert_eq!(default_lct_id("legion"), "legion_sage_lct");
    }

    #[test]
    fn lct_ids_are_ascii_letters_digits_dashes_and_underscores() {
        for good in ["thor_sage_lct", "legion_rtx4090_lct", "a", "jetson-orin_2"] {
            assert_eq!(check_lct_id(good), Ok(()), "{good}");
        }
        let longest = default_lct_id(&"n".repeat(64));
        assert_eq!(check_lct_id(&longest), Ok(()));
        assert_eq!(check_lct_id(&"a".repeat(MAX_LCT_ID_LEN)), Ok(()));

        let problem = |id: &str| check_lct_id(id).unwrap_err().problem;
        assert_eq!(problem(""), LctIdProblem::Empty);
        assert_eq!(
            problem(&"a".repeat(MAX_LCT_ID_LEN + 1)),
            LctIdProblem::TooLong { len: 129 }
        );
        assert_eq!(problem("thor.lct"), LctIdProblem::Character { found: '.' });
        assert_eq!(problem("thor lct"), LctIdProblem::Character { found: ' ' });
        // Cyrillic look-alikes of t, o, r.
        assert_eq!(
            problem("\u{442}h\u{43e}\u{433}_sage_lct"),
            LctIdProblem::Character { found: '\u{442}' }
        );
        assert_eq!(
            check_lct_id("th\u{43e}r_sage_lct").unwrap_err().to_string(),
            "invalid LCT id \"th\\u{43e}r_sage_lct\": it holds U+043E; \
             an LCT id is 1 to 128 ASCII letters, digits, '-' or '_'"
        );
        assert_eq!(
            check_lct_id("a\nb").unwrap_err().to_string(),
            "invalid LCT id \"a\\nb\": it holds U+000A; \
             an LCT id is 1 to 128 ASCII letters, digits, '-' or '_'"
        );
    }

    #[test]
    fn names_that_could_escape_the_key_directory_are_invalid() {
        assert!(is_valid_name("Thor"));
        assert!(is_valid_name("jetson-orin_2"));
        for bad in ["", "../etc", "a/b", "thor.key", "Thor ", "é"] {
            assert!(!is_valid_name(bad), "{bad:?} accepted");
        }
    }
}
