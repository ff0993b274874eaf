//! One replicated partition: its Raft group over the partition's own segment files, and the
//! produce path through it (propose on the leader, answer on commit).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;

use super::hard_state::{HardStateFile, LogStartFile};
use crate::codec::batch::{self, BatchHeader, IntactBatches};
use crate::log::{AppendInfo, LogError};
use crate::net::peers::PeerNetwork;
use crate::partition::{Appended, Partition};
use crate::producers::{SequenceCheck, SequenceError};
use crate::raft::driver::{CommitError, Group, Host};
use crate::raft::segment_log::{BatchStore, LogStart, SegmentRaftLog};
use crate::raft::wire::GroupKey;
use crate::raft::{HardState, Index, Message, NodeId, RaftLog, Role, Term};

/// The Raft log of a replica: the partition's segment files.
pub type PartitionRaftLog = SegmentRaftLog<PartitionStore>;

/// The partition seen as the Raft log's batch store: appends, truncations, deletions and
/// resets keep the partition's producer table and high watermark in step (see
/// `Partition::replica_*`); the log start record lives in its own file.
pub struct PartitionStore(pub Arc<Partition>, pub LogStartFile);

fn record_failed(e: String) -> LogError {
    LogError::Io {
        context: "log start record".to_string(),
        source: std::io::Error::other(e),
    }
}

impl BatchStore for PartitionStore {
    fn append_batch(&mut self, batch: IntactBatches, epoch: i32) -> Result<AppendInfo, LogError> {
        self.0.replica_append(batch, epoch)
    }
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.0.replica_truncate(offset)
    }
    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.0.replica_read(offset, max_offset, max_bytes)
    }
    fn log_start_offset(&self) -> i64 {
        self.0.offsets().log_start
    }
    fn log_end_offset(&self) -> i64 {
        self.0.offsets().log_end
    }
    fn load_start(&self) -> Result<Option<LogStart>, LogError> {
        self.1.load().map_err(record_failed)
    }
    fn save_start(&mut self, start: &LogStart) -> Result<(), LogError> {
        self.1.save(start).map_err(record_failed)
    }
    fn start_after_deleting_before(&self, offset: i64) -> i64 {
        self.0.replica_start_after_deleting_before(offset)
    }
    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
        self.0.replica_delete_segments_before(offset)
    }
    fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.0.replica_reset(offset)
    }
}

/// Carries out a replica group's outputs.
pub struct ReplicaHost {
    pub key: GroupKey,
    pub net: Arc<PeerNetwork>,
    pub partition: Arc<Partition>,
    pub state: HardStateFile,
    /// Propose → commit latency on the leader (`None` when metrics are off).
    pub commit_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
    /// The term this node leads in, until an entry of that term is committed (then the
    /// partition serves as leader); `None` otherwise.
    pub leading_unsettled: std::sync::Mutex<Option<Term>>,
}

impl Host<PartitionRaftLog> for ReplicaHost {
    fn send(&self, msg: Message) {
        self.net.send_raft(self.key.clone(), msg);
    }

    fn save_hard_state(&self, hs: HardState) -> Result<(), String> {
        self.state.save(hs)
    }

