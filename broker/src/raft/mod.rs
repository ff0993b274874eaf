//! The replication core: Raft for one partition, as a sans-io state machine (issue 6).
//!
//! [`RaftNode`] is driven in the style of tikv/raft-rs `RawNode`: the driver calls
//! [`RaftNode::tick`] (time is only ever an input), [`RaftNode::step`] with each message that
//! arrives and [`RaftNode::propose`] for client data, then drains [`Output`]s with
//! [`RaftNode::drain`]. The core owns no sockets, files, clocks, threads or global randomness;
//! the same inputs give the same outputs, which is what lets `sim.rs` replay a seed exactly.
//!
//! Durability is explicit. The core writes entries into its [`RaftLog`] as buffered writes (as
//! `write(2)` without `fsync`) and asks for them to be made durable with
//! [`Output::PersistLog`]; the driver answers with [`RaftNode::log_persisted`]. Term and vote
//! leave as [`Output::PersistHardState`] and are answered with
//! [`RaftNode::hard_state_persisted`]; until then **no message leaves the core at all**, so
//! no reply can depend on a vote or term that a crash could still take back. A follower
//! acknowledges entries to the leader only up to what it has durable, and every node counts
//! an entry committed only once it is durable locally too.
//!
//! Log entries carry `(term, index, payload)`; the payload is opaque [`Bytes`] (a Kafka record
//! batch, later) and the index is a Raft index, not a Kafka offset: the driver maps one to the
//! other (`segment_log`: each entry is one stored batch; a [`EntryKind::Noop`] is a control
//! batch of one offset that Kafka clients skip).
//!
//! Retention compacts the log from the front ([`RaftNode::compact`]: committed entries only;
//! the partition log *is* the state machine, so a snapshot is just "where the log starts").
//! A leader whose follower needs a compacted entry sends [`MessageBody::Snapshot`]; the
//! follower keeps its log if it already holds that point, or else restarts its log empty right
//! after it ([`RaftLog::install_snapshot`]).

pub mod driver;
pub mod node;
pub mod segment_log;
pub mod storage;
pub mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use node::{Config, RaftNode};
pub use storage::{MemRaftLog, RaftLog};

/// A node's id, unique within the partition's replica set.
pub type NodeId = u64;
/// A Raft term; also the Kafka leader epoch of the partition.
pub type Term = u64;
/// A Raft log index; 0 means "before the first entry", entries start at 1.
pub type Index = u64;

/// What an entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Client data (a record batch).
    Normal,
    /// Appended by every new leader so that it can commit an entry of its own term before
    /// anything else (Raft §5.4.2, §8); carries no data (stored as a control batch, one
    /// offset that no Kafka client returns).
    Noop,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// Its position in the log, from 1.
    pub index: Index,
    /// What it is for.
    pub kind: EntryKind,
    /// Opaque data; empty for a no-op.
    pub payload: Bytes,
}

/// The state that must be durable before the core may act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom this node voted for in `term`.
    pub vote: Option<NodeId>,
    /// The highest index known committed (and durable locally). Persisting it is optional for
    /// safety: it lets a restarted node publish its committed prefix before the leader tells it
    /// again. The driver saves a hard state that moves only this lazily, beside the group (see
    /// `driver`), so after a crash it may be a little behind what the node knew.
    pub commit: Index,
}

/// The role a node plays in its current term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows the leader it last heard from, if any.
    Follower,
    /// Asking for pre-votes (Raft thesis §9.6): its term is not yet incremented.
    PreCandidate,
    /// Asking for votes in its own, incremented term.
    Candidate,
    /// Replicates its log to the others.
    Leader,
}

/// A message between two nodes of the same partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term it would campaign in.
    pub term: Term,
    /// What it says.
    pub body: MessageBody,
}

/// The message kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" — changes no state at the receiver.
    PreVote {
        /// The candidate's last log index.
        last_index: Index,
        /// The term of that entry.
        last_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// "Vote for me in `term`."
    Vote {
        /// The candidate's last log index.
        last_index: Index,
        /// The term of that entry.
        last_term: Term,
    },
    /// The answer to a vote; a grant is sent only once it is durable.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Entries (possibly none: a heartbeat) following `prev_index`.
    Append {
        /// The index just before the first entry.
        prev_index: Index,
        /// The term of the entry at `prev_index` in the leader's log.
        prev_term: Term,
        /// Consecutive entries from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The leader's log no longer holds the entries a follower needs next (retention compacted
    /// them): "my log starts after `last_index`, of `last_term`; `payload` says where". The
    /// answer is an [`MessageBody::AppendResponse`], a success with `index = last_index` only
    /// once the follower's log is durably at least there.
    Snapshot {
        /// The index of the last entry the snapshot covers (committed).
        last_index: Index,
        /// Its term.
        last_term: Term,
        /// Opaque to the core: for a data partition, the Kafka log-start offset.
        payload: Bytes,
    },
    /// The answer to an append (or to a snapshot).
    AppendResponse {
        /// On success: the follower's log matches the leader's and is durable up to here.
        /// On rejection: a hint — the leader should retry from `index + 1` (or earlier).
        index: Index,
        /// Whether `prev_index`/`prev_term` matched.
        success: bool,
        /// On rejection, the `prev_index` rejected (so the leader can tell a stale rejection).
        rejected: Index,
    },
}

/// What the driver must do, drained with [`RaftNode::drain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this message (best effort: loss, duplication and reordering are all tolerated).
    Send(Message),
    /// Make this hard state durable, then call [`RaftNode::hard_state_persisted`]. While term
    /// or vote are not durable, the core holds every outgoing message back.
    PersistHardState(HardState),
    /// Make the log durable through `index` (whose entry has `term`), then call
    /// [`RaftNode::log_persisted`] with both. A sync covers every write made before it.
    PersistLog {
        /// The last index written.
        index: Index,
        /// Its term, so that an acknowledgement for an entry since truncated is ignored.
        term: Term,
    },
    /// Entries up to this index are committed (and durable locally): they may be applied and
    /// served (the high watermark, later). Never decreases while the node runs.
    Committed(Index),
    /// The role, term or known leader changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: Term,
        /// The leader of `term`, if known.
        leader: Option<NodeId>,
    },
}

/// A proposal was refused; the caller may retry elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if this node knows it.
        leader: Option<NodeId>,
    },
    /// The node failed; see [`RaftError`].
    #[error(transparent)]
    Failed(#[from] RaftError),
}

/// The log storage failed; the node cannot continue safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// An append did not start right after the last entry.
    #[error("append at index {got} but the log ends at {last}")]
    NotContiguous {
        /// The first index appended.
        got: Index,
        /// The log's last index.
        last: Index,
    },
    /// A read or truncation outside the log.
    #[error("index {index} is outside the log (last {last})")]
    OutOfRange {
        /// The index asked for.
        index: Index,
        /// The log's last index.
        last: Index,
    },
    /// The underlying storage failed.
    #[error("log i/o: {0}")]
    Io(String),
}

/// The node cannot be created, or cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// The configuration is unusable.
    #[error("invalid raft config: {0}")]
    Config(&'static str),
    /// The durable state contradicts itself.
    #[error("hard state commit {commit} is beyond the log's last index {last}")]
    CommitBeyondLog {
        /// The durable commit index.
        commit: Index,
        /// The log's last index.
        last: Index,
    },
    /// The log storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
