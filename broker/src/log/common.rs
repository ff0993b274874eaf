//! Rules both partition logs share: append preparation (validation and offset assignment), the
//! segment roll rule, and small checked helpers for batch headers and I/O errors.
//!
//! Keeping these in one place is what makes [`super::memory::MemLog`] a faithful model of
//! [`super::file::FileLog`]: both assign offsets, roll segments and account sizes identically.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};

use super::file::FileLogConfig;
use super::{AppendInfo, LogError, RetentionPolicy};
use crate::codec::batch::{self, BatchError, BatchHeader, IntactBatches, HEADER_LEN, LOG_OVERHEAD};

/// Leading bytes of a batch that an append rewrites: `baseOffset` (0..8), `batchLength`
/// (8..12, kept) and `partitionLeaderEpoch` (12..16). The CRC-32C covers none of them.
pub(crate) const REWRITTEN_LEN: usize = 16;
// `check_integrity` proves a whole header is there before a head is taken.
const _: () = assert!(REWRITTEN_LEN <= HEADER_LEN);

/// One batch inside a prepared append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchSpan {
    /// Where the batch starts inside [`PreparedAppend::bytes`].
    pub start: usize,
    pub len: usize,
    pub base_offset: i64,
    /// Offset the batch after this one starts at.
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// The batch's first [`REWRITTEN_LEN`] bytes as stored: its final offset and epoch.
    pub head: [u8; REWRITTEN_LEN],
}

/// Batches that passed validation, with their final offsets and leader epoch. `bytes` is the
/// caller's buffer *as received*: the rewritten header fields live in each span's `head`, so
/// an append needs no copy of the records ([`Self::io_slices`] for a vectored write).
#[derive(Debug, Clone)]
pub(crate) struct PreparedAppend {
    pub bytes: Bytes,
    pub batches: Vec<BatchSpan>,
    pub info: AppendInfo,
}

impl PreparedAppend {
    /// The append as stored, in order: per batch its rewritten head, then the rest of it as
    /// received.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(self.batches.len().saturating_mul(2));
        for span in &self.batches {
            slices.push(IoSlice::new(&span.head));
            slices.push(IoSlice::new(self.rest(span)));
        }
        slices
    }

    /// One batch as stored (a copy: the in-memory log keeps batches this way).
    pub fn stored_batch(&self, span: &BatchSpan) -> Bytes {
        let mut out = BytesMut::with_capacity(span.len);
        out.extend_from_slice(&span.head);
        out.extend_from_slice(self.rest(span));
        out.freeze()
    }

    /// A batch after its rewritten head, as received.
    fn rest<'a>(&'a self, span: &BatchSpan) -> &'a [u8] {
        let from = span.start.saturating_add(REWRITTEN_LEN);
        let to = span.start.saturating_add(span.len);
        self.bytes.get(from..to).unwrap_or_default()
    }

    /// Offset the log ends at once this append is in.
    pub fn next_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.info.base_offset, |b| b.next_offset)
    }

    /// Byte length of the whole append.
    pub fn len_u64(&self) -> u64 {
        len_u64(self.bytes.len())
    }
}

/// Rewrite `baseOffset` from `log_end` onwards and `partitionLeaderEpoch` of batches known to
/// be intact ([`IntactBatches`]: the log never stores a batch that is not whole and intact; a
/// plain [`super::PartitionLog::append`] checks them first, CRC-32C included). Their CRC is
/// not computed again here; headers and sizes are still parsed, so bytes that are not whole
/// batches are refused rather than stored. Nothing is appended anywhere; on error the buffer
/// is simply dropped. Record framing inside a batch is checked once, where batches enter the
/// broker (Produce's `validate_produce`, which picks the Kafka error code), not again here.
pub(crate) fn prepare_intact(
    batches_in: IntactBatches,
    log_end: i64,
    leader_epoch: i32,
) -> Result<PreparedAppend, LogError> {
    let buf = batches_in.into_bytes();
    if buf.is_empty() {
        return Err(LogError::InvalidBatch(BatchError::NoBatches));
    }
    let mut batches = Vec::new();
    let mut at = 0usize;
    let mut next = log_end;
    let mut max_timestamp = i64::MIN;
    while at < buf.len() {
        let header = batch::parse_header(&buf[at..])?;
        let len = header.total_len();
        let next_offset = next_offset_from(next, &header).ok_or_else(|| overflow(next))?;
        let mut head = [0u8; REWRITTEN_LEN];
        head.copy_from_slice(&buf[at..at + REWRITTEN_LEN]);
        batch::set_base_offset(&mut head, next);
        batch::set_leader_epoch(&mut head, leader_epoch);
        batches.push(BatchSpan {
            start: at,
            len,
            base_offset: next,
            next_offset,
            max_timestamp: header.max_timestamp,
            head,
        });
        max_timestamp = max_timestamp.max(header.max_timestamp);
        next = next_offset;
        at = at.checked_add(len).ok_or_else(|| overflow(next))?;
    }
    let last_offset = next.checked_sub(1).ok_or_else(|| overflow(next))?;
    let info = AppendInfo {
        base_offset: log_end,
        last_offset,
        max_timestamp,
    };
    Ok(PreparedAppend {
        bytes: buf,
        batches,
        info,
    })
}

