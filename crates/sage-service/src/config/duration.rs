//! The one parser for durations a user types: in `sage.toml` and on the
//! command line. A plain number is seconds (fractions allowed); anything
//! else is humantime's syntax (`500ms`, `10s`, `5m`, `1h 30m`, `7d`).
//! Every conversion is checked: a value too large for the clock is an
//! error, never an overflow.

use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Neither seconds nor a duration with units.
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// Negative, not finite, or too large to represent.
    #[error("invalid duration {0}")]
    OutOfRange(String),
}

/// A number of seconds as a [`Duration`].
///
/// # Errors
/// [`DurationError::OutOfRange`] when `secs` is negative, not finite, or
/// too large.
pub fn from_secs_f64(secs: f64) -> Result<Duration, DurationError> {
    Duration::try_from_secs_f64(secs).map_err(|_| DurationError::OutOfRange(secs.to_string()))
}

/// Parses `text`: seconds as a number, or a duration with units.
///
/// # Errors
/// [`DurationError`] naming the text.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_secs_f64(secs);
    }
    humantime::parse_duration(text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => DurationError::OutOfRange(format!("{text:?}")),
        _ => DurationError::Invalid(text.to_owned()),
    })
}

/// Milliseconds of `duration`, or `None` when they do not fit in a `u64`.
pub fn millis(duration: Duration) -> Option<u64> {
    u64::try_from(duration.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units_parse_and_the_rest_is_refused() {
        let ok = |text: &str| parse_duration(text).unwrap();
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("1.5"), Duration::from_millis(1500));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok(" 5m "), Duration::from_secs(300));
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86400));
        for bad in ["", "5 fortnights", "yesterday", "-1", "1e400", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::OutOfRange(_))
        ));
        assert_eq!(millis(Duration::MAX), None);
        assert_eq!(millis(Duration::from_secs(2)), Some(2000));
    }
}
