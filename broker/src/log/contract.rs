//! Contract suite every [`super::PartitionLog`] implementation passes: one set of behaviours,
//! run against [`FileLog`] (in a temporary directory) and [`MemLog`].
//!
//! Each case gets a fresh log from `make`, built with the segment layout the case needs; the
//! layouts include one batch per segment so that reads, truncation and retention cross segment
//! boundaries.

use bytes::BytesMut;

use super::file::{FileLog, FileLogConfig};
use super::memory::MemLog;
use super::{AppendInfo, FlushPlan, LogError, PartitionLog, RetentionPolicy, TimestampOffset};
use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};

/// Builds a fresh, empty log with the given layout.
pub(crate) type Make<'a, L> = &'a mut dyn FnMut(FileLogConfig) -> L;

/// Run every contract case against logs made by `make`.
pub(crate) fn run_contract<L: PartitionLog>(make: Make<'_, L>) {
    for config in layouts() {
        empty_log(make(config.clone()));
        append_assigns_offsets_and_keeps_bytes(make(config.clone()));
        read_returns_whole_batches(make(config.clone()));
        invalid_input_appends_nothing(make(config.clone()));
        offset_for_timestamp_finds_first_batch(make(config.clone()));
        truncate_cuts_at_batch_boundaries(make(config.clone()));
        flush_offsets_only_move_forward(make(config.clone()));
    }
    for config in layouts() {
        reset_to_restarts_the_log_empty_at_an_offset(make(config));
    }
    retention_start_and_delete_segments_before(make(one_batch_per_segment()));
    retention_by_bytes_deletes_oldest_segments(make(one_batch_per_segment()));
    retention_by_time_deletes_expired_segments(make(one_batch_per_segment()));
    retention_never_deletes_the_active_segment(make(FileLogConfig::default()));
    segments_roll_by_record_time(make(FileLogConfig {
        segment_ms: Some(1000),
        ..FileLogConfig::default()
    }));
}

/// Default layout, one batch per segment with an index entry per batch, and two batches per
/// segment with a small index interval.
fn layouts() -> Vec<FileLogConfig> {
    vec![
        FileLogConfig::default(),
        one_batch_per_segment(),
        FileLogConfig {
            segment_bytes: 2 * batch_len(2) + 1,
            index_interval_bytes: 100,
            segment_ms: None,
            ..FileLogConfig::default()
        },
        FileLogConfig {
            index_interval_bytes: 1,
            ..FileLogConfig::default()
        },
    ]
}

fn one_batch_per_segment() -> FileLogConfig {
    FileLogConfig {
        segment_bytes: 1,
        index_interval_bytes: 1,
        segment_ms: None,
        ..FileLogConfig::default()
    }
}

/// A batch of `records` records, each with a 10-byte value, all stamped `timestamp`.
fn batch(records: usize, timestamp: i64) -> BytesMut {
    let records: Vec<Record> = (0..records)
        .map(|_| Record {
            value: Some(vec![7; 10]),
            timestamp,
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerInfo::default())
}

fn batch_len(records: usize) -> u64 {
    u64::try_from(batch(records, 0).len()).unwrap()
}

fn append(log: &mut dyn PartitionLog, records: usize, timestamp: i64) -> AppendInfo {
    log.append(batch(records, timestamp).freeze(), 1).unwrap()
}

/// `(base offset, next offset)` of every batch in a read result, checking each one whole.
fn batches_in(bytes: &[u8]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = batch::validate(&bytes[at..]).expect("reads return whole valid batches");
        out.push((h.base_offset, h.next_offset()));
        at += h.total_len();
    }
    out
}

/// Base offsets of the batches a read returns; `read_batches` must return the same bytes.
fn bases(log: &dyn PartitionLog, offset: i64, max_offset: i64, max_bytes: usize) -> Vec<i64> {
    let read = log.read(offset, max_offset, max_bytes).unwrap();
    let located = log.read_batches(offset, max_offset, max_bytes).unwrap();
    assert_eq!(located.len(), read.len());
    assert_eq!(
        located.to_bytes().unwrap(),
        read,
        "read_batches and read differ"
    );
    batches_in(&read).into_iter().map(|(b, _)| b).collect()
}

