//! Civil time conversions for the two formats SigV4 meets on the wire: the ISO 8601 basic format of
//! `X-Amz-Date` (`20150830T123600Z`) and the RFC 1123 form of the HTTP `Date` header. No clock is read here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Broken-down UTC time of `t`, truncated to whole seconds. Times before 1970 clamp to the epoch.
pub(crate) fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

fn from_civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<SystemTime> {
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || s > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Formats `t` as an `X-Amz-Date` value, `YYYYMMDDTHHMMSSZ` in UTC (sub-seconds are dropped).
pub fn format_amz_date(t: SystemTime) -> String {
    let (y, m, d, h, mi, s) = civil(t);
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Formats `t` as ISO 8601 extended UTC, `YYYY-MM-DDTHH:MM:SSZ` (S3's `<ServerTime>` form).
pub fn format_iso8601(t: SystemTime) -> String {
    let (y, m, d, h, mi, s) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses an `X-Amz-Date` value (`YYYYMMDDTHHMMSSZ`, exactly 16 characters, UTC, year 1970..=9999).
/// Returns `None` for anything else, including impossible dates such as February 30.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    from_civil(
        i64::from(digits(&b[0..4])?),
        digits(&b[4..6])?,
        digits(&b[6..8])?,
        digits(&b[9..11])?,
        digits(&b[11..13])?,
        digits(&b[13..15])?,
    )
}

/// Parses an HTTP `Date` header in the RFC 1123 form (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form
/// AWS SDKs send. The weekday is checked for shape only.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])? as u32 + 1;
    from_civil(
        i64::from(digits(&b[12..16])?),
        month,
        digits(&b[5..7])?,
        digits(&b[17..19])?,
        digits(&b[20..22])?,
        digits(&b[23..25])?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_dates() {
        let t = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_440_938_160
        );
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert_eq!(format_iso8601(t), "2015-08-30T12:36:00Z");
        assert_eq!(format_amz_date(UNIX_EPOCH), "19700101T000000Z");
        let leap = parse_amz_date("20240229T235959Z").unwrap();
        assert_eq!(format_amz_date(leap), "20240229T235959Z");
        assert_eq!(
            format_amz_date(leap + Duration::from_secs(1)),
            "20240301T000000Z"
        );
    }

    #[test]
    fn every_day_of_several_years_round_trips() {
        let start = parse_amz_date("19990101T000000Z").unwrap();
        for day in 0..(366 * 4 + 100) {
            let t = start + Duration::from_secs(day * 86_400 + 3723);
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
    }

    #[test]
    fn rejects_malformed_amz_dates() {
        for bad in [
            "",
            "20150830T123600",
            "20150830 123600Z",
            "2015083OT123600Z",
            "20150230T000000Z",
            "20151301T000000Z",
            "20150830T243600Z",
            "20150830T126000Z",
            "20150830T123660Z",
            "19691231T235959Z",
            "+0150830T123600Z",
            "20150830T123600Zx",
            "２０15083T123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_rfc1123() {
        let t = parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT").unwrap();
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert_eq!(parse_http_date("Sun, 30 Aug 2015 12:36:00 UTC"), None);
        assert_eq!(parse_http_date("Sun, 30 Foo 2015 12:36:00 GMT"), None);
        assert_eq!(parse_http_date("Sunday, 30-Aug-15 12:36:00 GMT"), None);
    }
}
