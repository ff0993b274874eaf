//! Records at the processor's edges: what it reads from a partition and what it writes.
//!
//! These are the processor's own types, independent of the Kafka wire format; the embedding
//! (broker log or Kafka client) converts at its edge.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::time::Millis;

/// Header: pipeline name, on every output record.
pub const HEADER_PIPELINE: &str = "runnel.pipeline";
/// Header: decimal output sequence number within the record's output stream.
pub const HEADER_SEQ: &str = "runnel.seq";
/// Header: why a record went to the dead-letter topic.
pub const HEADER_DLQ_REASON: &str = "runnel.dlq.reason";
/// Header: why a reading went to the late-data topic.
pub const HEADER_LATE_REASON: &str = "runnel.late.reason";
/// Header: source topic of a DLQ or late record.
pub const HEADER_SOURCE_TOPIC: &str = "runnel.source.topic";
/// Header: source partition of a DLQ or late record.
pub const HEADER_SOURCE_PARTITION: &str = "runnel.source.partition";
/// Header: source offset of a DLQ or late record.
pub const HEADER_SOURCE_OFFSET: &str = "runnel.source.offset";

/// One record read from a source partition.
///
/// Nothing in it is copied per record: key and value are slices of the buffer the read
/// returned (a `Bytes` keeps that whole buffer alive, so a reader keeps records only as long
/// as it needs them), and the topic name is shared by all the records of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Bytes>,
    /// Record value (`None` = Kafka null value, a tombstone).
    pub value: Option<Bytes>,
    /// Record timestamp (producer or log-append time); informational only.
    pub timestamp: Millis,
}

/// An output stream: one partition of one output topic. Sequence numbers are per stream,
/// because only within one partition does the log keep write order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One record the processor wants written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    /// Where it goes.
    pub stream: StreamId,
    /// Sequence number within `stream`, 0-based, gap-free (also in header `runnel.seq`).
    pub seq: u64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Vec<u8>,
    /// Headers, in order; names are unique.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp: the event time the record is about.
    pub timestamp: Millis,
}

impl OutputRecord {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The value parsed as JSON (all processor outputs except DLQ/late copies are JSON).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.value).ok()
    }
}

/// Reads `(pipeline, seq)` back from an output record's headers, as recovery does with the
/// tail of an output topic. `None` if the record was not written by a pipeline.
pub fn pipeline_seq(headers: &[(String, Vec<u8>)]) -> Option<(String, u64)> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let pipeline = String::from_utf8(get(HEADER_PIPELINE)?.clone()).ok()?;
    let seq = std::str::from_utf8(get(HEADER_SEQ)?).ok()?.parse().ok()?;
    Some((pipeline, seq))
}

/// Source coordinates of an input, as headers for DLQ and late records.
pub(crate) fn source_headers(input: &InputRecord) -> Vec<(String, Vec<u8>)> {
    vec![
        (HEADER_SOURCE_TOPIC.into(), input.topic.as_bytes().to_vec()),
        (
            HEADER_SOURCE_PARTITION.into(),
            input.partition.to_string().into_bytes(),
        ),
        (
            HEADER_SOURCE_OFFSET.into(),
            input.offset.to_string().into_bytes(),
        ),
    ]
}

/// A deterministic JSON object (keys sorted) from pairs.
pub(crate) fn json_object(pairs: BTreeMap<String, serde_json::Value>) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = pairs.into_iter().collect();
    serde_json::to_vec(&serde_json::Value::Object(map)).unwrap_or_default()
}