fn out_of_range<T: std::fmt::Debug>(result: Result<T, LogError>) -> bool {
    matches!(result, Err(LogError::OffsetOutOfRange { .. }))
}

fn empty_log(mut log: impl PartitionLog) {
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.flushed_offset()
        ),
        (0, 0, 0)
    );
    assert!(log.read(0, i64::MAX, 1000).unwrap().is_empty());
    assert!(out_of_range(log.read(1, i64::MAX, 1000)));
    assert!(out_of_range(log.read(-1, i64::MAX, 1000)));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.flush_plan().up_to, 0);
    log.truncate_to(0).unwrap();
    let all = RetentionPolicy {
        retention_ms: Some(0),
        retention_bytes: Some(0),
    };
    assert_eq!(log.enforce_retention(i64::MAX, &all).unwrap(), 0);
    assert_eq!(log.log_end_offset(), 0);
}

fn append_assigns_offsets_and_keeps_bytes(mut log: impl PartitionLog) {
    let first = batch(3, 100);
    let info = log.append(first.clone().freeze(), 7).unwrap();
    assert_eq!(
        info,
        AppendInfo {
            base_offset: 0,
            last_offset: 2,
            max_timestamp: 100
        }
    );
    let (second, third) = (batch(2, 50), batch(1, 200));
    let mut both = second.clone();
    both.extend_from_slice(&third);
    let info = log.append(both.freeze(), 8).unwrap();
    assert_eq!(
        info,
        AppendInfo {
            base_offset: 3,
            last_offset: 5,
            max_timestamp: 200
        }
    );
    assert_eq!(log.log_end_offset(), 6);

    let stored = log.read(0, i64::MAX, usize::MAX).unwrap();
    assert_eq!(batches_in(&stored), vec![(0, 3), (3, 5), (5, 6)]);
    let mut at = 0;
    for (input, epoch) in [(&first, 7), (&second, 8), (&third, 8)] {
        let h = batch::validate(&stored[at..]).unwrap();
        assert_eq!(h.partition_leader_epoch, epoch);
        // Only baseOffset (bytes 0..8) and partitionLeaderEpoch (12..16) are rewritten.
        assert_eq!(stored[at + 8..at + 12], input[8..12]);
        assert_eq!(stored[at + 16..at + input.len()], input[16..]);
        at += input.len();
    }
}

fn read_returns_whole_batches(mut log: impl PartitionLog) {
    for ts in 0..5 {
        append(&mut log, 2, ts);
    }
    let len = usize::try_from(batch_len(2)).unwrap();
    assert_eq!(bases(&log, 0, i64::MAX, usize::MAX), vec![0, 2, 4, 6, 8]);
    assert_eq!(
        bases(&log, 3, i64::MAX, usize::MAX),
        vec![2, 4, 6, 8],
        "starts with the batch holding 3"
    );
    assert_eq!(bases(&log, 9, i64::MAX, usize::MAX), vec![8]);
    assert_eq!(
        bases(&log, 0, i64::MAX, 0),
        vec![0],
        "the first batch comes whole"
    );
    assert_eq!(bases(&log, 5, i64::MAX, 1), vec![4]);
    assert_eq!(bases(&log, 0, i64::MAX, 2 * len), vec![0, 2]);
    assert_eq!(bases(&log, 0, i64::MAX, 3 * len - 1), vec![0, 2]);
    assert_eq!(bases(&log, 2, i64::MAX, 3 * len), vec![2, 4, 6]);
    assert_eq!(
        bases(&log, 0, 4, usize::MAX),
        vec![0, 2],
        "no batch at or past max_offset"
    );
    assert_eq!(bases(&log, 0, 5, usize::MAX), vec![0, 2, 4]);
    assert_eq!(bases(&log, 1, 2, usize::MAX), vec![0]);
    assert!(log.read(4, 4, usize::MAX).unwrap().is_empty());
    assert!(log.read(10, i64::MAX, usize::MAX).unwrap().is_empty());
    assert!(log
        .read_batches(10, i64::MAX, usize::MAX)
        .unwrap()
        .is_empty());
    assert!(out_of_range(log.read(11, i64::MAX, usize::MAX)));
    assert!(out_of_range(log.read_batches(11, i64::MAX, usize::MAX)));
    // Every start, bound and budget: the located batches are the read ones.
    for offset in 0..=10 {
        for max_offset in [offset, offset + 1, offset + 3, 7, i64::MAX] {
            for max_bytes in [
                0,
                1,
                len - 1,
                len,
                len + 1,
                2 * len,
                3 * len + 7,
                usize::MAX,
            ] {
                if max_offset >= offset {
                    bases(&log, offset, max_offset, max_bytes);
                }
            }
        }
    }
    assert!(out_of_range(log.read(i64::MAX, i64::MAX, usize::MAX)));
}

