//! The `Admin` service: topic create / delete / list / describe and partition offsets, over the
//! same `TopicRegistry` the Kafka CreateTopics and DeleteTopics handlers use.

use std::collections::HashMap;
use std::sync::Arc;

use runnel_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::error::GrpcError;
use crate::broker::Broker;
use crate::partition::Partition;
use crate::topics::{Topic, TopicConfig};

#[derive(Clone)]
pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, GrpcError> {
        self.broker
            .topics
            .get(name)
            .ok_or_else(|| GrpcError::UnknownTopic(name.to_owned()))
    }
}

fn configs(c: &TopicConfig) -> HashMap<String, String> {
    [
        ("retention.ms", c.retention_ms.to_string()),
        ("retention.bytes", c.retention_bytes.to_string()),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("flush.ms", c.flush_ms.to_string()),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("cleanup.policy", "delete".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn offsets(p: &Partition) -> v1::PartitionOffsets {
    let o = p.offsets();
    v1::PartitionOffsets {
        partition: p.index,
        log_start: o.log_start,
        high_watermark: o.high_watermark,
        log_end: o.log_end,
        offset_for_timestamp: None,
    }
}

fn describe(t: &Topic) -> v1::TopicDescription {
    v1::TopicDescription {
        name: t.name.clone(),
        id: t.id.to_string(),
        partitions: t.partitions.iter().map(|p| offsets(p)).collect(),
        configs: configs(&t.config),
    }
}

/// Run blocking registry work (file creation, fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GrpcError> + Send + 'static,
) -> Result<T, GrpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GrpcError::Storage(format!("admin task failed: {e}")))?
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let req = request.into_inner();
        let broker = self.broker.clone();
        let topic = blocking(move || {
            let partitions = match req.partitions {
                0 => broker.topics.defaults().default_partitions,
                n => n,
            };
            let mut configs: Vec<(String, String)> = req.configs.into_iter().collect();
            configs.sort();
            broker
                .topics
                .create(&req.name, partitions, &configs, false)
                .map_err(|e| GrpcError::from_topic(&req.name, e))
        })
        .await?;
        Ok(Response::new(describe(&topic)))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        let broker = self.broker.clone();
        blocking(move || {
            broker
                .topics
                .delete(&name)
                .map_err(|e| GrpcError::from_topic(&name, e))
        })
        .await?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let topics = self
            .broker
            .topics
            .list()
            .iter()
            .map(|t| v1::TopicSummary {
                name: t.name.clone(),
                id: t.id.to_string(),
                partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let t = self.topic(&request.into_inner().name)?;
        Ok(Response::new(describe(&t)))
    }

    async fn get_offsets(
        &self,
        request: Request<v1::GetOffsetsRequest>,
    ) -> Result<Response<v1::PartitionOffsets>, Status> {
        let req = request.into_inner();
        let t = self.topic(&req.topic)?;
        let p = usize::try_from(req.partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
            .ok_or_else(|| GrpcError::UnknownPartition {
                topic: req.topic.clone(),
                partition: req.partition,
                partitions: t.partitions.len(),
            })?;
        let mut out = offsets(p);
        if let Some(ts) = req.timestamp_ms {
            out.offset_for_timestamp = p
                .offset_for_timestamp(ts)
                .map_err(|e| GrpcError::Storage(format!("timestamp lookup failed: {e}")))?
                .map(|f| f.offset);
        }
        Ok(Response::new(out))
    }
}
