//! The Raft log kept in the partition's own segment files: one entry is one stored Kafka v2
//! record batch, so the data is written once and Kafka fetches read the Raft log directly.
//!
//! [`SegmentRaftLog`] implements [`RaftLog`] over a [`BatchStore`] — the narrow slice of a
//! partition log it needs (append, truncate, read, the two end offsets). Any
//! [`PartitionLog`] ([`crate::log::file::FileLog`], [`crate::log::memory::MemLog`]) is one;
//! the partition implements it itself so that its idempotent-producer table follows every
//! append and truncation.
//!
//! # Mapping
//! - A `Normal` entry's payload is exactly one v2 batch whose `baseOffset` is already the log
//!   end offset (the leader rewrites it before proposing; a follower receives it set). It is
//!   stored with `partitionLeaderEpoch` = the entry's term, so the Kafka leader epoch of every
//!   batch is the Raft term that wrote it, and reading it back gives the same bytes.
//! - A `Noop` entry (each new leader's first entry; empty payload in the core) is stored as a
//!   Kafka control batch of type LEADER_CHANGE (see [`NOOP_CONTROL_TYPE`] for why), taking one
//!   offset that every Kafka consumer skips.
//! - Entry 1 is the first batch at offset 0; entry `i + 1` starts where entry `i` ends. The
//!   terms (`(term, first index)` runs) and each entry's end offset are kept in memory and
//!   rebuilt by [`SegmentRaftLog::open`] from the batch headers, so a restart (after crash
//!   recovery cut a torn tail) gives back the same Raft log, up to the last whole batch.
//!
//! # Log start (retention, snapshot installs)
//! Entries before [`RaftLog::first_index`] are gone with their segments. What the log still
//! knows of them is a [`LogStart`] — the last entry before the start (index, term) and the
//! offset the first kept entry starts at — which the store keeps durably
//! ([`BatchStore::save_start`]: write a temporary file, fsync, rename, fsync the directory)
//! **before** anything is deleted, so a crash between the two is repaired by `open` (it deletes
//! what the record says is gone). [`RaftLog::compact_to`] deletes whole segments only, below
//! the end of the entry asked for; [`RaftLog::install_snapshot`] (payload: the leader's
//! log-start offset, 8 bytes big-endian) records the new start with `resetting` set, resets the
//! store empty at that offset ([`BatchStore::reset_to`]), then clears the flag; `open` redoes a
//! reset left half done. A store without a place for the record (the metadata group's plain
//! partition log) refuses to compact: that group never does.
//!
//! # Limits
//! - Without a start record, the log must start at offset 0: `open` refuses any other start.
//! - Every stored batch must carry a Raft term (leader epoch ≥ 1): a partition written before
//!   replication (epoch 0) is refused rather than given invented terms.
//! - Memory: 8 bytes per entry (its end offset) plus 16 bytes per term change; 10 million
//!   batches cost ~80 MB. Snapshots will bound this together with the log start.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{Entry, EntryKind, Index, RaftLog, StorageError, Term};
use crate::codec::batch::{self, BatchHeader, IntactBatches};
use crate::codec::builder::{control_record_type, control_type, encode_control_batch};
use crate::log::{AppendInfo, LogError, PartitionLog, RetentionPolicy};

/// What [`SegmentRaftLog`] needs from a partition log. Offsets are Kafka offsets.
///
/// The partition implements this over its [`PartitionLog`] so that it can keep its
/// idempotent-producer table in step with the log (record each appended batch, rebuild after
/// a truncation); any `PartitionLog` implements it directly.
pub trait BatchStore {
    /// Appends whole, intact v2 batches at the log end with `partitionLeaderEpoch = epoch`, all
    /// or nothing, with [`PartitionLog::append_intact`] semantics (offsets assigned from the log
    /// end; the CRC was checked once, by the Raft log or where the batch entered the broker).
    fn append_batch(&mut self, batches: IntactBatches, epoch: i32) -> Result<AppendInfo, LogError>;

    /// Removes every batch whose base offset is `>= offset` (a batch boundary or the log end).
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError>;

    /// Whole batches from the one containing `offset`, none starting at or after `max_offset`,
    /// at most `max_bytes` except that the first batch is always whole
    /// ([`PartitionLog::read`]).
    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError>;

    /// The first offset in the log.
    fn log_start_offset(&self) -> i64;

    /// The offset the next batch will get.
    fn log_end_offset(&self) -> i64;

    /// The start record last saved, if the log ever started above offset 0.
    fn load_start(&self) -> Result<Option<LogStart>, LogError>;

    /// Makes `start` the durable start record, atomically (old or new after a crash).
    fn save_start(&mut self, start: &LogStart) -> Result<(), LogError>;

    /// The log start after deleting every whole segment that ends at or below `offset`;
    /// changes nothing.
    fn start_after_deleting_before(&self, offset: i64) -> i64;

    /// Deletes every whole segment that ends at or below `offset`; returns the new start.
    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError>;

    /// Discards everything and restarts empty at `offset` ([`PartitionLog::reset_to`]).
    fn reset_to(&mut self, offset: i64) -> Result<(), LogError>;
}

/// Where a compacted log starts; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogStart {
    /// The last entry before the start.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The offset the first kept entry starts at (the end of entry `index`).
    pub offset: i64,
    /// A snapshot install began: the store must be reset to `offset`.
    pub resetting: bool,
}

/// What every plain partition log lacks: a place for the start record.
fn no_start_record() -> LogError {
    LogError::Corrupt("this log keeps no start record, so it never compacts".to_string())
}

/// Deletes nothing whatever the retention settings say, apart from the limit.
const DELETE_BELOW: RetentionPolicy = RetentionPolicy {
    retention_ms: None,
    retention_bytes: Some(0),
};

impl<T: PartitionLog + ?Sized> BatchStore for T {
    fn append_batch(&mut self, batches: IntactBatches, epoch: i32) -> Result<AppendInfo, LogError> {
        self.append_intact(batches, epoch)
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        PartitionLog::truncate_to(self, offset)
    }

    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        PartitionLog::read(self, offset, max_offset, max_bytes)
    }

    fn log_start_offset(&self) -> i64 {
        PartitionLog::log_start_offset(self)
    }

    fn log_end_offset(&self) -> i64 {
        PartitionLog::log_end_offset(self)
    }

    fn load_start(&self) -> Result<Option<LogStart>, LogError> {
        Ok(None)
    }

    fn save_start(&mut self, _: &LogStart) -> Result<(), LogError> {
        Err(no_start_record())
    }

    fn start_after_deleting_before(&self, offset: i64) -> i64 {
        self.retention_start(0, &DELETE_BELOW, offset)
    }

    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
        PartitionLog::delete_segments_before(self, offset)
    }

    fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        PartitionLog::reset_to(self, offset)
    }
}

impl BatchStore for Box<dyn PartitionLog> {
    fn append_batch(&mut self, batches: IntactBatches, epoch: i32) -> Result<AppendInfo, LogError> {
        self.as_mut().append_batch(batches, epoch)
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        BatchStore::truncate_to(self.as_mut(), offset)
    }

    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        BatchStore::read(self.as_ref(), offset, max_offset, max_bytes)
    }

    fn log_start_offset(&self) -> i64 {
        BatchStore::log_start_offset(self.as_ref())
    }

    fn log_end_offset(&self) -> i64 {
        BatchStore::log_end_offset(self.as_ref())
    }

    fn load_start(&self) -> Result<Option<LogStart>, LogError> {
        Ok(None)
    }

    fn save_start(&mut self, _: &LogStart) -> Result<(), LogError> {
        Err(no_start_record())
    }

    fn start_after_deleting_before(&self, offset: i64) -> i64 {
        BatchStore::start_after_deleting_before(self.as_ref(), offset)
    }

    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
        BatchStore::delete_segments_before(self.as_mut(), offset)
    }

    fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        BatchStore::reset_to(self.as_mut(), offset)
    }
}