fn invalid_input_appends_nothing(mut log: impl PartitionLog) {
    append(&mut log, 2, 10);
    let before = log.read(0, i64::MAX, usize::MAX).unwrap();
    let good = batch(2, 20);
    let mut torn = good.clone();
    torn.truncate(good.len() - 1);
    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    let mut good_then_garbage = good.clone();
    good_then_garbage.extend_from_slice(b"garbage");
    let mut good_then_bad = good.clone();
    good_then_bad.extend_from_slice(&bad_crc);
    let inputs = [
        BytesMut::new(),
        BytesMut::from(&b"hello"[..]),
        torn,
        bad_crc,
        good_then_garbage,
        good_then_bad,
    ];
    for input in inputs {
        assert!(matches!(
            log.append(input.freeze(), 1),
            Err(LogError::InvalidBatch(_))
        ));
        assert_eq!(log.log_end_offset(), 2);
        assert_eq!(log.read(0, i64::MAX, usize::MAX).unwrap(), before);
    }
    assert_eq!(log.append(good.freeze(), 1).unwrap().base_offset, 2);
}

fn offset_for_timestamp_finds_first_batch(mut log: impl PartitionLog) {
    for ts in [100, 50, 300, 200, 300, 400] {
        append(&mut log, 1, ts);
    }
    let at = |offset, timestamp| Some(TimestampOffset { offset, timestamp });
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), at(0, 100));
    assert_eq!(log.offset_for_timestamp(100).unwrap(), at(0, 100));
    assert_eq!(log.offset_for_timestamp(101).unwrap(), at(2, 300));
    assert_eq!(log.offset_for_timestamp(250).unwrap(), at(2, 300));
    assert_eq!(log.offset_for_timestamp(301).unwrap(), at(5, 400));
    assert_eq!(log.offset_for_timestamp(401).unwrap(), None);
    log.truncate_to(5).unwrap();
    assert_eq!(log.offset_for_timestamp(301).unwrap(), None);
    assert_eq!(log.offset_for_timestamp(300).unwrap(), at(2, 300));
}

fn truncate_cuts_at_batch_boundaries(mut log: impl PartitionLog) {
    for ts in 0..5 {
        append(&mut log, 2, ts);
    }
    assert!(matches!(
        log.truncate_to(3),
        Err(LogError::NotBatchBoundary(3))
    ));
    assert!(out_of_range(log.truncate_to(11)));
    assert!(out_of_range(log.truncate_to(-1)));
    log.truncate_to(10).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    log.truncate_to(6).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 6));
    assert_eq!(bases(&log, 0, i64::MAX, usize::MAX), vec![0, 2, 4]);
    assert!(log.read(6, i64::MAX, usize::MAX).unwrap().is_empty());
    assert!(out_of_range(log.read(7, i64::MAX, usize::MAX)));
    assert_eq!(append(&mut log, 3, 9).base_offset, 6);
    assert_eq!(bases(&log, 5, i64::MAX, usize::MAX), vec![4, 6]);
    log.truncate_to(0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.read(0, i64::MAX, usize::MAX).unwrap().is_empty());
    assert_eq!(append(&mut log, 1, 9).base_offset, 0);
}