fn overflow(at: i64) -> LogError {
    LogError::Corrupt(format!("offset overflow assigning offsets from {at}"))
}

/// The offset after a batch whose header says it holds `last_offset_delta + 1` records, if it
/// were placed at `base_offset`. `None` for a negative delta or an overflow (untrusted bytes
/// from disk must not panic the broker).
pub(crate) fn next_offset_from(base_offset: i64, header: &BatchHeader) -> Option<i64> {
    if header.last_offset_delta < 0 {
        return None;
    }
    base_offset
        .checked_add(i64::from(header.last_offset_delta))?
        .checked_add(1)
}

/// The offset after the batch, using its own `baseOffset`.
pub(crate) fn next_offset(header: &BatchHeader) -> Option<i64> {
    next_offset_from(header.base_offset, header)
}

/// Parse a batch header from only its first [`HEADER_LEN`] bytes.
///
/// [`batch::parse_header`] insists that the whole batch be present, which a positional scan of
/// a segment does not want to read. So check the length field here, hand `parse_header` a copy
/// whose length field announces a header-only batch, and restore the real length.
pub(crate) fn parse_header_prefix(raw: &[u8]) -> Result<BatchHeader, BatchError> {
    let mut copy = [0u8; HEADER_LEN];
    let prefix = raw.get(..HEADER_LEN).ok_or(BatchError::Truncated {
        needed: HEADER_LEN,
        available: raw.len(),
    })?;
    copy.copy_from_slice(prefix);
    // `batchLength` is the i32 that ends the log overhead.
    let length_field = LOG_OVERHEAD - 4..LOG_OVERHEAD;
    let mut length_bytes = [0u8; 4];
    length_bytes.copy_from_slice(&copy[length_field.clone()]);
    let real_length = i32::from_be_bytes(length_bytes);
    let header_only =
        i32::try_from(HEADER_LEN - LOG_OVERHEAD).map_err(|_| BatchError::BadLength(real_length))?;
    if real_length < header_only {
        return Err(BatchError::BadLength(real_length));
    }
    copy[length_field].copy_from_slice(&header_only.to_be_bytes());
    let mut header = batch::parse_header(&copy)?;
    header.batch_length = real_length;
    Ok(header)
}

/// Whether the active segment must be rolled before `append` goes in.
///
/// Rolls when the segment is non-empty and: the append would take it past `segment_bytes` (or
/// past what 32-bit index positions can address), its offsets would not fit a 32-bit relative
/// offset, or (with `segment_ms`) the append's max timestamp is more than `segment_ms` after the
/// max timestamp of the segment's first batch. That last rule is Kafka's `timeWaitedForRoll` with
/// record time instead of wall-clock time, so rolling stays deterministic; segments whose first
/// batch has no timestamp (negative) are never rolled by age.
pub(crate) fn should_roll(
    config: &FileLogConfig,
    active: &ActiveSegment,
    append: &PreparedAppend,
) -> bool {
    if active.size == 0 {
        return false;
    }
    let new_size = active.size.saturating_add(append.len_u64());
    if new_size > config.segment_bytes || new_size > u64::from(u32::MAX) {
        return true;
    }
    let relative_last = append.info.last_offset.checked_sub(active.base_offset);
    if relative_last.is_none_or(|r| r > i64::from(u32::MAX)) {
        return true;
    }
    match (config.segment_ms, active.first_timestamp) {
        (Some(ms), Some(first)) if first >= 0 => append
            .info
            .max_timestamp
            .checked_sub(first)
            .is_some_and(|age| age > ms),
        _ => false,
    }
}

/// What the roll rule needs to know about the active segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveSegment {
    pub base_offset: i64,
    pub size: u64,
    /// Max timestamp of the segment's first batch, if it has one.
    pub first_timestamp: Option<i64>,
}

/// `usize` to `u64` without `as` (lossless on every platform Rust supports).
pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `u64` to `usize`, as a log error when it does not fit.
pub(crate) fn to_usize(n: u64) -> Result<usize, LogError> {
    usize::try_from(n).map_err(|_| LogError::Corrupt(format!("size {n} does not fit in memory")))
}

