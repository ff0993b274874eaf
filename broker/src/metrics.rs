//! Prometheus metrics: the families the broker records into (one set per [`Broker`], never
//! global) and the text exposition served at `/metrics`.
//!
//! Counters and histograms are recorded where things happen (request dispatch, produce,
//! fetch, fsync). Gauges that describe state (offsets, segments, disk bytes, group lag) are
//! read from the broker at scrape time, so they are never stale and cost nothing between
//! scrapes. Names follow Prometheus conventions: `runnel_` prefix, base units in the name
//! (`_seconds`, `_bytes`), `_total` on counters.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use runnel_processor::driver::Clock;

use crate::broker::Broker;
use crate::processor_status::PipelineStatuses;

/// Labels of a per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

/// Labels of a per-API series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

/// Labels of a consumer-group lag series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// Labels of a per-pipeline series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

/// Labels of a per-rule alert series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub pipeline: String,
    pub rule: String,
}

/// Labels of a per-follower replica-lag series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub topic: String,
    pub partition: i32,
    pub follower: i32,
}

/// Labels of a peer-transport drop series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: &'static str,
}

/// Labels of a per-method gRPC series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A metric whose HELP and TYPE lines are written even when it has no samples (an empty
/// [`Family`] is left out of the exposition otherwise). The replication series use it, so
/// their names are in every node's `/metrics`; outside cluster mode they have no samples.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Latency buckets from 50 µs to ~13 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// What the broker records as it runs. Cloning shares the series.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub kafka_requests: Family<ApiLabels, Counter>,
    pub kafka_request_seconds: HistogramFamily<ApiLabels>,
    pub produce_records: Family<PartitionLabels, Counter>,
    pub produce_bytes: Family<PartitionLabels, Counter>,
    pub fetch_bytes: Family<PartitionLabels, Counter>,
    pub fsync_seconds: Histogram,
    pub grpc_requests: Family<GrpcLabels, Counter>,
    pub grpc_request_seconds: HistogramFamily<GrpcLabels>,
    pub processor_alerts: Family<RuleLabels, Counter>,
    pub processor_alert_latency_seconds: HistogramFamily<PipelineLabels>,
    pub processor_checkpoint_seconds: HistogramFamily<PipelineLabels>,
    /// Cluster mode: propose → commit on the leader, per replicated partition.
    pub raft_commit_seconds: HistogramFamily<PartitionLabels>,
    /// Whether per-request series are recorded (`Config::metrics`).
    recording: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            kafka_requests: Family::default(),
            kafka_request_seconds: Family::new_with_constructor(latency_histogram),
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            fetch_bytes: Family::default(),
            fsync_seconds: latency_histogram(),
            grpc_requests: Family::default(),
            grpc_request_seconds: Family::new_with_constructor(latency_histogram),
            processor_alerts: Family::default(),
            processor_alert_latency_seconds: Family::new_with_constructor(latency_histogram),
            processor_checkpoint_seconds: Family::new_with_constructor(latency_histogram),
            raft_commit_seconds: Family::new_with_constructor(latency_histogram),
            recording: true,
        }
    }
}

impl Metrics {
    /// Series that record per request only if `recording` (scrape-time gauges always work).
    pub fn new(recording: bool) -> Self {
        Self {
            recording,
            ..Self::default()
        }
    }

