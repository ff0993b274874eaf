//! The `Ingest` service: turns published records into uncompressed v2 batches (the same bytes a
//! Kafka producer could have sent) and appends them through `Partition::append`.
//!
//! Everything about a request is checked before anything is appended, so a refused batch
//! leaves no trace. Records without an explicit partition are placed like Kafka's default
//! partitioner: murmur2 of the key, and null keys round-robin per request (all null-key
//! records of one request share a partition, like Kafka's sticky partitioner's batches).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::BoxFuture;
use futures_util::Stream;
use runnel_proto::v1::{self, ingest_server::Ingest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{record_from_proto, record_from_sensor};
use super::error::{GrpcError, LeaderHint};
use super::partitioner::partition_for_key;
use crate::broker::Broker;
use crate::cluster::replica::{Proposed, Replica, ReplicaError, SettleError};
use crate::cluster::Cluster;
use crate::codec::batch::{self, HEADER_LEN};
use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::partition::Partition;
use crate::raft::driver::CommitError;

/// Batches a stream may have appended but not yet acknowledged (waiting for their fsync).
/// Bounded so a client that stops reading acknowledgements stops being read from.
const STREAM_PIPELINE: usize = 32;

#[derive(Clone)]
pub struct IngestService {
    broker: Arc<Broker>,
    /// Next partition for null-key records, shared by every call.
    round_robin: Arc<AtomicU32>,
    /// Publish streams stop taking batches when this turns true (broker shutdown).
    shutdown: watch::Receiver<bool>,
}

impl IngestService {
    pub fn new(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            broker,
            round_robin: Arc::new(AtomicU32::new(0)),
            shutdown,
        }
    }
}

/// A batch that is appended (or proposed) and waits before it is acknowledged.
struct Appended {
    batch_id: u64,
    positions: Vec<v1::RecordPosition>,
    /// (partition, end offset) pairs to wait for when acks = all; empty otherwise.
    durable: Vec<(Arc<Partition>, i64)>,
    /// Cluster mode: every chunk's proposal to its partition's Raft group, in request order.
    /// Positions are filled in when they settle.
    proposals: Vec<Proposal>,
}

/// One chunk proposed to a replicated partition's leader.
struct Proposal {
    replica: Replica,
    /// Request indexes of its records, in order.
    indexes: Vec<usize>,
    proposed: BoxFuture<'static, Result<Proposed, ReplicaError>>,
    /// (records, bytes), counted once it is acknowledged.
    counts: (u64, u64),
    /// `Some` for acks = all: answer only once committed.
    commit_wait: Option<Duration>,
}

