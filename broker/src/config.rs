//! Broker configuration: a serde struct with defaults, layered defaults < file < env < CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use runnel_processor::config::validate_pipelines;
use runnel_processor::PipelineConfig;
use serde::{Deserialize, Serialize};

/// Everything `runnel serve` needs. Passed into [`crate::server::run`], never global.
/// (`PartialEq` only: pipeline settings hold floats.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding topics, partitions and broker metadata.
    pub data_dir: PathBuf,
    /// Address the Kafka-protocol listener binds.
    pub kafka_addr: SocketAddr,
    /// Address the gRPC API (runnel.v1, health, reflection) binds. Default: beside the Kafka
    /// listener, on the same IP and the next port (port 0 when the Kafka port is 0); if that
    /// port is taken, any free port, with a warning. An address set here must be free.
    pub grpc_addr: Option<SocketAddr>,
    /// Address the HTTP listener binds: Prometheus metrics at `/metrics`. Default: the Kafka IP
    /// and the Kafka port + 2 (port 0 when the Kafka port is 0); if that port is taken, any
    /// free port, with a warning. An address set here must be free.
    pub http_addr: Option<SocketAddr>,
    /// Host name advertised to clients in Metadata; defaults to the listener's IP.
    pub advertised_host: Option<String>,
    /// Port advertised to clients in Metadata (for a broker behind NAT or a proxy, as with
    /// Kafka's `advertised.listeners`); defaults to the listener's port.
    pub advertised_port: Option<u16>,
    /// This broker's node id, reported in Metadata and as the controller.
    pub node_id: i32,
    /// Largest request frame accepted, in bytes (Kafka's `socket.request.max.bytes`).
    pub max_frame_bytes: usize,
    /// Longest time a produce waits for its fsync before answering REQUEST_TIMED_OUT, in ms
    /// (the client's own `timeout_ms` is used when it is shorter).
    pub max_produce_wait_ms: u64,
    /// How often retention is enforced, in ms.
    pub retention_check_interval_ms: u64,
    /// Defaults for topics, including auto-created ones.
    pub topics: TopicDefaults,
    /// Record per-request metrics (request counts and latency, produce and fetch records and
    /// bytes). Off, `/metrics` still serves the gauges read at scrape time; this exists to
    /// measure what recording costs (`benches/metrics_overhead.sh`).
    pub metrics: bool,
    /// The co-located stream processor (`[processor]`).
    pub processor: ProcessorConfig,
    /// Replication (`[cluster]`): the other nodes. Empty = a single node.
    pub cluster: ClusterConfig,
}

/// A static cluster: every node's id and addresses, the same list on every node. Topics
/// created while `nodes` is set are replicated with Raft per partition (issue 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every node, this one (`node_id`) included. Empty = single node, no replication.
    pub nodes: Vec<ClusterNode>,
    /// A shared name; a peer that says another is refused (guards against mixed-up configs).
    pub name: String,
    /// One Raft tick, in ms.
    pub tick_ms: u64,
    /// Election timeout in ticks: each is drawn from `election_ticks..2 * election_ticks`.
    pub election_ticks: u32,
    /// A leader's heartbeat interval, in ticks.
    pub heartbeat_ticks: u32,
    /// Replication factor of auto-created topics and of CreateTopics with -1 (capped at the
    /// node count).
    pub default_replication_factor: i16,
}

/// Node ids of a cluster are below this + 1 (producer ids embed them).
pub const MAX_CLUSTER_NODE_ID: i64 = 1023;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    pub id: i32,
    /// Where Kafka clients reach it (`host:port`, as advertised in Metadata).
    pub kafka: String,
    /// Where the other nodes reach it for replication.
    pub raft: SocketAddr,
    /// Where gRPC clients reach it (`host:port`), named in the leader hint a follower gives a
    /// gRPC publisher (`runnel-leader` metadata). Optional: without it the hint is the node id.
    #[serde(default)]
    pub grpc: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            name: "runnel".into(),
            tick_ms: 50,
            election_ticks: 20,
            heartbeat_ticks: 2,
            default_replication_factor: 3,
        }
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// A node's entry.
    pub fn node(&self, id: i32) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

