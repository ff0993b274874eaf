//! A fast path for the common JSON reading: one flat object of strings without escapes,
//! numbers and literals, scanned in one pass without serde.
//!
//! It answers only when the answer is certain to equal the serde path's ([`super::Wanted`]):
//! anything else (nesting, escapes, a number serde_json reads as out of range or rounds from
//! a long integer, any syntax error) gives `None`, and the caller parses the record with
//! serde, which then produces the same reading or the same rejection text as before. So the
//! DLQ reasons stay serde_json's, and this path needs to handle no error.

use std::borrow::Cow;

use super::{JsonField, Picked};
use crate::num::i64_to_f64;

/// The configured fields (`names`) of `bytes` if it is a flat JSON object this scanner
/// reads exactly as serde_json does; `None` to let serde decide.
#[cfg(test)]
pub(super) fn pick<'de>(names: &[String], bytes: &'de [u8]) -> Option<Picked<'de>> {
    pick_with(names, bytes, &mut Layout::default())
}

/// The syntax of the last object [`pick_with`] read whole: the bytes before each member's
/// value (from the end of the previous value, or the start of the text: whitespace, `{` or
/// `,`, the quoted key, `:`) with the slot in `names` that value fills, and the bytes after
/// the last value. Readings of one producer repeat this syntax and differ only in their
/// values, so the next object is read by comparing each run of bytes between values with one
/// compare and scanning only the values. Equal bytes read the same way (a key holds no
/// quote, backslash or control byte), so the answer is the one a fresh scan gives.
#[derive(Debug, Clone, Default)]
pub(super) struct Layout {
    /// Each member's bytes before its value, and its slot; empty when no object was read
    /// whole (an empty object included, which has no value to align on).
    gaps: Vec<(Box<[u8]>, Option<usize>)>,
    /// The bytes after the last value: `}` and whitespace.
    end: Box<[u8]>,
}

/// [`pick`], reading along `layout` when the object has its syntax, and otherwise scanning
/// it and leaving its syntax there.
pub(super) fn pick_with<'de>(
    names: &[String],
    bytes: &'de [u8],
    layout: &mut Layout,
) -> Option<Picked<'de>> {
    // One UTF-8 check of the whole value (serde checks its strings; invalid UTF-8 anywhere
    // else is a syntax error for it): strings are then cut out of `text` without another.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut slots: Vec<Option<JsonField<'de>>> = Vec::with_capacity(names.len());
    slots.resize_with(names.len(), || None);
    let start = Scan {
        text,
        b: bytes,
        i: 0,
    };
    if !layout.gaps.is_empty() {
        if replay(start.clone(), layout, &mut slots).is_some() {
            return Some(Picked { slots });
        }
        slots.iter_mut().for_each(|v| *v = None);
    }
    layout.gaps.clear();
    let read = scan(names, start, layout, &mut slots);
    if read.is_none() {
        layout.gaps.clear();
    }
    read.map(|()| Picked { slots })
}

/// Reads the object along `layout`'s syntax into `slots`; `None` where it differs (or a
/// value is not one this scanner reads).
fn replay<'de>(
    mut s: Scan<'de>,
    layout: &Layout,
    slots: &mut [Option<JsonField<'de>>],
) -> Option<()> {
    for (gap, slot) in &layout.gaps {
        let after = s.i.checked_add(gap.len())?;
        if s.b.get(s.i..after)? != &gap[..] {
            return None;
        }
        s.i = after;
        let value = s.value()?;
        // A repeated name keeps its last value, as with serde.
        if let Some(i) = slot {
            *slots.get_mut(*i)? = Some(value);
        }
    }
    (s.b.get(s.i..)? == &layout.end[..]).then_some(())
}

