//! The embedded stream processor: [`LocalLog`] implements the processor's `InputLog` and
//! `OutputLog` over this broker's own partitions (no network hop), and [`run_pipeline`] keeps
//! one pipeline's driver running, recovering it after any error exactly as after a crash.
//!
//! `LocalLog` reads and appends (and the sled checkpoints) do blocking file I/O: the driver
//! runs on a blocking thread of its own ([`spawn`]).
//!
//! [`PipelineQueries`] lets gRPC read a running pipeline's live state (its open windows): a
//! query goes to the driver's [`QueryInbox`], which the driver answers between two steps
//! from its own `Pipeline` — a consistent snapshot, no shared state, and the pipeline is held
//! up only by the one pass over its windows a query costs.
//!
//! Reads decode stored batches (any codec) and never pass the high watermark; the records a
//! read decoded beyond those asked for wait in a per-partition [`ReadAhead`] for the next
//! read, since the driver reads each source partition in order, a step's share at a time,
//! while the log returns whole producer batches. Appends are
//! local non-idempotent produces answered after their fsync (acks=all); a failed append is
//! never retried blindly: the driver's lifetime ends and recovery re-reads the output tails,
//! whose `runnel.seq` headers make every write idempotent (see `processor/EXACTLY-ONCE.md`).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use runnel_processor::driver::{
    journal_topic, Clock, Driver, DriverConfig, InputLog, LogIoError, OutputLog,
};
use runnel_processor::pipeline::OpenWindow;
use runnel_processor::state::sled_store::SledStore;
use runnel_processor::state::{CheckpointMeta, KeyValue, StateError, StateStore, WriteBatch};
use runnel_processor::time::Millis;
use runnel_processor::{InputRecord, OutputRecord, Pipeline, PipelineConfig, StreamId};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::broker::Broker;
use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::config::{ProcessorConfig, JOURNAL_SEGMENT_BYTES};
use crate::kafka_client::fetch::FetchedRecord;
use crate::metrics::Metrics;
use crate::partition::Partition;
use crate::processor_status::PipelineStatuses;
use crate::snapshot::SnapshotTap;
use crate::topics::TopicError;

/// Bytes asked of a partition per read. The log returns whole batches, the first one whole
/// whatever its size, so this bounds the copy, not the records: a step takes a few hundred
/// records of each partition (less than one producer batch of the bench's 500), and a read
/// of 1 MiB copied and decoded some 40 times what the step used.
const READ_BYTES: usize = 64 << 10;
/// Records per appended batch.
const APPEND_BATCH: usize = 500;

/// Queries waiting for one pipeline's driver; more are refused (busy) rather than queued.
const QUERY_QUEUE: usize = 64;

/// A question for a pipeline's driver, answered from its live state between two steps.
struct OpenWindowsQuery {
    key: String,
    /// Window starts in `[from, to)`.
    from: Millis,
    to: Millis,
    reply: oneshot::Sender<Vec<OpenWindow>>,
}

/// Why a running pipeline gave no answer (retry).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("pipeline {0:?} did not answer within {1:?} (it may be recovering); retry")]
    Timeout(String, Duration),
    #[error("pipeline {0:?} has {QUERY_QUEUE} queries waiting already; retry")]
    Busy(String),
}

/// The sending side of one pipeline's [`QueryInbox`].
#[derive(Clone)]
struct QuerySender {
    tx: mpsc::Sender<OpenWindowsQuery>,
    /// Wakes the driver if it is waiting for input.
    wake: Arc<Notify>,
}

/// How the rest of the broker (gRPC `Windows.Query`) reaches the live state of the pipelines
/// that run in this process.
#[derive(Default)]
pub struct PipelineQueries {
    senders: Mutex<BTreeMap<String, QuerySender>>,
}

impl PipelineQueries {
    /// A new inbox for `pipeline`'s driver (replacing any earlier one).
    pub fn inbox(&self, pipeline: &str) -> QueryInbox {
        let (tx, rx) = mpsc::channel(QUERY_QUEUE);
        let wake = Arc::new(Notify::new());
        let sender = QuerySender {
            tx,
            wake: wake.clone(),
        };
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pipeline.to_owned(), sender);
        QueryInbox { rx, wake }
    }

    /// The windows of `key` that `pipeline` holds open, with start in `[from, to)`, by
    /// start; `None` when no driver of that pipeline runs in this process.
    pub async fn open_windows(
        &self,
        pipeline: &str,
        key: &str,
        from: Millis,
        to: Millis,
        timeout: Duration,
    ) -> Result<Option<Vec<OpenWindow>>, QueryError> {
        let sender = self
            .senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(pipeline)
            .cloned();
        let Some(sender) = sender else {
            return Ok(None);
        };
        let (reply, answer) = oneshot::channel();
        let query = OpenWindowsQuery {
            key: key.to_owned(),
            from,
            to,
            reply,
        };
        match sender.tx.try_send(query) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(QueryError::Busy(pipeline.to_owned()))
            }
            // The pipeline stopped for good (shutdown).
            Err(mpsc::error::TrySendError::Closed(_)) => return Ok(None),
        }
        sender.wake.notify_one();
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(windows)) => Ok(Some(windows)),
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(QueryError::Timeout(pipeline.to_owned(), timeout)),
        }
    }
}

/// Queries for one pipeline, owned by the thread that runs its driver.
pub struct QueryInbox {
    rx: mpsc::Receiver<OpenWindowsQuery>,
    wake: Arc<Notify>,
}

impl QueryInbox {
    /// Answers every waiting query from `p`; called by the driver's thread between steps.
    pub fn answer(&mut self, p: &Pipeline) {
        while let Ok(q) = self.rx.try_recv() {
            // The asker may have given up (timeout): nothing to do then.
            let _ = q.reply.send(p.open_windows_of(&q.key, q.from, q.to));
        }
    }

