//! A small Kafka-protocol client for the standalone processor (`runnel process`): Metadata
//! (partition leaders, refreshed on NOT_LEADER_OR_FOLLOWER / UNKNOWN_TOPIC_OR_PARTITION),
//! ListOffsets, Fetch (v2 record batches), Produce and CreateTopics against any
//! Kafka-compatible cluster, Runnel or Kafka.
//!
//! `connection` owns the socket; `metadata`, `fetch` and `produce` are sans-io request
//! builders and response parsers; [`Client`] routes each request to its partition's leader
//! and retries what is safe to retry: connection failures and retriable error codes for
//! reads, and for Produce only the answers that say nothing was appended (so a produce whose
//! outcome is unknown is reported, never repeated). Retries are bounded, with backoff.
//!
//! The client keeps one connection per broker and serves one request at a time (the
//! processor's driver is sequential).

pub mod connection;
pub mod fetch;
pub mod metadata;
pub mod produce;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest,
    ProduceRequest,
};
use kafka_protocol::protocol::Request;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use connection::{pick, Connection};
use fetch::{FetchedPartition, EARLIEST, LATEST};
use metadata::{ClusterMetadata, TopicState, TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION};

/// Kafka's OFFSET_OUT_OF_RANGE.
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const REQUEST_TIMED_OUT: i16 = 7;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const NOT_CONTROLLER: i16 = 41;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// A Kafka error code's name, for messages.
pub fn error_text(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?} ({code})"),
        None => format!("error code {code}"),
    }
}

/// Codes after which the leader is looked up again and the request repeated. For Produce
/// these all mean "not appended"; REQUEST_TIMED_OUT is retried for reads only.
fn retriable(code: i16) -> bool {
    matches!(
        code,
        UNKNOWN_TOPIC_OR_PARTITION
            | LEADER_NOT_AVAILABLE
            | NOT_LEADER_OR_FOLLOWER
            | NOT_ENOUGH_REPLICAS
            | FENCED_LEADER_EPOCH
            | UNKNOWN_LEADER_EPOCH
    )
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    // `error`, not `source`: the message already carries it, and anyhow's `{:#}` would
    // print a source a second time.
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("{api} to {addr} failed: {error}")]
    Io {
        api: &'static str,
        addr: String,
        error: std::io::Error,
    },
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
    #[error("{api} {topic}/{partition}: {message}")]
    Partition {
        api: &'static str,
        topic: String,
        partition: i32,
        code: i16,
        message: String,
    },
    #[error("topic {topic:?}: {message}")]
    Topic { topic: String, message: String },
}

impl KafkaClientError {
    /// Whether repeating a read after this error can succeed.
    fn retriable_read(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io { .. } => true,
            Self::Partition { code, .. } => retriable(*code) || *code == REQUEST_TIMED_OUT,
            _ => false,
        }
    }
}

/// How the client talks to the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    /// Sent in every request header (shows in the broker's logs and quotas).
    pub client_id: String,
    /// Longest wait for one answer (a long-poll Fetch adds its `max_wait`).
    pub request_timeout: Duration,
    /// Tries of one request, the first included.
    pub attempts: u32,
    /// First wait between tries; doubled each time, at most 2 s.
    pub backoff: Duration,
    /// Cached metadata older than this is refreshed before use.
    pub metadata_max_age: Duration,
    /// Bytes asked for per partition in one Fetch.
    pub fetch_max_bytes: i32,
}

impl ClientConfig {
    /// Defaults for `bootstrap` (`host:port`, several comma-separated).
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            client_id: "runnel-process".into(),
            request_timeout: Duration::from_secs(30),
            attempts: 6,
            backoff: Duration::from_millis(100),
            metadata_max_age: Duration::from_secs(10),
            fetch_max_bytes: 1 << 20,
        }
    }
}

/// Versions chosen from the first broker's ApiVersions (assumed uniform across the cluster).
#[derive(Debug, Clone, Copy)]
struct Versions {
    metadata: i16,
    fetch: i16,
    list_offsets: i16,
    produce: i16,
    create_topics: Option<i16>,
}

#[derive(Default)]
struct Inner {
    versions: Option<Versions>,
    meta: ClusterMetadata,
    /// When each topic's entry was last refreshed.
    fresh: HashMap<String, Instant>,
    conns: HashMap<String, Connection>,
}

/// See the module docs.
pub struct Client {
    config: ClientConfig,
    inner: Mutex<Inner>,
}