impl ClusterNode {
    /// The advertised Kafka host and port.
    pub fn kafka_host_port(&self) -> Option<(String, u16)> {
        let (host, port) = self.kafka.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    }
}

/// Most bytes of one segment of a pipeline's journal topic (single node; less if
/// `[topics] segment_bytes` is less): retention deletes whole segments only, and the topics'
/// 1 GiB would hold millions of steps.
pub const JOURNAL_SEGMENT_BYTES: u64 = 16 << 20;

/// The stream processor: runs the configured pipelines (`[[processor.pipelines]]`, else the
/// built-in sensor pipeline of `USE-CASES.md`) next to the partitions, and is what
/// `runnel process` runs against a cluster. A pipeline does nothing until its source topics
/// exist; then it creates its output topics and its journal topic `__runnel_journal.<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Run the pipelines inside `runnel serve`.
    pub enabled: bool,
    /// Where checkpoints (sled, one database per pipeline) live; default `<data_dir>/processor`.
    pub state_dir: Option<PathBuf>,
    /// Checkpoint after this many steps... (default 1,000: a checkpoint encodes every window
    /// changed since the last one on the pipeline's thread — ~20 ms with 10,000 busy devices —
    /// so at 50k readings/s, checkpoints every 100 steps (~2 a second) held the pipeline up ~6 %
    /// of the time and set the publish → alert p99; a crash replays at most this many steps)
    pub checkpoint_every_steps: u64,
    /// ...or after this many ms, whichever comes first.
    pub checkpoint_interval_ms: u64,
    /// Most input records per step (one journal entry).
    pub max_step_records: usize,
    /// How long an empty source partition may hold back the time-ordered merge of partitions.
    pub align_wait_ms: u64,
    /// With no input, a time-only step is taken this often (idleness and timers advance).
    pub idle_step_ms: u64,
    /// Cluster mode only: at most this often (ms), the checkpoint just committed is also
    /// written whole to the replicated topic `__runnel_checkpoint.<pipeline>`, so a node
    /// taking the pipeline over resumes from it instead of replaying the journal from its own
    /// older (or no) checkpoint. 0: after every checkpoint whose position moved on.
    pub snapshot_interval_ms: u64,
    /// Single node: the journal topic `__runnel_journal.<pipeline>` is created with this
    /// `retention.ms` (-1: the `[topics]` default) and segments of at most
    /// [`JOURNAL_SEGMENT_BYTES`], so it does not grow to the topics' retention. Safe however
    /// short: the retention holds keep the journal from the last checkpoint on, which is all
    /// that recovery reads. A journal created before keeps its settings.
    pub journal_retention_ms: i64,
    /// The pipelines, each a `[[processor.pipelines]]` table; none = the built-in sensor
    /// pipeline ([`PipelineConfig::default`]). See [`ProcessorConfig::pipelines`].
    pub pipelines: Vec<PipelineConfig>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_dir: None,
            checkpoint_every_steps: 1_000,
            checkpoint_interval_ms: 5_000,
            max_step_records: 500,
            align_wait_ms: 200,
            idle_step_ms: 1_000,
            snapshot_interval_ms: 30_000,
            journal_retention_ms: 3_600_000,
            pipelines: Vec::new(),
        }
    }
}

impl ProcessorConfig {
    /// The pipelines to run: those declared, else the built-in sensor pipeline.
    pub fn pipelines(&self) -> Vec<PipelineConfig> {
        if self.pipelines.is_empty() {
            vec![PipelineConfig::default()]
        } else {
            self.pipelines.clone()
        }
    }

    /// Checks the driver knobs and the pipelines (each one, and side by side).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.checkpoint_every_steps == 0 || self.max_step_records == 0 {
            return Err(ConfigError::Invalid {
                field: "processor.checkpoint_every_steps / max_step_records",
                reason: "must be >= 1".into(),
            });
        }
        if self.journal_retention_ms < -1 {
            return Err(ConfigError::Invalid {
                field: "processor.journal_retention_ms",
                reason: "must be >= -1".into(),
            });
        }
        validate_pipelines(&self.pipelines()).map_err(|e| ConfigError::Invalid {
            field: "processor.pipelines",
            reason: e.to_string(),
        })
    }

    /// The state directory for `data_dir`.
    pub fn state_dir(&self, data_dir: &Path) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("processor"))
    }
}

