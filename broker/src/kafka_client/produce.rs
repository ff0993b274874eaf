//! Produce, sans-io: one partition's records as uncompressed v2 batches (built by
//! [`crate::codec::builder`]) in a request, and the partition's outcome from the answer.

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::metadata::topic_name;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};

/// Splits `records` into batches of at most `max_records` records and about `max_bytes`
/// bytes each (a single larger record gets a batch of its own), and encodes them.
pub fn encode_batches(records: &[Record], max_records: usize, max_bytes: usize) -> Vec<Bytes> {
    split_batches(records, max_records, max_bytes, |_| false)
        .into_iter()
        .map(|r| encode_batch(&records[r], ProducerInfo::default()).freeze())
        .collect()
}

/// The index ranges [`encode_batches`] cuts `records` into; a batch also ends before every
/// record `i` for which `break_before(i)` holds.
pub(crate) fn split_batches(
    records: &[Record],
    max_records: usize,
    max_bytes: usize,
    break_before: impl Fn(usize) -> bool,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0usize;
    for (i, r) in records.iter().enumerate() {
        let s = record_bytes(r);
        let n = i.saturating_sub(start);
        if n > 0
            && (break_before(i) || n >= max_records.max(1) || size.saturating_add(s) > max_bytes)
        {
            out.push(start..i);
            start = i;
            size = 0;
        }
        size = size.saturating_add(s);
    }
    if start < records.len() {
        out.push(start..records.len());
    }
    out
}

/// An upper bound of one record's encoded size.
fn record_bytes(r: &Record) -> usize {
    let f = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    r.headers
        .iter()
        .map(|(k, v)| k.len().saturating_add(f(v)).saturating_add(10))
        .fold(0usize, usize::saturating_add)
        .saturating_add(f(&r.key))
        .saturating_add(f(&r.value))
        .saturating_add(30)
}

/// A Produce of one batch to one partition.
pub fn request(
    topic: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
    timeout_ms: i32,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

/// `(error code, base offset, error message)` of one partition in a Produce answer.
pub fn outcome(resp: &ProduceResponse, topic: &str, partition: i32) -> Option<(i16, i64, String)> {
    resp.responses
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .map(|p| {
            (
                p.error_code,
                p.base_offset,
                p.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::batch;

    #[test]
    fn batches_respect_record_and_byte_limits() {
        let rec = |n: usize| Record {
            key: None,
            value: Some(vec![0; n]),
            headers: vec![],
            timestamp: 5,
        };
        let recs: Vec<Record> = (0..10).map(|_| rec(10)).collect();
        let b = encode_batches(&recs, 4, usize::MAX);
        let counts: Vec<i32> = b
            .iter()
            .map(|x| batch::validate(x).unwrap().record_count)
            .collect();
        assert_eq!(counts, [4, 4, 2]);
        let big = vec![rec(100), rec(100), rec(1), rec(100)];
        let b = encode_batches(&big, 100, 200);
        let counts: Vec<i32> = b
            .iter()
            .map(|x| batch::validate(x).unwrap().record_count)
            .collect();
        assert_eq!(counts, [1, 2, 1]);
        assert!(encode_batches(&[], 4, 100).is_empty());
    }
}
