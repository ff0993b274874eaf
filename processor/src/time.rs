//! Event-time and processing-time instants (milliseconds since the Unix epoch) and RFC 3339.
//!
//! Written by hand rather than pulling in a date crate: the processor only needs one
//! well-defined format, and the conversion must be exact and panic-free on any input.

use thiserror::Error;

/// Milliseconds since 1970-01-01T00:00:00Z. Used for both event time and processing time;
/// processing time is always an *input* to the core (see `Pipeline::apply`), never read from
/// the system clock, so runs are reproducible.
pub type Millis = i64;

/// Why a timestamp string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeError {
    /// The string does not have the `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` shape.
    #[error("not an RFC 3339 timestamp: {0}")]
    Syntax(&'static str),
    /// A field is out of its calendar range (month 13, Feb 30, hour 24, ...).
    #[error("timestamp field out of range: {0}")]
    Range(&'static str),
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<i64, TimeError> {
    let part = b.get(at..at + n).ok_or(TimeError::Syntax("too short"))?;
    let mut v: i64 = 0;
    for &c in part {
        if !c.is_ascii_digit() {
            return Err(TimeError::Syntax("expected a digit"));
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, what: &[u8], msg: &'static str) -> Result<(), TimeError> {
    match b.get(at) {
        Some(c) if what.contains(c) => Ok(()),
        _ => Err(TimeError::Syntax(msg)),
    }
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

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (y + i64::from(m <= 2), m, d)
}

/// Parses an RFC 3339 timestamp (`2025-08-17T12:34:56.789Z`, `...+02:00`) to milliseconds.
/// Fractions finer than a millisecond are truncated; leap seconds (`:60`) are rejected.
pub fn parse_rfc3339(s: &str) -> Result<Millis, TimeError> {
    let b = s.as_bytes();
    let year = digits(b, 0, 4)?;
    expect(b, 4, b"-", "expected '-' after year")?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b"-", "expected '-' after month")?;
    let day = digits(b, 8, 2)?;
    expect(b, 10, b"Tt ", "expected 'T' between date and time")?;
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b":", "expected ':' after hour")?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b":", "expected ':' after minute")?;
    let second = digits(b, 17, 2)?;
    if !(1..=12).contains(&month) {
        return Err(TimeError::Range("month"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(TimeError::Range("day"));
    }
    if hour > 23 {
        return Err(TimeError::Range("hour"));
    }
    if minute > 59 {
        return Err(TimeError::Range("minute"));
    }
    if second > 59 {
        return Err(TimeError::Range("second"));
    }
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(TimeError::Syntax("empty fraction"));
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, at + 1, 2)?;
            expect(b, at + 3, b":", "expected ':' in offset")?;
            let om = digits(b, at + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err(TimeError::Range("offset"));
            }
            at += 6;
            let off = oh * 60 + om;
            if sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return Err(TimeError::Syntax("missing time zone offset")),
    };
    if at != b.len() {
        return Err(TimeError::Syntax("trailing characters"));
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Ok(secs * 1000 + millis)
}

/// Formats milliseconds as `YYYY-MM-DDTHH:MM:SS.fffZ`. Total for every `i64`.
pub fn format_rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339("2025-08-17T12:34:56.789Z"),
            Ok(1_755_434_096_789)
        );
        assert_eq!(
            parse_rfc3339("2025-08-17T14:34:56.789+02:00"),
            Ok(1_755_434_096_789)
        );
        assert_eq!(
            parse_rfc3339("2025-08-17T12:34:56.7Z"),
            Ok(1_755_434_096_700)
        );
        assert_eq!(
            parse_rfc3339("2025-08-17T12:34:56.789999Z"),
            Ok(1_755_434_096_789)
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Ok(-1));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2025-08-17",
            "2025-08-17T12:34:56",
            "2025-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2025-08-17T24:00:00Z",
            "2025-08-17T12:60:00Z",
            "2025-08-17T12:34:60Z",
            "2025-08-17T12:34:56.Z",
            "2025-08-17T12:34:56Zjunk",
            "2025-08-17T12:34:56+2:00",
            "２０２５-08-17T12:34:56Z",
            "1755434096",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339(1_755_434_096_789),
            "2025-08-17T12:34:56.789Z"
        );
        // Total on extremes: no panic, no overflow.
        let _ = format_rfc3339(i64::MIN);
        let _ = format_rfc3339(i64::MAX);
    }

    proptest! {
        #[test]
        fn round_trips(ms in -62_135_596_800_000i64..253_402_300_799_999i64) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
