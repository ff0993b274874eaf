//! A small Kafka-protocol producer for `runnel simulate --sink kafka`, so the simulator can
//! feed Runnel or any Kafka cluster without a C library: ApiVersions to pick versions,
//! Metadata for partition leaders, optional CreateTopics, then Produce (v7..=v9) to each
//! leader with uncompressed v2 batches built by [`crate::codec::builder`]. Keyed records are
//! partitioned with Kafka's murmur2 ([`crate::grpc::partitioner`]), like the Java client.
//!
//! One task per leader batches records (linger, record and byte limits) and keeps one request
//! in flight; the channel to it is bounded, so `send` waits when the cluster is slower than
//! the caller. Outcomes are counted in a shared [`Counters`], never retried (a failed batch
//! may or may not be stored).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, MetadataRequest,
    ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::grpc::partitioner::partition_for_key;

/// Largest response frame accepted from a broker.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// How long Metadata may keep reporting a topic without leaders (e.g. just created).
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Produce versions used: v7 is the oldest Kafka 4 still takes apart from v3; v9 the newest
/// that names topics rather than topic ids for every cluster.
const PRODUCE_VERSIONS: (i16, i16) = (7, 9);

/// Why the producer could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    // `error`, not `source`: the message already carries it, and anyhow's `{:#}` would
    // print a source a second time.
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("connection to {addr} failed: {error}")]
    Io { addr: String, error: std::io::Error },
    #[error("cannot encode a {api} request: {message}")]
    Encode { api: &'static str, message: String },
    #[error("bad {api} response from {addr}: {message}")]
    Decode {
        api: &'static str,
        addr: String,
        message: String,
    },
    #[error("{addr} does not support {api} v{min}..=v{max} (it offers up to v{offered})")]
    Unsupported {
        addr: String,
        api: &'static str,
        min: i16,
        max: i16,
        offered: i16,
    },
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
        }
    }
}

/// One connection with request/response framing.
struct Conn {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    client_id: StrBytes,
}

fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        _ => "Kafka",
    }
}

impl Conn {
    async fn open(addr: &str, client_id: &str) -> Result<Self, KafkaError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::Connect {
                addr: addr.to_owned(),
                error: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
            })?
            .map_err(|error| KafkaError::Connect {
                addr: addr.to_owned(),
                error,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            addr: addr.to_owned(),
            stream,
            correlation: 0,
            client_id: StrBytes::from_string(client_id.to_owned()),
        })
    }

    fn io(&self, error: std::io::Error) -> KafkaError {
        KafkaError::Io {
            addr: self.addr.clone(),
            error,
        }
    }

    async fn write_request<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<i32, KafkaError> {
        let api = api_name(R::KEY);
        let key = ApiKey::try_from(R::KEY).map_err(|_| KafkaError::Encode {
            api,
            message: "unknown api key".into(),
        })?;
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        let enc = |e: anyhow::Error| KafkaError::Encode {
            api,
            message: e.to_string(),
        };
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(enc)?;
        req.encode(&mut body, version).map_err(enc)?;
        let len = i32::try_from(body.len()).map_err(|_| KafkaError::Encode {
            api,
            message: "request larger than 2 GiB".into(),
        })?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(len);
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| self.io(e))?;
        Ok(self.correlation)
    }

    async fn read_response<R: Request>(
        &mut self,
        version: i16,
        correlation: i32,
    ) -> Result<R::Response, KafkaError> {
        let api = api_name(R::KEY);
        let bad = |addr: &str, message: String| KafkaError::Decode {
            api,
            addr: addr.to_owned(),
            message,
        };
        let len = self.stream.read_i32().await.map_err(|e| self.io(e))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_RESPONSE)
            .ok_or_else(|| bad(&self.addr, format!("frame length {len}")))?;
        let mut buf = vec![0u8; len];
        self.stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| self.io(e))?;
        let mut buf = Bytes::from(buf);
        let key = ApiKey::try_from(R::KEY).map_err(|_| bad(&self.addr, "unknown api".into()))?;
        let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(|e| bad(&self.addr, e.to_string()))?;
        if header.correlation_id != correlation {
            return Err(bad(
                &self.addr,
                format!(
                    "correlation id {} answers request {correlation}",
                    header.correlation_id
                ),
            ));
        }
        let resp =
            R::Response::decode(&mut buf, version).map_err(|e| bad(&self.addr, e.to_string()))?;
        if buf.has_remaining() {
            tracing::debug!(api, "{} trailing bytes in response", buf.remaining());
        }
        Ok(resp)
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, KafkaError> {
        let c = self.write_request(req, version).await?;
        self.read_response::<R>(version, c).await
    }

    /// The highest version of `R` both sides speak within `min..=max`.
    fn pick<R: Request>(
        &self,
        versions: &ApiVersionsResponse,
        min: i16,
        max: i16,
    ) -> Result<i16, KafkaError> {
        let offered = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == R::KEY)
            .map(|k| (k.min_version, k.max_version));
        match offered {
            Some((lo, hi)) if hi >= min && lo <= max => Ok(hi.min(max)),
            other => Err(KafkaError::Unsupported {
                addr: self.addr.clone(),
                api: api_name(R::KEY),
                min,
                max,
                offered: other.map_or(-1, |o| o.1),
            }),
        }
    }
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
        let mut conn = Conn::open(&config.bootstrap, &config.client_id).await?;
        let versions = conn.call(&ApiVersionsRequest::default(), 0).await?;
        if versions.error_code != 0 {
            return Err(KafkaError::Decode {
                api: "ApiVersions",
                addr: conn.addr.clone(),
                message: error_text(versions.error_code),
            });
        }
        let v = Versions {
            metadata: conn.pick::<MetadataRequest>(&versions, 1, 12)?,
            produce: conn.pick::<ProduceRequest>(
                &versions,
                PRODUCE_VERSIONS.0,
                PRODUCE_VERSIONS.1,
            )?,
            create_topics: conn.pick::<CreateTopicsRequest>(&versions, 2, 5).ok(),
        };
        let (brokers, mut routes) = metadata(&mut conn, v, topics).await?;
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
            (brokers, routes) = metadata(&mut conn, v, topics).await?;
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
            let leader_conn = Conn::open(addr, &config.client_id).await?;
            let (tx, rx) = mpsc::channel(config.max_request_records.max(1) * 2);
            tasks.push(tokio::spawn(leader_task(
                leader_conn,
                config.clone(),
                v.produce,
                rx,
                counters.clone(),
            )));
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
    conn: &mut Conn,
    v: Versions,
    topics: &[String],
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
    let resp = conn.call(&req, v.metadata).await?;
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
    conn: &mut Conn,
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
    let resp = conn.call(&req, version).await?;
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

