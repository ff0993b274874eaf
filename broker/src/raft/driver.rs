//! Runs one Raft group on tokio: the task that owns a [`RaftNode`], ticks it, feeds it messages
//! and proposals, and carries out its outputs through a [`Host`] (network, disk, commit).
//!
//! One task per group owns the core, so the core needs no lock and every input is applied in
//! one order. Work that waits (an fsync of the log) runs beside the task and comes back as an
//! input; the hard state (term, vote) is saved before the loop goes on, since the core holds
//! every message back until it is durable anyway.
//!
//! Proposals are closures run inside the task with the core at hand ([`Group::with_core`]), so
//! the caller can check and prepare its payload against the log as it is at that instant (the
//! partition rewrites a batch's base offset to the log end and checks idempotent-producer
//! sequences there) and learn the entry's index and term. [`Group::wait_committed`] then says
//! whether that very entry (same index *and* term) was committed.
//!
//! **A commit never waits for the hard-state file.** A hard state whose term or vote changed is
//! saved before the task goes on (the core holds its messages until then anyway). One that
//! only moves the commit index is handed to a saver task beside the group, which writes the
//! latest one at most once per tick: Raft needs no durable commit index (a restarted node
//! learns it again from the leader), it only lets a restarted node publish its high watermark
//! sooner. Saving it inline cost every commit a file replace (two fsyncs) during which the
//! group took no input, so proposals, acknowledgements and log syncs queued behind it (RF-3
//! produce latency of tens of ms at 2,000 requests/s, BENCHMARKS.md, Replication run 6).
//! Both paths write the newest hard state under one lock, so the file only moves forward.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch};

use super::{HardState, Index, Message, NodeId, Output, RaftError, RaftLog, RaftNode, Role, Term};

/// What the group's side effects are carried out with.
pub trait Host<L: RaftLog>: Send + Sync + 'static {
    /// Send a message to a peer; never blocks (loss is tolerated).
    fn send(&self, msg: Message);
    /// Make term, vote and commit durable (runs on a blocking thread).
    fn save_hard_state(&self, hs: HardState) -> Result<(), String>;
    /// A future that resolves once the log is durable through `index` (run beside the task).
    fn sync_log(&self, log: &L, index: Index) -> BoxFuture<'static, Result<(), String>>;
    /// Entries up to `commit` are committed (called in order, never decreasing, with the log
    /// at hand: the partition publishes its high watermark, the metadata group applies).
    fn committed(&self, log: &L, commit: Index);
    /// The role, term or leader changed.
    fn role_changed(&self, _role: Role, _term: Term, _leader: Option<NodeId>) {}
    /// An entry proposed on this node (the leader) committed `latency` after its proposal.
    fn commit_latency(&self, _latency: Duration) {}
}

/// What a group reports for observation (metrics); read with [`Group::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Times this node learned of a new leader (another node, or the same one in a new term)
    /// since the group started.
    pub leader_changes: u64,
    /// The last index of this node's log.
    pub last_index: Index,
    /// Leader only: each follower and its matched (durable, equal) index.
    pub matched: Vec<(NodeId, Index)>,
}

/// Proposals whose commit latency is still to be measured, at most this many.
const MAX_TIMED_PROPOSALS: usize = 65_536;

/// Timing of a group, in wall-clock terms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// One Raft tick.
    pub tick: Duration,
}

/// Who leads the group, as this node last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    /// The commit index this node knows.
    pub commit: Index,
}

/// Why waiting for an entry's commit gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Another entry was committed at that index: this one never will be.
    #[error("the entry was replaced by a new leader")]
    Replaced,
    /// The group stopped (shutdown or a storage failure) before the entry committed.
    #[error("the replica stopped")]
    Stopped,
    /// No answer in time: the entry may still commit.
    #[error("timed out waiting for the commit")]
    TimedOut,
    /// This node stopped leading before the entry committed; the next leader may still
    /// commit it (the outcome is unknown).
    #[error("leadership was lost before the commit; the outcome is unknown")]
    LeadershipLost,
}

