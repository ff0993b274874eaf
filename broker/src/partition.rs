//! One partition: its log, the high watermark, and group-commit flushing.
//!
//! Log end offset (LEO) and high watermark (HW) are distinct: the log knows its end; the
//! partition decides what consumers may see. On a single node the HW follows the LEO after
//! each append (Kafka semantics for a one-replica partition); with replication it will follow
//! the Raft commit index instead. Durability is separate again: `flushed` is the LEO known to
//! be fsynced, and acks=all waits for it.
//!
//! The protocols themselves (publishing the HW over the log, the flushed offset and its
//! waiters) live in `runnel-sync` ([`Watermarked`], [`GroupCommit`]), where loom checks them;
//! this file is their shell: a `watch` that wakes long-polls when the HW moves, a `oneshot`
//! per acks=all waiter, and flushers on blocking threads (`crate::flusher`) that plan,
//! fsync and answer the waiters themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use runnel_sync::{
    GroupCommit, RwLockReadGuard, RwLockWriteGuard, StorageFailed, Waiter, Watermarked,
};
use tokio::sync::{oneshot, watch};

use crate::codec::batch::{self, BatchHeader, IntactBatches};
use crate::flusher::FlushSignal;
use crate::log::{AppendInfo, ClosedLog, LogError, PartitionLog, RetentionPolicy, TimestampOffset};
use crate::producers::{ProducerTable, SequenceCheck, SequenceError};

/// Per-partition settings derived from the topic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSettings {
    /// 0 = flush as soon as possible; otherwise the longest unflushed data may wait.
    pub flush_ms: u64,
    pub retention: RetentionPolicy,
    /// The partition is a Raft replica: appends come from its Raft group, and the high
    /// watermark follows the group's commit index instead of the log end.
    pub replicated: bool,
}

/// The offsets a client can ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub log_start: i64,
    pub high_watermark: i64,
    pub log_end: i64,
}

/// Why a produce could not be confirmed durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DurabilityError {
    #[error("timed out waiting for fsync")]
    TimedOut,
    #[error("the partition's storage failed")]
    StorageFailed,
}

/// Where an appended (or deduplicated) batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// True when the batch was a retry of one already in the log and nothing was appended.
    pub duplicate: bool,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// A replica's batches go through its Raft group (`cluster::replica`), never straight in.
    #[error("the partition is replicated; write through its leader's Kafka listener")]
    Replicated,
}

/// The log and the producer state derived from it, changed together under one lock.
struct State {
    log: Box<dyn PartitionLog>,
    producers: ProducerTable,
}

/// An acks=all (or Raft log sync) waiter: answered through its oneshot, abandoned once the
/// caller timed out and dropped the receiver.
struct DurableWaiter(oneshot::Sender<Result<(), StorageFailed>>);

impl Waiter for DurableWaiter {
    fn answer(self, outcome: Result<(), StorageFailed>) {
        let _ = self.0.send(outcome);
    }
    fn is_abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The log and the high watermark over it (the HW's source of truth).
    log: Watermarked<State>,
    leader_epoch: i32,
    /// Follows the HW in `log`, only to wake long-polling readers.
    high_watermark: watch::Sender<i64>,
    /// The flushed offset, the truncation count and the acks=all waiters.
    durability: GroupCommit<DurableWaiter>,
    /// Requests for group-commit rounds and the flusher's wake-up (shared with the flusher,
    /// which holds the partition only weakly).
    flush_wanted: Arc<FlushSignal>,
    /// This partition, for the flusher it starts.
    me: Weak<Partition>,
    /// Whether this node serves the partition's reads and writes: always on a single node;
    /// for a replica, while its Raft group says this node leads.
    leading: AtomicBool,
    settings: PartitionSettings,
    /// Where the flusher records each fsync's duration (shared by every partition).
    fsync_seconds: Histogram,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("index", &self.index)
            .finish()
    }
}