fn flush_offsets_only_move_forward(mut log: impl PartitionLog) {
    append(&mut log, 2, 1);
    append(&mut log, 2, 2);
    assert!(log.flushed_offset() <= log.log_end_offset());
    let plan = log.flush_plan();
    assert_eq!(plan.up_to, 4);
    append(&mut log, 2, 3);
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    assert!(log.flushed_offset() >= 4 && log.flushed_offset() <= 6);
    log.mark_flushed(0);
    assert!(log.flushed_offset() >= 4, "never moves back");
    let plan = log.flush_plan();
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    assert_eq!(log.flushed_offset(), 6);
    log.mark_flushed(i64::MAX);
    assert_eq!(log.flushed_offset(), 6, "never past the log end");
    log.truncate_to(2).unwrap();
    assert_eq!(
        log.flushed_offset(),
        2,
        "truncation takes the flushed offset along"
    );
}

fn retention_by_bytes_deletes_oldest_segments(mut log: impl PartitionLog) {
    for ts in 0..5 {
        append(&mut log, 2, ts);
    }
    let len = batch_len(2);
    let keep_two = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(2 * len),
    };
    assert_eq!(log.enforce_retention(0, &keep_two).unwrap(), 6);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 10));
    assert!(out_of_range(log.read(4, i64::MAX, usize::MAX)));
    assert_eq!(bases(&log, 6, i64::MAX, usize::MAX), vec![6, 8]);
    assert_eq!(
        log.enforce_retention(0, &keep_two).unwrap(),
        6,
        "idempotent"
    );
    assert!(out_of_range(log.truncate_to(4)));
    assert_eq!(
        log.offset_for_timestamp(0).unwrap().map(|t| t.offset),
        Some(6)
    );
    log.truncate_to(6).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 6));
    assert_eq!(append(&mut log, 1, 0).base_offset, 6);
}

fn retention_by_time_deletes_expired_segments(mut log: impl PartitionLog) {
    for ts in [100, 200, 300, 50] {
        append(&mut log, 2, ts);
    }
    let policy = RetentionPolicy {
        retention_ms: Some(750),
        retention_bytes: None,
    };
    assert_eq!(
        log.enforce_retention(800, &policy).unwrap(),
        0,
        "nothing older than 50"
    );
    assert_eq!(
        log.enforce_retention(1000, &policy).unwrap(),
        4,
        "older than 250 goes"
    );
    assert_eq!(
        log.enforce_retention(i64::MAX, &policy).unwrap(),
        6,
        "all but the active segment"
    );
    assert_eq!(log.log_end_offset(), 8);
}

fn retention_never_deletes_the_active_segment(mut log: impl PartitionLog) {
    for ts in 0..3 {
        append(&mut log, 2, ts);
    }
    let all = RetentionPolicy {
        retention_ms: Some(0),
        retention_bytes: Some(0),
    };
    assert_eq!(log.enforce_retention(i64::MAX, &all).unwrap(), 0);
    assert_eq!(bases(&log, 0, i64::MAX, usize::MAX), vec![0, 2, 4]);
}

fn segments_roll_by_record_time(mut log: impl PartitionLog) {
    append(&mut log, 1, 0);
    append(&mut log, 1, 1000);
    append(&mut log, 1, 1001);
    append(&mut log, 1, 5);
    let drop_sealed = RetentionPolicy {
        retention_ms: None,
        retention_bytes: Some(0),
    };
    assert_eq!(
        log.enforce_retention(0, &drop_sealed).unwrap(),
        2,
        "the third batch started a segment"
    );
    assert_eq!(log.log_end_offset(), 4);
}

