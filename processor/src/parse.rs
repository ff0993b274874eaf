//! Parsing and validation: a source record's value (JSON, or protobuf `runnel.v1.SensorReading`)
//! becomes a [`SensorReading`], or a [`Rejection`] whose reason goes to the dead-letter topic.
//!
//! Both formats are read through one view of named fields ([`Field`]), so the key, time and
//! numeric checks (and their DLQ reasons) are the same whatever the encoding.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use prost::Message;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use thiserror::Error;

use crate::config::{PipelineConfig, ValueFormat};
use crate::proto;
use crate::record::InputRecord;
use crate::time::{parse_rfc3339, Millis};

mod flat;

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
    pub values: Values,
    /// Source partition.
    pub partition: u32,
    /// Source offset.
    pub offset: i64,
}

impl SensorReading {
    /// Value of `field` (present for every configured field after validation).
    pub fn value(&self, field: &str) -> Option<f64> {
        self.values.get(field)
    }
}

/// The numeric fields of a reading, by name. The names are shared by every reading of a
/// parser (one `Arc`), so a reading allocates only its values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Values {
    /// Field names, sorted and distinct.
    names: Arc<[String]>,
    /// `values[i]` belongs to `names[i]`.
    values: Floats,
}

/// Where a fixed list of fields is in readings' [`Values`]: found by name once per list of
/// names (every reading of a parser shares one, so once), then read by index, without
/// comparing names per reading.
#[derive(Debug, Clone, Default)]
pub struct FieldSlots {
    /// The names the slots were found in.
    names: Option<Arc<[String]>>,
    /// `slots[i]`: where the `i`-th field is in `names`, if there.
    slots: Vec<Option<usize>>,
}

impl FieldSlots {
    /// Finds `fields` again if `v` has other names than the last values seen (`None`: a
    /// field-less entry, never found).
    pub fn resolve<'f>(&mut self, v: &Values, fields: impl Iterator<Item = Option<&'f str>>) {
        if self
            .names
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, &v.names))
        {
            return;
        }
        self.slots = fields
            .map(|f| f.and_then(|f| v.names.iter().position(|n| n == f)))
            .collect();
        self.names = Some(Arc::clone(&v.names));
    }

    /// The value in `v` of the `i`-th field, `v` being the values last [`Self::resolve`]d.
    pub fn get(&self, i: usize, v: &Values) -> Option<f64> {
        let slot = self.slots.get(i).copied().flatten()?;
        v.values.as_slice().get(slot).copied()
    }
}

/// How many values a reading keeps in place; more go to the heap.
const INLINE_VALUES: usize = 4;

/// A reading's values: in place for up to [`INLINE_VALUES`] numeric fields (the sensor
/// pipeline has two), so a reading allocates nothing for them. Equal by contents.
#[derive(Debug, Clone)]
enum Floats {
    Inline([f64; INLINE_VALUES], usize),
    Heap(Vec<f64>),
}

impl Floats {
    fn with_capacity(n: usize) -> Self {
        if n <= INLINE_VALUES {
            Floats::Inline([0.0; INLINE_VALUES], 0)
        } else {
            Floats::Heap(Vec::with_capacity(n))
        }
    }

    fn push(&mut self, x: f64) {
        match self {
            Floats::Inline(a, n) => match a.get_mut(*n) {
                Some(slot) => {
                    *slot = x;
                    *n += 1;
                }
                None => {
                    let mut v = a.to_vec();
                    v.push(x);
                    *self = Floats::Heap(v);
                }
            },
            Floats::Heap(v) => v.push(x),
        }
    }

    fn as_slice(&self) -> &[f64] {
        match self {
            Floats::Inline(a, n) => a.get(..*n).unwrap_or_default(),
            Floats::Heap(v) => v,
        }
    }
}

impl Default for Floats {
    fn default() -> Self {
        Floats::with_capacity(0)
    }
}

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Values {
    /// Value of `field`.
    pub fn get(&self, field: &str) -> Option<f64> {
        let i = self.names.iter().position(|n| n == field)?;
        self.values.as_slice().get(i).copied()
    }

    /// `(name, value)` pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.as_slice().iter().copied())
    }
}