impl Client {
    /// A client; nothing is connected until the first request.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(10)).unwrap_or(1024);
        self.config
            .backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(2))
    }

    /// Checks that a broker answers and speaks the versions this client needs.
    pub async fn connect(&self) -> Result<(), KafkaClientError> {
        let mut inner = self.inner.lock().await;
        self.versions(&mut inner).await.map(|_| ())
    }

    /// Sends to `addr`, opening a connection if needed; a failed connection is dropped.
    async fn call_at<R: Request>(
        &self,
        inner: &mut Inner,
        addr: &str,
        req: &R,
        version: i16,
        extra: Duration,
    ) -> Result<R::Response, KafkaClientError> {
        if !inner.conns.contains_key(addr) {
            let c =
                Connection::open(addr, &self.config.client_id, self.config.request_timeout).await?;
            inner.conns.insert(addr.to_owned(), c);
        }
        let Some(conn) = inner.conns.get_mut(addr) else {
            return Err(KafkaClientError::Connect {
                addr: addr.to_owned(),
                error: std::io::Error::other("connection vanished"),
            });
        };
        let r = conn
            .call(
                req,
                version,
                self.config.request_timeout.saturating_add(extra),
            )
            .await;
        if r.is_err() {
            inner.conns.remove(addr);
        }
        r
    }

    /// Sends to any broker: known brokers first, then the bootstrap list, until one answers.
    async fn call_any<R: Request>(
        &self,
        inner: &mut Inner,
        req: &R,
        version: i16,
    ) -> Result<R::Response, KafkaClientError> {
        let mut addrs: Vec<String> = inner.meta.brokers.values().cloned().collect();
        addrs.sort();
        for b in &self.config.bootstrap {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        let mut last = None;
        for addr in addrs {
            match self
                .call_at(inner, &addr, req, version, Duration::ZERO)
                .await
            {
                Ok(r) => return Ok(r),
                Err(e @ (KafkaClientError::Connect { .. } | KafkaClientError::Io { .. })) => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| KafkaClientError::Connect {
            addr: String::new(),
            error: std::io::Error::other("no bootstrap address"),
        }))
    }

    async fn versions(&self, inner: &mut Inner) -> Result<Versions, KafkaClientError> {
        if let Some(v) = inner.versions {
            return Ok(v);
        }
        let resp = self
            .call_any(inner, &ApiVersionsRequest::default(), 0)
            .await?;
        let addr = self.config.bootstrap.join(",");
        if resp.error_code != 0 {
            return Err(KafkaClientError::Decode {
                api: "ApiVersions",
                addr,
                message: error_text(resp.error_code),
            });
        }
        let v = Versions {
            metadata: pick::<MetadataRequest>(&addr, &resp, 1, 12)?,
            fetch: pick::<FetchRequest>(&addr, &resp, 4, 12)?,
            list_offsets: pick::<ListOffsetsRequest>(&addr, &resp, 1, 7)?,
            produce: pick::<ProduceRequest>(&addr, &resp, 3, 9)?,
            create_topics: pick::<CreateTopicsRequest>(&addr, &resp, 2, 5).ok(),
        };
        inner.versions = Some(v);
        Ok(v)
    }

    /// Asks for metadata of `topics` and merges it into the cache.
    async fn refresh(&self, inner: &mut Inner, topics: &[&str]) -> Result<(), KafkaClientError> {
        let v = self.versions(inner).await?;
        let resp = self
            .call_any(inner, &metadata::request(topics), v.metadata)
            .await?;
        let m = metadata::parse(&resp);
        if !m.brokers.is_empty() {
            inner.meta.brokers = m.brokers;
        }
        inner.meta.controller = m.controller;
        let now = Instant::now();
        for t in topics {
            let state = m.topics.get(*t).cloned().unwrap_or(TopicState::Missing);
            inner.meta.topics.insert((*t).to_owned(), state);
            inner.fresh.insert((*t).to_owned(), now);
        }
        Ok(())
    }

    /// The topic's state, from the cache while fresh.
    async fn topic(
        &self,
        inner: &mut Inner,
        topic: &str,
        force: bool,
    ) -> Result<TopicState, KafkaClientError> {
        let fresh = inner
            .fresh
            .get(topic)
            .is_some_and(|at| at.elapsed() < self.config.metadata_max_age);
        if force || !fresh {
            self.refresh(inner, &[topic]).await?;
        }
        Ok(inner
            .meta
            .topics
            .get(topic)
            .cloned()
            .unwrap_or(TopicState::Missing))
    }

    /// The leader's address of a partition: `Ok(None)` if the topic or partition does not
    /// exist, `Err` if it has no reachable leader right now.
    async fn leader(
        &self,
        inner: &mut Inner,
        topic: &str,
        partition: i32,
        force: bool,
    ) -> Result<Option<String>, KafkaClientError> {
        let no_leader = |message: String| KafkaClientError::Partition {
            api: "Metadata",
            topic: topic.to_owned(),
            partition,
            code: LEADER_NOT_AVAILABLE,
            message,
        };
        match self.topic(inner, topic, force).await? {
            TopicState::Missing => Ok(None),
            TopicState::Error(message) => Err(KafkaClientError::Topic {
                topic: topic.to_owned(),
                message,
            }),
            TopicState::Ready(leaders) => {
                let Some(slot) = usize::try_from(partition)
                    .ok()
                    .and_then(|i| leaders.get(i).copied())
                else {
                    return Ok(None);
                };
                let node = slot.ok_or_else(|| no_leader("no leader".into()))?;
                inner
                    .meta
                    .brokers
                    .get(&node)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| no_leader(format!("leader {node} is not among the brokers")))
            }
        }
    }

    /// Partitions of `topic`, `None` if it does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<u32>, KafkaClientError> {
        let mut inner = self.inner.lock().await;
        let mut attempt: u32 = 0;
        loop {
            let r = self.topic(&mut inner, topic, attempt > 0).await;
            let err = match r {
                Ok(TopicState::Missing) => return Ok(None),
                Ok(TopicState::Ready(l)) => {
                    return u32::try_from(l.len())
                        .map(Some)
                        .map_err(|_| KafkaClientError::Topic {
                            topic: topic.to_owned(),
                            message: "too many partitions".into(),
                        })
                }
                Ok(TopicState::Error(message)) => KafkaClientError::Topic {
                    topic: topic.to_owned(),
                    message,
                },
                Err(e) if e.retriable_read() => e,
                Err(e) => return Err(e),
            };
            attempt += 1;
            if attempt >= self.config.attempts {
                return Err(err);
            }
            tracing::debug!("metadata of {topic}: {err}; retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// The controller (node id) as fresh metadata says, if there is one.
    pub async fn controller(&self) -> Result<Option<i32>, KafkaClientError> {
        let mut inner = self.inner.lock().await;
        self.topic(&mut inner, "__runnel_no_such_topic", true)
            .await?;
        Ok(inner.meta.controller)
    }

    /// Each partition's leader (node id) as fresh metadata says; `None` where there is none
    /// right now, and an empty list when the topic does not exist.
    pub async fn leaders(&self, topic: &str) -> Result<Vec<Option<i32>>, KafkaClientError> {
        let mut inner = self.inner.lock().await;
        match self.topic(&mut inner, topic, true).await? {
            TopicState::Ready(l) => Ok(l),
            TopicState::Missing => Ok(Vec::new()),
            TopicState::Error(message) => Err(KafkaClientError::Topic {
                topic: topic.to_owned(),
                message,
            }),
        }
    }

    /// Runs a read on the partition's leader with bounded retries; `Ok(None)` if the
    /// partition does not exist. `parse` returns the answer's error code with its value;
    /// codes other than 0 and `ok_codes` are errors.
    #[allow(clippy::too_many_arguments)]
    async fn read_with_retries<R, T>(
        &self,
        api: &'static str,
        topic: &str,
        partition: i32,
        req: &R,
        version: impl Fn(&Versions) -> i16,
        extra: Duration,
        parse: impl Fn(&R::Response) -> Option<(i16, T)>,
        ok_codes: &[i16],
    ) -> Result<Option<T>, KafkaClientError>
    where
        R: Request,
    {
        let mut inner = self.inner.lock().await;
        let mut attempt: u32 = 0;
        loop {
            let force = attempt > 0;
            let result = async {
                let v = self.versions(&mut inner).await?;
                let Some(addr) = self.leader(&mut inner, topic, partition, force).await? else {
                    return Ok(None);
                };
                let resp = self
                    .call_at(&mut inner, &addr, req, version(&v), extra)
                    .await?;
                let (code, value) = parse(&resp).ok_or_else(|| KafkaClientError::Decode {
                    api,
                    addr: addr.clone(),
                    message: format!("the answer does not mention {topic}/{partition}"),
                })?;
                if code == 0 || ok_codes.contains(&code) {
                    Ok(Some((code, value)))
                } else {
                    Err(KafkaClientError::Partition {
                        api,
                        topic: topic.to_owned(),
                        partition,
                        code,
                        message: error_text(code),
                    })
                }
            }
            .await;
            match result {
                Ok(Some((_, v))) => return Ok(Some(v)),
                Ok(None) => return Ok(None),
                Err(e)
                    if e.retriable_read() && attempt.saturating_add(1) < self.config.attempts =>
                {
                    tracing::debug!("{e}; retrying");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// The offset of a partition at `timestamp` ([`fetch::EARLIEST`], [`fetch::LATEST`]),
    /// `None` if the partition does not exist.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<Option<i64>, KafkaClientError> {
        let req = fetch::list_offsets_request(topic, partition, timestamp);
        self.read_with_retries(
            "ListOffsets",
            topic,
            partition,
            &req,
            |v| v.list_offsets,
            Duration::ZERO,
            |r| fetch::list_offsets_outcome(r, topic, partition),
            &[],
        )
        .await
    }

    /// `(log start, high watermark)`, `None` if the partition does not exist.
    pub async fn offsets(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, KafkaClientError> {
        let Some(start) = self.list_offset(topic, partition, EARLIEST).await? else {
            return Ok(None);
        };
        let Some(end) = self.list_offset(topic, partition, LATEST).await? else {
            return Ok(None);
        };
        Ok(Some((start, end.max(start))))
    }

    /// One Fetch of a partition from `offset`. The answer's error code is 0 or
    /// [`OFFSET_OUT_OF_RANGE`]; `None` if the partition does not exist.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> Result<Option<FetchedPartition>, KafkaClientError> {
        let max = self.config.fetch_max_bytes;
        let req = fetch::request(&[(topic, partition, offset)], max_wait_ms, 1, max);
        let extra = Duration::from_millis(u64::try_from(max_wait_ms).unwrap_or(0));
        self.read_with_retries(
            "Fetch",
            topic,
            partition,
            &req,
            |v| v.fetch,
            extra,
            |r| fetch::partition(r, topic, partition).map(|p| (p.error_code, p)),
            &[OFFSET_OUT_OF_RANGE],
        )
        .await
    }

    /// Waits up to `max_wait_ms` for data past the given positions: a long-poll Fetch when
    /// they share one leader, else a short sleep. Errors only end the wait early.
    pub async fn wait_for_data(&self, positions: &[(String, i32, i64)], max_wait_ms: u64) {
        let short = Duration::from_millis(max_wait_ms.min(100));
        let leaders = {
            let mut inner = self.inner.lock().await;
            let mut leaders = Vec::new();
            for (t, p, _) in positions {
                match self.leader(&mut inner, t, *p, false).await {
                    Ok(Some(a)) => leaders.push(a),
                    _ => leaders.push(String::new()),
                }
            }
            leaders
        };
        let one = leaders.first().filter(|a| !a.is_empty()).cloned();
        let Some(addr) = one.filter(|a| leaders.iter().all(|l| l == a)) else {
            tokio::time::sleep(short).await;
            return;
        };
        let parts: Vec<(&str, i32, i64)> = positions
            .iter()
            .map(|(t, p, o)| (t.as_str(), *p, *o))
            .collect();
        let wait = i32::try_from(max_wait_ms).unwrap_or(i32::MAX);
        let req = fetch::request(&parts, wait, 1, self.config.fetch_max_bytes);
        let mut inner = self.inner.lock().await;
        let Ok(v) = self.versions(&mut inner).await else {
            drop(inner);
            tokio::time::sleep(short).await;
            return;
        };
        let extra = Duration::from_millis(max_wait_ms);
        if self
            .call_at(&mut inner, &addr, &req, v.fetch, extra)
            .await
            .is_err()
        {
            drop(inner);
            tokio::time::sleep(short).await;
        }
    }

    /// Appends one encoded batch to a partition with acks=all and returns its base offset.
    ///
    /// Retried only after answers that mean nothing was appended (not the leader, no leader,
    /// not enough replicas) or when no connection could be opened; any other failure —
    /// a broken connection, a timeout — leaves the outcome unknown and is returned as is.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
    ) -> Result<i64, KafkaClientError> {
        let timeout_ms = i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(30_000);
        let req = produce::request(topic, partition, batch, -1, timeout_ms);
        let mut inner = self.inner.lock().await;
        let mut attempt: u32 = 0;
        loop {
            let force = attempt > 0;
            let result =
                async {
                    let v = self.versions(&mut inner).await?;
                    let addr = self
                        .leader(&mut inner, topic, partition, force)
                        .await?
                        .ok_or_else(|| KafkaClientError::Partition {
                            api: "Produce",
                            topic: topic.to_owned(),
                            partition,
                            code: UNKNOWN_TOPIC_OR_PARTITION,
                            message: "no such partition".into(),
                        })?;
                    let resp = self
                        .call_at(&mut inner, &addr, &req, v.produce, Duration::ZERO)
                        .await?;
                    let (code, base, message) = produce::outcome(&resp, topic, partition)
                        .ok_or_else(|| KafkaClientError::Decode {
                            api: "Produce",
                            addr: addr.clone(),
                            message: format!("the answer does not mention {topic}/{partition}"),
                        })?;
                    if code == 0 {
                        return Ok(base);
                    }
                    Err(KafkaClientError::Partition {
                        api: "Produce",
                        topic: topic.to_owned(),
                        partition,
                        code,
                        message: if message.is_empty() {
                            error_text(code)
                        } else {
                            format!("{}: {message}", error_text(code))
                        },
                    })
                }
                .await;
            let again = match &result {
                Ok(_) => false,
                Err(KafkaClientError::Connect { .. }) => true,
                Err(KafkaClientError::Partition { code, .. }) => retriable(*code),
                Err(_) => false,
            };
            if !again || attempt.saturating_add(1) >= self.config.attempts {
                return result;
            }
            if let Err(e) = &result {
                tracing::debug!("{e}; retrying");
            }
            attempt += 1;
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Creates `topic` with `partitions` partitions (replication factor: the cluster's
    /// default) unless it exists, then waits until every partition has a leader. Returns the
    /// partition count, which may be larger than asked if the topic existed.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<u32, KafkaClientError> {
        let want = i32::try_from(partitions).map_err(|_| KafkaClientError::Topic {
            topic: topic.to_owned(),
            message: format!("{partitions} partitions"),
        })?;
        let mut inner = self.inner.lock().await;
        let deadline = Instant::now() + self.config.request_timeout;
        let mut attempt = 0u32;
        let mut created = false;
        loop {
            let state = self.topic(&mut inner, topic, true).await;
            match state {
                Ok(TopicState::Ready(leaders)) if leaders.iter().all(Option::is_some) => {
                    return u32::try_from(leaders.len()).map_err(|_| KafkaClientError::Topic {
                        topic: topic.to_owned(),
                        message: "too many partitions".into(),
                    });
                }
                Ok(TopicState::Missing) if !created => {
                    let v = self.versions(&mut inner).await?;
                    let version = v.create_topics.ok_or_else(|| KafkaClientError::Topic {
                        topic: topic.to_owned(),
                        message: "does not exist and the cluster offers no CreateTopics v2..=v5"
                            .into(),
                    })?;
                    let req = metadata::create_request(
                        topic,
                        want,
                        i32::try_from(self.config.request_timeout.as_millis()).unwrap_or(30_000),
                    );
                    // Kafka before KIP-590 takes CreateTopics only at the controller.
                    let controller = inner
                        .meta
                        .controller
                        .and_then(|c| inner.meta.brokers.get(&c).cloned());
                    let resp = match controller {
                        Some(addr) => {
                            self.call_at(&mut inner, &addr, &req, version, Duration::ZERO)
                                .await
                        }
                        None => self.call_any(&mut inner, &req, version).await,
                    };
                    match resp.map(|r| metadata::create_outcome(&r, topic)) {
                        Ok(Some((0 | TOPIC_ALREADY_EXISTS, _))) => created = true,
                        Ok(Some((NOT_CONTROLLER, _))) | Err(KafkaClientError::Connect { .. }) => {}
                        Ok(Some((code, message))) => {
                            return Err(KafkaClientError::Topic {
                                topic: topic.to_owned(),
                                message: format!("cannot create: {} {message}", error_text(code)),
                            })
                        }
                        Ok(None) => {
                            return Err(KafkaClientError::Topic {
                                topic: topic.to_owned(),
                                message: "CreateTopics answer does not mention it".into(),
                            })
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) if !e.retriable_read() => return Err(e),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(KafkaClientError::Topic {
                    topic: topic.to_owned(),
                    message: format!(
                        "no leader for every partition after {:?}",
                        self.config.request_timeout
                    ),
                });
            }
            attempt = attempt.saturating_add(1);
            tokio::time::sleep(self.backoff(attempt).min(Duration::from_millis(200))).await;
        }
    }
}
