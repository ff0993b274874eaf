//! The standalone processor (`runnel process --bootstrap HOST:PORT`): the same pipelines as
//! the embedded one, in a process of its own, against any Kafka-compatible cluster.
//! [`KafkaLog`] implements the processor's `InputLog` and `OutputLog` over the Kafka protocol
//! ([`crate::kafka_client`]); [`run`] keeps each pipeline's driver running, recovering it
//! after any error exactly as after a crash.
//!
//! Exactly-once rests on the same argument as embedded (`processor/EXACTLY-ONCE.md`): the
//! journal topic `__runnel_journal.<pipeline>` lives on the cluster, appends are acks=all and
//! never repeated when their outcome is unknown, and recovery reads each output partition's
//! tail for this pipeline's last `runnel.seq`. No transactions, and no idempotent producer
//! against a foreign cluster; the embedded processor in cluster mode
//! (`crate::cluster_processing`) uses this log with [`KafkaLog::idempotent`].
//!
//! Operators see it as they see a broker's processor: an HTTP listener (`--http-addr`, on by
//! default) serves the processor series at `/metrics` and the pipelines' status at
//! `/api/dashboard`, which `runnel status` prints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_processor::driver::{Driver, InputLog, LogIoError, OutputLog};
use runnel_processor::state::sled_store::SledStore;
use runnel_processor::{InputRecord, OutputRecord, PipelineConfig, StreamId};
use tokio::sync::watch;

use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::config::ProcessorConfig;
use crate::kafka_client::fetch::{decode_fetched, FetchedRecord};
use crate::kafka_client::{produce, Client, ClientConfig, KafkaClientError, OFFSET_OUT_OF_RANGE};
use crate::processing::{
    configured_pipelines, driver_config, observe_alerts, to_input, to_record, OnCheckpoint,
    TimedStore, WallClock,
};
use crate::processor_status::Observed;

/// Where `runnel process` serves `/metrics` unless told otherwise: beside `runnel serve`'s
/// default (9094), so both can run on one host.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9095";

/// How long a pipeline may take to finish its step and checkpoint after a stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Records per produced batch.
const APPEND_RECORDS: usize = 500;
/// Bytes per produced batch, under Kafka's default `max.message.bytes` (1 MiB).
const APPEND_BYTES: usize = 900 * 1024;

/// Most records kept per partition by the read cache.
const CACHE_RECORDS: usize = 20_000;

/// The cluster, seen by the processor.
#[derive(Clone)]
pub struct KafkaLog {
    client: Arc<Client>,
    cache: Arc<Mutex<HashMap<(String, i32), Cached>>>,
    /// Alerts appended are counted here.
    observed: Arc<Observed>,
    /// Set: outputs are written as idempotent batches of this producer id (epoch 0, base
    /// sequence from `runnel.seq`), see [`KafkaLog::idempotent`].
    producer_id: Option<i64>,
    /// Set: told of every appended output instead of counting alerts into `observed`.
    on_append: Option<OnAppend>,
    /// Per partition: (high watermark, offset after the last record below it), as last
    /// computed by [`KafkaLog::data_end`].
    data_ends: Arc<Mutex<DataEnds>>,
}

/// (topic, partition) → (high watermark, offset after the last record below it).
type DataEnds = HashMap<(String, i32), (i64, i64)>;

/// Control batches (a replicated partition's Raft no-ops, one offset each) looked past at the
/// end of a partition before giving up and taking the high watermark as the end of its data.
const TRAILING_CONTROL_SCAN: usize = 64;

/// Told of the records of every output append, once durable.
pub type OnAppend = Arc<dyn Fn(&[OutputRecord]) + Send + Sync>;

/// Every record of a partition with an offset in `[lo, hi)`, as last fetched. Records below
/// the high watermark never change, and the driver re-reads each step's input as many small
/// ranges (partitions interleaved by time), so these are answered without a round trip.
#[derive(Default)]
struct Cached {
    lo: i64,
    hi: i64,
    records: Vec<FetchedRecord>,
}

impl KafkaLog {
    /// The processor's view of the cluster `client` talks to.
    pub fn new(client: Arc<Client>) -> Self {
        Self::observed_by(client, Arc::default())
    }