impl IngestService {
    /// Validate and append one batch. Nothing is appended unless every record is acceptable.
    /// In cluster mode the chunks are proposed to their partitions' Raft groups instead (the
    /// path Kafka Produce takes, `Replica::propose`), after checking that this node leads
    /// every partition the batch touches.
    fn append(
        &self,
        topic_name: &str,
        partition: Option<i32>,
        records: Vec<Record>,
        acks: i32,
        batch_id: u64,
    ) -> Result<Appended, GrpcError> {
        let topic = self
            .broker
            .topics
            .get(topic_name)
            .ok_or_else(|| GrpcError::UnknownTopic(topic_name.to_owned()))?;
        if records.is_empty() {
            return Err(GrpcError::InvalidArgument(
                "a publish needs at least one record".into(),
            ));
        }
        let acks = v1::Acks::try_from(acks)
            .map_err(|_| GrpcError::InvalidArgument(format!("unknown acks value {acks}")))?;
        let count = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        let unknown = |p: i32| GrpcError::UnknownPartition {
            topic: topic_name.to_owned(),
            partition: p,
            partitions: topic.partitions.len(),
        };
        let sticky = self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1);
        // Which partition (index into topic.partitions) each record goes to.
        let mut groups: BTreeMap<usize, Vec<(usize, Record)>> = BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let slot = match partition {
                Some(p) => usize::try_from(p)
                    .ok()
                    .filter(|s| *s < topic.partitions.len())
                    .ok_or_else(|| unknown(p))?,
                None => {
                    let p = match &r.key {
                        Some(k) => partition_for_key(k, count),
                        None => sticky,
                    };
                    usize::try_from(p).map_err(|_| unknown(-1))?
                }
            };
            groups.entry(slot).or_default().push((i, r));
        }
        let max = topic.config.max_message_bytes;
        let cluster = self.broker.cluster();
        // Encode everything first: a record too large for the topic refuses the whole request,
        // and so does a partition this node does not lead.
        let mut plan: Vec<(Arc<Partition>, Option<Replica>, Vec<Chunk>)> = Vec::new();
        for (slot, recs) in groups {
            let part = topic
                .partitions
                .get(slot)
                .cloned()
                .ok_or_else(|| unknown(-1))?;
            if part.is_failed() {
                return Err(GrpcError::StorageFailed {
                    topic: topic_name.to_owned(),
                    partition: part.index,
                });
            }
            let replica = cluster.and_then(|c| c.replica(topic_name, part.index));
            if let (Some(c), Some(r)) = (cluster, &replica) {
                if !r.is_leader() {
                    return Err(GrpcError::NotLeader {
                        topic: topic_name.to_owned(),
                        partition: part.index,
                        why: "this node is not the partition's leader".into(),
                        leader: leader_hint(c, topic_name, part.index),
                    });
                }
            }
            plan.push((part, replica, encode_chunks(recs, max, topic_name)?));
        }
        let total: usize = plan
            .iter()
            .flat_map(|(_, _, c)| c.iter().map(|(i, _)| i.len()))
            .sum();
        let mut positions = vec![v1::RecordPosition::default(); total];
        let mut durable = Vec::new();
        let mut proposals = Vec::new();
        let commit_wait = (acks != v1::Acks::Leader).then(|| self.wait_limit());
        for (part, replica, chunks) in plan {
            let mut end = 0;
            for (indexes, bytes) in chunks {
                let header = batch::validate(&bytes)
                    .map_err(|e| GrpcError::Storage(format!("built an invalid batch: {e}")))?;
                let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                let counts = (u64::try_from(header.record_count).unwrap_or(0), size);
                if let Some(replica) = &replica {
                    // Queued now, so chunks (and pipelined stream batches) keep request order.
                    let proposed = Box::pin(replica.propose(bytes, header));
                    proposals.push(Proposal {
                        replica: replica.clone(),
                        indexes,
                        proposed,
                        counts,
                        commit_wait,
                    });
                    continue;
                }
                let appended = part
                    .append(bytes, &header)
                    .map_err(|e| GrpcError::from_append(topic_name, part.index, e))?;
                self.broker
                    .metrics
                    .produced(topic_name, part.index, counts.0, counts.1);
                fill_positions(&mut positions, part.index, appended.base_offset, indexes);
                end = appended.last_offset + 1;
            }
            if replica.is_none() && acks != v1::Acks::Leader {
                durable.push((part, end));
            }
        }
        Ok(Appended {
            batch_id,
            positions,
            durable,
            proposals,
        })
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_millis(self.broker.config.max_produce_wait_ms.max(1))
    }
}

fn fill_positions(
    positions: &mut [v1::RecordPosition],
    partition: i32,
    base_offset: i64,
    indexes: Vec<usize>,
) {
    for (offset, i) in (base_offset..).zip(indexes) {
        if let Some(pos) = positions.get_mut(i) {
            *pos = v1::RecordPosition { partition, offset };
        }
    }
}

/// The partition's leader as this node knows it (not this node), with its gRPC address when
/// `[cluster] nodes` gives one.
fn leader_hint(cluster: &Cluster, topic: &str, partition: i32) -> Option<LeaderHint> {
    let (leader, _epoch) = cluster.leader_of(topic, partition)?;
    if leader == cluster.node_id {
        return None;
    }
    Some(LeaderHint {
        node_id: leader,
        grpc: cluster.config.node(leader).and_then(|n| n.grpc.clone()),
    })
}

/// A replicated chunk's failure as the client sees it, and whether it is definite (nothing of
/// the chunk is stored).
fn settle_error(
    cluster: Option<&Arc<Cluster>>,
    replica: &Replica,
    e: SettleError,
) -> (GrpcError, bool) {
    let topic = replica.partition.topic.to_string();
    let partition = replica.partition.index;
    let hint = || cluster.and_then(|c| leader_hint(c, &topic, partition));
    match e {
        SettleError::Refused(ReplicaError::NotLeader) => (
            GrpcError::NotLeader {
                why: "this node stopped leading the partition".into(),
                leader: hint(),
                topic,
                partition,
            },
            true,
        ),
        SettleError::NotStored => (
            GrpcError::NotLeader {
                why: "leadership changed before the batch was committed".into(),
                leader: hint(),
                topic,
                partition,
            },
            true,
        ),
        SettleError::Refused(ReplicaError::Storage(m)) => {
            tracing::error!(%topic, partition, "grpc proposal failed: {m}");
            (GrpcError::StorageFailed { topic, partition }, true)
        }
        // gRPC batches are never idempotent (producer id -1): no sequence errors.
        SettleError::Refused(ReplicaError::Sequence(e)) => (
            GrpcError::Storage(format!("unexpected sequence error: {e}")),
            true,
        ),
        // The group task ended without answering: the proposal may have been made.
        SettleError::Refused(ReplicaError::Stopped) => (
            GrpcError::OutcomeUnknown {
                topic,
                partition,
                why: "the replica stopped".into(),
                timed_out: false,
            },
            false,
        ),
        SettleError::Unknown(c) => (
            GrpcError::OutcomeUnknown {
                topic,
                partition,
                why: c.to_string(),
                timed_out: matches!(c, CommitError::TimedOut),
            },
            false,
        ),
    }
}

