//! CreateTopics (key 19).

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::topics::TopicError;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let partitions = if t.num_partitions == -1 {
            broker.topics.defaults().default_partitions
        } else {
            t.num_partitions
        };
        let configs = t
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>();
        if let Some(cluster) = broker.cluster() {
            let rf = t.replication_factor;
            let outcome = if !t.assignments.is_empty() {
                Err(TopicError::InvalidConfig(
                    "manual replica assignment is not supported".into(),
                ))
            } else if req.validate_only {
                broker
                    .topics
                    .check_new(&t.name, partitions, &configs)
                    .map(|_| ())
            } else {
                cluster
                    .create_topic(&t.name, partitions, rf, &configs)
                    .await
            };
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            results.push(match (outcome, broker.topics.get(&t.name)) {
                (Ok(()), topic) => result
                    .with_error_code(code::NONE)
                    .with_topic_id(topic.map(|t| t.id).unwrap_or_default())
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf),
                (Err(e), _) => refused(result, &t.name, &e),
            });
            continue;
        }
        let outcome = (|| {
            if !t.assignments.is_empty() {
                return Err(TopicError::InvalidConfig(
                    "manual replica assignment is not supported".into(),
                ));
            }
            if t.replication_factor != -1 && t.replication_factor != 1 {
                return Err(TopicError::InvalidReplicationFactor(t.replication_factor));
            }
            broker
                .topics
                .create(&t.name, partitions, &configs, req.validate_only)
        })();
        let result = CreatableTopicResult::default().with_name(t.name.clone());
        results.push(match outcome {
            Ok(topic) => result
                .with_error_code(code::NONE)
                .with_topic_id(topic.id)
                .with_num_partitions(partitions)
                .with_replication_factor(1),
            Err(e) => refused(result, &t.name, &e),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn refused(result: CreatableTopicResult, name: &str, e: &TopicError) -> CreatableTopicResult {
    tracing::info!(topic = %name, "create topic refused: {e}");
    result
        .with_error_code(e.kafka_code())
        .with_error_message(Some(StrBytes::from_string(e.to_string())))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}