impl Partition {
    /// Wrap an opened log and start its flusher task (needs a tokio runtime). The producer
    /// table is rebuilt by replaying every batch header in the log.
    pub fn start(
        topic: &str,
        index: i32,
        log: Box<dyn PartitionLog>,
        settings: PartitionSettings,
        fsync_seconds: Histogram,
    ) -> Result<Arc<Self>, LogError> {
        // A replica serves nothing until its group says what is committed.
        let end = if settings.replicated {
            log.log_start_offset()
        } else {
            log.log_end_offset()
        };
        let flushed = log.flushed_offset();
        let producers = rebuild_producers(log.as_ref())?;
        let p = Arc::new_cyclic(|me| Self {
            topic: topic.to_owned(),
            index,
            log: Watermarked::new(State { log, producers }, end),
            leader_epoch: 0,
            high_watermark: watch::Sender::new(end),
            durability: GroupCommit::new(flushed),
            flush_wanted: Arc::default(),
            me: me.clone(),
            leading: AtomicBool::new(!settings.replicated),
            settings,
            fsync_seconds,
        });
        if settings.flush_ms > 0 {
            tokio::spawn(flush_periodically(Arc::downgrade(&p), settings.flush_ms));
        }
        Ok(p)
    }

    fn read_log(&self) -> RwLockReadGuard<'_, State> {
        self.log.read()
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, State> {
        self.log.write()
    }

    /// Raise the HW (never lowers it; every offset below `hw` must be in the log already) and
    /// wake the long-polls if it moved.
    fn publish_high_watermark(&self, hw: i64) {
        if self.log.publish(hw) {
            // The watch takes the HW as it is inside its own lock, so racing publishers
            // cannot move it back.
            self.high_watermark.send_if_modified(|h| {
                let now = self.log.high_watermark();
                let moved = now > *h;
                if moved {
                    *h = now;
                }
                moved
            });
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn is_failed(&self) -> bool {
        self.durability.is_failed()
    }

    /// Close the log now, whoever still holds this partition: its flushers end, the log is
    /// dropped (a file log trims its preallocated tail and marks the close clean) and a
    /// [`ClosedLog`] takes its place, so later requests get [`LogError::Closed`]. A broker
    /// opened on the same directory afterwards cannot race a late drop of this one.
    pub fn close(&self) {
        self.flush_wanted.close();
        let log = {
            let mut state = self.write_log();
            let closed = ClosedLog::after(&*state.log);
            std::mem::replace(&mut state.log, Box::new(closed))
        };
        drop(log);
    }

    /// Append one validated batch (`header` is its parsed header), unless it is a retry of an
    /// idempotent batch already in the log; publish the new high watermark; schedule a flush.
    pub fn append(
        &self,
        batch: impl Into<Bytes>,
        header: &BatchHeader,
    ) -> Result<Appended, AppendError> {
        if self.settings.replicated {
            return Err(AppendError::Replicated);
        }
        let appended = {
            let mut state = self.write_log();
            if let SequenceCheck::Duplicate(dup) = state.producers.check(header)? {
                return Ok(Appended {
                    base_offset: dup.base_offset,
                    last_offset: dup.last_offset,
                    duplicate: true,
                });
            }
            let info = state.log.append(batch.into(), self.leader_epoch)?;
            let stored = BatchHeader {
                base_offset: info.base_offset,
                ..*header
            };
            state.producers.record(&stored);
            // Single node: everything appended is committed. Publish under the lock, after
            // the append (the order the loom model checks).
            self.publish_high_watermark(state.log.log_end_offset());
            Appended {
                base_offset: info.base_offset,
                last_offset: info.last_offset,
                duplicate: false,
            }
        };
        if self.settings.flush_ms == 0 {
            self.request_flush_to(appended.last_offset.saturating_add(1));
        }
        Ok(appended)
    }

    /// Whether this node serves the partition (see `leading`).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Replica: the Raft group's view of whether this node leads.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Release);
    }

    pub fn is_replicated(&self) -> bool {
        self.settings.replicated
    }

    /// Replica: is this batch new, a retry of one in the log (committed or not), or out of
    /// sequence? Checked by the Raft task just before it proposes, so nothing appends between.
    pub fn check_sequence(&self, header: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        self.read_log().producers.check(header)
    }

    /// Replica: append batches exactly as the Raft log holds them (one or more consecutive
    /// entries of one term, the first's base offset already equal to the log end), stamped
    /// with `epoch`, and keep the producer table in step with every one of them. The high
    /// watermark does not move: only a commit moves it.
    pub fn replica_append(
        &self,
        batches: IntactBatches,
        epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        let info = {
            let mut state = self.write_log();
            let headers = batch::headers(batches.bytes()).collect::<Result<Vec<_>, _>>()?;
            let info = state.log.append_intact(batches, epoch)?;
            // The log assigned consecutive offsets from `info.base_offset`.
            let mut at = info.base_offset;
            for header in headers {
                let stored = BatchHeader {
                    base_offset: at,
                    ..header
                };
                state.producers.record(&stored);
                at = stored.next_offset();
            }
            info
        };
        self.request_flush_to(info.last_offset.saturating_add(1));
        Ok(info)
    }

    /// Replica: remove every batch from `offset` on (a Raft conflict), rebuild the producer
    /// table from what is left, and pull the flushed offset back so that acknowledgements wait
    /// for the batches that will replace them.
    pub fn replica_truncate(&self, offset: i64) -> Result<(), LogError> {
        let mut state = self.write_log();
        let cut = state.log.truncate_to(offset);
        // Even a failed cut may have removed part of the tail: no sync planned before it is
        // published, and the flushed offset is never above what the log now holds.
        self.durability.truncated(state.log.log_end_offset());
        cut?;
        state.producers = rebuild_producers(state.log.as_ref())?;
        Ok(())
    }

    /// Replica: where retention would start the log now, deleting only whole segments below
    /// the high watermark (committed data) and below `floor` (a retention hold, if any).
    pub fn retention_target(&self, now_ms: i64, floor: Option<i64>) -> i64 {
        let limit = self.log.high_watermark().min(floor.unwrap_or(i64::MAX));
        self.read_log()
            .log
            .retention_start(now_ms, &self.settings.retention, limit)
    }

    /// Replica: the log start after deleting every whole segment ending at or below `offset`.
    pub fn replica_start_after_deleting_before(&self, offset: i64) -> i64 {
        let keep_all = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(0),
        };
        self.read_log().log.retention_start(0, &keep_all, offset)
    }