    /// Notified when a query arrives, so an idle driver stops waiting for input.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// The broker's partitions, seen by the processor.
#[derive(Clone)]
pub struct LocalLog {
    broker: Arc<Broker>,
    /// Also ends [`InputLog::wait_for_input`] (a query is waiting).
    wake: Option<Arc<Notify>>,
    /// What input reads decoded beyond the records asked for (shared by clones).
    ahead: Arc<Mutex<ReadAhead>>,
    /// The pipeline's journal topic, if this log serves one pipeline
    /// ([`LocalLog::with_journal`]).
    journal: Option<String>,
}

impl LocalLog {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            wake: None,
            ahead: Arc::default(),
            journal: None,
        }
    }

    /// This log, whose waits for input also end when `wake` is notified.
    pub fn waking_on(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// This log as pipeline `pipeline`'s: its journal topic is created with the journal's
    /// retention (`[processor] journal_retention_ms`, [`JOURNAL_SEGMENT_BYTES`]).
    pub fn with_journal(mut self, pipeline: &str) -> Self {
        self.journal = Some(journal_topic(pipeline));
        self
    }

    fn is_journal(&self, topic: &str) -> bool {
        self.journal.as_deref() == Some(topic)
    }

    /// The configs this log creates `topic` with: the journal's own retention, else none
    /// (the `[topics]` defaults).
    fn topic_configs(&self, topic: &str) -> Vec<(String, String)> {
        if !self.is_journal(topic) {
            return Vec::new();
        }
        let c = &self.broker.config;
        let mut configs = vec![(
            "segment.bytes".to_owned(),
            c.topics
                .segment_bytes
                .min(JOURNAL_SEGMENT_BYTES)
                .to_string(),
        )];
        if c.processor.journal_retention_ms >= 0 {
            configs.push((
                "retention.ms".to_owned(),
                c.processor.journal_retention_ms.to_string(),
            ));
        }
        configs
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Option<Arc<Partition>>, LogIoError> {
        let Some(t) = self.broker.topics.get(topic) else {
            return Ok(None);
        };
        let i = usize::try_from(partition).map_err(|e| LogIoError(e.to_string()))?;
        Ok(t.partitions.get(i).cloned())
    }
}

/// What metrics need of an alert's value.
#[derive(serde::Deserialize)]
struct AlertView {
    pipeline: String,
    rule: String,
}

/// Counts durable alerts (records carrying `runnel.alert.id`) per rule, with their latency
/// from the triggering reading's timestamp (its producer's clock: for an on-time reading,
/// when it was published). Called by the embedded and the standalone logs after an append.
pub(crate) fn observe_alerts(
    metrics: &Metrics,
    pipelines: &PipelineStatuses,
    records: &[OutputRecord],
) {
    let now = WallClock.now_ms();
    for r in records {
        if !r.headers.iter().any(|(k, _)| k == "runnel.alert.id") {
            continue;
        }
        let Ok(a) = serde_json::from_slice::<AlertView>(&r.value) else {
            continue;
        };
        let Some(ms) = alert_latency_ms(now, r.timestamp, pipelines.watermark(&a.pipeline)) else {
            metrics.alert_count(&a.pipeline, &a.rule);
            continue;
        };
        // Latencies in ms stay far below 2^53, so the f64 is exact.
        let seconds = u32::try_from(ms).map_or(f64::from(u32::MAX), f64::from) / 1000.0;
        metrics.alert(&a.pipeline, &a.rule, seconds);
        pipelines.alert_latency(&a.pipeline, ms);
    }
}

/// The latency in ms of an alert made durable at `now` from a reading stamped `reading_ts`,
/// or `None` when it is not a measure of the pipeline's own delay:
/// - the reading is behind the watermark (late data): it is old by its own delay;
/// - the pipeline has no watermark yet (its first step, or a source partition not yet heard
///   from): an on-time reading cannot be told from a late one. The simulator's late readings
///   are up to 30 min old, and one of them in the first step set the demo's alert p99 to
///   minutes.
fn alert_latency_ms(now: Millis, reading_ts: Millis, watermark: Option<Millis>) -> Option<u64> {
    let w = watermark?;
    if reading_ts < w {
        return None;
    }
    Some(u64::try_from(now.saturating_sub(reading_ts)).unwrap_or(0))
}

fn io(e: impl std::fmt::Display) -> LogIoError {
    LogIoError(e.to_string())
}

/// Records of whole stored batches at offsets in `[from, hw)`, at most `max`, decoded by `d`,
/// and the offset to read next: after the last record taken, or past batches that hold no
/// record for the reader (control batches — a replicated partition stores each Raft no-op as
/// one — and records before `from`), so a read that met only those still moves on.
fn decode<D: Decode>(
    d: &D,
    mut bytes: Bytes,
    from: i64,
    hw: i64,
    max: usize,
) -> Result<(Vec<D::Record>, i64), LogIoError> {
    let mut out = Vec::new();
    let mut next = from;
    while bytes.len() >= batch::HEADER_LEN && out.len() < max {
        let header = batch::parse_header(&bytes).map_err(io)?;
        if out.capacity() == 0 {
            // Room for the first batch's records (a read is a few batches), so the vector is
            // not grown, and its records copied, several times over; never more than the
            // bytes could hold (a record takes at least 7), whatever the count field says.
            let count = usize::try_from(header.record_count).unwrap_or(0);
            out.reserve(count.min(bytes.len() / 7).min(max));
        }
        if header.base_offset >= hw {
            break;
        }
        let one = bytes.split_to(header.total_len().min(bytes.len()));
        if header.is_control() {
            next = next.max(header.next_offset().min(hw));
            continue;
        }
        let before = out.len();
        d.batch(one, &header, (from, hw), max, &mut out)?;
        if let Some(last) = out.get(before..).and_then(<[D::Record]>::last) {
            next = D::offset(last).saturating_add(1);
        }
        if out.len() < max {
            next = next.max(header.next_offset().min(hw));
        }
    }
    Ok((out, next))
}

/// What reads decode stored records into.
trait Decode {
    type Record;
    /// Appends to `out` the records of the batch `one` (not a control batch) with offsets in
    /// `[range.0, range.1)`, in order, while `out` holds fewer than `max`.
    fn batch(
        &self,
        one: Bytes,
        header: &batch::BatchHeader,
        range: (i64, i64),
        max: usize,
        out: &mut Vec<Self::Record>,
    ) -> Result<(), LogIoError>;
    fn offset(r: &Self::Record) -> i64;
}

/// The data records of one batch, through the Kafka decoder (any codec), with offsets in
/// `[from, hw)`.
fn decoded_in(
    one: &mut Bytes,
    (from, hw): (i64, i64),
) -> Result<impl Iterator<Item = kafka_protocol::records::Record>, LogIoError> {
    let set = kafka_protocol::records::RecordBatchDecoder::decode(one).map_err(io)?;
    Ok(set
        .records
        .into_iter()
        .filter(move |r| r.offset >= from && r.offset < hw && !r.control))
}

/// Whole stored records, headers included (output tails, the dashboard).
struct AsStored;

impl Decode for AsStored {
    type Record = StoredRecord;

    fn batch(
        &self,
        mut one: Bytes,
        _: &batch::BatchHeader,
        (from, hw): (i64, i64),
        max: usize,
        out: &mut Vec<StoredRecord>,
    ) -> Result<(), LogIoError> {
        for r in decoded_in(&mut one, (from, hw))? {
            if out.len() >= max {
                break;
            }
            out.push(StoredRecord {
                offset: r.offset,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(Vec::from).unwrap_or_default()))
                    .collect(),
                timestamp: r.timestamp,
            });
        }
        Ok(())
    }

    fn offset(r: &StoredRecord) -> i64 {
        r.offset
    }
}

/// The processor's input records of one partition (no headers: the processor reads none).
/// An uncompressed batch — what the broker's own producers and most clients write — is
/// walked in place ([`batch::records`]); a compressed one goes through the Kafka decoder.
/// Either way nothing is copied per record: key and value are slices of the read buffer (or
/// of the decompressed batch), and every record shares `topic`.
struct AsInput {
    topic: Arc<str>,
    partition: u32,
}

impl AsInput {
    fn record(
        &self,
        offset: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        timestamp: i64,
    ) -> InputRecord {
        InputRecord {
            topic: Arc::clone(&self.topic),
            partition: self.partition,
            offset,
            key,
            value,
            timestamp,
        }
    }
}

impl Decode for AsInput {
    type Record = InputRecord;

    fn batch(
        &self,
        mut one: Bytes,
        header: &batch::BatchHeader,
        (from, hw): (i64, i64),
        max: usize,
        out: &mut Vec<InputRecord>,
    ) -> Result<(), LogIoError> {
        if header.compression().map_err(io)? != batch::Compression::None {
            for r in decoded_in(&mut one, (from, hw))? {
                if out.len() >= max {
                    break;
                }
                out.push(self.record(r.offset, r.key, r.value, r.timestamp));
            }
            return Ok(());
        }
        // The CRC, as the Kafka decoder checks it: what the pipeline reads is what was stored.
        batch::check_integrity(&one).map_err(io)?;
        let section = one
            .get(batch::HEADER_LEN..header.total_len())
            .ok_or_else(|| io("record batch shorter than its header says"))?;
        // `slice_ref` takes a subslice of `one` (it panics on any other slice): key and value
        // are subslices of `section`, itself one of `one`.
        let shared = |s: &[u8]| one.slice_ref(s);
        for r in batch::records(section, header.record_count) {
            let r = r.map_err(io)?;
            let offset = header.base_offset.saturating_add(i64::from(r.offset_delta));
            if offset < from {
                continue;
            }
            if offset >= hw || out.len() >= max {
                break;
            }
            let timestamp = header.base_timestamp.saturating_add(r.timestamp_delta);
            out.push(self.record(offset, r.key.map(shared), r.value.map(shared), timestamp));
        }
        Ok(())
    }

