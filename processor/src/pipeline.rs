//! One pipeline: parse → watermarks → windows + rules → sequenced output records, with
//! checkpoint and restore. A sans-io state machine: the driver feeds [`Step`]s (input records
//! plus the processing time, which is an input) and writes the returned records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::config::{ConfigError, OutputTopic, PipelineConfig};
use crate::exactly_once::OutputSequencer;
use crate::message::{CheckpointId, Collector, Message, Operator};
use crate::num::Fnv64;
use crate::parse::{Parser, Rejection, SensorReading};
use crate::record::{
    json_object, source_headers, InputRecord, OutputRecord, StreamId, HEADER_DLQ_REASON,
    HEADER_LATE_REASON, HEADER_PIPELINE, HEADER_SEQ,
};
use crate::rules::{Alert, RuleEngine, RuleState};
use crate::state::{CheckpointMeta, StateError, StateStore, WriteBatch};
use crate::time::{format_rfc3339, Millis};
use crate::watermark::WatermarkTracker;
use crate::window::{
    decode_shard, LateReading, WindowEvent, WindowOperator, WindowResult, WindowState, MAX_SHARDS,
};

/// Why a pipeline cannot start or checkpoint.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State store failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store holds a checkpoint of another pipeline.
    #[error("state store holds checkpoint of pipeline `{found}`, expected `{expected}`")]
    WrongPipeline {
        /// Configured pipeline.
        expected: String,
        /// Pipeline in the store.
        found: String,
    },
}

/// One unit of work: records (in the order they are to be processed) at a processing time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Processing time of this step (the driver's clock; an input, so replays are exact).
    pub processing_time: Millis,
    /// Records, interleaved across partitions as the driver chose.
    pub records: Vec<InputRecord>,
    /// The input is finished: close every window.
    pub end: bool,
}

/// Counters, checkpointed with the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Input records processed.
    pub records: u64,
    /// Records sent to the DLQ.
    pub dlq: u64,
    /// Readings sent to the late-data output.
    pub late: u64,
    /// Window results emitted (all revisions).
    pub aggregates: u64,
    /// Alerts emitted.
    pub alerts: u64,
    /// Input records skipped because their offset was already processed.
    pub duplicate_inputs: u64,
}

/// A window the watermark has not closed yet, as [`Pipeline::open_windows_of`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenWindow {
    /// Its current partial aggregates (revision 0).
    pub result: WindowResult,
    /// The JSON its result record would hold if it closed now.
    pub json: Vec<u8>,
}

/// Pipeline-level state stored at `s/p`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PipelineSnapshot {
    watermarks: WatermarkTracker,
    next_offsets: Vec<(String, u32, i64)>,
    stats: Stats,
    processing_time: Millis,
}

const KEY_PIPELINE: &[u8] = b"s/p";
/// Open windows, grouped into shards by their key: `s/ws/<shard>` (decimal) holds every
/// window of the keys in that shard ([`WindowOperator::take_dirty_shards`]).
const PREFIX_WINDOW_SHARDS: &[u8] = b"s/ws/";
/// One window per key, `s/w/<key>\0<start>`: what checkpoints wrote before shards. Still
/// read on restore; the first checkpoint after it deletes them.
const PREFIX_WINDOWS_V1: &[u8] = b"s/w/";
const PREFIX_RULES: &[u8] = b"s/r/";
const PREFIX_STATE: &[u8] = b"s/";

/// Open windows per stored shard aimed at. sled's cost is per key written, and a leaf of its
/// tree holds up to 16 keys whose rewrite past 128 KiB goes to a separate blob file: at ~0.5 kB
/// per window, 16 windows per shard keep a leaf of shards under that.
const WINDOWS_PER_SHARD: usize = 16;

/// The store key of window shard `shard`.
fn shard_key(shard: u32) -> Vec<u8> {
    let mut k = PREFIX_WINDOW_SHARDS.to_vec();
    k.extend_from_slice(shard.to_string().as_bytes());
    k
}

/// A running pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
    parser: Parser,
    watermarks: WatermarkTracker,
    windows: WindowOperator,
    rules: RuleEngine,
    sequencer: OutputSequencer,
    /// Next offset per source topic and partition (nested so a record's topic is looked up
    /// as `&str`, without allocating).
    next_offsets: BTreeMap<String, BTreeMap<u32, i64>>,
    steps_applied: u64,
    checkpoint_id: u64,
    processing_time: Millis,
    stats: Stats,
    /// The state store holds exactly what this pipeline's last checkpoint wrote, so a
    /// checkpoint writes only the window shards changed since and knows which stored keys
    /// went stale instead of scanning the store for them. False for a new or restored
    /// pipeline and after a failed write.
    store_in_sync: bool,
    /// Empty collectors for the window and rule operators' output, kept for their capacity.
    scratch: (Collector<WindowEvent>, Collector<Alert>),
    /// Shards the stored windows are spread over; 0 before the first checkpoint (of this
    /// process: a restored pipeline chooses again and rewrites every shard).
    window_shards: u32,
    /// Open windows per shard aimed at ([`WINDOWS_PER_SHARD`]; tests lower it to get many
    /// shards from a few windows).
    windows_per_shard: usize,
}