/// Wait until every partition the batch touched is fsynced past it (standalone) or every
/// proposal settled (cluster mode: committed for acks = all), then answer. A request whose
/// proposals all failed definitely stored nothing and says so; one where some were stored or
/// any outcome is unknown answers with an unknown outcome.
async fn acknowledge(
    mut a: Appended,
    limit: Duration,
    broker: &Broker,
) -> Result<v1::PublishResponse, GrpcError> {
    for (part, end) in &a.durable {
        part.wait_durable(*end, limit)
            .await
            .map_err(|e| GrpcError::from_durability(&part.topic, part.index, e))?;
    }
    let mut stored = 0usize;
    let mut failure: Option<(GrpcError, bool)> = None;
    let mut all_definite = true;
    for p in std::mem::take(&mut a.proposals) {
        let Proposal {
            replica,
            indexes,
            proposed,
            counts,
            commit_wait,
        } = p;
        let part = &replica.partition;
        match replica.settle(proposed, commit_wait).await {
            Ok(done) => {
                stored += 1;
                broker
                    .metrics
                    .produced(&part.topic, part.index, counts.0, counts.1);
                fill_positions(
                    &mut a.positions,
                    part.index,
                    done.appended.base_offset,
                    indexes,
                );
            }
            Err(e) => {
                let (err, definite) = settle_error(broker.cluster(), &replica, e);
                all_definite &= definite;
                failure.get_or_insert((err, definite));
            }
        }
    }
    if let Some((err, _)) = failure {
        if all_definite && stored == 0 {
            return Err(err);
        }
        let (topic, partition, timed_out) = match &err {
            GrpcError::OutcomeUnknown {
                topic,
                partition,
                timed_out,
                ..
            } => (topic.clone(), *partition, *timed_out),
            GrpcError::NotLeader {
                topic, partition, ..
            } => (topic.clone(), *partition, false),
            _ => (String::new(), -1, false),
        };
        return Err(GrpcError::OutcomeUnknown {
            topic,
            partition,
            why: format!("part of the batch failed ({err})"),
            timed_out,
        });
    }
    Ok(v1::PublishResponse {
        batch_id: a.batch_id,
        positions: a.positions,
    })
}

/// An encoded batch and the request indexes of its records, in order.
type Chunk = (Vec<usize>, BytesMut);

/// Largest size one record can take in a batch, beyond its key, value and headers' bytes:
/// record length, attributes, timestamp and offset deltas, key/value/header-count varints.
const RECORD_OVERHEAD: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;

fn record_size_bound(r: &Record) -> usize {
    let field = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| 10 + k.len() + field(v))
        .fold(0, usize::saturating_add);
    RECORD_OVERHEAD
        .saturating_add(field(&r.key))
        .saturating_add(field(&r.value))
        .saturating_add(headers)
}

/// Split one partition's records into batches of at most `max` bytes (the topic's
/// max.message.bytes, as Kafka clients must respect). A single record that cannot fit refuses
/// the request.
fn encode_chunks(
    recs: Vec<(usize, Record)>,
    max: usize,
    topic: &str,
) -> Result<Vec<Chunk>, GrpcError> {
    let mut out = Vec::new();
    let mut indexes = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let mut size = HEADER_LEN;
    for (i, r) in recs {
        let bound = record_size_bound(&r);
        if HEADER_LEN.saturating_add(bound) > max {
            // The bound may overestimate: check the exact size before refusing.
            let exact = encode_batch(std::slice::from_ref(&r), ProducerInfo::default()).len();
            if exact > max {
                return Err(GrpcError::InvalidArgument(format!(
                    "record {i} takes {exact} bytes as a record batch; topic {topic:?} accepts at most {max} (max.message.bytes)"
                )));
            }
        }
        if !chunk.is_empty() && size.saturating_add(bound) > max {
            out.push((
                std::mem::take(&mut indexes),
                encode_batch(&chunk, ProducerInfo::default()),
            ));
            chunk.clear();
            size = HEADER_LEN;
        }
        size = size.saturating_add(bound);
        indexes.push(i);
        chunk.push(r);
    }
    if !chunk.is_empty() {
        out.push((indexes, encode_batch(&chunk, ProducerInfo::default())));
    }
    Ok(out)
}

