//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3), or by timestamp.
//!
//! v4+: `current_leader_epoch` is checked like Fetch's, and each answer carries the leader
//! epoch of the offset found (KIP-320): the stamp of its batch, or the current epoch for the
//! latest offset (Kafka's choice too).

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::offset_for_leader_epoch::{check_current_epoch, current_epoch};
use super::{code, RequestContext};
use crate::broker::Broker;
use crate::codec::batch;
use crate::log::LogError;
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let part = topic.as_ref().and_then(|t| t.partitions.iter().find(|x| x.index == p.partition_index));
                    let Some(part) = part else {
                        return r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let Some(epoch) = current_epoch(broker, part).filter(|_| part.is_leader()) else {
                        return r.with_error_code(code::NOT_LEADER_OR_FOLLOWER);
                    };
                    let fenced = check_current_epoch(p.current_leader_epoch, epoch);
                    if fenced != code::NONE {
                        return r.with_error_code(fenced);
                    }
                    match lookup(part, p.timestamp, epoch) {
                        Ok(found) => r
                            .with_offset(found.offset)
                            .with_timestamp(found.timestamp)
                            // The field exists from v4; encoding it earlier is an error.
                            .with_leader_epoch(if ctx.version >= 4 { found.epoch } else { -1 }),
                        Err(e) => {
                            tracing::error!(topic = %part.topic, partition = part.index, "offset lookup failed: {e}");
                            r.with_error_code(code::KAFKA_STORAGE_ERROR)
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// What a query found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    offset: i64,
    timestamp: i64,
    /// The leader epoch of the batch holding `offset` (-1 when nothing was found).
    epoch: i32,
}

const NOT_FOUND: Found = Found {
    offset: -1,
    timestamp: -1,
    epoch: -1,
};

/// The answer to one query; [`NOT_FOUND`] when no record matches a timestamp query.
/// `current` is the leader's epoch, the epoch of the latest offset.
fn lookup(part: &Partition, query: i64, current: i32) -> Result<Found, LogError> {
    let offsets = part.offsets();
    match query {
        LATEST => Ok(Found {
            offset: offsets.high_watermark,
            timestamp: -1,
            epoch: current,
        }),
        EARLIEST => Ok(Found {
            offset: offsets.log_start,
            timestamp: -1,
            // The first batch's epoch; an empty log's only epoch is the current one.
            epoch: epoch_at(part, offsets.log_start, offsets.high_watermark).unwrap_or(current),
        }),
        MAX_TIMESTAMP => max_timestamp(part),
        ts if ts >= 0 => match part.offset_for_timestamp(ts)? {
            // The log finds the batch; the batch is decoded to find the exact record.
            Some(found) => Ok(
                first_record_at_or_after(part, found.offset, ts).unwrap_or(Found {
                    offset: found.offset,
                    timestamp: found.timestamp,
                    epoch: epoch_at(part, found.offset, i64::MAX).unwrap_or(-1),
                }),
            ),
            None => Ok(NOT_FOUND),
        },
        _ => Ok(NOT_FOUND),
    }
}

/// The leader epoch stamped on the batch holding `offset`, if that batch is below `limit`.
fn epoch_at(part: &Partition, offset: i64, limit: i64) -> Option<i32> {
    if offset >= limit {
        return None;
    }
    let bytes = part.read(offset, 1).ok()?;
    Some(batch::parse_header(&bytes).ok()?.partition_leader_epoch)
}

fn first_record_at_or_after(part: &Partition, batch_offset: i64, ts: i64) -> Option<Found> {
    let mut bytes = part.read(batch_offset, 1).ok()?;
    let header = batch::parse_header(&bytes).ok()?;
    let mut one = bytes.split_to(header.total_len());
    // Decompresses when needed: Kafka answers with the first *record* at or after `ts`.
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| Found {
            offset: r.offset,
            timestamp: r.timestamp,
            epoch: header.partition_leader_epoch,
        })
}

/// KIP-734: the offset and timestamp of the record with the largest timestamp. Scans batch
/// headers (the batch's max timestamp and its last offset for compressed batches).
fn max_timestamp(part: &Partition) -> Result<Found, LogError> {
    let offsets = part.offsets();
    let mut best: Option<Found> = None;
    let mut at = offsets.log_start;
    while at < offsets.high_watermark {
        let chunk = part.read(at, 1 << 20)?;
        if chunk.is_empty() {
            break;
        }
        for h in batch::headers(&chunk) {
            let Ok(h) = h else { break };
            // Control batches (a replica's leader-change no-ops) hold no records.
            if !h.is_control() && best.is_none_or(|b| h.max_timestamp > b.timestamp) {
                best = Some(Found {
                    offset: h.last_offset(),
                    timestamp: h.max_timestamp,
                    epoch: h.partition_leader_epoch,
                });
            }
            at = h.next_offset();
        }
    }
    Ok(best.unwrap_or(NOT_FOUND))
}