/// Map an I/O error to [`LogError::Io`] with what was being done.
pub(crate) fn io_context(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let context = context.into();
    move |source| LogError::Io { context, source }
}

/// Whether a batch of `len` bytes joins a read that already holds `used` bytes, per the `read`
/// contract: the first batch always does, later ones only while the total stays within
/// `max_bytes`.
pub(crate) fn fits(used: usize, len: usize, max_bytes: usize, first: bool) -> bool {
    first
        || used
            .checked_add(len)
            .is_some_and(|total| total <= max_bytes)
}

/// `offset` must lie in `[log_start, log_end]`.
fn check_in_log(offset: i64, log_start: i64, log_end: i64) -> Result<(), LogError> {
    if offset < log_start || offset > log_end {
        return Err(LogError::OffsetOutOfRange {
            offset,
            log_start,
            log_end,
        });
    }
    Ok(())
}

/// The range check every `read` starts with: `Ok(true)` when the answer is empty.
pub(crate) fn check_read_range(
    offset: i64,
    max_offset: i64,
    log_start: i64,
    log_end: i64,
) -> Result<bool, LogError> {
    check_in_log(offset, log_start, log_end)?;
    Ok(offset == log_end || offset >= max_offset)
}

/// The range check `truncate_to` starts with: `Ok(true)` when there is nothing to do.
pub(crate) fn check_truncate_range(
    offset: i64,
    log_start: i64,
    log_end: i64,
) -> Result<bool, LogError> {
    check_in_log(offset, log_start, log_end)?;
    Ok(offset == log_end)
}

/// The retention rule for the oldest sealed segment, shared by both logs: it expires by time
/// when its largest timestamp is older than `now_ms - retention_ms` (no timestamps counts as
/// expired), and by size while the log without it still holds at least `retention_bytes`.
pub(crate) fn expired(
    max_timestamp: Option<i64>,
    size: u64,
    total: u64,
    now_ms: i64,
    policy: &RetentionPolicy,
) -> bool {
    let by_time = policy
        .retention_ms
        .is_some_and(|ms| max_timestamp.is_none_or(|max| max < now_ms.saturating_sub(ms)));
    let by_size = policy
        .retention_bytes
        .is_some_and(|limit| total.saturating_sub(size) >= limit);
    by_time || by_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};

    fn batch(n: usize, ts: i64) -> BytesMut {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                value: Some(vec![1; i]),
                timestamp: ts,
                ..Record::default()
            })
            .collect();
        encode_batch(&records, ProducerInfo::default())
    }

    /// What a plain `PartitionLog::append` prepares: check, then lay out.
    fn prepare_append(buf: Bytes, log_end: i64, epoch: i32) -> Result<PreparedAppend, LogError> {
        prepare_intact(IntactBatches::check(buf)?, log_end, epoch)
    }

    #[test]
    fn header_prefix_matches_full_parse() {
        let b = batch(3, 7);
        let full = batch::parse_header(&b).unwrap();
        assert_eq!(parse_header_prefix(&b[..HEADER_LEN]).unwrap(), full);
        assert!(parse_header_prefix(&b[..HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn prepare_assigns_offsets_and_rejects_bad_input() {
        let mut buf = batch(3, 5);
        buf.extend_from_slice(&batch(2, 9));
        let p = prepare_append(buf.freeze(), 10, 4).unwrap();
        assert_eq!(
            p.info,
            AppendInfo {
                base_offset: 10,
                last_offset: 14,
                max_timestamp: 9
            }
        );
        assert_eq!(p.next_offset(), 15);
        let second = batch::validate(&p.stored_batch(&p.batches[1])).unwrap();
        // The caller's buffer is not modified: the rewrite lives in the heads.
        assert_eq!(batch::parse_header(&p.bytes).unwrap().base_offset, 0);
        assert_eq!((second.base_offset, second.partition_leader_epoch), (13, 4));
        // Batches already known intact are laid out the same (no second CRC pass).
        let mut again = batch(3, 5);
        again.extend_from_slice(&batch(2, 9));
        let intact = prepare_intact(IntactBatches::check(again.freeze()).unwrap(), 10, 4).unwrap();
        assert_eq!(intact.info, p.info);
        assert_eq!(intact.batches, p.batches);
        assert!(matches!(
            prepare_append(Bytes::new(), 0, 0),
            Err(LogError::InvalidBatch(_))
        ));
        let mut torn = batch(1, 0);
        torn.truncate(torn.len() - 1);
        assert!(matches!(
            prepare_append(torn.freeze(), 0, 0),
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            prepare_append(batch(1, 0).freeze(), i64::MAX, 0),
            Err(LogError::Corrupt(_))
        ));
    }
}
