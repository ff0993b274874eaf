//! Metadata and CreateTopics, sans-io: request builders and response parsers into the
//! client's view of the cluster (broker addresses, partition leaders).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error_text;

/// Kafka's TOPIC_ALREADY_EXISTS.
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// What Metadata said about one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    /// The topic does not exist.
    Missing,
    /// Partitions `0..n`, each with its leader's node id (`None`: no leader right now).
    Ready(Vec<Option<i32>>),
    /// Any other topic-level error (kept for the message).
    Error(String),
}

/// The cluster as seen by one Metadata answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// `host:port` by node id.
    pub brokers: HashMap<i32, String>,
    /// The controller's node id, if one is known.
    pub controller: Option<i32>,
    /// The named topics.
    pub topics: HashMap<String, TopicState>,
}

/// Metadata for `topics`, never auto-creating them (a topic the processor needs is created
/// with its partition count by CreateTopics, not with the cluster's default).
pub fn request(topics: &[&str]) -> MetadataRequest {
    MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ))
}

/// Parses a Metadata answer. Partitions must be dense `0..n`; a gap is reported as a topic
/// error (a broker that answers so is not one this client can route for).
pub fn parse(resp: &MetadataResponse) -> ClusterMetadata {
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let controller = Some(resp.controller_id.0).filter(|c| *c >= 0);
    let mut topics = HashMap::new();
    for t in &resp.topics {
        let Some(name) = &t.name else { continue };
        let state = match t.error_code {
            0 => {
                let mut by_index: BTreeMap<i32, Option<i32>> = BTreeMap::new();
                for p in &t.partitions {
                    let leader = Some(p.leader_id.0).filter(|l| p.error_code == 0 && *l >= 0);
                    by_index.insert(p.partition_index, leader);
                }
                let dense = by_index
                    .keys()
                    .copied()
                    .eq(0..i32::try_from(by_index.len()).unwrap_or(i32::MAX));
                if dense {
                    TopicState::Ready(by_index.into_values().collect())
                } else {
                    TopicState::Error("partition indexes are not 0..n".into())
                }
            }
            UNKNOWN_TOPIC_OR_PARTITION => TopicState::Missing,
            code => TopicState::Error(error_text(code)),
        };
        topics.insert(name.0.to_string(), state);
    }
    ClusterMetadata {
        brokers,
        controller,
        topics,
    }
}

/// CreateTopics for one topic with the cluster's default replication factor (-1).
pub fn create_request(topic: &str, partitions: i32, timeout_ms: i32) -> CreateTopicsRequest {
    CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)])
        .with_timeout_ms(timeout_ms)
}

/// The error code CreateTopics answered for `topic` (`None` if the answer does not name it),
/// with the broker's message.
pub fn create_outcome(resp: &CreateTopicsResponse, topic: &str) -> Option<(i16, String)> {
    resp.topics
        .iter()
        .find(|t| t.name.0.as_str() == topic)
        .map(|t| {
            (
                t.error_code,
                t.error_message
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::BrokerId;

    fn partition(i: i32, leader: i32) -> MetadataResponsePartition {
        MetadataResponsePartition::default()
            .with_partition_index(i)
            .with_leader_id(BrokerId(leader))
    }

    #[test]
    fn leaders_missing_topics_and_gaps() {
        let resp = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(7))
                .with_host(StrBytes::from_static_str("h"))
                .with_port(9)])
            .with_controller_id(BrokerId(-1))
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name("a")))
                    .with_partitions(vec![partition(1, -1), partition(0, 7)]),
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name("b")))
                    .with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                MetadataResponseTopic::default()
                    .with_name(Some(topic_name("c")))
                    .with_partitions(vec![partition(0, 7), partition(2, 7)]),
            ]);
        let m = parse(&resp);
        assert_eq!(m.brokers[&7], "h:9");
        assert_eq!(m.controller, None);
        assert_eq!(m.topics["a"], TopicState::Ready(vec![Some(7), None]));
        assert_eq!(m.topics["b"], TopicState::Missing);
        assert!(matches!(m.topics["c"], TopicState::Error(_)));
    }
}