    /// Records one handled Kafka request of `api` that took `seconds`.
    pub fn kafka_request(&self, api: &'static str, seconds: f64) {
        if !self.recording {
            return;
        }
        let labels = ApiLabels { api };
        self.kafka_requests.get_or_create(&labels).inc();
        self.kafka_request_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Records one gRPC call of `method` (its path, e.g. `/runnel.v1.Ingest/Publish`) that
    /// took `seconds` until its response headers.
    pub fn grpc_request(&self, method: &str, seconds: f64) {
        if !self.recording {
            return;
        }
        let labels = GrpcLabels {
            method: method.to_owned(),
        };
        self.grpc_requests.get_or_create(&labels).inc();
        self.grpc_request_seconds
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// Records `records` records / `bytes` bytes appended to a partition.
    pub fn produced(&self, topic: &str, partition: i32, records: u64, bytes: u64) {
        if !self.recording {
            return;
        }
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        self.produce_records.get_or_create(&labels).inc_by(records);
        self.produce_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Records `bytes` bytes of record batches served from a partition by Fetch.
    pub fn fetched(&self, topic: &str, partition: i32, bytes: u64) {
        if !self.recording {
            return;
        }
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        self.fetch_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// Records one alert of `rule`, appended `latency` after its triggering reading's
    /// timestamp.
    pub fn alert(&self, pipeline: &str, rule: &str, latency_seconds: f64) {
        self.alert_count(pipeline, rule);
        self.processor_alert_latency_seconds
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.to_owned(),
            })
            .observe(latency_seconds);
    }

    /// Records one alert of `rule` whose latency is not measured (a late reading's, or one made
    /// before the pipeline has a watermark).
    pub fn alert_count(&self, pipeline: &str, rule: &str) {
        self.processor_alerts
            .get_or_create(&RuleLabels {
                pipeline: pipeline.to_owned(),
                rule: rule.to_owned(),
            })
            .inc();
    }

    /// Records a pipeline checkpoint that took `seconds`.
    pub fn checkpoint(&self, pipeline: &str, seconds: f64) {
        self.processor_checkpoint_seconds
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.to_owned(),
            })
            .observe(seconds);
    }

    /// The commit-latency histogram of a replicated partition, for its replica to record
    /// into; `None` when per-request recording is off.
    pub fn raft_commit_histogram(&self, topic: &str, partition: i32) -> Option<Histogram> {
        if !self.recording {
            return None;
        }
        let labels = PartitionLabels {
            topic: topic.to_string(),
            partition,
        };
        let h: Histogram = (*self.raft_commit_seconds.get_or_create(&labels)).clone();
        Some(h)
    }

    /// Forgets the per-partition series of a deleted topic.
    pub fn forget_topic(&self, topic: &str, partitions: impl Iterator<Item = i32>) {
        for partition in partitions {
            let labels = PartitionLabels {
                topic: topic.to_string(),
                partition,
            };
            self.produce_records.remove(&labels);
            self.produce_bytes.remove(&labels);
            self.fetch_bytes.remove(&labels);
            self.raft_commit_seconds.remove(&labels);
        }
    }