fn reset_to_restarts_the_log_empty_at_an_offset(mut log: impl PartitionLog) {
    for _ in 0..4 {
        append(&mut log, 2, 10);
    }
    fn at(log: &dyn PartitionLog) -> (i64, i64, i64) {
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.flushed_offset(),
        )
    }
    // Past the end (a follower far behind its leader's start).
    log.reset_to(100).unwrap();
    assert_eq!(at(&log), (100, 100, 100));
    assert!(out_of_range(log.read(99, i64::MAX, 1000)));
    assert!(out_of_range(log.read(0, i64::MAX, 1000)));
    assert!(log.read(100, i64::MAX, 1000).unwrap().is_empty());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.disk_usage().1, 0);
    let info = append(&mut log, 3, 20);
    assert_eq!((info.base_offset, info.last_offset), (100, 102));
    assert_eq!(bases(&log, 100, i64::MAX, 1 << 20), vec![100]);
    assert_eq!(log.log_start_offset(), 100);
    // Truncation and retention keep working from the new start.
    log.truncate_to(100).unwrap();
    assert_eq!(at(&log), (100, 100, 100));
    let all = RetentionPolicy {
        retention_ms: Some(0),
        retention_bytes: Some(0),
    };
    assert_eq!(log.enforce_retention(i64::MAX, &all).unwrap(), 100);
    // Below the start, and at the start itself, work too; a negative offset is refused.
    append(&mut log, 1, 30);
    log.reset_to(3).unwrap();
    assert_eq!(at(&log), (3, 3, 3));
    log.reset_to(3).unwrap();
    assert_eq!(at(&log), (3, 3, 3));
    assert!(out_of_range(log.reset_to(-1)));
    assert_eq!(at(&log), (3, 3, 3));
    assert_eq!(append(&mut log, 1, 40).base_offset, 3);
}

/// The two halves of retention for a replica: where it would start below a limit (the high
/// watermark), then deleting up to there.
fn retention_start_and_delete_segments_before(mut log: impl PartitionLog) {
    // One batch per segment: [0,2) [2,4) [4,6) [6,8), the last one active.
    for ts in [10, 20, 30, 40] {
        append(&mut log, 2, ts);
    }
    let all = RetentionPolicy {
        retention_ms: Some(0),
        retention_bytes: Some(0),
    };
    let none = RetentionPolicy::default();
    assert_eq!(
        log.retention_start(i64::MAX, &all, i64::MAX),
        6,
        "never the active one"
    );
    assert_eq!(
        log.retention_start(i64::MAX, &all, 4),
        4,
        "nothing holding the limit"
    );
    assert_eq!(log.retention_start(i64::MAX, &all, 3), 2);
    assert_eq!(log.retention_start(i64::MAX, &all, 0), 0);
    assert_eq!(log.retention_start(i64::MAX, &none, i64::MAX), 0);
    let by_time = RetentionPolicy {
        retention_ms: Some(100),
        retention_bytes: None,
    };
    // Segments whose max timestamp is below 125 - 100 = 25: the first two.
    assert_eq!(log.retention_start(125, &by_time, i64::MAX), 4);
    assert_eq!(log.log_start_offset(), 0, "retention_start changes nothing");

    assert_eq!(log.delete_segments_before(3).unwrap(), 2);
    assert_eq!(log.delete_segments_before(3).unwrap(), 2);
    assert!(out_of_range(log.read(1, i64::MAX, 1000)));
    assert_eq!(bases(&log, 2, i64::MAX, 1 << 20), vec![2, 4, 6]);
    assert_eq!(log.delete_segments_before(i64::MAX).unwrap(), 6);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 8));
}