    /// [`KafkaLog::new`], counting the alerts it appends into `observed`.
    pub fn observed_by(client: Arc<Client>, observed: Arc<Observed>) -> Self {
        Self {
            client,
            cache: Arc::default(),
            observed,
            producer_id: None,
            on_append: None,
            data_ends: Arc::default(),
        }
    }

    /// The offset after the last record below `hw` (`start` if none): the high watermark
    /// minus any trailing control batches. The driver counts a partition caught up once it
    /// has read up to what `offsets` says, and a reader never lands on a control batch's
    /// offset, so without this a replicated partition whose last batch is a Raft no-op would
    /// never be caught up and the pipeline's time-ordered merge would wait on it for ever.
    async fn data_end(
        &self,
        topic: &str,
        partition: i32,
        start: i64,
        hw: i64,
    ) -> Result<i64, LogIoError> {
        let key = (topic.to_owned(), partition);
        if let Some((h, end)) = self
            .data_ends
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            if h == hw {
                return Ok(end);
            }
        }
        let mut end = hw;
        let mut at = hw;
        for _ in 0..TRAILING_CONTROL_SCAN {
            if at <= start {
                end = start;
                break;
            }
            at -= 1;
            // The first record at or after `at`: the last record, once `at` reaches it.
            let got = match self.cached(topic, partition, at, 1) {
                Some(hit) => hit,
                None => {
                    self.read_range(topic, partition, at, Some(hw), 1, false)
                        .await?
                }
            };
            if let Some(r) = got.first() {
                end = r.offset.saturating_add(1).min(hw);
                break;
            }
        }
        if let Ok(mut m) = self.data_ends.lock() {
            m.insert(key, (hw, end));
        }
        Ok(end)
    }

    /// This log, telling `on_append` of every durable output append (the embedded processor
    /// counts alerts into its broker's metrics this way).
    pub fn reporting_to(mut self, on_append: OnAppend) -> Self {
        self.on_append = Some(on_append);
        self
    }

    /// This log, writing outputs as idempotent batches of `producer_id` at epoch 0 with base
    /// sequence = the first record's `runnel.seq` mod 2^31. Every lifetime of a pipeline
    /// writes record n of a stream with the same content and sequence, so the partition's
    /// producer table answers a second write of the same batch (a deposed driver's) as a
    /// duplicate, and a misaligned one with OUT_OF_ORDER_SEQUENCE (the lifetime ends and
    /// recovery re-reads the tails). Only for a cluster that reserves `producer_id` (Runnel
    /// in cluster mode, `crate::producer_ids`).
    pub fn idempotent(mut self, producer_id: i64) -> Self {
        self.producer_id = Some(producer_id);
        self
    }

    /// Records from `from` (at most `max`) if the cache holds `from`.
    fn cached(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        max: usize,
    ) -> Option<Vec<FetchedRecord>> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(&(topic.to_owned(), partition))?;
        if from < c.lo || from >= c.hi {
            return None;
        }
        let i = c.records.partition_point(|r| r.offset < from);
        let hit: Vec<FetchedRecord> = c.records.iter().skip(i).take(max).cloned().collect();
        (!hit.is_empty()).then_some(hit)
    }

    /// Remembers that `records` are all the records in `[at, last + 1)`.
    fn remember(&self, topic: &str, partition: i32, at: i64, records: &[FetchedRecord]) {
        let Some(last) = records.last() else { return };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let c = cache.entry((topic.to_owned(), partition)).or_default();
        if c.hi != at || c.records.is_empty() {
            *c = Cached {
                lo: at,
                ..Cached::default()
            };
        }
        c.records.extend_from_slice(records);
        c.hi = last.offset.saturating_add(1);
        if c.records.len() > CACHE_RECORDS {
            let cut = c.records.len().saturating_sub(CACHE_RECORDS);
            c.records.drain(..cut);
            c.lo = c.records.first().map_or(c.hi, |r| r.offset);
        }
    }

    /// Records of `[from, until)`, at most `max`, fetched in as many requests as needed;
    /// a `from` below the log start reads from the log start (as the embedded log does).
    async fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        until: Option<i64>,
        max: usize,
        fill_cache: bool,
    ) -> Result<Vec<FetchedRecord>, LogIoError> {
        let mut out = Vec::new();
        let mut at = from;
        let mut restarted = false;
        while out.len() < max {
            let Some(f) = self
                .client
                .fetch(topic, partition, at, 0)
                .await
                .map_err(io)?
            else {
                break;
            };
            if f.error_code == OFFSET_OUT_OF_RANGE {
                // Below the log start: read from there, once. Past the end: nothing yet.
                let start = self.offsets_of(topic, partition).await?.0;
                if at < start && !restarted {
                    at = start;
                    restarted = true;
                    continue;
                }
                break;
            }
            let end = until.map_or(f.high_watermark, |u| u.min(f.high_watermark));
            if at >= end {
                break;
            }
            let want = max.saturating_sub(out.len());
            // Filling the cache: decode the whole answer, keep it, return what was asked.
            let decode_max = if fill_cache { usize::MAX } else { want };
            let decoded = decode_fetched(f.records, at, end, decode_max)
                .map_err(|e| LogIoError(format!("fetch {topic}/{partition} at {at}: {e}")))?;
            let mut got = decoded.records;
            if fill_cache {
                self.remember(topic, partition, at, &got);
                got.truncate(want);
            }
            let Some(last) = got.last() else {
                if decoded.next_offset > at {
                    // Only control batches (a replicated partition's Raft no-ops, transaction
                    // markers): no records, but the reader moves past them.
                    at = decoded.next_offset;
                    continue;
                }
                // Below the high watermark but nothing whole came back: a batch larger than
                // the fetch size would be returned whole by Kafka, so this is a broker that
                // cannot serve this offset.
                return Err(LogIoError(format!(
                    "fetch {topic}/{partition} at {at}: no record below the high watermark {end}"
                )));
            };
            at = last.offset.saturating_add(1);
            out.extend(got);
        }
        Ok(out)
    }

    async fn offsets_of(&self, topic: &str, partition: i32) -> Result<(i64, i64), LogIoError> {
        Ok(self
            .client
            .offsets(topic, partition)
            .await
            .map_err(io)?
            .unwrap_or((0, 0)))
    }
}

