//! Times as a user reads and types them: RFC 3339 in the machine's time
//! zone (jiff reads it from `TZ` or `/etc/localtime`), and `--since` as an
//! age or a time.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// `ms` (unix milliseconds) as RFC 3339 to the second, in local time:
/// `2026-12-04T19:02:11+01:00`. A value outside the calendar's range is
/// printed as it is, in ms.
pub fn local(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| {
            t.to_zoned(TimeZone::system())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_else(|| format!("{ms} (unix ms)"))
}

/// `ms` (unix milliseconds) as RFC 3339 in UTC to the millisecond, for
/// JSON: `2026-12-04T18:02:11.250Z`. A value outside the calendar's range
/// is printed as it is, in ms.
pub fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| format!("{ms} (unix ms)"))
}

/// An RFC 3339 time (`2026-12-04T18:00:00Z`, `2026-12-04T19:00:00+01:00`)
/// as unix milliseconds; `None` if `text` is not one or lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t: Timestamp = text.trim().parse().ok()?;
    u64::try_from(t.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_and_parse_as_rfc_3339() {
        let ms = parse_rfc3339("2026-12-04T18:00:00Z").unwrap();
        assert_eq!(ms, 1_796_407_200_000);
        assert_eq!(parse_rfc3339("2026-12-04T19:00:00+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
        // Back again, whatever the machine's zone.
        assert_eq!(parse_rfc3339(&local(ms)), Some(ms));
        assert_eq!(utc(ms + 250), "2026-12-04T18:00:00.250Z");
        assert_eq!(parse_rfc3339(&utc(ms + 250)), Some(ms + 250));
        assert_eq!(local(u64::MAX), format!("{} (unix ms)", u64::MAX));
    }
}
