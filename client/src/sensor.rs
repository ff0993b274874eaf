//! Typed helpers for the factory-sensor workload: build [`v1::SensorReading`]s and read the
//! JSON form they are stored as (the same JSON a Kafka producer sends).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_proto::v1;
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// A reading as stored in the log (USE-CASES.md):
/// `{"device_id":"MTR-00123","ts":"2025-08-17T12:34:56.789Z","temperature_c":78.6,...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorJson {
    pub device_id: String,
    /// RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub temperature_c: f64,
    pub vibration_g: f64,
    pub status: String,
    pub site: String,
    pub line: String,
}

/// Parse a stored reading.
pub fn parse(value: &[u8]) -> Result<SensorJson, ClientError> {
    serde_json::from_slice(value).map_err(|e| ClientError::InvalidReading(e.to_string()))
}

/// A protobuf timestamp for a system time (times before 1970 clamp to the epoch).
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A reading with every field; `status` is e.g. "OK", "WARN" or "FAULT".
#[allow(clippy::too_many_arguments)]
pub fn reading(
    device_id: &str,
    event_time: SystemTime,
    temperature_c: f64,
    vibration_g: f64,
    status: &str,
    site: &str,
    line: &str,
) -> v1::SensorReading {
    v1::SensorReading {
        device_id: device_id.to_owned(),
        event_time: Some(timestamp(event_time)),
        temperature_c,
        vibration_g,
        status: status.to_owned(),
        site: site.to_owned(),
        line: line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_use_case_json() {
        let j = parse(
            br#"{"device_id": "MTR-00123", "ts": "2025-08-17T12:34:56.789Z", "temperature_c": 78.6,
 "vibration_g": 0.12, "status": "OK", "site": "fab1", "line": "L01"}"#,
        )
        .unwrap();
        assert_eq!(j.device_id, "MTR-00123");
        assert_eq!(j.temperature_c, 78.6);
        assert!(parse(b"{not json").is_err());
    }

    #[test]
    fn timestamps_keep_sub_second_precision() {
        let t = UNIX_EPOCH + Duration::from_millis(1_755_434_096_789);
        let ts = timestamp(t);
        assert_eq!((ts.seconds, ts.nanos), (1_755_434_096, 789_000_000));
    }
}