fn io(e: KafkaClientError) -> LogIoError {
    LogIoError(e.to_string())
}

fn partition_index(p: u32) -> Result<i32, LogIoError> {
    i32::try_from(p).map_err(|_| LogIoError(format!("partition {p} out of range")))
}

impl InputLog for KafkaLog {
    async fn partitions(&self, topic: &str) -> Result<Option<u32>, LogIoError> {
        self.client.partition_count(topic).await.map_err(io)
    }

    /// (log start, end of data): the high watermark less trailing control batches.
    async fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogIoError> {
        let p = partition_index(partition)?;
        let (start, hw) = self.offsets_of(topic, p).await?;
        Ok((start, self.data_end(topic, p, start, hw).await?))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_records: usize,
    ) -> Result<Vec<InputRecord>, LogIoError> {
        let p = partition_index(partition)?;
        let recs = match self.cached(topic, p, from, max_records) {
            Some(hit) => hit,
            None => {
                self.read_range(topic, p, from, None, max_records, true)
                    .await?
            }
        };
        let name: Arc<str> = topic.into();
        Ok(recs
            .into_iter()
            .map(|r| to_input(&name, partition, r))
            .collect())
    }

    async fn wait_for_input(&self, positions: &[(String, u32, i64)], timeout_ms: u64) {
        // A reader past the last record waits for the high watermark to pass the trailing
        // control batches, not for it to pass the reader (it already has).
        let ends = self.data_ends.lock().map(|m| m.clone()).unwrap_or_default();
        let parts: Vec<(String, i32, i64)> = positions
            .iter()
            .filter_map(|(t, p, o)| {
                let p = i32::try_from(*p).ok()?;
                let at = match ends.get(&(t.clone(), p)) {
                    Some((hw, end)) if *o >= *end => (*o).max(*hw),
                    _ => *o,
                };
                Some((t.clone(), p, at))
            })
            .collect();
        if parts.is_empty() {
            tokio::time::sleep(Duration::from_millis(timeout_ms.min(100))).await;
            return;
        }
        self.client.wait_for_data(&parts, timeout_ms).await;
    }
}

