//! Fetch responses as a list of chunks: the record data is sent where it lies (segment file
//! slices go out with `sendfile(2)`, bytes read earlier as they are), never copied into one
//! frame buffer.
//!
//! The layout is Kafka's `FetchResponse` v4–v12 with response header v0 (v4–v11) or v1 (v12).
//! Only the shape Runnel's Fetch handler produces is encoded here; anything else (a version
//! outside 4–12, tagged fields, a diverging epoch, node endpoints) returns `None` and the caller
//! uses the generic encoder. Partition `i` (in response order) sends `records[i]` when there
//! is one, else its own `records` field. A property test checks that the chunks concatenate
//! to exactly the bytes the `kafka-protocol` crate encodes for the same response.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::FetchResponse;

use crate::log::{Batches, Piece};

/// Lowest and highest Fetch versions this encoder handles.
const VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;

/// The first version with flexible (compact, tagged) encoding.
const FLEXIBLE: i16 = 12;

/// The whole response frame (length prefix, header, body) for `version`, as chunks to be
/// written in order; `None` when the response needs something this encoder does not write.
pub fn encode(
    correlation_id: i32,
    version: i16,
    response: &FetchResponse,
    records: &[Batches],
) -> Option<Vec<Piece>> {
    if !VERSIONS.contains(&version) || !plain(response) {
        return None;
    }
    if version < 7 && response.session_id != 0 {
        return None;
    }
    let flexible = version >= FLEXIBLE;
    let mut out = Chunks::default();
    let mut records = records.iter();
    let head = &mut out.head;
    head.put_i32(0); // the frame length, set at the end
    head.put_i32(correlation_id);
    if flexible {
        put_uvarint(head, 0); // response header v1: no tagged fields
    }
    head.put_i32(response.throttle_time_ms);
    if version >= 7 {
        head.put_i16(response.error_code);
        head.put_i32(response.session_id);
    }
    put_len(head, flexible, Some(response.responses.len()))?;
    for topic in &response.responses {
        let name = topic.topic.as_bytes();
        let head = &mut out.head;
        if flexible {
            put_uvarint(head, u64::try_from(name.len()).ok()?.checked_add(1)?);
        } else {
            head.put_i16(i16::try_from(name.len()).ok()?);
        }
        head.put_slice(name);
        put_len(&mut out.head, flexible, Some(topic.partitions.len()))?;
        for p in &topic.partitions {
            partition(&mut out, version, p, records.next())?;
        }
        if flexible {
            put_uvarint(&mut out.head, 0);
        }
    }
    if flexible {
        put_uvarint(&mut out.head, 0);
    }
    out.finish()
}

/// True when no field this encoder leaves out is set.
fn plain(response: &FetchResponse) -> bool {
    response.unknown_tagged_fields.is_empty()
        && response.node_endpoints.is_empty()
        && response.responses.iter().all(plain_topic)
}

fn plain_topic(topic: &FetchableTopicResponse) -> bool {
    topic.unknown_tagged_fields.is_empty()
        && topic.partitions.iter().all(|p| {
            p.unknown_tagged_fields.is_empty()
                && p.diverging_epoch == Default::default()
                && p.current_leader == Default::default()
                && p.snapshot_id == Default::default()
                && p.aborted_transactions
                    .iter()
                    .flatten()
                    .all(|a| a.unknown_tagged_fields.is_empty())
        })
}

fn partition(
    out: &mut Chunks,
    version: i16,
    p: &PartitionData,
    batches: Option<&Batches>,
) -> Option<()> {
    let flexible = version >= FLEXIBLE;
    let head = &mut out.head;
    head.put_i32(p.partition_index);
    head.put_i16(p.error_code);
    head.put_i64(p.high_watermark);
    head.put_i64(p.last_stable_offset);
    if version >= 5 {
        head.put_i64(p.log_start_offset);
    }
    let aborted = p.aborted_transactions.as_ref();
    put_len(head, flexible, aborted.map(Vec::len))?;
    for a in aborted.into_iter().flatten() {
        head.put_i64(a.producer_id.0);
        head.put_i64(a.first_offset);
        if flexible {
            put_uvarint(head, 0);
        }
    }
    if version >= 11 {
        head.put_i32(p.preferred_read_replica.0);
    } else if p.preferred_read_replica.0 != -1 {
        return None;
    }
    match batches {
        Some(batches) => {
            put_len(head, flexible, Some(batches.len()))?;
            for piece in batches.pieces() {
                out.push_records(piece.clone());
            }
        }
        None => {
            put_len(head, flexible, p.records.as_ref().map(Bytes::len))?;
            if let Some(records) = &p.records {
                out.push_records(Piece::Bytes(records.clone()));
            }
        }
    }
    if flexible {
        put_uvarint(&mut out.head, 0);
    }
    Some(())
}

