//! Metadata (key 3): brokers, controller, cluster id, topics and partition leaders.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::cluster::Cluster;
use crate::topics::{Topic, TopicError};

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> MetadataResponse {
    let cluster = broker.cluster().map(|c| &**c);
    let node = BrokerId(broker.node_id());
    let (brokers, controller) = match cluster {
        // Cluster mode: every node, and the metadata leader as the controller.
        Some(c) => (
            c.brokers()
                .into_iter()
                .map(|(id, host, port)| broker_entry(id, host, port))
                .collect(),
            BrokerId(c.controller().unwrap_or(-1)),
        ),
        None => (
            vec![broker_entry(
                node.0,
                broker.config.advertised_host(),
                broker.config.advertised_port(),
            )],
            node,
        ),
    };
    let describe = |t: &Topic| match cluster {
        Some(c) => describe_replicated(t, c),
        None => describe(t, node),
    };
    // Metadata v0 had no flag and always auto-created; v4+ says whether the client allows it.
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let topics = match req.topics {
        // v0: an empty list means all topics.
        Some(list) if !(list.is_empty() && ctx.version == 0) => {
            let mut out = Vec::with_capacity(list.len());
            for t in list {
                out.push(match t.name {
                    Some(name) => {
                        let found = match (allow_create, cluster) {
                            (false, _) => broker.topics.get(&name).ok_or(TopicError::Unknown),
                            (true, Some(c)) => c.get_or_auto_create(&name).await,
                            (true, None) => broker.topics.get_or_auto_create(&name),
                        };
                        match found {
                            Ok(topic) => describe(&topic),
                            Err(e) => MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_error_code(e.kafka_code()),
                        }
                    }
                    // Lookup by topic id (v10+).
                    None => match broker
                        .topics
                        .list()
                        .into_iter()
                        .find(|x| x.id == t.topic_id)
                    {
                        Some(topic) => describe(&topic),
                        None => MetadataResponseTopic::default()
                            .with_topic_id(t.topic_id)
                            .with_error_code(code::UNKNOWN_TOPIC_ID),
                    },
                });
            }
            out
        }
        _ => broker.topics.list().iter().map(|t| describe(t)).collect(),
    };
    let mut topics = topics;
    if ctx.version < 7 {
        // `leader_epoch` exists from v7; encoding it earlier is an error.
        for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.leader_epoch = -1;
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(controller)
        .with_topics(topics)
}

fn broker_entry(id: i32, host: String, port: u16) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(id))
        .with_host(StrBytes::from_string(host))
        .with_port(i32::from(port))
}

fn describe(topic: &Topic, node: BrokerId) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(code::NONE)
                .with_partition_index(p.index)
                .with_leader_id(node)
                // The epoch every batch of this node's log is stamped with.
                .with_leader_epoch(p.leader_epoch())
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
}

/// Cluster mode: each partition's Raft leader as its leader (LEADER_NOT_AVAILABLE while there
/// is none, so clients retry), the leader's term as its epoch, and its replicas as replicas
/// and ISR. A node that knows the leader knows it in its own current term, so that term is the
/// leader's epoch; with no leader known the epoch is -1 (unknown).
fn describe_replicated(topic: &Topic, cluster: &Cluster) -> MetadataResponseTopic {
    let assignment = topic.replicas.clone().unwrap_or_default();
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let replicas: Vec<BrokerId> = usize::try_from(p.index)
                .ok()
                .and_then(|i| assignment.get(i))
                .map(|r| r.iter().map(|n| BrokerId(*n)).collect())
                .unwrap_or_default();
            let r = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_isr_nodes(replicas.clone())
                .with_replica_nodes(replicas);
            // This node knows the leader only of the partitions it replicates; for the others
            // it asks no one and says "not available", so the client asks again elsewhere.
            match cluster.leader_of(&topic.name, p.index) {
                Some((leader, epoch)) => r
                    .with_error_code(code::NONE)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch),
                None => r
                    .with_error_code(code::LEADER_NOT_AVAILABLE)
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
}
