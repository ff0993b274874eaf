//! The embedded stream processor: [`LocalLog`] implements the processor's `InputLog` and
//! `OutputLog` over this broker's own partitions (no network hop), and [`run_pipeline`] keeps
//! one pipeline's driver running, recovering it after any error exactly as after a crash.
//!
//! `LocalLog` reads and appends (and the sled checkpoints) do blocking file I/O: the driver
//! runs on a blocking thread of its own ([`spawn`]).
//!
//! Reads decode stored batches (any codec) and never pass the high watermark. Appends are
//! local non-idempotent produces answered after their fsync (acks=all); a failed append is
//! never retried blindly: the driver's lifetime ends and recovery re-reads the output tails,
//! whose `runnel.seq` headers make every write idempotent (see `processor/EXACTLY-ONCE.md`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use runnel_processor::driver::{Clock, Driver, DriverConfig, InputLog, LogIoError, OutputLog};
use runnel_processor::state::sled_store::SledStore;
use runnel_processor::state::{KeyValue, StateError, StateStore, WriteBatch};
use runnel_processor::time::Millis;
use runnel_processor::{InputRecord, OutputRecord, PipelineConfig, StreamId};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::config::ProcessorConfig;
use crate::partition::Partition;
use crate::topics::TopicError;

/// Bytes read from a partition per call.
const READ_BYTES: usize = 1 << 20;
/// Records per appended batch.
const APPEND_BATCH: usize = 500;

/// The broker's partitions, seen by the processor.
#[derive(Clone)]
pub struct LocalLog {
    broker: Arc<Broker>,
}

impl LocalLog {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
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

impl LocalLog {
    /// Counts durable alerts (records carrying `runnel.alert.id`) per rule, with their
    /// latency from the triggering reading's timestamp (its producer's clock: for an on-time
    /// reading, when it was published).
    fn observe_alerts(&self, records: &[OutputRecord]) {
        let now = WallClock.now_ms();
        for r in records {
            if !r.headers.iter().any(|(k, _)| k == "runnel.alert.id") {
                continue;
            }
            let Ok(a) = serde_json::from_slice::<AlertView>(&r.value) else {
                continue;
            };
            // A reading that arrived behind the watermark (late data) is old by its own
            // delay, not the pipeline's: only on-time readings measure the latency.
            if self
                .broker
                .pipelines
                .watermark(&a.pipeline)
                .is_some_and(|w| r.timestamp < w)
            {
                self.broker.metrics.alert_count(&a.pipeline, &a.rule);
                continue;
            }
            let ms = u64::try_from(now.saturating_sub(r.timestamp)).unwrap_or(0);
            // Latencies in ms stay far below 2^53, so the f64 is exact.
            let seconds = u32::try_from(ms).map_or(f64::from(u32::MAX), f64::from) / 1000.0;
            self.broker.metrics.alert(&a.pipeline, &a.rule, seconds);
            self.broker.pipelines.alert_latency(&a.pipeline, ms);
        }
    }
}

fn io(e: impl std::fmt::Display) -> LogIoError {
    LogIoError(e.to_string())
}

/// Records of whole stored batches at offsets in `[from, hw)`, at most `max`, and the offset to
/// read next: after the last record taken, or past batches that hold no record for the reader
/// (control batches — a replicated partition stores each Raft no-op as one — and records
/// before `from`), so a read that met only those still moves on.
fn decode(
    mut bytes: Bytes,
    from: i64,
    hw: i64,
    max: usize,
) -> Result<(Vec<StoredRecord>, i64), LogIoError> {
    let mut out = Vec::new();
    let mut next = from;
    while bytes.len() >= batch::HEADER_LEN && out.len() < max {
        let header = batch::parse_header(&bytes).map_err(io)?;
        if header.base_offset >= hw {
            break;
        }
        let mut one = bytes.split_to(header.total_len().min(bytes.len()));
        if header.is_control() {
            next = next.max(header.next_offset().min(hw));
            continue;
        }
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one).map_err(io)?;
        for r in set.records {
            if r.offset < from || r.offset >= hw || r.control {
                continue;
            }
            if out.len() >= max {
                break;
            }
            next = r.offset.saturating_add(1);
            out.push(StoredRecord {
                offset: r.offset,
                key: r.key.map(Vec::from),
                value: r.value.map(Vec::from),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(Vec::from).unwrap_or_default()))
                    .collect(),
                timestamp: r.timestamp,
            });
        }
        if out.len() < max {
            next = next.max(header.next_offset().min(hw));
        }
    }
    Ok((out, next))
}

/// A decoded stored record.
pub(crate) struct StoredRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: i64,
}

