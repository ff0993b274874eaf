//! Cluster mode (issue 6): the peer network, the metadata Raft group that decides which topics
//! exist, and one Raft group per local replica of a replicated partition.
//!
//! Every node of a static cluster (`[cluster] nodes`) is a voter of the metadata group. Its log
//! holds [`MetaCommand`]s (create / delete topic, with the topic id and replica assignment),
//! applied in order on every node by one applier task; applying is idempotent (by topic id),
//! so a replay after a restart changes nothing. A node that is not the metadata leader
//! forwards a command to the leader over the peer network. Each partition's replicas form a
//! Raft group whose log is the partition's segment files (`raft::segment_log`): the leader
//! proposes each produced batch; the high watermark is the committed end offset.

pub mod hard_state;
pub mod replica;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::hard_state::{HardStateFile, LogStartFile};
use self::replica::{PartitionStore, Replica, ReplicaHost};
use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::config::{ClusterConfig, Config};
use crate::group::driver::GroupDriver;
use crate::group::{CommittedOffset, TopicPartition};
use crate::log::file::{FileLog, FileLogConfig};
use crate::log::PartitionLog;
use crate::metrics::Metrics;
use crate::net::peers::PeerStats;
use crate::net::peers::{PeerConfig, PeerHandler, PeerNetwork};
use crate::raft::driver::{Group, GroupStats, Host, Leadership, Timing};
use crate::raft::segment_log::SegmentRaftLog;
use crate::raft::wire::GroupKey;
use crate::raft::{HardState, Index, Message, NodeId, RaftNode, Role};
use crate::topics::{Topic, TopicConfig, TopicError, TopicRegistry};

/// How long a metadata change may take before the request gives up.
const META_TIMEOUT: Duration = Duration::from_secs(10);

/// A decision of the metadata group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetaCommand {
    CreateTopic {
        name: String,
        id: String,
        config: TopicConfig,
        replicas: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
        id: String,
    },
    /// Offsets a consumer group committed (accepted by the coordinator, which is the metadata
    /// leader): every node stores them, so the next coordinator has them.
    CommitOffsets {
        group: String,
        offsets: Vec<ReplicatedOffset>,
    },
}

/// One committed offset in a [`MetaCommand::CommitOffsets`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The answer to a forwarded command.
#[derive(Debug, Serialize, Deserialize)]
struct MetaReply {
    /// Kafka error code and message; `None` when applied.
    error: Option<(i16, String)>,
}

/// The metadata group's log: a file log of its own under `<data_dir>/cluster/meta`.
pub type MetaLog = SegmentRaftLog<Box<dyn PartitionLog>>;

struct MetaHost {
    net: Arc<PeerNetwork>,
    state: HardStateFile,
    /// Committed entries go to the applier in order.
    apply: mpsc::UnboundedSender<(Index, Option<MetaCommand>)>,
    /// The last index handed to the applier.
    sent: std::sync::Mutex<Index>,
}

impl Host<MetaLog> for MetaHost {
    fn send(&self, msg: Message) {
        self.net.send_raft(GroupKey::Meta, msg);
    }
    fn save_hard_state(&self, hs: HardState) -> Result<(), String> {
        self.state.save(hs)
    }
    fn sync_log(&self, log: &MetaLog, _index: Index) -> BoxFuture<'static, Result<(), String>> {
        // The plan covers every write made so far, so the index asked for too. (The log's own
        // flushed mark is not advanced: nothing reads it for the metadata log.)
        let plan = log.store().flush_plan();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || plan.sync())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("metadata log fsync: {e}"))
        })
    }
    fn committed(&self, log: &MetaLog, commit: Index) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        while *sent < commit {
            let batch = match crate::raft::RaftLog::entries(log, *sent + 1, 64) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("cannot read the metadata log: {e}");
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            for e in batch {
                if e.index > commit {
                    return;
                }
                let cmd = decode_command(&e.payload);
                *sent = e.index;
                let _ = self.apply.send((e.index, cmd));
            }
        }
    }
    fn role_changed(&self, role: Role, term: u64, leader: Option<NodeId>) {
        tracing::info!(?role, term, ?leader, "metadata group role changed");
    }
}

