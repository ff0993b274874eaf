//! The embedded processor in cluster mode: every configured pipeline runs on exactly one node
//! at a time — the leader of its journal topic `__runnel_journal.<pipeline>` (one partition,
//! replicated) — and keeps its outputs exactly-once when that node dies.
//!
//! - **Placement.** Each node runs one task per pipeline ([`spawn`]) that waits until its
//!   replica of the journal leads at some term `T` with an entry of `T` committed (so the high
//!   watermark covers every journal entry a former leader committed), then runs the driver
//!   until leadership at `T` is lost (checked between steps) or a journal append fails.
//! - **Journal.** Read from the local replica up to the high watermark; appended only through
//!   [`Replica::propose_in_term`] at `T` and awaited until committed. Raft fences a deposed
//!   driver: its entry is refused, never commits, or — if the new leader has it — is committed
//!   before the new driver reads the journal.
//! - **Inputs and outputs** go over the Kafka protocol to the cluster itself ([`KafkaLog`]),
//!   so they may live on partitions this node holds no replica of. Outputs are idempotent
//!   batches of a producer id reserved for the pipeline (`crate::producer_ids`), epoch 0,
//!   sequence = `runnel.seq`: a deposed driver still writing the same records is answered
//!   "duplicate" by the partition's producer table, a misaligned batch is refused, and the
//!   argument of `processor/EXACTLY-ONCE.md` is otherwise unchanged.
//! - **Checkpoints** are written to the local sled store and, at most every
//!   `snapshot_interval_ms`, also whole to the replicated topic
//!   `__runnel_checkpoint.<pipeline>` (`crate::snapshot`, uploaded off the step loop). A node
//!   taking the pipeline over first restores the topic's newest complete snapshot if it is
//!   newer than its local checkpoint, then replays the replicated journal from whichever it
//!   has (from step 0 if neither).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use runnel_processor::driver::{journal_topic, Driver, InputLog, LogIoError, OutputLog};
use runnel_processor::state::StateStore;
use runnel_processor::{InputRecord, OutputRecord, PipelineConfig, StreamId};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::cluster::replica::Replica;
use crate::cluster::Cluster;
use crate::codec::batch;
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::kafka_client::{Client, ClientConfig};
use crate::processing::{
    configured_pipelines, driver_config, observe_alerts, open_state_store, read_inputs, read_range,
    to_record, TimedStore, WallClock,
};
use crate::producer_ids::pipeline_producer_id;
use crate::raft::{Role, Term};
use crate::snapshot::{checkpoint_topic, SnapshotTap};
use crate::standalone::KafkaLog;
use crate::topics::TopicError;

/// How long a journal append may wait for its commit before the lifetime ends.
const JOURNAL_COMMIT_WAIT: Duration = Duration::from_secs(10);
/// How often a node that does not run a pipeline checks whether it leads its journal now.
const LEADERSHIP_POLL: Duration = Duration::from_millis(50);
/// Pause after a failed lifetime or a failed journal creation.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The processor's log in cluster mode: the journal through the local replica, everything
/// else through the Kafka protocol.
#[derive(Clone)]
struct ClusterLog {
    kafka: KafkaLog,
    journal: String,
    replica: Replica,
    /// The term this lifetime leads the journal at.
    term: Term,
}

impl ClusterLog {
    fn is_journal(&self, topic: &str) -> bool {
        topic == self.journal
    }

    async fn append_journal(&self, records: &[OutputRecord]) -> Result<Range<i64>, LogIoError> {
        let recs: Vec<Record> = records.iter().map(to_record).collect();
        if recs.is_empty() {
            return Ok(0..0);
        }
        let bytes = encode_batch(&recs, ProducerInfo::default());
        let header = batch::validate(&bytes).map_err(io)?;
        let proposed = self
            .replica
            .propose_in_term(self.term, bytes, header)
            .await
            .map_err(|e| LogIoError(format!("journal append at term {}: {e}", self.term)))?;
        self.replica
            .wait_committed(&proposed, JOURNAL_COMMIT_WAIT)
            .await
            .map_err(|e| LogIoError(format!("journal commit at term {}: {e}", self.term)))?;
        let a = &proposed.appended;
        Ok(a.base_offset..a.last_offset.saturating_add(1))
    }
}

fn io(e: impl std::fmt::Display) -> LogIoError {
    LogIoError(e.to_string())
}