#[test]
fn file_log_reset_survives_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut log = FileLog::open(dir.path(), one_batch_per_segment()).unwrap();
    for _ in 0..3 {
        append(&mut log, 2, 10);
    }
    log.reset_to(50).unwrap();
    append(&mut log, 2, 20);
    drop(log);
    let log = FileLog::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (50, 52));
    assert!(out_of_range(log.read(49, i64::MAX, 1000)));
    assert_eq!(bases(&log, 50, i64::MAX, 1 << 20), vec![50]);
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files <= 3, "old segments are gone ({files} files)");
}

#[test]
fn mem_log_passes_contract() {
    run_contract(&mut MemLog::with_config);
}

#[test]
fn file_log_passes_contract() {
    let mut dirs = Vec::new();
    run_contract(&mut |config| {
        let dir = tempfile::TempDir::new().unwrap();
        let log = FileLog::open(dir.path(), config).unwrap();
        dirs.push(dir);
        log
    });
}

/// `(from, len)` of each range a flush plan drops from the page cache.
fn drop_ranges(plan: &FlushPlan) -> Vec<(u64, u64)> {
    plan.drop_cache.iter().map(|(_, f, l)| (*f, *l)).collect()
}

#[test]
fn file_log_drops_page_cache_behind_its_fsyncs_and_still_reads_everything() {
    let dir = tempfile::TempDir::new().unwrap();
    let keep = 1 << 20;
    let config = FileLogConfig {
        cache_tail_bytes: Some(keep),
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir.path(), config).unwrap();
    let one = batch_len(80);
    let mut size = 0;
    let mut batches = 0;
    while size < 6 << 20 {
        append(&mut log, 80, 0);
        size += one;
        batches += 1;
    }
    // One range, from the start to a page boundary `keep` before the end.
    let plan = log.flush_plan();
    assert_eq!(drop_ranges(&plan), vec![(0, (size - keep) & !4095)]);
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    // Handed out once: nothing more until another CACHE_DROP_STEP is droppable.
    let dropped = (size - keep) & !4095;
    append(&mut log, 80, 0);
    size += one;
    batches += 1;
    assert!(log.flush_plan().drop_cache.is_empty());
    while size < 11 << 20 {
        append(&mut log, 80, 0);
        size += one;
        batches += 1;
    }
    let plan = log.flush_plan();
    let end = (size - keep) & !4095;
    assert_eq!(drop_ranges(&plan), vec![(dropped, end - dropped)]);
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    // Every batch reads back whole, in order, the dropped ranges from disk.
    let read = log.read(0, i64::MAX, usize::MAX).unwrap();
    let got = batches_in(&read);
    assert_eq!(got.len(), batches);
    assert!(got.windows(2).all(|w| w[0].1 == w[1].0));
    // Without a tail to keep, nothing is ever dropped.
    let dir = tempfile::TempDir::new().unwrap();
    let config = FileLogConfig {
        cache_tail_bytes: None,
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir.path(), config).unwrap();
    for _ in 0..batches {
        append(&mut log, 80, 0);
    }
    assert!(log.flush_plan().drop_cache.is_empty());
}

/// Whether files in `dir` can be read with `O_DIRECT` (most local file systems; not all).
fn direct_io_works(dir: &std::path::Path) -> bool {
    use rustix::fs::{Mode, OFlags};
    let path = dir.join("probe");
    std::fs::write(&path, vec![1u8; 4096]).unwrap();
    rustix::fs::open(&path, OFlags::RDONLY | OFlags::DIRECT, Mode::empty()).is_ok()
}

/// Read the whole log as a consumer does, `budget` bytes per Fetch: the bytes and whether any
/// came from memory (`O_DIRECT`) rather than a file slice.
fn consume_all(log: &FileLog, budget: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut direct = false;
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read_batches(offset, i64::MAX, budget).unwrap();
        direct |= read
            .pieces()
            .iter()
            .any(|p| matches!(p, super::Piece::Bytes(_)));
        let bytes = read.to_bytes().unwrap();
        offset = batches_in(&bytes).last().unwrap().1;
        out.extend_from_slice(&bytes);
    }
    (out, direct)
}

