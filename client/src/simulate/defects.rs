//! Damage done to a valid sensor JSON record: malformed JSON (what a parser must refuse) and
//! schema violations (valid JSON that a reading's schema must refuse). The generator picks a
//! [`Defect`]; [`apply`] turns the broker's encoding of the reading into the damaged bytes, so
//! the damaged records differ from good ones only where the defect says.

/// One way to damage an encoded reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// Malformed: the record is cut after `keep_per_mille`/1000 of its bytes (never whole).
    Truncated { keep_per_mille: u16 },
    /// Malformed: `temperature_c` is the bare word `NaN`, which JSON does not have.
    NanLiteral,
    /// Malformed: braces and quotes stripped, leaving `key:value` text.
    NotJson,
    /// Malformed: a byte that is not UTF-8 inside the device id string.
    InvalidUtf8,
    /// Schema: a required field is missing.
    MissingField(Field),
    /// Schema: `temperature_c` is a string.
    WrongType,
    /// Schema: `ts` is a number of milliseconds instead of an RFC 3339 string.
    NumericTimestamp,
    /// Schema: `vibration_g` is null.
    NullField,
}

/// A required field of the sensor JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    DeviceId,
    Ts,
    TemperatureC,
    VibrationG,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::DeviceId => "device_id",
            Field::Ts => "ts",
            Field::TemperatureC => "temperature_c",
            Field::VibrationG => "vibration_g",
        }
    }
}

impl Defect {
    /// True for defects that leave syntactically valid JSON (schema violations).
    pub fn is_schema_violation(self) -> bool {
        matches!(
            self,
            Defect::MissingField(_)
                | Defect::WrongType
                | Defect::NumericTimestamp
                | Defect::NullField
        )
    }

    /// A short label for headers and summaries.
    pub fn label(self) -> &'static str {
        match self {
            Defect::Truncated { .. } => "truncated",
            Defect::NanLiteral => "nan-literal",
            Defect::NotJson => "not-json",
            Defect::InvalidUtf8 => "invalid-utf8",
            Defect::MissingField(_) => "missing-field",
            Defect::WrongType => "wrong-type",
            Defect::NumericTimestamp => "numeric-ts",
            Defect::NullField => "null-field",
        }
    }
}

/// Where a field's value sits in compact JSON: (start of `"name":`, value start, value end).
fn field_span(json: &[u8], name: &str) -> Option<(usize, usize, usize)> {
    let pattern = format!("\"{name}\":");
    let p = pattern.as_bytes();
    let key_start = json.windows(p.len()).position(|w| w == p)?;
    let value_start = key_start.checked_add(p.len())?;
    let first = *json.get(value_start)?;
    let value_end = if first == b'"' {
        // Generated strings hold no escaped quotes: the next quote closes the string.
        let close = json
            .get(value_start + 1..)?
            .iter()
            .position(|c| *c == b'"')?;
        value_start + 1 + close + 1
    } else {
        value_start
            + json
                .get(value_start..)?
                .iter()
                .position(|c| *c == b',' || *c == b'}')?
    };
    Some((key_start, value_start, value_end))
}

/// `json` with the value of `name` replaced by `new`; `None` if the field is absent.
fn replace_value(json: &[u8], name: &str, new: &[u8]) -> Option<Vec<u8>> {
    let (_, vs, ve) = field_span(json, name)?;
    let mut out = Vec::with_capacity(json.len() + new.len());
    out.extend_from_slice(json.get(..vs)?);
    out.extend_from_slice(new);
    out.extend_from_slice(json.get(ve..)?);
    Some(out)
}

/// `json` without the field `name` (and its separating comma).
fn remove_field(json: &[u8], name: &str) -> Option<Vec<u8>> {
    let (ks, _, ve) = field_span(json, name)?;
    let mut out = Vec::with_capacity(json.len());
    let (cut_from, cut_to) = if json.get(ve) == Some(&b',') {
        (ks, ve + 1)
    } else if ks > 0 && json.get(ks - 1) == Some(&b',') {
        (ks - 1, ve)
    } else {
        (ks, ve)
    };
    out.extend_from_slice(json.get(..cut_from)?);
    out.extend_from_slice(json.get(cut_to..)?);
    Some(out)
}