    /// Replica: delete the whole segments ending at or below `offset` (the Raft log compacted
    /// up to there; never above the high watermark, so `log start <= HW` holds) and rebuild the
    /// producer table from what is kept, as Kafka does after retention.
    pub fn replica_delete_segments_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut state = self.write_log();
        let start = state.log.delete_segments_before(offset)?;
        state.producers = rebuild_producers(state.log.as_ref())?;
        Ok(start)
    }

    /// Replica: a snapshot install. Everything goes and the log restarts empty at `offset`,
    /// the leader's log start: everything below it is committed, so the high watermark moves
    /// there too (`log start == HW == LEO`). The producer table starts empty (what is kept).
    pub fn replica_reset(&self, offset: i64) -> Result<(), LogError> {
        let mut state = self.write_log();
        let reset = state.log.reset_to(offset);
        // Like a truncation: no sync planned before this is published, and the flushed
        // offset never above what the log holds.
        self.durability.truncated(state.log.log_end_offset());
        reset?;
        state.producers = rebuild_producers(state.log.as_ref())?;
        self.publish_high_watermark(offset);
        Ok(())
    }

    /// Replica: whole batches from `offset`, up to `max_offset`, committed or not (what the
    /// Raft log holds).
    pub fn replica_read(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
    ) -> Result<Bytes, LogError> {
        self.read_log().log.read(offset, max_offset, max_bytes)
    }

    /// Replica: the group committed everything below `hw`; consumers may now read it. Never
    /// moves backwards (a committed entry is never truncated).
    pub fn set_high_watermark(&self, hw: i64) {
        self.publish_high_watermark(hw);
    }

    /// Wait until every offset below `end` is fsynced.
    pub async fn wait_durable(&self, end: i64, timeout: Duration) -> Result<(), DurabilityError> {
        let (reply, rx) = oneshot::channel();
        if self.durability.wait(end, DurableWaiter(reply)) {
            self.request_flush();
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            // Failed, or the partition was dropped unflushed.
            Ok(Ok(Err(StorageFailed)) | Err(_)) => Err(DurabilityError::StorageFailed),
            Err(_) => Err(DurabilityError::TimedOut),
        }
    }

    /// Whole batches from `offset`, never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.read_below(offset, i64::MAX, max_bytes)
    }

    /// Whole batches from `offset`, below `hw` (a high watermark read earlier, never above the
    /// current one), so that a Fetch answer's records and its high watermark agree.
    pub fn read_below(&self, offset: i64, hw: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.log
            .read_below(hw, |state, hw| state.log.read(offset, hw, max_bytes))
    }

    /// [`Partition::read_below`] as [`crate::log::Batches`], whose pieces may still lie in
    /// segment files (for Fetch, which sends those without copying them).
    pub fn read_batches_below(
        &self,
        offset: i64,
        hw: i64,
        max_bytes: usize,
    ) -> Result<crate::log::Batches, LogError> {
        self.log.read_below(hw, |state, hw| {
            state.log.read_batches(offset, hw, max_bytes)
        })
    }

    /// Segment count and bytes on disk (for metrics).
    pub fn disk_usage(&self) -> (usize, u64) {
        self.read_log().log.disk_usage()
    }

    pub fn offsets(&self) -> Offsets {
        let state = self.read_log();
        let log = &state.log;
        Offsets {
            log_start: log.log_start_offset(),
            high_watermark: self.log.high_watermark(),
            log_end: log.log_end_offset(),
        }
    }

    /// Changes of the high watermark, for long-polling fetches.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<TimestampOffset>, LogError> {
        self.read_log().log.offset_for_timestamp(ts)
    }

    /// Delete whole segments past the retention limits, keeping every segment that holds an
    /// offset at or above `floor` (a retention hold, if any); returns the new log start. A
    /// replica deletes nothing here: its retention goes through its Raft group
    /// (`cluster::Replica::enforce_retention`), which deletes through the `replica_*` calls.
    pub fn enforce_retention(&self, now_ms: i64, floor: Option<i64>) -> Result<i64, LogError> {
        if self.settings.replicated {
            return Ok(self.read_log().log.log_start_offset());
        }
        let mut state = self.write_log();
        let Some(floor) = floor else {
            return state
                .log
                .enforce_retention(now_ms, &self.settings.retention);
        };
        let start = state
            .log
            .retention_start(now_ms, &self.settings.retention, floor);
        state.log.delete_segments_before(start)
    }

    /// Asks for a group-commit round to make every offset below `end` durable, unless a
    /// round already planned covers it (a second request per acks=all produce — after the
    /// append, then with the wait — would otherwise start a second flusher whose fsync
    /// covers nothing new).
    fn request_flush_to(&self, end: i64) {
        if !self.durability.covered(end) {
            self.request_flush();
        }
    }

    /// Asks for a group-commit round, starting a flusher if none is idle and fewer than
    /// `MAX_FLUSHERS` run: on the runtime's blocking pool when there is a runtime, on a
    /// thread of its own otherwise.
    fn request_flush(&self) {
        if !self.flush_wanted.request() {
            return;
        }
        let (me, signal) = (self.me.clone(), Arc::clone(&self.flush_wanted));
        let run = move || run_flusher(&me, &signal);
        let started = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                drop(rt.spawn_blocking(run));
                Ok(())
            }
            Err(_) => std::thread::Builder::new()
                .name("runnel-flusher".into())
                .spawn(run)
                .map(drop),
        };
        if let Err(e) = started {
            self.flush_wanted.stopped();
            self.fail(&format!("cannot start the flusher thread: {e}"));
        }
    }

    /// One group-commit round: take a plan under the lock, fsync outside it, publish (the
    /// protocol of `runnel_sync::GroupCommit`, modelled in its loom tests). Runs on a
    /// flusher's thread; rounds of two flushers may overlap and finish in either order.
    fn flush_once(&self) {
        let (plan, ticket) = {
            // Under the read lock no truncation can come between the plan and its ticket.
            let state = self.read_log();
            let plan = state.log.flush_plan();
            let Some(ticket) = self.durability.plan(plan.up_to) else {
                return;
            };
            (plan, ticket)
        };
        let started = std::time::Instant::now();
        let synced = plan.sync();
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        match synced {
            Ok(()) => {
                let answers = {
                    let mut state = self.write_log();
                    let answers = self.durability.synced(ticket);
                    if answers.published() {
                        state.log.mark_flushed(ticket.up_to());
                    } else {
                        // The log was cut meanwhile: what this sync covered may have been
                        // replaced. The next round plans again.
                        self.request_flush();
                    }
                    answers
                };
                answers.deliver();
            }
            Err(e) => self.fail(&format!("fsync failed: {e}")),
        }
    }

    /// Between rounds, with none asked for: let the log write zeros ahead of its appends
    /// and fsync them here, off the request path (`PartitionLog::zero_ahead`).
    fn zero_ahead(&self) {
        let zeroed = self.write_log().log.zero_ahead(std::time::Instant::now());
        match zeroed {
            Ok(None) => {}
            // Not a group commit: kept out of the fsync histogram.
            Ok(Some(zeros)) => {
                if let Err(e) = zeros.sync() {
                    self.fail(&format!("fsync failed: {e}"));
                }
            }
            // Zeros past the data: a failed write loses nothing, and appends still land in
            // the reserved blocks.
            Err(e) => {
                tracing::debug!(topic = %self.topic, partition = self.index, error = %e, "writing zeros ahead of appends")
            }
        }
    }

    /// After a failed fsync the page cache state is unknown (fsyncgate): stop accepting
    /// durable writes on this partition rather than report success we cannot vouch for.
    fn fail(&self, why: &str) {
        tracing::error!(topic = %self.topic, partition = self.index, "{why}; partition refuses durable writes until restart");
        self.durability.fail().deliver();
    }
}

