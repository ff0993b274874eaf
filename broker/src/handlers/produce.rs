//! Produce (key 0): validate batches, append them, and answer per acks.
//!
//! acks=0: no response. acks=1: answered after the append. acks=-1 (all): answered only after
//! an fsync covers the batch (group commit), or REQUEST_TIMED_OUT, whose outcome is unknown to
//! the client as in Kafka. Versions 0-2 (message format v0/v1) are refused with
//! UNSUPPORTED_VERSION: only v2 record batches are stored.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, encode_body, Reply, RequestContext, RequestError};
use crate::broker::Broker;
use crate::cluster::replica::{Proposed, Replica, ReplicaError, SettleError};
use crate::cluster::Cluster;
use crate::codec::batch;
use crate::metrics::Metrics;
use crate::partition::{AppendError, DurabilityError, Partition};
use crate::topics::{Topic, TopicError};
use futures_util::future::BoxFuture;
use kafka_protocol::messages::TopicName;
use std::sync::Arc;

const INVALID_RECORD: i16 = 87;

/// Appends happen now, in request order; the returned reply waits for fsync when acks=-1, so a
/// connection can pipeline produce requests and one fsync covers them all (group commit).
pub fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<Reply, RequestError> {
    if let Some(cluster) = broker.cluster() {
        return handle_replicated(broker, cluster.clone(), ctx, req);
    }
    let acks = req.acks;
    let (refuse_all, wait) = refusal_and_wait(broker, &req);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut pending: Vec<Pending> = Vec::new();
    for topic_data in req.topic_data {
        let topic = if refuse_all.is_some() {
            Err(TopicError::Unknown)
        } else {
            broker.topics.get_or_auto_create(&topic_data.name)
        };
        let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
        for pd in topic_data.partition_data {
            let r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1);
            let r = match (&refuse_all, &topic) {
                (Some((code, msg)), _) => with_error(r, *code, msg),
                (None, Err(e)) => with_error(r, e.kafka_code(), &e.to_string()),
                (None, Ok(topic)) => match topic.partitions.iter().find(|p| p.index == pd.index) {
                    None => with_error(r, code::UNKNOWN_TOPIC_OR_PARTITION, "no such partition"),
                    Some(p) => match append(p, pd, topic.config.max_message_bytes, &broker.metrics)
                    {
                        Ok((resp, end)) => {
                            if acks == -1 {
                                pending.push(Pending {
                                    topic: responses.len(),
                                    partition: partition_responses.len(),
                                    part: p.clone(),
                                    end,
                                });
                            }
                            resp
                        }
                        Err((code, msg)) => {
                            tracing::warn!(topic = %p.topic, partition = p.index, client = ?ctx.client_id, "produce refused: {msg}");
                            with_error(r, code, &msg)
                        }
                    },
                },
            };
            partition_responses.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return Ok(Reply::None);
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    if pending.is_empty() {
        return Ok(Reply::Now(encode_body(ctx, &response)?));
    }
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        // Each wait is on its own partition's flush watch; awaiting them in turn takes as long
        // as the slowest one.
        for w in pending {
            if let Err(e) = w.part.wait_durable(w.end, wait).await {
                let r = &mut response.responses[w.topic].partition_responses[w.partition];
                r.error_code = match e {
                    DurabilityError::TimedOut => code::REQUEST_TIMED_OUT,
                    DurabilityError::StorageFailed => code::KAFKA_STORAGE_ERROR,
                };
                r.error_message = Some(StrBytes::from_string(e.to_string()));
            }
        }
        encode_body(&ctx, &response).map(Some)
    })))
}

/// What refuses every partition of a request (transactions, bad acks), and how long its
/// acknowledgement may wait (the client's timeout, capped by `max_produce_wait_ms`).
fn refusal_and_wait(
    broker: &Broker,
    req: &ProduceRequest,
) -> (Option<(i16, &'static str)>, Duration) {
    let refuse_all = if req.transactional_id.is_some() {
        Some((
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactions are not supported by Runnel",
        ))
    } else if !matches!(req.acks, -1..=1) {
        Some((code::INVALID_REQUIRED_ACKS, "acks must be -1, 0 or 1"))
    } else {
        None
    };
    let wait = Duration::from_millis(
        u64::try_from(req.timeout_ms)
            .unwrap_or(0)
            .clamp(1, broker.config.max_produce_wait_ms.max(1)),
    );
    (refuse_all, wait)
}

/// A partition response that must wait for `end` to be durable.
struct Pending {
    topic: usize,
    partition: usize,
    part: Arc<Partition>,
    end: i64,
}

fn with_error(r: PartitionProduceResponse, code: i16, msg: &str) -> PartitionProduceResponse {
    r.with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(msg.to_owned())))
}