/// A nullable array or bytes length: compact (unsigned varint of length + 1, 0 for null) when
/// flexible, else an int32 (-1 for null). `None` if it does not fit.
fn put_len(buf: &mut BytesMut, flexible: bool, len: Option<usize>) -> Option<()> {
    if flexible {
        let n = match len {
            None => 0,
            Some(len) => u64::try_from(len).ok()?.checked_add(1)?,
        };
        put_uvarint(buf, n);
    } else {
        let n = match len {
            None => -1,
            Some(len) => i32::try_from(len).ok()?,
        };
        buf.put_i32(n);
    }
    Some(())
}

fn put_uvarint(buf: &mut BytesMut, mut n: u64) {
    while n >= 0x80 {
        buf.put_u8(u8::try_from(n & 0x7f).unwrap_or(0) | 0x80);
        n >>= 7;
    }
    buf.put_u8(u8::try_from(n).unwrap_or(0));
}

/// Fixed fields accumulate in `head`; record data is pushed as its own chunk after the head
/// written so far. The frame's first bytes stay mutable in `first` until the length is known.
#[derive(Default)]
struct Chunks {
    first: Option<BytesMut>,
    done: Vec<Piece>,
    head: BytesMut,
    len: usize,
}

impl Chunks {
    fn push_records(&mut self, records: Piece) {
        if records.is_empty() {
            return;
        }
        let head = self.head.split();
        self.len += head.len() + records.len();
        if self.first.is_none() {
            self.first = Some(head);
        } else {
            self.done.push(Piece::Bytes(head.freeze()));
        }
        self.done.push(records);
    }