fn corrupt(key: &[u8], e: &dyn std::fmt::Display) -> StateError {
    StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    }
}

impl Pipeline {
    /// A pipeline with empty state.
    pub fn new(config: PipelineConfig) -> Result<Self, PipelineError> {
        config.validate()?;
        Ok(Self {
            parser: Parser::new(&config),
            watermarks: WatermarkTracker::new(&config),
            windows: WindowOperator::new(&config),
            rules: RuleEngine::new(&config),
            sequencer: OutputSequencer::default(),
            next_offsets: BTreeMap::new(),
            steps_applied: 0,
            checkpoint_id: 0,
            processing_time: Millis::MIN,
            stats: Stats::default(),
            store_in_sync: false,
            scratch: Default::default(),
            window_shards: 0,
            windows_per_shard: WINDOWS_PER_SHARD,
            config,
        })
    }

    /// The pipeline as of the store's last checkpoint (or empty if it has none).
    pub fn restore(config: PipelineConfig, store: &dyn StateStore) -> Result<Self, PipelineError> {
        let mut p = Self::new(config)?;
        let Some(meta) = store.checkpoint_meta()? else {
            return Ok(p);
        };
        if meta.pipeline != p.config.name {
            return Err(PipelineError::WrongPipeline {
                expected: p.config.name.clone(),
                found: meta.pipeline,
            });
        }
        if let Some(v) = store.get(KEY_PIPELINE)? {
            let s: PipelineSnapshot =
                serde_json::from_slice(&v).map_err(|e| corrupt(KEY_PIPELINE, &e))?;
            p.watermarks = s.watermarks;
            p.next_offsets = BTreeMap::new();
            for (t, part, o) in s.next_offsets {
                p.next_offsets.entry(t).or_default().insert(part, o);
            }
            p.stats = s.stats;
            p.processing_time = s.processing_time;
        }
        let mut windows = Vec::new();
        for (k, v) in store.scan_prefix(PREFIX_WINDOW_SHARDS)? {
            windows.extend(decode_shard(&v).map_err(|e| corrupt(&k, &e))?);
        }
        for (k, v) in store.scan_prefix(PREFIX_WINDOWS_V1)? {
            windows.push(WindowState::decode(&v).map_err(|e| corrupt(&k, &e))?);
        }
        p.windows.restore(windows, meta.watermark);
        let mut rules = BTreeMap::new();
        for (k, v) in store.scan_prefix(PREFIX_RULES)? {
            let name = String::from_utf8_lossy(k.get(PREFIX_RULES.len()..).unwrap_or_default())
                .into_owned();
            rules.insert(name, RuleState::decode(&v).map_err(|e| corrupt(&k, &e))?);
        }
        p.rules.restore(rules, p.processing_time, meta.watermark);
        p.sequencer = OutputSequencer::restore(&meta.output_next_seq);
        p.steps_applied = meta.steps_applied;
        p.checkpoint_id = meta.id;
        // Stored state of rules no longer configured, and windows stored one per key (before
        // shards), are deleted by the first checkpoint's scan; from then on the store mirrors
        // this pipeline.
        p.store_in_sync = false;
        Ok(p)
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Steps applied so far (the journal index of the next step).
    pub fn steps_applied(&self) -> u64 {
        self.steps_applied
    }

    /// The pipeline watermark.
    pub fn watermark(&self) -> Option<Millis> {
        self.watermarks.current()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Next offset to read per source partition.
    pub fn next_offsets(&self) -> Vec<(String, u32, i64)> {
        self.next_offsets
            .iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.clone(), *p, *o)))
            .collect()
    }

    /// Open windows (for queries), in `(end, key, start)` order; sorts them, so
    /// [`Pipeline::open_window_count`] is the way to count them.
    pub fn open_windows(&self) -> impl Iterator<Item = &WindowState> {
        self.windows.windows()
    }

    /// Number of open windows, O(1).
    pub fn open_window_count(&self) -> usize {
        self.windows.len()
    }

    /// Processes one step and returns its output records, sequenced, in write order.
    pub fn apply(&mut self, step: &Step) -> Vec<OutputRecord> {
        let now = step.processing_time.max(self.processing_time);
        self.processing_time = now;
        let mut out = Vec::new();
        let mut alerts = Collector::new();
        self.rules.on_processing_time(now, &mut alerts);
        self.emit_alerts(&mut alerts, &mut out);
        for rec in &step.records {
            // Looked up by `&str`: the topic is cloned once per topic, not per record.
            let parts = match self.next_offsets.get_mut(&*rec.topic) {
                Some(p) => p,
                None => self.next_offsets.entry(rec.topic.to_string()).or_default(),
            };
            let next = parts.entry(rec.partition).or_insert(rec.offset);
            if rec.offset < *next {
                self.stats.duplicate_inputs = self.stats.duplicate_inputs.saturating_add(1);
                continue;
            }
            *next = rec.offset.saturating_add(1);
            self.stats.records = self.stats.records.saturating_add(1);
            match self.parser.parse(rec) {
                Err(why) => out.push(self.dlq(rec, &why)),
                Ok(reading) => {
                    self.watermarks
                        .observe(&rec.topic, rec.partition, reading.event_time, now);
                    self.on_reading(rec, reading, &mut out);
                    if let Some(wm) = self.watermarks.advance(now) {
                        self.on_control(Message::Watermark(wm), &mut out);
                    }
                }
            }
        }
        // Idleness is a function of processing time: it can advance the watermark without data.
        if let Some(wm) = self.watermarks.advance(now) {
            self.on_control(Message::Watermark(wm), &mut out);
        }
        if step.end {
            self.on_control(Message::End, &mut out);
        }
        self.steps_applied = self.steps_applied.saturating_add(1);
        out
    }

    fn on_reading(&mut self, rec: &InputRecord, r: SensorReading, out: &mut Vec<OutputRecord>) {
        // The operators' collectors are reused (taken and put back), so a reading or a
        // watermark advance allocates no message buffers.
        let (mut w, mut a) = self.take_scratch();
        self.rules.on_reading(&r, &mut a);
        self.windows.process(Message::Data(r), &mut w);
        for e in w.drain_data_iter() {
            match e {
                WindowEvent::Result(res) => out.push(self.aggregate(&res)),
                WindowEvent::Late(l) => out.push(self.late(rec, &l)),
            }
        }
        self.emit_alerts(&mut a, out);
        self.scratch = (w, a);
    }

    fn on_control(&mut self, msg: Message<SensorReading>, out: &mut Vec<OutputRecord>) {
        let (mut w, mut a) = self.take_scratch();
        self.windows.process(msg.clone(), &mut w);
        self.rules.process(msg, &mut a);
        for e in w.drain_data_iter() {
            if let WindowEvent::Result(res) = e {
                out.push(self.aggregate(&res));
            }
        }
        self.emit_alerts(&mut a, out);
        self.scratch = (w, a);
    }

    fn take_scratch(&mut self) -> (Collector<WindowEvent>, Collector<Alert>) {
        std::mem::take(&mut self.scratch)
    }

    fn emit_alerts(&mut self, alerts: &mut Collector<Alert>, out: &mut Vec<OutputRecord>) {
        for alert in alerts.drain_data_iter() {
            out.push(self.alert(&alert));
        }
    }

    fn stream(topic: &OutputTopic, key: &[u8]) -> StreamId {
        let n = u64::from(topic.partitions.max(1));
        let h = Fnv64::default().write(key).finish() % n;
        StreamId {
            topic: topic.topic.clone(),
            partition: u32::try_from(h).unwrap_or(0),
        }
    }

    fn record(
        &mut self,
        stream: StreamId,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        mut headers: Vec<(String, Vec<u8>)>,
        timestamp: Millis,
    ) -> OutputRecord {
        let seq = self.sequencer.assign(&stream);
        let mut h = vec![
            (
                HEADER_PIPELINE.to_owned(),
                self.config.name.clone().into_bytes(),
            ),
            (HEADER_SEQ.to_owned(), seq.to_string().into_bytes()),
        ];
        h.append(&mut headers);
        OutputRecord {
            stream,
            seq,
            key,
            value,
            headers: h,
            timestamp,
        }
    }

    /// The windows of `key` still open (the watermark has not reached their end), with
    /// their current partial aggregates, whose start is in `[from, to)`, by start. Each
    /// comes with the JSON its result record would have if it closed now (revision 0).
    /// Taken between steps, this is a consistent point-in-time view of the state.
    pub fn open_windows_of(&self, key: &str, from: Millis, to: Millis) -> Vec<OpenWindow> {
        self.windows
            .open_results(key, from, to)
            .into_iter()
            .map(|r| OpenWindow {
                json: self.result_json(&r),
                result: r,
            })
            .collect()
    }

    /// A window result's record value.
    fn result_json(&self, r: &WindowResult) -> Vec<u8> {
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        m.insert("pipeline".into(), self.config.name.clone().into());
        m.insert(self.config.source.key_field.clone(), r.key.clone().into());
        m.insert("window_start".into(), format_rfc3339(r.start).into());
        m.insert("window_end".into(), format_rfc3339(r.end).into());
        m.insert("window_start_ms".into(), r.start.into());
        m.insert("window_end_ms".into(), r.end.into());
        m.insert("revision".into(), r.revision.into());
        m.insert("count".into(), r.count.into());
        for (c, v) in &r.columns {
            m.insert(c.clone(), (*v).into());
        }
        json_object(m)
    }

    fn aggregate(&mut self, r: &WindowResult) -> OutputRecord {
        self.stats.aggregates = self.stats.aggregates.saturating_add(1);
        let value = self.result_json(r);
        let stream = Self::stream(&self.config.outputs.aggregates, r.key.as_bytes());
        self.record(
            stream,
            Some(r.key.clone().into_bytes()),
            value,
            Vec::new(),
            r.start,
        )
    }

    fn alert(&mut self, a: &Alert) -> OutputRecord {
        self.stats.alerts = self.stats.alerts.saturating_add(1);
        let mut m: BTreeMap<String, Value> = BTreeMap::new();
        m.insert("id".into(), a.id.clone().into());
        m.insert("pipeline".into(), self.config.name.clone().into());
        m.insert("rule".into(), a.rule.clone().into());
        m.insert("kind".into(), a.kind.into());
        m.insert(self.config.source.key_field.clone(), a.key.clone().into());
        m.insert("value".into(), a.value.into());
        m.insert("event_time".into(), format_rfc3339(a.event_time).into());
        m.insert("event_time_ms".into(), a.event_time.into());
        for (k, v) in &a.detail {
            m.insert(k.clone(), (*v).into());
        }
        let stream = Self::stream(&self.config.outputs.alerts, a.key.as_bytes());
        let headers = vec![("runnel.alert.id".to_owned(), a.id.clone().into_bytes())];
        self.record(
            stream,
            Some(a.key.clone().into_bytes()),
            json_object(m),
            headers,
            a.event_time,
        )
    }

    fn late(&mut self, rec: &InputRecord, l: &LateReading) -> OutputRecord {
        self.stats.late = self.stats.late.saturating_add(1);
        let reason = format!(
            "window [{}, {}) closed: watermark {} is past its end plus the allowed lateness of {} ms",
            format_rfc3339(l.window_start),
            format_rfc3339(l.window_end),
            format_rfc3339(l.watermark),
            self.config.window.allowed_lateness_ms
        );
        let mut headers = vec![(HEADER_LATE_REASON.to_owned(), reason.into_bytes())];
        headers.extend(source_headers(rec));
        let stream = Self::stream(&self.config.outputs.late, l.reading.key.as_bytes());
        self.forward(stream, rec, headers, l.reading.event_time)
    }

    fn dlq(&mut self, rec: &InputRecord, why: &Rejection) -> OutputRecord {
        self.stats.dlq = self.stats.dlq.saturating_add(1);
        let mut headers = vec![(HEADER_DLQ_REASON.to_owned(), why.to_string().into_bytes())];
        headers.extend(source_headers(rec));
        let stream = Self::stream(
            &self.config.outputs.dlq,
            rec.key.as_deref().unwrap_or_default(),
        );
        self.forward(stream, rec, headers, rec.timestamp)
    }

    /// An output record carrying an input record's key and value as they are (late data,
    /// dead letters), with `headers`.
    fn forward(
        &mut self,
        stream: StreamId,
        rec: &InputRecord,
        headers: Vec<(String, Vec<u8>)>,
        timestamp: Millis,
    ) -> OutputRecord {
        self.record(
            stream,
            rec.key.as_deref().map(<[u8]>::to_vec),
            rec.value.as_deref().unwrap_or_default().to_vec(),
            headers,
            timestamp,
        )
    }

    /// Takes a checkpoint: a barrier flows through the operators (trivially aligned, since
    /// the pipeline is one synchronous chain), then all state and the checkpoint metadata are
    /// written to `store` in one atomic batch.
    pub fn checkpoint(
        &mut self,
        store: &mut dyn StateStore,
    ) -> Result<CheckpointMeta, PipelineError> {
        self.checkpoint_with_journal(store, None)
    }

    /// [`Pipeline::checkpoint`], recording in its metadata where the journal ends now
    /// ([`CheckpointMeta::journal_next`]; the driver knows, the pipeline has no journal).
    pub fn checkpoint_with_journal(
        &mut self,
        store: &mut dyn StateStore,
        journal_next: Option<i64>,
    ) -> Result<CheckpointMeta, PipelineError> {
        let id = self.checkpoint_id.saturating_add(1);
        let mut sink = Vec::new();
        self.on_control(Message::CheckpointBarrier(CheckpointId(id)), &mut sink);
        debug_assert!(sink.is_empty(), "a barrier produces no output");

        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let json = |v: &dyn erased::Ser| v.to_json();
        entries.insert(
            KEY_PIPELINE.to_vec(),
            json(&PipelineSnapshot {
                watermarks: self.watermarks.clone(),
                next_offsets: self.next_offsets(),
                stats: self.stats,
                processing_time: self.processing_time,
            }),
        );
        // Windows go to the store in shards (values of many windows each, not one per
        // window: sled pays per key). As many shards as the open windows call for: more (all
        // rewritten) as soon as they outgrow `windows_per_shard` each, fewer only when 4× too
        // many, so windows opening and closing every window length do not reshard each time.
        let old_shards = self.window_shards;
        let want = shards_for(self.windows.len(), self.windows_per_shard);
        let reshard = want > old_shards || want.saturating_mul(4) < old_shards;
        if reshard {
            self.window_shards = want;
        }
        // Only the shards changed since the last checkpoint, if the store holds exactly that
        // checkpoint's state and the shards stay; otherwise every shard.
        let shards = self
            .windows
            .take_dirty_shards(self.window_shards, reshard || !self.store_in_sync);
        for (shard, v) in shards.put {
            entries.insert(shard_key(shard), v);
        }
        // Binary (`RuleState::encode`), not JSON, encoded from the live maps.
        for (name, state) in self.rules.encoded_states() {
            let mut k = PREFIX_RULES.to_vec();
            k.extend_from_slice(name.as_bytes());
            entries.insert(k, state);
        }
        let mut batch = WriteBatch::default();
        // What to delete. If the store holds exactly the last checkpoint's state, its window
        // keys are the shards `0..old_shards`: the ones emptied since, or after a full write
        // every one not written now. Otherwise every stored key not written now (a scan of
        // all state, as on the first checkpoint after a start).
        if !self.store_in_sync {
            for (k, _) in store.scan_prefix(PREFIX_STATE)? {
                if !entries.contains_key(&k) {
                    batch.delete(k);
                }
            }
        } else if shards.full {
            for k in (0..old_shards).map(shard_key) {
                if !entries.contains_key(&k) {
                    batch.delete(k);
                }
            }
        } else {
            for shard in shards.emptied {
                batch.delete(shard_key(shard));
            }
        }
        for (k, v) in entries {
            batch.put(k, v);
        }
        let meta = CheckpointMeta {
            pipeline: self.config.name.clone(),
            id,
            steps_applied: self.steps_applied,
            input_next_offsets: self.next_offsets(),
            output_next_seq: self.sequencer.snapshot(),
            watermark: self.watermarks.current(),
            processing_time: self.processing_time,
            journal_next,
        };
        batch.set_checkpoint_meta(&meta);
        self.store_in_sync = false;
        store.write_batch(batch)?;
        self.store_in_sync = true;
        self.checkpoint_id = id;
        Ok(meta)
    }
}

