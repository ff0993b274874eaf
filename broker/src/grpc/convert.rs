//! Conversions between generated `runnel.v1` types and the broker's own types: the one place
//! protobuf meets the record-batch codec (house style: one boundary per pair of type kinds).

use runnel_proto::v1;
use serde::Serialize;

use super::error::GrpcError;
use crate::codec::builder::Record;

/// Latest accepted timestamp: 9999-12-31T23:59:59.999Z. Bounding timestamps keeps the
/// batch's timestamp deltas far from overflow and the JSON year at four digits.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// A published record as the codec wants it; a missing timestamp becomes `now_ms`.
pub fn record_from_proto(index: usize, r: v1::Record, now_ms: i64) -> Result<Record, GrpcError> {
    let timestamp = r.timestamp_ms.unwrap_or(now_ms);
    if !(0..=MAX_TIMESTAMP_MS).contains(&timestamp) {
        return Err(GrpcError::InvalidArgument(format!(
            "record {index}: timestamp_ms {timestamp} is outside 0..={MAX_TIMESTAMP_MS}"
        )));
    }
    Ok(Record {
        key: r.key,
        value: r.value,
        headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        timestamp,
    })
}

/// A record decoded from a stored batch (any codec), as the client sees it.
pub fn consumed_from_kafka(
    partition: i32,
    r: kafka_protocol::records::Record,
) -> v1::ConsumedRecord {
    v1::ConsumedRecord {
        partition,
        offset: r.offset,
        key: r.key.map(Vec::from),
        value: r.value.map(Vec::from),
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| v1::Header {
                key: k.to_string(),
                value: v.map(Vec::from),
            })
            .collect(),
        timestamp_ms: r.timestamp,
    }
}

/// The JSON a Kafka producer sends for one reading (USE-CASES.md), keys in this order.
#[derive(Serialize)]
struct SensorJson<'a> {
    device_id: &'a str,
    ts: String,
    temperature_c: f64,
    vibration_g: f64,
    status: &'a str,
    site: &'a str,
    line: &'a str,
}

/// A sensor reading as the record it is stored as: key = device id, value = JSON,
/// timestamp = event time (ms).
pub fn record_from_sensor(index: usize, s: &v1::SensorReading) -> Result<Record, GrpcError> {
    let bad = |why: String| GrpcError::InvalidArgument(format!("reading {index}: {why}"));
    if s.device_id.is_empty() {
        return Err(bad("device_id is required".into()));
    }
    let ts = s
        .event_time
        .as_ref()
        .ok_or_else(|| bad("event_time is required".into()))?;
    let ms = timestamp_ms(ts).ok_or_else(|| {
        bad(format!(
            "event_time {}s {}ns is not a valid time between 1970 and 9999",
            ts.seconds, ts.nanos
        ))
    })?;
    for (name, v) in [
        ("temperature_c", s.temperature_c),
        ("vibration_g", s.vibration_g),
    ] {
        if !v.is_finite() {
            return Err(bad(format!("{name} must be a finite number, got {v}")));
        }
    }
    let json = SensorJson {
        device_id: &s.device_id,
        ts: rfc3339_ms(ms),
        temperature_c: s.temperature_c,
        vibration_g: s.vibration_g,
        status: &s.status,
        site: &s.site,
        line: &s.line,
    };
    let value = serde_json::to_vec(&json).map_err(|e| bad(format!("cannot encode: {e}")))?;
    Ok(Record {
        key: Some(s.device_id.clone().into_bytes()),
        value: Some(value),
        headers: Vec::new(),
        timestamp: ms,
    })
}

