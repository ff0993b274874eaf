//! The protobuf value format: `runnel.v1.SensorReading` (`proto/runnel/v1/ingest.proto`),
//! decoded with prost from a mirror of the message declared here.
//!
//! Why a mirror and not `runnel_proto::v1::SensorReading`: `runnel-proto` compiles the tonic
//! services too, so depending on it would pull tonic, hyper and an async runtime into this
//! crate, whose core names no runtime. prost itself is plain decoding. Field numbers of `runnel.v1` are
//! append-only, and `tests::mirror_matches_the_descriptor` checks this mirror against the
//! descriptor set `runnel-proto` compiles (a dev-dependency only), so the two cannot drift.
//!
//! A decoded reading is read through the field names of its stored JSON form (the one
//! `PublishSensorReadings` stores): `device_id`, `ts` (also `event_time`), `temperature_c`,
//! `vibration_g`, `status`, `site`, `line`; so a pipeline's `key_field`, `time_field` and
//! numeric fields mean the same over either format.

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds in the second, `0..1_000_000_000`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `runnel.v1.SensorReading`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SensorReading {
    /// Device id (the grouping key).
    #[prost(string, tag = "1")]
    pub device_id: String,
    /// When the reading was taken.
    #[prost(message, optional, tag = "2")]
    pub event_time: Option<Timestamp>,
    /// Temperature.
    #[prost(double, tag = "3")]
    pub temperature_c: f64,
    /// Vibration.
    #[prost(double, tag = "4")]
    pub vibration_g: f64,
    /// Device status as reported.
    #[prost(string, tag = "5")]
    pub status: String,
    /// Site.
    #[prost(string, tag = "6")]
    pub site: String,
    /// Production line.
    #[prost(string, tag = "7")]
    pub line: String,
}

/// What kind of value a field of the reading holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A string (usable as the key).
    Str,
    /// A double (usable as a numeric field).
    Double,
    /// The event time (usable as the time field).
    Time,
}

/// The fields a pipeline can name, with their kinds (`ts` and `event_time` are one field).
pub const FIELDS: &[(&str, FieldKind)] = &[
    ("device_id", FieldKind::Str),
    ("ts", FieldKind::Time),
    ("event_time", FieldKind::Time),
    ("temperature_c", FieldKind::Double),
    ("vibration_g", FieldKind::Double),
    ("status", FieldKind::Str),
    ("site", FieldKind::Str),
    ("line", FieldKind::Str),
];

/// The kind of field `name`, if the reading has it.
pub fn field_kind(name: &str) -> Option<FieldKind> {
    FIELDS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The fields of `kind`, for error messages.
pub fn fields_of(kind: FieldKind) -> Vec<&'static str> {
    FIELDS
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(n, _)| *n)
        .collect()
}

/// Milliseconds since the epoch (floored, as the stored JSON form has them), or why not.
pub fn timestamp_ms(ts: Timestamp) -> Result<i64, &'static str> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err("timestamp nanos must be in 0..1000000000");
    }
    ts.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
        .ok_or("outside years 0001-9999")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};

    /// The mirror has exactly the generated message's fields: names, numbers, types.
    #[test]
    fn mirror_matches_the_descriptor() {
        let fds = prost_types::FileDescriptorSet::decode(runnel_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let find = |package: &str, name: &str| {
            fds.file
                .iter()
                .filter(|f| f.package() == package)
                .flat_map(|f| f.message_type.iter())
                .find(|m| m.name() == name)
                .unwrap_or_else(|| panic!("{package}.{name} not in the descriptor set"))
                .field
                .iter()
                .map(|f| (f.name().to_owned(), f.number(), f.r#type(), f.label()))
                .collect::<Vec<_>>()
        };
        let s = |n: &str| n.to_owned();
        assert_eq!(
            find("runnel.v1", "SensorReading"),
            [
                (s("device_id"), 1, Type::String, Label::Optional),
                (s("event_time"), 2, Type::Message, Label::Optional),
                (s("temperature_c"), 3, Type::Double, Label::Optional),
                (s("vibration_g"), 4, Type::Double, Label::Optional),
                (s("status"), 5, Type::String, Label::Optional),
                (s("site"), 6, Type::String, Label::Optional),
                (s("line"), 7, Type::String, Label::Optional),
            ]
        );
        assert_eq!(
            find("google.protobuf", "Timestamp"),
            [
                (s("seconds"), 1, Type::Int64, Label::Optional),
                (s("nanos"), 2, Type::Int32, Label::Optional),
            ]
        );
    }

    /// Bytes of the generated type decode into the mirror, field for field, and back.
    #[test]
    fn generated_bytes_decode_into_the_mirror() {
        let generated = runnel_proto::v1::SensorReading {
            device_id: "MTR-00123".into(),
            event_time: Some(prost_types::Timestamp {
                seconds: 1_755_434_096,
                nanos: 789_000_000,
            }),
            temperature_c: 78.6,
            vibration_g: 0.12,
            status: "OK".into(),
            site: "fab1".into(),
            line: "L01".into(),
        };
        let mirror = SensorReading::decode(generated.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            mirror,
            SensorReading {
                device_id: "MTR-00123".into(),
                event_time: Some(Timestamp {
                    seconds: 1_755_434_096,
                    nanos: 789_000_000,
                }),
                temperature_c: 78.6,
                vibration_g: 0.12,
                status: "OK".into(),
                site: "fab1".into(),
                line: "L01".into(),
            }
        );
        assert_eq!(mirror.encode_to_vec(), generated.encode_to_vec());
    }

    #[test]
    fn timestamps_floor_to_milliseconds() {
        let ts = |seconds, nanos| timestamp_ms(Timestamp { seconds, nanos });
        assert_eq!(ts(1, 999_999_999), Ok(1999));
        assert_eq!(ts(-1, 500_000_000), Ok(-500));
        assert_eq!(ts(0, 0), Ok(0));
        assert!(ts(0, -1).is_err());
        assert!(ts(0, 1_000_000_000).is_err());
        assert!(ts(i64::MAX, 0).is_err());
        assert!(ts(i64::MIN, 0).is_err());
    }
}
