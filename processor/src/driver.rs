//! The async driver that runs a [`Pipeline`] against logs: recovery (restore, output tails,
//! journal replay through [`TailDeduper`]) and the live loop (schedule a step, journal it
//! durably, apply, write outputs, checkpoint).
//!
//! The driver names no runtime and reads no clock: the logs are behind [`InputLog`] and
//! [`OutputLog`] (the broker implements them over its local partitions; tests over memory),
//! processing time comes from a [`Clock`], and waiting for new input is the input log's job.
//! The protocol and its argument are in `EXACTLY-ONCE.md`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::exactly_once::{last_seq_in_tail, SequenceGap, StepDescriptor, TailDeduper};
use crate::pipeline::{Pipeline, PipelineError, Step};
use crate::record::{InputRecord, OutputRecord, StreamId};
use crate::state::{CheckpointMeta, StateStore};
use crate::time::Millis;

/// A log operation failed (I/O, unknown topic, timeout). The outcome of a failed append is
/// unknown: the driver never retries it blindly, it recovers (re-reading tails) instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("log: {0}")]
pub struct LogIoError(pub String);

/// Reads source partitions (and the journal).
pub trait InputLog {
    /// Number of partitions of `topic`, `None` if it does not exist (yet).
    fn partitions(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Option<u32>, LogIoError>> + Send;
    /// `(log start, high watermark)` of a partition.
    fn offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<(i64, i64), LogIoError>> + Send;
    /// Records of a partition from offset `from` (inclusive), in offset order, at most
    /// `max_records`, never past the high watermark. Fewer (or none) is not an error.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_records: usize,
    ) -> impl Future<Output = Result<Vec<InputRecord>, LogIoError>> + Send;
    /// Returns once any listed partition's high watermark passes the given offset, or after
    /// `timeout_ms` of real time, whichever is first (spurious returns are fine).
    fn wait_for_input(
        &self,
        positions: &[(String, u32, i64)],
        timeout_ms: u64,
    ) -> impl Future<Output = ()> + Send;
}

/// Record headers, in order.
pub type Headers = Vec<(String, Vec<u8>)>;

/// Writes output streams and the journal.
pub trait OutputLog {
    /// Creates `topic` with at least `partitions` partitions if it does not exist.
    fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> impl Future<Output = Result<(), LogIoError>> + Send;
    /// Appends `records` (in order) to one partition and returns once they are durable
    /// (acks=all), with the offsets they were written at: from the first record's to one past
    /// the last's (empty for no records). All records have the same `stream`.
    fn append(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> impl Future<Output = Result<Range<i64>, LogIoError>> + Send;
    /// Appends each `(stream, records)` like [`OutputLog::append`] and returns once all of
    /// them are durable. The streams are independent (recovery dedupes each against its own
    /// tail), so a log may make them durable together rather than one after another. Default:
    /// one `append` after another.
    fn append_all(
        &self,
        batches: &[(StreamId, Vec<OutputRecord>)],
    ) -> impl Future<Output = Result<(), LogIoError>> + Send
    where
        Self: Sync,
    {
        async move {
            for (stream, records) in batches {
                self.append(stream, records).await?;
            }
            Ok(())
        }
    }
    /// Appends `records` like [`OutputLog::append`], calling `meanwhile` while they become
    /// durable; returns its result once they are. `meanwhile` must not make anything visible
    /// (the driver applies the step being journaled: in-memory work, discarded with the
    /// lifetime if the append fails). Never calls `meanwhile` if the append fails before it.
    /// Default: `append`, then `meanwhile`.
    fn append_overlapping<R: Send>(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
        meanwhile: impl FnOnce() -> R + Send,
    ) -> impl Future<Output = Result<(R, Range<i64>), LogIoError>> + Send
    where
        Self: Sync,
    {
        async move {
            let offsets = self.append(stream, records).await?;
            Ok((meanwhile(), offsets))
        }
    }
    /// Headers of the last `max_records` records of a partition, oldest first (empty if the
    /// topic does not exist).
    fn tail(
        &self,
        stream: &StreamId,
        max_records: usize,
    ) -> impl Future<Output = Result<Vec<Headers>, LogIoError>> + Send;
}

/// Processing time, passed in (the wall clock in the broker, a counter in tests).
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// Driver knobs, embedded in the broker's `[processor]` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverConfig {
    /// Checkpoint after this many steps...
    pub checkpoint_every_steps: u64,
    /// ...or this much processing time since the last checkpoint, whichever comes first.
    pub checkpoint_interval_ms: u64,
    /// Most input records in one step.
    pub max_step_records: usize,
    /// A source partition with no buffered input holds the merge back (so the interleaving
    /// does not depend on fetch timing) for at most this long, then is skipped.
    pub align_wait_ms: u64,
    /// With no input at all, an empty step is taken this often so that processing-time
    /// idleness and timers still advance.
    pub idle_step_ms: u64,
    /// How many records of an output partition's tail are scanned for this pipeline's last
    /// sequence number on recovery.
    pub tail_scan_records: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_steps: 1_000,
            checkpoint_interval_ms: 5_000,
            max_step_records: 500,
            align_wait_ms: 200,
            idle_step_ms: 1_000,
            tail_scan_records: 1_000,
        }
    }
}