    fn offset(r: &InputRecord) -> i64 {
        r.offset
    }
}

/// A decoded stored record, headers included (output tails, the dashboard): the same shape as
/// a record fetched over the Kafka protocol.
pub(crate) type StoredRecord = FetchedRecord;

/// A pipeline output as a record to encode into a batch.
pub(crate) fn to_record(r: &OutputRecord) -> Record {
    Record {
        key: r.key.clone(),
        value: Some(r.value.clone()),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
        timestamp: r.timestamp,
    }
}

/// A record of `topic`/`partition` fetched over the Kafka protocol (`runnel process`) as the
/// processor's input record: key and value are the same slices of the fetched batch.
pub(crate) fn to_input(topic: &Arc<str>, partition: u32, r: StoredRecord) -> InputRecord {
    InputRecord {
        topic: Arc::clone(topic),
        partition,
        offset: r.offset,
        key: r.key,
        value: r.value,
        timestamp: r.timestamp,
    }
}

/// Up to `max` records of `topic`/`partition` (this node's `part`) from `from`, as the
/// processor's input records ([`read_range`]).
pub(crate) fn read_inputs(
    part: &Partition,
    topic: &str,
    partition: u32,
    from: i64,
    max: usize,
) -> Result<Vec<InputRecord>, LogIoError> {
    let d = AsInput {
        topic: topic.into(),
        partition,
    };
    Ok(read_records(&d, part, from, max, false)?.0)
}

/// Reads `[from, hw)` of a partition, at most `max` records.
pub(crate) fn read_range(
    part: &Partition,
    from: i64,
    max: usize,
) -> Result<Vec<StoredRecord>, LogIoError> {
    Ok(read_records(&AsStored, part, from, max, false)?.0)
}

/// Records of a partition from `from` (or its log start, if later) below its high
/// watermark, in order: `max` of them if there are that many, and with `whole_reads` every
/// further record the last read decoded (reads return whole batches); and the position
/// after them, so that the records are exactly those of the log in `[from, position)`.
fn read_records<D: Decode>(
    d: &D,
    part: &Partition,
    from: i64,
    max: usize,
    whole_reads: bool,
) -> Result<(Vec<D::Record>, i64), LogIoError> {
    let o = part.offsets();
    let mut at = from.max(o.log_start);
    let mut out = Vec::new();
    while at < o.high_watermark && out.len() < max {
        let bytes = part.read(at, READ_BYTES).map_err(io)?;
        if bytes.is_empty() {
            break;
        }
        let want = if whole_reads {
            usize::MAX
        } else {
            max.saturating_sub(out.len())
        };
        let (got, next) = decode(d, bytes, at, o.high_watermark, want)?;
        out.extend(got);
        if next <= at {
            break;
        }
        at = next;
    }
    Ok((out, at))
}

/// Records input reads decoded beyond the ones asked for, per partition, kept for the read
/// that continues where the last one stopped: the driver reads each source partition in
/// order, a step's share at a time, and a read returns whole batches, so without this every
/// step copied and decoded the same batch again. The log below the high watermark never
/// changes (a single node never truncates it), so what is kept stays true.
#[derive(Default)]
struct ReadAhead {
    parts: Vec<Ahead>,
}

/// The records of one partition in `[from, next)`, all of them, in order. They hold slices
/// of the buffer of the read that returned them (at most [`READ_BYTES`] and the batch that
/// crosses it), which stays in memory until the last of them is taken and processed.
struct Ahead {
    /// Shared with the records: the name the partition's records are read with.
    topic: Arc<str>,
    partition: u32,
    /// The partition they were read from: a topic deleted and created again under the same
    /// name is another one (a `Weak`, so the old one is not kept open).
    source: Weak<Partition>,
    from: i64,
    records: VecDeque<InputRecord>,
    next: i64,
}

impl ReadAhead {
    fn find(&mut self, topic: &str, partition: u32, part: &Arc<Partition>) -> Option<&mut Ahead> {
        self.parts.iter_mut().find(|a| {
            a.partition == partition
                && *a.topic == *topic
                && std::ptr::eq(a.source.as_ptr(), Arc::as_ptr(part))
        })
    }

    /// Up to `max` kept records from `from`, and the position after them (from which the
    /// log is to be read for more); `None` if nothing kept starts at or covers `from`.
    fn take(
        &mut self,
        topic: &str,
        partition: u32,
        part: &Arc<Partition>,
        from: i64,
        max: usize,
    ) -> Option<(Vec<InputRecord>, i64)> {
        let a = self.find(topic, partition, part)?;
        if from < a.from || from >= a.next {
            return None;
        }
        while a.records.front().is_some_and(|r| r.offset < from) {
            a.records.pop_front();
        }
        let n = max.min(a.records.len());
        let taken: Vec<InputRecord> = a.records.drain(..n).collect();
        a.from = a.records.front().map_or(a.next, |r| r.offset);
        Some((taken, a.from))
    }

    /// The name records of `topic` are read with: one shared string per topic (kept with
    /// the records of its partitions), not one per read.
    fn name(&self, topic: &str) -> Arc<str> {
        self.parts
            .iter()
            .find(|a| *a.topic == *topic)
            .map_or_else(|| topic.into(), |a| Arc::clone(&a.topic))
    }

    /// Keeps `records`, all the records of `[from, next)`, in place of what was kept.
    fn keep(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        part: &Arc<Partition>,
        from: i64,
        records: VecDeque<InputRecord>,
        next: i64,
    ) {
        let kept = Ahead {
            topic: Arc::clone(topic),
            partition,
            source: Arc::downgrade(part),
            from,
            records,
            next,
        };
        match self.find(topic, partition, part) {
            Some(a) => *a = kept,
            None => {
                // A partition of a deleted topic is never read again: drop it.
                self.parts.retain(|a| a.source.strong_count() > 0);
                self.parts.push(kept);
            }
        }
    }
}

/// [`InputLog::read`] of the embedded log: what an earlier read kept in `ahead` first, then
/// the log, keeping what the log read returned beyond `max`. Returns exactly the records
/// [`read_range`] would.
fn read_ahead(
    ahead: &Mutex<ReadAhead>,
    part: &Arc<Partition>,
    topic: &str,
    partition: u32,
    from: i64,
    max: usize,
) -> Result<Vec<InputRecord>, LogIoError> {
    let lock = || ahead.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut out, at, topic) = {
        let mut a = lock();
        let (out, at) = a
            .take(topic, partition, part, from, max)
            .unwrap_or_else(|| (Vec::new(), from));
        (out, at, a.name(topic))
    };
    let want = max.saturating_sub(out.len());
    if want > 0 {
        let d = AsInput {
            topic: Arc::clone(&topic),
            partition,
        };
        let (mut got, next) = read_records(&d, part, at, want, true)?;
        if got.len() > want {
            let rest: VecDeque<InputRecord> = got.split_off(want).into();
            let rest_from = rest.front().map_or(next, |r| r.offset);
            lock().keep(&topic, partition, part, rest_from, rest, next);
        }
        out.append(&mut got);
    }
    Ok(out)
}

