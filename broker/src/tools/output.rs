//! The JSON-lines form of records that `runnel consume` prints and `runnel produce --json`
//! reads: bytes that are UTF-8 appear as strings, other bytes as base64 with an
//! `*_encoding: "base64"` marker, so every record round-trips exactly and pipes into jq.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use runnel_client::v1;
use serde::{Deserialize, Serialize};

/// How a byte field is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Base64,
}

/// One header as JSON (headers stay a list: order and duplicate keys are kept).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderJson {
    pub key: String,
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_encoding: Option<Encoding>,
}

/// One consumed record as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordJson<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_encoding: Option<Encoding>,
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_encoding: Option<Encoding>,
    pub headers: Vec<HeaderJson>,
}

/// Bytes as text if they are UTF-8, else base64 and its marker.
pub fn encode_bytes(b: Option<Vec<u8>>) -> (Option<String>, Option<Encoding>) {
    match b {
        None => (None, None),
        Some(b) => match String::from_utf8(b) {
            Ok(s) => (Some(s), None),
            Err(e) => (Some(STANDARD.encode(e.as_bytes())), Some(Encoding::Base64)),
        },
    }
}

/// Decode a JSON field written by [`encode_bytes`].
pub fn decode_bytes(text: &str, encoding: Option<Encoding>) -> Result<Vec<u8>, String> {
    match encoding {
        None => Ok(text.as_bytes().to_vec()),
        Some(Encoding::Base64) => STANDARD
            .decode(text)
            .map_err(|e| format!("invalid base64: {e}")),
    }
}

/// A consumed record as one JSON line (no trailing newline).
pub fn record_line(topic: &str, r: v1::ConsumedRecord) -> String {
    let (key, key_encoding) = encode_bytes(r.key);
    let (value, value_encoding) = encode_bytes(r.value);
    let headers = r
        .headers
        .into_iter()
        .map(|h| {
            let (value, value_encoding) = encode_bytes(h.value);
            HeaderJson {
                key: h.key,
                value,
                value_encoding,
            }
        })
        .collect();
    let json = RecordJson {
        topic,
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp_ms,
        key,
        key_encoding,
        value,
        value_encoding,
        headers,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_text_and_other_bytes_are_marked_base64() {
        let r = v1::ConsumedRecord {
            partition: 1,
            offset: 7,
            key: Some(b"dev-1".to_vec()),
            value: Some(vec![0xff, 0x00, 0x41]),
            headers: vec![
                v1::Header {
                    key: "a".into(),
                    value: None,
                },
                v1::Header {
                    key: "b".into(),
                    value: Some(vec![0xc3]),
                },
            ],
            timestamp_ms: 1000,
        };
        let line = record_line("t", r);
        assert_eq!(
            line,
            r#"{"topic":"t","partition":1,"offset":7,"timestamp":1000,"key":"dev-1","value":"/wBB","value_encoding":"base64","headers":[{"key":"a","value":null},{"key":"b","value":"ww==","value_encoding":"base64"}]}"#
        );
        assert_eq!(
            decode_bytes("/wBB", Some(Encoding::Base64)).unwrap(),
            vec![0xff, 0, 0x41]
        );
        assert!(decode_bytes("!!", Some(Encoding::Base64)).is_err());
    }
}