/// From `(name, value)` pairs; a repeated name keeps its last value.
impl FromIterator<(String, f64)> for Values {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(iter: I) -> Self {
        let map: std::collections::BTreeMap<String, f64> = iter.into_iter().collect();
        let (names, values): (Vec<String>, Vec<f64>) = map.into_iter().unzip();
        Self {
            names: names.into(),
            values: Floats::Heap(values),
        }
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

/// A configured field's JSON value, kept without building a `serde_json::Value` tree: strings
/// borrow from the input unless they hold escapes.
#[derive(Debug)]
enum JsonField<'de> {
    Null,
    Str(Cow<'de, str>),
    Number { int: Option<i64>, float: f64 },
    Other,
}

/// The configured fields of one JSON object: `slots[i]` is the last value of the parser's
/// `wanted[i]` (a repeated key keeps its last value, as `serde_json::Map` did).
struct Picked<'de> {
    slots: Vec<Option<JsonField<'de>>>,
}

impl<'de> Picked<'de> {
    /// The field `names[i]`.
    fn field(&self, i: usize) -> Field<'_> {
        match self.slots.get(i).and_then(Option::as_ref) {
            None | Some(JsonField::Null) => Field::Missing,
            Some(JsonField::Str(s)) => Field::Str(s),
            Some(JsonField::Number { int, float }) => Field::Number {
                int: *int,
                float: *float,
            },
            Some(JsonField::Other) => Field::Other,
        }
    }
}

/// Seed reading a whole JSON value: `Some` for an object (its configured fields), `None` for
/// any other value. Every part of the input is still parsed and checked exactly as a
/// `serde_json::Value` would be (strings as UTF-8, numbers as numbers, nesting limit), so the
/// same inputs are invalid with the same messages; only nothing is kept but the named fields.
struct Wanted<'n>(&'n [String]);

impl<'de, 'n> DeserializeSeed<'de> for Wanted<'n> {
    type Value = Option<Picked<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'n> Visitor<'de> for Wanted<'n> {
    type Value = Option<Picked<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<JsonField<'de>>> = Vec::with_capacity(self.0.len());
        slots.resize_with(self.0.len(), || None);
        while let Some(key) = map.next_key_seed(StrSeed)? {
            match self.0.iter().position(|n| *n == *key) {
                Some(i) => {
                    let v = map.next_value_seed(FieldSeed)?;
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(v);
                    }
                }
                None => map.next_value_seed(Checked)?,
            }
        }
        Ok(Some(Picked { slots }))
    }
}

/// A string, borrowed from the input when it holds no escape.
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