impl InputLog for ClusterLog {
    async fn partitions(&self, topic: &str) -> Result<Option<u32>, LogIoError> {
        if self.is_journal(topic) {
            return Ok(Some(1));
        }
        self.kafka.partitions(topic).await
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogIoError> {
        if self.is_journal(topic) {
            if partition != 0 {
                return Ok((0, 0));
            }
            let o = self.replica.partition.offsets();
            return Ok((o.log_start, o.high_watermark));
        }
        self.kafka.offsets(topic, partition).await
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_records: usize,
    ) -> Result<Vec<InputRecord>, LogIoError> {
        if !self.is_journal(topic) {
            return self.kafka.read(topic, partition, from, max_records).await;
        }
        if partition != 0 {
            return Ok(Vec::new());
        }
        read_inputs(&self.replica.partition, topic, partition, from, max_records)
    }

    async fn wait_for_input(&self, positions: &[(String, u32, i64)], timeout_ms: u64) {
        self.kafka.wait_for_input(positions, timeout_ms).await;
    }
}

impl OutputLog for ClusterLog {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogIoError> {
        if self.is_journal(topic) {
            // Created (replicated) before this lifetime began.
            return Ok(());
        }
        self.kafka.ensure_topic(topic, partitions).await
    }

    async fn append(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> Result<Range<i64>, LogIoError> {
        if self.is_journal(&stream.topic) {
            return self.append_journal(records).await;
        }
        self.kafka.append(stream, records).await
    }

    async fn tail(
        &self,
        stream: &StreamId,
        max_records: usize,
    ) -> Result<Vec<Vec<(String, Vec<u8>)>>, LogIoError> {
        if !self.is_journal(&stream.topic) {
            return self.kafka.tail(stream, max_records).await;
        }
        let part = &self.replica.partition;
        let o = part.offsets();
        let n = i64::try_from(max_records).unwrap_or(i64::MAX);
        let from = o.high_watermark.saturating_sub(n).max(o.log_start);
        let recs = read_range(part, from, max_records)?;
        Ok(recs.into_iter().map(|r| r.headers).collect())
    }
}

/// The replication factor of a journal topic: up to 3.
fn journal_replication(nodes: usize) -> i16 {
    i16::try_from(nodes.clamp(1, 3)).unwrap_or(1)
}

/// The Kafka bootstrap list of the cluster this node belongs to.
fn bootstrap(cluster: &Cluster) -> String {
    cluster
        .config
        .nodes
        .iter()
        .map(|n| n.kafka.clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates the journal topic through the metadata group unless it exists, and returns this
/// node's replica of it (`None`: this node holds none, so never runs the pipeline).
async fn journal_replica(
    cluster: &Cluster,
    broker: &Broker,
    journal: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Option<Replica>> {
    loop {
        let pause = match broker.topics.get(journal) {
            Some(t) => {
                let mine = t
                    .replicas
                    .as_ref()
                    .and_then(|a| a.first())
                    .is_some_and(|r| r.contains(&cluster.node_id));
                if !mine {
                    return Some(None);
                }
                if let Some(r) = cluster.replica(journal, 0) {
                    return Some(Some(r));
                }
                // Applied here, its replica not started yet.
                LEADERSHIP_POLL
            }
            None => {
                let rf = journal_replication(cluster.config.nodes.len());
                match cluster.create_topic(journal, 1, rf, &[]).await {
                    Ok(()) => continue,
                    // Not applied here yet.
                    Err(TopicError::AlreadyExists) => LEADERSHIP_POLL,
                    Err(e) => {
                        tracing::warn!(topic = journal, "cannot create the journal yet: {e}");
                        RETRY_PAUSE
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = crate::net::stopped(shutdown) => return None,
        }
    }
}

/// Creates `topic` (1 partition, replicated like a journal) through the metadata group
/// unless it exists, and waits until this node has applied it; `false` on shutdown.
async fn ensure_replicated_topic(
    cluster: &Cluster,
    broker: &Broker,
    topic: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if broker.topics.get(topic).is_some() {
            return true;
        }
        let rf = journal_replication(cluster.config.nodes.len());
        let pause = match cluster.create_topic(topic, 1, rf, &[]).await {
            Ok(()) => continue,
            // Not applied here yet.
            Err(TopicError::AlreadyExists) => LEADERSHIP_POLL,
            Err(e) => {
                tracing::warn!(topic, "cannot create the topic yet: {e}");
                RETRY_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = crate::net::stopped(shutdown) => return false,
        }
    }
}

/// Replaces the local checkpoint with the checkpoint topic's newest complete snapshot if
/// that is further along the journal. Any failure leaves the local checkpoint as it is (the
/// journal replay from it is correct, only longer).
async fn restore_newer_snapshot(client: &Client, name: &str, store: &mut TimedStore) {
    let topic = checkpoint_topic(name);
    let local = match store.checkpoint_meta() {
        Ok(m) => m.map(|m| m.steps_applied),
        Err(e) => {
            tracing::warn!(pipeline = %name, "local checkpoint unreadable ({e}); a snapshot replaces it");
            None
        }
    };
    let snapshot = match crate::snapshot::read_newest(client, &topic, name).await {
        Ok(Some(s)) if local.is_none_or(|l| s.position > l) => s,
        Ok(s) => {
            tracing::debug!(pipeline = %name, ?local, remote = ?s.map(|s| s.position), "the local checkpoint is the newest");
            return;
        }
        Err(e) => {
            tracing::warn!(pipeline = %name, "cannot read the checkpoint topic ({e}); recovering from the local checkpoint");
            return;
        }
    };
    let position = snapshot.position;
    let bytes: usize = snapshot
        .entries
        .iter()
        .map(|(k, v)| k.len().saturating_add(v.len()))
        .fold(0, usize::saturating_add);
    match store.replace_all(snapshot.entries) {
        Ok(()) => tracing::info!(
            pipeline = %name,
            position,
            ?local,
            "restored snapshot at journal {position} from checkpoint topic, {bytes} bytes"
        ),
        Err(e) => tracing::warn!(pipeline = %name, position, "cannot restore the snapshot: {e}"),
    }
}

/// Waits until `replica` leads with an entry of its own term committed; that term, or `None`
/// on shutdown.
async fn settled_leadership(
    replica: &Replica,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Term> {
    loop {
        if *shutdown.borrow() {
            return None;
        }
        if let Some(term) = replica.settled_leader_term().await {
            return Some(term);
        }
        tokio::select! {
            _ = tokio::time::sleep(LEADERSHIP_POLL) => {}
            _ = crate::net::stopped(shutdown) => return None,
        }
    }
}

/// Runs one pipeline whenever this node leads its journal, until `shutdown`.
async fn run_placed(
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    pipeline: PipelineConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = pipeline.name.clone();
    let journal = journal_topic(&name);
    let replica = match journal_replica(&cluster, &broker, &journal, &mut shutdown).await {
        None => return,
        Some(None) => {
            tracing::info!(pipeline = %name, "this node holds no replica of the pipeline's journal; it runs elsewhere");
            return;
        }
        Some(Some(r)) => r,
    };
    let checkpoints = checkpoint_topic(&name);
    if !ensure_replicated_topic(&cluster, &broker, &checkpoints, &mut shutdown).await {
        return;
    }
    let Some(store) = open_state_store(&broker, &name) else {
        return;
    };
    let interval = Duration::from_millis(broker.config.processor.snapshot_interval_ms);
    let (tap, dumps) = SnapshotTap::new(interval);
    let mut store = store.with_snapshots(tap);
    // Its own client: an upload must not hold up the pipeline's Kafka requests.
    let uploads = Arc::new(Client::new(ClientConfig::new(&bootstrap(&cluster))));
    tokio::spawn(crate::snapshot::uploader(
        uploads,
        checkpoints,
        dumps,
        shutdown.clone(),
    ));
    let config = driver_config(&broker.config.processor);
    let client = Arc::new(Client::new(ClientConfig::new(&bootstrap(&cluster))));
    let on_append: crate::standalone::OnAppend = {
        let broker = broker.clone();
        Arc::new(move |records: &[OutputRecord]| {
            observe_alerts(&broker.metrics, &broker.pipelines, records);
        })
    };
    let pid = pipeline_producer_id(&name);
    broker.pipelines.register(&pipeline);
    loop {
        let Some(term) = settled_leadership(&replica, &mut shutdown).await else {
            return;
        };
        tracing::info!(pipeline = %name, term, "leading the journal: running the pipeline here");
        restore_newer_snapshot(&client, &name, &mut store).await;
        let mut inbox = broker.queries.inbox(&name);
        let log = ClusterLog {
            kafka: KafkaLog::new(client.clone())
                .idempotent(pid)
                .reporting_to(on_append.clone()),
            journal: journal.clone(),
            replica: replica.clone(),
            term,
        };
        let stop = shutdown.clone();
        let deposed = || {
            let l = replica.group.leadership();
            l.role != Role::Leader || l.term != term
        };
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
            tracing::info!(pipeline = %name, term, steps = d.pipeline().steps_applied(), "pipeline recovered");
            d.run_observed(
                || *stop.borrow() || deposed(),
                |d| {
                    broker.pipelines.observe(d.pipeline(), d.checkpoint_stats());
                    inbox.answer(d.pipeline());
                },
            )
            .await
        };
        let outcome = outcome.await;
        drop(inbox);
        match outcome {
            Ok(()) if *shutdown.borrow() => {
                broker.pipelines.stopped(&name, None);
                return;
            }
            Ok(()) => {
                tracing::info!(pipeline = %name, term, "no longer leading the journal: pipeline stopped here");
                broker.pipelines.stopped(
                    &name,
                    Some(format!("runs on the journal's leader (lost term {term})")),
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(pipeline = %name, term, "pipeline stopped, recovering: {e}");
                broker.pipelines.stopped(&name, Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
            _ = crate::net::stopped(&mut shutdown) => return,
        }
    }
}

/// Starts the placement task of every configured pipeline, each on a blocking thread driven
/// by the current runtime (sled checkpoints and local journal reads block).
pub fn spawn(
    broker: &Arc<Broker>,
    cluster: &Arc<Cluster>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    if !broker.config.processor.enabled {
        return Vec::new();
    }
    let handle = tokio::runtime::Handle::current();
    configured_pipelines(&broker.config.processor)
        .into_iter()
        .map(|p| {
            let (b, c, rx, h) = (
                broker.clone(),
                cluster.clone(),
                shutdown.clone(),
                handle.clone(),
            );
            tokio::task::spawn_blocking(move || h.block_on(run_placed(b, c, p, rx)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A one-node cluster's replica: `propose_in_term` appends at the term it leads at and
    /// refuses any other term, before and after a proposal went through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn propose_in_term_appends_only_at_the_leaders_term() {
        let dir = tempfile::tempdir().unwrap();
        let kafka = free_port();
        let config = crate::config::Config {
            data_dir: dir.path().to_owned(),
            kafka_addr: format!("127.0.0.1:{kafka}").parse().unwrap(),
            grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            node_id: 1,
            processor: crate::config::ProcessorConfig {
                enabled: false,
                ..crate::config::ProcessorConfig::default()
            },
            cluster: crate::config::ClusterConfig {
                nodes: vec![crate::config::ClusterNode {
                    id: 1,
                    kafka: format!("127.0.0.1:{kafka}"),
                    raft: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
                    grpc: None,
                }],
                tick_ms: 10,
                ..crate::config::ClusterConfig::default()
            },
            ..crate::config::Config::default()
        };
        let running = crate::server::start(config).await.unwrap();
        let cluster = running.broker.cluster().unwrap().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.create_topic("j", 1, 1, &[]).await {
                Ok(()) => break,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let replica = cluster.replica("j", 0).unwrap();
        let (_keep, mut stop) = watch::channel(false);
        let term = settled_leadership(&replica, &mut stop).await.unwrap();
        let entry = || {
            let r = Record {
                value: Some(b"step".to_vec()),
                timestamp: 1,
                ..Record::default()
            };
            let b = encode_batch(&[r], ProducerInfo::default());
            let h = batch::validate(&b).unwrap();
            (b, h)
        };
        let refused = |r: Result<_, crate::cluster::replica::ReplicaError>| {
            matches!(r, Err(crate::cluster::replica::ReplicaError::NotLeader))
        };
        for other in [term + 1, term - 1] {
            let (b, h) = entry();
            assert!(
                refused(replica.propose_in_term(other, b, h).await),
                "{other}"
            );
        }
        let end = replica.partition.offsets().log_end;
        let (b, h) = entry();
        let p = replica.propose_in_term(term, b, h).await.unwrap();
        assert_eq!(p.appended.base_offset, end);
        replica
            .wait_committed(&p, Duration::from_secs(10))
            .await
            .unwrap();
        let (b, h) = entry();
        assert!(refused(replica.propose_in_term(term + 1, b, h).await));
        assert_eq!(replica.partition.offsets().high_watermark, end + 1);
        running.shutdown().await;
    }

    #[test]
    fn journals_are_replicated_up_to_three_times() {
        assert_eq!(journal_replication(1), 1);
        assert_eq!(journal_replication(2), 2);
        assert_eq!(journal_replication(3), 3);
        assert_eq!(journal_replication(7), 3);
    }
}