/// Why the driver stopped. Any of these ends one driver lifetime; the caller recovers by
/// building a new driver (the same path as after a crash).
#[derive(Debug, Error)]
pub enum DriverError {
    /// A log operation failed.
    #[error(transparent)]
    Log(#[from] LogIoError),
    /// Restore or checkpoint failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Replay would leave a gap in an output stream: refuse to write anything.
    #[error(transparent)]
    Gap(#[from] SequenceGap),
    /// The journal or the input it names is not what recovery needs.
    #[error("journal of pipeline `{pipeline}`: {reason}")]
    Journal {
        /// Pipeline.
        pipeline: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checkpoints taken in one driver lifetime (for metrics; not part of any result). How long
/// they take is for the caller to measure around its `StateStore` (time is not read here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints taken.
    pub count: u64,
}

/// What one call of [`Driver::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// A step with input was journaled, applied and written.
    Applied,
    /// An empty (time-only) step was taken.
    Ticked,
    /// Nothing to do yet.
    Idle,
}

/// The journal topic of a pipeline.
pub fn journal_topic(pipeline: &str) -> String {
    format!("__runnel_journal.{pipeline}")
}

/// The journal ranges of a step's records: `(topic, partition, first offset, end offset)`,
/// one per run of consecutive offsets of one partition, in the records' order.
/// [`Driver::materialize`] turns them back into exactly these records.
fn ranges_of(records: &[InputRecord]) -> Vec<(String, u32, i64, i64)> {
    let mut ranges: Vec<(String, u32, i64, i64)> = Vec::new();
    for r in records {
        match ranges.last_mut() {
            Some(last) if *last.0 == *r.topic && last.1 == r.partition && last.3 == r.offset => {
                last.3 = r.offset.saturating_add(1);
            }
            _ => ranges.push((
                r.topic.to_string(),
                r.partition,
                r.offset,
                r.offset.saturating_add(1),
            )),
        }
    }
    ranges
}

/// Source partition being merged.
#[derive(Debug, Default)]
struct Source {
    buffer: VecDeque<InputRecord>,
    /// Next offset to fetch.
    fetch_from: i64,
    /// Whether the last fetch reached the high watermark.
    caught_up: bool,
    /// Processing time since which the buffer has been empty and caught up.
    empty_since: Option<Millis>,
}

/// One pipeline's driver lifetime.
pub struct Driver<I, O, C, S> {
    input: I,
    output: O,
    clock: C,
    store: S,
    config: DriverConfig,
    pipeline: Pipeline,
    dedupe: TailDeduper,
    journal: StreamId,
    sources: BTreeMap<(String, u32), Source>,
    steps_since_checkpoint: u64,
    last_checkpoint_at: Millis,
    last_step_at: Millis,
    topics_ready: bool,
    checkpoint_stats: CheckpointStats,
    /// The metadata of the last checkpoint this lifetime took, else of the one it restored.
    last_checkpoint: Option<CheckpointMeta>,
    /// Where this lifetime's next journal entry must land: the journal's end as recovery
    /// read it, then one past each entry this lifetime appended. An entry landing anywhere
    /// else means another writer appended in between (see [`Driver::journal_and_apply`]).
    journal_next: i64,
}

impl<I, O, C, S> Driver<I, O, C, S>
where
    I: InputLog + Sync,
    O: OutputLog + Sync,
    C: Clock,
    S: StateStore,
{
    /// Recovers: restores the last checkpoint from `store`, reads every output stream's tail,
    /// and replays the journal since the checkpoint, writing only the outputs the tails do not
    /// already hold. Returns a driver ready to run live.
    pub async fn recover(
        input: I,
        output: O,
        clock: C,
        store: S,
        pipeline_config: crate::PipelineConfig,
        config: DriverConfig,
    ) -> Result<Self, DriverError> {
        let pipeline = Pipeline::restore(pipeline_config, &store)?;
        let restored = store.checkpoint_meta().map_err(PipelineError::from)?;
        let name = pipeline.config().name.clone();
        let journal = StreamId {
            topic: journal_topic(&name),
            partition: 0,
        };
        let now = clock.now_ms();
        let mut d = Self {
            input,
            output,
            clock,
            store,
            config,
            pipeline,
            dedupe: TailDeduper::default(),
            journal,
            sources: BTreeMap::new(),
            steps_since_checkpoint: 0,
            last_checkpoint_at: now,
            last_step_at: now,
            topics_ready: false,
            checkpoint_stats: CheckpointStats::default(),
            last_checkpoint: restored,
            journal_next: 0,
        };
        let mut last_seen = Vec::new();
        for stream in d.output_streams() {
            let tail = d.output.tail(&stream, d.config.tail_scan_records).await?;
            let last = last_seq_in_tail(&name, tail.iter().map(Vec::as_slice));
            if last.is_none() && tail.len() >= d.config.tail_scan_records.max(1) {
                return Err(DriverError::Journal {
                    pipeline: name,
                    reason: format!(
                        "output {stream}: none of the last {} records is this pipeline's",
                        tail.len()
                    ),
                });
            }
            last_seen.push((stream, last));
        }
        d.dedupe = TailDeduper::new(last_seen);
        let (steps, journal_end) = d.read_journal().await?;
        d.journal_next = journal_end;
        for desc in steps {
            let step = d.materialize(&desc).await?;
            d.apply_and_write(&step).await?;
            d.steps_since_checkpoint = d.steps_since_checkpoint.saturating_add(1);
        }
        Ok(d)
    }

    /// The pipeline (for stats and queries).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Every output stream the pipeline can write.
    fn output_streams(&self) -> Vec<StreamId> {
        let o = &self.pipeline.config().outputs;
        [&o.aggregates, &o.alerts, &o.late, &o.dlq]
            .into_iter()
            .flat_map(|t| {
                (0..t.partitions).map(|p| StreamId {
                    topic: t.topic.clone(),
                    partition: p,
                })
            })
            .collect()
    }

    fn journal_error(&self, reason: String) -> DriverError {
        DriverError::Journal {
            pipeline: self.pipeline.config().name.clone(),
            reason,
        }
    }

    /// Journal entries from the checkpoint's step on, in index order (the first entry of an
    /// index wins: a later one is a repeat, or a step another lifetime's entry overtook),
    /// and the journal's end. Read from where the restored checkpoint recorded the end of
    /// its lifetime's own entries ([`CheckpointMeta::journal_next`]): every entry before it
    /// is of an earlier step. If the journal does not reach that position it is not the
    /// journal the checkpoint saw, and the checks below find out what is wrong reading from
    /// the log start.
    async fn read_journal(&self) -> Result<(Vec<StepDescriptor>, i64), DriverError> {
        let from_index = self.pipeline.steps_applied();
        let Some(_) = self.input.partitions(&self.journal.topic).await? else {
            return Ok((Vec::new(), 0));
        };
        let (start, end) = self.input.offsets(&self.journal.topic, 0).await?;
        let recorded = self.last_checkpoint.as_ref().and_then(|m| m.journal_next);
        let mut out: Vec<StepDescriptor> = Vec::new();
        let mut at = recorded
            .filter(|r| *r <= end)
            .map_or(start, |r| r.max(start));
        while at < end {
            let recs = self.input.read(&self.journal.topic, 0, at, 1_000).await?;
            let Some(last) = recs.last() else { break };
            at = last.offset.saturating_add(1);
            for r in recs {
                let desc: StepDescriptor = serde_json::from_slice(
                    r.value.as_deref().unwrap_or_default(),
                )
                .map_err(|e| self.journal_error(format!("entry at offset {}: {e}", r.offset)))?;
                let expected = out.last().map_or(from_index, |d| d.index.saturating_add(1));
                if desc.index < expected {
                    // Before the checkpoint, or a repeated entry: already applied.
                    continue;
                }
                if desc.index > expected {
                    return Err(self.journal_error(format!(
                        "entry at offset {} has index {}, expected {expected}",
                        r.offset, desc.index
                    )));
                }
                out.push(desc);
            }
        }
        Ok((out, end))
    }

    /// Re-creates a journaled step from the (immutable) input log.
    async fn materialize(&self, d: &StepDescriptor) -> Result<Step, DriverError> {
        let mut records = Vec::new();
        for (topic, p, from, to) in &d.ranges {
            let mut at = *from;
            while at < *to {
                let want = usize::try_from(to.saturating_sub(at)).unwrap_or(usize::MAX);
                let got = self.input.read(topic, *p, at, want).await?;
                let Some(first) = got.first() else {
                    return Err(self.journal_error(format!(
                        "step {}: input {topic}/{p} offsets {at}..{to} are not in the log",
                        d.index
                    )));
                };
                if first.offset != at {
                    return Err(self.journal_error(format!(
                        "step {}: input {topic}/{p} offset {at} is gone (log has {})",
                        d.index, first.offset
                    )));
                }
                for r in got {
                    if r.offset >= *to {
                        break;
                    }
                    at = r.offset.saturating_add(1);
                    records.push(r);
                }
            }
        }
        Ok(Step {
            processing_time: d.processing_time,
            records,
            end: d.end,
        })
    }

    /// Applies a step and writes the outputs the streams do not hold yet.
    async fn apply_and_write(&mut self, step: &Step) -> Result<(), DriverError> {
        let outs = self.pipeline.apply(step);
        self.write(outs).await
    }

    /// Writes the outputs the streams do not hold yet, each stream in sequence order, durably
    /// (the streams together: [`OutputLog::append_all`]).
    async fn write(&mut self, outs: Vec<OutputRecord>) -> Result<(), DriverError> {
        let mut by_stream: BTreeMap<StreamId, Vec<OutputRecord>> = BTreeMap::new();
        for o in outs {
            if self.dedupe.admit(&o)? {
                by_stream.entry(o.stream.clone()).or_default().push(o);
            }
        }
        if by_stream.is_empty() {
            return Ok(());
        }
        self.ensure_topics().await?;
        let batches: Vec<(StreamId, Vec<OutputRecord>)> = by_stream.into_iter().collect();
        self.output.append_all(&batches).await?;
        Ok(())
    }

    async fn ensure_topics(&mut self) -> Result<(), DriverError> {
        if self.topics_ready {
            return Ok(());
        }
        self.output.ensure_topic(&self.journal.topic, 1).await?;
        let o = self.pipeline.config().outputs.clone();
        for t in [&o.aggregates, &o.alerts, &o.late, &o.dlq] {
            self.output.ensure_topic(&t.topic, t.partitions).await?;
        }
        self.topics_ready = true;
        Ok(())
    }

    /// Discovers source partitions and tops up their buffers from the log.
    async fn fetch(&mut self, now: Millis) -> Result<(), DriverError> {
        let topics = self.pipeline.config().source.topics.clone();
        let resume: BTreeMap<(String, u32), i64> = self
            .pipeline
            .next_offsets()
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect();
        for topic in topics {
            let Some(n) = self.input.partitions(&topic).await? else {
                continue;
            };
            for p in 0..n {
                let key = (topic.clone(), p);
                if !self.sources.contains_key(&key) {
                    let from = match resume.get(&key) {
                        Some(o) => *o,
                        None => self.input.offsets(&topic, p).await?.0,
                    };
                    self.sources.insert(
                        key.clone(),
                        Source {
                            fetch_from: from,
                            ..Source::default()
                        },
                    );
                }
                let max = self.config.max_step_records.max(1);
                let Some(src) = self.sources.get_mut(&key) else {
                    continue;
                };
                if src.buffer.len() < max {
                    let want = max.saturating_sub(src.buffer.len());
                    let got = self.input.read(&topic, p, src.fetch_from, want).await?;
                    for r in got {
                        if r.offset >= src.fetch_from {
                            src.fetch_from = r.offset.saturating_add(1);
                            src.buffer.push_back(r);
                        }
                    }
                    let (_, hw) = self.input.offsets(&topic, p).await?;
                    src.caught_up = src.fetch_from >= hw;
                }
                if src.buffer.is_empty() && src.caught_up {
                    src.empty_since.get_or_insert(now);
                } else {
                    src.empty_since = None;
                }
            }
        }
        Ok(())
    }

    /// Picks the next step's records: partitions merged by (record timestamp, topic,
    /// partition), taking a record only while every partition has buffered input or has been
    /// empty for `align_wait_ms`, so with all input present the order does not depend on
    /// fetch timing. Returns the records taken, in order (the ranges of the step's journal
    /// entry are [`ranges_of`] them).
    fn schedule(&mut self, now: Millis) -> Vec<InputRecord> {
        let wait = Millis::try_from(self.config.align_wait_ms).unwrap_or(Millis::MAX);
        let mut records: Vec<InputRecord> = Vec::new();
        let max = self.config.max_step_records.max(1);
        let mut taken = 0usize;
        while taken < max {
            // An empty partition holds the merge back while it may have earlier records: if it
            // has unfetched input, or has been caught up for less than `align_wait_ms`.
            let blocked = self.sources.values().any(|s| {
                s.buffer.is_empty()
                    && (!s.caught_up
                        || s.empty_since
                            .is_none_or(|since| now.saturating_sub(since) < wait))
            });
            if blocked {
                break;
            }
            // The partition whose next record is first by (timestamp, topic, partition),
            // compared without cloning the keys.
            let front = |s: &Source| s.buffer.front().map_or(Millis::MAX, |r| r.timestamp);
            let next = self
                .sources
                .iter_mut()
                .filter(|(_, s)| !s.buffer.is_empty())
                .min_by(|a, b| (front(a.1), a.0).cmp(&(front(b.1), b.0)));
            let Some((_, src)) = next else { break };
            let Some(r) = src.buffer.pop_front() else {
                break;
            };
            if src.buffer.is_empty() {
                // Unknown until the next fetch: there may be more in the log.
                src.caught_up = false;
            }
            records.push(r);
            taken = taken.saturating_add(1);
        }
        records
    }

    /// Takes one live step if there is input (or an empty one when `idle_step_ms` passed with
    /// none): fetch, schedule, journal durably, apply, write, maybe checkpoint.
    pub async fn step(&mut self) -> Result<StepOutcome, DriverError> {
        let now = self.clock.now_ms();
        self.fetch(now).await?;
        let records = self.schedule(now);
        let ranges = ranges_of(&records);
        let idle_due = now.saturating_sub(self.last_step_at)
            >= Millis::try_from(self.config.idle_step_ms).unwrap_or(Millis::MAX);
        let tick = idle_due && !self.sources.is_empty();
        if ranges.is_empty() && !tick {
            return Ok(StepOutcome::Idle);
        }
        let outcome = if ranges.is_empty() {
            StepOutcome::Ticked
        } else {
            StepOutcome::Applied
        };
        let desc = StepDescriptor {
            index: self.pipeline.steps_applied(),
            processing_time: now,
            ranges,
            end: false,
        };
        // The step holds exactly the records its journaled ranges name, in their order: the
        // ranges were derived from these records, and replay (`materialize`) reads the same
        // offsets of the same immutable log back. Taken from the fetch buffers rather than
        // read and decoded a second time.
        let step = Step {
            processing_time: now,
            records,
            end: false,
        };
        // Applied while the journal entry becomes durable; its outputs are written only after.
        let outs = self.journal_and_apply(&desc, &step).await?;
        self.write(outs).await?;
        self.last_step_at = now;
        self.steps_since_checkpoint = self.steps_since_checkpoint.saturating_add(1);
        self.maybe_checkpoint(now).await?;
        Ok(outcome)
    }

    /// Journals `desc` and applies `step` while the entry becomes durable
    /// ([`OutputLog::append_overlapping`]); returns the step's outputs once the entry is
    /// durable. Applying first is only in-memory work: if the journal append fails, the
    /// lifetime ends and recovery rebuilds the state from the checkpoint.
    ///
    /// The entry must land where this lifetime's previous one ended (`journal_next`). If it
    /// lands later, another writer appended in between: typically an earlier lifetime's
    /// entry whose append had an unknown outcome and became durable only after this
    /// lifetime's recovery read the journal — an entry for this very step index, which
    /// recovery replays (the first entry of an index wins). This step is then not the
    /// journal's: the lifetime ends before writing any of its outputs, and the next one
    /// replays what the journal holds.
    async fn journal_and_apply(
        &mut self,
        desc: &StepDescriptor,
        step: &Step,
    ) -> Result<Vec<OutputRecord>, DriverError> {
        self.ensure_topics().await?;
        // Plain data: serialization cannot fail.
        let value = serde_json::to_vec(desc).unwrap_or_default();
        let rec = OutputRecord {
            stream: self.journal.clone(),
            seq: desc.index,
            key: None,
            value,
            headers: vec![(
                crate::record::HEADER_PIPELINE.to_owned(),
                self.pipeline.config().name.clone().into_bytes(),
            )],
            timestamp: desc.processing_time,
        };
        let pipeline = &mut self.pipeline;
        let (outs, landed) = self
            .output
            .append_overlapping(&self.journal, &[rec], || pipeline.apply(step))
            .await?;
        if landed.start != self.journal_next && self.journal_written(landed.start).await? {
            return Err(self.journal_error(format!(
                "another writer appended to the journal: step {}'s entry landed at offset {}, \
                 expected {}; recovering replays the journal as it is",
                desc.index, landed.start, self.journal_next
            )));
        }
        self.journal_next = landed.end;
        Ok(outs)
    }

    /// Whether the journal holds an entry this lifetime did not write between where its next
    /// entry was expected and `landed` (where it landed). Offsets without records (a control
    /// batch, such as the marker a replicated partition's new leader appends) are not
    /// entries; an entry landing before the expected position means the journal is not the
    /// one recovery read.
    async fn journal_written(&self, landed: i64) -> Result<bool, DriverError> {
        if landed < self.journal_next {
            return Ok(true);
        }
        let gap = usize::try_from(landed.saturating_sub(self.journal_next)).unwrap_or(usize::MAX);
        let between = self
            .input
            .read(&self.journal.topic, 0, self.journal_next, gap)
            .await?;
        Ok(between.iter().any(|r| r.offset < landed))
    }

    async fn maybe_checkpoint(&mut self, now: Millis) -> Result<(), DriverError> {
        let interval = Millis::try_from(self.config.checkpoint_interval_ms).unwrap_or(Millis::MAX);
        if self.steps_since_checkpoint >= self.config.checkpoint_every_steps.max(1)
            || now.saturating_sub(self.last_checkpoint_at) >= interval
        {
            self.checkpoint(now).await?;
        }
        Ok(())
    }

    /// Checkpoints now (also on graceful shutdown). Outputs are already durable: each append
    /// returned only once durable, so the checkpoint never covers an output that could be lost.
    /// The checkpoint records where this lifetime's journal entries end (`journal_next`):
    /// every entry before it is of a step the checkpoint covers — the ones recovery read and
    /// this lifetime's own, which landed one after another. Not the journal's end as read
    /// now: with a replicated journal a deposed leader's lifetime can read entries a new
    /// leader appended, for steps this checkpoint does not cover.
    pub async fn checkpoint(&mut self, now: Millis) -> Result<(), DriverError> {
        let meta = self
            .pipeline
            .checkpoint_with_journal(&mut self.store, Some(self.journal_next))?;
        self.last_checkpoint = Some(meta);
        self.steps_since_checkpoint = 0;
        self.last_checkpoint_at = now;
        self.checkpoint_stats.count = self.checkpoint_stats.count.saturating_add(1);
        Ok(())
    }

    /// Checkpoints taken by this driver lifetime.
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoint_stats
    }

    /// The metadata of the last checkpoint taken by this lifetime, else of the one it
    /// restored (`None`: no checkpoint yet).
    pub fn last_checkpoint(&self) -> Option<&CheckpointMeta> {
        self.last_checkpoint.as_ref()
    }

    /// Waits (in the input log) for new input on any source partition, or `timeout_ms`.
    pub async fn wait_for_input(&self, timeout_ms: u64) {
        let positions: Vec<(String, u32, i64)> = self
            .sources
            .iter()
            .map(|((t, p), s)| (t.clone(), *p, s.fetch_from))
            .collect();
        self.input.wait_for_input(&positions, timeout_ms).await;
    }

    /// Runs live until `stop()` is true (checked between steps), then checkpoints.
    pub async fn run(&mut self, stop: impl Fn() -> bool) -> Result<(), DriverError> {
        self.run_observed(stop, |_| {}).await
    }

    /// [`Driver::run`], calling `observe` after every step (for metrics and status pages).
    pub async fn run_observed(
        &mut self,
        stop: impl Fn() -> bool,
        mut observe: impl FnMut(&Self),
    ) -> Result<(), DriverError> {
        while !stop() {
            let outcome = self.step().await?;
            observe(self);
            if outcome == StepOutcome::Idle {
                let wait = self
                    .config
                    .idle_step_ms
                    .min(self.config.align_wait_ms.max(10));
                self.wait_for_input(wait).await;
            }
        }
        let now = self.clock.now_ms();
        self.checkpoint(now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, partition: u32, offset: i64) -> InputRecord {
        InputRecord {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            value: None,
            timestamp: 0,
        }
    }

    /// A run of consecutive offsets of one partition is one range; a switch of partition or
    /// topic, or a gap in the offsets, starts the next, so the ranges read back in order give
    /// exactly the records.
    #[test]
    fn ranges_follow_the_records_in_order() {
        let records = [
            rec("a", 0, 5),
            rec("a", 0, 6),
            rec("a", 1, 6),
            rec("a", 1, 7),
            rec("a", 0, 7),
            rec("a", 0, 9),
            rec("b", 0, 10),
        ];
        let want: Vec<(String, u32, i64, i64)> = vec![
            ("a".into(), 0, 5, 7),
            ("a".into(), 1, 6, 8),
            ("a".into(), 0, 7, 8),
            ("a".into(), 0, 9, 10),
            ("b".into(), 0, 10, 11),
        ];
        assert_eq!(ranges_of(&records), want);
        assert!(ranges_of(&[]).is_empty());
    }
}
