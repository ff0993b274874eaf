//! RFC 3339 timestamps with millisecond precision, as the sensor JSON carries them
//! (`2025-08-17T12:34:56.789Z`): formatting for generated events and parsing for tools that
//! take a time on the command line. Pure functions, no clock.

/// Latest time accepted anywhere in Runnel: 9999-12-31T23:59:59.999Z.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a time in `0..=MAX_MS` (clamped into that range).
pub fn format_ms(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_MS);
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space may replace the `T`) to ms since
/// the Unix epoch; digits beyond milliseconds are dropped. `None` if it is not such a time
/// or lies outside 1970..=9999.
pub fn parse_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let digits = b.get(start..at)?;
        if digits.is_empty() {
            return None;
        }
        for i in 0..3 {
            millis = millis * 10 + digits.get(i).map_or(0, |c| i64::from(c - b'0'));
        }
    }
    let offset_min = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest.get(2) == Some(&b':') => {
            let oh = num(at + 1..at + 3)?;
            let om = num(at + 4..at + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 60 + om;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let ms = days * 86_400_000 + (h * 3600 + mi * 60 + sec.min(59)) * 1000 + millis
        - offset_min * 60_000;
    (0..=MAX_MS).contains(&ms).then_some(ms)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_sensor_json() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_755_434_096_789), "2025-08-17T12:34:56.789Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(MAX_MS), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for ms in [0, 1, 951_782_400_000, 1_755_434_096_789, MAX_MS] {
            assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        }
        assert_eq!(parse_ms("2025-08-17T12:34:56Z"), Some(1_755_434_096_000));
        assert_eq!(
            parse_ms("2025-08-17 12:34:56.7891Z"),
            Some(1_755_434_096_789)
        );
        assert_eq!(
            parse_ms("2025-08-17T14:34:56.789+02:00"),
            Some(1_755_434_096_789)
        );
        assert_eq!(
            parse_ms("2025-08-17T10:34:56.789-02:00"),
            Some(1_755_434_096_789)
        );
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2025-02-30T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-08-17T12:34:56",
            "2025-08-17T12:34:56.Z",
            "1969-12-31T23:59:59Z",
            "2025-08-17T12:34:56+2",
            "２０２５-08-17T12:34:56Z",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }
}