/// A configured field's value.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = JsonField<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = JsonField<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(JsonField::Other)
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(JsonField::Number {
            int: Some(n),
            float: crate::num::i64_to_f64(n),
        })
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(JsonField::Number {
            int: i64::try_from(n).ok(),
            float: crate::num::u64_to_f64(n),
        })
    }
    fn visit_f64<E>(self, x: f64) -> Result<Self::Value, E> {
        // serde_json only produces finite floats; `Value` reads anything else as null.
        Ok(if x.is_finite() {
            JsonField::Number {
                int: None,
                float: x,
            }
        } else {
            JsonField::Null
        })
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(JsonField::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(JsonField::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(JsonField::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(JsonField::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(JsonField::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_key_seed(Checked)?.is_some() {
            map.next_value_seed(Checked)?;
        }
        Ok(JsonField::Other)
    }
}

/// Any JSON value, parsed and checked as `serde_json::Value` would parse it (strings decoded
/// as UTF-8, numbers converted), and dropped.
struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Checked)?.is_some() {
            map.next_value_seed(Checked)?;
        }
        Ok(())
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
    /// The configured numeric fields, sorted and distinct.
    numeric: Arc<[String]>,
    /// Every field read from a JSON value: key, time and numeric fields, distinct.
    wanted: Vec<String>,
    /// Where the key, the time and each numeric field are in `wanted`.
    key_slot: usize,
    time_slot: usize,
    numeric_slots: Vec<usize>,
    max_abs: f64,
    /// The key layout of the last JSON object read ([`flat::Layout`]).
    layout: RefCell<flat::Layout>,
}

impl Parser {
    /// A parser for `config`.
    pub fn new(config: &PipelineConfig) -> Self {
        let numeric: Arc<[String]> = config.numeric_fields().into_iter().collect();
        let mut wanted: Vec<String> = Vec::new();
        let mut slot_of = |name: &String| match wanted.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                wanted.push(name.clone());
                wanted.len() - 1
            }
        };
        let key_slot = slot_of(&config.source.key_field);
        let time_slot = slot_of(&config.source.time_field);
        let numeric_slots = numeric.iter().map(&mut slot_of).collect();
        Self {
            wanted,
            key_slot,
            time_slot,
            numeric_slots,
            format: config.source.format,
            key_field: config.source.key_field.clone(),
            time_field: config.source.time_field.clone(),
            max_key_len: config.source.max_key_len,
            numeric,
            max_abs: config.max_abs_value,
            layout: RefCell::default(),
        }
    }

    /// Parses and validates one record.
    pub fn parse(&self, rec: &InputRecord) -> Result<SensorReading, Rejection> {
        let bytes = rec.value.as_deref().ok_or(Rejection::NullValue)?;
        match self.format {
            ValueFormat::Json => {
                // The common flat object without serde; anything else (and every error) the
                // serde way, whose reading or rejection the fast path's answer always equals.
                let picked = flat::pick_with(&self.wanted, bytes, &mut self.layout.borrow_mut());
                let fields = match picked {
                    Some(fields) => fields,
                    None => {
                        let wanted = Wanted(&self.wanted);
                        let mut de = serde_json::Deserializer::from_slice(bytes);
                        let picked = wanted
                            .deserialize(&mut de)
                            .and_then(|p| de.end().map(|()| p))
                            .map_err(|e| Rejection::InvalidJson(e.to_string()))?;
                        picked.ok_or(Rejection::NotAnObject)?
                    }
                };
                self.reading(rec, |slot, _| fields.field(slot))
            }
            ValueFormat::Protobuf => {
                let m = proto::SensorReading::decode(bytes)
                    .map_err(|e| Rejection::InvalidProtobuf(e.to_string()))?;
                self.reading(rec, |_, name| proto_field(&m, name))
            }
        }
    }

    /// The checks shared by every format, over its fields: `field(slot, name)` is the
    /// field `name`, which is `wanted[slot]`.
    fn reading<'a>(
        &self,
        rec: &InputRecord,
        field: impl Fn(usize, &str) -> Field<'a>,
    ) -> Result<SensorReading, Rejection> {
        let key = match field(self.key_slot, &self.key_field) {
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
        let event_time = match field(self.time_slot, &self.time_field) {
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
        let mut values = Floats::with_capacity(self.numeric.len());
        for (name, &slot) in self.numeric.iter().zip(&self.numeric_slots) {
            let x = match field(slot, name) {
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
            values.push(x);
        }
        Ok(SensorReading {
            key: key.to_owned(),
            event_time,
            values: Values {
                names: Arc::clone(&self.numeric),
                values,
            },
            partition: rec.partition,
            offset: rec.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots follow the names of the values they are used with: found again when the names
    /// change, a missing field has none.
    #[test]
    fn field_slots_follow_the_values_names() {
        let a: Values = [("a".to_string(), 1.0), ("b".to_string(), 2.0)]
            .into_iter()
            .collect();
        let b: Values = [("b".to_string(), 3.0), ("c".to_string(), 4.0)]
            .into_iter()
            .collect();
        let mut slots = FieldSlots::default();
        for (v, want) in [
            (&a, [Some(2.0), Some(1.0), None]),
            (&a, [Some(2.0), Some(1.0), None]),
            (&b, [Some(3.0), None, Some(4.0)]),
            (&a, [Some(2.0), Some(1.0), None]),
        ] {
            slots.resolve(v, [Some("b"), Some("a"), Some("c"), None].into_iter());
            let got: Vec<Option<f64>> = (0..3).map(|i| slots.get(i, v)).collect();
            assert_eq!(got, want);
            assert_eq!(slots.get(3, v), None);
            assert_eq!(slots.get(4, v), None);
        }
    }

    /// In place or spilled to the heap, the values are the ones pushed, in order, and equal
    /// whatever their storage.
    #[test]
    fn floats_keep_every_value_in_order() {
        for n in 0..=2 * INLINE_VALUES + 1 {
            let xs: Vec<f64> = (0..n)
                .map(|i| f64::from(u32::try_from(i).unwrap()) + 0.5)
                .collect();
            let mut f = Floats::with_capacity(n.min(INLINE_VALUES));
            for &x in &xs {
                f.push(x);
            }
            assert_eq!(f.as_slice(), xs.as_slice());
            assert_eq!(f, Floats::Heap(xs.clone()));
            assert_eq!(Floats::Heap(xs.clone()), f);
        }
        assert_ne!(Floats::Heap(vec![1.0]), Floats::default());
    }

    fn rec(value: &str) -> InputRecord {
        InputRecord {
            topic: "sensor_events".into(),
            partition: 1,
            offset: 7,
            key: None,
            value: Some(value.as_bytes().to_vec().into()),
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
            value: Some(value.into()),
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

    /// The reading or rejection of the former parser, which built a whole `serde_json::Value`
    /// and looked the fields up in it: the reference the field-picking parser must match.
    fn reference_parse(p: &Parser, rec: &InputRecord) -> Result<SensorReading, Rejection> {
        use serde_json::Value;
        let bytes = rec.value.as_deref().ok_or(Rejection::NullValue)?;
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| Rejection::InvalidJson(e.to_string()))?;
        let obj = v.as_object().ok_or(Rejection::NotAnObject)?;
        p.reading(rec, |_, name| match obj.get(name) {
            None | Some(Value::Null) => Field::Missing,
            Some(Value::String(s)) => Field::Str(s),
            Some(Value::Number(n)) => n.as_f64().map_or(Field::Other, |float| Field::Number {
                int: n.as_i64(),
                float,
            }),
            Some(_) => Field::Other,
        })
    }

    /// JSON-ish text: fragments of valid and broken objects around the configured names.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let frag = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just("\"device_id\"".to_string()),
            Just("\"device\\u005fid\"".to_string()),
            Just("\"ts\"".to_string()),
            Just("\"temperature_c\"".to_string()),
            Just("\"vibration_g\"".to_string()),
            Just("\"other\"".to_string()),
            Just("\"2025-08-17T12:34:56.789Z\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"a\\nb\"".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("1e400".to_string()),
            Just("-0".to_string()),
            Just("18446744073709551615".to_string()),
            Just("9223372036854775808".to_string()),
            Just(" ".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|x| x.to_string()),
            "[a-z_]{0,3}".prop_map(|s| format!("\"{s}\"")),
        ];
        prop_oneof![
            proptest::collection::vec(frag.clone(), 0..24).prop_map(|v| v.concat()),
            // Mostly well-formed objects over the configured names.
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("device_id"),
                        Just("ts"),
                        Just("temperature_c"),
                        Just("vibration_g"),
                        Just("x")
                    ],
                    frag
                ),
                0..8
            )
            .prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    }

    proptest::proptest! {
        /// Any bytes, in either format: a reading or a rejection, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = protobuf_parser().parse(&rec_bytes(bytes.clone()));
            let _ = Parser::new(&PipelineConfig::default()).parse(&rec_bytes(bytes));
        }

        /// JSON: the field-picking parser gives exactly the reading or rejection (reason text
        /// included) of the `serde_json::Value` one, on valid and invalid input alike.
        #[test]
        fn json_matches_the_value_parser(text in json_text(), raw in proptest::collection::vec(proptest::num::u8::ANY, 0..8)) {
            let p = Parser::new(&PipelineConfig::default());
            for bytes in [text.clone().into_bytes(), [text.as_bytes(), &raw].concat()] {
                let r = rec_bytes(bytes);
                proptest::prop_assert_eq!(p.parse(&r), reference_parse(&p, &r));
            }
        }
    }
}
