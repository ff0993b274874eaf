//! The tokio-facing owner of the group coordinator and its offset store.
//!
//! Handlers call in; the coordinator runs under a mutex that is never held across an `.await`.
//! Delayed answers (JoinGroup, SyncGroup, OffsetCommit) are waited for on a oneshot keyed by
//! the token the driver handed the coordinator. Offsets are made durable (fsync) under the
//! lock, before the commit is answered; commits are small and rare next to produce traffic, so
//! the lock is not worth splitting for them yet.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::file_store::FileStore;
use super::store::{OffsetStore, StoreError};
use super::{
    CommitRequest, CommitResponse, CommittedOffset, CoordinatorConfig, ErrorCode,
    FetchOffsetsResponse, GroupCoordinator, GroupDescription, GroupListing, HeartbeatRequest,
    JoinRequest, JoinResponse, LeaveResponse, LeavingMember, Output, SyncRequest, SyncResponse,
    Token, TopicPartition,
};

/// How often sessions and rebalance timeouts are checked.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);

struct Inner {
    coordinator: GroupCoordinator,
    store: Box<dyn OffsetStore>,
    waiters: HashMap<Token, oneshot::Sender<Output>>,
    next_token: Token,
}

impl Inner {
    /// Run the coordinator's outputs: persist offsets, hand answers to their waiters.
    fn process(&mut self) {
        loop {
            let outputs = self.coordinator.drain_outputs();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                let token = match &output {
                    Output::Persist {
                        token,
                        group_id,
                        offsets,
                    } => {
                        let ok = match self.store.commit(group_id, offsets) {
                            Ok(()) => true,
                            Err(StoreError::Closed) => {
                                // A commit racing a clean shutdown: refused, nothing broken.
                                tracing::info!(group = %group_id, "offset commit refused: the broker is shutting down");
                                false
                            }
                            Err(e) => {
                                tracing::error!(group = %group_id, "cannot persist offsets: {e}");
                                false
                            }
                        };
                        self.coordinator.persisted(*token, ok);
                        continue;
                    }
                    Output::Join(t, _) | Output::Sync(t, _) | Output::Commit(t, _) => *t,
                };
                if let Some(tx) = self.waiters.remove(&token) {
                    // The requester may have gone (connection closed); nothing to do then.
                    let _ = tx.send(output);
                }
            }
        }
    }
}

/// The group coordinator, its offset store, and the waiters for delayed answers.
pub struct GroupDriver {
    inner: Mutex<Inner>,
    start: Instant,
}