/// Shards for `windows` open windows at `per_shard` each: a power of two, at least 1, at most
/// [`MAX_SHARDS`].
fn shards_for(windows: usize, per_shard: usize) -> u32 {
    let want = (windows / per_shard.max(1)).max(1).next_power_of_two();
    u32::try_from(want).unwrap_or(MAX_SHARDS).min(MAX_SHARDS)
}

/// Object-safe JSON serialization for the snapshot helper.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Vec<u8> {
            // Plain data with string keys: serialization cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;

    /// A minute-aligned event time.
    const T0: Millis = 1_700_000_040_000;

    fn reading(partition: u32, offset: i64, device: &str, t: Millis, temp: f64) -> InputRecord {
        let value = serde_json::json!({
            "device_id": device,
            "ts": format_rfc3339(t),
            "temperature_c": temp,
            "vibration_g": 0.1,
        });
        InputRecord {
            topic: "sensor_events".into(),
            partition,
            offset,
            key: Some(device.as_bytes().to_vec().into()),
            value: Some(serde_json::to_vec(&value).unwrap().into()),
            timestamp: t,
        }
    }

    fn step(records: Vec<InputRecord>) -> Step {
        Step {
            processing_time: 1,
            records,
            end: false,
        }
    }

    fn column(r: &WindowResult, c: &str) -> f64 {
        r.columns[c]
    }

    #[test]
    fn open_windows_show_partial_aggregates_until_the_watermark_closes_them() {
        let mut c = PipelineConfig::default();
        c.watermark.idle_timeout_ms = 1_000_000_000;
        let mut p = Pipeline::new(c).unwrap();
        // Every source partition has a reading, so the watermark is T0 + 3s - 10s.
        let outs = p.apply(&step(vec![
            reading(0, 0, "A", T0 + 1_000, 40.0),
            reading(1, 0, "B", T0 + 2_000, 70.0),
            reading(0, 1, "A", T0 + 2_500, 50.0),
            reading(2, 0, "C", T0 + 3_000, 60.0),
        ]));
        assert!(outs.iter().all(|o| o.stream.topic != "sensor_aggregates"));
        let open = p.open_windows_of("A", Millis::MIN, Millis::MAX);
        assert_eq!(open.len(), 1);
        let a = &open[0].result;
        assert_eq!((a.key.as_str(), a.start, a.end), ("A", T0, T0 + 60_000));
        assert_eq!((a.count, a.revision), (2, 0));
        assert_eq!(column(a, "temperature_c_avg"), 45.0);
        assert_eq!(column(a, "temperature_c_max"), 50.0);
        // The range filters on the window start; other keys are not answered.
        assert!(p.open_windows_of("A", T0 + 1, Millis::MAX).is_empty());
        assert!(p.open_windows_of("A", Millis::MIN, T0).is_empty());
        assert_eq!(p.open_windows_of("B", T0, T0 + 1)[0].result.count, 1);
        assert!(p.open_windows_of("Z", Millis::MIN, Millis::MAX).is_empty());

        // The watermark passes T0 + 60s: the window closes with exactly the partial result,
        // and is no longer open (the next window of A is).
        let outs = p.apply(&step(vec![
            reading(0, 2, "A", T0 + 75_000, 30.0),
            reading(1, 1, "B", T0 + 75_000, 70.0),
            reading(2, 1, "C", T0 + 75_000, 60.0),
        ]));
        let closed: Vec<&OutputRecord> = outs
            .iter()
            .filter(|o| {
                o.stream.topic == "sensor_aggregates" && o.key.as_deref() == Some(b"A".as_slice())
            })
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].value, open[0].json);
        let open = p.open_windows_of("A", Millis::MIN, Millis::MAX);
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].result.start, open[0].result.count),
            (T0 + 60_000, 1)
        );
        assert_eq!(column(&open[0].result, "temperature_c_avg"), 30.0);
    }

    /// Every window `store` holds, in either layout, in `(end, key, start)` order; no shard
    /// is stored empty.
    fn stored_windows(store: &dyn StateStore) -> Vec<WindowState> {
        let mut all = Vec::new();
        for (k, v) in store.scan_prefix(PREFIX_WINDOW_SHARDS).unwrap() {
            let shard = decode_shard(&v).unwrap();
            assert!(!shard.is_empty(), "empty shard {k:?} is stored");
            all.extend(shard);
        }
        for (_, v) in store.scan_prefix(PREFIX_WINDOWS_V1).unwrap() {
            all.push(WindowState::decode(&v).unwrap());
        }
        all.sort_by(|a, b| (a.end, &a.key, a.start).cmp(&(b.end, &b.key, b.start)));
        all
    }

    fn open(p: &Pipeline) -> Vec<WindowState> {
        p.open_windows().cloned().collect()
    }

    /// Rewrites `store`'s window shards as checkpoints stored windows before shards: one key
    /// `s/w/<key>\0<start>` per window, binary, and the first one as JSON (older still).
    fn to_layout_v1(store: &mut dyn StateStore) {
        let mut b = WriteBatch::default();
        let mut first = true;
        for (k, v) in store.scan_prefix(PREFIX_WINDOW_SHARDS).unwrap() {
            b.delete(k);
            for w in decode_shard(&v).unwrap() {
                let mut key = PREFIX_WINDOWS_V1.to_vec();
                key.extend_from_slice(w.key.as_bytes());
                key.push(0);
                key.extend_from_slice(w.start.to_string().as_bytes());
                let value = if std::mem::take(&mut first) {
                    serde_json::to_vec(&w).unwrap()
                } else {
                    let mut v = Vec::new();
                    w.encode(&mut v);
                    v
                };
                b.put(key, value);
            }
        }
        store.write_batch(b).unwrap();
    }

    /// Readings of `devices` on three partitions, two per device in minute `minute`.
    fn minute_of_readings(devices: &[String], minute: i64, offsets: &mut [i64; 3]) -> Step {
        let t = T0 + minute * 60_000;
        let mut recs = Vec::new();
        for (i, dev) in devices.iter().enumerate() {
            let part = u32::try_from(i % 3).unwrap();
            let o = &mut offsets[i % 3];
            recs.push(reading(part, *o, dev, t + 1_000, 20.0));
            recs.push(reading(part, *o + 1, dev, t + 30_000, 21.0));
            *o += 2;
        }
        step(recs)
    }

    fn devices(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("D{i:03}")).collect()
    }

    /// The stored windows after a checkpoint are exactly the open windows: the ones the
    /// watermark purged since the previous checkpoint are deleted (without the scan, after the
    /// first checkpoint), the shards are re-chosen as the windows grow and shrink, and
    /// restoring gives the same state back.
    #[test]
    fn checkpoints_delete_purged_windows_and_restore_the_same_state() {
        use crate::state::memory::MemStore;
        let mut c = PipelineConfig::default();
        c.watermark.idle_timeout_ms = 1_000_000_000;
        c.window.allowed_lateness_ms = 0;
        let mut p = Pipeline::new(c.clone()).unwrap();
        p.windows_per_shard = 2;
        let mut store = MemStore::new();
        let mut offsets = [0; 3];
        let mut shard_counts = Vec::new();
        for (minute, n) in [(0, 3), (1, 40), (2, 40), (3, 5), (4, 3), (5, 3)] {
            p.apply(&minute_of_readings(&devices(n), minute, &mut offsets));
            p.checkpoint(&mut store).unwrap();
            assert!(p.open_window_count() > 0);
            assert_eq!(stored_windows(&store), open(&p), "minute {minute}");
            shard_counts.push(p.window_shards);
        }
        assert_eq!(
            shard_counts,
            [1, 32, 32, 2, 2, 2],
            "grown, kept, then shrunk"
        );
        assert!(p.stats().aggregates > 0, "windows closed and were purged");
        let restored = Pipeline::restore(c, &store).unwrap();
        assert_eq!(open(&restored), open(&p));
        assert_eq!(restored.next_offsets(), p.next_offsets());
    }

    /// A store that keeps a copy of the last batch written to it.
    #[derive(Default)]
    struct Recording {
        inner: crate::state::memory::MemStore,
        last: WriteBatch,
    }

    impl StateStore for Recording {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
            self.inner.get(key)
        }
        fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
            self.inner.put(key, value)
        }
        fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
            self.inner.delete(key)
        }
        fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<crate::state::KeyValue>, StateError> {
            self.inner.scan_prefix(prefix)
        }
        fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError> {
            self.last = batch.clone();
            self.inner.write_batch(batch)
        }
    }

    /// After the first checkpoint, a checkpoint writes only the shards of the windows that
    /// changed, and deletes nothing while no window was purged.
    #[test]
    fn a_checkpoint_writes_only_the_changed_shards() {
        use crate::state::BatchOp;
        let mut c = PipelineConfig::default();
        c.watermark.idle_timeout_ms = 1_000_000_000;
        let mut p = Pipeline::new(c.clone()).unwrap();
        p.windows_per_shard = 4;
        let mut store = Recording::default();
        let devs = devices(200);
        let mut offsets = [0; 3];
        p.apply(&minute_of_readings(&devs, 0, &mut offsets));
        p.checkpoint(&mut store).unwrap();
        assert_eq!(p.window_shards, 64);
        let shard_puts = |b: &WriteBatch| -> Vec<Vec<u8>> {
            b.ops
                .iter()
                .filter_map(|op| match op {
                    BatchOp::Put(k, _) if k.starts_with(PREFIX_WINDOW_SHARDS) => Some(k.clone()),
                    _ => None,
                })
                .collect()
        };
        let used: std::collections::BTreeSet<u32> = devs
            .iter()
            .map(|d| crate::window::shard_of(d, 64))
            .collect();
        assert_eq!(shard_puts(&store.last).len(), used.len());
        // One more reading of one device, in its open window.
        let o = offsets[1];
        p.apply(&step(vec![reading(1, o, &devs[7], T0 + 40_000, 22.0)]));
        p.checkpoint(&mut store).unwrap();
        assert_eq!(
            shard_puts(&store.last),
            [shard_key(crate::window::shard_of(&devs[7], 64))]
        );
        assert!(!store
            .last
            .ops
            .iter()
            .any(|op| matches!(op, BatchOp::Delete(_))));
        // Nothing changed: no shard is written.
        p.checkpoint(&mut store).unwrap();
        assert!(shard_puts(&store.last).is_empty());
        assert_eq!(stored_windows(&store), open(&p));
        assert_eq!(open(&Pipeline::restore(c, &store).unwrap()), open(&p));
    }

    /// A sled store whose windows are stored one per key, as checkpoints wrote them before
    /// shards (binary, one as JSON), restores to the same pipeline; its first checkpoint
    /// moves them into shards, after a reopen too, and the pipeline carries on with the same
    /// outputs as the one that never stopped.
    #[test]
    fn windows_stored_one_per_key_restore_and_move_to_shards() {
        use crate::state::sled_store::SledStore;
        let dir = tempfile::tempdir().unwrap();
        let c = PipelineConfig::default();
        let mut p = Pipeline::new(c.clone()).unwrap();
        let devs = devices(30);
        let mut offsets = [0; 3];
        p.apply(&minute_of_readings(&devs, 0, &mut offsets));
        {
            let mut store = SledStore::open(dir.path(), "sensors").unwrap();
            p.checkpoint(&mut store).unwrap();
            to_layout_v1(&mut store);
            assert!(store.scan_prefix(PREFIX_WINDOW_SHARDS).unwrap().is_empty());
            assert_eq!(store.scan_prefix(PREFIX_WINDOWS_V1).unwrap().len(), 30);
        }
        let mut r = {
            let mut store = SledStore::open(dir.path(), "sensors").unwrap();
            let mut r = Pipeline::restore(c.clone(), &store).unwrap();
            assert_eq!(open(&r), open(&p));
            r.checkpoint(&mut store).unwrap();
            assert!(store.scan_prefix(PREFIX_WINDOWS_V1).unwrap().is_empty());
            assert!(!store.scan_prefix(PREFIX_WINDOW_SHARDS).unwrap().is_empty());
            assert_eq!(stored_windows(&store), open(&p));
            r
        };
        let store = SledStore::open(dir.path(), "sensors").unwrap();
        assert_eq!(open(&Pipeline::restore(c, &store).unwrap()), open(&p));
        let next = minute_of_readings(&devs, 1, &mut offsets);
        let (a, b) = (p.apply(&next), r.apply(&next));
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Random steps (devices, out-of-order and late readings, idle partitions) with
        /// checkpoints at random points, most of them writing only what changed: restoring
        /// from any checkpoint gives the live state back, and replaying the steps after the
        /// last one gives the same outputs and the same final state.
        #[test]
        fn incremental_checkpoints_restore_the_live_state(
            lateness in proptest::sample::select(vec![0, 20_000, 90_000]),
            steps in proptest::collection::vec(
                (
                    proptest::collection::vec((0u32..3, 0usize..5, 0i64..400, -20.0f64..120.0), 0..12),
                    proptest::bool::weighted(0.4),
                ),
                1..24,
            ),
        ) {
            use crate::state::memory::MemStore;
            let mut c = PipelineConfig::default();
            c.window.allowed_lateness_ms = lateness;
            let mut p = Pipeline::new(c.clone()).unwrap();
            // A shard per window: the few windows here are spread over many shards, which
            // are re-chosen as windows open and close.
            p.windows_per_shard = 1;
            let mut store = MemStore::new();
            let mut offsets = [0i64; 3];
            let devices = ["A", "B", "C", "D", "E"];
            let mut since_checkpoint: Vec<(Step, Vec<OutputRecord>)> = Vec::new();
            for (i, (recs, checkpoint)) in steps.iter().enumerate() {
                let mut records = Vec::new();
                for &(part, dev, secs, temp) in recs {
                    let o = &mut offsets[usize::try_from(part).unwrap()];
                    records.push(reading(part, *o, devices[dev], T0 + secs * 1_000, temp));
                    *o += 1;
                }
                let st = Step {
                    processing_time: i64::try_from(i).unwrap() * 5_000,
                    records,
                    end: false,
                };
                let outs = p.apply(&st);
                since_checkpoint.push((st, outs));
                if *checkpoint {
                    p.checkpoint(&mut store).unwrap();
                    since_checkpoint.clear();
                    let r = Pipeline::restore(c.clone(), &store).unwrap();
                    let live: Vec<&WindowState> = p.open_windows().collect();
                    let back: Vec<&WindowState> = r.open_windows().collect();
                    proptest::prop_assert_eq!(live, back);
                    proptest::prop_assert_eq!(r.next_offsets(), p.next_offsets());
                    proptest::prop_assert_eq!(r.watermark(), p.watermark());
                    proptest::prop_assert_eq!(r.rules.snapshot(), p.rules.snapshot());
                    proptest::prop_assert_eq!(r.steps_applied(), p.steps_applied());
                }
            }
            let mut r = Pipeline::restore(c, &store).unwrap();
            for (st, outs) in &since_checkpoint {
                proptest::prop_assert_eq!(&r.apply(st), outs);
            }
            let live: Vec<&WindowState> = p.open_windows().collect();
            let back: Vec<&WindowState> = r.open_windows().collect();
            proptest::prop_assert_eq!(live, back);
        }
    }
}