#[test]
fn file_log_reads_below_the_dropped_mark_without_the_page_cache_and_forgets_a_cut_tail() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = FileLogConfig {
        cache_tail_bytes: Some(0),
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir.path(), config).unwrap();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let mut size = 0;
    while size < 9 << 20 {
        append(&mut log, 80, 0);
        size += batch_len(80);
    }
    let plan = log.flush_plan();
    assert!(!plan.drop_cache.is_empty());
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    let on_disk =
        |len: u64| std::fs::read(&segment).unwrap()[..usize::try_from(len).unwrap()].to_vec();
    // Fetches of several sizes, each crossing chunk boundaries somewhere: same bytes as the file.
    for budget in [1 << 20, 300_000, 5 << 20] {
        let (bytes, direct) = consume_all(&log, budget);
        assert_eq!(bytes, on_disk(size), "budget {budget}");
        assert_eq!(direct, direct_io_works(dir.path()), "budget {budget}");
    }
    // Cut below the dropped mark (as Raft does to an uncommitted tail), write other batches
    // there, and read again: nothing cached from before the cut comes back.
    let (bytes, _) = consume_all(&log, 1 << 20);
    let written = batches_in(&bytes);
    let cut = written[written.len() / 3].0;
    let cut_at = u64::try_from(written.len() / 3).unwrap() * batch_len(80);
    // A consumer just read there, so the chunk holding the cut is cached.
    log.read_batches(cut, i64::MAX, 1000).unwrap();
    log.truncate_to(cut).unwrap();
    let mut rewritten = 0;
    while rewritten < 6 << 20 {
        append(&mut log, 3, 7);
        rewritten += batch_len(3);
    }
    let plan = log.flush_plan();
    assert!(
        !plan.drop_cache.is_empty(),
        "the rewritten range is dropped again"
    );
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
    let end = std::fs::metadata(&segment).unwrap().len();
    let after_cut = log.read_batches(cut, i64::MAX, 1 << 20).unwrap();
    let after_cut = after_cut.to_bytes().unwrap();
    let from = usize::try_from(cut_at).unwrap();
    assert_eq!(after_cut, on_disk(end)[from..from + after_cut.len()]);
    let (bytes, _) = consume_all(&log, 1 << 20);
    let tail = batches_in(&bytes);
    assert_eq!(tail.last().unwrap().1, log.log_end_offset());
    assert_eq!(bytes, on_disk(u64::try_from(bytes.len()).unwrap().min(end)));
}

