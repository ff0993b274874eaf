//! [`RaftNode`]: one replica of one partition's Raft group — elections with pre-vote and
//! check-quorum, log replication, commit — as a deterministic state machine without I/O.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, Output, ProposeError,
    RaftError, RaftLog, Role, StorageError, Term,
};

/// Flow control: at most this many appends' worth of entries (`max_append_entries` each) are
/// sent beyond what a follower has acknowledged durable.
const MAX_INFLIGHT_APPENDS: u64 = 8;

/// How a node behaves; the same for every replica of a partition except `id` and `seed`.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every voter of the group, this node included.
    pub voters: Vec<NodeId>,
    /// The shortest election timeout, in ticks; each timeout is drawn from
    /// `election_tick..2 * election_tick`. Also the check-quorum and leader-lease period.
    pub election_tick: u32,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_tick: u32,
    /// Ask for pre-votes before incrementing the term (Raft thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a quorum for an election timeout, and a
    /// node that heard from a leader within the last `election_tick` ignores vote requests.
    pub check_quorum: bool,
    /// At most this many entries per append message.
    pub max_append_entries: usize,
    /// Seeds the election-timeout jitter, so that runs replay exactly.
    pub seed: u64,
}

impl Config {
    /// Defaults for node `id` of `voters`: election timeout 10..20 ticks, heartbeat every 2,
    /// pre-vote and check-quorum on.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            election_tick: 10,
            heartbeat_tick: 2,
            pre_vote: true,
            check_quorum: true,
            max_append_entries: 64,
            seed: 0,
        }
    }

    /// Refuses a configuration the node cannot run with.
    pub fn validate(&self) -> Result<(), RaftError> {
        if !self.voters.contains(&self.id) {
            return Err(RaftError::Config("voters must include this node"));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(RaftError::Config("voters must be distinct"));
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            return Err(RaftError::Config("need 0 < heartbeat_tick < election_tick"));
        }
        if self.max_append_entries == 0 {
            return Err(RaftError::Config("max_append_entries must be positive"));
        }
        Ok(())
    }
}

/// What a leader knows about one follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log is known to equal the leader's, and to be durable, up to here.
    matched: Index,
    /// The next index to send (optimistically advanced as entries are sent).
    next: Index,
    /// Heard from since the last check-quorum.
    active: bool,
}

/// One replica's Raft state machine. See the module docs of [`crate::raft`] for the contract
/// with the driver.
#[derive(Debug)]
pub struct RaftNode<L: RaftLog> {
    cfg: Config,
    log: L,
    term: Term,
    vote: Option<NodeId>,
    commit: Index,
    /// Term and vote as last confirmed durable by the driver.
    durable: (Term, Option<NodeId>),
    /// The log is durable, and still this node's log, up to here.
    persisted: Index,
    role: Role,
    leader: Option<NodeId>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_timeout: u32,
    rng: u64,
    /// Votes (or pre-votes) received in the current campaign, self excluded.
    votes: BTreeMap<NodeId, bool>,
    /// Leader only: one per other voter.
    progress: BTreeMap<NodeId, Progress>,
    /// Follower only: our log equals the current leader's up to here.
    matched: Index,
    /// Follower only: the leader's commit index as last heard.
    leader_commit: Index,
    /// Messages held until term and vote are durable.
    outbox: Vec<Message>,
    outputs: Vec<Output>,
    emitted_hard_state: HardState,
    emitted_role: (Role, Term, Option<NodeId>),
}