/// Reads `[from, hw)` of a partition, at most `max` records.
pub(crate) fn read_range(
    part: &Partition,
    from: i64,
    max: usize,
) -> Result<Vec<StoredRecord>, LogIoError> {
    let o = part.offsets();
    let mut at = from.max(o.log_start);
    let mut out = Vec::new();
    while at < o.high_watermark && out.len() < max {
        let bytes = part.read(at, READ_BYTES).map_err(io)?;
        if bytes.is_empty() {
            break;
        }
        let (got, next) = decode(bytes, at, o.high_watermark, max.saturating_sub(out.len()))?;
        out.extend(got);
        if next <= at {
            break;
        }
        at = next;
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
        let recs = read_range(&part, from, max_records)?;
        Ok(recs
            .into_iter()
            .map(|r| InputRecord {
                topic: topic.to_owned(),
                partition,
                offset: r.offset,
                key: r.key,
                value: r.value,
                timestamp: r.timestamp,
            })
            .collect())
    }

    async fn wait_for_input(&self, positions: &[(String, u32, i64)], timeout_ms: u64) {
        let mut waits = Vec::new();
        for (t, p, at) in positions {
            if let Ok(Some(part)) = self.partition(t, *p) {
                let mut rx = part.watch_high_watermark();
                let at = *at;
                waits.push(Box::pin(async move {
                    let _ = rx.wait_for(|hw| *hw > at).await;
                }));
            }
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

impl OutputLog for LocalLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogIoError> {
        let want = i32::try_from(partitions).map_err(io)?;
        let t = match self.broker.topics.get(topic) {
            Some(t) => t,
            None => match self.broker.topics.create(topic, want, &[], false) {
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

    async fn append(&self, stream: &StreamId, records: &[OutputRecord]) -> Result<(), LogIoError> {
        let part = self
            .partition(&stream.topic, stream.partition)?
            .ok_or_else(|| LogIoError(format!("no partition {stream}")))?;
        let mut end = 0;
        for chunk in records.chunks(APPEND_BATCH) {
            let recs: Vec<Record> = chunk
                .iter()
                .map(|r| Record {
                    key: r.key.clone(),
                    value: Some(r.value.clone()),
                    headers: r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                    timestamp: r.timestamp,
                })
                .collect();
            let bytes = encode_batch(&recs, ProducerInfo::default());
            let header = batch::validate(&bytes).map_err(io)?;
            let appended = part.append(bytes, &header).map_err(io)?;
            end = appended.last_offset.saturating_add(1);
        }
        if end > 0 {
            let wait = Duration::from_millis(self.broker.config.max_produce_wait_ms.max(1));
            part.wait_durable(end, wait).await.map_err(io)?;
            self.observe_alerts(records);
        }
        Ok(())
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

/// The pipeline's state store, timing each atomic batch: the driver writes one per
/// checkpoint, and the core reads no clock, so checkpoint durations are measured here.
#[derive(Clone)]
struct TimedStore {
    inner: SledStore,
    broker: Arc<Broker>,
    pipeline: String,
}

impl StateStore for TimedStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        self.inner.scan_prefix(prefix)
    }
    fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        let started = std::time::Instant::now();
        let result = self.inner.write_batch(batch);
        if result.is_ok() {
            let took = started.elapsed();
            self.broker
                .metrics
                .checkpoint(&self.pipeline, took.as_secs_f64());
            self.broker.pipelines.checkpointed(&self.pipeline, took);
        }
        result
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
            .unwrap_or(0)
    }
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

/// Runs one pipeline until `shutdown`: recover, run live; after any error, wait a second and
/// recover again (the same path as after a crash). Reads, appends and sled checkpoints block
/// the calling thread, so [`spawn`] runs this on a blocking thread of its own.
pub async fn run_pipeline(
    broker: Arc<Broker>,
    pipeline: PipelineConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = pipeline.name.clone();
    let dir = broker
        .config
        .processor
        .state_dir(&broker.config.data_dir)
        .join(&name);
    let store = match SledStore::open(&dir, &name) {
        Ok(s) => TimedStore {
            inner: s,
            broker: broker.clone(),
            pipeline: name.clone(),
        },
        Err(e) => {
            tracing::error!(pipeline = %name, "cannot open the processor state at {}: {e}", dir.display());
            return;
        }
    };
    let config = driver_config(&broker.config.processor);
    broker.pipelines.register(&pipeline);
    loop {
        let stop = shutdown.clone();
        let log = LocalLog::new(broker.clone());
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
            d.run_observed(|| *stop.borrow(), |d| observe(&broker, d))
                .await
        };
        match outcome.await {
            Ok(()) => {
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
            let (b, rx, h) = (broker.clone(), shutdown.clone(), handle.clone());
            tokio::task::spawn_blocking(move || h.block_on(run_pipeline(b, p, rx)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use prometheus_client::metrics::histogram::Histogram;

    use super::*;
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
                let v = String::from_utf8(r.value.clone().unwrap()).unwrap();
                (r.offset, v)
            })
            .collect()
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
        let (got, next) = decode(bytes.clone(), 0, 5, usize::MAX).unwrap();
        assert_eq!((got.len(), next), (3, 5));
        let (got, next) = decode(bytes.clone(), 0, 5, 1).unwrap();
        assert_eq!((got.len(), next), (1, 1));
        let (got, next) = decode(bytes.clone(), 1, 5, 1).unwrap();
        assert_eq!((values(&got), next), (vec![(1, "b".to_string())], 2));
        // Only control batches left: no record, but the position moves.
        let (got, next) = decode(bytes.slice(bytes.len() - noop().len()..), 4, 5, 9).unwrap();
        assert_eq!((got.len(), next), (0, 5));
        // Nothing at or past the high watermark.
        let (got, next) = decode(bytes, 0, 3, usize::MAX).unwrap();
        assert_eq!((got.len(), next), (2, 3));
    }
}
