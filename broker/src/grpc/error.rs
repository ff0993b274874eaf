//! Why a gRPC call failed, and the status code and message a person sees for it.

use tonic::metadata::MetadataValue;
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
    /// Cluster mode: this node cannot take writes for the partition (it follows, or lost the
    /// leadership before the commit and the entry was replaced). Nothing of the batch is
    /// stored; the status carries `runnel-outcome: not-stored` and, when known,
    /// `runnel-leader: <node id> [<grpc addr>]`.
    #[error("{topic}/{partition}: {why}; nothing was stored ({})", leader_text(.leader))]
    NotLeader {
        topic: String,
        partition: i32,
        why: String,
        leader: Option<LeaderHint>,
    },
    /// Cluster mode: no definite outcome (the commit wait timed out, the leader stepped down,
    /// the replica stopped). The status carries `runnel-outcome: unknown`.
    #[error("{topic}/{partition}: {why}; the records may or may not be stored")]
    OutcomeUnknown {
        topic: String,
        partition: i32,
        why: String,
        timed_out: bool,
    },
}

/// Where the partition's leader is, as far as this node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub node_id: i32,
    /// Its gRPC address, if `[cluster] nodes` gives one.
    pub grpc: Option<String>,
}

impl LeaderHint {
    /// The `runnel-leader` metadata value: `<node id>` or `<node id> <grpc addr>`.
    pub fn metadata_value(&self) -> String {
        match &self.grpc {
            Some(a) => format!("{} {a}", self.node_id),
            None => self.node_id.to_string(),
        }
    }
}

fn leader_text(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(LeaderHint {
            node_id,
            grpc: Some(a),
        }) => format!("the leader is node {node_id} at {a}"),
        Some(LeaderHint {
            node_id,
            grpc: None,
        }) => format!("the leader is node {node_id}"),
        None => "no leader is known yet; retry shortly".to_owned(),
    }
}

/// Metadata key of a follower's leader hint: `<node id>` or `<node id> <grpc addr>`.
pub const LEADER_METADATA: &str = "runnel-leader";
/// Metadata key saying whether a failed replicated publish stored nothing (`not-stored`) or
/// may have stored its records (`unknown`).
pub const OUTCOME_METADATA: &str = "runnel-outcome";

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
            GrpcError::DurabilityTimeout { .. }
            | GrpcError::OutcomeUnknown {
                timed_out: true, ..
            } => Code::DeadlineExceeded,
            GrpcError::NotLeader { .. } | GrpcError::OutcomeUnknown { .. } => Code::Unavailable,
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
            // A replicated partition this node holds no replica of.
            AppendError::Replicated => GrpcError::NotLeader {
                topic: topic.to_owned(),
                partition,
                why: "this node has no replica of the partition".to_owned(),
                leader: None,
            },
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
        let mut status = Status::new(e.code(), e.to_string());
        let meta = status.metadata_mut();
        match &e {
            GrpcError::NotLeader { leader, .. } => {
                meta.insert(OUTCOME_METADATA, MetadataValue::from_static("not-stored"));
                if let Some(v) = leader
                    .as_ref()
                    .and_then(|l| MetadataValue::try_from(l.metadata_value()).ok())
                {
                    meta.insert(LEADER_METADATA, v);
                }
            }
            GrpcError::OutcomeUnknown { .. } => {
                meta.insert(OUTCOME_METADATA, MetadataValue::from_static("unknown"));
            }
            _ => {}
        }
        status
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

    #[test]
    fn a_follower_names_the_leader_in_metadata() {
        let s = Status::from(GrpcError::NotLeader {
            topic: "t".into(),
            partition: 2,
            why: "this node is not the partition's leader".into(),
            leader: Some(LeaderHint {
                node_id: 3,
                grpc: Some("10.0.0.3:9093".into()),
            }),
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata().get(LEADER_METADATA).unwrap(),
            "3 10.0.0.3:9093"
        );
        assert_eq!(s.metadata().get(OUTCOME_METADATA).unwrap(), "not-stored");
        assert!(
            s.message().contains("node 3 at 10.0.0.3:9093"),
            "{}",
            s.message()
        );
        assert!(
            s.message().contains("nothing was stored"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn an_unknown_outcome_says_so() {
        let s = Status::from(GrpcError::OutcomeUnknown {
            topic: "t".into(),
            partition: 0,
            why: "timed out waiting for the commit".into(),
            timed_out: true,
        });
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(s.message().contains("may or may not be stored"));
        assert_eq!(s.metadata().get(OUTCOME_METADATA).unwrap(), "unknown");
        assert!(s.metadata().get(LEADER_METADATA).is_none());
    }
}
