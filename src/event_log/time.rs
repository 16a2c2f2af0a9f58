//! Time as the log and the state file write it: ISO 8601 (RFC 3339) UTC with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// ISO 8601 UTC with milliseconds, e.g. `2026-11-25T14:43:09.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The time of day on the console's text lines, in UTC and marked so: `14:53:26.866Z`.
pub fn console_time(t: SystemTime) -> String {
    iso8601(t)[11..].to_owned()
}

/// Parse the timestamps [`iso8601`] writes (`2026-11-25T14:43:09.123Z`); `None` if `s` is not one.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    let millis: i64 = ms.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(secs * 1000 + millis).ok()?))
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
    }
}