/// Scans the object token by token into `slots`, recording its syntax in `layout` (which
/// the caller clears first, and again if this gives `None`).
fn scan<'de>(
    names: &[String],
    mut s: Scan<'de>,
    layout: &mut Layout,
    slots: &mut [Option<JsonField<'de>>],
) -> Option<()> {
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
        s.ws();
        // No value to align a layout on: the next object is scanned.
        return (s.i == s.b.len()).then_some(());
    }
    let mut gap_start = 0;
    loop {
        let key = s.string()?;
        let slot = names.iter().position(|n| n == key);
        s.ws();
        s.eat(b':')?;
        s.ws();
        layout.gaps.push((s.b.get(gap_start..s.i)?.into(), slot));
        let value = s.value()?;
        gap_start = s.i;
        // A repeated name keeps its last value, as with serde.
        if let Some(i) = slot {
            *slots.get_mut(i)? = Some(value);
        }
        s.ws();
        match s.peek()? {
            b',' => {
                s.i += 1;
                s.ws();
            }
            b'}' => {
                s.i += 1;
                break;
            }
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    layout.end = s.b.get(gap_start..)?.into();
    Some(())
}

/// Bytes that end the unescaped run of a string: the quote, the backslash and the control
/// characters (which serde_json rejects inside strings).
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `0x01` in every byte of a word.
const ONES: u64 = u64::from_le_bytes([1; 8]);
/// The high bit of every byte of a word.
const HIGHS: u64 = ONES << 7;

/// Where the first byte of `rest` that ends an unescaped string run is ([`STRING_STOP`]),
/// eight bytes at a time: a word's bytes equal to `"` or `\` become zero when xored with
/// that byte in every lane, and `(v - ONES) & !v & HIGHS` marks zero bytes (`v - 0x20 ·
/// ONES` those below 0x20). A borrow can only mark bytes above a true match, so the lowest
/// mark is the first stop byte. The tail shorter than a word is read bytewise.
fn string_stop(rest: &[u8]) -> Option<usize> {
    let mut chunks = rest.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGHS;
        if marks != 0 {
            return usize::try_from(marks.trailing_zeros() / 8)
                .ok()
                .map(|i| at + i);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter()
        .position(|&c| STRING_STOP[usize::from(c)])
        .map(|i| at + i)
}

/// Powers of ten exactly representable as `f64` (the fast path of correctly rounded
/// decimal-to-binary conversion).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A position in the input.
#[derive(Clone)]
struct Scan<'de> {
    text: &'de str,
    b: &'de [u8],
    i: usize,
}

impl<'de> Scan<'de> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// JSON whitespace, as serde_json skips it.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    /// The digits at the position: how many, and their value while it fits (up to 19
    /// digits).
    fn digits(&mut self) -> (usize, u64) {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        (self.i - start, v)
    }

    /// A string without escapes or control characters (what serde borrows).
    fn string(&mut self) -> Option<&'de str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = self.b.get(start..)?;
        let len = string_stop(rest)?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.i = start + len + 1;
        // `text` is valid UTF-8 and the quotes are ASCII: the cut is on char boundaries.
        self.text.get(start..start + len)
    }

    fn literal(&mut self, word: &[u8], value: JsonField<'de>) -> Option<JsonField<'de>> {
        let end = self.i.checked_add(word.len())?;
        if self.b.get(self.i..end)? != word {
            return None;
        }
        self.i = end;
        Some(value)
    }

    /// A scalar value; `None` for an object or array (left to serde, which checks nesting).
    fn value(&mut self) -> Option<JsonField<'de>> {
        match self.peek()? {
            b'"' => self.string().map(|s| JsonField::Str(Cow::Borrowed(s))),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true", JsonField::Other),
            b'f' => self.literal(b"false", JsonField::Other),
            b'n' => self.literal(b"null", JsonField::Null),
            _ => None,
        }
    }

    /// A JSON number read as serde_json reads it: an integer literal of up to 18 digits as
    /// that integer (`-0` excepted: serde_json reads it as the float -0.0), any other
    /// integer left to serde (u64 range, rounding of longer ones); a number with a fraction
    /// or exponent as the correctly rounded `f64` (serde_json's `float_roundtrip`, which this
    /// crate enables, rounds correctly too), unless it overflows, underflows to zero or is
    /// subnormal, which are left to serde.
    fn number(&mut self) -> Option<JsonField<'de>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        let (int_digits, int_value) = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.b.get(int_start) == Some(&b'0')) {
            return None;
        }
        let (mut frac_digits, mut mantissa) = (0, int_value);
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let frac_start = self.i;
            let (n, _) = self.digits();
            if n == 0 {
                return None;
            }
            frac_digits = n;
            integer = false;
            // The significant digits as one integer, when they fit the fast path.
            if int_digits + n <= 19 {
                mantissa = int_value;
                for &d in self.b.get(frac_start..self.i)? {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                }
            }
        }
        let mantissa_end = self.i;
        let mut exp: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.i += 1;
                    true
                }
                Some(b'+') => {
                    self.i += 1;
                    false
                }
                _ => false,
            };
            let (n, v) = self.digits();
            if n == 0 {
                return None;
            }
            integer = false;
            // Longer exponents are left to the exact parse below.
            exp = if n <= 4 {
                i64::try_from(v).ok()?
            } else {
                i64::MAX / 2
            };
            if exp_negative {
                exp = -exp;
            }
        }
        if integer {
            if int_digits > 18 {
                return None;
            }
            // Up to 18 digits: below 10^18, so within `i64`.
            let magnitude = i64::try_from(int_value).ok()?;
            if magnitude == 0 && negative {
                return None;
            }
            let n = if negative { -magnitude } else { magnitude };
            return Some(JsonField::Number {
                int: Some(n),
                float: i64_to_f64(n),
            });
        }
        let x = match fast_float(int_digits + frac_digits, mantissa, exp, frac_digits) {
            Some(m) => {
                if negative {
                    -m
                } else {
                    m
                }
            }
            None => self.text.get(start..self.i)?.parse().ok()?,
        };
        let nonzero_mantissa = self
            .b
            .get(int_start..mantissa_end)?
            .iter()
            .any(|c| matches!(c, b'1'..=b'9'));
        let exact_zero = x == 0.0 && !nonzero_mantissa;
        (x.is_normal() || exact_zero).then_some(JsonField::Number {
            int: None,
            float: x,
        })
    }
}