/// Milliseconds since the epoch for a protobuf timestamp in 1970..=9999, else `None`.
pub fn timestamp_ms(ts: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let ms = ts
        .seconds
        .checked_mul(1000)?
        .checked_add(i64::from(ts.nanos / 1_000_000))?;
    (0..=MAX_TIMESTAMP_MS).contains(&ms).then_some(ms)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for an epoch-millisecond time: the processor's formatter, so
/// what gRPC shows and what the processor parses and writes are one calendar.
pub fn rfc3339_ms(ms: i64) -> String {
    runnel_processor::time::format_rfc3339(ms)
}

/// A record of a pipeline's alerts topic as an [`v1::Alert`]. The processor writes a JSON
/// object (`processor/src/pipeline.rs`, `alert`): its named fields fill the message, other
/// numbers go to `detail`, and the whole value is kept in `json`. A record that is not such an
/// object (written there by someone else) still arrives, with only `json` and its position.
pub fn alert_from_record(r: v1::ConsumedRecord, key_field: &str) -> v1::Alert {
    let mut a = v1::Alert {
        partition: r.partition,
        offset: r.offset,
        ..v1::Alert::default()
    };
    let value = r.value.unwrap_or_default();
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(&value) {
        for (k, v) in m {
            match (k.as_str(), v) {
                ("id", serde_json::Value::String(x)) => a.id = x,
                ("pipeline", serde_json::Value::String(x)) => a.pipeline = x,
                ("rule", serde_json::Value::String(x)) => a.rule = x,
                ("kind", serde_json::Value::String(x)) => a.kind = x,
                ("value", v) => a.value = v.as_f64().unwrap_or(f64::NAN),
                ("event_time_ms", v) => a.event_time_ms = v.as_i64().unwrap_or_default(),
                ("event_time", _) => {}
                (k, serde_json::Value::String(x)) if k == key_field => a.key = x,
                (k, serde_json::Value::Number(n)) => {
                    if let Some(x) = n.as_f64() {
                        a.detail.insert(k.to_owned(), x);
                    }
                }
                _ => {}
            }
        }
    }
    a.json = value;
    a
}

/// A record of a pipeline's aggregates topic as a [`v1::WindowResult`] (the JSON object of
/// `processor/src/pipeline.rs`, `aggregate`: named fields, and every other number as a
/// column in `values`). `None` if it is not such an object or lacks the window bounds.
pub fn window_from_record(r: v1::ConsumedRecord, key_field: &str) -> Option<v1::WindowResult> {
    let value = r.value.unwrap_or_default();
    let serde_json::Value::Object(m) = serde_json::from_slice(&value).ok()? else {
        return None;
    };
    let mut w = v1::WindowResult {
        partition: r.partition,
        offset: r.offset,
        ..v1::WindowResult::default()
    };
    let (mut start, mut end) = (None, None);
    for (k, v) in m {
        match (k.as_str(), v) {
            ("window_start_ms", v) => start = v.as_i64(),
            ("window_end_ms", v) => end = v.as_i64(),
            ("revision", v) => w.revision = v.as_u64().unwrap_or_default(),
            ("count", v) => w.count = v.as_u64().unwrap_or_default(),
            ("pipeline" | "window_start" | "window_end", _) => {}
            (k, serde_json::Value::String(x)) if k == key_field => w.key = x,
            (k, serde_json::Value::Number(n)) => {
                if let Some(x) = n.as_f64() {
                    w.values.insert(k.to_owned(), x);
                }
            }
            _ => {}
        }
    }
    w.window_start_ms = start?;
    w.window_end_ms = end?;
    w.json = value;
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_the_use_case_json() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_755_434_096_789), "2025-08-17T12:34:56.789Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(MAX_TIMESTAMP_MS), "9999-12-31T23:59:59.999Z");
    }

    fn reading() -> v1::SensorReading {
        v1::SensorReading {
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
        }
    }

    #[test]
    fn sensor_reading_becomes_the_kafka_json() {
        let r = record_from_sensor(0, &reading()).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"MTR-00123"[..]));
        assert_eq!(r.timestamp, 1_755_434_096_789);
        assert_eq!(
            String::from_utf8(r.value.unwrap()).unwrap(),
            r#"{"device_id":"MTR-00123","ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,"vibration_g":0.12,"status":"OK","site":"fab1","line":"L01"}"#
        );
    }

    #[test]
    fn bad_readings_are_refused() {
        let mut r = reading();
        r.temperature_c = f64::NAN;
        assert!(record_from_sensor(0, &r).is_err());
        let mut r = reading();
        r.event_time = None;
        assert!(record_from_sensor(0, &r).is_err());
        let mut r = reading();
        r.event_time = Some(prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        });
        assert!(record_from_sensor(0, &r).is_err());
        let mut r = reading();
        r.device_id.clear();
        assert!(record_from_sensor(0, &r).is_err());
    }
}
