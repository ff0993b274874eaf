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
    out.put_i16(0); // attributes: no compression, create time
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
    let mut at = HEADER_LEN;
    let buf = &batch[..h.total_len()];
    let mut out = Vec::new();
    for _ in 0..h.record_count {
        let len = usize::try_from(super::varint::read(buf, &mut at)?).ok()?;
        let end = at + len;
        at += 1;
        let ts_delta = super::varint::read(buf, &mut at)?;
        super::varint::read(buf, &mut at)?;
        let key = super::varint::read_opt_bytes(buf, &mut at)?;
        let value = super::varint::read_opt_bytes(buf, &mut at)?;
        let n = super::varint::read(buf, &mut at)?;
        let mut headers = Vec::new();
        for _ in 0..n {
            let k = super::varint::read_opt_bytes(buf, &mut at)??;
            let v = super::varint::read_opt_bytes(buf, &mut at)?;
            headers.push((String::from_utf8(k).ok()?, v));
        }
        if at != end {
            return None;
        }
        out.push(Record {
            key,
            value,
            headers,
            timestamp: h.base_timestamp + ts_delta,
        });
    }
    Some(out)
}
