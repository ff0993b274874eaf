//! OffsetCommit (key 8): store consumer positions; answered only once they are durable.
//! Commits from outside group management (generation -1, empty member id) are accepted for
//! empty or unknown groups, as Kafka does for simple (assign-only) consumers.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::group::{CommitRequest, CommittedOffset, ErrorCode, TopicPartition};

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    // Partitions of unknown topics are refused here; the rest go to the coordinator and are
    // answered in request order (`None` marks those).
    let mut offsets = Vec::new();
    let mut plan = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let topic = broker.topics.get(&t.name.0);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let known = topic.as_ref().is_some_and(|topic| {
                usize::try_from(p.partition_index).is_ok_and(|i| i < topic.partitions.len())
            });
            if known {
                offsets.push((
                    TopicPartition {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                    },
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    },
                ));
                parts.push((p.partition_index, None));
            } else {
                parts.push((p.partition_index, Some(code::UNKNOWN_TOPIC_OR_PARTITION)));
            }
        }
        plan.push((t.name, parts));
    }
    let r = broker
        .groups
        .commit(CommitRequest {
            group_id: req.group_id.0.to_string(),
            generation_id: req.generation_id_or_member_epoch,
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.map(|i| i.to_string()),
            offsets,
        })
        .await;
    let mut results = r.results.into_iter();
    let topics = plan
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, refused)| {
                    let error = refused.unwrap_or_else(|| {
                        results
                            .next()
                            .map_or(ErrorCode::CoordinatorNotAvailable, |(_, e)| e)
                            .code()
                    });
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(error)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
