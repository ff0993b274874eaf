//! A small Kafka-protocol producer for `runnel simulate --sink kafka`, so the simulator can
//! feed Runnel or any Kafka cluster without a C library: ApiVersions to pick versions,
//! Metadata for partition leaders, optional CreateTopics, then Produce (v7..=v9) to each
//! leader with uncompressed v2 batches built by [`crate::codec::builder`]. Keyed records are
//! partitioned with Kafka's murmur2 ([`crate::grpc::partitioner`]), like the Java client.
//!
//! One task per leader batches records (linger, record and byte limits) and keeps one request
//! in flight; the channel to it is bounded, so `send` waits when the cluster is slower than
//! the caller. Outcomes are counted in a shared [`Counters`].
//!
//! Retries: a partition answered with a retriable error (NOT_LEADER_OR_FOLLOWER, a leader
//! that is not available yet, a timeout, ...) or lost with its connection is sent again, up to
//! [`ProducerConfig::retries`] times with a growing backoff, after a Metadata refresh when the
//! leader may have moved (a task then sends that partition to its new leader). With acks=-1
//! the producer is idempotent, as Kafka's Java producer is by default: each task takes a
//! producer id (InitProducerId) and numbers each partition's batches, and a retry resends the
//! same bytes with the same sequence, so a batch that was stored before its answer was lost
//! is recognised by the broker and stored once. Without idempotence (acks 0 or 1, or a cluster
//! without InitProducerId) only errors that guarantee nothing was appended are retried; a lost
//! answer is counted as failed, because a retry could store the batch twice. A partition that
//! still fails after the last retry is counted as failed; an idempotent task then takes a new
//! producer id, since its sequence numbers may no longer be contiguous.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::grpc::partitioner::partition_for_key;
use crate::kafka_client::connection::{pick, Connection};
use crate::kafka_client::KafkaClientError;
use kafka_protocol::messages::InitProducerIdRequest;

/// How long Metadata may keep reporting a topic without leaders (e.g. just created).
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Produce versions used: v7 is the oldest Kafka 4 still takes apart from v3; v9 the newest
/// that names topics rather than topic ids for every cluster.
const PRODUCE_VERSIONS: (i16, i16) = (7, 9);

/// Why the producer could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Connecting, framing, or version negotiation ([`crate::kafka_client::connection`]).
    #[error(transparent)]
    Client(#[from] KafkaClientError),
    #[error("topic {topic:?}: {message}")]
    Topic { topic: String, message: String },
    #[error("the producer is closed")]
    Closed,
}

/// Outcome counts shared with the caller (progress lines, summary).
#[derive(Debug, Default)]
pub struct Counters {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    /// Records sent again after a retriable error or a lost connection.
    pub retried: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn fail(&self, n: u64, why: impl FnOnce() -> String) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut e) = self.first_error.lock() {
            if e.is_none() {
                *e = Some(why());
            }
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
}

/// How the producer talks to the cluster.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `host:port` of any broker.
    pub bootstrap: String,
    /// 0 (no answer), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    pub linger: Duration,
    /// Records per Produce request, across its partitions.
    pub max_request_records: usize,
    /// Bytes of one partition's batch before it is sent (below `max.message.bytes`).
    pub max_batch_bytes: usize,
    pub timeout_ms: i32,
    pub client_id: String,
    /// How many times a partition's batch is sent again after a retriable error.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, up to 1 s.
    pub retry_backoff: Duration,
    /// With acks=-1, take a producer id and number batches so retries are never stored twice.
    pub idempotent: bool,
}

impl ProducerConfig {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            acks: -1,
            linger: Duration::from_millis(5),
            max_request_records: 2000,
            max_batch_bytes: 512 * 1024,
            timeout_ms: 30_000,
            client_id: "runnel-simulate".into(),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            idempotent: true,
        }
    }
}

/// How long connecting to a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one exchange with a broker may take: the broker's own produce timeout plus a
/// margin, so a broker that stops answering fails the request (to be retried) instead of
/// stalling its task for ever.
fn request_timeout(config: &ProducerConfig) -> Duration {
    Duration::from_millis(u64::try_from(config.timeout_ms).unwrap_or(0))
        .saturating_add(Duration::from_secs(10))
}