type CoreFn<L> = Box<dyn FnOnce(&mut RaftNode<L>) + Send>;

/// Where a commit waiter is answered.
type CommitReply = oneshot::Sender<Result<(), CommitError>>;

enum Input<L: RaftLog> {
    Step(Message),
    Core(CoreFn<L>),
    LogPersisted {
        index: Index,
        term: Term,
    },
    /// A log sync or a background hard-state save failed: the group cannot go on.
    StorageFailed(String),
    WaitCommit {
        index: Index,
        term: Term,
        reply: CommitReply,
    },
    /// Stop the task (a clean shutdown); answered once the task has let go of its core.
    Stop(oneshot::Sender<()>),
}

/// A handle on a running group; cheap to clone. The task stops when every handle is dropped.
pub struct Group<L: RaftLog> {
    tx: mpsc::UnboundedSender<Input<L>>,
    leadership: watch::Receiver<Leadership>,
    stats: Arc<Mutex<GroupStats>>,
}

impl<L: RaftLog> Clone for Group<L> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            leadership: self.leadership.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<L: RaftLog + Send + 'static> Group<L> {
    /// Start the task for `core` (already built from the durable state).
    pub fn spawn<H: Host<L>>(core: RaftNode<L>, host: Arc<H>, timing: Timing) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let leadership = watch::Sender::new(Leadership {
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            commit: core.commit(),
        });
        let rx_leadership = leadership.subscribe();
        let stats = Arc::new(Mutex::new(GroupStats::default()));
        let hard_state = core.hard_state();
        let saved = Arc::new(HardStateSlot {
            latest: Mutex::new(hard_state),
            saved: Mutex::new(hard_state),
        });
        let (save_wanted, save_requests) = mpsc::channel(1);
        tokio::spawn(save_commits(
            host.clone(),
            saved.clone(),
            save_requests,
            tx.downgrade(),
            timing.tick,
        ));
        let task = Task {
            durable: (hard_state.term, hard_state.vote),
            saved,
            save_wanted,
            core,
            host,
            rx,
            tx: tx.downgrade(),
            leadership,
            waiters: BTreeMap::new(),
            committed: 0,
            stats: stats.clone(),
            leader_seen: None,
            timed: VecDeque::new(),
            stop: None,
        };
        let mut task = task;
        let commit = task.core.commit();
        if commit > 0 {
            // The commit index survived the restart: publish it before anything else.
            task.committed = commit;
            task.host.committed(task.core.log(), commit);
        }
        tokio::spawn(task.run(timing));
        Self {
            tx,
            leadership: rx_leadership,
            stats,
        }
    }

    /// Hand a message from a peer to the core.
    pub fn step(&self, msg: Message) {
        let _ = self.tx.send(Input::Step(msg));
    }

    /// Run `f` inside the task with the core at hand (outputs are carried out afterwards) and
    /// return what it returns; `None` if the group has stopped.
    pub async fn with_core<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RaftNode<L>) -> T + Send + 'static,
    ) -> Option<T> {
        self.submit(f)?.await.ok()
    }

    /// Queue `f` to run inside the task now, in call order with every other input, and return
    /// where its result will arrive (`None` if the group has stopped). Lets a caller keep the
    /// order of requests while awaiting their results later.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RaftNode<L>) -> T + Send + 'static,
    ) -> Option<oneshot::Receiver<T>> {
        let (reply, rx) = oneshot::channel();
        let run: CoreFn<L> = Box::new(move |core| {
            let _ = reply.send(f(core));
        });
        self.tx.send(Input::Core(run)).ok()?;
        Some(rx)
    }

    /// Wait until the entry at `index` of `term` is committed (Ok), known replaced, or
    /// `timeout` passes.
    pub async fn wait_committed(
        &self,
        index: Index,
        term: Term,
        timeout: Duration,
    ) -> Result<(), CommitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::WaitCommit { index, term, reply })
            .map_err(|_| CommitError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CommitError::Stopped),
            Err(_) => Err(CommitError::TimedOut),
        }
    }

    /// Stop the group's task and wait until it has dropped its core (and with it the log):
    /// commit waiters get `CommitError::Stopped`, later calls find the group stopped. Returns at
    /// once if it already stopped.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Input::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// The latest leadership this node knows.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// Leader changes seen, log end and (on the leader) each follower's matched index.
    pub fn stats(&self) -> GroupStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes of leadership (and commit index).
    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }
}

