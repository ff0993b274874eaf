//! CreatePartitions (key 37): grow topics. Single node: an explicit assignment must place every
//! new partition on this broker alone.

use std::collections::HashSet;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::topics::TopicError;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    // Kafka answers every copy of a topic named twice with INVALID_REQUEST and acts on none.
    let mut seen = HashSet::new();
    let repeated: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.to_string()))
        .map(|t| t.name.to_string())
        .collect();
    let results = req
        .topics
        .iter()
        .map(|t| {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if repeated.contains(t.name.as_str()) {
                return result
                    .with_error_code(code::INVALID_REQUEST)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "the topic is named more than once in this request",
                    )));
            }
            match grow(broker, t, req.validate_only) {
                Ok(()) => result.with_error_code(code::NONE),
                Err(e) => {
                    tracing::info!(topic = %t.name.as_str(), "create partitions refused: {e}");
                    result
                        .with_error_code(e.kafka_code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                }
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

fn grow(broker: &Broker, t: &CreatePartitionsTopic, validate_only: bool) -> Result<(), TopicError> {
    let topic = broker.topics.get(&t.name).ok_or(TopicError::Unknown)?;
    if let Some(assignments) = &t.assignments {
        let current = i64::try_from(topic.partitions.len()).unwrap_or(i64::MAX);
        let added = i64::from(t.count).saturating_sub(current);
        if i64::try_from(assignments.len()).unwrap_or(i64::MAX) != added {
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "{} assignments for {added} new partitions",
                assignments.len()
            )));
        }
        let node = broker.node_id();
        if let Some(bad) = assignments
            .iter()
            .find(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node)
        {
            let ids: Vec<i32> = bad.broker_ids.iter().map(|b| b.0).collect();
            return Err(TopicError::InvalidReplicaAssignment(format!(
                "replicas {ids:?}: this single-node cluster has only broker {node}"
            )));
        }
    }
    broker
        .topics
        .add_partitions(&t.name, t.count, validate_only)
        .map(|_| ())
}
