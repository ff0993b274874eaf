//! Parsing and validation: a source record's JSON value becomes a [`SensorReading`], or a
//! [`Rejection`] whose reason goes to the dead-letter topic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use thiserror::Error;

use crate::config::PipelineConfig;
use crate::record::InputRecord;
use crate::time::{parse_rfc3339, Millis};

/// 0001-01-01T00:00:00Z: event times outside years 1-9999 are rejected, which keeps all
/// window arithmetic far from `i64` overflow.
pub const MIN_EVENT_TIME: Millis = -62_135_596_800_000;
/// 9999-12-31T23:59:59.999Z.
pub const MAX_EVENT_TIME: Millis = 253_402_300_799_999;

/// A validated reading: its key, event time, and the numeric fields the pipeline uses.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorReading {
    /// Grouping key (`device_id`).
    pub key: String,
    /// Event time.
    pub event_time: Millis,
    /// Numeric fields named in the config, all finite and within `max_abs_value`.
    pub values: BTreeMap<String, f64>,
    /// Source partition.
    pub partition: u32,
    /// Source offset.
    pub offset: i64,
}

impl SensorReading {
    /// Value of `field` (present for every configured field after validation).
    pub fn value(&self, field: &str) -> Option<f64> {
        self.values.get(field).copied()
    }
}

/// Why a record was rejected. The `Display` text is the DLQ reason header.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    /// Null value (tombstone).
    #[error("null value")]
    NullValue,
    /// Not valid JSON.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// Valid JSON but not an object.
    #[error("value is not a json object")]
    NotAnObject,
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// Field.
        field: String,
        /// Expected type.
        expected: &'static str,
    },
    /// The key is empty or too long.
    #[error("field `{field}` must be 1..={max} bytes")]
    BadKey {
        /// Field.
        field: String,
        /// Limit.
        max: usize,
    },
    /// The event time does not parse.
    #[error("field `{field}`: {reason}")]
    BadTime {
        /// Field.
        field: String,
        /// Parser message.
        reason: String,
    },
    /// A numeric field is beyond the configured range.
    #[error("field `{field}` out of range: {value:e}")]
    OutOfRange {
        /// Field.
        field: String,
        /// Value.
        value: f64,
    },
}

/// Turns records into readings; holds the config-derived field list.
#[derive(Debug, Clone)]
pub struct Parser {
    key_field: String,
    time_field: String,
    max_key_len: usize,
    numeric: BTreeSet<String>,
    max_abs: f64,
}

impl Parser {
    /// A parser for `config`.
    pub fn new(config: &PipelineConfig) -> Self {
        Self {
            key_field: config.source.key_field.clone(),
            time_field: config.source.time_field.clone(),
            max_key_len: config.source.max_key_len,
            numeric: config.numeric_fields(),
            max_abs: config.max_abs_value,
        }
    }