impl OutputLog for KafkaLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogIoError> {
        let have = self
            .client
            .ensure_topic(topic, partitions)
            .await
            .map_err(io)?;
        if have < partitions {
            return Err(LogIoError(format!(
                "topic {topic} has {have} partitions, the pipeline needs {partitions}"
            )));
        }
        Ok(())
    }

    async fn append(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> Result<Range<i64>, LogIoError> {
        let p = partition_index(stream.partition)?;
        let recs: Vec<Record> = records.iter().map(to_record).collect();
        let batches = match self.producer_id {
            Some(pid) => idempotent_batches(pid, records, &recs),
            None => produce::encode_batches(&recs, APPEND_RECORDS, APPEND_BYTES),
        };
        // In order, one at a time: a batch is sent only after the one before it is durable,
        // so a failure leaves a prefix of the stream written, as the tail scan expects.
        let mut offsets: Option<Range<i64>> = None;
        for batch in batches {
            let count = batch::parse_header(&batch)
                .map(|h| i64::from(h.last_offset_delta).saturating_add(1))
                .map_err(|e| LogIoError(format!("encoded batch: {e}")))?;
            let base = self
                .client
                .produce(&stream.topic, p, batch)
                .await
                .map_err(io)?;
            let start = offsets.map_or(base, |o| o.start);
            offsets = Some(start..base.saturating_add(count));
        }
        match &self.on_append {
            Some(f) => f(records),
            None => observe_alerts(&self.observed.metrics, &self.observed.pipelines, records),
        }
        Ok(offsets.unwrap_or(0..0))
    }

    async fn tail(
        &self,
        stream: &StreamId,
        max_records: usize,
    ) -> Result<Vec<Vec<(String, Vec<u8>)>>, LogIoError> {
        let p = partition_index(stream.partition)?;
        let (start, hw) = self.offsets_of(&stream.topic, p).await?;
        let n = i64::try_from(max_records).unwrap_or(i64::MAX);
        let from = hw.saturating_sub(n).max(start);
        let recs = self
            .read_range(&stream.topic, p, from, Some(hw), max_records, false)
            .await?;
        Ok(recs.into_iter().map(|r| r.headers).collect())
    }
}

/// Kafka sequences wrap from `i32::MAX` to 0.
const SEQ_SPACE: u64 = 1 << 31;

/// `records` (with their encodings `recs`) as idempotent batches of `pid` at epoch 0: each
/// batch holds records consecutive in `runnel.seq` (a break starts a new batch) and at most
/// [`APPEND_RECORDS`] records and about [`APPEND_BYTES`] bytes; its base sequence is its
/// first record's `runnel.seq` mod 2^31.
fn idempotent_batches(pid: i64, records: &[OutputRecord], recs: &[Record]) -> Vec<bytes::Bytes> {
    let consecutive =
        |i: usize| i == 0 || records[i - 1].seq.checked_add(1) == records.get(i).map(|r| r.seq);
    produce::split_batches(recs, APPEND_RECORDS, APPEND_BYTES, |i| !consecutive(i))
        .into_iter()
        .map(|range| {
            let first = records.get(range.start).map_or(0, |r| r.seq % SEQ_SPACE);
            let info = ProducerInfo {
                producer_id: pid,
                producer_epoch: 0,
                base_sequence: i32::try_from(first).unwrap_or(0),
            };
            encode_batch(&recs[range], info).freeze()
        })
        .collect()
}

/// What `runnel process` runs.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// `host:port[,host:port...]` of the cluster.
    pub bootstrap: String,
    /// Checkpoints: one sled database per pipeline under this directory.
    pub state_dir: PathBuf,
    /// The `[processor]` section: the pipelines and the driver settings (its `enabled` and
    /// `state_dir` are not used here).
    pub processor: ProcessorConfig,
    /// Where `/metrics` and `/api/dashboard` are served; `None`: no HTTP listener.
    pub http_addr: Option<SocketAddr>,
}