/// Topic defaults; each can be overridden per topic with CreateTopics configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Create unknown topics on Metadata (when allowed by the request) and on Produce.
    pub auto_create: bool,
    /// Partition count for auto-created topics (Kafka's `num.partitions`).
    pub default_partitions: i32,
    /// Largest record batch accepted, in bytes (`max.message.bytes`).
    pub max_message_bytes: usize,
    /// Segment size before a new segment is rolled (`segment.bytes`).
    pub segment_bytes: u64,
    /// Delete segments whose newest record is older than this, in ms (`retention.ms`; -1 = never).
    pub retention_ms: i64,
    /// Delete old segments while the partition is larger than this (`retention.bytes`; -1 = never).
    pub retention_bytes: i64,
    /// Longest time appended data may stay unflushed, in ms (`flush.ms`). 0 = flush as soon as
    /// possible with group commit. acks=all always waits for its fsync whatever this says.
    pub flush_ms: u64,
    /// Once fsynced, a partition's data is dropped from the page cache except its last this-many
    /// bytes (broker-wide, not per topic; -1 = never drop, leaving the page cache to the
    /// kernel as Kafka does). Consumers at the tail keep reading from memory; a consumer
    /// catching up reads from disk, with readahead. Writes then reuse the memory just released
    /// instead of taking fresh pages, which halved the broker's produce CPU in BENCHMARKS.md.
    pub page_cache_tail_bytes: i64,
    /// Memory (broker-wide) for reading what was dropped from the page cache with `O_DIRECT`:
    /// a consumer catching up then costs the broker no page-cache pages (BENCHMARKS.md). 0 =
    /// read it through the page cache; otherwise at least 20 MiB (one partition's 4 MiB chunk
    /// and the four read ahead). When it is full, the partition read longest ago gives way.
    pub direct_read_buffer_bytes: u64,
    /// Between group-commit rounds, write zeros over the blocks reserved ahead of each
    /// partition's appends, at most this many bytes per second (0 = never): acks=all
    /// appends at low rates then land in written blocks and their fsyncs write no extent
    /// change (ext4; BENCHMARKS.md). The disk writes at most this much more.
    pub zero_ahead_bytes_per_sec: u64,
}

impl TopicDefaults {
    /// [`TopicDefaults::page_cache_tail_bytes`] as the log takes it (`None`: never drop).
    pub fn cache_tail(&self) -> Option<u64> {
        u64::try_from(self.page_cache_tail_bytes).ok()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./runnel-data"),
            kafka_addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            grpc_addr: None,
            http_addr: None,
            advertised_host: None,
            advertised_port: None,
            node_id: 1,
            max_frame_bytes: 100 * 1024 * 1024,
            max_produce_wait_ms: 30_000,
            retention_check_interval_ms: 60_000,
            topics: TopicDefaults::default(),
            metrics: true,
            processor: ProcessorConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            auto_create: true,
            default_partitions: 1,
            max_message_bytes: 1_048_588,
            segment_bytes: 1 << 30,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            flush_ms: 0,
            page_cache_tail_bytes: i64::try_from(crate::log::file::DEFAULT_CACHE_TAIL_BYTES)
                .unwrap_or(i64::MAX),
            direct_read_buffer_bytes: crate::log::file::DEFAULT_DIRECT_READ_BYTES,
            zero_ahead_bytes_per_sec: crate::log::file::DEFAULT_ZERO_AHEAD_BYTES_PER_SEC,
        }
    }
}