async fn open(addr: &str, config: &ProducerConfig) -> Result<Connection, KafkaError> {
    Ok(Connection::open(addr, &config.client_id, CONNECT_TIMEOUT).await?)
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

fn error_text(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error code {code}"),
    }
}

/// Partition leaders of one topic.
struct Route {
    /// Leader node id per partition.
    leaders: Vec<i32>,
}

/// Versions negotiated with the cluster.
#[derive(Clone, Copy)]
struct Versions {
    metadata: i16,
    produce: i16,
    create_topics: Option<i16>,
    init_producer_id: Option<i16>,
}

/// A record on its way to a leader task.
struct Queued {
    topic: Arc<str>,
    partition: i32,
    record: Record,
}

/// See the module docs.
pub struct KafkaProducer {
    routes: HashMap<String, (Arc<str>, Route)>,
    leaders: HashMap<i32, mpsc::Sender<Queued>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    round_robin: u32,
}

impl KafkaProducer {
    /// Connect, learn the leaders of `topics` (creating missing ones with `create` =
    /// Some(partitions)), and start one task per leader.
    pub async fn connect(
        config: ProducerConfig,
        topics: &[String],
        create: Option<i32>,
        counters: Arc<Counters>,
    ) -> Result<Self, KafkaError> {
        let timeout = request_timeout(&config);
        let mut conn = open(&config.bootstrap, &config).await?;
        let versions = conn
            .call(&ApiVersionsRequest::default(), 0, timeout)
            .await?;
        if versions.error_code != 0 {
            return Err(KafkaClientError::Decode {
                api: "ApiVersions",
                addr: conn.addr().to_owned(),
                message: error_text(versions.error_code),
            }
            .into());
        }
        let addr = conn.addr().to_owned();
        let v = Versions {
            metadata: pick::<MetadataRequest>(&addr, &versions, 1, 12)?,
            produce: pick::<ProduceRequest>(
                &addr,
                &versions,
                PRODUCE_VERSIONS.0,
                PRODUCE_VERSIONS.1,
            )?,
            create_topics: pick::<CreateTopicsRequest>(&addr, &versions, 2, 5).ok(),
            init_producer_id: pick::<InitProducerIdRequest>(&addr, &versions, 0, 4).ok(),
        };
        let (brokers, mut routes) = metadata(&mut conn, v, topics, timeout).await?;
        let missing: Vec<String> = topics
            .iter()
            .filter(|t| !routes.contains_key(*t))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let Some(partitions) = create else {
                return Err(KafkaError::Topic {
                    topic: missing.join(", "),
                    message: "does not exist".into(),
                });
            };
            create_topics(&mut conn, v, &missing, partitions, config.timeout_ms).await?;
        }
        // Wait until every topic reports a leader for each partition (new topics take a moment).
        let deadline = Instant::now() + LEADER_WAIT;
        let mut brokers = brokers;
        loop {
            let ready = topics.iter().all(|t| {
                routes.get(t).is_some_and(|r| {
                    !r.leaders.is_empty() && r.leaders.iter().all(|l| brokers.contains_key(l))
                })
            });
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                let t = topics
                    .iter()
                    .find(|t| !routes.contains_key(*t))
                    .cloned()
                    .unwrap_or_default();
                return Err(KafkaError::Topic {
                    topic: t,
                    message: format!("no leader for every partition after {LEADER_WAIT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            (brokers, routes) = metadata(&mut conn, v, topics, timeout).await?;
        }
        let mut leaders = HashMap::new();
        let mut tasks = Vec::new();
        let used: std::collections::BTreeSet<i32> = routes
            .values()
            .flat_map(|r| r.leaders.iter().copied())
            .collect();
        for node in used {
            let Some(addr) = brokers.get(&node) else {
                continue;
            };
            let leader_conn = open(addr, &config).await?;
            let (tx, rx) = mpsc::channel(config.max_request_records.max(1) * 2);
            let sender = Sender {
                config: config.clone(),
                versions: v,
                home: addr.clone(),
                conns: HashMap::from([(addr.clone(), leader_conn)]),
                moved: HashMap::new(),
                producer: None,
                counters: counters.clone(),
            };
            tasks.push(tokio::spawn(leader_task(sender, rx)));
            leaders.insert(node, tx);
        }
        let routes = routes
            .into_iter()
            .map(|(name, r)| (name.clone(), (Arc::from(name.as_str()), r)))
            .collect();
        Ok(Self {
            routes,
            leaders,
            tasks,
            counters,
            round_robin: 0,
        })
    }

    /// Partitions of `topic` (0 if unknown).
    pub fn partitions(&self, topic: &str) -> usize {
        self.routes.get(topic).map_or(0, |(_, r)| r.leaders.len())
    }

    /// Queue a record; waits while its leader's queue is full. Keyed records go to the
    /// murmur2 partition, null keys round-robin.
    pub async fn send(&mut self, topic: &str, record: Record) -> Result<(), KafkaError> {
        let (name, route) = self.routes.get(topic).ok_or_else(|| KafkaError::Topic {
            topic: topic.to_owned(),
            message: "was not named when the producer started".into(),
        })?;
        let count = u32::try_from(route.leaders.len())
            .unwrap_or(u32::MAX)
            .max(1);
        let p = match &record.key {
            Some(k) => partition_for_key(k, count),
            None => {
                self.round_robin = self.round_robin.wrapping_add(1);
                self.round_robin % count
            }
        };
        let idx = usize::try_from(p).unwrap_or(0);
        let leader = route.leaders.get(idx).copied().unwrap_or(-1);
        let tx = self.leaders.get(&leader).ok_or(KafkaError::Closed)?;
        let partition = i32::try_from(p).unwrap_or(0);
        if tx
            .send(Queued {
                topic: name.clone(),
                partition,
                record,
            })
            .await
            .is_err()
        {
            self.counters
                .fail(1, || "leader connection task ended".into());
            return Err(KafkaError::Closed);
        }
        Ok(())
    }

    /// Send what is queued, wait for every answer, and stop the leader tasks.
    pub async fn close(self) {
        drop(self.leaders);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Broker addresses by node id and the leaders of each named topic that exists.
async fn metadata(
    conn: &mut Connection,
    v: Versions,
    topics: &[String],
    timeout: Duration,
) -> Result<(HashMap<i32, String>, HashMap<String, Route>), KafkaError> {
    // Never auto-create here: a topic the caller wants made is created with its partition
    // count by CreateTopics, not with the cluster's default.
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ));
    let resp = conn.call(&req, v.metadata, timeout).await?;
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut routes = HashMap::new();
    for t in &resp.topics {
        let Some(name) = &t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        let mut by_index: BTreeMap<i32, i32> = BTreeMap::new();
        for p in &t.partitions {
            by_index.insert(
                p.partition_index,
                if p.error_code == 0 { p.leader_id.0 } else { -1 },
            );
        }
        // Partitions are 0..n; a gap or a missing leader means "not ready yet".
        let dense = by_index
            .keys()
            .copied()
            .eq(0..i32::try_from(by_index.len()).unwrap_or(0));
        let leaders: Vec<i32> = by_index.into_values().collect();
        if dense && leaders.iter().all(|l| *l >= 0) {
            routes.insert(name.0.to_string(), Route { leaders });
        }
    }
    Ok((brokers, routes))
}

async fn create_topics(
    conn: &mut Connection,
    v: Versions,
    names: &[String],
    partitions: i32,
    timeout_ms: i32,
) -> Result<(), KafkaError> {
    let Some(version) = v.create_topics else {
        return Err(KafkaError::Topic {
            topic: names.join(", "),
            message: "does not exist and the cluster offers no CreateTopics v2..=v5".into(),
        });
    };
    let req = CreateTopicsRequest::default()
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(topic_name(n))
                        .with_num_partitions(partitions)
                        .with_replication_factor(-1)
                })
                .collect(),
        )
        .with_timeout_ms(timeout_ms);
    let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0))
        .saturating_add(Duration::from_secs(10));
    let resp = conn.call(&req, version, timeout).await?;
    for t in resp.topics {
        // 36 = TOPIC_ALREADY_EXISTS: someone else created it meanwhile; fine.
        if t.error_code != 0 && t.error_code != 36 {
            return Err(KafkaError::Topic {
                topic: t.name.0.to_string(),
                message: format!(
                    "cannot create: {}{}",
                    error_text(t.error_code),
                    t.error_message
                        .map(|m| format!(" {}", m.as_str()))
                        .unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// Records gathered for one leader, by (topic, partition), with their size.
#[derive(Default)]
struct Pending {
    parts: BTreeMap<(Arc<str>, i32), (Vec<Record>, usize)>,
    records: usize,
}

fn record_bytes(r: &Record) -> usize {
    let f = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    r.headers
        .iter()
        .map(|(k, v)| k.len() + f(v) + 10)
        .sum::<usize>()
        + f(&r.key)
        + f(&r.value)
        + 30
}

async fn leader_task(mut sender: Sender, mut rx: mpsc::Receiver<Queued>) {
    let config = sender.config.clone();
    let mut pending = Pending::default();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    loop {
        let full = pending.records >= config.max_request_records.max(1)
            || pending
                .parts
                .values()
                .any(|(_, bytes)| *bytes >= config.max_batch_bytes);
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        if pending.records > 0 && (full || due || !open) {
            let batch = std::mem::take(&mut pending);
            deadline = None;
            sender.produce(batch).await;
            continue;
        }
        if !open {
            return;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            q = rx.recv() => match q {
                Some(q) => {
                    if pending.records == 0 {
                        deadline = Some(Instant::now() + config.linger);
                    }
                    let size = record_bytes(&q.record);
                    let slot = pending.parts.entry((q.topic, q.partition)).or_default();
                    slot.0.push(q.record);
                    slot.1 += size;
                    pending.records += 1;
                }
                None => open = false,
            },
            _ = sleep => {}
        }
    }
}

/// What a task needs to send one partition's batch again.
struct Item {
    topic: Arc<str>,
    partition: i32,
    records: u64,
    bytes: Bytes,
}

/// The producer id of an idempotent task and the next sequence of each partition.
struct Idempotence {
    id: i64,
    epoch: i16,
    next: HashMap<(Arc<str>, i32), i32>,
}

/// How a partition's produce attempt ended.
enum Outcome {
    Acked,
    /// Refused for good (or retried too often): count as failed.
    Failed(String),
    /// Worth another attempt. `refresh`: the leader may have moved. `ambiguous`: the batch
    /// may be stored, so only an idempotent producer may send it again.
    Retry {
        why: String,
        refresh: bool,
        ambiguous: bool,
    },
}

/// Kafka error codes after which a Produce is retried, as (refresh metadata, ambiguous).
fn retriable(code: i16) -> Option<(bool, bool)> {
    match code {
        // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
        // KAFKA_STORAGE_ERROR, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH: refused before any
        // append, and the partition may have moved.
        3 | 5 | 6 | 56 | 74 | 75 => Some((true, false)),
        // NOT_ENOUGH_REPLICAS: refused before the append.
        19 => Some((false, false)),
        // REQUEST_TIMED_OUT, NETWORK_EXCEPTION, NOT_ENOUGH_REPLICAS_AFTER_APPEND: appended or
        // not, nobody knows.
        7 | 13 | 20 => Some((false, true)),
        _ => None,
    }
}

/// A leader task's connections and idempotence state. Each partition is sent by exactly one
/// task (the one `KafkaProducer::send` routes it to), so its sequence numbers have one owner.
struct Sender {
    config: ProducerConfig,
    versions: Versions,
    /// The leader this task was started for.
    home: String,
    conns: HashMap<String, Connection>,
    /// Partitions whose leader moved away from `home` (learned from a Metadata refresh).
    moved: HashMap<(Arc<str>, i32), String>,
    producer: Option<Idempotence>,
    counters: Arc<Counters>,
}

impl Sender {
    fn idempotent(&self) -> bool {
        self.config.idempotent && self.config.acks == -1 && self.versions.init_producer_id.is_some()
    }

    async fn conn(&mut self, addr: &str) -> Result<&mut Connection, KafkaError> {
        if !self.conns.contains_key(addr) {
            let c = open(addr, &self.config).await?;
            self.conns.insert(addr.to_owned(), c);
        }
        self.conns.get_mut(addr).ok_or(KafkaError::Closed)
    }

    /// Take a producer id (on the bootstrap broker) if this task is idempotent and has none.
    async fn ensure_producer(&mut self) {
        if self.producer.is_some() || !self.idempotent() {
            return;
        }
        let Some(version) = self.versions.init_producer_id else {
            return;
        };
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let bootstrap = self.config.bootstrap.clone();
        let timeout = request_timeout(&self.config);
        let resp = match self.conn(&bootstrap).await {
            Ok(c) => c.call(&req, version, timeout).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        match resp {
            Ok(r) if r.error_code == 0 => {
                self.producer = Some(Idempotence {
                    id: r.producer_id.0,
                    epoch: r.producer_epoch,
                    next: HashMap::new(),
                });
            }
            Ok(r) => tracing::warn!(
                "InitProducerId refused ({}); sending without idempotence",
                error_text(r.error_code)
            ),
            Err(e) => {
                self.conns.remove(&bootstrap);
                tracing::warn!("InitProducerId failed ({e}); sending without idempotence");
            }
        }
    }

    /// Encode each partition's records once (a retry resends the same bytes).
    fn encode(&mut self, batch: Pending) -> Vec<Item> {
        let mut items = Vec::new();
        for ((topic, partition), (records, _)) in batch.parts {
            if records.is_empty() {
                continue;
            }
            let n = i32::try_from(records.len()).unwrap_or(i32::MAX);
            let info = match &mut self.producer {
                Some(p) => {
                    let next = p.next.entry((topic.clone(), partition)).or_insert(0);
                    let base = *next;
                    // Kafka sequences wrap from i32::MAX to 0.
                    *next =
                        i32::try_from((i64::from(base) + i64::from(n)) % (i64::from(i32::MAX) + 1))
                            .unwrap_or(0);
                    ProducerInfo {
                        producer_id: p.id,
                        producer_epoch: p.epoch,
                        base_sequence: base,
                    }
                }
                None => ProducerInfo::default(),
            };
            items.push(Item {
                topic,
                partition,
                records: u64::try_from(records.len()).unwrap_or(u64::MAX),
                bytes: encode_batch(&records, info).freeze(),
            });
        }
        items
    }

    /// Send a batch to the partitions' leaders, retrying what may be retried.
    async fn produce(&mut self, batch: Pending) {
        self.ensure_producer().await;
        let idempotent = self.producer.is_some();
        let mut items = self.encode(batch);
        let mut attempt: u32 = 0;
        while !items.is_empty() {
            // One request per leader address.
            let mut by_addr: BTreeMap<String, Vec<Item>> = BTreeMap::new();
            for item in items.drain(..) {
                let addr = self
                    .moved
                    .get(&(item.topic.clone(), item.partition))
                    .cloned()
                    .unwrap_or_else(|| self.home.clone());
                by_addr.entry(addr).or_default().push(item);
            }
            let mut refresh = false;
            let mut last_why = String::new();
            for (addr, group) in by_addr {
                for (item, outcome) in self.send_to(&addr, group).await {
                    match outcome {
                        Outcome::Acked => {
                            self.counters
                                .acked
                                .fetch_add(item.records, Ordering::Relaxed);
                        }
                        Outcome::Failed(why) => self.fail(&item, why),
                        Outcome::Retry {
                            why,
                            refresh: r,
                            ambiguous,
                        } => {
                            if attempt >= self.config.retries || (ambiguous && !idempotent) {
                                self.fail(&item, why);
                            } else {
                                refresh |= r;
                                last_why = why;
                                items.push(item);
                            }
                        }
                    }
                }
            }
            if items.is_empty() {
                break;
            }
            attempt += 1;
            let n: u64 = items.iter().map(|i| i.records).sum();
            self.counters.retried.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(attempt, records = n, "retrying produce: {last_why}");
            let backoff = self
                .config
                .retry_backoff
                .saturating_mul(1 << attempt.saturating_sub(1).min(10))
                .min(Duration::from_secs(1));
            tokio::time::sleep(backoff).await;
            if refresh {
                self.refresh(&items).await;
            }
        }
    }

    /// Count a partition's batch as failed for good. An idempotent task drops its producer id:
    /// the batch may or may not be stored, so the partition's sequence can no longer be trusted.
    fn fail(&mut self, item: &Item, why: String) {
        self.counters.fail(item.records, || {
            format!("{} partition {}: {why}", item.topic, item.partition)
        });
        self.producer = None;
    }

    /// Learn the current leaders of the items' partitions.
    async fn refresh(&mut self, items: &[Item]) {
        let topics: Vec<String> = items
            .iter()
            .map(|i| i.topic.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let bootstrap = self.config.bootstrap.clone();
        let v = self.versions;
        let timeout = request_timeout(&self.config);
        let found = match self.conn(&bootstrap).await {
            Ok(c) => metadata(c, v, &topics, timeout).await,
            Err(e) => Err(e),
        };
        let (brokers, routes) = match found {
            Ok(f) => f,
            Err(e) => {
                self.conns.remove(&bootstrap);
                tracing::debug!("metadata refresh failed: {e}");
                return;
            }
        };
        for item in items {
            let leader = routes
                .get(item.topic.as_ref())
                .and_then(|r| r.leaders.get(usize::try_from(item.partition).ok()?))
                .and_then(|l| brokers.get(l));
            if let Some(addr) = leader {
                let key = (item.topic.clone(), item.partition);
                if *addr == self.home {
                    self.moved.remove(&key);
                } else {
                    self.moved.insert(key, addr.clone());
                }
            }
        }
    }

    /// One Produce request to `addr`; the outcome of each item.
    async fn send_to(&mut self, addr: &str, items: Vec<Item>) -> Vec<(Item, Outcome)> {
        let mut topics: BTreeMap<Arc<str>, Vec<PartitionProduceData>> = BTreeMap::new();
        for item in &items {
            topics.entry(item.topic.clone()).or_default().push(
                PartitionProduceData::default()
                    .with_index(item.partition)
                    .with_records(Some(item.bytes.clone())),
            );
        }
        let req = ProduceRequest::default()
            .with_acks(self.config.acks)
            .with_timeout_ms(self.config.timeout_ms)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        TopicProduceData::default()
                            .with_name(topic_name(&t))
                            .with_partition_data(parts)
                    })
                    .collect(),
            );
        let version = self.versions.produce;
        let acks = self.config.acks;
        let timeout = request_timeout(&self.config);
        let sent = match self.conn(addr).await {
            Err(e) => Err((e, false)),
            // No response comes for acks=0: written is all we learn.
            Ok(c) if acks == 0 => c
                .send(&req, version)
                .await
                .map(|_| None)
                .map_err(|e| (e.into(), true)),
            Ok(c) => c
                .call(&req, version, timeout)
                .await
                .map(Some)
                .map_err(|e| (e.into(), true)),
        };
        let resp = match sent {
            Ok(Some(r)) => r,
            Ok(None) => return items.into_iter().map(|i| (i, Outcome::Acked)).collect(),
            Err((e, written)) => {
                self.conns.remove(addr);
                let why = e.to_string();
                // Not even connected: nothing was sent, so any producer may retry.
                return items
                    .into_iter()
                    .map(|i| {
                        let o = if acks == 0 {
                            Outcome::Failed(why.clone())
                        } else {
                            Outcome::Retry {
                                why: why.clone(),
                                refresh: true,
                                ambiguous: written,
                            }
                        };
                        (i, o)
                    })
                    .collect();
            }
        };
        let mut codes: HashMap<(Arc<str>, i32), i16> = HashMap::new();
        for t in resp.responses {
            let topic: Arc<str> = Arc::from(t.name.0.as_str());
            for p in t.partition_responses {
                codes.insert((topic.clone(), p.index), p.error_code);
            }
        }
        items
            .into_iter()
            .map(|i| {
                let o = match codes.get(&(i.topic.clone(), i.partition)) {
                    // DUPLICATE_SEQUENCE_NUMBER: an earlier attempt was stored.
                    Some(0 | 46) => Outcome::Acked,
                    Some(&code) => match retriable(code) {
                        Some((refresh, ambiguous)) => Outcome::Retry {
                            why: error_text(code),
                            refresh,
                            ambiguous,
                        },
                        None => Outcome::Failed(error_text(code)),
                    },
                    None => Outcome::Failed("missing from the produce response".into()),
                };
                (i, o)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! A scripted fake cluster (two nodes speaking just enough Kafka) drives the retry paths
    //! that a healthy single broker never takes.
    use super::*;
    use crate::codec::batch;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, InitProducerIdResponse, MetadataResponse, ProduceResponse,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::net::TcpStream;

    /// What a node does with its first Produce.
    #[derive(Clone, Copy, PartialEq)]
    enum Script {
        /// Answer NOT_LEADER_OR_FOLLOWER and move leadership to the other node.
        NotLeader,
        /// Store the batches, then close the connection without answering.
        DropAfterAppend,
        Normal,
    }

    #[derive(Default)]
    struct Cluster {
        addrs: Vec<String>,
        leader: i32,
        /// Produce attempts seen: (node, producer id, base sequence, records).
        attempts: Vec<(i32, i64, i32, i32)>,
        /// Stored batches, deduplicated by (producer id, sequence) like a real broker.
        stored: Vec<(i64, i32, i32)>,
        scripted: bool,
    }

    fn response<R: Encodable>(resp: &R, key: ApiKey, version: i16, correlation: i32) -> BytesMut {
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation)
            .encode(&mut body, key.response_header_version(version))
            .unwrap();
        resp.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::new();
        frame.put_i32(i32::try_from(body.len()).unwrap());
        frame.extend_from_slice(&body);
        frame
    }

    async fn serve_conn(
        mut s: TcpStream,
        node: i32,
        script: Script,
        cluster: Arc<Mutex<Cluster>>,
    ) -> Option<()> {
        loop {
            let len = s.read_i32().await.ok()?;
            let mut buf = vec![0u8; usize::try_from(len).ok()?];
            s.read_exact(&mut buf).await.ok()?;
            let mut buf = Bytes::from(buf);
            let key = ApiKey::try_from(i16::from_be_bytes([buf[0], buf[1]])).ok()?;
            let version = i16::from_be_bytes([buf[2], buf[3]]);
            let header =
                RequestHeader::decode(&mut buf, key.request_header_version(version)).ok()?;
            let frame = match key {
                ApiKey::ApiVersions => {
                    let v = |k: ApiKey, lo: i16, hi: i16| {
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(lo)
                            .with_max_version(hi)
                    };
                    let r = ApiVersionsResponse::default().with_api_keys(vec![
                        v(ApiKey::Produce, 3, 9),
                        v(ApiKey::Metadata, 0, 12),
                        v(ApiKey::InitProducerId, 0, 4),
                    ]);
                    response(&r, key, version, header.correlation_id)
                }
                ApiKey::Metadata => {
                    let c = cluster.lock().unwrap();
                    let brokers = c
                        .addrs
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            let (host, port) = a.rsplit_once(':').unwrap();
                            MetadataResponseBroker::default()
                                .with_node_id(BrokerId(i32::try_from(i).unwrap() + 1))
                                .with_host(StrBytes::from_string(host.into()))
                                .with_port(port.parse().unwrap())
                        })
                        .collect();
                    let topic = MetadataResponseTopic::default()
                        .with_name(Some(topic_name("t")))
                        .with_partitions(vec![MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(BrokerId(c.leader))]);
                    let r = MetadataResponse::default()
                        .with_brokers(brokers)
                        .with_topics(vec![topic]);
                    response(&r, key, version, header.correlation_id)
                }
                ApiKey::InitProducerId => {
                    let r = InitProducerIdResponse::default()
                        .with_producer_id(kafka_protocol::messages::ProducerId(7))
                        .with_producer_epoch(0);
                    response(&r, key, version, header.correlation_id)
                }
                ApiKey::Produce => {
                    let p = ProduceRequest::decode(&mut buf, version).ok()?;
                    let data = &p.topic_data[0].partition_data[0];
                    let h = batch::parse_header(data.records.as_ref()?).ok()?;
                    let mut c = cluster.lock().unwrap();
                    c.attempts
                        .push((node, h.producer_id, h.base_sequence, h.record_count));
                    let first = !c.scripted;
                    let mut code = 0;
                    if first && script == Script::NotLeader {
                        c.scripted = true;
                        c.leader = if node == 1 { 2 } else { 1 };
                        code = 6;
                    } else {
                        let dup = h.producer_id >= 0
                            && c.stored.iter().any(|(id, seq, _)| {
                                *id == h.producer_id && *seq == h.base_sequence
                            });
                        if !dup {
                            c.stored
                                .push((h.producer_id, h.base_sequence, h.record_count));
                        }
                        if first && script == Script::DropAfterAppend {
                            c.scripted = true;
                            return None; // drop the connection, no answer
                        }
                    }
                    let part = PartitionProduceResponse::default()
                        .with_index(0)
                        .with_error_code(code);
                    let r = ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default()
                            .with_name(topic_name("t"))
                            .with_partition_responses(vec![part]),
                    ]);
                    drop(c);
                    response(&r, key, version, header.correlation_id)
                }
                _ => return None,
            };
            s.write_all(&frame).await.ok()?;
        }
    }

    /// Two nodes; node 1 leads partition 0 of topic `t` and follows `script`.
    async fn cluster(script: Script) -> Arc<Mutex<Cluster>> {
        let c = Arc::new(Mutex::new(Cluster {
            leader: 1,
            ..Cluster::default()
        }));
        for node in [1, 2] {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            c.lock()
                .unwrap()
                .addrs
                .push(l.local_addr().unwrap().to_string());
            let (c2, s) = (c.clone(), if node == 1 { script } else { Script::Normal });
            tokio::spawn(async move {
                while let Ok((conn, _)) = l.accept().await {
                    tokio::spawn(serve_conn(conn, node, s, c2.clone()));
                }
            });
        }
        c
    }

    async fn produce(c: &Arc<Mutex<Cluster>>, acks: i16, n: usize) -> Arc<Counters> {
        let bootstrap = c.lock().unwrap().addrs[0].clone();
        let mut config = ProducerConfig::new(bootstrap);
        config.acks = acks;
        config.retry_backoff = Duration::from_millis(1);
        config.linger = Duration::from_millis(50);
        let counters = Arc::new(Counters::default());
        let mut p = KafkaProducer::connect(config, &["t".into()], None, counters.clone())
            .await
            .unwrap();
        for i in 0..n {
            let record = Record {
                key: None,
                value: Some(format!("v{i}").into_bytes()),
                headers: Vec::new(),
                timestamp: 1,
            };
            p.send("t", record).await.unwrap();
        }
        p.close().await;
        counters
    }

    #[tokio::test]
    async fn not_leader_is_retried_at_the_new_leader_after_a_metadata_refresh() {
        let c = cluster(Script::NotLeader).await;
        let counters = produce(&c, -1, 10).await;
        assert_eq!(counters.acked.load(Ordering::Relaxed), 10);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
        assert_eq!(counters.retried.load(Ordering::Relaxed), 10);
        let c = c.lock().unwrap();
        // Same producer id and sequence at node 2 as the refused attempt at node 1.
        assert_eq!(c.attempts, vec![(1, 7, 0, 10), (2, 7, 0, 10)]);
        assert_eq!(c.stored, vec![(7, 0, 10)]);
    }

    #[tokio::test]
    async fn a_lost_answer_is_retried_with_the_same_sequence_and_stored_once() {
        let c = cluster(Script::DropAfterAppend).await;
        let counters = produce(&c, -1, 10).await;
        assert_eq!(counters.acked.load(Ordering::Relaxed), 10);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
        let c = c.lock().unwrap();
        assert_eq!(c.attempts, vec![(1, 7, 0, 10), (1, 7, 0, 10)]);
        assert_eq!(c.stored, vec![(7, 0, 10)], "the retry was a duplicate");
    }

    #[tokio::test]
    async fn without_idempotence_a_lost_answer_is_not_retried() {
        let c = cluster(Script::DropAfterAppend).await;
        let counters = produce(&c, 1, 10).await;
        assert_eq!(counters.acked.load(Ordering::Relaxed), 0);
        assert_eq!(counters.failed.load(Ordering::Relaxed), 10);
        assert_eq!(
            c.lock().unwrap().attempts,
            vec![(1, -1, -1, 10)],
            "sent once, never again"
        );
        // But a refusal that guarantees nothing was stored is retried without idempotence too.
        let c = cluster(Script::NotLeader).await;
        let counters = produce(&c, 1, 10).await;
        assert_eq!(counters.acked.load(Ordering::Relaxed), 10);
        assert_eq!(c.lock().unwrap().stored, vec![(-1, -1, 10)]);
    }
}