/// Runs every configured pipeline against the cluster until `stop` resolves, then lets each
/// finish its step and checkpoint.
pub async fn run(
    config: StandaloneConfig,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the state directory {}: {e}",
            config.state_dir.display()
        )
    })?;
    let client = Arc::new(Client::new(ClientConfig::new(&config.bootstrap)));
    if let Err(e) = client.connect().await {
        // Not fatal: the cluster may be starting; each pipeline keeps retrying.
        tracing::warn!("cluster at {} not reachable yet: {e}", config.bootstrap);
    }
    let (tx, rx) = watch::channel(false);
    let observed = Arc::new(Observed::default());
    // Bound before any pipeline starts: an address in use is an error at start, not a
    // processor that runs unseen.
    let http = match config.http_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen for HTTP on {addr} (--http-addr): {e}")
            })?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            Some(tokio::spawn(crate::net::serve_processor_http(
                listener,
                observed.clone(),
                rx.clone(),
            )))
        }
        None => None,
    };
    let handle = tokio::runtime::Handle::current();
    let tasks: Vec<_> = configured_pipelines(&config.processor)
        .into_iter()
        .map(|p| {
            let (c, rx, h, cfg) = (client.clone(), rx.clone(), handle.clone(), config.clone());
            let o = observed.clone();
            // sled checkpoints block: each pipeline gets a blocking thread, as embedded.
            tokio::task::spawn_blocking(move || h.block_on(run_pipeline(c, cfg, p, o, rx)))
        })
        .collect();
    tracing::info!(
        "processing against {} with state in {}",
        config.bootstrap,
        config.state_dir.display()
    );
    stop.await;
    tracing::info!("shutting down");
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(h) = http {
        let _ = h.await;
    }
    Ok(())
}

/// One pipeline until `shutdown`: recover, run live; after any error, wait a second and
/// recover again (the same path as after a crash).
async fn run_pipeline(
    client: Arc<Client>,
    config: StandaloneConfig,
    pipeline: PipelineConfig,
    observed: Arc<Observed>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = pipeline.name.clone();
    let dir = config.state_dir.join(&name);
    let on_checkpoint: OnCheckpoint = {
        let (o, name) = (observed.clone(), name.clone());
        Arc::new(move |took: Duration| {
            o.metrics.checkpoint(&name, took.as_secs_f64());
            o.pipelines.checkpointed(&name, took);
        })
    };
    let store = match SledStore::open(&dir, &name) {
        Ok(s) => TimedStore::new(s, on_checkpoint),
        Err(e) => {
            tracing::error!(pipeline = %name, "cannot open the processor state at {}: {e}", dir.display());
            return;
        }
    };
    let driver = driver_config(&config.processor);
    observed.pipelines.register(&pipeline);
    loop {
        let stop = shutdown.clone();
        let log = KafkaLog::observed_by(client.clone(), observed.clone());
        let lifetime = async {
            let mut d = Driver::recover(
                log.clone(),
                log,
                WallClock,
                store.clone(),
                pipeline.clone(),
                driver.clone(),
            )
            .await?;
            tracing::info!(pipeline = %name, steps = d.pipeline().steps_applied(), "pipeline recovered");
            d.run_observed(
                || *stop.borrow(),
                |d| {
                    observed
                        .pipelines
                        .observe(d.pipeline(), d.checkpoint_stats())
                },
            )
            .await
        };
        let mut stopping = shutdown.clone();
        let outcome = tokio::select! {
            r = lifetime => r,
            // A step normally ends soon after the stop and checkpoints; one stuck retrying an
            // unreachable cluster is abandoned after a grace period, without a checkpoint,
            // which is always safe (the next start recovers from the last one).
            _ = async {
                wait_stopped(&mut stopping).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => {
                tracing::warn!(pipeline = %name, "stopped without a final checkpoint");
                return;
            }
        };
        observed.pipelines.stopped(
            &name,
            outcome.as_ref().err().map(std::string::ToString::to_string),
        );
        match outcome {
            Ok(()) => {
                if let Err(e) = store.wait_flushed() {
                    tracing::error!(pipeline = %name, "the final checkpoint did not flush: {e}");
                }
                return;
            }
            Err(e) if *shutdown.borrow() => {
                tracing::warn!(pipeline = %name, "pipeline stopped without a final checkpoint: {e}");
                return;
            }
            Err(e) => tracing::error!(pipeline = %name, "pipeline stopped, recovering: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wait_stopped(&mut shutdown) => return,
        }
    }
}

async fn wait_stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// `runnel process`: run the pipelines against a Kafka-compatible cluster.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// Any broker of the cluster, HOST:PORT (several: comma-separated)
    #[arg(long, env = "RUNNEL_BOOTSTRAP")]
    pub bootstrap: String,
    /// Directory for the checkpoints (one sled database per pipeline)
    /// [default: [processor] state_dir from the config, else ./runnel-process]
    #[arg(long, env = "RUNNEL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// TOML config file; only its [processor] section is used (the pipelines,
    /// [[processor.pipelines]], and the checkpoint settings), the same one `serve` reads
    /// [default: ./runnel.toml if it exists]
    #[arg(long, env = "RUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to serve HTTP for operators: /metrics (Prometheus: events in, late, dead letters,
    /// windows open, watermark lag, checkpoint durations, alerts per rule) and
    /// /api/dashboard (what `runnel status --http-addr ADDR` prints). On by default, beside
    /// `serve`'s 9094 so both fit on one host; `off` for none. An address in use fails the
    /// start
    #[arg(long, env = "RUNNEL_PROCESS_HTTP_ADDR", value_name = "HOST:PORT|off",
          default_value = DEFAULT_HTTP_ADDR, value_parser = parse_http_addr)]
    pub http_addr: HttpAddr,
}

