//! Fetch (key 1): sessionless reads with long polling.
//!
//! A fetch answers as soon as `min_bytes` are available (not after `max_wait_ms`), or when
//! `max_wait_ms` runs out, or at once if any partition has an error. Each partition returns
//! whole batches and at least one batch even if it exceeds the limits, as Kafka does. The last
//! stable offset equals the high watermark (no transactions), so READ_COMMITTED readers such as
//! KafkaJS see everything committed.
//!
//! v9+: a partition whose `current_leader_epoch` is older than the leader's answers
//! FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH (checked once per request). Fetch v12's
//! diverging-epoch answer is not given: clients validate positions with OffsetForLeaderEpoch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use super::offset_for_leader_epoch::{check_current_epoch, current_epoch};
use super::{code, RequestContext};
use crate::broker::Broker;
use crate::log::{Batches, LogError};
use crate::partition::Partition;

/// A Fetch answer: the response, whose partitions carry empty `records`, and each partition's
/// batches in response order (one entry per partition), which the encoder sends in their
/// place — from segment files where they are there, so they are never copied in the broker.
pub struct FetchReply {
    pub response: FetchResponse,
    pub records: Vec<Batches>,
}

impl FetchReply {
    /// The response with every partition's batches read into its `records` (for encoders
    /// that need the bytes). A partition whose batches cannot be read gets
    /// KAFKA_STORAGE_ERROR.
    pub fn into_response(self) -> FetchResponse {
        let FetchReply {
            mut response,
            records,
        } = self;
        let partitions = response
            .responses
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut());
        for (p, batches) in partitions.zip(records) {
            match batches.to_bytes() {
                Ok(bytes) => p.records = Some(bytes),
                Err(e) => {
                    tracing::error!(partition = p.partition_index, "read failed: {e}");
                    p.error_code = code::KAFKA_STORAGE_ERROR;
                    p.records = Some(Bytes::new());
                }
            }
        }
        response
    }
}

pub async fn handle(broker: &Broker, _: &RequestContext, req: FetchRequest) -> FetchReply {
    let deadline =
        Instant::now() + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    // Resolve partitions once; unknown ones answer at once with an error.
    let resolved: Vec<Vec<Option<Arc<Partition>>>> = req
        .topics
        .iter()
        .map(|t| {
            let topic = broker.topics.get(&t.topic);
            t.partitions
                .iter()
                .map(|p| {
                    topic.as_ref().and_then(|topic| {
                        topic
                            .partitions
                            .iter()
                            .find(|x| x.index == p.partition)
                            .cloned()
                    })
                })
                .collect()
        })
        .collect();
    // The epoch check of each partition (KIP-320), NONE where there is nothing to check.
    let fencing: Vec<Vec<i16>> = req
        .topics
        .iter()
        .zip(&resolved)
        .map(|(t, parts)| {
            t.partitions
                .iter()
                .zip(parts)
                .map(|(p, part)| {
                    part.as_ref()
                        .and_then(|part| current_epoch(broker, part))
                        .map_or(code::NONE, |ours| {
                            check_current_epoch(p.current_leader_epoch, ours)
                        })
                })
                .collect()
        })
        .collect();
    loop {
        // Subscribe before reading so an append between the read and the wait is not missed.
        let mut watches: Vec<watch::Receiver<i64>> = resolved
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.watch_high_watermark())
            .collect();
        let (reply, bytes, any_error) = read_all(&req, &resolved, &fencing, max_bytes);
        if bytes >= min_bytes.max(1)
            || any_error
            || Instant::now() >= deadline
            || watches.is_empty()
        {
            return counted(broker, reply);
        }
        if !wait_any(&mut watches, deadline).await {
            let (reply, _, _) = read_all(&req, &resolved, &fencing, max_bytes);
            return counted(broker, reply);
        }
    }
}

/// Records the bytes a response serves per partition (metrics), and passes it on.
fn counted(broker: &Broker, reply: FetchReply) -> FetchReply {
    let partitions = reply
        .response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (&t.topic, p)));
    for ((topic, p), batches) in partitions.zip(&reply.records) {
        if !batches.is_empty() {
            let bytes = u64::try_from(batches.len()).unwrap_or(u64::MAX);
            broker.metrics.fetched(topic, p.partition_index, bytes);
        }
    }
    reply
}

/// Wait until any watch changes (true) or the deadline passes (false).
async fn wait_any(watches: &mut [watch::Receiver<i64>], deadline: Instant) -> bool {
    let changed =
        futures_util::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
    tokio::time::timeout_at(deadline, changed).await.is_ok()
}

fn read_all(
    req: &FetchRequest,
    resolved: &[Vec<Option<Arc<Partition>>>],
    fencing: &[Vec<i16>],
    max_bytes: usize,
) -> (FetchReply, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut records = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for ((t, parts), fenced) in req.topics.iter().zip(resolved).zip(fencing) {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for ((p, part), &fenced) in t.partitions.iter().zip(parts).zip(fenced) {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(Some(Vec::new()))
                .with_records(Some(Bytes::new()));
            // One entry per partition, in response order; only a successful read fills it.
            records.push(Batches::default());
            let Some(part) = part else {
                any_error = true;
                partitions.push(data.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            if !part.is_leader() {
                any_error = true;
                partitions.push(data.with_error_code(code::NOT_LEADER_OR_FOLLOWER));
                continue;
            }
            if fenced != code::NONE {
                any_error = true;
                partitions.push(data.with_error_code(fenced));
                continue;
            }
            let offsets = part.offsets();
            data = data
                .with_high_watermark(offsets.high_watermark)
                .with_last_stable_offset(offsets.high_watermark)
                .with_log_start_offset(offsets.log_start);
            let partition_max = usize::try_from(p.partition_max_bytes).unwrap_or(0);
            let budget = partition_max.min(max_bytes.saturating_sub(total));
            if budget == 0 && total > 0 {
                partitions.push(data);
                continue;
            }
            match part.read_batches_below(p.fetch_offset, offsets.high_watermark, budget) {
                Ok(batches) => {
                    total += batches.len();
                    partitions.push(data);
                    if let Some(slot) = records.last_mut() {
                        *slot = batches;
                    }
                }
                Err(LogError::OffsetOutOfRange { .. }) => {
                    any_error = true;
                    partitions.push(data.with_error_code(code::OFFSET_OUT_OF_RANGE));
                }
                Err(e) => {
                    if matches!(e, LogError::Closed) {
                        // Shutting down, or the topic was just deleted: nothing is wrong.
                        tracing::debug!(topic = %part.topic, partition = part.index, "read refused: {e}");
                    } else {
                        tracing::error!(topic = %part.topic, partition = part.index, "read failed: {e}");
                    }
                    any_error = true;
                    partitions.push(data.with_error_code(code::KAFKA_STORAGE_ERROR));
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    let response = FetchResponse::default()
        .with_error_code(code::NONE)
        .with_session_id(0)
        .with_responses(topics);
    (FetchReply { response, records }, total, any_error)
}