    fn sync_log(
        &self,
        log: &PartitionRaftLog,
        index: Index,
    ) -> BoxFuture<'static, Result<(), String>> {
        let end = log.end_offset(index);
        let p = self.partition.clone();
        Box::pin(async move {
            let Some(end) = end else {
                // Truncated since: nothing to sync (the core ignores the stale answer).
                return Ok(());
            };
            loop {
                match p.wait_durable(end, Duration::from_secs(30)).await {
                    Ok(()) => return Ok(()),
                    Err(crate::partition::DurabilityError::TimedOut) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
    }

    fn committed(&self, log: &PartitionRaftLog, commit: Index) {
        if let Some(hw) = log.end_offset(commit) {
            self.partition.set_high_watermark(hw);
        }
        let mut unsettled = self
            .leading_unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if unsettled.is_some() && *unsettled == log.term(commit) {
            // An entry of the leader's own term is committed, so the commit index (and the
            // high watermark) covers everything any earlier leader committed: only now does
            // the partition serve reads and writes as leader. Before, a new leader's commit
            // may lag what its predecessor published (followers learn the commit a round
            // late, and a restarted node's saved commit may be a tick old), and serving
            // that would show consumers a high watermark that went back.
            *unsettled = None;
            self.partition.set_leading(true);
        }
    }

    fn role_changed(&self, role: Role, term: Term, leader: Option<NodeId>) {
        *self
            .leading_unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (role == Role::Leader).then_some(term);
        self.partition.set_leading(false);
        tracing::info!(topic = %self.partition.topic, partition = self.partition.index, ?role, term, ?leader, "replica role changed");
    }

    fn commit_latency(&self, latency: Duration) {
        if let Some(h) = &self.commit_seconds {
            h.observe(latency.as_secs_f64());
        }
    }
}

/// A running replica.
#[derive(Clone)]
pub struct Replica {
    pub partition: Arc<Partition>,
    pub group: Group<PartitionRaftLog>,
    /// The partition's replicas (Kafka node ids), from the topic's assignment.
    pub replicas: Vec<i32>,
}

/// Why a replicated produce was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this node is not the partition's leader")]
    NotLeader,
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("append failed: {0}")]
    Storage(String),
    #[error("the replica stopped")]
    Stopped,
}

/// How a replicated produce that was not acknowledged ended, for Kafka Produce and gRPC
/// Publish alike (`Replica::settle`).
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The leader refused the batch before proposing it (`Stopped` included: the group task
    /// ended before answering).
    #[error(transparent)]
    Refused(ReplicaError),
    /// Another entry was committed where this one was: it was not stored and never will be.
    #[error("leadership changed before the batch was committed; it was not stored")]
    NotStored,
    /// No definite answer (commit wait timed out, leadership lost, group stopped): the batch
    /// may or may not be stored.
    #[error("{0}; the records may or may not be stored")]
    Unknown(CommitError),
}

/// A batch the leader took: where it went, and (unless it was a retry already in the log)
/// the entry to wait for.
#[derive(Debug, Clone, Copy)]
pub struct Proposed {
    pub appended: Appended,
    pub entry: Option<(Index, Term)>,
}

impl Replica {
    /// Retention for a replica: the whole segments the topic's limits would delete now, below
    /// the high watermark (so only committed entries), go through the Raft group, which
    /// compacts its log up to there ([`crate::raft::RaftNode::compact`]), never past `floor`
    /// (this node's retention hold, if any). Returns the log start afterwards.
    pub async fn enforce_retention(&self, now_ms: i64, floor: Option<i64>) -> Result<i64, String> {
        let target = self.partition.retention_target(now_ms, floor);
        if target <= self.partition.offsets().log_start {
            return Ok(self.partition.offsets().log_start);
        }
        let compacted = self
            .group
            .with_core(move |core| {
                let log = core.log();
                // The entry that ends where the first kept segment starts.
                let index = if log.end_offset(log.last_index()) == Some(target) {
                    Some(log.last_index())
                } else {
                    log.index_for_offset(target).and_then(|i| i.checked_sub(1))
                };
                match index {
                    Some(index) => core.compact(index).map(|_| ()).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            })
            .await
            .ok_or_else(|| "the replica stopped".to_string())?;
        compacted?;
        Ok(self.partition.offsets().log_start)
    }

    /// Leader only: check the batch against the producer table and propose it, its base
    /// offset set to the log end, as one Raft entry. Inside the group's task, so nothing
    /// appends between the check and the proposal.
    ///
    /// The proposal is queued when this is called (not when the future is first polled), so
    /// batches of pipelined requests are proposed in request order.
    pub fn propose(
        &self,
        batch: BytesMut,
        header: BatchHeader,
    ) -> impl std::future::Future<Output = Result<Proposed, ReplicaError>> + Send + 'static {
        self.propose_checked(None, batch, header)
    }

    /// [`Replica::propose`], and with `in_term` only while this node leads at exactly that
    /// term ([`Replica::propose_in_term`]).
    fn propose_checked(
        &self,
        in_term: Option<Term>,
        mut batch: BytesMut,
        header: BatchHeader,
    ) -> impl std::future::Future<Output = Result<Proposed, ReplicaError>> + Send + 'static {
        let p = self.partition.clone();
        let queued = self.group.submit(move |core| {
            match in_term {
                Some(want) => may_propose_in(core.role(), core.term(), want)?,
                None if core.role() != Role::Leader => return Err(ReplicaError::NotLeader),
                None => {}
            }
            if let SequenceCheck::Duplicate(dup) = p.check_sequence(&header)? {
                return Ok(Proposed {
                    appended: Appended {
                        base_offset: dup.base_offset,
                        last_offset: dup.last_offset,
                        duplicate: true,
                    },
                    entry: None,
                });
            }
            let base = p.offsets().log_end;
            batch::set_base_offset(&mut batch, base);
            let term = core.term();
            // Stamped as the log will store it (leader epoch = Raft term), so that the Raft
            // log's recent entries share these bytes for the Append messages instead of a
            // copy. A term past i32 is refused by the log.
            if let Ok(epoch) = i32::try_from(term) {
                batch::set_leader_epoch(&mut batch, epoch);
            }
            let index = core.propose(batch.freeze()).map_err(|e| match e {
                crate::raft::ProposeError::NotLeader { .. } => ReplicaError::NotLeader,
                crate::raft::ProposeError::Failed(e) => ReplicaError::Storage(e.to_string()),
            })?;
            Ok(Proposed {
                appended: Appended {
                    base_offset: base,
                    last_offset: base + i64::from(header.last_offset_delta),
                    duplicate: false,
                },
                entry: Some((index, term)),
            })
        });
        async move {
            match queued {
                Some(rx) => rx.await.map_err(|_| ReplicaError::Stopped)?,
                None => Err(ReplicaError::Stopped),
            }
        }
    }