/// The control type a `Noop` entry is stored with: Kafka's LEADER_CHANGE (2), the record
/// Kafka's own Raft (KRaft, KIP-595) appends at the start of every leader epoch — the same
/// role as Raft's no-op — with a `LeaderChangeMessage` value (leader id -1: the entry does not
/// name its leader). Types 0 (ABORT) and 1 (COMMIT) are the only ones clients act on, so any
/// other type is skipped everywhere; checked in each client's source:
///
/// - librdkafka `src/rdkafka_msgset_reader.c` (`rd_kafka_msgset_reader_msg_v2`): a control
///   record must have a 4-byte key of version 0 (another key size is a parse error, another
///   version is skipped); COMMIT is ignored, ABORT is acted on only with read_committed, any
///   other type is logged "Unsupported ctrl message type ... ignoring"; each becomes a ctrl
///   op that moves the fetch position, and `msetr_next_offset = LastOffset + 1` is set for
///   every batch, so a fetch holding only a control batch still advances (a fetch with only
///   control messages is not treated as "message too large" either: `msetr_ctrl_cnt > 0`).
/// - Apache Kafka `ControlRecordType`: ABORT 0, COMMIT 1, LEADER_CHANGE 2, SNAPSHOT_HEADER 3,
///   SNAPSHOT_FOOTER 4, KRAFT_VERSION 5, KRAFT_VOTERS 6, and "UNKNOWN is used to indicate a
///   control type which the client is not aware of and should be ignored"; the Java consumer
///   (`CompletedFetch.nextFetchedRecord`) returns no record of any control batch and moves
///   `nextFetchOffset` past it. With read_committed it inspects control batches only when the
///   batch has a producer id (`hasProducerId()`, i.e. not -1).
/// - kafka-python 3.0.12 (`kafka/consumer/fetcher.py` `_unpack_records`): skips every control
///   batch and sets `next_fetch_offset = batch.next_offset`; it parses the key (`>hh`, 4 bytes)
///   only with read_committed and a producer id > -1. Before 2.1.0 (PR #2499, replacing
///   #2361) kafka-python returned control records to applications as ordinary records.
/// - aiokafka 0.14 (`aiokafka/consumer/fetcher.py`): "We skip control batches no matter the
///   isolation level", `next_fetch_offset = next_batch.next_offset`; with read_committed it
///   unpacks the key (`>HH`, needs 4 bytes) and compares it with the abort marker `(0, 0)`.
/// - KafkaJS 2.2.4 (`src/consumer/batch.js`, `runner.js`): control records are filtered out;
///   a fetch that held only control records is "empty due to filtering" and the runner
///   resolves its last offset so the consumer moves on. That fix (#1256) closed tulios/kafkajs
///   #403 "Consumer gets stuck when it receives a control batch" — the trailing-control-batch
///   stall. Its abort check compares the key with `00 00 00 00`.
/// - librdkafka before 1.4 did not store the offset of control messages, so a consumer that
///   committed after the last record of a partition ending in a control batch stayed one
///   behind (confluentinc/librdkafka #2539, fixed by #2661); 2.3 added the leader epoch to
///   control messages so their offset is committed without a later message (#4384, #4434).
///   Applications that stop at "last record offset = high watermark - 1" hang on a trailing
///   control record whatever the client (risingwavelabs/risingwave #25121); they must compare
///   the position with the high watermark.
/// - Other clients skip control batches outside transactions only since: Sarama #1898,
///   ruby-kafka #893.
pub const NOOP_CONTROL_TYPE: i16 = control_type::LEADER_CHANGE;

/// `LeaderChangeMessage.LeaderId` in a stored `Noop`: unknown, since a Raft entry does not
/// name its leader (and the bytes stay the same on every replica).
const NOOP_LEADER_ID: i32 = -1;

/// Kafka's "no timestamp": a `Noop` has no time, and the stored bytes stay a pure function of
/// the entry (identical on every replica and after a restart). A timestamp lookup never lands
/// on it, since it asks for the first batch with a max timestamp at or after a time >= 0.
const NO_TIMESTAMP: i64 = -1;

/// Default bound on the batch bytes one [`RaftLog::entries`] call reads, so that one Append
/// message stays under ~1 MiB; always at least one entry.
pub const DEFAULT_MAX_READ_BYTES: usize = 1 << 20;

/// Bytes read per step when [`SegmentRaftLog::open`] scans the log.
const SCAN_BYTES: usize = 1 << 20;

/// Why the segment-file Raft log refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum SegmentLogError {
    /// The partition log failed.
    #[error("partition log: {0}")]
    Store(#[from] LogError),
    /// Retention (or anything else) moved the log start: entries before it are gone.
    #[error("the log starts at offset {0} but has no start record (entries before it are gone)")]
    LogStartNotZero(i64),
    /// An entry's payload cannot be stored as it is.
    #[error("entry {index}: {reason}")]
    BadEntry {
        /// The entry's index.
        index: Index,
        /// What is wrong with it.
        reason: String,
    },
    /// A `Normal` payload would not land where its `baseOffset` says: the leader's and this
    /// log's offsets have diverged.
    #[error("entry {index} has base offset {base_offset} but the log ends at offset {log_end}")]
    OffsetMismatch {
        /// The entry's index.
        index: Index,
        /// The payload's `baseOffset`.
        base_offset: i64,
        /// Where it would be stored.
        log_end: i64,
    },
    /// The stored batches do not form a Raft log, or disagree with the in-memory index.
    #[error("stored batch at offset {offset}: {reason}")]
    Corrupt {
        /// The batch's offset.
        offset: i64,
        /// What is wrong.
        reason: String,
    },
}

impl From<SegmentLogError> for StorageError {
    fn from(e: SegmentLogError) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// Consecutive entries of one term, appended to the store in one call.
struct Run {
    term: Term,
    /// Their batches, in order (concatenated only when there are several).
    batches: Vec<Bytes>,
    /// `(index, end offset)` of each.
    ends: Vec<(Index, i64)>,
}

/// Where entries given to [`RaftLog::append`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A peer's Append message: each batch's CRC is checked here, once.
    Peer,
    /// This node's leader ([`RaftLog::append_proposed`]): payloads were validated where they
    /// entered the broker (or built by it), so their CRC is not computed again.
    Proposed,
}

/// Default bound on the bytes of [`Recent`] entries a log keeps.
pub const DEFAULT_RECENT_BYTES: usize = 4 << 20;

/// The newest entries this node appended as leader, exactly as [`RaftLog::entries`] reads
/// them back (a `Normal` payload is the stored batch, epoch and base offset included; a
/// `Noop` has an empty payload), so that the Append messages a leader builds right after each
/// proposal — one per follower — share its `Bytes` instead of reading the batch back from the
/// segment files. Bounded by bytes; always a run of consecutive entries ending at the log's
/// last entry, or empty. Emptied by a peer's append, a truncation reaching it, a snapshot
/// install; compaction drops what it discards.
#[derive(Debug, Default)]
struct Recent {
    /// Each entry with its stored batch's length (what a read's byte budget counts).
    entries: VecDeque<(Entry, usize)>,
    /// Sum of the stored lengths.
    bytes: usize,
}

impl Recent {
    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds the entry after the last one, then drops the oldest while over `limit` bytes.
    fn push(&mut self, entry: Entry, stored_len: usize, limit: usize) {
        if self
            .entries
            .back()
            .is_some_and(|(last, _)| last.index.checked_add(1) != Some(entry.index))
        {
            self.clear();
        }
        self.entries.push_back((entry, stored_len));
        self.bytes = self.bytes.saturating_add(stored_len);
        while self.bytes > limit {
            let Some((_, len)) = self.entries.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(len);
        }
    }