impl InputLog for LocalLog {
    async fn partitions(&self, topic: &str) -> Result<Option<u32>, LogIoError> {
        match self.broker.topics.get(topic) {
            None => Ok(None),
            Some(t) => Ok(Some(u32::try_from(t.partitions.len()).map_err(io)?)),
        }
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogIoError> {
        Ok(self.partition(topic, partition)?.map_or((0, 0), |p| {
            let o = p.offsets();
            (o.log_start, o.high_watermark)
        }))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_records: usize,
    ) -> Result<Vec<InputRecord>, LogIoError> {
        let Some(part) = self.partition(topic, partition)? else {
            return Ok(Vec::new());
        };
        read_ahead(&self.ahead, &part, topic, partition, from, max_records)
    }

    async fn wait_for_input(&self, positions: &[(String, u32, i64)], timeout_ms: u64) {
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        for (t, p, at) in positions {
            if let Ok(Some(part)) = self.partition(t, *p) {
                let mut rx = part.watch_high_watermark();
                let at = *at;
                waits.push(Box::pin(async move {
                    let _ = rx.wait_for(|hw| *hw > at).await;
                }));
            }
        }
        if let Some(wake) = self.wake.clone() {
            waits.push(Box::pin(async move { wake.notified().await }));
        }
        let any = async {
            if waits.is_empty() {
                std::future::pending::<()>().await;
            } else {
                futures_util::future::select_all(waits).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(timeout_ms), any).await;
    }
}

/// Records appended to a local partition, not yet known durable: the partition and the end
/// offset of the append (0: nothing appended).
struct Unflushed(Arc<Partition>, Range<i64>);

impl LocalLog {
    /// Appends `records` to their partition, in batches of [`APPEND_BATCH`]; the partition's
    /// flusher is asked for an fsync, which [`LocalLog::wait_durable`] waits for.
    fn append_unflushed(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> Result<Unflushed, LogIoError> {
        let part = self
            .partition(&stream.topic, stream.partition)?
            .ok_or_else(|| LogIoError(format!("no partition {stream}")))?;
        let mut offsets: Option<Range<i64>> = None;
        for chunk in records.chunks(APPEND_BATCH) {
            let recs: Vec<Record> = chunk.iter().map(to_record).collect();
            let bytes = encode_batch(&recs, ProducerInfo::default());
            let header = batch::validate(&bytes).map_err(io)?;
            let appended = part.append(bytes, &header).map_err(io)?;
            let start = offsets.map_or(appended.base_offset, |o| o.start);
            offsets = Some(start..appended.last_offset.saturating_add(1));
        }
        Ok(Unflushed(part, offsets.unwrap_or(0..0)))
    }

    /// Waits until an append is durable (acks=all), then counts its alerts as appended.
    async fn wait_durable(
        &self,
        Unflushed(part, offsets): Unflushed,
        records: &[OutputRecord],
    ) -> Result<Range<i64>, LogIoError> {
        if !offsets.is_empty() {
            let wait = Duration::from_millis(self.broker.config.max_produce_wait_ms.max(1));
            part.wait_durable(offsets.end, wait).await.map_err(io)?;
            observe_alerts(&self.broker.metrics, &self.broker.pipelines, records);
        }
        Ok(offsets)
    }
}

impl OutputLog for LocalLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogIoError> {
        let want = i32::try_from(partitions).map_err(io)?;
        let t = match self.broker.topics.get(topic) {
            Some(t) => t,
            None => match self
                .broker
                .topics
                .create(topic, want, &self.topic_configs(topic), false)
            {
                Ok(t) => t,
                Err(TopicError::AlreadyExists) => self
                    .broker
                    .topics
                    .get(topic)
                    .ok_or_else(|| io("topic vanished"))?,
                Err(e) => return Err(io(e)),
            },
        };
        if t.partitions.len() < usize::try_from(partitions).map_err(io)? {
            return Err(LogIoError(format!(
                "topic {topic} has {} partitions, the pipeline needs {partitions}",
                t.partitions.len()
            )));
        }
        Ok(())
    }

    async fn append(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> Result<Range<i64>, LogIoError> {
        let appended = self.append_unflushed(stream, records)?;
        self.wait_durable(appended, records).await
    }

    /// Appends every stream first, then waits: each partition's flusher starts on its append
    /// (`flush_ms = 0`), so the streams' fsyncs run together instead of one after another.
    async fn append_all(
        &self,
        batches: &[(StreamId, Vec<OutputRecord>)],
    ) -> Result<(), LogIoError> {
        let mut appended = Vec::with_capacity(batches.len());
        for (stream, records) in batches {
            appended.push(self.append_unflushed(stream, records)?);
        }
        for (a, (_, records)) in appended.into_iter().zip(batches) {
            self.wait_durable(a, records).await?;
        }
        Ok(())
    }

    /// Runs `meanwhile` between the append and the wait for its fsync.
    async fn append_overlapping<R: Send>(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
        meanwhile: impl FnOnce() -> R + Send,
    ) -> Result<(R, Range<i64>), LogIoError> {
        let appended = self.append_unflushed(stream, records)?;
        let r = meanwhile();
        let offsets = self.wait_durable(appended, records).await?;
        Ok((r, offsets))
    }

    async fn tail(
        &self,
        stream: &StreamId,
        max_records: usize,
    ) -> Result<Vec<Vec<(String, Vec<u8>)>>, LogIoError> {
        let Some(part) = self.partition(&stream.topic, stream.partition)? else {
            return Ok(Vec::new());
        };
        let o = part.offsets();
        let n = i64::try_from(max_records).unwrap_or(i64::MAX);
        let from = o.high_watermark.saturating_sub(n).max(o.log_start);
        let recs = read_range(&part, from, max_records)?;
        Ok(recs.into_iter().map(|r| r.headers).collect())
    }
}

/// Told how long each checkpoint took.
pub(crate) type OnCheckpoint = Arc<dyn Fn(Duration) + Send + Sync>;

/// A checkpoint's write (apply, then flush) on its own thread; `Ok` once it is durable.
type Flushing = std::thread::JoinHandle<Result<(), StateError>>;

/// The pipeline's state store, timing each atomic batch: the driver writes one per
/// checkpoint, and the core reads no clock, so checkpoint durations are measured here.
///
/// **Checkpoints are written behind the pipeline, not in its way.** `write_batch` hands the
/// batch to a thread of its own, which applies it (atomic) and flushes it (durable), so the
/// steps after a checkpoint do not wait for sled (BENCHMARKS.md, Processor: with 10,000
/// devices, ~9 ms to apply and a few more to flush, of the ~27 ms a checkpoint took on the
/// driver's thread; the rest is the pipeline encoding its state). The next `write_batch`, and
/// every read, first waits for that write, so at most one checkpoint is ever not durable, and
/// [`TimedStore::wait_flushed`] waits for it at a stop. This relaxes `StateStore::write_batch`'s
/// "durable once it returns", safely: a crash before the flush loses only that checkpoint
/// (sled recovers a prefix of its log, each batch whole), so recovery starts from the one
/// before — and any checkpoint is a valid place to resume, as replay and the outputs' sequence
/// numbers make the rest exactly-once (processor/EXACTLY-ONCE.md). What must not run ahead of
/// durability is the retention hold, which lags one checkpoint ([`RecoveryHolds`]). With a
/// snapshot tap (cluster mode) the checkpoint is written before `write_batch` returns, as the
/// tap dumps that exact state.
#[derive(Clone)]
pub(crate) struct TimedStore {
    inner: SledStore,
    on_checkpoint: OnCheckpoint,
    /// Cluster mode: dumps committed checkpoints for the checkpoint topic.
    snapshots: Option<Arc<SnapshotTap>>,
    /// The last checkpoint's write while it may still run (shared by the clones: each driver
    /// lifetime gets one, and one lifetime runs at a time).
    flushing: Arc<Mutex<Option<Flushing>>>,
}

impl TimedStore {
    pub(crate) fn new(inner: SledStore, on_checkpoint: OnCheckpoint) -> Self {
        Self {
            inner,
            on_checkpoint,
            snapshots: None,
            flushing: Arc::default(),
        }
    }

    /// Waits until the last checkpoint is durable; its write's error if it failed.
    pub(crate) fn wait_flushed(&self) -> Result<(), StateError> {
        let pending = self
            .flushing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match pending {
            None => Ok(()),
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(StateError::Backend(
                    "the checkpoint write thread panicked".into(),
                ))
            }),
        }
    }

    /// Hands every committed checkpoint (one atomic batch each) to `tap`, on the thread that
    /// wrote it, so the dump is exactly that checkpoint.
    pub(crate) fn with_snapshots(mut self, tap: Arc<SnapshotTap>) -> Self {
        self.snapshots = Some(tap);
        self
    }

    /// Replaces the whole contents with `entries` in one atomic batch (a snapshot restore;
    /// neither timed as a checkpoint nor handed to the tap).
    pub(crate) fn replace_all(&mut self, entries: Vec<KeyValue>) -> Result<(), StateError> {
        self.wait_flushed()?;
        let mut batch = WriteBatch::default();
        for (k, _) in self.inner.scan_prefix(b"")? {
            batch.delete(k);
        }
        for (k, v) in entries {
            batch.put(k, v);
        }
        self.inner.write_batch(batch)
    }
}

/// Every read and single write first waits for a checkpoint still being written, so it sees
/// (and lands after) every checkpoint before it, as with a synchronous store.
impl StateStore for TimedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.wait_flushed()?;
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.wait_flushed()?;
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.wait_flushed()?;
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        self.wait_flushed()?;
        self.inner.scan_prefix(prefix)
    }
    fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        // The checkpoint before must be durable first: at most one is ever not.
        self.wait_flushed()?;
        let started = std::time::Instant::now();
        if let Some(tap) = &self.snapshots {
            self.inner.write_batch(batch)?;
            (self.on_checkpoint)(started.elapsed());
            tap.after_checkpoint(&self.inner);
            return Ok(());
        }
        let (inner, on_checkpoint) = (self.inner.clone(), self.on_checkpoint.clone());
        let writing = std::thread::Builder::new()
            .name("checkpoint-write".into())
            .spawn(move || {
                inner.apply_batch(batch)?;
                inner.flush()?;
                on_checkpoint(started.elapsed());
                Ok(())
            })
            // Like a failed write: the driver's lifetime ends, recovery starts from the
            // checkpoint before.
            .map_err(|e| StateError::Backend(format!("cannot start a checkpoint write: {e}")))?;
        *self.flushing.lock().unwrap_or_else(PoisonError::into_inner) = Some(writing);
        Ok(())
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> Millis {
        unix_now_ms()
    }
}