/// The hard state to save and the one on disk. `latest` is only ever replaced by a newer one
/// (the core's term and commit never decrease, a vote is set once per term); a save writes
/// `latest` while holding `saved`, so two saves never interleave and the file never goes back.
struct HardStateSlot {
    latest: Mutex<HardState>,
    saved: Mutex<HardState>,
}

impl HardStateSlot {
    /// Write the newest hard state unless it is already on disk (on a blocking thread: the
    /// `saved` lock is held across the write).
    fn save_latest(
        &self,
        save: impl FnOnce(HardState) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        let hs = *self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if hs != *saved {
            save(hs)?;
            *saved = hs;
        }
        Ok(())
    }
}

/// Beside each group: saves the hard state when only the commit index moved, at most once per
/// `tick`, never holding up the group. Ends when the group task does (its sender drops).
async fn save_commits<L: RaftLog + Send + 'static, H: Host<L>>(
    host: Arc<H>,
    slot: Arc<HardStateSlot>,
    mut requests: mpsc::Receiver<()>,
    group: mpsc::WeakUnboundedSender<Input<L>>,
    tick: Duration,
) {
    while requests.recv().await.is_some() {
        let (host, slot) = (host.clone(), slot.clone());
        let saved =
            tokio::task::spawn_blocking(move || slot.save_latest(|hs| host.save_hard_state(hs)))
                .await
                .unwrap_or_else(|e| Err(format!("hard-state task failed: {e}")));
        if let Err(e) = saved {
            if let Some(tx) = group.upgrade() {
                let _ = tx.send(Input::StorageFailed(e));
            }
            return;
        }
        tokio::time::sleep(tick).await;
    }
}

struct Task<L: RaftLog, H> {
    /// Term and vote as last saved (a hard state that changes neither is saved beside the
    /// task, see the module docs).
    durable: (Term, Option<NodeId>),
    saved: Arc<HardStateSlot>,
    /// Wakes `save_commits` (capacity 1: a request already queued covers this one too).
    save_wanted: mpsc::Sender<()>,
    core: RaftNode<L>,
    host: Arc<H>,
    rx: mpsc::UnboundedReceiver<Input<L>>,
    tx: mpsc::WeakUnboundedSender<Input<L>>,
    leadership: watch::Sender<Leadership>,
    /// Commit waiters by index: (term of the awaited entry, reply).
    waiters: BTreeMap<Index, Vec<(Term, CommitReply)>>,
    committed: Index,
    /// Published for observation after each input.
    stats: Arc<Mutex<GroupStats>>,
    /// The last leader (and its term) this node learned of.
    leader_seen: Option<(NodeId, Term)>,
    /// Leader only: (last index, term, when) of each proposal not yet committed.
    timed: VecDeque<(Index, Term, Instant)>,
    /// Set by `Input::Stop`: the task ends after this input and then answers here.
    stop: Option<oneshot::Sender<()>>,
}