    /// Drops the entries from `from` on.
    fn truncate_from(&mut self, from: Index) {
        while let Some((e, len)) = self.entries.back() {
            if e.index < from {
                break;
            }
            self.bytes = self.bytes.saturating_sub(*len);
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to and including `index`.
    fn drop_through(&mut self, index: Index) {
        while let Some((e, len)) = self.entries.front() {
            if e.index > index {
                break;
            }
            self.bytes = self.bytes.saturating_sub(*len);
            self.entries.pop_front();
        }
    }

    /// Entries `from..=until` as [`SegmentRaftLog::read_entries`] would read them with a
    /// budget of `max_bytes` (whole entries while they fit, always at least one), if this
    /// holds all of them.
    fn read(&self, from: Index, until: Index, max_bytes: usize) -> Option<Vec<Entry>> {
        let (first, _) = self.entries.front()?;
        let (last, _) = self.entries.back()?;
        if from < first.index || until > last.index || from > until {
            return None;
        }
        let skip = usize::try_from(from - first.index).ok()?;
        let mut out = Vec::new();
        let mut budget = max_bytes;
        for (entry, len) in self.entries.iter().skip(skip) {
            if entry.index > until || (!out.is_empty() && *len > budget) {
                break;
            }
            out.push(entry.clone());
            budget = budget.saturating_sub(*len);
            if budget == 0 {
                break;
            }
        }
        Some(out)
    }
}

/// A [`RaftLog`] whose entries are the record batches of a partition log.
#[derive(Debug)]
pub struct SegmentRaftLog<S> {
    store: S,
    /// The last entry before the log start (0 if nothing was ever compacted) and its term.
    base: Index,
    base_term: Term,
    /// The offset entry `base + 1` starts at (the log start).
    start_offset: i64,
    /// `ends[i]`: the offset just past entry `base + i + 1`. 8 bytes per entry.
    ends: Vec<i64>,
    /// `(term, first index)` for each run of entries of one term, ascending in both.
    terms: Vec<(Term, Index)>,
    /// Batch bytes one `entries` call reads at most (past the first entry).
    max_read_bytes: usize,
    /// The newest entries appended as leader, served by `entries` without a read.
    recent: Recent,
    /// Bytes `recent` keeps at most (0: none).
    recent_limit: usize,
}

impl<S: BatchStore> SegmentRaftLog<S> {
    /// Opens the Raft log held in `store`, rebuilding terms and offsets from its batch
    /// headers (the store has already cut any torn tail). Refuses a log that does not start
    /// at offset 0, a batch without a Raft term (epoch < 1), terms that go down, and control
    /// batches other than a stored `Noop`.
    ///
    /// With a start record ([`BatchStore::load_start`]) the log starts there instead: a reset
    /// or a deletion a crash interrupted is finished first.
    pub fn open(mut store: S) -> Result<Self, SegmentLogError> {
        let (base, base_term) = match store.load_start()? {
            None => {
                let start = store.log_start_offset();
                if start != 0 {
                    return Err(SegmentLogError::LogStartNotZero(start));
                }
                (0, 0)
            }
            Some(rec) => {
                if rec.resetting {
                    store.reset_to(rec.offset)?;
                    store.save_start(&LogStart {
                        resetting: false,
                        ..rec
                    })?;
                } else if store.log_start_offset() < rec.offset {
                    store.delete_segments_before(rec.offset)?;
                }
                let start = store.log_start_offset();
                if start != rec.offset {
                    return Err(corrupt(
                        start,
                        format!(
                            "the log starts here but its start record says {}",
                            rec.offset
                        ),
                    ));
                }
                (rec.index, rec.term)
            }
        };
        let start = store.log_start_offset();
        let end = store.log_end_offset();
        let mut log = SegmentRaftLog {
            store,
            base,
            base_term,
            start_offset: start,
            ends: Vec::new(),
            terms: Vec::new(),
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
            recent: Recent::default(),
            recent_limit: DEFAULT_RECENT_BYTES,
        };
        let mut at = start;
        while at < end {
            let chunk = log.store.read(at, end, SCAN_BYTES)?;
            if chunk.is_empty() {
                return Err(corrupt(at, "the log returned nothing before its end"));
            }
            let mut pos = 0usize;
            for header in batch::headers(&chunk) {
                let header = header.map_err(|e| corrupt(at, e.to_string()))?;
                let whole = chunk
                    .get(pos..pos.saturating_add(header.total_len()))
                    .ok_or_else(|| corrupt(at, "batch overruns the read"))?;
                pos = pos.saturating_add(header.total_len());
                if header.base_offset != at {
                    return Err(corrupt(
                        at,
                        format!("base offset {} breaks the sequence", header.base_offset),
                    ));
                }
                let term = stored_term(&header)?;
                stored_kind(&header, whole)?;
                let next = next_offset(&header)?;
                let index = log.last_index().saturating_add(1);
                if log.term(log.last_index()).is_some_and(|last| term < last) {
                    return Err(corrupt(at, format!("term {term} after a later term")));
                }
                log.push(index, term, next);
                at = next;
            }
        }
        Ok(log)
    }

    /// Sets the batch bytes one [`RaftLog::entries`] call reads at most (at least one entry is
    /// always returned).
    pub fn with_max_read_bytes(mut self, max_read_bytes: usize) -> Self {
        self.max_read_bytes = max_read_bytes;
        self
    }

    /// Sets the bytes of the newest entries appended as leader that are kept in memory for
    /// [`RaftLog::entries`] ([`DEFAULT_RECENT_BYTES`]; 0 keeps none, every read goes to the
    /// store).
    pub fn with_recent_bytes(mut self, recent_bytes: usize) -> Self {
        self.recent_limit = recent_bytes;
        self.recent.clear();
        self
    }

    /// The Kafka offset just past entry `index` (where entry `index + 1` starts);
    /// `end_offset(0)` is the offset entry 1 starts at (the log start). `None` past the end.
    pub fn end_offset(&self, index: Index) -> Option<i64> {
        if index == self.base {
            return Some(self.start_offset);
        }
        let pos = usize::try_from(index.checked_sub(self.base)?.checked_sub(1)?).ok()?;
        self.ends.get(pos).copied()
    }

    /// The entry whose batch contains `offset`, if any.
    pub fn index_for_offset(&self, offset: i64) -> Option<Index> {
        if offset < self.start_offset || self.ends.last().is_none_or(|&end| offset >= end) {
            return None;
        }
        let pos = self.ends.partition_point(|&end| end <= offset);
        Index::try_from(pos)
            .ok()?
            .checked_add(self.base)?
            .checked_add(1)
    }

    /// The partition log underneath (reads, flushes).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The partition log underneath, for flushing and other bookkeeping. Appending or
    /// truncating through it would desynchronise the index: do those through [`RaftLog`].
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the partition log back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// `(term, first offset)` of each run of entries of one term, ascending in both: the
    /// Kafka leader-epoch history (KIP-101) that OffsetForLeaderEpoch answers from. Every run
    /// holds at least one entry, so the offsets strictly increase.
    pub fn epoch_starts(&self) -> Vec<(Term, i64)> {
        self.terms
            .iter()
            .filter_map(|&(term, first)| Some((term, self.end_offset(first.checked_sub(1)?)?)))
            .collect()
    }

    /// Records entry `index` of `term` ending at offset `end`.
    fn push(&mut self, index: Index, term: Term, end: i64) {
        if self.terms.last().is_none_or(|&(t, _)| t != term) {
            self.terms.push((term, index));
        }
        self.ends.push(end);
    }

    fn append_entries(&mut self, entries: &[Entry], source: Source) -> Result<(), SegmentLogError> {
        if source == Source::Peer {
            // `recent` holds only a leader's own entries, newest last.
            self.recent.clear();
        }
        // Prepare everything first, so that a bad entry anywhere appends nothing.
        let mut expected = self.store.log_end_offset();
        let mut runs: Vec<Run> = Vec::new();
        for entry in entries {
            let bytes = self.encode_entry(entry, expected, source)?;
            let header = batch::parse_header(&bytes).map_err(|e| bad(entry.index, e))?;
            let end = next_offset(&header)?;
            match runs.last_mut() {
                Some(run) if run.term == entry.term => {
                    run.batches.push(bytes);
                    run.ends.push((entry.index, end));
                }
                _ => runs.push(Run {
                    term: entry.term,
                    batches: vec![bytes],
                    ends: vec![(entry.index, end)],
                }),
            }
            expected = end;
        }
        // One append per run of one term: its batches share the leader epoch.
        for Run {
            term,
            batches,
            ends,
        } in runs
        {
            let epoch = epoch_of(term, ends.first().map_or(0, |&(i, _)| i))?;
            let from = self.store.log_end_offset();
            let recent = (source == Source::Proposed && self.recent_limit > 0)
                .then(|| stored_entries(term, epoch, &batches, &ends));
            let joined = match <[Bytes; 1]>::try_from(batches) {
                Ok([one]) => one,
                Err(several) => {
                    let mut all = BytesMut::with_capacity(several.iter().map(Bytes::len).sum());
                    for b in &several {
                        all.extend_from_slice(b);
                    }
                    all.freeze()
                }
            };
            // Every batch passed `encode_entry`: checked here (from a peer) or where it
            // entered the broker (proposed), or built by this log.
            let info = self
                .store
                .append_batch(IntactBatches::checked_by_caller(joined), epoch)?;
            let want_end = ends.last().map_or(from, |&(_, end)| end);
            if info.base_offset != from || info.last_offset.checked_add(1) != Some(want_end) {
                return Err(corrupt(
                    info.base_offset,
                    format!(
                        "the log stored offsets {}..={}, expected {from}..{want_end}",
                        info.base_offset, info.last_offset
                    ),
                ));
            }
            for (index, end) in ends {
                self.push(index, term, end);
            }
            for (entry, len) in recent.into_iter().flatten() {
                self.recent.push(entry, len, self.recent_limit);
            }
        }
        Ok(())
    }

    /// The batch that stores `entry` at offset `at` (before the epoch rewrite).
    fn encode_entry(
        &self,
        entry: &Entry,
        at: i64,
        source: Source,
    ) -> Result<Bytes, SegmentLogError> {
        epoch_of(entry.term, entry.index)?;
        match entry.kind {
            EntryKind::Noop => {
                if !entry.payload.is_empty() {
                    return Err(bad(entry.index, "a no-op carries no payload"));
                }
                let value = crate::codec::builder::leader_change_message(NOOP_LEADER_ID);
                let mut b = encode_control_batch(NOOP_CONTROL_TYPE, &value, NO_TIMESTAMP);
                batch::set_base_offset(&mut b, at);
                Ok(b.freeze())
            }
            EntryKind::Normal => {
                // Checked here so that a bad entry anywhere in the call appends nothing, even
                // in a later run of another term. A peer's batch gets its one CRC check here
                // (the records inside were validated by the leader, where the batch entered
                // the broker; the CRC proves these are those bytes); a proposed batch was
                // validated at that edge already, so only its header is parsed.
                let header = match source {
                    Source::Peer => batch::check_integrity(&entry.payload),
                    Source::Proposed => batch::parse_header(&entry.payload),
                }
                .map_err(|e| bad(entry.index, e))?;
                if header.total_len() != entry.payload.len() {
                    return Err(bad(
                        entry.index,
                        format!(
                            "payload of {} bytes holds more than one batch of {}",
                            entry.payload.len(),
                            header.total_len()
                        ),
                    ));
                }
                if header.is_control() {
                    return Err(bad(entry.index, "a client entry cannot be a control batch"));
                }
                if header.base_offset != at {
                    return Err(SegmentLogError::OffsetMismatch {
                        index: entry.index,
                        base_offset: header.base_offset,
                        log_end: at,
                    });
                }
                Ok(entry.payload.clone())
            }
        }
    }

    /// Entries `from..=until` (in the log), as many as `max_read_bytes` allows (at least
    /// one): from `recent` when it holds them, else read from the store.
    fn read_entries(&self, from: Index, until: Index) -> Result<Vec<Entry>, SegmentLogError> {
        if let Some(entries) = self.recent.read(from, until, self.max_read_bytes) {
            return Ok(entries);
        }
        let (Some(mut offset), Some(stop)) = (self.end_offset(from - 1), self.end_offset(until))
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut index = from;
        let mut budget = self.max_read_bytes;
        while index <= until {
            let chunk = self.store.read(offset, stop, budget)?;
            if chunk.is_empty() {
                return Err(corrupt(offset, "the log returned nothing for an entry"));
            }
            let mut pos = 0usize;
            for header in batch::headers(&chunk) {
                let header = header.map_err(|e| corrupt(offset, e.to_string()))?;
                let len = header.total_len();
                // The first batch of a later read comes whole even past the budget: leave it
                // for the next call.
                if !out.is_empty() && len > budget {
                    return Ok(out);
                }
                let end = pos.saturating_add(len);
                let whole = chunk
                    .get(pos..end)
                    .ok_or_else(|| corrupt(offset, "batch overruns the read"))?;
                out.push(self.entry_at(index, offset, &header, whole, &chunk, pos..end)?);
                budget = budget.saturating_sub(len);
                pos = end;
                offset = next_offset(&header)?;
                index = index.saturating_add(1);
                if index > until || budget == 0 {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The entry `index` read back from its batch `whole` (= `chunk[range]`) at `offset`,
    /// checked against the in-memory index.
    fn entry_at(
        &self,
        index: Index,
        offset: i64,
        header: &BatchHeader,
        whole: &[u8],
        chunk: &Bytes,
        range: std::ops::Range<usize>,
    ) -> Result<Entry, SegmentLogError> {
        let term = stored_term(header)?;
        if header.base_offset != offset
            || Some(term) != self.term(index)
            || Some(next_offset(header)?) != self.end_offset(index)
        {
            return Err(corrupt(
                header.base_offset,
                format!("batch does not match entry {index} (expected at offset {offset})"),
            ));
        }
        let kind = stored_kind(header, whole)?;
        let payload = match kind {
            EntryKind::Normal => chunk.slice(range),
            EntryKind::Noop => Bytes::new(),
        };
        Ok(Entry {
            term,
            index,
            kind,
            payload,
        })
    }

    /// Deletes the whole segments below the end of entry `index` (compacted up to there or
    /// less), after saving the new start durably.
    fn compact_through(&mut self, index: Index) -> Result<(), SegmentLogError> {
        let Some(limit) = self.end_offset(index) else {
            return Ok(());
        };
        let start = self.store.start_after_deleting_before(limit);
        if start <= self.start_offset {
            return Ok(());
        }
        // A segment starts at a batch boundary: the first kept entry starts at `start`.
        let last = self.last_index();
        let new_base = if self.end_offset(last) == Some(start) {
            last
        } else {
            self.index_for_offset(start)
                .and_then(|i| i.checked_sub(1))
                .ok_or_else(|| corrupt(start, "segment start outside the log"))?
        };
        let (Some(term), Some(end)) = (self.term(new_base), self.end_offset(new_base)) else {
            return Err(corrupt(start, "segment start outside the log"));
        };
        if end != start {
            return Err(corrupt(start, "a segment starts inside a batch"));
        }
        self.store.save_start(&LogStart {
            index: new_base,
            term,
            offset: start,
            resetting: false,
        })?;
        let now = self.store.delete_segments_before(start)?;
        if now != start {
            return Err(corrupt(now, format!("retention stopped short of {start}")));
        }
        let dropped =
            usize::try_from(new_base - self.base).map_err(|_| corrupt(start, "index overflow"))?;
        self.ends.drain(..dropped.min(self.ends.len()));
        let first = new_base.saturating_add(1);
        if self.ends.is_empty() {
            self.terms.clear();
        } else {
            // Keep the run holding `first` (it starts there now) and the later ones.
            let holding = self
                .terms
                .partition_point(|&(_, f)| f <= first)
                .saturating_sub(1);
            self.terms.drain(..holding);
            if let Some(run) = self.terms.first_mut() {
                run.1 = run.1.max(first);
            }
        }
        self.recent.drop_through(new_base);
        self.base = new_base;
        self.base_term = term;
        self.start_offset = start;
        Ok(())
    }

    /// Restarts the log empty after `(index, term)` at the leader's log-start offset.
    fn install(&mut self, index: Index, term: Term, payload: &[u8]) -> Result<(), SegmentLogError> {
        let offset = <[u8; 8]>::try_from(payload)
            .ok()
            .map(i64::from_be_bytes)
            .filter(|&o| o >= 0)
            .ok_or_else(|| bad(index, "a snapshot payload is a log-start offset (8 bytes)"))?;
        epoch_of(term, index)?;
        self.recent.clear();
        let record = LogStart {
            index,
            term,
            offset,
            resetting: true,
        };
        self.store.save_start(&record)?;
        self.store.reset_to(offset)?;
        self.store.save_start(&LogStart {
            resetting: false,
            ..record
        })?;
        self.base = index;
        self.base_term = term;
        self.start_offset = offset;
        self.ends.clear();
        self.terms.clear();
        Ok(())
    }

    fn truncate_from(&mut self, from: Index) -> Result<(), SegmentLogError> {
        // First, whatever happens below: `recent` never holds an entry the log may not.
        self.recent.truncate_from(from);
        let keep = from
            .checked_sub(self.base)
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| corrupt(0, "index overflow"))?;
        let Some(offset) = self.end_offset(from - 1) else {
            return Ok(());
        };
        self.store.truncate_to(offset)?;
        self.ends.truncate(keep);
        let runs = self.terms.partition_point(|&(_, first)| first < from);
        self.terms.truncate(runs);
        Ok(())
    }
}

impl<S: BatchStore> RaftLog for SegmentRaftLog<S> {
    fn first_index(&self) -> Index {
        self.base.saturating_add(1)
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        let last = self.last_index();
        if index > last {
            return Err(StorageError::OutOfRange { index, last });
        }
        if index <= self.base {
            return Ok(());
        }
        Ok(self.compact_through(index)?)
    }

    fn snapshot_payload(&self) -> Bytes {
        if self.base == 0 {
            return Bytes::new();
        }
        Bytes::copy_from_slice(&self.start_offset.to_be_bytes())
    }

    fn install_snapshot(
        &mut self,
        index: Index,
        term: Term,
        payload: Bytes,
    ) -> Result<(), StorageError> {
        Ok(self.install(index, term, &payload)?)
    }

    fn last_index(&self) -> Index {
        let len = Index::try_from(self.ends.len()).unwrap_or(Index::MAX);
        self.base.saturating_add(len)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        if index < self.base || index > self.last_index() {
            return None;
        }
        let run = self.terms.partition_point(|&(_, first)| first <= index);
        run.checked_sub(1)
            .and_then(|r| self.terms.get(r))
            .map(|&(t, _)| t)
    }

    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if from < self.first_index() || from > last.saturating_add(1) {
            return Err(StorageError::OutOfRange { index: from, last });
        }
        if from > last || max == 0 {
            return Ok(Vec::new());
        }
        let wanted = Index::try_from(max).unwrap_or(Index::MAX);
        let until = from.saturating_add(wanted.saturating_sub(1)).min(last);
        Ok(self.read_entries(from, until)?)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        super::storage::check_contiguous(self.last_index(), entries)?;
        Ok(self.append_entries(entries, Source::Peer)?)
    }

    fn append_proposed(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        super::storage::check_contiguous(self.last_index(), entries)?;
        Ok(self.append_entries(entries, Source::Proposed)?)
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        let last = self.last_index();
        if from < self.first_index() || from > last.saturating_add(1) {
            return Err(StorageError::OutOfRange { index: from, last });
        }
        Ok(self.truncate_from(from)?)
    }
}

/// The entries of one run (`batches` as given to the store, `ends` their `(index, end
/// offset)`) as [`SegmentRaftLog::entries`] reads them back once stored with `epoch`, each with
/// its stored length. A batch whose epoch field already says `epoch` (a leader's proposals, set
/// in `cluster::Replica::propose`) is shared, not copied.
fn stored_entries(
    term: Term,
    epoch: i32,
    batches: &[Bytes],
    ends: &[(Index, i64)],
) -> Vec<(Entry, usize)> {
    batches
        .iter()
        .zip(ends)
        .map(|(b, &(index, _))| {
            // `encode_entry` parsed every header; a client batch is never a control batch.
            let header = batch::parse_header(b).ok();
            let (kind, payload) = match header {
                Some(h) if h.is_control() => (EntryKind::Noop, Bytes::new()),
                Some(h) if h.partition_leader_epoch != epoch => {
                    let mut stamped = BytesMut::from(&b[..]);
                    batch::set_leader_epoch(&mut stamped, epoch);
                    (EntryKind::Normal, stamped.freeze())
                }
                _ => (EntryKind::Normal, b.clone()),
            };
            let entry = Entry {
                term,
                index,
                kind,
                payload,
            };
            (entry, b.len())
        })
        .collect()
}

/// The Kafka leader epoch for `term` (entry `index`, for the error).
fn epoch_of(term: Term, index: Index) -> Result<i32, SegmentLogError> {
    match i32::try_from(term) {
        Ok(epoch) if epoch >= 1 => Ok(epoch),
        _ => Err(bad(
            index,
            format!("term {term} is not a Kafka leader epoch (1..=i32::MAX)"),
        )),
    }
}

/// The Raft term a stored batch was written in: its leader epoch, which must be >= 1.
fn stored_term(header: &BatchHeader) -> Result<Term, SegmentLogError> {
    Term::try_from(header.partition_leader_epoch)
        .ok()
        .filter(|&t| t >= 1)
        .ok_or_else(|| {
            corrupt(
                header.base_offset,
                format!(
                    "leader epoch {} is not a Raft term (written before replication?)",
                    header.partition_leader_epoch
                ),
            )
        })
}

/// Whether a stored batch is a client batch or a stored `Noop`; any other control batch is
/// refused (produce never stores one).
fn stored_kind(header: &BatchHeader, whole: &[u8]) -> Result<EntryKind, SegmentLogError> {
    if !header.is_control() {
        return Ok(EntryKind::Normal);
    }
    match control_record_type(whole) {
        Some(NOOP_CONTROL_TYPE) if header.record_count == 1 => Ok(EntryKind::Noop),
        other => Err(corrupt(
            header.base_offset,
            format!("control batch of type {other:?} is not a Raft no-op"),
        )),
    }
}

/// The offset after a stored batch, refusing impossible headers.
fn next_offset(header: &BatchHeader) -> Result<i64, SegmentLogError> {
    u32::try_from(header.last_offset_delta)
        .ok()
        .and_then(|delta| header.base_offset.checked_add(i64::from(delta)))
        .and_then(|last| last.checked_add(1))
        .ok_or_else(|| corrupt(header.base_offset, "impossible last offset delta"))
}

fn corrupt(offset: i64, reason: impl Into<String>) -> SegmentLogError {
    SegmentLogError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

fn bad(index: Index, reason: impl std::fmt::Display) -> SegmentLogError {
    SegmentLogError::BadEntry {
        index,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};
    use crate::log::file::{FileLog, FileLogConfig};
    use crate::log::memory::MemLog;
    use crate::log::RetentionPolicy;
    use crate::raft::storage::{contract_compaction_with, contract_with, MemRaftLog};

    /// A batch of `records` records at `base_offset`, stored as in term `term`.
    fn batch_at(base_offset: i64, term: Term, records: usize, tag: &str) -> Bytes {
        let recs: Vec<Record> = (0..records)
            .map(|i| Record {
                key: Some(format!("k{i}").into_bytes()),
                value: Some(format!("{tag}/{i}").into_bytes()),
                headers: Vec::new(),
                timestamp: 1_700_000_000_000 + i64::try_from(i).unwrap(),
            })
            .collect();
        let mut b = encode_batch(&recs, ProducerInfo::default());
        batch::set_base_offset(&mut b, base_offset);
        batch::set_leader_epoch(&mut b, i32::try_from(term).unwrap());
        b.freeze()
    }

    /// The log end offset of the store underneath (`BatchStore`'s, not `PartitionLog`'s: both
    /// are in scope here).
    fn end_of<S: BatchStore>(log: &SegmentRaftLog<S>) -> i64 {
        log.store().log_end_offset()
    }

    fn read_all<S: BatchStore>(log: &SegmentRaftLog<S>) -> Bytes {
        log.store().read(0, i64::MAX, usize::MAX).unwrap()
    }

    fn normal(index: Index, term: Term, payload: Bytes) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            payload,
        }
    }

    fn noop(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Noop,
            payload: Bytes::new(),
        }
    }

    /// The contract's payloads as batches: its entries each take one offset, so entry `i`
    /// starts at offset `i - 1`.
    fn contract_payload(index: Index, term: Term) -> Bytes {
        let base = i64::try_from(index).unwrap() - 1;
        batch_at(base, term, 1, &format!("{index}@{term}"))
    }

    fn file_log(dir: &Path) -> FileLog {
        FileLog::open(dir, small_segments()).unwrap()
    }

    /// Several batches per segment, so reads and truncations cross segment boundaries.
    fn small_segments() -> FileLogConfig {
        FileLogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            segment_ms: None,
            ..FileLogConfig::default()
        }
    }

    #[test]
    fn raft_segment_log_over_mem_log_meets_the_contract() {
        let log = SegmentRaftLog::open(MemLog::with_config(small_segments())).unwrap();
        contract_with(log, contract_payload);
    }

    #[test]
    fn raft_segment_log_over_file_log_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentRaftLog::open(file_log(dir.path())).unwrap();
        contract_with(log, contract_payload);
    }

