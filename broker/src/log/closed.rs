//! The log a partition holds once it is closed: it remembers where the log stood and refuses
//! everything else, so a request still in flight at shutdown gets an error, never a file.
//!
//! A partition is shared (`Arc`) with connection tasks and its flushers, so the last handle
//! may drop long after the broker stopped; closing swaps this in and drops the real log at
//! once (for a [`super::file::FileLog`]: trim the preallocated tail, write the indexes, mark
//! the close clean). A broker opened on the same directory afterwards finds the files
//! finished and nobody else touching them.

use super::{
    AppendInfo, FlushPlan, IntactBatches, LogError, PartitionLog, RetentionPolicy, TimestampOffset,
};
use bytes::Bytes;

/// A closed log: the offsets it had, and an error for any read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedLog {
    log_start: i64,
    log_end: i64,
    flushed: i64,
}

impl ClosedLog {
    /// Stands in for `log` once it is closed.
    pub fn after(log: &dyn PartitionLog) -> Self {
        Self {
            log_start: log.log_start_offset(),
            log_end: log.log_end_offset(),
            flushed: log.flushed_offset(),
        }
    }
}

impl PartitionLog for ClosedLog {
    fn append_intact(&mut self, _: IntactBatches, _: i32) -> Result<AppendInfo, LogError> {
        Err(LogError::Closed)
    }

    fn read(&self, _: i64, _: i64, _: usize) -> Result<Bytes, LogError> {
        Err(LogError::Closed)
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end
    }

    fn flushed_offset(&self) -> i64 {
        self.flushed
    }

    /// Nothing left to sync: the close made durable what there was.
    fn flush_plan(&self) -> FlushPlan {
        FlushPlan {
            files: Vec::new(),
            up_to: self.flushed,
            drop_cache: Vec::new(),
        }
    }

    fn mark_flushed(&mut self, _: i64) {}

    fn offset_for_timestamp(&self, _: i64) -> Result<Option<TimestampOffset>, LogError> {
        Err(LogError::Closed)
    }

    fn truncate_to(&mut self, _: i64) -> Result<(), LogError> {
        Err(LogError::Closed)
    }

    fn reset_to(&mut self, _: i64) -> Result<(), LogError> {
        Err(LogError::Closed)
    }

    /// Keeps everything: a closed log deletes nothing.
    fn retention_start(&self, _: i64, _: &RetentionPolicy, _: i64) -> i64 {
        self.log_start
    }

    fn delete_segments_before(&mut self, _: i64) -> Result<i64, LogError> {
        Err(LogError::Closed)
    }

    fn enforce_retention(&mut self, _: i64, _: &RetentionPolicy) -> Result<i64, LogError> {
        Err(LogError::Closed)
    }

    fn disk_usage(&self) -> (usize, u64) {
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};
    use crate::log::memory::MemLog;

    #[test]
    fn a_closed_log_keeps_its_offsets_and_refuses_reads_and_writes() {
        let mut log = MemLog::default();
        let batch = encode_batch(
            &[Record {
                value: Some(b"v".to_vec()),
                ..Record::default()
            }],
            ProducerInfo::default(),
        )
        .freeze();
        log.append(batch.clone(), 0).unwrap();
        log.mark_flushed(1);
        let mut closed = ClosedLog::after(&log);
        assert_eq!(
            (
                closed.log_start_offset(),
                closed.log_end_offset(),
                closed.flushed_offset()
            ),
            (0, 1, 1)
        );
        assert!(matches!(closed.append(batch, 0), Err(LogError::Closed)));
        assert!(matches!(closed.read(0, 1, 100), Err(LogError::Closed)));
        assert!(matches!(closed.truncate_to(0), Err(LogError::Closed)));
        assert!(matches!(
            closed.enforce_retention(0, &RetentionPolicy::default()),
            Err(LogError::Closed)
        ));
        let plan = closed.flush_plan();
        assert!(plan.files.is_empty());
        assert_eq!(plan.up_to, 1);
    }
}
