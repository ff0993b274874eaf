//! Builds uncompressed Kafka v2 record batches: used by tests, the fuzzer seeds, and internal
//! producers (e.g. the offsets topic), never to re-encode client data.

use bytes::{BufMut, BytesMut};

use super::batch::{HEADER_LEN, LOG_OVERHEAD};

/// One record to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Absolute timestamp in ms.
    pub timestamp: i64,
}

/// Producer identity stamped on a batch; `producer_id = -1` means not idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for ProducerInfo {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = u64::from_ne_bytes(((v << 1) ^ (v >> 63)).to_ne_bytes());
    while z >= 0x80 {
        buf.put_u8(u8::try_from(z & 0x7f).unwrap_or(0) | 0x80);
        z >>= 7;
    }
    buf.put_u8(u8::try_from(z).unwrap_or(0));
}

fn put_len(buf: &mut BytesMut, len: usize) {
    put_varint(buf, i64::try_from(len).expect("field length fits i64"));
}

fn put_opt_bytes(buf: &mut BytesMut, b: &Option<Vec<u8>>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_len(buf, b.len());
            buf.put_slice(b);
        }
    }
}

/// Encode `records` (must be non-empty) as one uncompressed v2 batch with base offset 0.
pub fn encode_batch(records: &[Record], producer: ProducerInfo) -> BytesMut {
    assert!(!records.is_empty(), "a batch holds at least one record");
    encode(records, producer, 0)
}

/// The batch attribute bits: bit 5 marks a control batch (Kafka protocol guide, "Record
/// Batch").
const CONTROL_ATTRIBUTE: i16 = 0x20;

/// Kafka's control record types (Apache Kafka `ControlRecordType`): the `type` half of a control
/// record's key. Clients act on [`ABORT`](control_type::ABORT) and
/// [`COMMIT`](control_type::COMMIT) only and skip every other type.
pub mod control_type {
    /// Transaction abort marker.
    pub const ABORT: i16 = 0;
    /// Transaction commit marker.
    pub const COMMIT: i16 = 1;
    /// KRaft: written by every new leader at the start of its epoch (KIP-595).
    pub const LEADER_CHANGE: i16 = 2;
}

/// Encode a control batch: attributes with only the control bit set (uncompressed, create
/// time, not transactional), producer id/epoch/sequence -1, base offset 0, leader epoch -1,
/// and one control record whose key is `version 0, control_type` (4 bytes, the only key size
/// librdkafka and kafka-python accept) and whose value is `value`. Every Kafka consumer skips
/// such a batch but moves its position past it.
pub fn encode_control_batch(control_type: i16, value: &[u8], timestamp: i64) -> BytesMut {
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&control_type.to_be_bytes());
    let record = Record {
        key: Some(key.to_vec()),
        value: Some(value.to_vec()),
        headers: Vec::new(),
        timestamp,
    };
    encode(
        std::slice::from_ref(&record),
        ProducerInfo::default(),
        CONTROL_ATTRIBUTE,
    )
}

/// A KRaft `LeaderChangeMessage` at version 0 (the value Kafka stores in a
/// [`control_type::LEADER_CHANGE`] record): `Version`, `LeaderId`, and empty `Voters` and
/// `GrantingVoters` (compact arrays, flexible version, no tagged fields). Tools that decode
/// LEADER_CHANGE values (Kafka's `kafka-dump-log`) can then read it.
pub fn leader_change_message(leader_id: i32) -> [u8; 9] {
    // Bytes 0..2: Version 0. Bytes 6 and 7: the two voter lists, compact arrays of length 0
    // (written as length + 1). Byte 8: no tagged fields.
    let mut out = [0, 0, 0, 0, 0, 0, 1, 1, 0];
    out[2..6].copy_from_slice(&leader_id.to_be_bytes());
    out
}

