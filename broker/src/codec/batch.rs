//! Raw Kafka v2 record-batch handling: header parsing, validation and offset rewriting (sans-io).
//!
//! Batches are stored and served byte-for-byte as received. The broker only ever rewrites the
//! two header fields the CRC does not cover: `baseOffset` and `partitionLeaderEpoch`.
//!
//! Layout (Kafka protocol guide, "Record Batch"):
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//!  attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!  producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...`
//! The CRC-32C covers `attributes` to the end of the batch.

/// Size of the fixed v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `partitionLeaderEpoch`: `baseOffset` and `batchLength`. `batchLength` counts
/// everything after itself.
pub const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// Compression codecs from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A parsed, validated v2 batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Whole size of the batch on the wire, header included.
    pub fn total_len(&self) -> usize {
        // batch_length was checked to be >= HEADER_LEN - LOG_OVERHEAD when parsed.
        usize::try_from(self.batch_length).unwrap_or(0) + LOG_OVERHEAD
    }
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    /// Offset the next batch would start at.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> Result<Compression, BatchError> {
        match self.attributes & 0x07 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Why bytes are not a valid v2 batch. Each maps to a Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is below the v2 header size")]
    BadLength(i32),
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("crc mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    CrcMismatch { expected: u32, computed: u32 },
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(i16),
    #[error("record count {count} disagrees with last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("empty record batch")]
    Empty,
    #[error("malformed record {index}: {reason}")]
    BadRecord { index: i32, reason: &'static str },
    #[error("no record batches in request")]
    NoBatches,
    #[error("batch of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("control batches cannot be produced")]
    ControlBatch,
    #[error("compressed records: {0}")]
    Compressed(#[from] super::compression::DecompressError),
}

impl BatchError {
    /// The Kafka error code a produce request gets for this batch.
    pub fn kafka_code(&self) -> i16 {
        match self {
            BatchError::CrcMismatch { .. }
            | BatchError::Truncated { .. }
            | BatchError::BadLength(_) => 2, // CORRUPT_MESSAGE
            BatchError::UnsupportedMagic(m) if *m < 2 => 43, // UNSUPPORTED_FOR_MESSAGE_FORMAT
            BatchError::UnsupportedMagic(_) => 2,
            BatchError::UnsupportedCompression(_) => 76, // UNSUPPORTED_COMPRESSION_TYPE
            BatchError::TooLarge { .. } => 10,           // MESSAGE_TOO_LARGE
            BatchError::Compressed(DecompressError::TooLarge { .. }) => 10,
            BatchError::Compressed(DecompressError::Corrupt { .. }) => 2, // CORRUPT_MESSAGE
            BatchError::CountMismatch { .. }
            | BatchError::Empty
            | BatchError::BadRecord { .. }
            | BatchError::NoBatches
            | BatchError::ControlBatch => 87, // INVALID_RECORD
        }
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Parse the fixed header at the start of `buf` without checking the CRC or the records.
/// Checks only that the header and the whole batch it announces are present.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < HEADER_LEN {
        return Err(BatchError::Truncated {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let batch_length = be_i32(buf, 8);
    let min = i32::try_from(HEADER_LEN - LOG_OVERHEAD).unwrap_or(i32::MAX);
    if batch_length < min {
        return Err(BatchError::BadLength(batch_length));
    }
    let magic = i8::from_be_bytes([buf[MAGIC_AT]]);
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic(magic));
    }
    let header = BatchHeader {
        base_offset: be_i64(buf, 0),
        batch_length,
        partition_leader_epoch: be_i32(buf, 12),
        magic,
        crc: be_u32(buf, CRC_AT),
        attributes: be_i16(buf, ATTRIBUTES_AT),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        record_count: be_i32(buf, 57),
    };
    let total = header.total_len();
    if buf.len() < total {
        return Err(BatchError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(header)
}

/// Parse and fully validate the batch at the start of `buf`: header, CRC-32C, record count, and
/// (for uncompressed batches) every record's framing. Returns the header; the batch occupies
/// `header.total_len()` bytes.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = check_integrity(buf)?;
    if header.compression()? == Compression::None {
        check_records(&buf[HEADER_LEN..header.total_len()], header.record_count)?;
    }
    Ok(header)
}

/// The checks that make the batch at the start of `buf` a whole, intact batch: header, sizes,
/// CRC-32C, a known compression type, and a record count matching the last offset delta. The
/// records inside are not walked ([`validate`] does that).
pub fn check_integrity(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let total = header.total_len();
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_AT..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            computed,
        });
    }
    header.compression()?;
    if header.record_count <= 0 {
        return Err(BatchError::Empty);
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::CountMismatch {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Whole v2 batches known to be intact — what [`check_integrity`] checks: header, sizes,
/// CRC-32C, a known compression type, a record count matching the last offset delta — so that
/// the log can store them without computing the CRC again. Each batch's CRC is computed once,
/// where the bytes enter the broker: [`IntactBatches::check`] for bytes from a peer or a file,
/// [`IntactBatches::checked_by_caller`] for bytes the caller has just checked (Produce's
/// [`validate_produce`]) or built itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntactBatches(bytes::Bytes);

impl IntactBatches {
    /// Checks every batch in `buf` with [`check_integrity`]; at least one batch.
    pub fn check(buf: bytes::Bytes) -> Result<Self, BatchError> {
        check_all(&buf)?;
        Ok(Self(buf))
    }

    /// Bytes the caller vouches for: every batch in them passed [`check_integrity`] (or
    /// [`validate`]) already, or the broker built them. Debug builds check again.
    pub fn checked_by_caller(buf: bytes::Bytes) -> Self {
        debug_assert!(
            check_all(&buf).is_ok(),
            "bytes vouched for as intact batches are not: {:?}",
            check_all(&buf)
        );
        Self(buf)
    }

    /// The batches.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.0
    }

    /// The batches, as bytes.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0
    }
}

/// [`check_integrity`] on every batch of `buf`, which must hold at least one and nothing else.
fn check_all(buf: &[u8]) -> Result<(), BatchError> {
    if buf.is_empty() {
        return Err(BatchError::NoBatches);
    }
    let mut at = 0usize;
    while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
        at = at.saturating_add(check_integrity(rest)?.total_len());
    }
    Ok(())
}

/// How many times its own size a produced batch may inflate to when decompressed for checking.
pub const MAX_INFLATION: usize = 64;

/// Validate a produce request's `records` field: one or more whole batches, each valid, none
/// larger than `max_batch_bytes`, none a control batch. Returns their headers in order.
///
/// A compressed batch is decompressed (to at most [`MAX_INFLATION`] × `max_batch_bytes`) and its
/// records are checked like an uncompressed batch's: count, framing and offset deltas, as
/// Kafka's log validator does. The stored bytes stay the compressed batch as received.
pub fn validate_produce(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::NoBatches);
    }
    let mut headers = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let header = parse_header(rest)?;
        if header.total_len() > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size: header.total_len(),
                max: max_batch_bytes,
            });
        }
        let header = validate(rest)?;
        if header.is_control() {
            return Err(BatchError::ControlBatch);
        }
        let compression = header.compression()?;
        if compression != Compression::None {
            let limit = max_batch_bytes.saturating_mul(MAX_INFLATION);
            let records = decompress(compression, &rest[HEADER_LEN..header.total_len()], limit)?;
            check_records(&records, header.record_count)?;
        }
        at += header.total_len();
        headers.push(header);
    }
    Ok(headers)
}