/// Zeros ahead of appends: written only past the data and never past the blocks reserved,
/// in whole chunks ending on a block boundary, only once fewer than `ZERO_AHEAD_LOW` bytes
/// of them are left ahead, at most one chunk per pace at the configured rate; appends into
/// them, reads and a reopen see exactly the data; rate 0 never writes.
#[test]
fn file_log_zeros_ahead_in_whole_chunks_within_its_reservation_at_its_pace() {
    use super::file::{ZERO_AHEAD_CHUNK, ZERO_AHEAD_LOW};
    use std::time::{Duration, Instant};

    let dir = tempfile::TempDir::new().unwrap();
    // One chunk a second.
    let config = FileLogConfig {
        zero_ahead_bytes_per_sec: ZERO_AHEAD_CHUNK,
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir.path(), config.clone()).unwrap();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let reserved = || std::fs::metadata(&segment).unwrap().len();
    let t0 = Instant::now();
    let second = Duration::from_secs(1);
    assert!(
        log.zero_ahead(t0).unwrap().is_none(),
        "nothing reserved yet"
    );
    // Enough data that the reservation runs more than two chunks past it.
    let mut size = 0;
    while size < 5 * ZERO_AHEAD_CHUNK {
        append(&mut log, 80, 0);
        size += batch_len(80);
    }
    assert!(
        reserved() >= size + 2 * ZERO_AHEAD_CHUNK,
        "{} {size}",
        reserved()
    );
    let before = consume_all(&log, 1 << 20).0;

    // One whole chunk from the data on, ending on a block boundary.
    let zeros = log.zero_ahead(t0).unwrap().expect("a chunk");
    zeros.sync().unwrap();
    assert_eq!(zeros.data_len(), size);
    assert_eq!(
        zeros.end(),
        (size + ZERO_AHEAD_CHUNK).next_multiple_of(4096)
    );
    let mut zeroed = zeros.end();
    // Enough ahead: neither time nor a little data brings more.
    assert!(log.zero_ahead(t0 + 10 * second).unwrap().is_none());
    append(&mut log, 80, 0);
    size += batch_len(80);
    assert!(zeroed - size >= ZERO_AHEAD_LOW);
    assert!(log.zero_ahead(t0 + 20 * second).unwrap().is_none());
    // Fewer left than the low mark: the next chunk follows on from the last, paced.
    while zeroed - size >= ZERO_AHEAD_LOW {
        append(&mut log, 80, 0);
        size += batch_len(80);
    }
    let mut now = t0 + 30 * second;
    let zeros = log.zero_ahead(now).unwrap().expect("a chunk");
    assert_eq!(zeros.end(), zeroed + ZERO_AHEAD_CHUNK);
    zeroed = zeros.end();
    zeros.sync().unwrap();
    // Appends that outrun the zeros: the next chunk starts at the data, no sooner than the
    // pace allows.
    while size <= zeroed {
        append(&mut log, 80, 0);
        size += batch_len(80);
    }
    assert!(log.zero_ahead(now + second / 2).unwrap().is_none(), "paced");
    now += second;
    let zeros = log.zero_ahead(now).unwrap().expect("a chunk");
    assert_eq!(zeros.data_len(), size);
    assert_eq!(
        zeros.end(),
        (size + ZERO_AHEAD_CHUNK)
            .next_multiple_of(4096)
            .min(reserved())
    );
    zeros.sync().unwrap();
    // Never past the reservation: chunks stop at its end, and none follows while the
    // appends stay inside it.
    zeroed = zeros.end();
    let bring_low = |log: &mut FileLog, size: &mut u64, zeroed: u64| {
        while zeroed - *size >= ZERO_AHEAD_LOW {
            append(log, 80, 0);
            *size += batch_len(80);
        }
    };
    let reservation = reserved();
    while zeroed < reservation {
        bring_low(&mut log, &mut size, zeroed);
        now += second;
        let zeros = log.zero_ahead(now).unwrap().expect("a chunk");
        assert!(zeros.end() <= reservation, "{} {reservation}", zeros.end());
        zeroed = zeros.end();
        zeros.sync().unwrap();
    }
    bring_low(&mut log, &mut size, zeroed);
    assert_eq!(reserved(), reservation);
    assert!(log.zero_ahead(now + 10 * second).unwrap().is_none());

    let on_disk = std::fs::read(&segment).unwrap();
    let at = usize::try_from(size).unwrap();
    assert_eq!(
        &on_disk[..before.len()],
        &before[..],
        "the data is untouched"
    );
    assert!(on_disk[at..].iter().all(|&b| b == 0));
    let end = log.log_end_offset();
    let after = consume_all(&log, 1 << 20).0;
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(after.len(), at);
    assert_eq!(batches_in(&after).last().unwrap().1, end);
    drop(log);
    let log = FileLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        consume_all(&log, 1 << 20).0,
        after,
        "a reopen cuts the zeros"
    );

    // Rate 0: never.
    let dir = tempfile::TempDir::new().unwrap();
    let mut log = FileLog::open(
        dir.path(),
        FileLogConfig {
            zero_ahead_bytes_per_sec: 0,
            ..FileLogConfig::default()
        },
    )
    .unwrap();
    append(&mut log, 80, 0);
    assert!(log.zero_ahead(t0 + 100 * second).unwrap().is_none());
}
