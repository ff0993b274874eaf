//! Why a gRPC call failed, and the status code and message a person sees for it.

use tonic::{Code, Status};

use crate::partition::{AppendError, DurabilityError};
use crate::topics::TopicError;

/// A refused or failed gRPC call. `Display` is the message the client sees.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {partitions} partition(s); there is no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partitions: usize,
    },
    #[error("topic {0:?} was deleted")]
    TopicDeleted(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("partition {partition} of {topic:?} cannot accept writes: its storage failed")]
    StorageFailed { topic: String, partition: i32 },
    #[error("timed out waiting for the fsync of {topic:?} partition {partition}; the records may or may not be stored")]
    DurabilityTimeout { topic: String, partition: i32 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    #[error("pipeline {0:?} is not configured")]
    UnknownPipeline(String),
    /// Something that will exist shortly (retry): a pipeline's output topic before it starts.
    #[error("{0}")]
    NotYet(String),
}

impl GrpcError {
    pub fn code(&self) -> Code {
        match self {
            GrpcError::UnknownTopic(_)
            | GrpcError::UnknownPartition { .. }
            | GrpcError::TopicDeleted(_)
            | GrpcError::UnknownPipeline(_) => Code::NotFound,
            GrpcError::InvalidArgument(_) => Code::InvalidArgument,
            GrpcError::OutOfRange(_) => Code::OutOfRange,
            GrpcError::AlreadyExists(_) => Code::AlreadyExists,
            GrpcError::StorageFailed { .. } | GrpcError::ShuttingDown | GrpcError::NotYet(_) => {
                Code::Unavailable
            }
            GrpcError::DurabilityTimeout { .. } => Code::DeadlineExceeded,
            GrpcError::Storage(_) => Code::Internal,
        }
    }

    /// Map a topic-registry error for the topic `name`.
    pub fn from_topic(name: &str, e: TopicError) -> Self {
        match e {
            TopicError::Unknown => GrpcError::UnknownTopic(name.to_owned()),
            TopicError::AlreadyExists => GrpcError::AlreadyExists(name.to_owned()),
            TopicError::InvalidName(m) => {
                GrpcError::InvalidArgument(format!("invalid topic name {m}"))
            }
            e @ (TopicError::InvalidPartitions(_)
            | TopicError::InvalidReplicationFactor(_)
            | TopicError::InvalidConfig(_)
            | TopicError::PartitionsNotIncreased { .. }
            | TopicError::InvalidReplicaAssignment(_)) => GrpcError::InvalidArgument(e.to_string()),
            TopicError::Storage(m) => GrpcError::Storage(m),
        }
    }

    pub fn from_append(topic: &str, partition: i32, e: AppendError) -> Self {
        match e {
            // gRPC batches are never idempotent (producer id -1), so sequence errors cannot
            // happen; report one as the internal error it would be.
            AppendError::Sequence(e) => {
                GrpcError::Storage(format!("unexpected sequence error: {e}"))
            }
            AppendError::Replicated => GrpcError::NotYet(format!(
                "{topic}/{partition} is replicated; gRPC publishing to replicated partitions is \
                 not supported yet (use the Kafka protocol)"
            )),
            AppendError::Log(e) => {
                tracing::error!(topic, partition, "grpc append failed: {e}");
                GrpcError::StorageFailed {
                    topic: topic.to_owned(),
                    partition,
                }
            }
        }
    }

    pub fn from_durability(topic: &str, partition: i32, e: DurabilityError) -> Self {
        match e {
            DurabilityError::TimedOut => GrpcError::DurabilityTimeout {
                topic: topic.to_owned(),
                partition,
            },
            DurabilityError::StorageFailed => GrpcError::StorageFailed {
                topic: topic.to_owned(),
                partition,
            },
        }
    }
}

impl From<GrpcError> for Status {
    fn from(e: GrpcError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_readable_messages() {
        let s = Status::from(GrpcError::UnknownTopic("nope".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "topic \"nope\" does not exist");
        let s = Status::from(GrpcError::from_topic("x", TopicError::AlreadyExists));
        assert_eq!(s.code(), Code::AlreadyExists);
    }
}