/// A configuration value that makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Parse a TOML config file; missing fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Check every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.node_id < 0 {
            return invalid("node_id", "must be >= 0");
        }
        if self.max_frame_bytes < 1024 {
            return invalid("max_frame_bytes", "must be at least 1024");
        }
        if self.topics.default_partitions < 1 {
            return invalid("topics.default_partitions", "must be >= 1");
        }
        if self.topics.max_message_bytes < 64 {
            return invalid("topics.max_message_bytes", "must be at least 64");
        }
        if self.topics.page_cache_tail_bytes < -1 {
            return invalid(
                "topics.page_cache_tail_bytes",
                "must be -1 (never drop) or a number of bytes",
            );
        }
        let direct = self.topics.direct_read_buffer_bytes;
        let min_direct = crate::log::DirectReads::MIN_BYTES;
        if direct != 0 && direct < min_direct {
            return invalid(
                "topics.direct_read_buffer_bytes",
                &format!(
                    "must be 0 (read through the page cache) or at least {min_direct} ({} MiB)",
                    min_direct >> 20
                ),
            );
        }
        if self.topics.segment_bytes < 1024 {
            return invalid("topics.segment_bytes", "must be at least 1024");
        }
        if self.topics.retention_ms < -1 || self.topics.retention_bytes < -1 {
            return invalid("topics.retention_*", "must be -1 (unlimited) or >= 0");
        }
        if self.cluster.enabled() {
            let c = &self.cluster;
            if c.node(self.node_id).is_none() {
                return invalid("cluster.nodes", "must include this node's node_id");
            }
            let mut ids: Vec<i32> = c.nodes.iter().map(|n| n.id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != c.nodes.len()
                || ids.first().is_some_and(|i| *i < 0)
                || ids
                    .last()
                    .is_some_and(|i| i64::from(*i) > MAX_CLUSTER_NODE_ID)
            {
                return invalid("cluster.nodes", "ids must be distinct and in 0..=1023");
            }
            if let Some(n) = c.nodes.iter().find(|n| n.kafka_host_port().is_none()) {
                return Err(ConfigError::Invalid {
                    field: "cluster.nodes.kafka",
                    reason: format!("{:?} is not host:port", n.kafka),
                });
            }
            if c.tick_ms == 0 || c.heartbeat_ticks == 0 || c.election_ticks <= c.heartbeat_ticks {
                return invalid(
                    "cluster.tick_ms / heartbeat_ticks / election_ticks",
                    "need tick_ms > 0 and 0 < heartbeat_ticks < election_ticks",
                );
            }
            if c.default_replication_factor < 1 {
                return invalid("cluster.default_replication_factor", "must be >= 1");
            }
        }
        self.processor.validate()
    }

    /// Where the gRPC API listens: `grpc_addr`, else the Kafka IP and the next port (`None`
    /// when the Kafka port is the last one).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr.or_else(|| self.beside_kafka(1))
    }

    /// Where the HTTP listener (metrics) listens: `http_addr`, else the Kafka IP and the Kafka
    /// port + 2 (`None` when that overflows).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.or_else(|| self.beside_kafka(2))
    }

    /// The Kafka IP and the Kafka port + `n` (port 0 stays 0).
    fn beside_kafka(&self, n: u16) -> Option<SocketAddr> {
        let port = match self.kafka_addr.port() {
            0 => 0,
            p => p.checked_add(n)?,
        };
        Some(SocketAddr::new(self.kafka_addr.ip(), port))
    }

    /// The host name clients are told to connect to.
    pub fn advertised_host(&self) -> String {
        self.advertised_host
            .clone()
            .unwrap_or_else(|| self.kafka_addr.ip().to_string())
    }

    /// The port clients are told to connect to.
    pub fn advertised_port(&self) -> u16 {
        self.advertised_port.unwrap_or(self.kafka_addr.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runnel.example.toml");
        let parsed = Config::from_file(&path).expect("example config parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("defaults are valid");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>("data_dirr = \"x\"").unwrap_err();
        assert!(err.to_string().contains("data_dirr"), "{err}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        let mut c = Config::default();
        c.topics.default_partitions = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.topics.direct_read_buffer_bytes = 1 << 20;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("direct_read_buffer_bytes"), "{err}");
        assert!(err.contains("at least 20971520 (20 MiB)"), "{err}");
        c.topics.direct_read_buffer_bytes = 0;
        c.validate().expect("0 turns O_DIRECT reads off");
    }

    /// The commented-out `[[processor.pipelines]]` block of the example, uncommented, is the
    /// built-in pipeline: the documentation cannot drift from the defaults.
    #[test]
    fn example_pipeline_block_is_the_built_in_pipeline() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runnel.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let start = text
            .find("# [[processor.pipelines]]")
            .expect("the example shows a pipeline table");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed: Config = toml::from_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_eq!(parsed.processor.pipelines, [PipelineConfig::default()]);
        parsed.validate().unwrap();
    }

    #[test]
    fn example_with_three_pipelines_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines.toml");
        let c = Config::from_file(&path).expect("examples/pipelines.toml parses");
        c.validate().expect("examples/pipelines.toml is valid");
        let p = c.processor.pipelines();
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sensors", "sensors_pb", "machines"]);
        assert_eq!(p[0], PipelineConfig::default());
        assert_eq!(
            p[1].source.format,
            runnel_processor::config::ValueFormat::Protobuf
        );
        assert_eq!(
            (p[1].window.clone(), p[1].rules.clone()),
            (p[0].window.clone(), p[0].rules.clone())
        );
        assert_eq!(p[2].source.key_field, "machine");
        assert_eq!(p[2].window.slide(), 10_000);
        assert_eq!(p[2].outputs.dlq.partitions, 1);
    }

    #[test]
    fn no_pipeline_tables_means_the_built_in_pipeline() {
        let c: Config = toml::from_str("[processor]\nenabled = false\n").unwrap();
        assert!(c.processor.pipelines.is_empty());
        assert_eq!(c.processor.pipelines(), [PipelineConfig::default()]);
    }

    /// Data-driven: a pipelines section → part of the error (from parsing or validation).
    #[test]
    fn bad_pipeline_tables_are_clear_errors() {
        let second = "[[processor.pipelines]]\nname = \"b\"\n[processor.pipelines.source]\n\
                      topics = [\"b_in\"]\n[processor.pipelines.outputs]\n\
                      aggregates = { topic = \"b_agg\" }\nalerts = { topic = \"b_alerts\" }\n\
                      late = { topic = \"b_late\" }\ndlq = { topic = \"b_dlq\" }\n";
        let cases = [
            (
                "[[processor.pipelines]]\nname = \"a\"\nwindows = 3\n".to_owned(),
                "unknown field `windows`",
            ),
            (
                "[[processor.pipelines]]\n[processor.pipelines.source]\ntopic = \"x\"\n".into(),
                "unknown field `topic`",
            ),
            (
                "[[processor.pipelines]]\n[[processor.pipelines.rules]]\nkind = \"threshold\"\n\
                 name = \"r\"\nfield = \"x\"\nabove = 1.0\nhysteresys = 1.0\n"
                    .into(),
                "unknown field `hysteresys`",
            ),
            (
                "[[processor.pipelines]]\n[processor.pipelines.source]\nformat = \"avro\"\n".into(),
                "unknown variant `avro`",
            ),
            (
                "[[processor.pipelines]]\n[processor.pipelines.source]\ntopics = [\"\"]\n".into(),
                "invalid setting processor.pipelines: invalid pipeline config `sensors`: \
                 source.topics entry is empty",
            ),
            (
                "[[processor.pipelines]]\n[processor.pipelines.window]\nsize_ms = 0\n".into(),
                "window.size_ms must be > 0, got 0",
            ),
            (
                "[[processor.pipelines]]\n[processor.pipelines.window]\nsize_ms = 1000\n\
                 slide_ms = 2000\n"
                    .into(),
                "window.slide_ms (2000) is larger than window.size_ms (1000)",
            ),
            (
                format!("{second}{second}"),
                "invalid pipeline config `b`: another pipeline has this name",
            ),
            (
                format!("[[processor.pipelines]]\n{}", second.replace("b_alerts", "sensor_alerts")),
                "invalid pipeline config `b`: outputs.alerts.topic `sensor_alerts` is also written \
                 by pipeline `sensors`",
            ),
        ];
        for (text, want) in cases {
            let err = match toml::from_str::<Config>(&text) {
                Err(e) => e.to_string(),
                Ok(c) => match c.validate() {
                    Err(e) => e.to_string(),
                    Ok(()) => panic!("accepted:\n{text}"),
                },
            };
            assert!(err.contains(want), "{text}\n→ {err}");
        }
        // A second pipeline with its own name and outputs is fine.
        let c: Config = toml::from_str(&format!("[[processor.pipelines]]\n{second}")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.processor.pipelines().len(), 2);
    }
}