/// The command in a metadata entry; `None` for a no-op (or an entry that is not a command,
/// which is logged).
fn decode_command(payload: &[u8]) -> Option<MetaCommand> {
    if payload.is_empty() {
        return None;
    }
    let records = crate::codec::builder::decode_records(payload)?;
    let value = records.first()?.value.as_ref()?;
    match serde_json::from_slice(value) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("undecodable metadata command ignored: {e}");
            None
        }
    }
}

/// Routes what peers send to the right group.
struct Router {
    cluster: OnceLock<Weak<Cluster>>,
}

impl PeerHandler for Router {
    fn on_raft(&self, group: GroupKey, msg: Message) {
        let Some(c) = self.cluster.get().and_then(Weak::upgrade) else {
            return;
        };
        match group {
            GroupKey::Meta => c.meta.step(msg),
            GroupKey::Partition { topic, partition } => {
                if let Some(r) = c.replica(&topic, partition) {
                    r.group.step(msg);
                }
            }
        }
    }

    fn on_peer_down(&self, peer: NodeId) {
        let Some(c) = self.cluster.get().and_then(Weak::upgrade) else {
            return;
        };
        // Every group led by `peer` may elect a new leader without waiting out its timeout.
        tracing::debug!(peer, "peer down: telling every group");
        let _ = c.meta.submit(move |core| core.leader_unreachable(peer));
        for (_, r) in c.replica_list() {
            let _ = r.group.submit(move |core| {
                let before = (core.role(), core.leader());
                core.leader_unreachable(peer);
                tracing::trace!(peer, ?before, "leader-unreachable hint");
            });
        }
    }

    fn on_request(&self, _from: NodeId, payload: Bytes) -> BoxFuture<'static, Bytes> {
        let cluster = self.cluster.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let reply = match (cluster, serde_json::from_slice::<MetaCommand>(&payload)) {
                (None, _) => MetaReply {
                    error: Some((
                        crate::handlers::code::REQUEST_TIMED_OUT,
                        "node starting".into(),
                    )),
                },
                (_, Err(e)) => MetaReply {
                    error: Some((
                        crate::handlers::code::INVALID_REQUEST,
                        format!("bad command: {e}"),
                    )),
                },
                (Some(c), Ok(cmd)) => MetaReply {
                    error: c.commit_local(cmd).await.err(),
                },
            };
            Bytes::from(serde_json::to_vec(&reply).unwrap_or_default())
        })
    }
}

/// Cluster mode state, shared by the handlers.
pub struct Cluster {
    pub node_id: i32,
    pub config: ClusterConfig,
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupDriver>,
    net: Arc<PeerNetwork>,
    meta: Group<MetaLog>,
    applied: watch::Receiver<Index>,
    replicas: RwLock<BTreeMap<(String, i32), Replica>>,
    state_dir: PathBuf,
    timing: Timing,
    metrics: Metrics,
}

/// Raft node ids are the Kafka node ids (which are >= 0).
pub fn raft_id(node: i32) -> NodeId {
    NodeId::try_from(node).unwrap_or(0)
}

/// The Kafka node id of a Raft node id.
pub fn kafka_id(node: NodeId) -> i32 {
    i32::try_from(node).unwrap_or(-1)
}

