//! Fetch and ListOffsets, sans-io: request builders, response parsers, and the decoding of
//! fetched v2 record batches into records (a partial batch at the end of a fetch is "need
//! more bytes", not an error; control batches are skipped; every batch's CRC-32C is checked
//! before its records are decoded).

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::records::RecordBatchDecoder;

use super::metadata::topic_name;
use crate::codec::batch::{self, BatchError};

/// ListOffsets timestamp for the log start offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the high watermark.
pub const LATEST: i64 = -1;

/// One fetched record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Offset in its partition.
    pub offset: i64,
    /// Key; `None` is a null key. A slice of the fetched (or decompressed) batch, not a copy.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone). A slice, like the key.
    pub value: Option<Bytes>,
    /// Headers in order; a null header value reads as empty.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp in ms (create or log-append time, as the topic says).
    pub timestamp: i64,
}

/// One partition's part of a Fetch answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedPartition {
    /// The partition's Kafka error code (0: none).
    pub error_code: i16,
    /// Offset after the last committed record.
    pub high_watermark: i64,
    /// -1 when the broker does not say (Fetch < v5).
    pub log_start_offset: i64,
    /// Record batches as the broker sent them (the last one may be partial).
    pub records: Bytes,
}

/// A Fetch for partitions (topic, partition, offset) of one leader, read_uncommitted.
pub fn request(
    parts: &[(&str, i32, i64)],
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (t, p, offset) in parts {
        let part = FetchPartition::default()
            .with_partition(*p)
            .with_fetch_offset(*offset)
            .with_partition_max_bytes(max_bytes);
        match topics.iter_mut().find(|ft| ft.topic.0.as_str() == *t) {
            Some(ft) => ft.partitions.push(part),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(t))
                    .with_partitions(vec![part]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// The answer for one partition, `None` if the response does not mention it.
pub fn partition(resp: &FetchResponse, topic: &str, partition: i32) -> Option<FetchedPartition> {
    resp.responses
        .iter()
        .filter(|t| t.topic.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| FetchedPartition {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records: p.records.clone().unwrap_or_default(),
        })
}

/// Why fetched bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A batch header or CRC-32C is wrong.
    #[error("record batch at offset {offset}: {source}")]
    Batch { offset: i64, source: BatchError },
    /// The records inside a valid batch do not decode.
    #[error("record batch at offset {offset}: {message}")]
    Records { offset: i64, message: String },
}

/// Decodes the whole batches in `bytes` into records with offsets in `[from, until)`, at most
/// `max`. A partial batch at the end is ignored (the broker cut it at `max_bytes`).
pub fn decode_records(
    bytes: Bytes,
    from: i64,
    until: i64,
    max: usize,
) -> Result<Vec<FetchedRecord>, DecodeError> {
    decode_fetched(bytes, from, until, max).map(|d| d.records)
}

/// Records decoded from a fetch answer, and where the next fetch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The records, in offset order.
    pub records: Vec<FetchedRecord>,
    /// The offset after the last record taken or, when `max` did not cut the answer short,
    /// after the last whole batch below `until`: past control batches (transaction markers, a
    /// replicated partition's Raft no-ops), which hold no records for the reader, so that an
    /// answer holding only those still moves the reader on. `from` if nothing whole came back.
    pub next_offset: i64,
}

/// [`decode_records`], also saying where to fetch next.
pub fn decode_fetched(
    mut bytes: Bytes,
    from: i64,
    until: i64,
    max: usize,
) -> Result<Decoded, DecodeError> {
    let mut out = Vec::new();
    let mut next = from;
    while out.len() < max && bytes.len() >= batch::LOG_OVERHEAD {
        let header = match batch::parse_header(&bytes) {
            Ok(h) => h,
            Err(BatchError::Truncated { .. }) => break,
            Err(source) => {
                return Err(DecodeError::Batch {
                    offset: be_offset(&bytes),
                    source,
                })
            }
        };
        let offset = header.base_offset;
        if offset >= until {
            break;
        }
        let mut one = bytes.split_to(header.total_len());
        let last = offset.saturating_add(i64::from(header.last_offset_delta));
        if last < from {
            continue;
        }
        batch::validate(&one).map_err(|source| DecodeError::Batch { offset, source })?;
        let batch_end = last.saturating_add(1).min(until);
        if header.is_control() {
            next = next.max(batch_end);
            continue;
        }
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| DecodeError::Records {
            offset,
            message: e.to_string(),
        })?;
        for r in set.records {
            if r.control || r.offset < from || r.offset >= until {
                continue;
            }
            if out.len() >= max {
                break;
            }
            next = r.offset.saturating_add(1);
            out.push(FetchedRecord {
                offset: r.offset,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(Vec::from).unwrap_or_default()))
                    .collect(),
                timestamp: r.timestamp,
            });
        }
        if out.len() < max {
            next = next.max(batch_end);
        }
    }
    Ok(Decoded {
        records: out,
        next_offset: next,
    })
}

