//! The classic consumer-group coordinator (Kafka's "classic" group protocol), sans-io.
//!
//! [`coordinator::GroupCoordinator`] is a pure state machine: time is an input (`now_ms`), it
//! owns no sockets, files, timers or tasks. Requests go in through its methods; JoinGroup,
//! SyncGroup and OffsetCommit answers may be delayed, so they come out as [`Output`]s keyed by a
//! [`Token`] the caller chose, drained with `drain_outputs` (like raft-rs `ready()`). Committed
//! offsets leave as [`Output::Persist`] and take effect only once the caller reports them durable
//! with `persisted`.
//!
//! [`store::OffsetStore`] is where committed offsets live ([`store::MemStore`],
//! [`file_store::FileStore`]); [`driver::GroupDriver`] is the tokio-facing owner of both.
//!
//! The types here are domain types: the Kafka wire types are converted in `handlers/`.

pub mod coordinator;
pub mod driver;
pub mod file_store;
pub mod store;

#[cfg(test)]
mod datadriven;

use bytes::Bytes;

pub use coordinator::{CoordinatorConfig, GroupCoordinator};

/// Chosen by the caller to match a delayed answer to its request.
pub type Token = u64;

/// The Kafka error codes the coordinator answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    None,
    OffsetMetadataTooLarge,
    CoordinatorNotAvailable,
    IllegalGeneration,
    InconsistentGroupProtocol,
    InvalidGroupId,
    UnknownMemberId,
    InvalidSessionTimeout,
    RebalanceInProgress,
    MemberIdRequired,
    FencedInstanceId,
}

impl ErrorCode {
    /// The Kafka wire code.
    pub fn code(self) -> i16 {
        match self {
            ErrorCode::None => 0,
            ErrorCode::OffsetMetadataTooLarge => 12,
            ErrorCode::CoordinatorNotAvailable => 15,
            ErrorCode::IllegalGeneration => 22,
            ErrorCode::InconsistentGroupProtocol => 23,
            ErrorCode::InvalidGroupId => 24,
            ErrorCode::UnknownMemberId => 25,
            ErrorCode::InvalidSessionTimeout => 26,
            ErrorCode::RebalanceInProgress => 27,
            ErrorCode::MemberIdRequired => 79,
            ErrorCode::FencedInstanceId => 82,
        }
    }

    /// Kafka's name for the code.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::OffsetMetadataTooLarge => "OFFSET_METADATA_TOO_LARGE",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::InconsistentGroupProtocol => "INCONSISTENT_GROUP_PROTOCOL",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::MemberIdRequired => "MEMBER_ID_REQUIRED",
            ErrorCode::FencedInstanceId => "FENCED_INSTANCE_ID",
        }
    }
}

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A committed offset as a consumer stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// One protocol (assignor) a member supports, with its opaque subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// JoinGroup, in domain terms.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+ (KIP-394): a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in a JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// JoinGroup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; only the leader gets them.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// An error answer that still tells the member its id (MEMBER_ID_REQUIRED needs it).
    pub fn error(error: ErrorCode, member_id: &str) -> Self {
        Self {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_owned(),
            members: Vec::new(),
        }
    }
}

/// SyncGroup, in domain terms.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Sent by the leader only: each member's assignment, relayed as bytes.
    pub assignments: Vec<(String, Bytes)>,
}

/// SyncGroup's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: ErrorCode) -> Self {
        Self {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// Heartbeat, in domain terms.
#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ batches them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// LeaveGroup's answer: a top-level error and one result per leaving member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error: ErrorCode,
    pub members: Vec<(LeavingMember, ErrorCode)>,
}

/// OffsetCommit, in domain terms.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    /// -1 with an empty member id: a commit from outside group management (manual assign).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<(TopicPartition, CommittedOffset)>,
}

/// OffsetCommit's answer, one code per partition in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitResponse {
    pub results: Vec<(TopicPartition, ErrorCode)>,
}

/// OffsetFetch's answer: `None` where nothing is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOffsetsResponse {
    pub error: ErrorCode,
    pub offsets: Vec<(TopicPartition, Option<CommittedOffset>)>,
}

/// The group states of the classic protocol, named as Kafka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    /// Only reported for groups that do not exist.
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A member in a DescribeGroups answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// DescribeGroups' answer for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub error: ErrorCode,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol, only while Stable (as Kafka reports it).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// ListGroups' answer for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

/// What the coordinator asks of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The answer to the JoinGroup sent with this token.
    Join(Token, JoinResponse),
    /// The answer to the SyncGroup sent with this token.
    Sync(Token, SyncResponse),
    /// The answer to the OffsetCommit sent with this token.
    Commit(Token, CommitResponse),
    /// Make these offsets durable, then call `persisted(token, ok)`; the commit is answered
    /// (and the offsets become visible) only then.
    Persist {
        token: Token,
        group_id: String,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
}