impl Cluster {
    /// Start the peer network (on `listener`), the metadata group and every local replica;
    /// replicas record their commit latency into `metrics`.
    pub async fn start(
        config: &Config,
        topics: Arc<TopicRegistry>,
        groups: Arc<GroupDriver>,
        listener: TcpListener,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        let cc = config.cluster.clone();
        let node_id = config.node_id;
        let state_dir = config.data_dir.join("cluster");
        let router = Arc::new(Router {
            cluster: OnceLock::new(),
        });
        let peers = cc
            .nodes
            .iter()
            .filter(|n| n.id != node_id)
            .map(|n| (raft_id(n.id), n.raft))
            .collect();
        let net = Arc::new(PeerNetwork::start(
            PeerConfig {
                node_id: raft_id(node_id),
                cluster: cc.name.clone(),
                listener,
                peers,
                max_frame: config.max_frame_bytes.max(8 << 20),
                queue_len: 4096,
            },
            router.clone(),
        ));
        let timing = Timing {
            tick: Duration::from_millis(cc.tick_ms),
        };
        // The metadata group.
        let meta_dir = state_dir.join("meta");
        std::fs::create_dir_all(&meta_dir)?;
        let meta_store: Box<dyn PartitionLog> =
            Box::new(FileLog::open(&meta_dir, FileLogConfig::default())?);
        let meta_log = SegmentRaftLog::open(meta_store)
            .map_err(|e| anyhow::anyhow!("cannot open the metadata log: {e}"))?;
        let meta_state = HardStateFile::new(state_dir.join("meta.state.json"));
        let hs = meta_state.load().map_err(anyhow::Error::msg)?;
        let voters: Vec<NodeId> = cc.nodes.iter().map(|n| raft_id(n.id)).collect();
        let core = RaftNode::new(raft_config(&cc, node_id, voters, 0), meta_log, hs)?;
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (applied_tx, applied) = watch::channel(0);
        let meta_host = Arc::new(MetaHost {
            net: net.clone(),
            state: meta_state,
            apply: apply_tx,
            sent: std::sync::Mutex::new(0),
        });
        let cluster = Arc::new(Self {
            node_id,
            config: cc,
            topics,
            groups,
            net,
            meta: Group::spawn(core, meta_host, timing),
            applied,
            replicas: RwLock::new(BTreeMap::new()),
            state_dir,
            timing,
            metrics,
        });
        // Replicas of topics that already exist, then the applier (which replays the log).
        for t in cluster.topics.list() {
            cluster.ensure_replicas(&t)?;
        }
        let _ = router.cluster.set(Arc::downgrade(&cluster));
        tokio::spawn(run_applier(Arc::downgrade(&cluster), apply_rx, applied_tx));
        Ok(cluster)
    }

    /// Stop the metadata group, then every replica group, each once its task has let go of its
    /// log (a clean shutdown, before the broker closes the partition logs: a group still
    /// running would find its log closed under it).
    pub async fn stop(&self) {
        self.meta.stop().await;
        for (_, replica) in self.replica_list() {
            replica.group.stop().await;
        }
    }

    /// The replica of a partition on this node, if it has one.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Replica> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Every replica on this node, by (topic, partition).
    pub fn replica_list(&self) -> Vec<((String, i32), Replica)> {
        self.replicas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// The metadata group as this node sees it: leadership and stats.
    pub fn meta_state(&self) -> (Leadership, GroupStats) {
        (self.meta.leadership(), self.meta.stats())
    }

    /// The peer network's counters.
    pub fn peer_stats(&self) -> PeerStats {
        self.net.stats()
    }

    /// The metadata leader (the controller, in Kafka's terms), if known.
    pub fn controller(&self) -> Option<i32> {
        self.meta.leadership().leader.map(kafka_id)
    }

    /// The partition's leader as this node knows it, and its epoch (the Raft term).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<(i32, i32)> {
        let l = self.replica(topic, partition)?.group.leadership();
        let leader = l.leader.map(kafka_id)?;
        Some((leader, i32::try_from(l.term).unwrap_or(i32::MAX)))
    }

    /// Start a Raft group for every partition of `topic` that has a replica here.
    fn ensure_replicas(&self, topic: &Topic) -> anyhow::Result<()> {
        let Some(assignment) = &topic.replicas else {
            return Ok(());
        };
        for (p, replicas) in topic.partitions.iter().zip(assignment) {
            if !replicas.contains(&self.node_id) || self.replica(&topic.name, p.index).is_some() {
                continue;
            }
            let key = GroupKey::Partition {
                topic: topic.name.clone(),
                partition: p.index,
            };
            let state = HardStateFile::new(
                self.state_dir
                    .join("raft")
                    .join(format!("{}-{}", topic.id.simple(), p.index))
                    .with_extension("json"),
            );
            let hs = state.load().map_err(anyhow::Error::msg)?;
            let start = LogStartFile::new(
                self.state_dir
                    .join("raft")
                    // Not `with_extension`: that would replace ".start" and give the hard
                    // state's own file name.
                    .join(format!("{}-{}.start.json", topic.id.simple(), p.index)),
            );
            let log = SegmentRaftLog::open(PartitionStore(p.clone(), start))
                .map_err(|e| anyhow::anyhow!("{}/{}: {e}", topic.name, p.index))?;
            let voters = replicas.iter().map(|n| raft_id(*n)).collect();
            let seed = u64::try_from(p.index).unwrap_or(0) ^ topic.id.as_u64_pair().0;
            let core = RaftNode::new(
                raft_config(&self.config, self.node_id, voters, seed),
                log,
                hs,
            )?;
            let host = Arc::new(ReplicaHost {
                key,
                net: self.net.clone(),
                partition: p.clone(),
                state,
                commit_seconds: self.metrics.raft_commit_histogram(&topic.name, p.index),
                leading_unsettled: std::sync::Mutex::new(None),
            });
            let replica = Replica {
                partition: p.clone(),
                group: Group::spawn(core, host, self.timing),
                replicas: replicas.clone(),
            };
            self.replicas
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert((topic.name.clone(), p.index), replica);
        }
        Ok(())
    }