    /// A partition log with its start record kept in memory (as `PartitionStore` keeps it in
    /// a file).
    struct Recorded<L> {
        log: L,
        start: Option<LogStart>,
        saves: usize,
    }

    impl<L: PartitionLog> Recorded<L> {
        fn new(log: L) -> Self {
            Self {
                log,
                start: None,
                saves: 0,
            }
        }
    }

    impl<L: PartitionLog> BatchStore for Recorded<L> {
        fn append_batch(&mut self, b: IntactBatches, epoch: i32) -> Result<AppendInfo, LogError> {
            PartitionLog::append_intact(&mut self.log, b, epoch)
        }
        fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
            PartitionLog::truncate_to(&mut self.log, offset)
        }
        fn read(&self, offset: i64, max_offset: i64, max: usize) -> Result<Bytes, LogError> {
            PartitionLog::read(&self.log, offset, max_offset, max)
        }
        fn log_start_offset(&self) -> i64 {
            PartitionLog::log_start_offset(&self.log)
        }
        fn log_end_offset(&self) -> i64 {
            PartitionLog::log_end_offset(&self.log)
        }
        fn load_start(&self) -> Result<Option<LogStart>, LogError> {
            Ok(self.start)
        }
        fn save_start(&mut self, start: &LogStart) -> Result<(), LogError> {
            self.start = Some(*start);
            self.saves += 1;
            Ok(())
        }
        fn start_after_deleting_before(&self, offset: i64) -> i64 {
            BatchStore::start_after_deleting_before(&self.log, offset)
        }
        fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
            PartitionLog::delete_segments_before(&mut self.log, offset)
        }
        fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
            PartitionLog::reset_to(&mut self.log, offset)
        }
    }

    fn one_batch_per_segment() -> FileLogConfig {
        FileLogConfig {
            segment_bytes: 1,
            index_interval_bytes: 1,
            segment_ms: None,
            ..FileLogConfig::default()
        }
    }

    fn start_payload(index: Index) -> Bytes {
        Bytes::copy_from_slice(&i64::try_from(index).unwrap().to_be_bytes())
    }

    #[test]
    fn raft_segment_log_meets_the_compaction_contract() {
        for config in [one_batch_per_segment(), small_segments()] {
            let store = Recorded::new(MemLog::with_config(config));
            let log = SegmentRaftLog::open(store).unwrap();
            contract_compaction_with(log, false, contract_payload, start_payload);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Recorded::new(FileLog::open(dir.path(), one_batch_per_segment()).unwrap());
        let log = SegmentRaftLog::open(store).unwrap();
        contract_compaction_with(log, false, contract_payload, start_payload);
    }

    /// A segment log seen through [`RaftLog::append_proposed`] only (a leader's appends): the
    /// contracts must hold the same with its recent entries served from memory.
    struct Proposing<S>(SegmentRaftLog<S>);

    impl<S: BatchStore> RaftLog for Proposing<S> {
        fn first_index(&self) -> Index {
            self.0.first_index()
        }
        fn last_index(&self) -> Index {
            self.0.last_index()
        }
        fn term(&self, index: Index) -> Option<Term> {
            self.0.term(index)
        }
        fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
            self.0.entries(from, max)
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            self.0.append_proposed(entries)
        }
        fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
            self.0.truncate(from)
        }
        fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
            self.0.compact_to(index)
        }
        fn snapshot_payload(&self) -> Bytes {
            self.0.snapshot_payload()
        }
        fn install_snapshot(
            &mut self,
            index: Index,
            term: Term,
            payload: Bytes,
        ) -> Result<(), StorageError> {
            self.0.install_snapshot(index, term, payload)
        }
    }

    #[test]
    fn raft_segment_log_appending_as_leader_meets_the_contracts() {
        for recent in [DEFAULT_RECENT_BYTES, 150, 0] {
            let log = SegmentRaftLog::open(MemLog::with_config(small_segments())).unwrap();
            contract_with(Proposing(log.with_recent_bytes(recent)), contract_payload);
            for config in [one_batch_per_segment(), small_segments()] {
                let store = Recorded::new(MemLog::with_config(config));
                let log = SegmentRaftLog::open(store)
                    .unwrap()
                    .with_recent_bytes(recent);
                contract_compaction_with(Proposing(log), false, contract_payload, start_payload);
            }
        }
    }

    #[test]
    fn a_proposal_reads_back_with_its_epoch_stamped_and_a_peer_append_clears_recent() {
        let mut log = SegmentRaftLog::open(MemLog::new()).unwrap();
        // A client's batch (epoch -1), as proposed, is read back as stored: epoch = term.
        let mut client = BytesMut::from(&batch_at(0, 1, 2, "c")[..]);
        batch::set_leader_epoch(&mut client, -1);
        let proposed = normal(1, 3, client.freeze());
        log.append_proposed(std::slice::from_ref(&proposed))
            .unwrap();
        log.append_proposed(&[noop(2, 3)]).unwrap();
        assert_eq!(log.recent.entries.len(), 2, "served from memory");
        let cached = log.entries(1, 10).unwrap();
        assert_eq!(cached[0].payload, batch_at(0, 3, 2, "c"));
        assert_eq!(cached[1], noop(2, 3));
        let stored = read_all(&log);
        assert_eq!(
            batch::parse_header(&stored).unwrap().partition_leader_epoch,
            3
        );
        // A proposal whose epoch is already its term is shared, not copied.
        let shared = batch_at(end_of(&log), 3, 1, "s");
        log.append_proposed(&[normal(3, 3, shared.clone())])
            .unwrap();
        let back = log.entries(3, 1).unwrap();
        assert_eq!(back[0].payload.as_ptr(), shared.as_ptr());
        // The same entries read from the store are equal.
        let cold = SegmentRaftLog::open(log.into_store()).unwrap();
        assert_eq!(
            cold.entries(1, 10).unwrap(),
            cached.into_iter().chain(back).collect::<Vec<_>>()
        );
        // A follower's append empties it.
        let mut log = cold;
        log.append_proposed(&[normal(4, 3, batch_at(end_of(&log), 3, 1, "p"))])
            .unwrap();
        assert_eq!(log.recent.entries.len(), 1);
        log.append(&[normal(5, 3, batch_at(end_of(&log), 3, 1, "f"))])
            .unwrap();
        assert!(log.recent.entries.is_empty());
    }

    #[test]
    fn raft_segment_log_plain_partition_log_never_compacts() {
        let mut log = SegmentRaftLog::open(MemLog::with_config(one_batch_per_segment())).unwrap();
        append_spec(&mut log, MIXED);
        assert!(log.compact_to(4).is_err(), "no place for the start record");
        assert_eq!(log.first_index(), 1);
        assert_eq!(
            PartitionLog::log_start_offset(log.store()),
            0,
            "nothing deleted"
        );
    }

    #[test]
    fn raft_segment_log_start_survives_a_reopen_and_crashes_midway() {
        let dir = tempfile::tempdir().unwrap();
        let open = |start| {
            let store = Recorded {
                log: FileLog::open(dir.path(), one_batch_per_segment()).unwrap(),
                start,
                saves: 0,
            };
            SegmentRaftLog::open(store).unwrap()
        };
        let mut log = open(None);
        let entries = append_spec(&mut log, MIXED);
        log.compact_to(5).unwrap();
        assert_eq!(log.first_index(), 6);
        assert_eq!(log.term(5), Some(entries[4].term));
        assert_eq!(log.store().saves, 1);
        let kept = log.entries(6, 100).unwrap();
        assert_eq!(kept, entries[5..].to_vec());
        let epochs = log.epoch_starts();
        let start = log.into_store().start;

        // A reopen gives back the same log.
        let log = open(start);
        assert_eq!((log.first_index(), log.last_index()), (6, 12));
        assert_eq!(log.entries(6, 100).unwrap(), kept);
        assert_eq!(log.epoch_starts(), epochs);
        assert_eq!(log.term(5), Some(entries[4].term));
        assert_eq!(log.term(4), None);
        drop(log);

        // A crash after the record of a later start, before the deletion: open finishes it.
        let record = LogStart {
            index: 8,
            term: entries[7].term,
            offset: open(start).end_offset(8).unwrap(),
            resetting: false,
        };
        let log = open(Some(record));
        assert_eq!(log.first_index(), 9);
        assert_eq!(log.store().log_start_offset(), record.offset);
        assert_eq!(log.entries(9, 100).unwrap(), entries[8..].to_vec());
        drop(log);

        // A crash in the middle of a snapshot install: open redoes the reset.
        let installing = LogStart {
            index: 40,
            term: 9,
            offset: 77,
            resetting: true,
        };
        let log = open(Some(installing));
        assert_eq!((log.first_index(), log.last_index()), (41, 40));
        assert_eq!(log.term(40), Some(9));
        assert_eq!(log.store().log_start_offset(), 77);
        assert_eq!(log.store().log_end_offset(), 77);
        assert_eq!(log.snapshot_payload(), start_payload(77));
        assert!(!log.store().start.unwrap().resetting);
    }

    #[test]
    fn raft_segment_log_refuses_a_bad_snapshot_payload() {
        let store = Recorded::new(MemLog::new());
        let mut log = SegmentRaftLog::open(store).unwrap();
        for payload in [
            Bytes::new(),
            Bytes::from_static(b"1234567"),
            start_payload(0).slice(..4),
        ] {
            assert!(log.install_snapshot(5, 1, payload).is_err());
        }
        let negative = Bytes::copy_from_slice(&(-1i64).to_be_bytes());
        assert!(log.install_snapshot(5, 1, negative).is_err());
        assert!(
            log.install_snapshot(5, 0, start_payload(5)).is_err(),
            "term 0 is no epoch"
        );
        assert_eq!(log.first_index(), 1);
    }

    #[test]
    fn raft_segment_log_over_a_boxed_partition_log_meets_the_contract() {
        let boxed: Box<dyn PartitionLog> = Box::new(MemLog::new());
        contract_with(SegmentRaftLog::open(boxed).unwrap(), contract_payload);
    }

    /// Appends `spec` (`(term, records)`, 0 records = a no-op) after the log's end, each entry
    /// on its own, as a leader would; returns the entries.
    fn append_spec<S: BatchStore>(
        log: &mut SegmentRaftLog<S>,
        spec: &[(Term, usize)],
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        for &(term, records) in spec {
            let index = log.last_index() + 1;
            let at = end_of(log);
            let e = if records == 0 {
                noop(index, term)
            } else {
                normal(
                    index,
                    term,
                    batch_at(at, term, records, &format!("e{index}")),
                )
            };
            log.append(std::slice::from_ref(&e)).unwrap();
            out.push(e);
        }
        out
    }

    const MIXED: &[(Term, usize)] = &[
        (1, 0),
        (1, 3),
        (1, 1),
        (2, 0),
        (2, 5),
        (3, 0),
        (5, 0),
        (5, 2),
        (5, 1),
        (5, 4),
        (7, 0),
        (7, 1),
    ];

    /// Everything the lead can ask: last index, terms, entries, offsets.
    fn snapshot<S: BatchStore>(log: &SegmentRaftLog<S>) -> Seen {
        let last = log.last_index();
        Seen {
            last,
            terms: (0..=last + 1).map(|i| log.term(i)).collect(),
            entries: log.entries(1, usize::MAX).unwrap(),
            ends: (0..=last + 1).map(|i| log.end_offset(i)).collect(),
        }
    }

    /// What [`snapshot`] saw.
    #[derive(Debug, PartialEq)]
    struct Seen {
        last: Index,
        terms: Vec<Option<Term>>,
        entries: Vec<Entry>,
        ends: Vec<Option<i64>>,
    }

    #[test]
    fn epoch_starts_are_each_terms_first_offset_and_follow_truncation() {
        let mut log = SegmentRaftLog::open(MemLog::new()).unwrap();
        assert_eq!(log.epoch_starts(), vec![]);
        append_spec(&mut log, MIXED);
        // Offsets: term 1 = no-op@0, 3 records, 1 record; term 2 = no-op@5, 5 records;
        // term 3 = no-op@11; term 5 = no-op@12, ...; term 7 = no-op@20, 1 record.
        assert_eq!(
            log.epoch_starts(),
            vec![(1, 0), (2, 5), (3, 11), (5, 12), (7, 20)]
        );
        // Brute force: the first offset of each term, read from the stored batches.
        let mut seen: Vec<(Term, i64)> = Vec::new();
        for h in batch::headers(&read_all(&log)) {
            let h = h.unwrap();
            let t = Term::try_from(h.partition_leader_epoch).unwrap();
            if seen.last().is_none_or(|&(last, _)| last != t) {
                seen.push((t, h.base_offset));
            }
        }
        assert_eq!(log.epoch_starts(), seen);
        // Cutting term 7 and the tail of term 5 drops the run of 7 only.
        log.truncate(10).unwrap();
        assert_eq!(log.epoch_starts(), vec![(1, 0), (2, 5), (3, 11), (5, 12)]);
        // A reopened log rebuilds the same history from the batch headers.
        let reopened = SegmentRaftLog::open(log.into_store()).unwrap();
        assert_eq!(
            reopened.epoch_starts(),
            vec![(1, 0), (2, 5), (3, 11), (5, 12)]
        );
    }

    #[test]
    fn offsets_map_both_ways() {
        let mut log = SegmentRaftLog::open(MemLog::new()).unwrap();
        let entries = append_spec(&mut log, MIXED);
        assert_eq!(log.entries(1, usize::MAX).unwrap(), entries);
        assert_eq!(log.end_offset(0), Some(0));
        assert_eq!(log.end_offset(1), Some(1)); // the no-op takes one offset
        assert_eq!(log.end_offset(2), Some(4));
        assert_eq!(log.end_offset(5), Some(11));
        let last = log.last_index();
        assert_eq!(log.end_offset(last), Some(end_of(&log)));
        assert_eq!(log.end_offset(last + 1), None);
        assert_eq!(log.index_for_offset(-1), None);
        assert_eq!(log.index_for_offset(0), Some(1));
        assert_eq!(log.index_for_offset(1), Some(2));
        assert_eq!(log.index_for_offset(3), Some(2));
        assert_eq!(log.index_for_offset(4), Some(3));
        assert_eq!(log.index_for_offset(end_of(&log)), None);
        for index in 1..=last {
            let (from, to) = (
                log.end_offset(index - 1).unwrap(),
                log.end_offset(index).unwrap(),
            );
            for offset in from..to {
                assert_eq!(log.index_for_offset(offset), Some(index));
            }
        }
        // Every stored batch carries its term as leader epoch; no-ops are control batches.
        let all = read_all(&log);
        let headers: Vec<_> = batch::headers(&all).map(Result::unwrap).collect();
        assert_eq!(headers.len(), entries.len());
        for (h, e) in headers.iter().zip(&entries) {
            assert_eq!(Term::try_from(h.partition_leader_epoch).unwrap(), e.term);
            assert_eq!(h.is_control(), e.kind == EntryKind::Noop);
        }
    }

    #[test]
    fn a_follower_append_of_several_terms_lands_like_the_leaders() {
        let mut leader = SegmentRaftLog::open(MemLog::new()).unwrap();
        let entries = append_spec(&mut leader, MIXED);
        let mut follower = SegmentRaftLog::open(MemLog::new()).unwrap();
        follower.append(&entries[..4]).unwrap();
        follower.append(&entries[4..]).unwrap();
        assert_eq!(snapshot(&follower), snapshot(&leader));
        assert_eq!(
            read_all(&follower),
            read_all(&leader),
            "byte-identical replicas"
        );
    }

    #[test]
    fn appends_that_do_not_fit_change_nothing() {
        let mut log = SegmentRaftLog::open(MemLog::new()).unwrap();
        append_spec(&mut log, &[(1, 0), (1, 2)]);
        let before = snapshot(&log);
        let end = end_of(&log);
        let good = normal(3, 2, batch_at(end, 2, 1, "ok"));
        let cases = vec![
            // A base offset that is not the log end: divergence.
            vec![normal(3, 2, batch_at(end + 1, 2, 1, "ahead"))],
            vec![good.clone(), normal(4, 2, batch_at(end, 2, 1, "again"))],
            // Not exactly one batch.
            vec![normal(3, 2, Bytes::from_static(b"not a batch"))],
            vec![normal(3, 2, {
                let mut two = batch_at(end, 2, 1, "a").to_vec();
                two.extend_from_slice(&batch_at(end + 1, 2, 1, "b"));
                Bytes::from(two)
            })],
            // A control batch from a client, a no-op with a payload.
            vec![normal(3, 2, {
                let mut b = encode_control_batch(control_type::COMMIT, &[], 0);
                batch::set_base_offset(&mut b, end);
                b.freeze()
            })],
            vec![Entry {
                payload: Bytes::from_static(b"x"),
                ..noop(3, 2)
            }],
            // A bad CRC in a later run of another term: the first run is not appended either.
            vec![
                good.clone(),
                normal(4, 3, {
                    let mut b = batch_at(end + 1, 3, 1, "crc").to_vec();
                    let last = b.len() - 1;
                    b[last] ^= 1;
                    Bytes::from(b)
                }),
            ],
            // Terms that are not Kafka leader epochs.
            vec![normal(3, u64::from(u32::MAX), batch_at(end, 1, 1, "big"))],
            vec![noop(3, 0)],
        ];
        for entries in cases {
            let err = log.append(&entries).unwrap_err();
            assert!(matches!(err, StorageError::Io(_)), "{err}");
            assert_eq!(snapshot(&log), before, "after refusing {entries:?}");
            assert_eq!(end_of(&log), end);
        }
        log.append(&[good]).unwrap();
    }

    #[test]
    fn entries_read_a_bounded_number_of_bytes_but_at_least_one_entry() {
        let mut log = SegmentRaftLog::open(MemLog::new()).unwrap();
        let entries = append_spec(&mut log, &[(1, 4), (1, 4), (1, 0), (1, 4), (1, 4)]);
        let big = batch_at(0, 1, 4, "e1").len();
        let log = log.with_max_read_bytes(1);
        assert_eq!(log.entries(1, 10).unwrap(), entries[..1].to_vec());
        let log = log.with_max_read_bytes(2 * big);
        assert_eq!(log.entries(1, 10).unwrap(), entries[..2].to_vec());
        let log = log.with_max_read_bytes(2 * big + 1);
        assert_eq!(log.entries(2, 10).unwrap(), entries[1..3].to_vec());
        let log = log.with_max_read_bytes(DEFAULT_MAX_READ_BYTES);
        assert_eq!(log.entries(2, 2).unwrap(), entries[1..3].to_vec());
        assert_eq!(log.entries(1, 0).unwrap(), vec![]);
        assert_eq!(log.entries(5, 10).unwrap(), entries[4..].to_vec());
    }

    #[test]
    fn a_restart_gives_back_the_same_raft_log() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let mut log = SegmentRaftLog::open(file_log(dir.path())).unwrap();
            append_spec(&mut log, MIXED);
            log.truncate(11).unwrap(); // a conflict cut...
            append_spec(&mut log, &[(8, 0), (8, 3), (8, 1)]); // ...and a new leader
            snapshot(&log)
        };
        let log = SegmentRaftLog::open(file_log(dir.path())).unwrap();
        assert!(log.store().segment_count() > 1);
        assert_eq!(snapshot(&log), before);
        assert_eq!(before.last, 13);
        for offset in 0..end_of(&log) {
            let index = log.index_for_offset(offset).unwrap();
            assert!(log.end_offset(index - 1).unwrap() <= offset);
            assert!(offset < log.end_offset(index).unwrap());
        }
    }

    #[test]
    fn a_torn_tail_reopens_to_the_last_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let mut log = SegmentRaftLog::open(file_log(dir.path())).unwrap();
            append_spec(&mut log, MIXED);
            snapshot(&log)
        };
        // Cut the active segment (the newest .log) in the middle of its last batch.
        let mut logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let active = logs.last().unwrap();
        let len = std::fs::metadata(active).unwrap().len();
        let last_len = u64::try_from(batch_at(0, 7, 1, "e12").len()).unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(active)
            .unwrap();
        file.set_len(len - last_len / 2).unwrap();
        drop(file);

        let log = SegmentRaftLog::open(file_log(dir.path())).unwrap();
        let Seen {
            last,
            terms,
            entries,
            ends,
        } = before;
        let n = usize::try_from(last).unwrap();
        assert_eq!(log.last_index(), last - 1);
        assert_eq!(
            log.entries(1, usize::MAX).unwrap(),
            entries[..n - 1].to_vec()
        );
        for i in 0..=last {
            let want = if i < last {
                terms[usize::try_from(i).unwrap()]
            } else {
                None
            };
            assert_eq!(log.term(i), want);
        }
        assert_eq!(log.end_offset(last - 1), ends[n - 1]);
        assert_eq!(Some(end_of(&log)), ends[n - 1]);
    }

    #[test]
    fn open_refuses_what_is_not_a_replicated_log() {
        // Retention moved the log start.
        let mut mem = MemLog::with_config(FileLogConfig {
            segment_bytes: 1,
            ..FileLogConfig::default()
        });
        for base in 0..3 {
            mem.append(BytesMut::from(&batch_at(base, 1, 1, "r")[..]).freeze(), 1)
                .unwrap();
        }
        let policy = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(1),
        };
        assert!(mem.enforce_retention(0, &policy).unwrap() > 0);
        let err = SegmentRaftLog::open(mem).unwrap_err();
        assert!(matches!(err, SegmentLogError::LogStartNotZero(_)), "{err}");
        assert!(err.to_string().contains("has no start record"), "{err}");

        // A batch written before replication (leader epoch 0).
        let mut mem = MemLog::new();
        mem.append(BytesMut::from(&batch_at(0, 1, 1, "old")[..]).freeze(), 0)
            .unwrap();
        let err = SegmentRaftLog::open(mem).unwrap_err();
        assert!(err.to_string().contains("not a Raft term"), "{err}");

        // Terms going down.
        let mut mem = MemLog::new();
        mem.append(BytesMut::from(&batch_at(0, 1, 1, "a")[..]).freeze(), 3)
            .unwrap();
        mem.append(BytesMut::from(&batch_at(1, 1, 1, "b")[..]).freeze(), 2)
            .unwrap();
        assert!(SegmentRaftLog::open(mem).is_err());

        // A control batch that is not a stored no-op.
        let mut mem = MemLog::new();
        mem.append(
            encode_control_batch(control_type::COMMIT, &[], 0).freeze(),
            1,
        )
        .unwrap();
        let err = SegmentRaftLog::open(mem).unwrap_err();
        assert!(err.to_string().contains("not a Raft no-op"), "{err}");
    }

    /// One step of the property test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Entries `(term bump, records; 0 = no-op)` appended in one call.
        Append(Vec<(u64, usize)>),
        /// Truncate at `last_index + 1 - back` (clamped).
        Truncate(u64),
        /// Drop the Raft log and open it again from its store.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec((0u64..2, 0usize..4), 1..5).prop_map(Op::Append),
            2 => (0u64..6).prop_map(Op::Truncate),
            1 => Just(Op::Reopen),
        ]
    }

    /// Runs `ops` against a segment log over the store `reopen` gives back, and a
    /// [`MemRaftLog`] model; they must agree after every step.
    fn run_model<S: BatchStore>(
        ops: &[Op],
        first: S,
        mut reopen: impl FnMut(S) -> S,
    ) -> Result<(), TestCaseError> {
        let mut log = Some(SegmentRaftLog::open(first).unwrap());
        let mut model = MemRaftLog::new();
        for op in ops {
            let seg = log.as_mut().unwrap();
            match op {
                Op::Append(spec) => {
                    let mut at = end_of(seg);
                    let mut term = model.term(model.last_index()).unwrap().max(1);
                    let mut entries = Vec::new();
                    for (i, &(bump, records)) in spec.iter().enumerate() {
                        term += bump;
                        let index = model.last_index() + 1 + Index::try_from(i).unwrap();
                        let e = if records == 0 {
                            noop(index, term)
                        } else {
                            normal(
                                index,
                                term,
                                batch_at(at, term, records, &format!("{index}")),
                            )
                        };
                        at += i64::try_from(records.max(1)).unwrap();
                        entries.push(e);
                    }
                    seg.append(&entries).unwrap();
                    model.append(&entries).unwrap();
                }
                Op::Truncate(back) => {
                    let from = (model.last_index() + 1).saturating_sub(*back).max(1);
                    seg.truncate(from).unwrap();
                    model.truncate(from).unwrap();
                }
                Op::Reopen => {
                    let store = reopen(log.take().unwrap().into_store());
                    log = Some(SegmentRaftLog::open(store).unwrap());
                }
            }
            let seg = log.as_ref().unwrap();
            let last = model.last_index();
            prop_assert_eq!(seg.last_index(), last);
            for i in 0..=last + 1 {
                prop_assert_eq!(seg.term(i), model.term(i));
            }
            prop_assert_eq!(seg.entries(1, usize::MAX).unwrap(), model.all().to_vec());
            prop_assert_eq!(seg.end_offset(last), Some(end_of(seg)));
            for i in 1..=last {
                let (from, to) = (seg.end_offset(i - 1).unwrap(), seg.end_offset(i).unwrap());
                prop_assert!(from < to);
                prop_assert_eq!(seg.index_for_offset(from), Some(i));
                prop_assert_eq!(seg.index_for_offset(to - 1), Some(i));
            }
        }
        Ok(())
    }

    /// One step of the recent-entries property test.
    #[derive(Debug, Clone)]
    enum LeaderOp {
        /// Entries `(term bump, records; 0 = no-op)` appended in one call, as proposals
        /// (`true`) or from a peer.
        Append(Vec<(u64, usize)>, bool),
        /// Truncate at `last_index + 1 - back` (clamped).
        Truncate(u64),
        /// Compact up to `last_index - back` (clamped; whole segments only).
        Compact(u64),
        /// Install a snapshot `ahead` entries past the last one.
        Install(u64),
    }

    fn leader_op() -> impl Strategy<Value = LeaderOp> {
        prop_oneof![
            6 => (proptest::collection::vec((0u64..2, 0usize..4), 1..4), proptest::bool::weighted(0.8))
                .prop_map(|(spec, proposed)| LeaderOp::Append(spec, proposed)),
            2 => (0u64..6).prop_map(LeaderOp::Truncate),
            1 => (0u64..8).prop_map(LeaderOp::Compact),
            1 => (1u64..3).prop_map(LeaderOp::Install),
        ]
    }

    /// A log that keeps `recent` bytes of recent entries and one that keeps none get the same
    /// operations; every `entries` call must answer the same on both, whatever the byte
    /// budget. Returns how many reads the first served from memory.
    fn run_recent(
        ops: &[LeaderOp],
        recent: usize,
        read_budget: usize,
    ) -> Result<usize, TestCaseError> {
        let open = |recent: usize| {
            let store = Recorded::new(MemLog::with_config(small_segments()));
            SegmentRaftLog::open(store)
                .unwrap()
                .with_recent_bytes(recent)
                .with_max_read_bytes(read_budget)
        };
        let (mut warm, mut cold) = (open(recent), open(0));
        let mut hits = 0;
        for op in ops {
            match op {
                LeaderOp::Append(spec, proposed) => {
                    let mut at = end_of(&warm);
                    let mut term = warm.term(warm.last_index()).unwrap().max(1);
                    let mut entries = Vec::new();
                    for (i, &(bump, records)) in spec.iter().enumerate() {
                        term += bump;
                        let index = warm.last_index() + 1 + Index::try_from(i).unwrap();
                        entries.push(if records == 0 {
                            noop(index, term)
                        } else {
                            // Odd indexes carry a client's epoch, as a proposal may.
                            let mut b = BytesMut::from(
                                &batch_at(at, term, records, &format!("{index}"))[..],
                            );
                            if index % 2 == 1 {
                                batch::set_leader_epoch(&mut b, -1);
                            }
                            normal(index, term, b.freeze())
                        });
                        at += i64::try_from(records.max(1)).unwrap();
                    }
                    for log in [&mut warm, &mut cold] {
                        if *proposed {
                            log.append_proposed(&entries).unwrap();
                        } else {
                            log.append(&entries).unwrap();
                        }
                    }
                }
                LeaderOp::Truncate(back) => {
                    let from = (warm.last_index() + 1)
                        .saturating_sub(*back)
                        .max(warm.first_index());
                    warm.truncate(from).unwrap();
                    cold.truncate(from).unwrap();
                }
                LeaderOp::Compact(back) => {
                    let upto = warm.last_index().saturating_sub(*back);
                    warm.compact_to(upto).unwrap();
                    cold.compact_to(upto).unwrap();
                }
                LeaderOp::Install(ahead) => {
                    let index = warm.last_index() + ahead;
                    let term = warm.term(warm.last_index()).unwrap().max(1);
                    let payload = Bytes::copy_from_slice(
                        &(end_of(&warm) + i64::try_from(*ahead).unwrap()).to_be_bytes(),
                    );
                    warm.install_snapshot(index, term, payload.clone()).unwrap();
                    cold.install_snapshot(index, term, payload).unwrap();
                }
            }
            let last = warm.last_index();
            prop_assert_eq!(
                (warm.first_index(), last),
                (cold.first_index(), cold.last_index())
            );
            for i in warm.first_index() - 1..=last + 1 {
                prop_assert_eq!(warm.term(i), cold.term(i));
                prop_assert_eq!(warm.end_offset(i), cold.end_offset(i));
            }
            prop_assert!(warm.recent.bytes <= recent);
            for from in warm.first_index()..=last + 1 {
                for max in [1, 2, 3, usize::MAX] {
                    prop_assert_eq!(
                        warm.entries(from, max).unwrap(),
                        cold.entries(from, max).unwrap(),
                        "entries({}, {})",
                        from,
                        max
                    );
                    if from <= last && warm.recent.read(from, last, usize::MAX).is_some() {
                        hits += 1;
                    }
                }
            }
        }
        Ok(hits)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn recent_entries_read_exactly_like_the_store(ops in proptest::collection::vec(leader_op(), 1..30), recent in prop_oneof![Just(DEFAULT_RECENT_BYTES), 100usize..600], budget in prop_oneof![Just(DEFAULT_MAX_READ_BYTES), 1usize..300]) {
            run_recent(&ops, recent, budget)?;
        }
    }

    #[test]
    fn recent_entries_serve_a_leaders_reads() {
        let ops: Vec<LeaderOp> = (0..20)
            .map(|_| LeaderOp::Append(vec![(0, 2)], true))
            .collect();
        assert!(run_recent(&ops, DEFAULT_RECENT_BYTES, DEFAULT_MAX_READ_BYTES).unwrap() > 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn raft_segment_log_over_mem_log_matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
            run_model(&ops, MemLog::with_config(small_segments()), |store| store)?;
        }

        #[test]
        fn raft_segment_log_over_file_log_matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            run_model(&ops, file_log(dir.path()), |store| {
                drop(store);
                file_log(dir.path())
            })?;
        }
    }
}