/// Replay every batch header in the log into a fresh producer table.
fn rebuild_producers(log: &dyn PartitionLog) -> Result<ProducerTable, LogError> {
    let mut table = ProducerTable::default();
    let end = log.log_end_offset();
    let mut at = log.log_start_offset();
    while at < end {
        let chunk = log.read(at, end, 1 << 20)?;
        if chunk.is_empty() {
            break;
        }
        for h in batch::headers(&chunk) {
            let h = h?;
            table.record(&h);
            at = h.next_offset();
        }
    }
    Ok(table)
}

/// How long an idle flusher waits for the next request before giving its thread back.
const FLUSHER_LINGER: Duration = Duration::from_millis(100);

/// A flusher: group-commit rounds back to back while they are asked for.
fn run_flusher(partition: &Weak<Partition>, signal: &FlushSignal) {
    /// Marks the flusher stopped however it ends (an unwinding round included), so that the
    /// next request starts another.
    struct Stopped<'a>(&'a FlushSignal, bool);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            if !self.1 {
                self.0.stopped();
            }
        }
    }
    let mut guard = Stopped(signal, false);
    let mut after_round = false;
    while signal.next_round(FLUSHER_LINGER, after_round) {
        after_round = true;
        let Some(p) = partition.upgrade() else { return };
        if p.is_failed() {
            return;
        }
        p.flush_once();
        if !signal.pending() {
            p.zero_ahead();
        }
    }
    // `next_round` said stop and marked it.
    guard.1 = true;
}