/// Walk the headers of a buffer of whole batches (as stored in a log), stopping with an error at
/// the first one that does not parse or validate. Used by recovery and readers.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = Result<BatchHeader, BatchError>> + '_ {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= buf.len() {
            return None;
        }
        match parse_header(&buf[at..]) {
            Ok(h) => {
                at += h.total_len();
                Some(Ok(h))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// Overwrite the `baseOffset` field of the batch starting at `buf[0]`.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrite the `partitionLeaderEpoch` field of the batch starting at `buf[0]`.
pub fn set_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[12..16].copy_from_slice(&epoch.to_be_bytes());
}

use super::compression::{decompress, DecompressError};
use super::varint::{read as varint, read_opt_slice, skip_bytes};

/// One record of an uncompressed records section, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its offset less the batch's base offset (equal to its index: checked).
    pub offset_delta: i32,
    /// Its timestamp less the batch's base timestamp.
    pub timestamp_delta: i64,
    /// `None`: a null key.
    pub key: Option<&'a [u8]>,
    /// `None`: a null value.
    pub value: Option<&'a [u8]>,
    /// Its headers as stored: the count, then each key and value.
    pub headers: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Its headers in order: (key, value; `None` a null value).
    pub fn header_fields(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let buf = self.headers;
        let mut at = 0;
        // Checked by the walk that made this record; a short read just ends the iterator.
        let count = varint(buf, &mut at).unwrap_or(0);
        (0..count).map_while(move |_| {
            let key = read_opt_slice(buf, &mut at)??;
            let value = read_opt_slice(buf, &mut at)?;
            Some((key, value))
        })
    }
}