/// Damage `json` (a compact, valid encoding of one reading) as `defect` says. Never panics;
/// if the expected field is missing, the result is still damaged in the defect's class.
pub fn apply(defect: Defect, json: &[u8]) -> Vec<u8> {
    let damaged = match defect {
        Defect::Truncated { keep_per_mille } => {
            let len = json.len();
            let keep = len.saturating_mul(usize::from(keep_per_mille.min(999))) / 1000;
            let most = len.saturating_sub(1);
            let keep = keep.min(most).max(1.min(most));
            Some(json.get(..keep).unwrap_or_default().to_vec())
        }
        Defect::NanLiteral => replace_value(json, "temperature_c", b"NaN"),
        Defect::NotJson => Some(
            json.iter()
                .copied()
                .filter(|c| !matches!(c, b'{' | b'}' | b'"'))
                .collect(),
        ),
        Defect::InvalidUtf8 => field_span(json, "device_id").map(|(_, vs, _)| {
            let mut out = json.to_vec();
            out.insert(vs + 1, 0xff);
            out
        }),
        Defect::MissingField(f) => remove_field(json, f.name()),
        Defect::WrongType => field_span(json, "temperature_c").and_then(|(_, vs, ve)| {
            let mut quoted = b"\"".to_vec();
            quoted.extend_from_slice(json.get(vs..ve)?);
            quoted.push(b'"');
            replace_value(json, "temperature_c", &quoted)
        }),
        Defect::NumericTimestamp => replace_value(json, "ts", b"1755434096789"),
        Defect::NullField => replace_value(json, "vibration_g", b"null"),
    };
    damaged.unwrap_or_else(|| {
        if defect.is_schema_violation() {
            b"{\"unexpected\":true}".to_vec()
        } else {
            b"{\"device_id\":".to_vec()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor;

    const GOOD: &[u8] = br#"{"device_id":"MTR-00123","ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,"vibration_g":0.12,"status":"OK","site":"fab1","line":"L01"}"#;

    fn all() -> Vec<Defect> {
        let mut v = vec![
            Defect::NanLiteral,
            Defect::NotJson,
            Defect::InvalidUtf8,
            Defect::WrongType,
            Defect::NumericTimestamp,
            Defect::NullField,
        ];
        for k in [0, 1, 500, 998, 999, 1000, u16::MAX] {
            v.push(Defect::Truncated { keep_per_mille: k });
        }
        for f in [
            Field::DeviceId,
            Field::Ts,
            Field::TemperatureC,
            Field::VibrationG,
        ] {
            v.push(Defect::MissingField(f));
        }
        v
    }

    #[test]
    fn malformed_defects_are_not_json_and_violations_are_json_but_not_readings() {
        assert!(sensor::parse(GOOD).is_ok());
        for d in all() {
            let bad = apply(d, GOOD);
            let as_json = serde_json::from_slice::<serde_json::Value>(&bad);
            if d.is_schema_violation() {
                assert!(as_json.is_ok(), "{d:?}: {}", String::from_utf8_lossy(&bad));
            } else {
                assert!(as_json.is_err(), "{d:?}: {}", String::from_utf8_lossy(&bad));
            }
            assert!(sensor::parse(&bad).is_err(), "{d:?}");
        }
    }

    #[test]
    fn damage_is_local() {
        assert_eq!(
            apply(Defect::NullField, GOOD),
            br#"{"device_id":"MTR-00123","ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,"vibration_g":null,"status":"OK","site":"fab1","line":"L01"}"#
        );
        assert_eq!(
            apply(Defect::MissingField(Field::DeviceId), GOOD),
            br#"{"ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,"vibration_g":0.12,"status":"OK","site":"fab1","line":"L01"}"#
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for d in all() {
            for input in [
                &b""[..],
                b"{",
                b"\"",
                b"{\"ts\":",
                b"{\"temperature_c\":\"x",
            ] {
                let _ = apply(d, input);
            }
        }
    }
}