/// `--http-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAddr(pub Option<SocketAddr>);

fn parse_http_addr(s: &str) -> Result<HttpAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(HttpAddr(None));
    }
    s.parse()
        .map(|a| HttpAddr(Some(a)))
        .map_err(|e| format!("`{s}` is neither HOST:PORT nor `off`: {e}"))
}

impl ProcessArgs {
    /// Defaults < config file < flags.
    pub fn to_config(&self) -> anyhow::Result<StandaloneConfig> {
        let default_file = PathBuf::from("runnel.toml");
        let file = match &self.config {
            Some(path) => crate::config::Config::from_file(path)?,
            None if default_file.exists() => crate::config::Config::from_file(&default_file)?,
            None => crate::config::Config::default(),
        };
        file.validate()?;
        let state_dir = self
            .state_dir
            .clone()
            .or_else(|| file.processor.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from("runnel-process"));
        Ok(StandaloneConfig {
            bootstrap: self.bootstrap.clone(),
            state_dir,
            processor: file.processor,
            http_addr: self.http_addr.0,
        })
    }
}

/// Runs `runnel process` until Ctrl-C or SIGTERM.
pub async fn run_cli(args: ProcessArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    anyhow::ensure!(
        !ClientConfig::new(&config.bootstrap).bootstrap.is_empty(),
        "--bootstrap names no broker"
    );
    run(config, crate::server::shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ProcessArgs,
    }

    fn rec(offset: i64) -> FetchedRecord {
        FetchedRecord {
            offset,
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(&offset.to_be_bytes())),
            headers: vec![],
            timestamp: offset,
        }
    }

    fn out(seq: u64) -> OutputRecord {
        OutputRecord {
            stream: StreamId {
                topic: "t".into(),
                partition: 0,
            },
            seq,
            key: None,
            value: seq.to_be_bytes().to_vec(),
            headers: vec![],
            timestamp: 0,
        }
    }

    /// (base sequence, records, producer id, epoch) of each idempotent batch of `seqs`.
    fn idempotent_shape(seqs: &[u64]) -> Vec<(i32, i32, i64, i16)> {
        let records: Vec<OutputRecord> = seqs.iter().map(|s| out(*s)).collect();
        let recs: Vec<Record> = records
            .iter()
            .map(|r| Record {
                value: Some(r.value.clone()),
                ..Record::default()
            })
            .collect();
        idempotent_batches(7, &records, &recs)
            .iter()
            .map(|b| {
                let h = crate::codec::batch::parse_header(b).unwrap();
                (
                    h.base_sequence,
                    h.last_offset_delta + 1,
                    h.producer_id,
                    h.producer_epoch,
                )
            })
            .collect()
    }

    #[test]
    fn idempotent_batches_follow_runnel_seq() {
        assert_eq!(idempotent_shape(&[3, 4, 5]), vec![(3, 3, 7, 0)]);
        // A break in the sequence starts a new batch.
        assert_eq!(
            idempotent_shape(&[3, 4, 9, 10]),
            vec![(3, 2, 7, 0), (9, 2, 7, 0)]
        );
        // At most APPEND_RECORDS per batch.
        let many: Vec<u64> = (0..1_001).collect();
        let n = i32::try_from(APPEND_RECORDS).unwrap();
        assert_eq!(
            idempotent_shape(&many),
            vec![(0, n, 7, 0), (n, n, 7, 0), (2 * n, 1, 7, 0)]
        );
        // Sequences are runnel.seq mod 2^31 (Kafka's wrap at i32::MAX).
        let high = (1u64 << 31) + 5;
        assert_eq!(idempotent_shape(&[high]), vec![(5, 1, 7, 0)]);
        assert!(idempotent_shape(&[]).is_empty());
    }

    #[test]
    fn read_cache_answers_only_inside_what_was_fetched() {
        let log = KafkaLog::new(Arc::new(Client::new(ClientConfig::new("127.0.0.1:1"))));
        let offsets = |v: Option<Vec<FetchedRecord>>| -> Option<Vec<i64>> {
            v.map(|v| v.iter().map(|r| r.offset).collect())
        };
        assert_eq!(log.cached("t", 0, 0, 10), None);
        // Fetched from 5: offsets 5, 6 and (after a compaction gap) 9.
        log.remember("t", 0, 5, &[rec(5), rec(6), rec(9)]);
        assert_eq!(offsets(log.cached("t", 0, 5, 10)), Some(vec![5, 6, 9]));
        assert_eq!(offsets(log.cached("t", 0, 7, 10)), Some(vec![9]));
        assert_eq!(offsets(log.cached("t", 0, 5, 2)), Some(vec![5, 6]));
        assert_eq!(log.cached("t", 0, 4, 10), None);
        assert_eq!(log.cached("t", 0, 10, 10), None);
        assert_eq!(log.cached("t", 1, 5, 10), None);
        // The next fetch continues the run; a fetch elsewhere replaces it.
        log.remember("t", 0, 10, &[rec(10)]);
        assert_eq!(offsets(log.cached("t", 0, 6, 10)), Some(vec![6, 9, 10]));
        log.remember("t", 0, 100, &[rec(100)]);
        assert_eq!(log.cached("t", 0, 6, 10), None);
        assert_eq!(offsets(log.cached("t", 0, 100, 10)), Some(vec![100]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_move_past_control_batches() {
        use crate::codec::batch;
        use crate::codec::builder::{
            control_type, encode_batch, encode_control_batch, leader_change_message, ProducerInfo,
        };
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_owned(),
            kafka_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..crate::config::Config::default()
        };
        let running = crate::server::start(config).await.unwrap();
        let topic = running.broker.topics.create("t", 1, &[], false).unwrap();
        let part = &topic.partitions[0];
        let data = |v: &str| {
            let r = Record {
                value: Some(v.as_bytes().to_vec()),
                timestamp: 1_700_000_000_000,
                ..Record::default()
            };
            encode_batch(&[r], ProducerInfo::default())
        };
        let noop =
            || encode_control_batch(control_type::LEADER_CHANGE, &leader_change_message(-1), -1);
        // a | no-op | b | no-op (the last batch)
        for b in [data("a"), noop(), data("b"), noop()] {
            let header = batch::validate(&b).unwrap();
            part.append(b, &header).unwrap();
        }
        let client = Client::new(ClientConfig::new(&running.kafka_addr.to_string()));
        let log = KafkaLog::new(Arc::new(client));
        let offsets = |v: Vec<FetchedRecord>| v.iter().map(|r| r.offset).collect::<Vec<_>>();
        for fill_cache in [false, true] {
            let got = log
                .read_range("t", 0, 0, None, 10, fill_cache)
                .await
                .unwrap();
            assert_eq!(offsets(got), vec![0, 2]);
            let got = log
                .read_range("t", 0, 1, None, 10, fill_cache)
                .await
                .unwrap();
            assert_eq!(offsets(got), vec![2]);
            // From the trailing no-op: nothing, and no "no record below the high watermark".
            let got = log
                .read_range("t", 0, 3, None, 10, fill_cache)
                .await
                .unwrap();
            assert!(got.is_empty());
        }
        // The end of the data is before the trailing no-op: a reader at 3 is caught up.
        assert_eq!(part.offsets().high_watermark, 4);
        assert_eq!(InputLog::offsets(&log, "t", 0).await.unwrap(), (0, 3));
        let fresh = KafkaLog::new(log.client.clone());
        assert_eq!(InputLog::offsets(&fresh, "t", 0).await.unwrap(), (0, 3));
        // Only control batches after a record: still its end; none at all: the log start.
        for b in [noop(), noop()] {
            let header = batch::validate(&b).unwrap();
            part.append(b, &header).unwrap();
        }
        assert_eq!(InputLog::offsets(&fresh, "t", 0).await.unwrap(), (0, 3));
        let empty = running.broker.topics.create("e", 1, &[], false).unwrap();
        let b = noop();
        let header = batch::validate(&b).unwrap();
        empty.partitions[0].append(b, &header).unwrap();
        assert_eq!(InputLog::offsets(&fresh, "e", 0).await.unwrap(), (0, 0));
        running.shutdown().await;
    }

    #[test]
    fn config_file_processor_section_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(
            &path,
            "[processor]\nenabled = false\nmax_step_records = 7\nstate_dir = \"/from/file\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", p]).unwrap();
        let c = w.args.to_config().unwrap();
        assert_eq!(c.processor.max_step_records, 7);
        assert_eq!(c.state_dir, PathBuf::from("/from/file"));
        assert_eq!(c.http_addr, Some(DEFAULT_HTTP_ADDR.parse().unwrap()));
        let w =
            Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", p, "--state-dir", "s"])
                .unwrap();
        assert_eq!(w.args.to_config().unwrap().state_dir, PathBuf::from("s"));
        for (flag, want) in [
            ("off", None),
            ("OFF", None),
            ("127.0.0.1:0", Some("127.0.0.1:0".parse().unwrap())),
        ] {
            let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--http-addr", flag]).unwrap();
            assert_eq!(w.args.http_addr, HttpAddr(want), "{flag}");
        }
        assert!(Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--http-addr", "nope"]).is_err());
        std::fs::write(&path, "[processor]\nmax_step_records = 0\n").unwrap();
        let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", p]).unwrap();
        assert!(w.args.to_config().is_err());
    }

    /// `runnel process` runs the pipelines the file declares, as `serve` does; none declared
    /// is the built-in one; an invalid one is refused before anything starts.
    #[test]
    fn config_file_pipelines() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines.toml");
        let e = example.to_str().unwrap();
        let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", e]).unwrap();
        let names: Vec<String> = configured_pipelines(&w.args.to_config().unwrap().processor)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["sensors", "sensors_pb", "machines"]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        let p = path.to_str().unwrap();
        std::fs::write(&path, "[processor]\nmax_step_records = 7\n").unwrap();
        let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", p]).unwrap();
        assert_eq!(
            configured_pipelines(&w.args.to_config().unwrap().processor),
            [PipelineConfig::default()]
        );
        std::fs::write(
            &path,
            "[[processor.pipelines]]\n[processor.pipelines.window]\nsize_ms = 0\n",
        )
        .unwrap();
        let w = Wrap::try_parse_from(["x", "--bootstrap", "h:1", "--config", p]).unwrap();
        let err = w.args.to_config().unwrap_err().to_string();
        assert!(err.contains("window.size_ms must be > 0"), "{err}");
    }
}