/// The `count` records of an uncompressed records section in order, each one's framing
/// checked (length, fields within it and filling it, offset delta = index); the first
/// malformed one ends the walk with its error. [`Records::rest`] then says what follows.
pub fn records(records: &[u8], count: i32) -> Records<'_> {
    Records {
        buf: records,
        at: 0,
        index: 0,
        count,
        failed: false,
    }
}

/// Iterator of [`records`].
pub struct Records<'a> {
    buf: &'a [u8],
    at: usize,
    index: i32,
    count: i32,
    failed: bool,
}

impl<'a> Records<'a> {
    /// The bytes after the records walked so far (none after the last of a whole section).
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.at..).unwrap_or_default()
    }

    fn next_record(&mut self) -> Result<RecordRef<'a>, BatchError> {
        let index = self.index;
        let bad = |reason| BatchError::BadRecord { index, reason };
        let buf = self.buf;
        let mut at = self.at;
        let len = varint(buf, &mut at).ok_or(bad("bad length varint"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative record length"))?;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= buf.len())
            .ok_or(bad("record overruns batch"))?;
        let rec = &buf[..end];
        at += 1; // attributes
        if at > end {
            return Err(bad("record too short"));
        }
        let timestamp_delta = varint(rec, &mut at).ok_or(bad("bad timestamp delta"))?;
        let offset_delta = varint(rec, &mut at).ok_or(bad("bad offset delta"))?;
        if offset_delta != i64::from(index) {
            return Err(bad("offset delta out of sequence"));
        }
        let key = read_opt_slice(rec, &mut at).ok_or(bad("bad key"))?;
        let value = read_opt_slice(rec, &mut at).ok_or(bad("bad value"))?;
        let headers_at = at;
        let headers = varint(rec, &mut at).ok_or(bad("bad header count"))?;
        if headers < 0 {
            return Err(bad("negative header count"));
        }
        for _ in 0..headers {
            skip_bytes(rec, &mut at, false).ok_or(bad("bad header key"))?;
            skip_bytes(rec, &mut at, true).ok_or(bad("bad header value"))?;
        }
        if at != end {
            return Err(bad("record length disagrees with its fields"));
        }
        self.at = end;
        self.index = index.saturating_add(1);
        Ok(RecordRef {
            offset_delta: index,
            timestamp_delta,
            key,
            value,
            headers: &rec[headers_at..end],
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.index >= self.count {
            return None;
        }
        let r = self.next_record();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Check the framing of every record in an uncompressed records section.
pub fn check_records(records: &[u8], count: i32) -> Result<(), BatchError> {
    let mut walk = self::records(records, count);
    for r in &mut walk {
        r?;
    }
    if !walk.rest().is_empty() {
        return Err(BatchError::BadRecord {
            index: count,
            reason: "trailing bytes after last record",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::builder::{decode_records, encode_batch, ProducerInfo, Record};
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::collection::vec(
                (
                    "[a-z]{0,6}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
                ),
                0..3,
            ),
            0i64..1_000_000,
        )
            .prop_map(|(key, value, headers, timestamp)| Record {
                key,
                value,
                headers,
                timestamp,
            })
    }

    proptest! {
        #[test]
        fn encoded_batches_validate_and_round_trip(records in proptest::collection::vec(arb_record(), 1..6)) {
            let b = encode_batch(&records, ProducerInfo::default());
            let h = validate(&b).unwrap();
            prop_assert_eq!(h.total_len(), b.len());
            prop_assert_eq!(h.record_count, i32::try_from(records.len()).unwrap());
            prop_assert_eq!(decode_records(&b).unwrap(), records);
        }

        #[test]
        fn any_flipped_bit_under_the_crc_is_caught(records in proptest::collection::vec(arb_record(), 1..4), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = encode_batch(&records, ProducerInfo::default());
            let at = CRC_AT + pos.index(b.len() - CRC_AT);
            b[at] ^= 1 << bit;
            prop_assert!(validate(&b).is_err());
        }

        #[test]
        fn offsets_and_epoch_rewrite_keep_the_batch_valid(records in proptest::collection::vec(arb_record(), 1..4), off in any::<i64>(), epoch in any::<i32>()) {
            let mut b = encode_batch(&records, ProducerInfo::default());
            set_base_offset(&mut b, off);
            set_leader_epoch(&mut b, epoch);
            let h = validate(&b).unwrap();
            prop_assert_eq!((h.base_offset, h.partition_leader_epoch), (off, epoch));
        }

        #[test]
        fn intact_batches_check_every_batch(records in proptest::collection::vec(arb_record(), 1..4), pos in any::<prop::sample::Index>(), bit in 0u8..8, second in any::<bool>()) {
            let one = encode_batch(&records, ProducerInfo::default());
            let mut two = one.to_vec();
            two.extend_from_slice(&one);
            prop_assert!(IntactBatches::check(bytes::Bytes::from(two.clone())).is_ok());
            // A flipped bit under either batch's CRC, or a torn tail, is refused.
            let start = if second { one.len() } else { 0 };
            let at = start + CRC_AT + pos.index(one.len() - CRC_AT);
            let mut bad = two.clone();
            bad[at] ^= 1 << bit;
            prop_assert!(IntactBatches::check(bytes::Bytes::from(bad)).is_err());
            let torn = bytes::Bytes::from(two[..two.len() - 1].to_vec());
            prop_assert!(IntactBatches::check(torn).is_err());
            prop_assert!(IntactBatches::check(bytes::Bytes::new()).is_err());
        }

        #[test]
        fn truncated_batches_are_refused(records in proptest::collection::vec(arb_record(), 1..4), cut in any::<prop::sample::Index>()) {
            let b = encode_batch(&records, ProducerInfo::default());
            let keep = cut.index(b.len());
            prop_assert!(validate(&b[..keep]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate_produce(&data, 1 << 20);
            let _ = headers(&data).count();
        }
    }

    /// Rebuilds `batch` with its records section replaced by `records` and the codec bits set
    /// to `codec`, with `count` records announced and a correct length and CRC.
    fn with_records(batch: &[u8], records: &[u8], codec: i16, count: i32) -> Vec<u8> {
        let mut b = batch[..HEADER_LEN].to_vec();
        b.extend_from_slice(records);
        let length = i32::try_from(b.len() - LOG_OVERHEAD).unwrap();
        b[8..12].copy_from_slice(&length.to_be_bytes());
        let attributes = (be_i16(&b, ATTRIBUTES_AT) & !0x07) | codec;
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
        b[57..61].copy_from_slice(&count.to_be_bytes()); // records count
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_batches_are_checked_inside() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(vec![b'x'; 100]),
                headers: Vec::new(),
                timestamp: 1_700_000_000_000 + i,
            })
            .collect();
        let plain = encode_batch(&records, ProducerInfo::default());
        let inner = &plain[HEADER_LEN..];
        // The same records gzip-compressed: accepted, stored as is.
        let good = with_records(&plain, &gzip(inner), 1, 3);
        let headers = validate_produce(&good, 1 << 20).expect("valid gzip batch");
        assert_eq!(headers[0].compression(), Ok(Compression::Gzip));
        // A header announcing 4 records over 3 compressed ones: INVALID_RECORD.
        let lying = with_records(&plain, &gzip(inner), 1, 4);
        let err = validate_produce(&lying, 1 << 20).unwrap_err();
        assert_eq!(err.kafka_code(), 87, "{err}");
        // A correct CRC over bytes that are not gzip: CORRUPT_MESSAGE.
        let garbage = with_records(&plain, b"definitely not gzip", 1, 3);
        let err = validate_produce(&garbage, 1 << 20).unwrap_err();
        assert_eq!(err.kafka_code(), 2, "{err}");
        // Compressed records inflating past 64 x max.message.bytes: MESSAGE_TOO_LARGE.
        let big: Vec<Record> = vec![Record {
            key: None,
            value: Some(vec![0u8; 2 << 20]),
            headers: Vec::new(),
            timestamp: 1_700_000_000_000,
        }];
        let big_plain = encode_batch(&big, ProducerInfo::default());
        let bomb = with_records(&big_plain, &gzip(&big_plain[HEADER_LEN..]), 1, 1);
        let err = validate_produce(&bomb, 16 << 10).unwrap_err();
        assert_eq!(err.kafka_code(), 10, "{err}");
    }

    #[test]
    fn errors_map_to_kafka_codes() {
        assert_eq!(
            BatchError::CrcMismatch {
                expected: 1,
                computed: 2
            }
            .kafka_code(),
            2
        );
        assert_eq!(BatchError::UnsupportedMagic(1).kafka_code(), 43);
        assert_eq!(BatchError::Empty.kafka_code(), 87);
        assert_eq!(BatchError::TooLarge { size: 2, max: 1 }.kafka_code(), 10);
    }
}