    /// The chunks, with the frame length written into the first.
    fn finish(mut self) -> Option<Vec<Piece>> {
        let tail = self.head.split();
        self.len += tail.len();
        let mut first = match self.first.take() {
            Some(first) => {
                if !tail.is_empty() {
                    self.done.push(Piece::Bytes(tail.freeze()));
                }
                first
            }
            None => tail,
        };
        let size = i32::try_from(self.len.checked_sub(4)?).ok()?;
        first.get_mut(..4)?.copy_from_slice(&size.to_be_bytes());
        self.done.insert(0, Piece::Bytes(first.freeze()));
        Some(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::encode_response;
    use kafka_protocol::messages::fetch_response::AbortedTransaction;
    use kafka_protocol::messages::{ApiKey, BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn bytes_of(piece: Piece) -> Bytes {
        match piece {
            Piece::Bytes(b) => b,
            Piece::File(f) => f.read().unwrap(),
        }
    }

    fn generic(correlation_id: i32, version: i16, response: &FetchResponse) -> Vec<u8> {
        let mut out = BytesMut::new();
        let header = ApiKey::Fetch.response_header_version(version);
        encode_response(&mut out, correlation_id, header, response, version).unwrap();
        out.to_vec()
    }

    fn partition_strategy() -> impl Strategy<Value = PartitionData> {
        (
            any::<i32>(),
            any::<i16>(),
            any::<(i64, i64, i64)>(),
            proptest::option::of(proptest::collection::vec(any::<(i64, i64)>(), 0..3)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            any::<bool>(),
        )
            .prop_map(
                |(index, error, (hw, lso, start), aborted, records, replica)| {
                    PartitionData::default()
                        .with_partition_index(index)
                        .with_error_code(error)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso)
                        .with_log_start_offset(start)
                        .with_aborted_transactions(aborted.map(|list| {
                            list.into_iter()
                                .map(|(pid, first)| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(pid))
                                        .with_first_offset(first)
                                })
                                .collect()
                        }))
                        .with_preferred_read_replica(BrokerId(if replica { 2 } else { -1 }))
                        .with_records(records.map(Bytes::from))
                },
            )
    }

    fn response_strategy() -> impl Strategy<Value = FetchResponse> {
        let topic = (
            "[a-z._-]{0,40}",
            proptest::collection::vec(partition_strategy(), 0..4),
        )
            .prop_map(|(name, partitions)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            });
        (
            any::<i32>(),
            any::<i16>(),
            any::<i32>(),
            proptest::collection::vec(topic, 0..4),
        )
            .prop_map(|(throttle, error, session, topics)| {
                FetchResponse::default()
                    .with_throttle_time_ms(throttle)
                    .with_error_code(error)
                    .with_session_id(session)
                    .with_responses(topics)
            })
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_generic_encoding(
            correlation_id in any::<i32>(),
            version in 4i16..=12,
            mut response in response_strategy(),
        ) {
            if version < 7 {
                response.session_id = 0;
            }
            if version < 11 {
                for p in response.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    p.preferred_read_replica = BrokerId(-1);
                }
            }
            let chunks = encode(correlation_id, version, &response, &[]).expect("plain response");
            let chunks: Vec<Bytes> = chunks.into_iter().map(bytes_of).collect();
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(joined, generic(correlation_id, version, &response));
            // Record data travels as its own chunks, uncopied.
            let records = response
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.records.as_ref())
                .filter(|r| !r.is_empty());
            for r in records {
                prop_assert!(chunks.iter().any(|c| c.as_ptr() == r.as_ptr() && c.len() == r.len()));
            }
        }

        /// Batches given beside the response (in pieces, some in a file) replace each
        /// partition's `records`, and the frame is the one with those records inline.
        #[test]
        fn side_batches_are_sent_in_place_of_records(
            correlation_id in any::<i32>(),
            version in 4i16..=12,
            mut response in response_strategy(),
            cuts in proptest::collection::vec(any::<(bool, u16)>(), 0..16),
        ) {
            if version < 7 {
                response.session_id = 0;
            }
            if version < 11 {
                for p in response.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                    p.preferred_read_replica = BrokerId(-1);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let mut cuts = cuts.into_iter().cycle();
            let mut side = Vec::new();
            let mut empty = response.clone();
            for (i, p) in empty.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()).enumerate() {
                let bytes = p.records.take().unwrap_or_default();
                p.records = Some(Bytes::new());
                // Split the records at a cut; the second part goes through a file.
                let (to_file, at) = cuts.next().unwrap_or((false, 0));
                let at = usize::from(at) % (bytes.len() + 1);
                let mut batches = Batches::default();
                batches.push(Piece::Bytes(bytes.slice(..at)));
                let rest = bytes.slice(at..);
                if to_file {
                    let path = dir.path().join(format!("{i}"));
                    std::fs::write(&path, [&b"pad"[..], &rest].concat()).unwrap();
                    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
                    batches.push(Piece::File(crate::log::FileSlice { file, position: 3, len: rest.len() }));
                } else {
                    batches.push(Piece::Bytes(rest));
                }
                side.push(batches);
                // Null records cannot be expressed beside the response: the side always sends bytes.
                if let Some(orig) = response.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()).nth(i) {
                    orig.records.get_or_insert_with(Bytes::new);
                }
            }
            let chunks = encode(correlation_id, version, &empty, &side).expect("plain response");
            let joined: Vec<u8> = chunks.into_iter().flat_map(|c| bytes_of(c).to_vec()).collect();
            prop_assert_eq!(joined, generic(correlation_id, version, &response));
        }
    }

    #[test]
    fn what_it_does_not_write_goes_to_the_generic_encoder() {
        let mut response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![PartitionData::default()])]);
        assert!(encode(1, 12, &response, &[]).is_some());
        assert!(encode(1, 13, &response, &[]).is_none(), "topic ids");
        assert!(encode(1, 3, &response, &[]).is_none());
        response.responses[0].partitions[0].diverging_epoch.epoch = 3;
        assert!(encode(1, 12, &response, &[]).is_none());
        response.responses[0].partitions[0].diverging_epoch.epoch = -1;
        response.session_id = 5;
        assert!(
            encode(1, 6, &response, &[]).is_none(),
            "no session id before v7"
        );
        assert!(encode(1, 7, &response, &[]).is_some());
    }
}