    /// Apply one committed command on this node.
    fn apply(&self, cmd: MetaCommand) -> Result<(), TopicError> {
        match cmd {
            MetaCommand::CreateTopic {
                name,
                id,
                config,
                replicas,
            } => {
                let id = uuid::Uuid::parse_str(&id)
                    .map_err(|e| TopicError::Storage(format!("bad topic id: {e}")))?;
                self.topics.create_replicated(&name, id, config, replicas)?;
                if let Some(t) = self.topics.get(&name) {
                    self.ensure_replicas(&t)
                        .map_err(|e| TopicError::Storage(e.to_string()))?;
                }
                Ok(())
            }
            MetaCommand::CommitOffsets { group, offsets } => {
                let offsets: Vec<(TopicPartition, CommittedOffset)> = offsets
                    .into_iter()
                    .map(|o| {
                        (
                            TopicPartition {
                                topic: o.topic,
                                partition: o.partition,
                            },
                            CommittedOffset {
                                offset: o.offset,
                                leader_epoch: o.leader_epoch,
                                metadata: o.metadata,
                            },
                        )
                    })
                    .collect();
                self.groups
                    .apply_replicated(&group, &offsets)
                    .map_err(|e| TopicError::Storage(format!("offsets of group {group}: {e}")))
            }
            MetaCommand::DeleteTopic { name, id } => {
                let id = uuid::Uuid::parse_str(&id)
                    .map_err(|e| TopicError::Storage(format!("bad topic id: {e}")))?;
                if self.topics.get(&name).is_some_and(|t| t.id == id) {
                    self.replicas
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(t, _), _| *t != name);
                    match self.topics.delete_if(&name, Some(id)) {
                        Ok(()) | Err(TopicError::Unknown) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Create a replicated topic through the metadata group; returns once applied here.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), TopicError> {
        let config = self.topics.check_new(name, partitions, configs)?;
        let n = self.config.nodes.len();
        let rf = if replication_factor == -1 {
            usize::try_from(self.config.default_replication_factor)
                .unwrap_or(1)
                .min(n)
        } else {
            usize::try_from(replication_factor)
                .ok()
                .filter(|rf| (1..=n).contains(rf))
                .ok_or(TopicError::InvalidReplicationFactor(replication_factor))?
        };
        if self.topics.get(name).is_some() {
            return Err(TopicError::AlreadyExists);
        }
        let cmd = MetaCommand::CreateTopic {
            name: name.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            config,
            replicas: self.place(name, partitions, rf),
        };
        self.commit(cmd).await.map_err(|(code, msg)| match code {
            36 => TopicError::AlreadyExists,
            _ => TopicError::Storage(msg),
        })?;
        // Applied on the leader; here once this node has caught up.
        let deadline = tokio::time::Instant::now() + META_TIMEOUT;
        while self.topics.get(name).is_none() {
            if tokio::time::Instant::now() > deadline {
                return Err(TopicError::Storage(
                    "the topic was created but this node has not applied it yet".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Create a topic with the defaults unless it exists.
    pub async fn get_or_auto_create(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(t) = self.topics.get(name) {
            return Ok(t);
        }
        if !self.topics.defaults().auto_create {
            return Err(TopicError::Unknown);
        }
        let partitions = self.topics.defaults().default_partitions;
        match self.create_topic(name, partitions, -1, &[]).await {
            Ok(()) | Err(TopicError::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        self.topics.get(name).ok_or(TopicError::Unknown)
    }

    /// Replicate a group's accepted offset commit through the metadata group; returns once
    /// it is applied on this node.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), String> {
        let cmd = MetaCommand::CommitOffsets {
            group: group.to_owned(),
            offsets: offsets
                .into_iter()
                .map(|(tp, o)| ReplicatedOffset {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                })
                .collect(),
        };
        self.commit(cmd).await.map_err(|(_, msg)| msg)
    }

    /// Delete a topic through the metadata group.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let topic = self.topics.get(name).ok_or(TopicError::Unknown)?;
        let cmd = MetaCommand::DeleteTopic {
            name: name.to_owned(),
            id: topic.id.to_string(),
        };
        self.commit(cmd)
            .await
            .map_err(|(_, msg)| TopicError::Storage(msg))
    }

    fn place(&self, name: &str, partitions: i32, rf: usize) -> Vec<Vec<i32>> {
        let ids: Vec<i32> = self.config.nodes.iter().map(|n| n.id).collect();
        place(&ids, name, partitions, rf)
    }

    /// Commit a command: locally when this node leads the metadata group, else forwarded to
    /// the leader. `Err((kafka code, message))`.
    async fn commit(&self, cmd: MetaCommand) -> Result<(), (i16, String)> {
        let deadline = tokio::time::Instant::now() + META_TIMEOUT;
        loop {
            let l = self.meta.leadership();
            let attempt = match l.leader {
                Some(leader) if leader == raft_id(self.node_id) => {
                    self.commit_local(cmd.clone()).await
                }
                Some(leader) => self.forward(leader, &cmd).await,
                None => Err((
                    crate::handlers::code::NOT_CONTROLLER,
                    "no leader yet".into(),
                )),
            };
            match attempt {
                Err((code, _))
                    if code == crate::handlers::code::NOT_CONTROLLER
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward(&self, leader: NodeId, cmd: &MetaCommand) -> Result<(), (i16, String)> {
        let payload = Bytes::from(serde_json::to_vec(cmd).map_err(|e| (42, e.to_string()))?);
        match self.net.request(leader, payload, META_TIMEOUT).await {
            Ok(reply) => match serde_json::from_slice::<MetaReply>(&reply) {
                Ok(MetaReply { error: None }) => Ok(()),
                Ok(MetaReply { error: Some(e) }) => Err(e),
                Err(e) => Err((crate::handlers::code::REQUEST_TIMED_OUT, e.to_string())),
            },
            Err(e) => Err((crate::handlers::code::NOT_CONTROLLER, e.to_string())),
        }
    }

    /// Propose on this node (it must lead the metadata group) and wait until applied here.
    async fn commit_local(&self, cmd: MetaCommand) -> Result<(), (i16, String)> {
        let not_leader = || {
            (
                crate::handlers::code::NOT_CONTROLLER,
                "not the metadata leader".to_owned(),
            )
        };
        // A create for a name that exists is refused here, on the leader, after every earlier
        // command applied (the leader applies before it answers).
        if let MetaCommand::CreateTopic { name, .. } = &cmd {
            if self.topics.get(name).is_some() {
                return Err((36, "topic already exists".into()));
            }
        }
        let value = serde_json::to_vec(&cmd).map_err(|e| (42, e.to_string()))?;
        let proposed = self
            .meta
            .with_core(move |core| {
                if core.role() != Role::Leader {
                    return None;
                }
                let mut batch: BytesMut = encode_batch(
                    &[Record {
                        value: Some(value),
                        ..Record::default()
                    }],
                    ProducerInfo::default(),
                );
                let end = core
                    .log()
                    .end_offset(crate::raft::RaftLog::last_index(core.log()))?;
                batch::set_base_offset(&mut batch, end);
                let term = core.term();
                core.propose(batch.freeze()).ok().map(|i| (i, term))
            })
            .await
            .flatten();
        let Some((index, term)) = proposed else {
            return Err(not_leader());
        };
        self.meta
            .wait_committed(index, term, META_TIMEOUT)
            .await
            .map_err(|e| (crate::handlers::code::REQUEST_TIMED_OUT, e.to_string()))?;
        let mut applied = self.applied.clone();
        tokio::time::timeout(META_TIMEOUT, applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| {
                (
                    crate::handlers::code::REQUEST_TIMED_OUT,
                    "not applied in time".to_owned(),
                )
            })?
            .map_err(|_| {
                (
                    crate::handlers::code::REQUEST_TIMED_OUT,
                    "applier stopped".to_owned(),
                )
            })?;
        Ok(())
    }

    /// Every node, as Kafka clients reach them.
    pub fn brokers(&self) -> Vec<(i32, String, u16)> {
        self.config
            .nodes
            .iter()
            .filter_map(|n| {
                let (host, port) = n.kafka_host_port()?;
                Some((n.id, host, port))
            })
            .collect()
    }
}

/// Replica sets for a new topic: partition `p` takes `rf` consecutive nodes of the sorted id
/// list starting at `start + p`, where `start` comes from the name, so partitions (and their
/// first replicas) spread over the nodes.
fn place(ids: &[i32], name: &str, partitions: i32, rf: usize) -> Vec<Vec<i32>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    if ids.is_empty() {
        return Vec::new();
    }
    let n = ids.len();
    let rf = rf.min(n);
    let start = usize::try_from(crc32c::crc32c(name.as_bytes())).unwrap_or(0) % n;
    (0..usize::try_from(partitions).unwrap_or(0))
        .map(|p| (0..rf).map(|k| ids[(start + p + k) % n]).collect())
        .collect()
}

fn raft_config(
    cc: &ClusterConfig,
    node: i32,
    voters: Vec<NodeId>,
    seed: u64,
) -> crate::raft::Config {
    let mut c = crate::raft::Config::new(raft_id(node), voters);
    c.election_tick = cc.election_ticks;
    c.heartbeat_tick = cc.heartbeat_ticks;
    c.seed = seed ^ raft_id(node).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_nanos();
    c
}

/// Election jitter must differ between nodes and restarts; determinism matters only in the
/// simulator, which builds its own configs.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0))
        .unwrap_or(0)
}

/// Applies committed metadata commands in order, then publishes the applied index.
async fn run_applier(
    cluster: Weak<Cluster>,
    mut rx: mpsc::UnboundedReceiver<(Index, Option<MetaCommand>)>,
    applied: watch::Sender<Index>,
) {
    while let Some((index, cmd)) = rx.recv().await {
        let Some(c) = cluster.upgrade() else { return };
        if let Some(cmd) = cmd {
            let what = format!("{cmd:?}");
            let result = tokio::task::block_in_place(|| c.apply(cmd));
            if let Err(e) = result {
                // Applying is deterministic: every node hits the same error; go on.
                tracing::error!("metadata command {index} not applied ({what}): {e}");
            }
        }
        applied.send_replace(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_distinct_replicas() {
        let a = place(&[3, 1, 2], "t", 6, 3);
        assert_eq!(a.len(), 6);
        for r in &a {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "{r:?}");
        }
        // Every node is first replica of two of six partitions.
        for id in 1..=3 {
            assert_eq!(a.iter().filter(|r| r[0] == id).count(), 2);
        }
        assert_eq!(
            place(&[1, 2, 3], "t", 2, 5)[0].len(),
            3,
            "rf is capped at the node count"
        );
        assert_eq!(place(&[1, 2, 3], "t", 4, 1).len(), 4);
        assert!(place(&[], "t", 4, 1).is_empty());
    }

    #[test]
    fn commands_round_trip_through_a_metadata_batch() {
        let cmd = MetaCommand::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::new_v4().to_string(),
            config: crate::topics::TopicConfig::default_for_tests(),
            replicas: vec![vec![1, 2, 3]],
        };
        let batch = encode_batch(
            &[Record {
                value: Some(serde_json::to_vec(&cmd).unwrap()),
                ..Record::default()
            }],
            ProducerInfo::default(),
        );
        assert_eq!(decode_command(&batch), Some(cmd));
        assert_eq!(decode_command(&[]), None, "a no-op carries no command");
        assert_eq!(decode_command(b"garbage"), None);
        let junk = encode_batch(
            &[Record {
                value: Some(b"{\"op\":\"nope\"}".to_vec()),
                ..Record::default()
            }],
            ProducerInfo::default(),
        );
        assert_eq!(decode_command(&junk), None);
    }
}