/// Validate and append one partition's records; returns the response and the offset the
/// durability wait must reach.
fn append(
    p: &Partition,
    pd: PartitionProduceData,
    max_batch: usize,
    metrics: &Metrics,
) -> Result<(PartitionProduceResponse, i64), (i16, String)> {
    if p.is_failed() {
        return Err((code::KAFKA_STORAGE_ERROR, "partition storage failed".into()));
    }
    let (records, header) = validate(&pd, max_batch)?;
    let header = &header;
    let info = p
        .append(records.clone(), header) // a reference count, not a copy
        .map_err(|e| match e {
            AppendError::Sequence(e) => (e.kafka_code(), e.to_string()),
            AppendError::Log(e) => (code::KAFKA_STORAGE_ERROR, format!("append failed: {e}")),
            AppendError::Replicated => (code::NOT_LEADER_OR_FOLLOWER, e.to_string()),
        })?;
    if info.duplicate {
        tracing::debug!(topic = %p.topic, partition = p.index, producer = header.producer_id, "duplicate batch answered with its original offset");
    } else {
        metrics.produced(
            &p.topic,
            p.index,
            u64::try_from(header.record_count).unwrap_or(0),
            u64::try_from(records.len()).unwrap_or(u64::MAX),
        );
    }
    let offsets = p.offsets();
    Ok((
        PartitionProduceResponse::default()
            .with_index(pd.index)
            .with_base_offset(info.base_offset)
            .with_log_append_time_ms(-1)
            .with_log_start_offset(offsets.log_start),
        info.last_offset + 1,
    ))
}

/// Check one partition's records: whole valid v2 batches, and exactly one of them (Produce v3+
/// carries one batch per partition, as Kafka requires, which makes an idempotent retry a
/// single unit to recognise).
fn validate(
    pd: &PartitionProduceData,
    max_batch: usize,
) -> Result<(bytes::Bytes, batch::BatchHeader), (i16, String)> {
    let records = pd
        .records
        .clone()
        .ok_or((INVALID_RECORD, "no records".to_owned()))?;
    let headers = batch::validate_produce(&records, max_batch)
        .map_err(|e| (e.kafka_code(), e.to_string()))?;
    let [header] = headers.as_slice() else {
        return Err((
            INVALID_RECORD,
            format!("expected exactly one record batch, got {}", headers.len()),
        ));
    };
    Ok((records, *header))
}

/// One partition of a replicated produce, after the synchronous phase.
enum Slot {
    /// Answered already (refused).
    Done(PartitionProduceResponse),
    /// Proposed to the partition's Raft group (queued in request order).
    Proposed {
        replica: Replica,
        proposed: BoxFuture<'static, Result<Proposed, ReplicaError>>,
        index: i32,
        counts: (u64, u64),
    },
    /// The topic does not exist yet: create it (through the metadata group), then propose.
    Create {
        topic: String,
        pd: PartitionProduceData,
    },
}

/// Cluster mode: each partition's batch is proposed to its Raft group now, in request order;
/// the reply waits for the commit (acks=all) or the leader's append (acks=1). A batch the
/// group replaced (a new leader never had it) is NOT_LEADER_OR_FOLLOWER, a definite failure;
/// no answer in time is REQUEST_TIMED_OUT, an unknown outcome, as in Kafka.
fn handle_replicated(
    broker: &Broker,
    cluster: Arc<Cluster>,
    ctx: &RequestContext,
    req: ProduceRequest,
) -> Result<Reply, RequestError> {
    let acks = req.acks;
    let (refuse_all, wait) = refusal_and_wait(broker, &req);
    let max_batch = broker.topics.defaults().max_message_bytes;
    let mut topics: Vec<(TopicName, Vec<Slot>)> = Vec::with_capacity(req.topic_data.len());
    for topic_data in req.topic_data {
        let topic = broker.topics.get(&topic_data.name);
        let mut slots = Vec::with_capacity(topic_data.partition_data.len());
        for pd in topic_data.partition_data {
            let r = empty_response(pd.index);
            if let Some((code, msg)) = refuse_all {
                slots.push(Slot::Done(with_error(r, code, msg)));
                continue;
            }
            let Some(topic) = &topic else {
                slots.push(Slot::Create {
                    topic: topic_data.name.to_string(),
                    pd,
                });
                continue;
            };
            slots.push(propose_one(&cluster, topic, pd, max_batch));
        }
        topics.push((topic_data.name, slots));
    }
    let metrics = broker.metrics.clone();
    let ctx = ctx.clone();
    Ok(Reply::Later(Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, slots) in topics {
            let mut partition_responses = Vec::with_capacity(slots.len());
            for slot in slots {
                let slot = match slot {
                    Slot::Create { topic, pd } => match cluster.get_or_auto_create(&topic).await {
                        Ok(t) => {
                            let max = t.config.max_message_bytes;
                            propose_one(&cluster, &t, pd, max)
                        }
                        Err(e) => Slot::Done(with_error(
                            empty_response(pd.index),
                            e.kafka_code(),
                            &e.to_string(),
                        )),
                    },
                    other => other,
                };
                partition_responses.push(match slot {
                    Slot::Done(r) => r,
                    Slot::Create { pd, .. } => empty_response(pd.index),
                    Slot::Proposed {
                        replica,
                        proposed,
                        index,
                        counts,
                    } => {
                        let r = empty_response(index);
                        let commit_wait = (acks == -1).then_some(wait);
                        match replica.settle(proposed, commit_wait).await {
                            Ok(p) => {
                                if !p.appended.duplicate {
                                    metrics.produced(
                                        &replica.partition.topic,
                                        index,
                                        counts.0,
                                        counts.1,
                                    );
                                }
                                r.with_base_offset(p.appended.base_offset)
                                    .with_log_start_offset(replica.partition.offsets().log_start)
                            }
                            Err(e) => {
                                let code = match &e {
                                    SettleError::Refused(
                                        ReplicaError::NotLeader | ReplicaError::Stopped,
                                    )
                                    | SettleError::NotStored => code::NOT_LEADER_OR_FOLLOWER,
                                    SettleError::Refused(ReplicaError::Sequence(s)) => {
                                        s.kafka_code()
                                    }
                                    SettleError::Refused(ReplicaError::Storage(_)) => {
                                        code::KAFKA_STORAGE_ERROR
                                    }
                                    SettleError::Unknown(_) => code::REQUEST_TIMED_OUT,
                                };
                                with_error(r, code, &e.to_string())
                            }
                        }
                    }
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return Ok(None);
        }
        let response = ProduceResponse::default().with_responses(responses);
        encode_body(&ctx, &response).map(Some)
    })))
}

