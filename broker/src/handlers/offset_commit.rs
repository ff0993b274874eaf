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
    // Cluster mode: only the metadata leader coordinates (clients find it with FindCoordinator).
    let not_coordinator = !broker.is_group_coordinator();
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
            if not_coordinator {
                parts.push((p.partition_index, Some(code::NOT_COORDINATOR)));
            } else if known {
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
    let group_id = req.group_id.0.to_string();
    let requested = offsets.clone();
    let r = if offsets.is_empty() {
        crate::group::CommitResponse {
            results: Vec::new(),
        }
    } else {
        broker
            .groups
            .commit(CommitRequest {
                group_id: group_id.clone(),
                generation_id: req.generation_id_or_member_epoch,
                member_id: req.member_id.to_string(),
                group_instance_id: req.group_instance_id.map(|i| i.to_string()),
                offsets,
            })
            .await
    };
    // Cluster mode: what the coordinator accepted is answered only once the metadata group has
    // committed it (and so every node will hold it); otherwise the outcome is unknown.
    let mut replicated: Option<i16> = None;
    if let Some(cluster) = broker.cluster() {
        let accepted: Vec<(TopicPartition, CommittedOffset)> = requested
            .into_iter()
            .zip(&r.results)
            .filter(|(_, (_, e))| *e == ErrorCode::None)
            .map(|(o, _)| o)
            .collect();
        if !accepted.is_empty() {
            if let Err(e) = cluster.commit_offsets(&group_id, accepted).await {
                tracing::warn!(group = %group_id, "offset commit not replicated: {e}");
                replicated = Some(code::REQUEST_TIMED_OUT);
            }
        }
    }
    let mut results = r.results.into_iter();
    let topics = plan
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, refused)| {
                    let error = refused.unwrap_or_else(|| {
                        match results
                            .next()
                            .map_or(ErrorCode::CoordinatorNotAvailable, |(_, e)| e)
                        {
                            ErrorCode::None => replicated.unwrap_or(code::NONE),
                            e => e.code(),
                        }
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
