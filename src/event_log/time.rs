//! Time as the log and the state file write it: ISO 8601 (RFC 3339) UTC with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant [`iso8601`] writes as it is (9999-12-31T23:59:59.999Z); later ones are written
/// as it.
const LAST: Duration = Duration::from_millis(253_402_300_799_999);

/// ISO 8601 UTC with milliseconds, e.g. `2026-11-25T14:43:09.123Z` (RFC 3339, with `humantime`).
/// A clock before 1970 is written as 1970-01-01T00:00:00.000Z, never a panic.
pub fn iso8601(t: SystemTime) -> String {
    let t = t.clamp(UNIX_EPOCH, UNIX_EPOCH + LAST);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The time of day on the console's text lines, in UTC and marked so: `14:53:26.866Z`.
pub fn console_time(t: SystemTime) -> String {
    iso8601(t)[11..].to_owned()
}

/// Parse the timestamps [`iso8601`] writes (`2026-11-25T14:43:09.123Z`, RFC 3339 in UTC);
/// `None` if `s` is not one.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// `1 h 2 min 3 s`, `4 min 5 s`, `6 s`, `0.25 s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h} h {m} min {s} s")
    } else if m > 0 {
        format!("{m} min {s} s")
    } else if secs > 0 {
        format!("{s} s")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_matches_known_instants() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_539_977_887);
        assert_eq!(iso8601(t), "2026-11-24T17:06:17.887Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
        // Sub-millisecond digits are cut, not rounded.
        let t = UNIX_EPOCH + Duration::from_nanos(1_795_539_977_887_999_999);
        assert_eq!(iso8601(t), "2026-11-24T17:06:17.887Z");
    }

    #[test]
    fn iso8601_never_panics_at_the_ends_of_time() {
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(iso8601(before), "1970-01-01T00:00:00.000Z");
        let last = UNIX_EPOCH + LAST;
        assert_eq!(iso8601(last), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            iso8601(last + Duration::from_secs(86_400)),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn console_time_is_marked_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_539_977_887);
        assert_eq!(console_time(t), "17:06:17.887Z");
    }

    #[test]
    fn iso_round_trips() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_539_977_887);
        assert_eq!(parse_iso8601(&iso8601(t)), Some(t));
        assert_eq!(
            parse_iso8601("2000-02-29T00:00:00.000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-25 14:43:09.123",
            "2026-13-01T00:00:00.000Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