async fn leader_task(
    mut conn: Conn,
    config: ProducerConfig,
    version: i16,
    mut rx: mpsc::Receiver<Queued>,
    counters: Arc<Counters>,
) {
    let mut pending = Pending::default();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    let mut broken = false;
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
            if broken {
                match Conn::open(&conn.addr, &config.client_id).await {
                    Ok(c) => {
                        conn = c;
                    }
                    Err(e) => {
                        let n = u64::try_from(batch.records).unwrap_or(u64::MAX);
                        counters.fail(n, || e.to_string());
                        continue;
                    }
                }
            }
            broken = !produce(&mut conn, &config, version, batch, &counters).await;
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

/// Send one Produce request; count outcomes. Returns false if the connection broke.
async fn produce(
    conn: &mut Conn,
    config: &ProducerConfig,
    version: i16,
    batch: Pending,
    counters: &Counters,
) -> bool {
    let mut topics: BTreeMap<Arc<str>, Vec<PartitionProduceData>> = BTreeMap::new();
    let mut sizes: HashMap<(Arc<str>, i32), u64> = HashMap::new();
    for ((topic, partition), (records, _)) in batch.parts {
        if records.is_empty() {
            continue;
        }
        let bytes = encode_batch(&records, ProducerInfo::default()).freeze();
        sizes.insert(
            (topic.clone(), partition),
            u64::try_from(records.len()).unwrap_or(u64::MAX),
        );
        topics.entry(topic).or_default().push(
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes)),
        );
    }
    let total: u64 = sizes.values().sum();
    let req = ProduceRequest::default()
        .with_acks(config.acks)
        .with_timeout_ms(config.timeout_ms)
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
    if config.acks == 0 {
        // No response comes for acks=0: written is all we learn.
        return match conn.write_request(&req, version).await {
            Ok(_) => {
                counters.acked.fetch_add(total, Ordering::Relaxed);
                true
            }
            Err(e) => {
                counters.fail(total, || e.to_string());
                false
            }
        };
    }
    let resp = match conn.call(&req, version).await {
        Ok(r) => r,
        Err(e) => {
            counters.fail(total, || e.to_string());
            return false;
        }
    };
    for t in resp.responses {
        let topic: Arc<str> = Arc::from(t.name.0.as_str());
        for p in t.partition_responses {
            let n = sizes.remove(&(topic.clone(), p.index)).unwrap_or(0);
            if p.error_code == 0 {
                counters.acked.fetch_add(n, Ordering::Relaxed);
            } else {
                counters.fail(n, || {
                    format!(
                        "{topic} partition {}: {}",
                        p.index,
                        error_text(p.error_code)
                    )
                });
            }
        }
    }
    // Partitions the response did not mention: outcome unknown, count as failed.
    let missing: u64 = sizes.values().sum();
    if missing > 0 {
        counters.fail(missing, || {
            "partitions missing from the produce response".into()
        });
    }
    true
}