/// The wall clock now, in the processor's [`Millis`] (0 before 1970, `Millis::MAX` past year
/// 292 million). The processor crate itself never reads a clock: time is its input.
pub fn unix_now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        })
}

/// The driver knobs from the broker's `[processor]` section.
pub fn driver_config(c: &ProcessorConfig) -> DriverConfig {
    DriverConfig {
        checkpoint_every_steps: c.checkpoint_every_steps,
        checkpoint_interval_ms: c.checkpoint_interval_ms,
        max_step_records: c.max_step_records,
        align_wait_ms: c.align_wait_ms,
        idle_step_ms: c.idle_step_ms,
        ..DriverConfig::default()
    }
}

/// The pipelines `runnel serve` and `runnel process` run: the `[[processor.pipelines]]`
/// declared, else the built-in sensor pipeline (validated with the rest of the config).
pub fn configured_pipelines(c: &ProcessorConfig) -> Vec<PipelineConfig> {
    c.pipelines()
}

/// A pipeline's sled checkpoint store in the broker's state dir, its checkpoints timed into
/// the broker's metrics and status; `None` (logged) if it cannot be opened.
pub(crate) fn open_state_store(broker: &Arc<Broker>, name: &str) -> Option<TimedStore> {
    let dir = broker
        .config
        .processor
        .state_dir(&broker.config.data_dir)
        .join(name);
    let on_checkpoint: OnCheckpoint = {
        let (broker, name) = (broker.clone(), name.to_owned());
        Arc::new(move |took: Duration| {
            broker.metrics.checkpoint(&name, took.as_secs_f64());
            broker.pipelines.checkpointed(&name, took);
        })
    };
    match SledStore::open(&dir, name) {
        Ok(s) => Some(TimedStore::new(s, on_checkpoint)),
        Err(e) => {
            tracing::error!(pipeline = %name, "cannot open the processor state at {}: {e}", dir.display());
            None
        }
    }
}

