//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3), or by timestamp.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::metadata::REPORTED_LEADER_EPOCH;
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
    _: &RequestContext,
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
                        .with_leader_epoch(REPORTED_LEADER_EPOCH);
                    let part = topic.as_ref().and_then(|t| t.partitions.iter().find(|x| x.index == p.partition_index));
                    let Some(part) = part else {
                        return r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    if !part.is_leader() {
                        return r.with_error_code(code::NOT_LEADER_OR_FOLLOWER);
                    }
                    match lookup(part, p.timestamp) {
                        Ok((offset, timestamp)) => r.with_offset(offset).with_timestamp(timestamp),
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

/// (offset, timestamp) for one query; (-1, -1) when no record matches a timestamp query.
fn lookup(part: &Partition, query: i64) -> Result<(i64, i64), LogError> {
    let offsets = part.offsets();
    match query {
        LATEST => Ok((offsets.high_watermark, -1)),
        EARLIEST => Ok((offsets.log_start, -1)),
        MAX_TIMESTAMP => max_timestamp(part),
        ts if ts >= 0 => match part.offset_for_timestamp(ts)? {
            // The log finds the batch; the batch is decoded to find the exact record.
            Some(found) => Ok(first_record_at_or_after(part, found.offset, ts)
                .unwrap_or((found.offset, found.timestamp))),
            None => Ok((-1, -1)),
        },
        _ => Ok((-1, -1)),
    }
}

fn first_record_at_or_after(part: &Partition, batch_offset: i64, ts: i64) -> Option<(i64, i64)> {
    let mut bytes = part.read(batch_offset, 1).ok()?;
    let header = batch::parse_header(&bytes).ok()?;
    let mut one = bytes.split_to(header.total_len());
    // Decompresses when needed: Kafka answers with the first *record* at or after `ts`.
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one).ok()?;
    set.records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
}

/// KIP-734: the offset and timestamp of the record with the largest timestamp. Scans batch
/// headers (the batch's max timestamp and its last offset for compressed batches).
fn max_timestamp(part: &Partition) -> Result<(i64, i64), LogError> {
    let offsets = part.offsets();
    let mut best: Option<(i64, i64)> = None;
    let mut at = offsets.log_start;
    while at < offsets.high_watermark {
        let chunk = part.read(at, 1 << 20)?;
        if chunk.is_empty() {
            break;
        }
        for h in batch::headers(&chunk) {
            let Ok(h) = h else { break };
            // Control batches (a replica's leader-change no-ops) hold no records.
            if !h.is_control() && best.is_none_or(|(_, t)| h.max_timestamp > t) {
                best = Some((h.last_offset(), h.max_timestamp));
            }
            at = h.next_offset();
        }
    }
    Ok(best.unwrap_or((-1, -1)))
}