/// `mantissa · 10^(exp - frac_digits)` when both factors are exact in an `f64` (at most 15
/// significant digits counted as `digits`, a power of ten up to 22), so that one
/// multiplication or division rounds correctly; `None` otherwise.
fn fast_float(digits: usize, mantissa: u64, exp: i64, frac_digits: usize) -> Option<f64> {
    if digits > 15 {
        return None;
    }
    let e = exp.checked_sub(i64::try_from(frac_digits).ok()?)?;
    // Below 10^15 < 2^53: exact.
    let m = crate::num::u64_to_f64(mantissa);
    let p = *POW10.get(usize::try_from(e.unsigned_abs()).ok()?)?;
    Some(if e < 0 { m / p } else { m * p })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeSeed;

    fn names() -> Vec<String> {
        ["device_id", "ts", "temperature_c", "vibration_g"]
            .map(String::from)
            .to_vec()
    }

    /// What serde reads: `Some(Some(fields))` for an object, `Some(None)` for another value,
    /// `None` for invalid JSON.
    fn serde_pick<'de>(names: &[String], bytes: &'de [u8]) -> Option<Option<Picked<'de>>> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        super::super::Wanted(names)
            .deserialize(&mut de)
            .and_then(|p| de.end().map(|()| p))
            .ok()
    }

    /// The slots with numbers as bits, so -0.0 and 0.0 differ.
    fn canonical(p: &Picked<'_>) -> Vec<String> {
        p.slots
            .iter()
            .map(|s| match s {
                Some(JsonField::Number { int, float }) => {
                    format!("n {int:?} {:x}", float.to_bits())
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Objects that share a prefix of the remembered syntax, or all of it but a value, are
    /// read as a fresh scan reads them; the layout follows the last object read whole.
    #[test]
    fn a_layout_is_followed_only_where_the_syntax_is_the_same() {
        let n = names();
        let mut layout = Layout::default();
        let texts: [&[u8]; 9] = [
            br#"{"device_id":"a","ts":1,"temperature_c":2.5}"#,
            br#"{"device_id":"bb","ts":22,"temperature_c":-3}"#,
            br#"{"device_id":"a","ts":1,"temperature_c":2.5,"vibration_g":1}"#,
            br#"{"device_id":"a","ts":1}"#,
            br#"{"device_id":"a", "ts":1}"#,
            br#"{"device_id":"a","ts":[1]}"#,
            br#"{"device_id":"a","ts":1} x"#,
            br#"{"device_id":"a","ts":1,"ts":2}"#,
            br#"{}"#,
        ];
        for text in texts.iter().chain(texts.iter().rev()) {
            let with = pick_with(&n, text, &mut layout).map(|p| canonical(&p));
            let fresh = pick(&n, text).map(|p| canonical(&p));
            assert_eq!(with, fresh, "{}", String::from_utf8_lossy(text));
            let serde = serde_pick(&n, text).flatten().map(|p| canonical(&p));
            if with.is_some() {
                assert_eq!(with, serde, "{}", String::from_utf8_lossy(text));
            }
        }
        let first = texts[0];
        pick_with(&n, first, &mut layout).expect("a flat object");
        assert_eq!(layout.gaps.len(), 3, "the layout is the last object's");
        assert_eq!(&layout.end[..], b"}");
        assert!(pick_with(&n, br#"{"device_id":"a","ts":[1]}"#, &mut layout).is_none());
        assert!(
            layout.gaps.is_empty(),
            "no layout after an object not read whole"
        );
    }

    #[test]
    fn reads_the_sensor_reading_without_serde() {
        let n = names();
        let text = br#"{"device_id":"MTR-000123","ts":1700000040000,"temperature_c":65.43,"vibration_g":0.087,"status":"OK","site":"fab1","line":"L02"}"#;
        let p = pick(&n, text).expect("the common reading takes the fast path");
        assert_eq!(
            canonical(&p),
            canonical(&serde_pick(&n, text).unwrap().unwrap())
        );
        let spaced = b" {\n \"ts\" : -12 ,\t\"x\":[1], \"device_id\":\"a\"}";
        assert!(pick(&n, spaced).is_none(), "nesting is left to serde");
        let spaced = b" {\n \"ts\" : -12 ,\t\"x\":true, \"device_id\":\"a\", \"ts\": 7 }\r\n";
        let p = pick(&n, spaced).expect("whitespace, literals, repeated names");
        assert_eq!(
            canonical(&p),
            canonical(&serde_pick(&n, spaced).unwrap().unwrap())
        );
    }

    /// Texts around the edges of the number and string grammar.
    fn edge_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let value = prop_oneof![
            Just("-0".to_string()),
            Just("-0.0".to_string()),
            Just("0e0".to_string()),
            Just("1e400".to_string()),
            Just("1e-400".to_string()),
            Just("0.0000e-999".to_string()),
            Just("4.9e-324".to_string()),
            Just("2.2250738585072014e-308".to_string()),
            Just("1.7976931348623157e308".to_string()),
            Just("1.7976931348623159e308".to_string()),
            Just("01".to_string()),
            Just("1.".to_string()),
            Just(".5".to_string()),
            Just("1e".to_string()),
            Just("+1".to_string()),
            Just("999999999999999999".to_string()),
            Just("-999999999999999999".to_string()),
            Just("9223372036854775808".to_string()),
            Just("-9223372036854775809".to_string()),
            Just("\"a\\\"b\"".to_string()),
            Just("\"é\"".to_string()),
            Just("\"\u{1}\"".to_string()),
            Just("tru".to_string()),
            Just("nulll".to_string()),
            Just("{}".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|x| format!("{x:e}")),
            any::<f64>().prop_map(|x| x.to_string()),
            (any::<u32>(), 0u32..30, -330i32..330)
                .prop_map(|(m, frac, e)| format!("{m}.{frac}e{e}")),
            "[0-9.eE+-]{1,12}",
        ];
        let key = prop_oneof![
            Just("device_id".to_string()),
            Just("ts".to_string()),
            Just("temperature_c".to_string()),
            Just("other".to_string()),
        ];
        let sep = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just(","), Just("}")];
        proptest::collection::vec((key, sep.clone(), value, sep), 0..6).prop_map(|kv| {
            let body: Vec<String> = kv
                .iter()
                .map(|(k, s1, v, s2)| format!("\"{k}\"{s1}:{v}{s2}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// The word-at-a-time scan finds the same first stop byte as the bytewise table,
        /// wherever it is (or is not) in the word, whatever bytes surround it.
        #[test]
        fn string_stop_matches_the_bytewise_scan(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    0x20u8..=0xff,
                    proptest::strategy::Just(b'"'),
                    proptest::strategy::Just(b'\\'),
                    0u8..0x20,
                    proptest::strategy::Just(0x21u8),
                    proptest::strategy::Just(0x5du8),
                    proptest::strategy::Just(0x80u8),
                    proptest::strategy::Just(0xa2u8),
                ],
                0..40,
            )
        ) {
            let reference = bytes.iter().position(|&c| STRING_STOP[usize::from(c)]);
            proptest::prop_assert_eq!(string_stop(&bytes), reference);
        }

        /// A layout carried from object to object (each text twice, so that it is hit)
        /// changes no answer.
        #[test]
        fn a_remembered_layout_changes_no_answer(
            texts in proptest::collection::vec(edge_text(), 1..6)
        ) {
            let n = names();
            let mut layout = Layout::default();
            for text in texts.iter().chain(texts.iter()) {
                let with = pick_with(&n, text.as_bytes(), &mut layout).map(|p| canonical(&p));
                let fresh = pick(&n, text.as_bytes()).map(|p| canonical(&p));
                proptest::prop_assert_eq!(with, fresh, "{}", text);
            }
        }

        /// Whenever the fast path answers, serde reads the same object with the same fields,
        /// numbers bit for bit.
        #[test]
        fn answers_only_what_serde_answers(text in edge_text()) {
            let n = names();
            if let Some(p) = pick(&n, text.as_bytes()) {
                let s = serde_pick(&n, text.as_bytes());
                proptest::prop_assert!(matches!(s, Some(Some(_))), "serde rejects {}", text);
                if let Some(Some(s)) = s {
                    proptest::prop_assert_eq!(canonical(&p), canonical(&s), "{}", text);
                }
            }
        }
    }
}