fn be_offset(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(..8) {
        a.copy_from_slice(s);
    }
    i64::from_be_bytes(a)
}

/// ListOffsets for one partition at `timestamp` ([`EARLIEST`], [`LATEST`] or a time).
pub fn list_offsets_request(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)])])
}

/// `(error code, offset)` of one partition in a ListOffsets answer.
pub fn list_offsets_outcome(
    resp: &ListOffsetsResponse,
    topic: &str,
    partition: i32,
) -> Option<(i16, i64)> {
    resp.topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| (p.error_code, p.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};
    use proptest::prelude::*;

    fn batch_at(base: i64, n: usize) -> Vec<u8> {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                key: Some(vec![u8::try_from(i % 256).unwrap()]),
                value: Some(b"v".to_vec()),
                headers: vec![("h".into(), None)],
                timestamp: 1_000 + i64::try_from(i).unwrap(),
            })
            .collect();
        let mut b = encode_batch(&recs, ProducerInfo::default());
        batch::set_base_offset(&mut b, base);
        b.to_vec()
    }

    #[test]
    fn partial_tail_is_ignored_and_ranges_are_honoured() {
        let mut all = batch_at(10, 3);
        all.extend(batch_at(13, 2));
        let whole = Bytes::from(all.clone());
        let got = decode_records(whole.clone(), 11, i64::MAX, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [11, 12, 13, 14]
        );
        assert_eq!(got[0].headers, vec![("h".to_owned(), Vec::new())]);
        let got = decode_records(whole, 10, 14, 2).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [10, 11]);
        let cut = Bytes::from(all[..all.len() - 5].to_vec());
        let got = decode_records(cut, 0, i64::MAX, usize::MAX).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_flipped_bit_is_an_error() {
        let mut b = batch_at(0, 2);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(decode_records(Bytes::from(b), 0, i64::MAX, usize::MAX).is_err());
    }

    #[test]
    fn control_batches_are_skipped_but_move_the_position() {
        use crate::codec::builder::{control_type, encode_control_batch, leader_change_message};
        let noop_at = |base: i64| {
            let mut b =
                encode_control_batch(control_type::LEADER_CHANGE, &leader_change_message(-1), -1);
            batch::set_base_offset(&mut b, base);
            b.to_vec()
        };
        // records 0..2 | no-op 2 | record 3 | no-op 4 (the last batch)
        let mut all = batch_at(0, 2);
        all.extend(noop_at(2));
        all.extend(batch_at(3, 1));
        all.extend(noop_at(4));
        let all = Bytes::from(all);
        let offsets = |d: &Decoded| d.records.iter().map(|r| r.offset).collect::<Vec<_>>();
        let d = decode_fetched(all.clone(), 0, 5, usize::MAX).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![0, 1, 3], 5));
        let d = decode_fetched(all.clone(), 2, 5, usize::MAX).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![3], 5));
        let d = decode_fetched(all.clone(), 0, 5, 2).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![0, 1], 2));
        // Only the trailing no-op: no record, but the reader moves past it.
        let tail = all.slice(all.len() - noop_at(4).len()..);
        let d = decode_fetched(tail.clone(), 4, 5, usize::MAX).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![], 5));
        // Not past `until`, and not past what came back whole.
        let d = decode_fetched(all.clone(), 0, 4, usize::MAX).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![0, 1, 3], 4));
        let d = decode_fetched(all.slice(..all.len() - 3), 4, 5, usize::MAX).unwrap();
        assert_eq!((offsets(&d), d.next_offset), (vec![], 4));
        // A damaged control batch is an error, not skipped.
        let mut bad = tail.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_fetched(Bytes::from(bad), 4, 5, usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_records(Bytes::from(bytes.clone()), 0, i64::MAX, 1000);
            let _ = decode_fetched(Bytes::from(bytes), -5, 1 << 40, 3);
        }
    }
}
