//! DeleteTopics (key 20), by name (all versions) or by topic id (v6+, not advertised yet).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<TopicName> = req
        .topic_names
        .into_iter()
        .chain(req.topics.into_iter().filter_map(|t| t.name))
        .collect();
    let mut responses = Vec::with_capacity(names.len());
    for name in names {
        let r = DeletableTopicResult::default().with_name(Some(name.clone()));
        let outcome = match broker.cluster() {
            Some(cluster) => cluster.delete_topic(&name).await,
            None => broker.topics.delete(&name),
        };
        responses.push(match outcome {
            Ok(()) => r,
            Err(e) => r
                .with_error_code(e.kafka_code())
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
