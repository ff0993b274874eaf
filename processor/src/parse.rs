//! Parsing and validation: a source record's value (JSON, or protobuf `runnel.v1.SensorReading`)
//! becomes a [`SensorReading`], or a [`Rejection`] whose reason goes to the dead-letter topic.
//!
//! Both formats are read through one view of named fields ([`Field`]), so the key, time and
//! numeric checks (and their DLQ reasons) are the same whatever the encoding.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use serde_json::Value;
use thiserror::Error;

use crate::config::{PipelineConfig, ValueFormat};
use crate::proto;
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
    /// Not a protobuf `runnel.v1.SensorReading`.
    #[error("invalid protobuf: {0}")]
    InvalidProtobuf(String),
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

/// A named field of a decoded value, as the checks see it.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    /// Absent (or JSON null).
    Missing,
    /// A string.
    Str(&'a str),
    /// A number; `int` when it is an integer within `i64` (a JSON integer literal).
    Number { int: Option<i64>, float: f64 },
    /// A protobuf timestamp.
    Time(proto::Timestamp),
    /// Anything else (JSON bool, array, object).
    Other,
}

fn json_field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Field<'a> {
    match obj.get(name) {
        None | Some(Value::Null) => Field::Missing,
        Some(Value::String(s)) => Field::Str(s),
        Some(Value::Number(n)) => n.as_f64().map_or(Field::Other, |float| Field::Number {
            int: n.as_i64(),
            float,
        }),
        Some(_) => Field::Other,
    }
}

/// A protobuf reading's fields under the names of its stored JSON form (see [`proto`]).
fn proto_field<'a>(m: &'a proto::SensorReading, name: &str) -> Field<'a> {
    let double = |float| Field::Number { int: None, float };
    match name {
        "device_id" => Field::Str(&m.device_id),
        "ts" | "event_time" => m.event_time.map_or(Field::Missing, Field::Time),
        "temperature_c" => double(m.temperature_c),
        "vibration_g" => double(m.vibration_g),
        "status" => Field::Str(&m.status),
        "site" => Field::Str(&m.site),
        "line" => Field::Str(&m.line),
        _ => Field::Missing,
    }
}