    /// Wait until what `propose` returned is committed. A retry found in the log waits for
    /// the high watermark to pass it.
    pub async fn wait_committed(
        &self,
        proposed: &Proposed,
        timeout: Duration,
    ) -> Result<(), CommitError> {
        match proposed.entry {
            Some((index, term)) => self.group.wait_committed(index, term, timeout).await,
            None => {
                let last = proposed.appended.last_offset;
                let mut hw = self.partition.watch_high_watermark();
                let outcome = match tokio::time::timeout(timeout, hw.wait_for(|h| *h > last)).await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(_)) => Err(CommitError::Stopped),
                    Err(_) => Err(CommitError::TimedOut),
                };
                outcome
            }
        }
    }

    /// The shared end of a replicated produce (Kafka Produce and gRPC Publish): await what
    /// [`Replica::propose`] queued, then, when `commit_wait` is set (acks=all), wait for the
    /// entry to commit. Without it (acks=1) the answer comes on the leader's append: the
    /// records are visible to consumers only once committed, and may still be replaced.
    pub async fn settle(
        &self,
        proposed: impl std::future::Future<Output = Result<Proposed, ReplicaError>>,
        commit_wait: Option<Duration>,
    ) -> Result<Proposed, SettleError> {
        let p = proposed.await.map_err(SettleError::Refused)?;
        if let Some(wait) = commit_wait {
            match self.wait_committed(&p, wait).await {
                Ok(()) => {}
                Err(CommitError::Replaced) => return Err(SettleError::NotStored),
                Err(e) => return Err(SettleError::Unknown(e)),
            }
        }
        Ok(p)
    }

    /// Whether this node leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.group.leadership().role == Role::Leader
    }

    /// [`Replica::propose`], but only while this node leads at exactly `term`: a writer that
    /// took leadership at `term` (the embedded processor's journal) never appends after it
    /// was deposed, even if this node has since led again at a later term.
    pub fn propose_in_term(
        &self,
        term: Term,
        batch: BytesMut,
        header: BatchHeader,
    ) -> impl std::future::Future<Output = Result<Proposed, ReplicaError>> + Send + 'static {
        self.propose_checked(Some(term), batch, header)
    }

    /// `Some(term)` once this node leads and an entry of its own term is committed (so the
    /// high watermark covers everything a former leader committed); `None` otherwise.
    pub async fn settled_leader_term(&self) -> Option<Term> {
        self.group
            .with_core(|core| {
                let settled = core.role() == Role::Leader
                    && core.log().term(core.commit()) == Some(core.term());
                settled.then(|| core.term())
            })
            .await
            .flatten()
    }

    /// Leader only, read in one step of the group's task: the current term, the log's
    /// `(term, first offset)` runs ([`SegmentRaftLog::epoch_starts`]) and its end offset, for
    /// OffsetForLeaderEpoch.
    pub async fn epoch_history(&self) -> Result<(Term, Vec<(Term, i64)>, i64), ReplicaError> {
        self.group
            .with_core(|core| {
                if core.role() != Role::Leader {
                    return Err(ReplicaError::NotLeader);
                }
                let log = core.log();
                let end = log.store().0.offsets().log_end;
                Ok((core.term(), log.epoch_starts(), end))
            })
            .await
            .unwrap_or(Err(ReplicaError::Stopped))
    }
}

/// Whether a core in `role` at `term` may take a proposal meant for `want`.
fn may_propose_in(role: Role, term: Term, want: Term) -> Result<(), ReplicaError> {
    if role == Role::Leader && term == want {
        Ok(())
    } else {
        Err(ReplicaError::NotLeader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_in_a_term_need_leadership_at_that_term() {
        assert!(may_propose_in(Role::Leader, 5, 5).is_ok());
        for (role, term, want) in [
            (Role::Leader, 6, 5),
            (Role::Leader, 4, 5),
            (Role::Follower, 5, 5),
            (Role::Candidate, 5, 5),
            (Role::PreCandidate, 5, 5),
        ] {
            assert!(
                matches!(
                    may_propose_in(role, term, want),
                    Err(ReplicaError::NotLeader)
                ),
                "{role:?} at {term}, wanted {want}"
            );
        }
    }
}