    /// Parses and validates one record.
    pub fn parse(&self, rec: &InputRecord) -> Result<SensorReading, Rejection> {
        let bytes = rec.value.as_deref().ok_or(Rejection::NullValue)?;
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| Rejection::InvalidJson(e.to_string()))?;
        let obj = v.as_object().ok_or(Rejection::NotAnObject)?;
        let field = |name: &str| match obj.get(name) {
            None | Some(Value::Null) => Err(Rejection::MissingField(name.into())),
            Some(x) => Ok(x),
        };
        let key = field(&self.key_field)?
            .as_str()
            .ok_or_else(|| Rejection::WrongType {
                field: self.key_field.clone(),
                expected: "a string",
            })?;
        if key.is_empty() || key.len() > self.max_key_len {
            return Err(Rejection::BadKey {
                field: self.key_field.clone(),
                max: self.max_key_len,
            });
        }
        let event_time = match field(&self.time_field)? {
            Value::String(s) => parse_rfc3339(s).map_err(|e| Rejection::BadTime {
                field: self.time_field.clone(),
                reason: e.to_string(),
            })?,
            Value::Number(n) => n.as_i64().ok_or_else(|| Rejection::BadTime {
                field: self.time_field.clone(),
                reason: "epoch milliseconds must be an integer".into(),
            })?,
            _ => {
                return Err(Rejection::WrongType {
                    field: self.time_field.clone(),
                    expected: "an RFC 3339 string or epoch milliseconds",
                })
            }
        };
        if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&event_time) {
            return Err(Rejection::BadTime {
                field: self.time_field.clone(),
                reason: "outside years 0001-9999".into(),
            });
        }
        let mut values = BTreeMap::new();
        for name in &self.numeric {
            let x = field(name)?.as_f64().ok_or_else(|| Rejection::WrongType {
                field: name.clone(),
                expected: "a number",
            })?;
            if !x.is_finite() || x.abs() > self.max_abs {
                return Err(Rejection::OutOfRange {
                    field: name.clone(),
                    value: x,
                });
            }
            values.insert(name.clone(), x);
        }
        Ok(SensorReading {
            key: key.to_owned(),
            event_time,
            values,
            partition: rec.partition,
            offset: rec.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value: &str) -> InputRecord {
        InputRecord {
            topic: "sensor_events".into(),
            partition: 1,
            offset: 7,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            timestamp: 0,
        }
    }

    #[test]
    fn parses_the_use_case_example() {
        let p = Parser::new(&PipelineConfig::default());
        let r = p
            .parse(&rec(r#"{"device_id": "MTR-00123", "ts": "2025-08-17T12:34:56.789Z", "temperature_c": 78.6,
                "vibration_g": 0.12, "status": "OK", "site": "fab1", "line": "L01"}"#))
            .unwrap();
        assert_eq!(r.key, "MTR-00123");
        assert_eq!(r.event_time, 1_755_434_096_789);
        assert_eq!(r.value("temperature_c"), Some(78.6));
        assert_eq!(r.value("vibration_g"), Some(0.12));
        assert_eq!((r.partition, r.offset), (1, 7));
        let epoch = p
            .parse(&rec(
                r#"{"device_id":"a","ts":1000,"temperature_c":1,"vibration_g":0}"#,
            ))
            .unwrap();
        assert_eq!(epoch.event_time, 1000);
    }

    /// Data-driven: input value → DLQ reason.
    #[test]
    fn rejections_carry_reasons() {
        let p = Parser::new(&PipelineConfig::default());
        let cases = [
            (
                "{",
                "invalid json: EOF while parsing an object at line 1 column 1",
            ),
            ("[1]", "value is not a json object"),
            (
                r#"{"ts":"2025-08-17T12:34:56Z"}"#,
                "missing field `device_id`",
            ),
            (r#"{"device_id":7}"#, "field `device_id` must be a string"),
            (
                r#"{"device_id":""}"#,
                "field `device_id` must be 1..=256 bytes",
            ),
            (r#"{"device_id":"a"}"#, "missing field `ts`"),
            (
                r#"{"device_id":"a","ts":"yesterday"}"#,
                "field `ts`: not an RFC 3339 timestamp: expected a digit",
            ),
            (
                r#"{"device_id":"a","ts":1.5}"#,
                "field `ts`: epoch milliseconds must be an integer",
            ),
            (
                r#"{"device_id":"a","ts":1000,"temperature_c":null,"vibration_g":0}"#,
                "missing field `temperature_c`",
            ),
            (
                r#"{"device_id":"a","ts":1000,"temperature_c":"hot","vibration_g":0}"#,
                "field `temperature_c` must be a number",
            ),
            (
                r#"{"device_id":"a","ts":1000,"temperature_c":1e300,"vibration_g":0}"#,
                "field `temperature_c` out of range: 1e300",
            ),
            (
                r#"{"device_id":"a","ts":-99999999999999999,"temperature_c":1,"vibration_g":0}"#,
                "field `ts`: outside years 0001-9999",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(
                p.parse(&rec(input)).unwrap_err().to_string(),
                reason,
                "{input}"
            );
        }
        let mut null = rec("");
        null.value = None;
        assert_eq!(p.parse(&null), Err(Rejection::NullValue));
    }
}