    /// The Prometheus text exposition: recorded series plus the broker's state right now.
    pub fn render(&self, broker: &Broker) -> String {
        let mut registry = Registry::with_prefix("runnel");
        registry.register(
            "kafka_requests",
            "Kafka-protocol requests handled, per API",
            self.kafka_requests.clone(),
        );
        registry.register(
            "kafka_request_duration_seconds",
            "Time from a request's arrival to its response being ready, per Kafka API",
            self.kafka_request_seconds.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC calls, per method (unknown methods as one series)",
            self.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC call's arrival to its response headers (for streams: until established), per method",
            self.grpc_request_seconds.clone(),
        );
        registry.register(
            "produce_records",
            "Records appended by clients (Kafka Produce and gRPC publish), per partition",
            self.produce_records.clone(),
        );
        registry.register(
            "produce_bytes",
            "Record-batch bytes appended by clients (Kafka Produce and gRPC publish), per partition",
            self.produce_bytes.clone(),
        );
        registry.register(
            "fetch_bytes",
            "Record-batch bytes served by Fetch, per partition",
            self.fetch_bytes.clone(),
        );
        registry.register(
            "log_fsync_duration_seconds",
            "Time one group-commit fsync of a partition log took",
            self.fsync_seconds.clone(),
        );
        self.register_processor(&mut registry, &broker.pipelines);
        registry.register(
            "raft_commit_latency_seconds",
            "Cluster mode: from a proposal on the leader to its commit (a majority has it durable), per partition",
            Declared(self.raft_commit_seconds.clone()),
        );
        register_state(&mut registry, broker);
        register_replication(&mut registry, broker);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// The exposition of a standalone processor (`runnel process`): the processor series
    /// only, the same names and labels as a broker's.
    pub fn render_processor(&self, pipelines: &PipelineStatuses) -> String {
        let mut registry = Registry::with_prefix("runnel");
        self.register_processor(&mut registry, pipelines);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// The processor's recorded series and its pipelines' state.
    fn register_processor(&self, registry: &mut Registry, pipelines: &PipelineStatuses) {
        registry.register(
            "processor_alerts",
            "Alerts appended by the processor since start, per pipeline and rule",
            self.processor_alerts.clone(),
        );
        registry.register(
            "processor_alert_latency_seconds",
            "From an on-time reading's record timestamp (its producer's clock) to its alert being durable; alerts from late readings, or made before the pipeline has a watermark, are not measured",
            self.processor_alert_latency_seconds.clone(),
        );
        registry.register(
            "processor_checkpoint_duration_seconds",
            "Time one processor checkpoint (state and offsets to sled, flushed) took",
            self.processor_checkpoint_seconds.clone(),
        );
        register_pipelines(registry, pipelines);
    }
}

/// Gauges read from the broker now: per-partition offsets, segments and disk bytes, and
/// consumer-group lag against the high watermark.
fn register_state(registry: &mut Registry, broker: &Broker) {
    let log_start = Family::<PartitionLabels, Gauge>::default();
    let high_watermark = Family::<PartitionLabels, Gauge>::default();
    let log_end = Family::<PartitionLabels, Gauge>::default();
    let segments = Family::<PartitionLabels, Gauge>::default();
    let disk_bytes = Family::<PartitionLabels, Gauge>::default();
    let mut hw_of = std::collections::HashMap::new();
    for topic in broker.topics.list() {
        for p in &topic.partitions {
            let labels = PartitionLabels {
                topic: topic.name.clone(),
                partition: p.index,
            };
            let offsets = p.offsets();
            log_start.get_or_create(&labels).set(offsets.log_start);
            high_watermark
                .get_or_create(&labels)
                .set(offsets.high_watermark);
            log_end.get_or_create(&labels).set(offsets.log_end);
            let (count, bytes) = p.disk_usage();
            segments
                .get_or_create(&labels)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            disk_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            hw_of.insert((topic.name.clone(), p.index), offsets.high_watermark);
        }
    }
    let lag = Family::<LagLabels, Gauge>::default();
    for listing in broker.groups.list(&[]) {
        let offsets = broker.groups.fetch_offsets(&listing.group_id, None).offsets;
        for (tp, committed) in offsets {
            let (Some(committed), Some(hw)) =
                (committed, hw_of.get(&(tp.topic.clone(), tp.partition)))
            else {
                continue;
            };
            lag.get_or_create(&LagLabels {
                group: listing.group_id.clone(),
                topic: tp.topic,
                partition: tp.partition,
            })
            .set(hw.saturating_sub(committed.offset).max(0));
        }
    }
    registry.register(
        "log_start_offset",
        "First offset still in the log",
        log_start,
    );
    registry.register(
        "high_watermark_offset",
        "Offset below which records are visible to consumers",
        high_watermark,
    );
    registry.register(
        "log_end_offset",
        "Offset the next appended record gets",
        log_end,
    );
    registry.register("log_segments", "Segment files in the log", segments);
    registry.register(
        "log_size_bytes",
        "Bytes of record batches on disk",
        disk_bytes,
    );
    registry.register(
        "consumer_group_lag_records",
        "High watermark minus the group's committed offset",
        lag,
    );
}

/// Per-pipeline counters (checkpointed with the pipeline, so they survive restarts) and
/// gauges, read from the last observation of each pipeline.
fn register_pipelines(registry: &mut Registry, pipelines: &PipelineStatuses) {
    let events = Family::<PipelineLabels, Counter>::default();
    let late = Family::<PipelineLabels, Counter>::default();
    let dlq = Family::<PipelineLabels, Counter>::default();
    let aggregates = Family::<PipelineLabels, Counter>::default();
    let windows = Family::<PipelineLabels, Gauge>::default();
    let watermark_lag =
        Family::<PipelineLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let running = Family::<PipelineLabels, Gauge>::default();
    let now = crate::processing::WallClock.now_ms();
    for p in pipelines.snapshot() {
        let l = PipelineLabels {
            pipeline: p.name.clone(),
        };
        events.get_or_create(&l).inc_by(p.stats.records);
        late.get_or_create(&l).inc_by(p.stats.late);
        dlq.get_or_create(&l).inc_by(p.stats.dlq);
        aggregates.get_or_create(&l).inc_by(p.stats.aggregates);
        windows
            .get_or_create(&l)
            .set(i64::try_from(p.windows_open).unwrap_or(i64::MAX));
        running.get_or_create(&l).set(i64::from(p.running));
        if let Some(w) = p.watermark_ms {
            // Millisecond counts far below 2^53: exact in f64.
            let lag_ms = u32::try_from(now.saturating_sub(w).max(0)).unwrap_or(u32::MAX);
            watermark_lag
                .get_or_create(&l)
                .set(f64::from(lag_ms) / 1000.0);
        }
    }
    registry.register(
        "processor_events",
        "Input records processed by a pipeline (checkpointed: counts survive restarts)",
        events,
    );
    registry.register(
        "processor_late_events",
        "Readings later than the allowed lateness, sent to the late-data topic",
        late,
    );
    registry.register(
        "processor_dead_letters",
        "Records that failed to parse or validate, sent to the dead-letter topic",
        dlq,
    );
    registry.register(
        "processor_window_results",
        "Window results emitted, every revision counted",
        aggregates,
    );
    registry.register(
        "processor_windows_open",
        "Event-time windows currently open",
        windows,
    );
    registry.register(
        "processor_watermark_lag_seconds",
        "Wall clock minus the pipeline's event-time watermark",
        watermark_lag,
    );
    registry.register(
        "processor_running",
        "1 while the pipeline's driver runs, 0 while it recovers after an error",
        running,
    );
}

/// A gauge with one unlabelled sample, or declared with no sample (outside cluster mode),
/// so the name is always in the exposition.
fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: Option<i64>) {
    match value {
        Some(v) => {
            let g: Gauge = Gauge::default();
            g.set(v);
            registry.register(name, help, g);
        }
        None => registry.register(
            name,
            help,
            Declared(Family::<PartitionLabels, Gauge>::default()),
        ),
    }
}

/// A counter with one unlabelled sample, or declared with no sample (outside cluster mode).
fn register_counter(registry: &mut Registry, name: &str, help: &str, value: Option<u64>) {
    match value {
        Some(v) => {
            let c: Counter = Counter::default();
            c.inc_by(v);
            registry.register(name, help, c);
        }
        None => registry.register(
            name,
            help,
            Declared(Family::<PartitionLabels, Counter>::default()),
        ),
    }
}

fn gauge_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Cluster mode, read now: each local replica's term, role, leader, commit and last index,
/// leader changes and (on the leader) each follower's lag; the metadata group's; the peer
/// transport's counters. Outside cluster mode every family is declared with no samples.
fn register_replication(registry: &mut Registry, broker: &Broker) {
    let term = Family::<PartitionLabels, Gauge>::default();
    let is_leader = Family::<PartitionLabels, Gauge>::default();
    let leader_id = Family::<PartitionLabels, Gauge>::default();
    let commit = Family::<PartitionLabels, Gauge>::default();
    let last = Family::<PartitionLabels, Gauge>::default();
    let changes = Family::<PartitionLabels, Counter>::default();
    let lag = Family::<FollowerLabels, Gauge>::default();
    let drops = Family::<DropLabels, Counter>::default();
    let cluster = broker.cluster();
    for ((topic, partition), replica) in cluster.map(|c| c.replica_list()).unwrap_or_default() {
        let l = replica.group.leadership();
        let stats = replica.group.stats();
        let labels = PartitionLabels {
            topic: topic.clone(),
            partition,
        };
        term.get_or_create(&labels).set(gauge_of(l.term));
        is_leader
            .get_or_create(&labels)
            .set(i64::from(l.role == crate::raft::Role::Leader));
        leader_id.get_or_create(&labels).set(
            l.leader
                .map_or(-1, |n| i64::from(crate::cluster::kafka_id(n))),
        );
        commit.get_or_create(&labels).set(gauge_of(l.commit));
        last.get_or_create(&labels).set(gauge_of(stats.last_index));
        changes.get_or_create(&labels).inc_by(stats.leader_changes);
        if l.role == crate::raft::Role::Leader {
            for (follower, matched) in &stats.matched {
                lag.get_or_create(&FollowerLabels {
                    topic: topic.clone(),
                    partition,
                    follower: crate::cluster::kafka_id(*follower),
                })
                .set(gauge_of(stats.last_index.saturating_sub(*matched)));
            }
        }
    }
    let meta = cluster.map(|c| c.meta_state());
    let peers = cluster.map(|c| c.peer_stats());
    if let Some(p) = &peers {
        for (reason, n) in [
            ("queue_full", p.dropped_queue_full),
            ("unknown_peer", p.dropped_unknown_peer),
            ("disconnected", p.dropped_disconnected),
            ("oversized", p.dropped_oversized),
            ("misaddressed", p.dropped_misaddressed),
        ] {
            drops.get_or_create(&DropLabels { reason }).inc_by(n);
        }
    }
    registry.register(
        "raft_term",
        "Cluster mode: the Raft term this node is in, per replicated partition",
        Declared(term),
    );
    registry.register(
        "raft_is_leader",
        "Cluster mode: 1 if this node leads the partition's Raft group, else 0",
        Declared(is_leader),
    );
    registry.register(
        "raft_leader_id",
        "Cluster mode: the partition's leader as this node knows it (node id; -1: none known)",
        Declared(leader_id),
    );
    registry.register(
        "raft_commit_index",
        "Cluster mode: the partition's Raft commit index as this node knows it (entries)",
        Declared(commit),
    );
    registry.register(
        "raft_last_index",
        "Cluster mode: the last Raft index in this node's log of the partition (entries)",
        Declared(last),
    );
    registry.register(
        "raft_leader_changes",
        "Cluster mode: new leaders (or the same leader in a new term) this node learned of since it started, per partition",
        Declared(changes),
    );
    registry.register(
        "raft_replica_lag_entries",
        "Cluster mode, on the leader: its last index minus the follower's durable matched index",
        Declared(lag),
    );
    let (ml, ms) = meta.map_or((None, None), |(l, s)| (Some(l), Some(s)));
    register_gauge(
        registry,
        "raft_metadata_term",
        "Cluster mode: the metadata group's Raft term on this node",
        ml.map(|l| gauge_of(l.term)),
    );
    register_gauge(
        registry,
        "raft_metadata_is_leader",
        "Cluster mode: 1 if this node leads the metadata group (the controller), else 0",
        ml.map(|l| i64::from(l.role == crate::raft::Role::Leader)),
    );
    register_gauge(
        registry,
        "raft_metadata_leader_id",
        "Cluster mode: the metadata leader as this node knows it (node id; -1: none known)",
        ml.map(|l| {
            l.leader
                .map_or(-1, |n| i64::from(crate::cluster::kafka_id(n)))
        }),
    );
    register_gauge(
        registry,
        "raft_metadata_commit_index",
        "Cluster mode: the metadata group's commit index as this node knows it (entries)",
        ml.map(|l| gauge_of(l.commit)),
    );
    register_counter(
        registry,
        "raft_metadata_leader_changes",
        "Cluster mode: new metadata leaders (or terms) this node learned of since it started",
        ms.map(|s| s.leader_changes),
    );
    register_counter(
        registry,
        "peer_connects",
        "Cluster mode: outbound peer connections established (a reconnect counts again)",
        peers.map(|p| p.connects),
    );
    register_counter(
        registry,
        "peer_frames_sent",
        "Cluster mode: frames written to peers (Raft messages and forwarded requests)",
        peers.map(|p| p.sent),
    );
    register_counter(
        registry,
        "peer_raft_messages_received",
        "Cluster mode: Raft messages received from peers and handed to their group",
        peers.map(|p| p.received),
    );
    register_counter(
        registry,
        "peer_handshakes_refused",
        "Cluster mode: inbound peer connections closed for a bad or missing Hello",
        peers.map(|p| p.refused_handshakes),
    );
    registry.register(
        "peer_drops",
        "Cluster mode: peer frames dropped, by reason (queue_full, unknown_peer, disconnected: Raft messages not sent; oversized: either direction; misaddressed: inbound)",
        Declared(drops),
    );
}