/// Turns records into readings; holds the config-derived field list.
#[derive(Debug, Clone)]
pub struct Parser {
    format: ValueFormat,
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
            format: config.source.format,
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
        match self.format {
            ValueFormat::Json => {
                let v: Value = serde_json::from_slice(bytes)
                    .map_err(|e| Rejection::InvalidJson(e.to_string()))?;
                let obj = v.as_object().ok_or(Rejection::NotAnObject)?;
                self.reading(rec, |name| json_field(obj, name))
            }
            ValueFormat::Protobuf => {
                let m = proto::SensorReading::decode(bytes)
                    .map_err(|e| Rejection::InvalidProtobuf(e.to_string()))?;
                self.reading(rec, |name| proto_field(&m, name))
            }
        }
    }

    /// The checks shared by every format, over its fields.
    fn reading<'a>(
        &self,
        rec: &InputRecord,
        field: impl Fn(&str) -> Field<'a>,
    ) -> Result<SensorReading, Rejection> {
        let key = match field(&self.key_field) {
            Field::Missing => return Err(Rejection::MissingField(self.key_field.clone())),
            Field::Str(s) => s,
            _ => {
                return Err(Rejection::WrongType {
                    field: self.key_field.clone(),
                    expected: "a string",
                })
            }
        };
        if key.is_empty() || key.len() > self.max_key_len {
            return Err(Rejection::BadKey {
                field: self.key_field.clone(),
                max: self.max_key_len,
            });
        }
        let bad_time = |reason: String| Rejection::BadTime {
            field: self.time_field.clone(),
            reason,
        };
        let event_time = match field(&self.time_field) {
            Field::Missing => return Err(Rejection::MissingField(self.time_field.clone())),
            Field::Str(s) => parse_rfc3339(s).map_err(|e| bad_time(e.to_string()))?,
            Field::Number { int: Some(ms), .. } => ms,
            Field::Number { int: None, .. } => {
                return Err(bad_time("epoch milliseconds must be an integer".into()))
            }
            Field::Time(ts) => proto::timestamp_ms(ts).map_err(|e| bad_time(e.into()))?,
            Field::Other => {
                return Err(Rejection::WrongType {
                    field: self.time_field.clone(),
                    expected: "an RFC 3339 string or epoch milliseconds",
                })
            }
        };
        if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&event_time) {
            return Err(bad_time("outside years 0001-9999".into()));
        }
        let mut values = BTreeMap::new();
        for name in &self.numeric {
            let x = match field(name) {
                Field::Missing => return Err(Rejection::MissingField(name.clone())),
                Field::Number { float, .. } => float,
                _ => {
                    return Err(Rejection::WrongType {
                        field: name.clone(),
                        expected: "a number",
                    })
                }
            };
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

    fn protobuf_parser() -> Parser {
        let mut c = PipelineConfig::default();
        c.source.format = ValueFormat::Protobuf;
        Parser::new(&c)
    }

    fn reading_pb() -> proto::SensorReading {
        proto::SensorReading {
            device_id: "MTR-00123".into(),
            event_time: Some(proto::Timestamp {
                seconds: 1_755_434_096,
                nanos: 789_400_000,
            }),
            temperature_c: 78.6,
            vibration_g: 0.12,
            status: "OK".into(),
            site: "fab1".into(),
            line: "L01".into(),
        }
    }

    fn rec_bytes(value: Vec<u8>) -> InputRecord {
        InputRecord {
            value: Some(value),
            ..rec("")
        }
    }

    #[test]
    fn protobuf_reads_like_its_json_form() {
        let from_pb = protobuf_parser()
            .parse(&rec_bytes(reading_pb().encode_to_vec()))
            .unwrap();
        // The JSON `PublishSensorReadings` stores for the same reading (ms precision).
        let from_json = Parser::new(&PipelineConfig::default())
            .parse(&rec(
                r#"{"device_id":"MTR-00123","ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,"vibration_g":0.12,"status":"OK","site":"fab1","line":"L01"}"#,
            ))
            .unwrap();
        assert_eq!(from_pb, from_json);
        assert_eq!(from_pb.event_time, 1_755_434_096_789);
    }

    /// Data-driven: protobuf value → DLQ reason.
    #[test]
    fn protobuf_rejections_carry_reasons() {
        let p = protobuf_parser();
        let with = |f: &dyn Fn(&mut proto::SensorReading)| {
            let mut m = reading_pb();
            f(&mut m);
            m.encode_to_vec()
        };
        // device_id (field 1, length-delimited) holding bytes that are not UTF-8.
        let not_utf8 = vec![0x0a, 0x02, 0xc3, 0x28];
        let cases: Vec<(Vec<u8>, &str)> =
            vec![
            (
                vec![0xff; 7],
                "invalid protobuf: failed to decode Protobuf message: invalid varint",
            ),
            (
                b"{\"device_id\":\"a\"}".to_vec(),
                "invalid protobuf: failed to decode Protobuf message: buffer underflow",
            ),
            (
                not_utf8,
                "invalid protobuf: failed to decode Protobuf message: SensorReading.device_id: \
                 invalid string value: data is not UTF-8 encoded",
            ),
            (Vec::new(), "field `device_id` must be 1..=256 bytes"),
            (
                with(&|m| m.device_id = "x".repeat(257)),
                "field `device_id` must be 1..=256 bytes",
            ),
            (with(&|m| m.event_time = None), "missing field `ts`"),
            (
                with(&|m| m.event_time = Some(proto::Timestamp { seconds: 0, nanos: -1 })),
                "field `ts`: timestamp nanos must be in 0..1000000000",
            ),
            (
                with(&|m| {
                    m.event_time = Some(proto::Timestamp {
                        seconds: i64::MAX,
                        nanos: 0,
                    });
                }),
                "field `ts`: outside years 0001-9999",
            ),
            (
                with(&|m| {
                    m.event_time = Some(proto::Timestamp {
                        seconds: 253_402_300_800,
                        nanos: 0,
                    });
                }),
                "field `ts`: outside years 0001-9999",
            ),
            (
                with(&|m| m.temperature_c = f64::NAN),
                "field `temperature_c` out of range: NaN",
            ),
            (
                with(&|m| m.vibration_g = -1e300),
                "field `vibration_g` out of range: -1e300",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(
                p.parse(&rec_bytes(input.clone())).unwrap_err().to_string(),
                reason,
                "{input:?}"
            );
        }
        let mut null = rec("");
        null.value = None;
        assert_eq!(p.parse(&null), Err(Rejection::NullValue));
        // Proto3 has no presence for doubles: an absent value reads as 0.
        let zero = p
            .parse(&rec_bytes(with(&|m| m.temperature_c = 0.0)))
            .unwrap();
        assert_eq!(zero.value("temperature_c"), Some(0.0));
    }

    proptest::proptest! {
        /// Any bytes, in either format: a reading or a rejection, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = protobuf_parser().parse(&rec_bytes(bytes.clone()));
            let _ = Parser::new(&PipelineConfig::default()).parse(&rec_bytes(bytes));
        }
    }
}