/// Validate one partition's batch and queue its proposal.
fn propose_one(
    cluster: &Cluster,
    topic: &Topic,
    pd: PartitionProduceData,
    max_batch: usize,
) -> Slot {
    let r = empty_response(pd.index);
    let Some(part) = topic.partitions.iter().find(|p| p.index == pd.index) else {
        return Slot::Done(with_error(
            r,
            code::UNKNOWN_TOPIC_OR_PARTITION,
            "no such partition",
        ));
    };
    if part.is_failed() {
        return Slot::Done(with_error(
            r,
            code::KAFKA_STORAGE_ERROR,
            "partition storage failed",
        ));
    }
    let Some(replica) = cluster.replica(&topic.name, pd.index) else {
        return Slot::Done(with_error(
            r,
            code::NOT_LEADER_OR_FOLLOWER,
            "this node has no replica of the partition",
        ));
    };
    let max = max_batch.min(topic.config.max_message_bytes);
    match validate(&pd, max) {
        Err((code, msg)) => {
            tracing::warn!(topic = %topic.name, partition = pd.index, "produce refused: {msg}");
            Slot::Done(with_error(r, code, &msg))
        }
        Ok((records, header)) => {
            let counts = (
                u64::try_from(header.record_count).unwrap_or(0),
                u64::try_from(records.len()).unwrap_or(u64::MAX),
            );
            let proposed = Box::pin(replica.propose(BytesMut::from(&records[..]), header));
            Slot::Proposed {
                replica,
                proposed,
                index: pd.index,
                counts,
            }
        }
    }
}

fn empty_response(index: i32) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
}

/// Answer Produce v0-2 with UNSUPPORTED_VERSION for every partition, hand-encoded because the
/// codec crate does not model these versions. `None` for acks=0 or an unparseable request.
pub fn legacy_unsupported(frame: &[u8], version: i16) -> Option<BytesMut> {
    let mut buf = frame;
    let string = |b: &mut &[u8]| -> Option<Vec<u8>> {
        if b.remaining() < 2 {
            return None;
        }
        let len = b.get_i16();
        if len < 0 {
            return Some(Vec::new());
        }
        let len = usize::try_from(len).ok()?;
        if b.remaining() < len {
            return None;
        }
        let s = b[..len].to_vec();
        b.advance(len);
        Some(s)
    };
    let need = |b: &&[u8], n: usize| b.remaining() >= n;
    if !need(&buf, 8) {
        return None;
    }
    buf.advance(4); // api key + version
    let correlation_id = buf.get_i32();
    string(&mut buf)?; // client id
    if !need(&buf, 10) {
        return None;
    }
    let acks = buf.get_i16();
    buf.advance(4);
    let topic_count = buf.get_i32();
    let mut body = BytesMut::new();
    body.put_i32(correlation_id);
    body.put_i32(topic_count.max(0));
    for _ in 0..topic_count.max(0) {
        let name = string(&mut buf)?;
        if !need(&buf, 4) {
            return None;
        }
        let parts = buf.get_i32();
        body.put_i16(i16::try_from(name.len()).ok()?);
        body.put_slice(&name);
        body.put_i32(parts.max(0));
        for _ in 0..parts.max(0) {
            if !need(&buf, 8) {
                return None;
            }
            let partition = buf.get_i32();
            let size = usize::try_from(buf.get_i32()).ok()?;
            if !need(&buf, size) {
                return None;
            }
            buf.advance(size);
            body.put_i32(partition);
            body.put_i16(code::UNSUPPORTED_VERSION);
            body.put_i64(-1);
            if version >= 2 {
                body.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        body.put_i32(0);
    }
    if acks == 0 {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(i32::try_from(body.len()).ok()?);
    out.extend_from_slice(&body);
    Some(out)
}