impl<L: RaftLog> RaftNode<L> {
    /// Starts (or restarts) a node as a follower from its durable state: `log` and `hard_state`
    /// as read back from disk.
    pub fn new(cfg: Config, log: L, hard_state: HardState) -> Result<Self, RaftError> {
        cfg.validate()?;
        let last = log.last_index();
        if hard_state.commit > last {
            return Err(RaftError::CommitBeyondLog {
                commit: hard_state.commit,
                last,
            });
        }
        // Compacted entries were committed, even if the hard state saying so was not yet
        // durable when the node stopped.
        let commit = hard_state.commit.max(log.first_index().saturating_sub(1));
        let rng = cfg.seed ^ cfg.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut node = Self {
            log,
            term: hard_state.term,
            vote: hard_state.vote,
            commit,
            durable: (hard_state.term, hard_state.vote),
            persisted: last,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: cfg.election_tick,
            rng,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            matched: 0,
            leader_commit: 0,
            outbox: Vec::new(),
            outputs: Vec::new(),
            emitted_hard_state: hard_state,
            emitted_role: (Role::Follower, hard_state.term, None),
            cfg,
        };
        node.reset_election_timeout();
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    /// The current term (possibly not yet durable).
    pub fn term(&self) -> Term {
        self.term
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn commit(&self) -> Index {
        self.commit
    }

    /// Leader only: each other voter and its matched index (its log is known to equal this
    /// node's, durably, up to there); nothing on a follower or candidate. Read-only, for
    /// observation (replica lag).
    pub fn progress(&self) -> impl Iterator<Item = (NodeId, Index)> + '_ {
        let leading = self.role == Role::Leader;
        self.progress
            .iter()
            .filter(move |_| leading)
            .map(|(id, pr)| (*id, pr.matched))
    }

    /// The hard state as it is now (possibly not yet durable).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        }
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// The log, mutably: for the driver's own durability calls (the core writes only through
    /// its own methods).
    pub fn log_mut(&mut self) -> &mut L {
        &mut self.log
    }

    /// Gives the log back (the node is being shut down or crashed).
    pub fn into_log(self) -> L {
        self.log
    }

    /// Everything the driver must do now. Messages are released only while term and vote are
    /// durable; until then they wait here.
    pub fn drain(&mut self) -> Vec<Output> {
        if self.durable == (self.term, self.vote) {
            self.outputs.extend(self.outbox.drain(..).map(Output::Send));
        }
        std::mem::take(&mut self.outputs)
    }

    /// One unit of time has passed.
    pub fn tick(&mut self) -> Result<(), RaftError> {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            if self.election_elapsed >= self.cfg.election_tick {
                self.election_elapsed = 0;
                if self.cfg.check_quorum && !self.quorum_active() {
                    self.become_follower(self.term, None);
                    self.finish();
                    return Ok(());
                }
                for pr in self.progress.values_mut() {
                    pr.active = false;
                }
            }
            self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(1);
            if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
                self.heartbeat_elapsed = 0;
                self.broadcast_append(true)?;
            }
        } else if self.election_elapsed >= self.randomized_timeout {
            self.campaign(self.cfg.pre_vote)?;
        }
        self.finish();
        Ok(())
    }

    /// The transport saw the connection to `peer` closed or refused (its process died, or a
    /// link was reset). A hint, never proof: if `peer` is this follower's leader, the leader
    /// lease counts as expired now (pre-votes are granted again) and this node stands for
    /// election after a short delay instead of a whole election timeout. The delay orders the
    /// surviving voters by their position after `peer` in the voter list (1, then
    /// `1 + gap`, ... ticks), so two followers told at once do not split the vote. Safety does
    /// not depend on it: a wrong hint costs at most an election (peers still in their lease
    /// refuse the pre-vote). Ignored on any other role or peer; repeating it changes nothing.
    pub fn leader_unreachable(&mut self, peer: NodeId) {
        if self.role != Role::Follower || self.leader != Some(peer) || peer == self.cfg.id {
            return;
        }
        let delay = self.hinted_delay(peer);
        let deadline = self.cfg.election_tick.saturating_add(delay);
        self.election_elapsed = self.election_elapsed.max(self.cfg.election_tick);
        self.randomized_timeout = self.randomized_timeout.min(deadline);
        self.finish();
    }

    /// Ticks to wait before campaigning once the leader `lost` is known unreachable: the
    /// voters after `lost` (cyclically) go first, [`Config::election_tick`] / 5 ticks (at
    /// least 2) apart.
    fn hinted_delay(&self, lost: NodeId) -> u32 {
        let gap = (self.cfg.election_tick / 5).max(2);
        let voters = &self.cfg.voters;
        let start = voters.iter().position(|v| *v == lost).unwrap_or(0);
        let rank = voters
            .iter()
            .cycle()
            .skip(start.saturating_add(1))
            .take(voters.len())
            .filter(|v| **v != lost)
            .position(|v| *v == self.cfg.id)
            .unwrap_or(0);
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        rank.saturating_mul(gap).saturating_add(1)
    }

    /// Retention: discards the log's entries up to `index`, or up to the commit index if that
    /// is lower (only committed, durable entries are ever discarded). The log may keep more
    /// (see [`RaftLog::compact_to`]); returns its first index afterwards. A follower that
    /// later needs a discarded entry from this node (as leader) gets a
    /// [`MessageBody::Snapshot`] instead.
    pub fn compact(&mut self, index: Index) -> Result<Index, RaftError> {
        let upto = index.min(self.commit).min(self.persisted);
        self.log.compact_to(upto)?;
        Ok(self.log.first_index())
    }

    /// A message only this term's leader sends (Append, Snapshot) arrived from `from`: follow
    /// it and restart the election timer. False on a leader, which must not act on it (two
    /// leaders in one term cannot happen).
    fn follow(&mut self, from: NodeId) -> bool {
        if self.role == Role::Leader {
            return false;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        true
    }

    /// Appends `payload` as a new entry if this node is the leader; returns its index (its term
    /// is [`RaftNode::term`]). The entry is committed once [`Output::Committed`] reaches it —
    /// or never, if leadership is lost first.
    pub fn propose(&mut self, payload: Bytes) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        let index = self
            .append_own(EntryKind::Normal, payload)
            .map_err(RaftError::from)?;
        self.broadcast_append(false)?;
        self.finish();
        Ok(index)
    }

    /// The driver made term and vote durable as in `hs` (from an
    /// [`Output::PersistHardState`]); held messages may now leave.
    pub fn hard_state_persisted(&mut self, hs: HardState) -> Result<(), RaftError> {
        if (hs.term, hs.vote) == (self.term, self.vote) {
            self.durable = (hs.term, hs.vote);
            if self.role == Role::Candidate {
                // Our own vote counts only now.
                self.poll()?;
            }
        }
        self.finish();
        Ok(())
    }

    /// The driver made the log durable through `index`, whose entry had `term` (from an
    /// [`Output::PersistLog`]). Ignored if that entry has been truncated since.
    pub fn log_persisted(&mut self, index: Index, term: Term) -> Result<(), RaftError> {
        if index <= self.persisted || self.log.term(index) != Some(term) {
            return Ok(());
        }
        self.persisted = index;
        match self.role {
            Role::Leader => self.leader_maybe_commit(),
            Role::Follower => {
                if let Some(leader) = self.leader {
                    self.follower_maybe_commit();
                    self.ack(leader);
                }
            }
            Role::PreCandidate | Role::Candidate => {}
        }
        self.finish();
        Ok(())
    }

    /// Handles one message from a peer. A stale, duplicated, misaddressed or malformed message
    /// is ignored or answered; `Err` only means the log storage failed.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if m.to != self.cfg.id || m.from == self.cfg.id || !self.cfg.voters.contains(&m.from) {
            return Ok(());
        }
        self.step_inner(m)?;
        self.finish();
        Ok(())
    }

    fn step_inner(&mut self, m: Message) -> Result<(), RaftError> {
        // Pre-votes change no state at the receiver, whatever their term.
        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => {
                let granted = m.term > self.term
                    && !self.in_lease()
                    && self.log_up_to_date(last_index, last_term);
                let term = if granted { m.term } else { self.term };
                self.send_at(m.from, term, MessageBody::PreVoteResponse { granted });
                return Ok(());
            }
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate
                    && ((granted && m.term == self.term.saturating_add(1))
                        || (!granted && m.term == self.term))
                {
                    self.votes.insert(m.from, granted);
                    self.poll()?;
                } else if !granted && m.term > self.term {
                    self.become_follower(m.term, None);
                }
                return Ok(());
            }
            _ => {}
        }

        if m.term > self.term {
            match m.body {
                MessageBody::Vote { .. } if self.in_lease() => return Ok(()),
                MessageBody::Append { .. } | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            if matches!(
                m.body,
                MessageBody::Append { .. } | MessageBody::Snapshot { .. }
            ) && (self.cfg.check_quorum || self.cfg.pre_vote)
            {
                // A deposed leader (or one cut off while we moved on) learns our term and steps
                // down; without this, a node that raised its term could be ignored forever.
                self.send(m.from, Self::append_reject(0, 0));
            }
            return Ok(());
        }

        match m.body {
            MessageBody::Vote {
                last_index,
                last_term,
            } => {
                let can_vote =
                    self.vote == Some(m.from) || (self.vote.is_none() && self.leader.is_none());
                let granted = can_vote && self.log_up_to_date(last_index, last_term);
                if granted {
                    self.vote = Some(m.from);
                    self.election_elapsed = 0;
                }
                self.send(m.from, MessageBody::VoteResponse { granted });
            }
            MessageBody::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.votes.insert(m.from, granted);
                    self.poll()?;
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.follow(m.from) {
                    self.handle_append(m.from, prev_index, prev_term, &entries, commit)?;
                }
            }
            MessageBody::Snapshot {
                last_index,
                last_term,
                payload,
            } => {
                if self.follow(m.from) {
                    self.handle_snapshot(m.from, last_index, last_term, payload)?;
                }
            }
            MessageBody::AppendResponse {
                index,
                success,
                rejected,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, index, success, rejected)?;
                }
            }
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => {}
        }
        Ok(())
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        leader_commit: Index,
    ) -> Result<(), RaftError> {
        // Malformed: entries not consecutive after prev_index, or terms out of order.
        let mut expected = prev_index;
        let mut term_floor = prev_term;
        for e in entries {
            expected = match expected.checked_add(1) {
                Some(i) => i,
                None => return Ok(()),
            };
            if e.index != expected || e.term < term_floor || e.term > self.term {
                return Ok(());
            }
            term_floor = e.term;
        }
        let mut msg_last = expected;

        // Entries up to `start` were compacted here, so they were committed (by this node, or
        // by the leader whose snapshot this node installed); the current leader holds the same
        // ones. Skip them and check the rest against the start instead.
        let start = self.log.first_index().saturating_sub(1);
        let (prev_index, prev_term, entries) = if prev_index < start {
            let skip = entries.iter().take_while(|e| e.index <= start).count();
            msg_last = msg_last.max(start);
            let start_term = self.log.term(start).unwrap_or(0);
            (start, start_term, entries.get(skip..).unwrap_or(&[]))
        } else {
            (prev_index, prev_term, entries)
        };

        let last = self.log.last_index();
        match self.log.term(prev_index) {
            None => {
                self.send(from, Self::append_reject(last, prev_index));
                return Ok(());
            }
            Some(t) if t != prev_term => {
                if prev_index <= self.commit {
                    // Contradicts a committed entry: not from a legitimate leader.
                    return Ok(());
                }
                // Skip back over the whole conflicting term (Raft §5.3, end).
                let mut hint = prev_index - 1;
                while hint > self.commit && self.log.term(hint) == Some(t) {
                    hint -= 1;
                }
                self.send(from, Self::append_reject(hint, prev_index));
                return Ok(());
            }
            Some(_) => {}
        }

        // Truncate only at a real conflict: same index, different term.
        let mut first_new = entries.len();
        for (pos, e) in entries.iter().enumerate() {
            match self.log.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    if e.index <= self.commit {
                        return Ok(());
                    }
                    self.log.truncate(e.index)?;
                    self.persisted = self.persisted.min(e.index - 1);
                }
                None => {}
            }
            first_new = pos;
            break;
        }
        if let Some(new) = entries.get(first_new..).filter(|new| !new.is_empty()) {
            self.log.append(new)?;
            self.request_log_persist();
        }

        self.matched = self.matched.max(msg_last).min(self.log.last_index());
        self.leader_commit = self.leader_commit.max(leader_commit);
        self.follower_maybe_commit();
        self.ack(from);
        Ok(())
    }

    /// The leader's log starts after `(index, term)`. If this node holds that entry (or it is
    /// at or below this node's commit, where the logs are equal), its log stays; otherwise the
    /// whole log is replaced by an empty one starting after it, answered once durable.
    fn handle_snapshot(
        &mut self,
        from: NodeId,
        index: Index,
        term: Term,
        payload: Bytes,
    ) -> Result<(), RaftError> {
        if term > self.term {
            // No leader sends an entry of a later term than its own.
            return Ok(());
        }
        let held = self.log.term(index);
        if held == Some(term) || index <= self.commit {
            if index <= self.commit && held.is_some_and(|t| t != term) {
                // Contradicts a committed entry: not from a legitimate leader.
                return Ok(());
            }
            // Our committed prefix equals the leader's log: if we compacted further than the
            // leader, say so (or we would answer below our own start, which `ack` refuses).
            let start = self.log.first_index().saturating_sub(1);
            let known = if start <= self.commit {
                index.max(start)
            } else {
                index
            };
            self.matched = self.matched.max(known).min(self.log.last_index());
            self.leader_commit = self.leader_commit.max(index);
            self.follower_maybe_commit();
            self.ack(from);
            return Ok(());
        }
        // `index` is above our commit and not in our log as the leader has it: everything we
        // hold is either committed (and covered by the snapshot) or to be discarded.
        self.log.install_snapshot(index, term, payload)?;
        // Until the install is durable, the old log is what a crash brings back; only its
        // committed prefix is known to match any leader. Nothing is acknowledged meanwhile
        // (see `ack`).
        self.persisted = self.persisted.min(self.commit);
        self.matched = index;
        self.leader_commit = self.leader_commit.max(index);
        self.request_log_persist();
        Ok(())
    }

    /// Tells the leader how far this node's log matches its own, durably; nothing while a
    /// snapshot install is not yet durable (what is durable then is another log).
    fn ack(&mut self, leader: NodeId) {
        let index = self.matched.min(self.persisted);
        if index >= self.log.first_index().saturating_sub(1) {
            self.send(leader, Self::append_ok(index));
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        index: Index,
        success: bool,
        rejected: Index,
    ) -> Result<(), RaftError> {
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.active = true;
        if success {
            if index > last {
                return Ok(());
            }
            if index > pr.matched {
                pr.matched = index;
                pr.next = pr.next.max(index.saturating_add(1));
                self.leader_maybe_commit();
            }
            // Fill the follower's window (a lagging one catches up a window per round trip).
            while self.send_append(from, false)? {}
        } else {
            if rejected <= pr.matched || rejected >= pr.next {
                // Stale (we moved on since), or contradicting an index the follower said was
                // durable: either way, retrying from there would only loop.
                return Ok(());
            }
            pr.next = index
                .saturating_add(1)
                .min(rejected)
                .max(pr.matched.saturating_add(1));
            self.send_append(from, true)?;
        }
        Ok(())
    }

    fn follower_maybe_commit(&mut self) {
        let candidate = self.leader_commit.min(self.matched).min(self.persisted);
        self.advance_commit(candidate);
    }

    fn leader_maybe_commit(&mut self) {
        let mut matched: Vec<Index> = self.progress.values().map(|pr| pr.matched).collect();
        matched.push(self.persisted);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&quorum_index) = matched.get(self.quorum() - 1) else {
            return;
        };
        // Only an entry of our own term is committed by counting replicas (Raft §5.4.2); and
        // never beyond what is durable here.
        let candidate = quorum_index.min(self.persisted);
        if self.log.term(candidate) == Some(self.term) {
            self.advance_commit(candidate);
        }
    }

    fn advance_commit(&mut self, index: Index) {
        if index > self.commit {
            self.commit = index;
            self.outputs.push(Output::Committed(index));
        }
    }

    fn campaign(&mut self, pre: bool) -> Result<(), RaftError> {
        self.votes.clear();
        self.leader = None;
        self.election_elapsed = 0;
        self.reset_election_timeout();
        let (last_index, last_term) = self.last_entry();
        let term = if pre {
            self.role = Role::PreCandidate;
            self.term.saturating_add(1)
        } else {
            self.set_term(self.term.saturating_add(1));
            self.vote = Some(self.cfg.id);
            self.role = Role::Candidate;
            self.term
        };
        for peer in self.others() {
            let body = if pre {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                }
            };
            self.send_at(peer, term, body);
        }
        self.poll()
    }

    /// Counts the votes of the current campaign and moves on if it is decided.
    fn poll(&mut self) -> Result<(), RaftError> {
        let own = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => self.durable == (self.term, Some(self.cfg.id)),
            Role::Follower | Role::Leader => return Ok(()),
        };
        let granted = self.votes.values().filter(|g| **g).count() + usize::from(own);
        let rejected = self.votes.values().filter(|g| !**g).count();
        if granted >= self.quorum() {
            if self.role == Role::PreCandidate {
                self.campaign(false)?;
            } else {
                self.become_leader()?;
            }
        } else if rejected > self.cfg.voters.len() - self.quorum() {
            self.become_follower(self.term, None);
        }
        Ok(())
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let new_term = term > self.term;
        self.set_term(term);
        self.role = Role::Follower;
        if new_term || self.leader != leader {
            // What we know matches one leader's log says nothing about another's.
            self.matched = 0;
            self.leader_commit = 0;
        }
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    fn become_leader(&mut self) -> Result<(), RaftError> {
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let next = self.log.last_index().saturating_add(1);
        self.progress = self
            .others()
            .into_iter()
            .map(|peer| {
                let pr = Progress {
                    matched: 0,
                    next,
                    active: true,
                };
                (peer, pr)
            })
            .collect();
        // Commit an entry of our own term before anything else counts as committed.
        self.append_own(EntryKind::Noop, Bytes::new())?;
        self.broadcast_append(true)?;
        self.leader_maybe_commit();
        Ok(())
    }

    fn append_own(&mut self, kind: EntryKind, payload: Bytes) -> Result<Index, StorageError> {
        let index = self.log.last_index().saturating_add(1);
        let entry = Entry {
            term: self.term,
            index,
            kind,
            payload,
        };
        self.log.append_proposed(std::slice::from_ref(&entry))?;
        self.request_log_persist();
        Ok(index)
    }

    /// Sends every follower what its window allows; with `heartbeat`, at least an empty
    /// append.
    fn broadcast_append(&mut self, heartbeat: bool) -> Result<(), RaftError> {
        for peer in self.others() {
            self.send_append(peer, heartbeat)?;
        }
        Ok(())
    }

    /// Sends `peer` the entries from its `next` as far as its window allows, advancing `next`
    /// optimistically; with `heartbeat`, sends an empty append if there is nothing to send.
    /// Returns whether entries were sent.
    fn send_append(&mut self, peer: NodeId, heartbeat: bool) -> Result<bool, RaftError> {
        let last = self.log.last_index();
        let max = self.cfg.max_append_entries;
        let window = MAX_INFLIGHT_APPENDS.saturating_mul(Index::try_from(max).unwrap_or(1));
        let first = self.log.first_index();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return Ok(false);
        };
        pr.next = pr.next.clamp(1, last.saturating_add(1));
        if pr.next < first {
            // The entries it needs are compacted away here: send where the log starts; the
            // entries from `first` follow (optimistically, like entries).
            pr.next = first;
            let last_index = first - 1;
            let body = MessageBody::Snapshot {
                last_index,
                last_term: self.log.term(last_index).unwrap_or(0),
                payload: self.log.snapshot_payload(),
            };
            self.send(peer, body);
            return Ok(true);
        }
        let prev_index = pr.next - 1;
        let entries = if pr.next <= last && pr.next <= pr.matched.saturating_add(window) {
            self.log.entries(pr.next, max)?
        } else {
            Vec::new()
        };
        if entries.is_empty() && !heartbeat {
            return Ok(false);
        }
        let sent = !entries.is_empty();
        if let Some(e) = entries.last() {
            pr.next = e.index.saturating_add(1);
        }
        let prev_term = self.log.term(prev_index).unwrap_or(0);
        let body = MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit: self.commit,
        };
        self.send(peer, body);
        Ok(sent)
    }

    fn request_log_persist(&mut self) {
        let (index, term) = self.last_entry();
        self.outputs.push(Output::PersistLog { index, term });
    }

    fn set_term(&mut self, term: Term) {
        if term > self.term {
            self.term = term;
            self.vote = None;
            // Messages of an older term are of no use to anyone.
            self.outbox.clear();
        }
    }

    /// Emits hard-state and role changes; called at the end of every public entry point.
    fn finish(&mut self) {
        let hs = self.hard_state();
        if hs != self.emitted_hard_state {
            self.emitted_hard_state = hs;
            self.outputs.push(Output::PersistHardState(hs));
        }
        let role = (self.role, self.term, self.leader);
        if role != self.emitted_role {
            self.emitted_role = role;
            self.outputs.push(Output::RoleChanged {
                role: self.role,
                term: self.term,
                leader: self.leader,
            });
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_at(to, self.term, body);
    }

    fn send_at(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.outbox.push(Message {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }

    fn append_ok(index: Index) -> MessageBody {
        MessageBody::AppendResponse {
            index,
            success: true,
            rejected: 0,
        }
    }

    fn append_reject(hint: Index, rejected: Index) -> MessageBody {
        MessageBody::AppendResponse {
            index: hint,
            success: false,
            rejected,
        }
    }

    fn others(&self) -> Vec<NodeId> {
        let id = self.cfg.id;
        self.cfg
            .voters
            .iter()
            .copied()
            .filter(|p| *p != id)
            .collect()
    }

    fn quorum(&self) -> usize {
        self.cfg.voters.len() / 2 + 1
    }

    fn quorum_active(&self) -> bool {
        let active = self.progress.values().filter(|pr| pr.active).count();
        active + 1 >= self.quorum()
    }

    /// Heard from a leader within the minimum election timeout: vote requests are ignored, so
    /// a node that was cut off cannot depose a healthy leader when it returns.
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_tick
    }

    fn last_entry(&self) -> (Index, Term) {
        let last = self.log.last_index();
        (last, self.log.term(last).unwrap_or(0))
    }

    fn log_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let (my_index, my_term) = self.last_entry();
        last_term > my_term || (last_term == my_term && last_index >= my_index)
    }

    fn reset_election_timeout(&mut self) {
        // splitmix64: tiny, seeded, and the same on every platform.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let jitter = z % u64::from(self.cfg.election_tick);
        let jitter = u32::try_from(jitter).unwrap_or(0);
        self.randomized_timeout = self.cfg.election_tick.saturating_add(jitter);
    }
}
