//! OffsetFetch (key 9), v1-7 (one group per request): committed offsets of a group; null
//! topics (v2+) ask for every partition the group has committed.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::{ErrorCode, TopicPartition};

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let partitions = req.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name.0.to_string();
                t.partition_indexes
                    .into_iter()
                    .map(move |partition| TopicPartition {
                        topic: topic.clone(),
                        partition,
                    })
            })
            .collect::<Vec<_>>()
    });
    let r = broker.groups.fetch_offsets(&req.group_id.0, partitions);
    // The top-level error code is a v2+ field; v1 carries it on every partition.
    let partition_error = if ctx.version < 2 {
        r.error
    } else {
        ErrorCode::None
    };
    let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
    for (tp, committed) in r.offsets {
        let (offset, epoch, metadata) = match committed {
            Some(c) => (c.offset, c.leader_epoch, c.metadata),
            // Kafka's "no offset": -1 and empty metadata.
            None => (-1, -1, Some(String::new())),
        };
        let partition = OffsetFetchResponsePartition::default()
            .with_partition_index(tp.partition)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(epoch)
            .with_metadata(metadata.map(StrBytes::from_string))
            .with_error_code(partition_error.code());
        match topics.last_mut() {
            Some(last) if *last.name.0 == *tp.topic => last.partitions.push(partition),
            _ => topics.push(
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(tp.topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let resp = OffsetFetchResponse::default().with_topics(topics);
    if ctx.version >= 2 {
        resp.with_error_code(r.error.code())
    } else {
        resp
    }
}
