//! In-memory implementation of [`super::PartitionLog`], for tests and as the model of the file log.
//!
//! Batches live in `Bytes`; "segments" are modelled with the same roll rule as
//! [`super::file::FileLog`] (from [`FileLogConfig`]), so retention deletes exactly the same
//! batches. Nothing is ever durable beyond the process, so a flush plan has no files and
//! `mark_flushed` simply records the offset.

use bytes::{Bytes, BytesMut};

use crate::codec::batch::IntactBatches;

use super::common::{
    check_read_range, check_truncate_range, expired, fits, prepare_intact, should_roll,
    ActiveSegment,
};
use super::file::FileLogConfig;
use super::{AppendInfo, FlushPlan, LogError, PartitionLog, RetentionPolicy, TimestampOffset};

/// A partition log held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    config: FileLogConfig,
    /// Rolled segments, oldest first.
    sealed: Vec<MemSegment>,
    active: MemSegment,
    flushed_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct MemSegment {
    base_offset: i64,
    batches: Vec<MemBatch>,
    size: u64,
}

#[derive(Debug, Clone)]
struct MemBatch {
    base_offset: i64,
    next_offset: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

impl MemSegment {
    fn new(base_offset: i64) -> Self {
        Self {
            base_offset,
            batches: Vec::new(),
            size: 0,
        }
    }

    fn next_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.base_offset, |b| b.next_offset)
    }

    fn max_timestamp(&self) -> Option<i64> {
        self.batches.iter().map(|b| b.max_timestamp).max()
    }

    fn roll_facts(&self) -> ActiveSegment {
        let first_timestamp = self.batches.first().map(|b| b.max_timestamp);
        ActiveSegment {
            base_offset: self.base_offset,
            size: self.size,
            first_timestamp,
        }
    }

    /// Index of the batch holding `offset` (or `batches.len()` past the end).
    fn batch_index(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.next_offset <= offset)
    }
}

impl MemLog {
    /// An empty log with the default segment layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log that rolls segments like a [`super::file::FileLog`] with `config`.
    pub fn with_config(config: FileLogConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.sealed.len().saturating_add(1)
    }

    fn segments(&self) -> impl Iterator<Item = &MemSegment> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    fn segment_index(&self, offset: i64) -> usize {
        if offset >= self.active.base_offset {
            return self.sealed.len();
        }
        self.sealed
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    fn segment(&self, index: usize) -> &MemSegment {
        self.sealed.get(index).unwrap_or(&self.active)
    }
}

impl PartitionLog for MemLog {
    fn append_intact(
        &mut self,
        batches: IntactBatches,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let prepared = prepare_intact(batches, self.log_end_offset(), leader_epoch)?;
        if should_roll(&self.config, &self.active.roll_facts(), &prepared) {
            let fresh = MemSegment::new(self.active.next_offset());
            self.sealed.push(std::mem::replace(&mut self.active, fresh));
        }
        for span in &prepared.batches {
            let bytes = prepared.stored_batch(span);
            let max_timestamp = span.max_timestamp;
            self.active.batches.push(MemBatch {
                base_offset: span.base_offset,
                next_offset: span.next_offset,
                max_timestamp,
                bytes,
            });
        }
        self.active.size = self.active.size.saturating_add(prepared.len_u64());
        Ok(prepared.info)
    }

    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        if check_read_range(
            offset,
            max_offset,
            self.log_start_offset(),
            self.log_end_offset(),
        )? {
            return Ok(Bytes::new());
        }
        let batches = self
            .segments()
            .skip(self.segment_index(offset))
            .flat_map(|s| s.batches.iter());
        let mut out = BytesMut::new();
        for (n, batch) in batches.skip_while(|b| b.next_offset <= offset).enumerate() {
            if batch.base_offset >= max_offset
                || !fits(out.len(), batch.bytes.len(), max_bytes, n == 0)
            {
                break;
            }
            out.extend_from_slice(&batch.bytes);
        }
        Ok(out.freeze())
    }

    fn log_start_offset(&self) -> i64 {
        self.segment(0).base_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    fn flush_plan(&self) -> FlushPlan {
        FlushPlan {
            files: Vec::new(),
            up_to: self.log_end_offset(),
            drop_cache: Vec::new(),
        }
    }

    fn mark_flushed(&mut self, up_to: i64) {
        self.flushed_offset = self.flushed_offset.max(up_to.min(self.log_end_offset()));
    }

    /// Like [`super::file::FileLog`]: the first *batch* whose max timestamp is >= the target.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        let found = self
            .segments()
            .flat_map(|s| s.batches.iter())
            .find(|b| b.max_timestamp >= timestamp)
            .map(|b| TimestampOffset {
                offset: b.base_offset,
                timestamp: b.max_timestamp,
            });
        Ok(found)
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if check_truncate_range(offset, self.log_start_offset(), self.log_end_offset())? {
            return Ok(());
        }
        let keep = self.segment_index(offset);
        let segment = self.segment(keep);
        let cut = segment.batch_index(offset);
        if segment
            .batches
            .get(cut)
            .is_none_or(|b| b.base_offset != offset)
        {
            return Err(LogError::NotBatchBoundary(offset));
        }
        while self.sealed.len() > keep {
            if let Some(previous) = self.sealed.pop() {
                self.active = previous;
            }
        }
        let removed: u64 = self
            .active
            .batches
            .drain(cut..)
            .map(|b| b.bytes.len())
            .map(super::common::len_u64)
            .sum();
        self.active.size = self.active.size.saturating_sub(removed);
        self.flushed_offset = self.flushed_offset.min(offset);
        Ok(())
    }

    fn retention_start(&self, now_ms: i64, policy: &RetentionPolicy, limit: i64) -> i64 {
        let mut total = self
            .segments()
            .fold(0u64, |sum, s| sum.saturating_add(s.size));
        for s in &self.sealed {
            if s.next_offset() > limit || !expired(s.max_timestamp(), s.size, total, now_ms, policy)
            {
                return s.base_offset;
            }
            total = total.saturating_sub(s.size);
        }
        self.active.base_offset
    }

    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let keep = self.sealed.partition_point(|s| s.next_offset() <= offset);
        self.sealed.drain(..keep);
        Ok(self.log_start_offset())
    }

    fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset(),
                log_end: self.log_end_offset(),
            });
        }
        self.sealed.clear();
        self.active = MemSegment::new(offset);
        self.flushed_offset = offset;
        Ok(())
    }

    fn enforce_retention(
        &mut self,
        now_ms: i64,
        policy: &RetentionPolicy,
    ) -> Result<i64, LogError> {
        let mut total = self
            .segments()
            .fold(0u64, |sum, s| sum.saturating_add(s.size));
        while let Some(oldest) = self.sealed.first() {
            if !expired(oldest.max_timestamp(), oldest.size, total, now_ms, policy) {
                break;
            }
            total = total.saturating_sub(oldest.size);
            self.sealed.remove(0);
        }
        Ok(self.log_start_offset())
    }

    fn disk_usage(&self) -> (usize, u64) {
        self.segments().fold((0, 0), |(n, bytes), s| {
            (n + 1, bytes.saturating_add(s.size))
        })
    }
}