impl GroupDriver {
    /// Open the durable offset store in `dir` and load its offsets.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let config = CoordinatorConfig {
            member_id_seed: uuid::Uuid::new_v4().simple().to_string(),
            ..CoordinatorConfig::default()
        };
        Ok(Self::with_store(Box::new(FileStore::open(dir)?), config))
    }

    /// A driver over any store, loading what it holds.
    pub fn with_store(store: Box<dyn OffsetStore>, config: CoordinatorConfig) -> Self {
        let mut coordinator = GroupCoordinator::new(config);
        for (group, offsets) in store.load() {
            for (tp, o) in offsets {
                coordinator.load_offset(&group, tp, o);
            }
        }
        Self {
            inner: Mutex::new(Inner {
                coordinator,
                store,
                waiters: HashMap::new(),
                next_token: 0,
            }),
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock cannot leave the coordinator half-updated
        // in a way worse than refusing every group request forever, so carry on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` with a fresh token and wait for the output answering it.
    async fn call(&self, f: impl FnOnce(&mut GroupCoordinator, u64, Token)) -> Option<Output> {
        let now = self.now();
        let rx = {
            let mut inner = self.lock();
            inner.next_token = inner.next_token.wrapping_add(1);
            let token = inner.next_token;
            let (tx, rx) = oneshot::channel();
            inner.waiters.insert(token, tx);
            f(&mut inner.coordinator, now, token);
            inner.process();
            rx
        };
        rx.await.ok()
    }

    /// JoinGroup; resolves when the rebalance completes (or the join fails).
    pub async fn join(&self, req: JoinRequest) -> JoinResponse {
        let member = req.member_id.clone();
        let group = req.group_id.clone();
        tracing::debug!(%group, %member, instance = ?req.group_instance_id, "join");
        let r = match self.call(|c, now, t| c.join(now, t, req)).await {
            Some(Output::Join(_, r)) => r,
            _ => JoinResponse::error(ErrorCode::CoordinatorNotAvailable, &member),
        };
        tracing::debug!(%group, member = %r.member_id, generation = r.generation_id, leader = %r.leader, error = r.error.name(), "join answered");
        r
    }

    /// SyncGroup; resolves once the leader's assignment is in (or the sync fails).
    pub async fn sync(&self, req: SyncRequest) -> SyncResponse {
        let (group, member, generation) = (
            req.group_id.clone(),
            req.member_id.clone(),
            req.generation_id,
        );
        let r = match self.call(|c, now, t| c.sync(now, t, req)).await {
            Some(Output::Sync(_, r)) => r,
            _ => SyncResponse::error(ErrorCode::CoordinatorNotAvailable),
        };
        tracing::debug!(%group, %member, generation, error = r.error.name(), "sync answered");
        r
    }

    /// OffsetCommit; resolves once the offsets are durable.
    pub async fn commit(&self, req: CommitRequest) -> CommitResponse {
        let partitions: Vec<TopicPartition> =
            req.offsets.iter().map(|(tp, _)| tp.clone()).collect();
        let (group, member, generation) = (
            req.group_id.clone(),
            req.member_id.clone(),
            req.generation_id,
        );
        let r = match self.call(|c, now, t| c.commit(now, t, req)).await {
            Some(Output::Commit(_, r)) => r,
            _ => CommitResponse {
                results: partitions
                    .into_iter()
                    .map(|tp| (tp, ErrorCode::CoordinatorNotAvailable))
                    .collect(),
            },
        };
        let error = r.results.first().map_or("-", |(_, e)| e.name());
        tracing::debug!(%group, %member, generation, error, "commit answered");
        r
    }

    pub fn heartbeat(&self, req: HeartbeatRequest) -> ErrorCode {
        let now = self.now();
        let mut inner = self.lock();
        let (group, member, generation) = (
            req.group_id.clone(),
            req.member_id.clone(),
            req.generation_id,
        );
        let e = inner.coordinator.heartbeat(now, req);
        inner.process();
        drop(inner);
        if e != ErrorCode::None {
            tracing::debug!(%group, %member, generation, error = e.name(), "heartbeat answered");
        }
        e
    }

    pub fn leave(&self, group_id: &str, members: Vec<LeavingMember>) -> LeaveResponse {
        let now = self.now();
        let mut inner = self.lock();
        let r = inner.coordinator.leave(now, group_id, members);
        inner.process();
        drop(inner);
        for (m, e) in &r.members {
            tracing::debug!(group = %group_id, member = %m.member_id, instance = ?m.group_instance_id, error = e.name(), "leave");
        }
        r
    }

    /// Close the durable store (its file is closed when this returns): every later commit is
    /// refused with [`StoreError::Closed`]; offsets already loaded can still be fetched.
    pub fn close_store(&self) {
        let closed: Box<dyn OffsetStore> = Box::new(super::store::ClosedStore);
        let store = std::mem::replace(&mut self.lock().store, closed);
        drop(store);
    }

    /// Cluster mode: offsets the metadata group committed for `group_id` (on any node, the
    /// coordinator included): made durable in the local store and loaded into the coordinator,
    /// so whichever node coordinates next answers OffsetFetch with them.
    pub fn apply_replicated(
        &self,
        group_id: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.store.commit(group_id, offsets)?;
        for (tp, o) in offsets {
            inner
                .coordinator
                .load_offset(group_id, tp.clone(), o.clone());
        }
        Ok(())
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> FetchOffsetsResponse {
        self.lock().coordinator.fetch_offsets(group_id, partitions)
    }

    pub fn describe(&self, group_ids: &[String]) -> Vec<GroupDescription> {
        self.lock().coordinator.describe(group_ids)
    }

    pub fn list(&self, states: &[String]) -> Vec<GroupListing> {
        self.lock().coordinator.list(states)
    }

    /// Expire sessions and rebalance timeouts.
    pub fn tick(&self) {
        let now = self.now();
        let mut inner = self.lock();
        inner.coordinator.tick(now);
        inner.process();
    }

    /// Drop every waiter: their requests are answered COORDINATOR_NOT_AVAILABLE.
    pub fn close(&self) {
        self.lock().waiters.clear();
    }
}

/// Tick the coordinator (`groups(&owner)`) every [`TICK_INTERVAL`] until shutdown, then release
/// all waiters.
pub async fn tick_loop<S: Send + Sync + 'static>(
    owner: Arc<S>,
    groups: fn(&S) -> &GroupDriver,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK_INTERVAL) => groups(&owner).tick(),
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    groups(&owner).close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::store::MemStore;
    use crate::group::Protocol;

    fn join_req(member: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: bytes::Bytes::from_static(b"m"),
            }],
            require_known_member_id: true,
        }
    }

    #[tokio::test]
    async fn join_sync_commit_through_the_driver() {
        let config = CoordinatorConfig {
            initial_rebalance_delay_ms: 0,
            ..CoordinatorConfig::default()
        };
        let d = GroupDriver::with_store(Box::new(MemStore::new()), config);
        let r = d.join(join_req("")).await;
        assert_eq!(r.error, ErrorCode::MemberIdRequired);
        let r = d.join(join_req(&r.member_id)).await;
        assert_eq!((r.error, r.generation_id), (ErrorCode::None, 1));
        let member = r.member_id.clone();
        let s = d
            .sync(SyncRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: member.clone(),
                group_instance_id: None,
                protocol_type: None,
                protocol_name: None,
                assignments: vec![(member.clone(), bytes::Bytes::from_static(b"a"))],
            })
            .await;
        assert_eq!((s.error, &s.assignment[..]), (ErrorCode::None, &b"a"[..]));
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        let c = d
            .commit(CommitRequest {
                group_id: "g".into(),
                generation_id: 1,
                member_id: member,
                group_instance_id: None,
                offsets: vec![(
                    tp.clone(),
                    crate::group::CommittedOffset {
                        offset: 5,
                        leader_epoch: -1,
                        metadata: None,
                    },
                )],
            })
            .await;
        assert_eq!(c.results, vec![(tp.clone(), ErrorCode::None)]);
        let f = d.fetch_offsets("g", Some(vec![tp]));
        assert_eq!(f.offsets[0].1.as_ref().map(|o| o.offset), Some(5));
    }
}