/// Runs one pipeline until `shutdown`: recover, run live; after any error, wait a second and
/// recover again (the same path as after a crash). Reads, appends and sled checkpoints block
/// the calling thread, so [`spawn`] runs this on a blocking thread of its own.
pub async fn run_pipeline(
    broker: Arc<Broker>,
    pipeline: PipelineConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = pipeline.name.clone();
    let Some(store) = open_state_store(&broker, &name) else {
        return;
    };
    let config = driver_config(&broker.config.processor);
    broker.pipelines.register(&pipeline);
    let mut inbox = broker.queries.inbox(&name);
    loop {
        let stop = shutdown.clone();
        let log = LocalLog::new(broker.clone())
            .waking_on(inbox.wake())
            .with_journal(&name);
        let outcome = async {
            let mut d = Driver::recover(
                log.clone(),
                log,
                WallClock,
                store.clone(),
                pipeline.clone(),
                config.clone(),
            )
            .await?;
            tracing::info!(pipeline = %name, steps = d.pipeline().steps_applied(), "pipeline recovered");
            let mut checkpoints = d.checkpoint_stats().count;
            // The holds of the last checkpoint, applied once the next one shows it durable
            // (each checkpoint's write waits for the flush of the one before).
            let mut unflushed: Option<RecoveryHolds> = None;
            d.run_observed(
                || *stop.borrow(),
                |d| {
                    observe(&broker, d);
                    inbox.answer(d.pipeline());
                    if d.checkpoint_stats().count != checkpoints {
                        checkpoints = d.checkpoint_stats().count;
                        if let Some(meta) = d.last_checkpoint() {
                            let now = RecoveryHolds::after_checkpoint(
                                &broker,
                                d.pipeline().config(),
                                meta,
                                config.tail_scan_records,
                            );
                            if let Some(durable) = unflushed.replace(now) {
                                durable.apply(&broker, &name);
                            }
                        }
                    }
                },
            )
            .await
        };
        match outcome.await {
            Ok(()) => {
                if let Err(e) = store.wait_flushed() {
                    tracing::error!(pipeline = %name, "the final checkpoint did not flush: {e}");
                }
                broker.pipelines.stopped(&name, None);
                return;
            }
            Err(e) => {
                tracing::error!(pipeline = %name, "pipeline stopped, recovering: {e}");
                broker.pipelines.stopped(&name, Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = crate::net::stopped(&mut shutdown) => return,
        }
    }
}

/// Publishes a driver's state after a step (status page, metrics).
fn observe<I, O, C, S>(broker: &Broker, d: &Driver<I, O, C, S>)
where
    I: InputLog + Sync,
    O: OutputLog + Sync,
    C: Clock,
    S: runnel_processor::state::StateStore,
{
    broker.pipelines.observe(d.pipeline(), d.checkpoint_stats());
}

/// The retention holder name of a pipeline.
fn holder(pipeline: &str) -> String {
    format!("pipeline {pipeline}")
}

/// Every topic a pipeline's recovery reads: its sources, its journal and its outputs.
fn recovery_topics(p: &PipelineConfig) -> Vec<String> {
    let o = &p.outputs;
    let mut topics = p.source.topics.clone();
    topics.push(journal_topic(&p.name));
    topics.extend([&o.aggregates, &o.alerts, &o.late, &o.dlq].map(|t| t.topic.clone()));
    topics
}

/// Until its first checkpoint is known, a pipeline's recovery may read any record of its
/// topics: retention keeps them all.
fn hold_everything(broker: &Broker, p: &PipelineConfig) {
    let topics = recovery_topics(p);
    broker
        .retention_holds
        .hold_everything(&holder(&p.name), topics.iter().map(String::as_str));
}

/// Where recovery from one checkpoint reads, per topic and partition: each source partition
/// from the checkpoint's input position (the journal's ranges start there), the journal from
/// the position the checkpoint recorded (entries before it are applied), and each output
/// partition's last `tail_records` (where recovery looks for its last sequence number).
/// Partitions a pipeline has not read yet are not named (they stay held whole).
struct RecoveryHolds(Vec<(String, Vec<(i32, i64)>)>);

impl RecoveryHolds {
    /// Taken right after checkpoint `meta`, on the driver's thread between steps, so the
    /// outputs have not moved since the checkpoint.
    fn after_checkpoint(
        broker: &Broker,
        p: &PipelineConfig,
        meta: &CheckpointMeta,
        tail_records: usize,
    ) -> Self {
        let mut sources: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
        for (topic, partition, next) in &meta.input_next_offsets {
            if let Ok(partition) = i32::try_from(*partition) {
                sources
                    .entry(topic.clone())
                    .or_default()
                    .push((partition, *next));
            }
        }
        let mut held: Vec<(String, Vec<(i32, i64)>)> = sources.into_iter().collect();
        let ends = |topic: &str, back: i64| -> Vec<(i32, i64)> {
            broker.topics.get(topic).map_or_else(Vec::new, |t| {
                t.partitions
                    .iter()
                    .map(|part| {
                        (
                            part.index,
                            part.offsets().high_watermark.saturating_sub(back).max(0),
                        )
                    })
                    .collect()
            })
        };
        // Without a recorded position recovery reads the journal from its start.
        held.push((
            journal_topic(&p.name),
            vec![(0, meta.journal_next.unwrap_or(0))],
        ));
        let back = i64::try_from(tail_records).unwrap_or(i64::MAX);
        let o = &p.outputs;
        for t in [&o.aggregates, &o.alerts, &o.late, &o.dlq] {
            held.push((t.topic.clone(), ends(&t.topic, back)));
        }
        Self(held)
    }

    /// Makes retention keep what recovery from that checkpoint reads. Only for a checkpoint
    /// known to be durable (see [`TimedStore`]): holding less for one that a crash can still
    /// lose could let retention delete what recovery from the one before needs.
    fn apply(self, broker: &Broker, pipeline: &str) {
        let name = holder(pipeline);
        for (topic, from) in self.0 {
            broker.retention_holds.hold_from(&name, &topic, from);
        }
    }
}

/// Starts every configured pipeline, each on a blocking thread driven by the current runtime.
pub fn spawn(
    broker: &Arc<Broker>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if !broker.config.processor.enabled {
        return Vec::new();
    }
    let handle = tokio::runtime::Handle::current();
    configured_pipelines(&broker.config.processor)
        .into_iter()
        .map(|p| {
            // Before the retention loop's first pass: nothing the recovery needs goes.
            hold_everything(broker, &p);
            let (b, rx, h) = (broker.clone(), shutdown.clone(), handle.clone());
            tokio::task::spawn_blocking(move || h.block_on(run_pipeline(b, p, rx)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use prometheus_client::metrics::histogram::Histogram;
    use runnel_processor::driver::StepOutcome;
    use runnel_processor::state::CHECKPOINT_META_KEY;

    use super::*;

    #[test]
    fn alert_latency_is_measured_only_from_on_time_readings_under_a_watermark() {
        let now = 1_700_000_010_000;
        // No watermark yet: on time or late cannot be told, so nothing is measured.
        assert_eq!(alert_latency_ms(now, now - 30 * 60 * 1000, None), None);
        assert_eq!(alert_latency_ms(now, now - 50, None), None);
        // Behind the watermark: late data, not measured.
        assert_eq!(alert_latency_ms(now, now - 5_001, Some(now - 5_000)), None);
        // At or past the watermark: measured from the reading's timestamp.
        assert_eq!(
            alert_latency_ms(now, now - 5_000, Some(now - 5_000)),
            Some(5_000)
        );
        assert_eq!(
            alert_latency_ms(now, now - 120, Some(now - 5_000)),
            Some(120)
        );
        // A reading stamped after `now` (a producer's clock ahead) reads as 0, not a wrap.
        assert_eq!(alert_latency_ms(now, now + 700, Some(now - 5_000)), Some(0));
    }

    #[test]
    fn the_wall_clock_reads_as_unix_milliseconds() {
        use runnel_processor::time::parse_rfc3339;
        let now = unix_now_ms();
        assert!(now > parse_rfc3339("2020-01-01T00:00:00Z").unwrap());
        assert!(now < parse_rfc3339("2200-01-01T00:00:00Z").unwrap());
    }
    use crate::codec::builder::{control_type, encode_control_batch, leader_change_message};
    use crate::log::memory::MemLog;
    use crate::partition::PartitionSettings;

    fn data(values: &[&str]) -> BytesMut {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                value: Some(v.as_bytes().to_vec()),
                timestamp: 1_700_000_000_000,
                ..Record::default()
            })
            .collect();
        encode_batch(&records, ProducerInfo::default())
    }

    /// A Raft no-op as a replicated partition stores it.
    fn noop() -> BytesMut {
        encode_control_batch(control_type::LEADER_CHANGE, &leader_change_message(-1), -1)
    }

    fn partition(batches: Vec<BytesMut>) -> Arc<Partition> {
        let settings = PartitionSettings {
            flush_ms: 0,
            retention: crate::log::RetentionPolicy::default(),
            replicated: false,
        };
        let part = Partition::start(
            "t",
            0,
            Box::new(MemLog::new()),
            settings,
            Histogram::new([1.0]),
        )
        .unwrap();
        for b in batches {
            let header = batch::validate(&b).unwrap();
            part.append(b, &header).unwrap();
        }
        part
    }

    fn values(records: &[StoredRecord]) -> Vec<(i64, String)> {
        records
            .iter()
            .map(|r| {
                let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
                (r.offset, v)
            })
            .collect()
    }

    /// A pipeline holding one open window of `d1` (two readings) at T0.
    fn pipeline_with_open_window() -> Pipeline {
        const T0: Millis = 1_700_000_040_000;
        let mut c = PipelineConfig::default();
        c.source.partitions = 1;
        let mut p = Pipeline::new(c).unwrap();
        let records = [(0, 20.0), (1, 30.0)]
            .into_iter()
            .map(|(offset, temp)| {
                let v = serde_json::json!({
                    "device_id": "d1",
                    "ts": runnel_processor::time::format_rfc3339(T0 + 1000 * offset),
                    "temperature_c": temp,
                    "vibration_g": 0.1,
                });
                InputRecord {
                    topic: "sensor_events".into(),
                    partition: 0,
                    offset,
                    key: None,
                    value: Some(serde_json::to_vec(&v).unwrap().into()),
                    timestamp: T0,
                }
            })
            .collect();
        p.apply(&runnel_processor::Step {
            processing_time: 1,
            records,
            end: false,
        });
        p
    }

    #[tokio::test]
    async fn queries_are_answered_by_the_inbox_from_the_pipeline_state() {
        let queries = PipelineQueries::default();
        let wait = Duration::from_secs(5);
        // No driver of that pipeline here: no live state to ask.
        let none = queries.open_windows("p", "d1", 0, Millis::MAX, wait).await;
        assert!(matches!(none, Ok(None)));

        let mut inbox = queries.inbox("p");
        let wake = inbox.wake();
        let asked = tokio::spawn(async move {
            queries
                .open_windows("p", "d1", 0, Millis::MAX, wait)
                .await
                .map(|w| (queries, w))
        });
        // The asker wakes an idle driver, which answers between steps from its pipeline.
        tokio::time::timeout(wait, wake.notified()).await.unwrap();
        inbox.answer(&pipeline_with_open_window());
        let (queries, answer) = asked.await.unwrap().unwrap();
        let windows = answer.unwrap();
        assert_eq!(windows.len(), 1);
        assert_eq!(windows[0].result.count, 2);
        assert_eq!(windows[0].result.columns["temperature_c_avg"], 25.0);

        // A driver that does not answer (recovering): a timeout, not a hang.
        let late = queries
            .open_windows("p", "d1", 0, Millis::MAX, Duration::from_millis(50))
            .await;
        assert!(matches!(late, Err(QueryError::Timeout(..))), "{late:?}");
        // The driver stopped for good: no live state.
        drop(inbox);
        let gone = queries.open_windows("p", "d1", 0, Millis::MAX, wait).await;
        assert!(matches!(gone, Ok(None)), "{gone:?}");
    }

    #[tokio::test]
    async fn reads_skip_control_batches_and_move_past_them() {
        // a b | no-op | <one batch bigger than a read> | c | no-op (last)
        let big = "x".repeat(READ_BYTES + 10);
        let part = partition(vec![
            data(&["a", "b"]),
            noop(),
            data(&[&big]),
            data(&["c"]),
            noop(),
        ]);
        assert_eq!(part.offsets().high_watermark, 6);
        let all = read_range(&part, 0, usize::MAX).unwrap();
        let want: Vec<(i64, String)> = vec![
            (0, "a".into()),
            (1, "b".into()),
            (3, big.clone()),
            (4, "c".into()),
        ];
        assert_eq!(values(&all), want);
        // From the no-op: the read returns only it (the next batch does not fit), and the
        // reader goes on past it.
        assert_eq!(
            values(&read_range(&part, 2, usize::MAX).unwrap()),
            want[2..]
        );
        assert_eq!(values(&read_range(&part, 1, 2).unwrap()), want[1..3]);
        // From the trailing no-op: nothing, and no error.
        assert!(read_range(&part, 5, usize::MAX).unwrap().is_empty());
    }

    /// Reads through the read-ahead — in order a few records at a time as the driver reads,
    /// or from any position after any other read — return exactly the log's records.
    #[tokio::test]
    async fn read_ahead_returns_what_the_log_holds() {
        let big = "x".repeat(READ_BYTES + 10);
        let part = partition(vec![
            data(&["a", "b", "c", "d", "e"]),
            noop(),
            data(&["f", "g", "h"]),
            data(&[big.as_str(), "i"]),
            noop(),
            data(&["j", "k"]),
        ]);
        let end = part.offsets().high_watermark;
        assert_eq!(end, 14);
        let ahead = Mutex::new(ReadAhead::default());
        let read = |part: &Arc<Partition>, from, max| -> Vec<(i64, String)> {
            read_ahead(&ahead, part, "t", 0, from, max)
                .unwrap()
                .into_iter()
                .map(|r| {
                    (
                        r.offset,
                        String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    )
                })
                .collect()
        };
        let plain = |from, max| values(&read_range(&part, from, max).unwrap());

        let mut at = 0;
        let mut all = Vec::new();
        loop {
            let got = read(&part, at, 2);
            assert_eq!(got, plain(at, 2), "from {at}");
            let Some(last) = got.last() else { break };
            at = last.0 + 1;
            all.extend(got);
        }
        assert_eq!(all, plain(0, usize::MAX));
        assert_eq!(all.len(), 12);

        for before in [0, 3, 6, 9, 13] {
            for from in 0..=end + 1 {
                for max in [0, 1, 2, 5, usize::MAX] {
                    read(&part, before, 2);
                    assert_eq!(
                        read(&part, from, max),
                        plain(from, max),
                        "{before} {from} {max}"
                    );
                }
            }
        }

        // A topic created again under the same name is another partition: nothing kept from
        // the old one is served.
        read(&part, 0, 1);
        let again = partition(vec![data(&["new0", "new1", "new2"])]);
        assert_eq!(
            read(&again, 1, 1),
            vec![(1, "new1".to_string())],
            "not the old partition's offset 1"
        );
    }

    /// An input log that notes where each read of one topic started.
    struct ReadsOf<L> {
        inner: L,
        topic: String,
        froms: Arc<Mutex<Vec<i64>>>,
    }

    impl<L: InputLog + Sync> InputLog for ReadsOf<L> {
        async fn partitions(&self, topic: &str) -> Result<Option<u32>, LogIoError> {
            self.inner.partitions(topic).await
        }
        async fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogIoError> {
            self.inner.offsets(topic, partition).await
        }
        async fn read(
            &self,
            topic: &str,
            partition: u32,
            from: i64,
            max_records: usize,
        ) -> Result<Vec<InputRecord>, LogIoError> {
            if topic == self.topic {
                self.froms.lock().unwrap().push(from);
            }
            self.inner.read(topic, partition, from, max_records).await
        }
        async fn wait_for_input(&self, positions: &[(String, u32, i64)], timeout_ms: u64) {
            self.inner.wait_for_input(positions, timeout_ms).await;
        }
    }

    /// Sensor readings of two devices, one per second from T0, as one batch.
    fn readings(n: i64) -> BytesMut {
        const T0: Millis = 1_700_000_040_000;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let v = serde_json::json!({
                    "device_id": format!("d{}", i % 2),
                    "ts": runnel_processor::time::format_rfc3339(T0 + 1000 * i),
                    "temperature_c": 20.0 + f64::from(u8::try_from(i % 7).unwrap()),
                    "vibration_g": 0.1,
                });
                Record {
                    value: Some(serde_json::to_vec(&v).unwrap()),
                    timestamp: T0 + 1000 * i,
                    ..Record::default()
                }
            })
            .collect();
        encode_batch(&records, ProducerInfo::default())
    }

    /// A broker in `dir` holding `n` readings in `sensor_events` (one partition), and the
    /// built-in pipeline over that one partition.
    fn broker_with_readings(dir: &std::path::Path, n: i64) -> (Arc<Broker>, PipelineConfig) {
        let config = crate::config::Config {
            data_dir: dir.to_owned(),
            ..crate::config::Config::default()
        };
        let broker = Arc::new(Broker::open(config).unwrap());
        let t = broker
            .topics
            .create("sensor_events", 1, &[], false)
            .unwrap();
        let b = readings(n);
        let header = batch::validate(&b).unwrap();
        t.partitions[0].append(b, &header).unwrap();
        let mut pipeline = PipelineConfig::default();
        pipeline.source.partitions = 1;
        (broker, pipeline)
    }

    /// Each checkpoint records where the journal ended (`CheckpointMeta::journal_next`);
    /// recovery from it reads the journal from there (the entries before are the checkpoint's
    /// steps), and recovers the same state as a recovery reading the whole journal. The
    /// journal topic gets the journal's retention.
    #[tokio::test]
    async fn recovery_reads_the_journal_from_the_position_recorded_with_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (broker, pipeline) = broker_with_readings(&dir.path().join("data"), 60);
        let name = pipeline.name.clone();
        let journal = journal_topic(&name);
        let sled = SledStore::open(&dir.path().join("state"), &name).unwrap();
        let store = TimedStore::new(sled, Arc::new(|_| {}));
        let mut meta_writer = store.clone();
        let config = DriverConfig {
            max_step_records: 5,
            checkpoint_every_steps: 1_000,
            checkpoint_interval_ms: u64::MAX,
            align_wait_ms: 0,
            ..DriverConfig::default()
        };
        let recover = || {
            let froms = Arc::new(Mutex::new(Vec::new()));
            let log = LocalLog::new(broker.clone()).with_journal(&name);
            let input = ReadsOf {
                inner: log.clone(),
                topic: journal.clone(),
                froms: froms.clone(),
            };
            let d = Driver::recover(
                input,
                log,
                WallClock,
                store.clone(),
                pipeline.clone(),
                config.clone(),
            );
            async move { (d.await.unwrap(), froms) }
        };
        // Lifetime 1: four steps, a checkpoint, two more steps, then a crash.
        let (mut d, _) = recover().await;
        for i in 0..6 {
            if i == 4 {
                d.checkpoint(WallClock.now_ms()).await.unwrap();
            }
            assert_eq!(d.step().await.unwrap(), StepOutcome::Applied);
        }
        let live_windows = d.pipeline().open_window_count();
        let taken = d.last_checkpoint().cloned();
        drop(d);
        let t = broker.topics.get(&journal).unwrap();
        assert_eq!(t.config.retention_ms, 3_600_000);
        assert_eq!(t.config.segment_bytes, JOURNAL_SEGMENT_BYTES);
        assert_eq!(t.partitions[0].offsets().high_watermark, 6);
        let meta = store.checkpoint_meta().unwrap().unwrap();
        assert_eq!(taken.as_ref(), Some(&meta));
        assert_eq!(meta.journal_next, Some(4));

        // Lifetime 2 reads the journal from the recorded position, where the steps after
        // the checkpoint begin, and replays those two.
        let (d, froms) = recover().await;
        assert_eq!(froms.lock().unwrap().first(), Some(&4), "{froms:?}");
        assert_eq!(d.pipeline().steps_applied(), 6);
        assert_eq!(d.pipeline().open_window_count(), live_windows);
        assert_eq!(
            d.last_checkpoint(),
            Some(&meta),
            "the restored checkpoint's"
        );
        drop(d);
        // Without the position (a checkpoint of an older build), and with one past the
        // journal's end (not this journal's): from the log start, to the same state.
        for recorded in [None, Some(7)] {
            let mut older = meta.clone();
            older.journal_next = recorded;
            let v = serde_json::to_vec(&older).unwrap();
            meta_writer.put(CHECKPOINT_META_KEY, &v).unwrap();
            let (d, froms) = recover().await;
            assert_eq!(froms.lock().unwrap().first(), Some(&0), "{froms:?}");
            assert_eq!(d.pipeline().steps_applied(), 6);
            assert_eq!(d.pipeline().open_window_count(), live_windows);
        }
    }

    /// The records of `records` (key, value, headers, timestamp) as one gzip batch.
    fn gzip_batch(records: &[Record]) -> BytesMut {
        use kafka_protocol::records as kp;
        let recs: Vec<kp::Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| kp::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: kp::TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                sequence: -1,
                timestamp: r.timestamp,
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone().into(), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = kp::RecordEncodeOptions {
            version: 2,
            compression: kp::Compression::Gzip,
        };
        kp::RecordBatchEncoder::encode(&mut buf, &recs, &options).unwrap();
        buf
    }

    /// Input records, decoded in place from uncompressed batches, are what the Kafka decoder
    /// reads (headers aside), from any position, up to any high watermark and count; also
    /// with compressed batches and control batches between.
    #[test]
    fn input_decoding_agrees_with_the_kafka_decoder() {
        let record = |i: i64| Record {
            key: (i % 3 != 0).then(|| format!("k{i}").into_bytes()),
            value: (i % 4 != 1).then(|| "v".repeat(usize::try_from(i).unwrap()).into_bytes()),
            headers: (0..i % 3)
                .map(|h| (format!("h{h}"), (h != 1).then(|| vec![b'x'; 3])))
                .collect(),
            timestamp: 1_700_000_000_000 + 7 * i - i % 5,
        };
        let mut bytes = BytesMut::new();
        let mut base = 0;
        for (n, compressed) in [(3, false), (1, false), (0, false), (4, true), (2, false)] {
            let mut b = if n == 0 {
                noop()
            } else {
                let recs: Vec<Record> = (base..base + n).map(record).collect();
                if compressed {
                    gzip_batch(&recs)
                } else {
                    encode_batch(&recs, ProducerInfo::default())
                }
            };
            batch::set_base_offset(&mut b, base);
            base += n.max(1);
            bytes.extend_from_slice(&b);
        }
        let bytes = bytes.freeze();
        let d = AsInput {
            topic: "t".into(),
            partition: 2,
        };
        for from in 0..=base {
            for hw in from..=base + 1 {
                for max in [0, 1, 2, 5, usize::MAX] {
                    let (want, want_next) =
                        decode(&AsStored, bytes.clone(), from, hw, max).unwrap();
                    let (got, next) = decode(&d, bytes.clone(), from, hw, max).unwrap();
                    assert_eq!(next, want_next, "{from} {hw} {max}");
                    let want: Vec<InputRecord> = want
                        .into_iter()
                        .map(|r| to_input(&"t".into(), 2, r))
                        .collect();
                    assert_eq!(got, want, "{from} {hw} {max}");
                }
            }
        }
        // A flipped bit is caught by the CRC, as the Kafka decoder catches it.
        let mut bad = BytesMut::from(&bytes[..]);
        bad[batch::HEADER_LEN + 2] ^= 1;
        assert!(decode(&d, bad.freeze(), 0, base, usize::MAX).is_err());
    }

    #[test]
    fn decode_reports_where_to_read_next() {
        let mut bytes = BytesMut::new();
        for (base, mut b) in [
            (0, data(&["a", "b"])),
            (2, noop()),
            (3, data(&["c"])),
            (4, noop()),
        ] {
            batch::set_base_offset(&mut b, base);
            bytes.extend_from_slice(&b);
        }
        let bytes = bytes.freeze();
        let (got, next) = decode(&AsStored, bytes.clone(), 0, 5, usize::MAX).unwrap();
        assert_eq!((got.len(), next), (3, 5));
        let (got, next) = decode(&AsStored, bytes.clone(), 0, 5, 1).unwrap();
        assert_eq!((got.len(), next), (1, 1));
        let (got, next) = decode(&AsStored, bytes.clone(), 1, 5, 1).unwrap();
        assert_eq!((values(&got), next), (vec![(1, "b".to_string())], 2));
        // Only control batches left: no record, but the position moves.
        let (got, next) = decode(
            &AsStored,
            bytes.slice(bytes.len() - noop().len()..),
            4,
            5,
            9,
        )
        .unwrap();
        assert_eq!((got.len(), next), (0, 5));
        // Nothing at or past the high watermark.
        let (got, next) = decode(&AsStored, bytes, 0, 3, usize::MAX).unwrap();
        assert_eq!((got.len(), next), (2, 3));
    }

    /// Checkpoints written behind the driver: a read after a write sees it (waiting for it),
    /// each checkpoint is timed once, and after `wait_flushed` everything written is there
    /// after a reopen.
    #[test]
    fn checkpoints_are_written_behind_the_driver() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let timed = Arc::new(AtomicUsize::new(0));
        let on_checkpoint: OnCheckpoint = {
            let timed = timed.clone();
            Arc::new(move |_| {
                timed.fetch_add(1, Ordering::SeqCst);
            })
        };
        let mut store = TimedStore::new(SledStore::open(dir.path(), "p").unwrap(), on_checkpoint);
        for i in 0..3u8 {
            let mut b = WriteBatch::default();
            b.put(vec![b'k', i], vec![i]);
            if i > 0 {
                b.delete(vec![b'k', i - 1]);
            }
            store.write_batch(b).unwrap();
            // Every checkpoint before this one is written and timed.
            assert!(timed.load(Ordering::SeqCst) >= usize::from(i));
            assert_eq!(store.get(&[b'k', i]).unwrap(), Some(vec![i]));
            assert_eq!(timed.load(Ordering::SeqCst), usize::from(i) + 1);
        }
        store.wait_flushed().unwrap();
        assert_eq!(timed.load(Ordering::SeqCst), 3);
        // Nothing left to wait for.
        store.wait_flushed().unwrap();
        assert_eq!(timed.load(Ordering::SeqCst), 3);
        drop(store);
        let reopened = SledStore::open(dir.path(), "p").unwrap();
        assert_eq!(
            reopened.scan_prefix(b"k").unwrap(),
            vec![(vec![b'k', 2], vec![2])]
        );
    }
}