/// The control type of the control batch at the start of `batch` (the `type` in its first
/// record's key), or `None` if it is not a whole, valid, uncompressed control batch with a
/// version-0 key of 4 bytes.
pub fn control_record_type(batch: &[u8]) -> Option<i16> {
    let h = super::batch::validate(batch).ok()?;
    if !h.is_control() || h.compression().ok()? != super::batch::Compression::None {
        return None;
    }
    let buf = batch.get(..h.total_len())?;
    let mut at = HEADER_LEN;
    super::varint::read(buf, &mut at)?; // record length
    at = at.checked_add(1)?; // record attributes
    super::varint::read(buf, &mut at)?; // timestamp delta
    super::varint::read(buf, &mut at)?; // offset delta
    let key = super::varint::read_opt_bytes(buf, &mut at)??;
    match key.as_slice() {
        [0, 0, hi, lo] => Some(i16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

fn encode(records: &[Record], producer: ProducerInfo, attributes: i16) -> BytesMut {
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        put_varint(&mut rec, r.timestamp - base_ts);
        put_len(&mut rec, i);
        put_opt_bytes(&mut rec, &r.key);
        put_opt_bytes(&mut rec, &r.value);
        put_len(&mut rec, r.headers.len());
        for (k, v) in &r.headers {
            put_len(&mut rec, k.len());
            rec.put_slice(k.as_bytes());
            put_opt_bytes(&mut rec, v);
        }
        put_len(&mut body, rec.len());
        body.extend_from_slice(&rec);
    }
    let count = i32::try_from(records.len()).expect("record count fits i32");
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    out.put_i64(0);
    let batch_len = i32::try_from(HEADER_LEN - LOG_OVERHEAD + body.len()).expect("batch fits i32");
    out.put_i32(batch_len);
    out.put_i32(-1); // partition leader epoch
    out.put_i8(2);
    out.put_u32(0); // crc, patched below
    out.put_i16(attributes); // no compression, create time
    out.put_i32(count - 1);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(producer.producer_id);
    out.put_i16(producer.producer_epoch);
    out.put_i32(producer.base_sequence);
    out.put_i32(count);
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decode the records of an uncompressed batch back into [`Record`]s (tests and tools).
pub fn decode_records(batch: &[u8]) -> Option<Vec<Record>> {
    let h = super::batch::validate(batch).ok()?;
    let mut out = Vec::new();
    for r in super::batch::records(&batch[HEADER_LEN..h.total_len()], h.record_count) {
        let r = r.ok()?;
        let headers = r
            .header_fields()
            .map(|(k, v)| Some((String::from_utf8(k.to_vec()).ok()?, v.map(<[u8]>::to_vec))))
            .collect::<Option<Vec<_>>>()?;
        out.push(Record {
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers,
            timestamp: h.base_timestamp + r.timestamp_delta,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::batch;

    #[test]
    fn control_batches_validate_and_carry_their_type() {
        let value = leader_change_message(-1);
        let mut b = encode_control_batch(control_type::LEADER_CHANGE, &value, -1);
        let h = batch::validate(&b).expect("a control batch passes the CRC-32C and framing checks");
        assert!(h.is_control());
        assert!(!h.is_transactional());
        assert_eq!(h.compression(), Ok(batch::Compression::None));
        assert_eq!((h.record_count, h.last_offset_delta), (1, 0));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!((h.base_timestamp, h.max_timestamp), (-1, -1));
        assert_eq!(h.total_len(), b.len());
        assert_eq!(control_record_type(&b), Some(control_type::LEADER_CHANGE));
        // The broker's rewrites keep it valid, as for any stored batch.
        batch::set_base_offset(&mut b, 41);
        batch::set_leader_epoch(&mut b, 7);
        assert_eq!(control_record_type(&b), Some(control_type::LEADER_CHANGE));
        // Produce never accepts one from a client.
        assert_eq!(
            batch::validate_produce(&b, 1 << 20),
            Err(batch::BatchError::ControlBatch)
        );
        // A data batch has no control type; a damaged one neither.
        let data = encode_batch(&[Record::default()], ProducerInfo::default());
        assert_eq!(control_record_type(&data), None);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(control_record_type(&b), None);
        assert_eq!(control_record_type(&[]), None);
    }

    #[test]
    fn the_control_record_decodes_as_kafka_reads_it() {
        use kafka_protocol::protocol::Decodable;
        use kafka_protocol::records::RecordBatchDecoder;
        let value = leader_change_message(3);
        let mut b =
            encode_control_batch(control_type::LEADER_CHANGE, &value, 1_700_000_000_000).freeze();
        let set = RecordBatchDecoder::decode(&mut b).expect("decodes");
        assert_eq!(set.records.len(), 1);
        let r = &set.records[0];
        assert!(r.control);
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 2][..]));
        assert_eq!(r.timestamp, 1_700_000_000_000);
        let mut v = r.value.clone().expect("a value");
        let msg =
            kafka_protocol::messages::LeaderChangeMessage::decode(&mut v, 0).expect("v0 message");
        assert_eq!(msg.leader_id.0, 3);
        assert!(msg.voters.is_empty() && msg.granting_voters.is_empty());
        assert!(v.is_empty(), "nothing left over");
    }
}