impl<L: RaftLog + Send + 'static, H: Host<L>> Task<L, H> {
    async fn run(mut self, timing: Timing) {
        let mut ticker = tokio::time::interval(timing.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                _ = ticker.tick() => self.core.tick(),
                input = self.rx.recv() => match input {
                    None => return,
                    Some(input) => self.input(input),
                },
            };
            if let Some(done) = self.stop.take() {
                self.abandon();
                drop(self);
                let _ = done.send(());
                return;
            }
            if let Err(e) = result {
                self.fail(&e.to_string());
                return;
            }
            if let Err(e) = self.carry_out().await {
                self.fail(&e);
                return;
            }
        }
    }

    fn input(&mut self, input: Input<L>) -> Result<(), RaftError> {
        match input {
            Input::Step(m) => self.core.step(m),
            Input::Core(f) => {
                let before = self.core.log().last_index();
                f(&mut self.core);
                let last = self.core.log().last_index();
                if last > before && self.core.role() == Role::Leader {
                    if self.timed.len() >= MAX_TIMED_PROPOSALS {
                        self.timed.pop_front();
                    }
                    self.timed
                        .push_back((last, self.core.term(), Instant::now()));
                }
                Ok(())
            }
            Input::LogPersisted { index, term } => self.core.log_persisted(index, term),
            Input::StorageFailed(e) => Err(RaftError::Storage(super::StorageError::Io(e))),
            Input::Stop(done) => {
                self.stop = Some(done);
                Ok(())
            }
            Input::WaitCommit { index, term, reply } => {
                if index <= self.committed {
                    let _ = reply.send(self.outcome(index, term));
                } else if self.core.role() != Role::Leader {
                    let _ = reply.send(Err(CommitError::LeadershipLost));
                } else {
                    self.waiters.entry(index).or_default().push((term, reply));
                }
                Ok(())
            }
        }
    }

    /// Whether the committed entry at `index` is the one of `term`.
    fn outcome(&self, index: Index, term: Term) -> Result<(), CommitError> {
        if self.core.log().term(index) == Some(term) {
            Ok(())
        } else {
            Err(CommitError::Replaced)
        }
    }

    /// Carry out everything the core asked for, until it asks for nothing more.
    async fn carry_out(&mut self) -> Result<(), String> {
        loop {
            let outputs = self.core.drain();
            if outputs.is_empty() {
                self.publish_stats();
                return Ok(());
            }
            for out in outputs {
                match out {
                    Output::Send(m) => self.host.send(m),
                    Output::PersistHardState(hs) => {
                        *self
                            .saved
                            .latest
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = hs;
                        if (hs.term, hs.vote) == self.durable {
                            // Only the commit index moved: saved beside the group.
                            let _ = self.save_wanted.try_send(());
                            continue;
                        }
                        let (host, slot) = (self.host.clone(), self.saved.clone());
                        tokio::task::spawn_blocking(move || {
                            slot.save_latest(|hs| host.save_hard_state(hs))
                        })
                        .await
                        .map_err(|e| format!("hard-state task failed: {e}"))??;
                        self.durable = (hs.term, hs.vote);
                        self.core
                            .hard_state_persisted(hs)
                            .map_err(|e| e.to_string())?;
                    }
                    Output::PersistLog { index, term } => {
                        let sync = self.host.sync_log(self.core.log(), index);
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            let input = match sync.await {
                                Ok(()) => Input::LogPersisted { index, term },
                                Err(e) => Input::StorageFailed(e),
                            };
                            if let Some(tx) = tx.upgrade() {
                                let _ = tx.send(input);
                            }
                        });
                    }
                    Output::Committed(c) => {
                        if c > self.committed {
                            self.committed = c;
                            self.host.committed(self.core.log(), c);
                            while let Some(&(index, term, at)) = self.timed.front() {
                                if index > c {
                                    break;
                                }
                                self.timed.pop_front();
                                if self.core.log().term(index) == Some(term) {
                                    self.host.commit_latency(at.elapsed());
                                }
                            }
                            let rest = self.waiters.split_off(&(c + 1));
                            let done = std::mem::replace(&mut self.waiters, rest);
                            for (index, ws) in done {
                                for (term, reply) in ws {
                                    let _ = reply.send(self.outcome(index, term));
                                }
                            }
                        }
                    }
                    Output::RoleChanged { role, term, leader } => {
                        if let Some(l) = leader {
                            if self.leader_seen != Some((l, term)) {
                                self.leader_seen = Some((l, term));
                                self.stats
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .leader_changes += 1;
                            }
                        }
                        if role != Role::Leader {
                            self.timed.clear();
                            // This node will commit nothing more itself (a cut-off leader would
                            // otherwise hold its callers until the link heals). The entries may
                            // still be committed by the next leader: the outcome is unknown.
                            for (_, ws) in std::mem::take(&mut self.waiters) {
                                for (_, reply) in ws {
                                    let _ = reply.send(Err(CommitError::LeadershipLost));
                                }
                            }
                        }
                        self.host.role_changed(role, term, leader);
                    }
                }
            }
            let now = Leadership {
                role: self.core.role(),
                term: self.core.term(),
                leader: self.core.leader(),
                commit: self.committed,
            };
            self.leadership.send_if_modified(|l| {
                let changed = *l != now;
                *l = now;
                changed
            });
        }
    }

    /// Publish the log end and the followers' progress (only when they changed).
    fn publish_stats(&self) {
        let last = self.core.log().last_index();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.last_index = last;
        if !stats.matched.iter().copied().eq(self.core.progress()) {
            stats.matched.clear();
            stats.matched.extend(self.core.progress());
        }
    }

    /// The group cannot go on safely (its storage failed): stop, answering every waiter.
    fn fail(&mut self, why: &str) {
        tracing::error!("raft group stopped: {why}");
        self.abandon();
    }

    /// The group is about to stop: every commit waiter is told so, and nobody is leader here.
    fn abandon(&mut self) {
        for (_, ws) in std::mem::take(&mut self.waiters) {
            for (_, reply) in ws {
                let _ = reply.send(Err(CommitError::Stopped));
            }
        }
        self.leadership.send_modify(|l| {
            l.role = Role::Follower;
            l.leader = None;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::raft::{Config, MemRaftLog};

    /// Routes messages between in-process groups; `cut` drops everything to and from a node.
    #[derive(Default)]
    struct Net {
        groups: Mutex<BTreeMap<NodeId, Group<MemRaftLog>>>,
        cut: Mutex<Option<NodeId>>,
    }

    struct TestHost {
        net: Arc<Net>,
        commits: Mutex<Vec<Index>>,
        latencies: Mutex<Vec<Duration>>,
        /// Every hard state saved, in order.
        saves: Mutex<Vec<HardState>>,
        /// While set, a save that changes only the commit index blocks (a slow disk).
        hold: (std::sync::Mutex<bool>, std::sync::Condvar),
    }

    impl TestHost {
        fn hold_commit_saves(&self, on: bool) {
            *self.hold.0.lock().unwrap() = on;
            self.hold.1.notify_all();
        }
    }

    impl Host<MemRaftLog> for TestHost {
        fn send(&self, msg: Message) {
            let cut = *self.net.cut.lock().unwrap();
            if cut == Some(msg.to) || cut == Some(msg.from) {
                return;
            }
            if let Some(g) = self.net.groups.lock().unwrap().get(&msg.to) {
                g.step(msg);
            }
        }
        fn save_hard_state(&self, hs: HardState) -> Result<(), String> {
            let last = self.saves.lock().unwrap().last().copied();
            if last.is_some_and(|l| (l.term, l.vote) == (hs.term, hs.vote)) {
                let mut held = self.hold.0.lock().unwrap();
                while *held {
                    held = self.hold.1.wait(held).unwrap();
                }
            }
            self.saves.lock().unwrap().push(hs);
            Ok(())
        }
        fn sync_log(&self, _: &MemRaftLog, _: Index) -> BoxFuture<'static, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn committed(&self, _: &MemRaftLog, commit: Index) {
            self.commits.lock().unwrap().push(commit);
        }
        fn commit_latency(&self, latency: Duration) {
            self.latencies.lock().unwrap().push(latency);
        }
    }

    fn cluster() -> (Arc<Net>, Vec<Arc<TestHost>>) {
        let net = Arc::new(Net::default());
        let mut hosts = Vec::new();
        for id in 1..=3 {
            let mut cfg = Config::new(id, vec![1, 2, 3]);
            cfg.seed = id;
            let core = RaftNode::new(cfg, MemRaftLog::new(), HardState::default()).unwrap();
            let host = Arc::new(TestHost {
                net: net.clone(),
                commits: Mutex::new(Vec::new()),
                latencies: Mutex::new(Vec::new()),
                saves: Mutex::new(Vec::new()),
                hold: Default::default(),
            });
            let g = Group::spawn(
                core,
                host.clone(),
                Timing {
                    tick: Duration::from_millis(5),
                },
            );
            net.groups.lock().unwrap().insert(id, g);
            hosts.push(host);
        }
        (net, hosts)
    }

    async fn leader(net: &Net) -> (NodeId, Group<MemRaftLog>) {
        loop {
            let groups: Vec<_> = net.groups.lock().unwrap().clone().into_iter().collect();
            let cut = *net.cut.lock().unwrap();
            for (id, g) in groups {
                if g.leadership().role == Role::Leader && Some(id) != cut {
                    return (id, g);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn propose(g: &Group<MemRaftLog>, data: &'static [u8]) -> Option<(Index, Term)> {
        g.with_core(move |core| {
            let term = core.term();
            core.propose(Bytes::from_static(data))
                .ok()
                .map(|i| (i, term))
        })
        .await
        .flatten()
    }

    #[tokio::test]
    async fn a_proposal_commits_and_a_new_leader_takes_over_after_a_cut() {
        let (net, hosts) = cluster();
        let (id, g) = leader(&net).await;
        let (index, term) = propose(&g, b"one").await.expect("leader accepts");
        g.wait_committed(index, term, Duration::from_secs(5))
            .await
            .expect("committed");
        // The leader timed its proposal, and reports both followers' progress.
        let host = &hosts[usize::try_from(id - 1).unwrap()];
        assert_eq!(host.latencies.lock().unwrap().len(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stats = g.stats();
            assert_eq!(stats.leader_changes, 1);
            assert_eq!(stats.last_index, index);
            if stats.matched
                == vec![(1, index), (2, index), (3, index)]
                    .into_iter()
                    .filter(|(n, _)| *n != id)
                    .collect::<Vec<_>>()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every node learns the commit.
        for h in &hosts {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while h.commits.lock().unwrap().last().copied().unwrap_or(0) < index {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a node never learned the commit"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        // Cut the leader off: a proposal there never commits; another leader takes over.
        *net.cut.lock().unwrap() = Some(id);
        let stale = propose(&g, b"lost").await;
        if let Some((si, st)) = stale {
            // The cut-off leader steps down (check-quorum) and answers its waiter at once
            // rather than holding it until the link heals: the outcome is unknown.
            assert_eq!(
                g.wait_committed(si, st, Duration::from_secs(5)).await,
                Err(CommitError::LeadershipLost)
            );
        }
        let (id2, g2) = leader(&net).await;
        assert_ne!(id, id2);
        assert!(g2.stats().leader_changes >= 2, "a new leader in a new term");
        let (i2, t2) = propose(&g2, b"two").await.expect("new leader accepts");
        g2.wait_committed(i2, t2, Duration::from_secs(5))
            .await
            .expect("committed on the new leader");
        *net.cut.lock().unwrap() = None;
        if let Some((si, st)) = stale {
            // Once the old leader rejoins and learns the commit, its entry is known replaced.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while g.leadership().commit < si {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the old leader never caught up"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(
                g.wait_committed(si, st, Duration::from_secs(5)).await,
                Err(CommitError::Replaced)
            );
        }
    }

    #[tokio::test]
    async fn commits_do_not_wait_for_the_hard_state_file_which_catches_up_and_never_goes_back() {
        let (net, hosts) = cluster();
        let (_, g) = leader(&net).await;
        let (i, t) = propose(&g, b"first").await.expect("leader accepts");
        g.wait_committed(i, t, Duration::from_secs(5))
            .await
            .unwrap();
        // A disk that never finishes saving a moved commit index: proposals still commit, one
        // after the other (a group that waited for the save would take no input any more).
        /// Releases the held saves however the test ends (a blocked thread would keep the
        /// runtime from shutting down).
        struct Release(Vec<Arc<TestHost>>);
        impl Drop for Release {
            fn drop(&mut self) {
                for h in &self.0 {
                    h.hold_commit_saves(false);
                }
            }
        }
        let release = Release(hosts.clone());
        for h in &hosts {
            h.hold_commit_saves(true);
        }
        let mut last = i;
        for _ in 0..5 {
            let (i, t) = tokio::time::timeout(Duration::from_secs(5), propose(&g, b"more"))
                .await
                .expect("the group took no input while a hard-state save was pending")
                .expect("leader accepts");
            assert_eq!(
                g.wait_committed(i, t, Duration::from_secs(5)).await,
                Ok(()),
                "a commit waited for a hard-state save"
            );
            last = i;
        }
        drop(release);
        // Released, every node's file reaches the last commit, and no save ever went back.
        for h in &hosts {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while h.saves.lock().unwrap().last().map_or(0, |s| s.commit) < last {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the hard state never caught up: {:?}",
                    h.saves.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let saves = h.saves.lock().unwrap();
            for w in saves.windows(2) {
                assert!(
                    w[1].term >= w[0].term && w[1].commit >= w[0].commit,
                    "saved hard state went back: {saves:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn without_a_quorum_nothing_commits_and_the_waiter_is_told_the_outcome_is_unknown() {
        let (net, _hosts) = cluster();
        let (_, g) = leader(&net).await;
        let (i, t) = propose(&g, b"x").await.unwrap();
        g.wait_committed(i, t, Duration::from_secs(5))
            .await
            .unwrap();
        // Stop everyone else: nothing more commits.
        let others: Vec<NodeId> = net.groups.lock().unwrap().keys().copied().collect();
        for id in others {
            if g.leadership().leader != Some(id) {
                net.groups.lock().unwrap().remove(&id);
            }
        }
        if let Some((i, t)) = propose(&g, b"y").await {
            // Within the first election timeout the wait simply times out; after it the leader
            // steps down (check-quorum) and answers at once. Either way: unknown, never Ok.
            assert_eq!(
                g.wait_committed(i, t, Duration::from_millis(20)).await,
                Err(CommitError::TimedOut)
            );
            assert_eq!(
                g.wait_committed(i, t, Duration::from_secs(5)).await,
                Err(CommitError::LeadershipLost)
            );
        }
    }

    #[tokio::test]
    async fn a_stopped_group_answers_its_waiters_and_takes_no_more_input() {
        let (net, _hosts) = cluster();
        let (id, g) = leader(&net).await;
        // Alone, the leader cannot commit: the waiter stays pending until the stop.
        let others: Vec<NodeId> = net.groups.lock().unwrap().keys().copied().collect();
        for other in others.into_iter().filter(|o| *o != id) {
            net.groups.lock().unwrap().remove(&other);
        }
        let (i, t) = propose(&g, b"never committed")
            .await
            .expect("leader accepts");
        let waiting = {
            let g = g.clone();
            tokio::spawn(async move { g.wait_committed(i, t, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::time::timeout(Duration::from_secs(5), g.stop())
            .await
            .expect("stop returns");
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter is answered at the stop")
            .expect("waiter task");
        assert_eq!(outcome, Err(CommitError::Stopped));
        assert_eq!(g.leadership().role, Role::Follower);
        assert_eq!(g.leadership().leader, None);
        assert!(g.with_core(|core| core.term()).await.is_none());
        assert_eq!(
            g.wait_committed(i, t, Duration::from_secs(5)).await,
            Err(CommitError::Stopped)
        );
        // A second stop finds the group stopped and returns at once.
        tokio::time::timeout(Duration::from_secs(1), g.stop())
            .await
            .expect("a second stop returns");
    }
}
