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
    let responses = names
        .into_iter()
        .map(|name| {
            let r = DeletableTopicResult::default().with_name(Some(name.clone()));
            match broker.topics.delete(&name) {
                Ok(()) => r,
                Err(e) => r
                    .with_error_code(e.kafka_code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