/// `flush_ms > 0`: a round at least that often, whatever asks for one in between.
async fn flush_periodically(partition: Weak<Partition>, flush_ms: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(flush_ms)).await;
        let Some(p) = partition.upgrade() else { return };
        if p.is_failed() {
            return;
        }
        p.request_flush();
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.flush_wanted.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::builder::{encode_batch, ProducerInfo, Record};
    use crate::log::file::FileLogConfig;
    use crate::log::memory::MemLog;

    /// A partition whose every batch fills a segment, holding `n` one-record batches, with
    /// every sealed segment past its retention limit.
    fn segment_per_batch(n: usize) -> Arc<Partition> {
        let log = MemLog::with_config(FileLogConfig {
            segment_bytes: 1,
            ..FileLogConfig::default()
        });
        let settings = PartitionSettings {
            flush_ms: 0,
            retention: RetentionPolicy {
                retention_ms: None,
                retention_bytes: Some(0),
            },
            replicated: false,
        };
        let part =
            Partition::start("t", 0, Box::new(log), settings, Histogram::new([1.0])).unwrap();
        for _ in 0..n {
            let b = encode_batch(
                &[Record {
                    value: Some(b"v".to_vec()),
                    ..Record::default()
                }],
                ProducerInfo::default(),
            );
            let header = batch::validate(&b).unwrap();
            part.append(b, &header).unwrap();
        }
        part
    }

    #[tokio::test]
    async fn retention_keeps_every_segment_at_or_above_a_hold() {
        let part = segment_per_batch(5);
        assert_eq!(part.enforce_retention(0, Some(2)).unwrap(), 2);
        assert_eq!(part.enforce_retention(0, Some(2)).unwrap(), 2);
        assert_eq!(part.offsets().log_start, 2);
        // A hold at the start keeps everything; without a hold only the active segment stays.
        assert_eq!(part.enforce_retention(0, Some(0)).unwrap(), 2);
        assert_eq!(part.enforce_retention(0, None).unwrap(), 4);
        assert_eq!(part.offsets().log_end, 5);
    }

    fn idempotent(sequence: i32, records: usize) -> bytes::BytesMut {
        let recs: Vec<Record> = (0..records)
            .map(|i| Record {
                value: Some(format!("{sequence}/{i}").into_bytes()),
                ..Record::default()
            })
            .collect();
        let producer = ProducerInfo {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: sequence,
        };
        encode_batch(&recs, producer)
    }

    /// A follower appends a run of several entries of one term in one call: the producer
    /// table must learn every batch in it, not only the first, so that a retry of any of them
    /// is recognised once this node leads.
    #[tokio::test]
    async fn a_replica_append_of_several_batches_records_each_producer_batch() {
        let settings = PartitionSettings {
            flush_ms: 0,
            retention: RetentionPolicy::default(),
            replicated: true,
        };
        let part = Partition::start(
            "t",
            0,
            Box::new(MemLog::new()),
            settings,
            Histogram::new([1.0]),
        )
        .unwrap();
        let (first, second) = (idempotent(0, 3), idempotent(3, 2));
        let mut run = first.clone();
        batch::set_base_offset(&mut run, 0);
        let mut tail = second.clone();
        batch::set_base_offset(&mut tail, 3);
        run.extend_from_slice(&tail);
        let info = part
            .replica_append(IntactBatches::check(run.freeze()).unwrap(), 1)
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 4));
        for (sent, base, last) in [(first, 0, 2), (second, 3, 4)] {
            let header = batch::validate(&sent).unwrap();
            match part.check_sequence(&header).unwrap() {
                SequenceCheck::Duplicate(dup) => {
                    assert_eq!((dup.base_offset, dup.last_offset), (base, last));
                }
                SequenceCheck::Append => panic!("batch at {base} not recorded"),
            }
        }
    }
}