fn convert_records(records: Vec<v1::Record>) -> Result<Vec<Record>, GrpcError> {
    let now = crate::processing::unix_now_ms();
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| record_from_proto(i, r, now))
        .collect()
}

type AckStream = Pin<Box<dyn Stream<Item = Result<v1::PublishResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish(
        &self,
        request: Request<v1::PublishRequest>,
    ) -> Result<Response<v1::PublishResponse>, Status> {
        let req = request.into_inner();
        let records = convert_records(req.records)?;
        let appended = self.append(&req.topic, req.partition, records, req.acks, req.batch_id)?;
        Ok(Response::new(
            acknowledge(appended, self.wait_limit(), &self.broker).await?,
        ))
    }

    type PublishStreamStream = AckStream;

    async fn publish_stream(
        &self,
        request: Request<Streaming<v1::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let mut incoming = request.into_inner();
        // Two stages so fsync waits overlap with later appends (group commit across batches):
        // appends happen in request order, acknowledgements leave in the same order.
        let (pending_tx, mut pending_rx) =
            mpsc::channel::<Result<Appended, Status>>(STREAM_PIPELINE);
        let (ack_tx, ack_rx) = mpsc::channel::<Result<v1::PublishResponse, Status>>(4);
        let this = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                // On shutdown, stop taking batches: those already appended are still
                // acknowledged, then the stream ends with UNAVAILABLE.
                let req = tokio::select! {
                    r = incoming.next() => r,
                    _ = shutdown.wait_for(|s| *s) => Some(Err(GrpcError::ShuttingDown.into())),
                };
                let Some(req) = req else { return };
                let outcome = match req {
                    Err(status) => Err(status),
                    Ok(req) => convert_records(req.records)
                        .and_then(|records| {
                            this.append(&req.topic, req.partition, records, req.acks, req.batch_id)
                        })
                        .map_err(Status::from),
                };
                let failed = outcome.is_err();
                if pending_tx.send(outcome).await.is_err() || failed {
                    return;
                }
            }
        });
        let limit = self.wait_limit();
        let broker = self.broker.clone();
        tokio::spawn(async move {
            while let Some(next) = pending_rx.recv().await {
                let ack = match next {
                    Ok(a) => acknowledge(a, limit, &broker).await.map_err(Status::from),
                    Err(s) => Err(s),
                };
                let failed = ack.is_err();
                if ack_tx.send(ack).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(ack_rx))))
    }

    async fn publish_sensor_readings(
        &self,
        request: Request<v1::PublishSensorReadingsRequest>,
    ) -> Result<Response<v1::PublishResponse>, Status> {
        let req = request.into_inner();
        let records = req
            .readings
            .iter()
            .enumerate()
            .map(|(i, r)| record_from_sensor(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let appended = self.append(&req.topic, None, records, req.acks, req.batch_id)?;
        Ok(Response::new(
            acknowledge(appended, self.wait_limit(), &self.broker).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value_len: usize) -> Record {
        Record {
            key: Some(b"k".to_vec()),
            value: Some(vec![7; value_len]),
            headers: vec![("h".into(), None)],
            timestamp: 1,
        }
    }

    #[test]
    fn size_bound_never_underestimates() {
        for n in [0, 1, 100, 10_000] {
            let r = rec(n);
            let exact = encode_batch(std::slice::from_ref(&r), ProducerInfo::default()).len();
            assert!(HEADER_LEN + record_size_bound(&r) >= exact, "{n}");
        }
    }

    #[test]
    fn chunks_respect_the_limit_and_keep_order() {
        let recs: Vec<_> = (0..50).map(|i| (i, rec(100))).collect();
        let chunks = encode_chunks(recs, 1000, "t").unwrap();
        assert!(chunks.len() > 1);
        let order: Vec<usize> = chunks.iter().flat_map(|(i, _)| i.clone()).collect();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
        for (_, b) in &chunks {
            assert!(b.len() <= 1000);
            batch::validate(b).unwrap();
        }
    }

    #[test]
    fn a_record_too_large_for_the_topic_is_refused() {
        let err = encode_chunks(vec![(0, rec(2000))], 1000, "t").unwrap_err();
        assert!(err.to_string().contains("max.message.bytes"), "{err}");
    }
}
