//! The group coordinator state machine: generations, rebalances, fencing, static membership and
//! committed offsets, with time as an input and no I/O.
//!
//! This follows Kafka's classic `GroupCoordinator` (Empty → PreparingRebalance →
//! CompletingRebalance → Stable): a rebalance completes when every member has rejoined and no
//! KIP-394 pending member is outstanding, or when the rebalance timeout expires (members that
//! did not rejoin are then removed). The broker never interprets protocol metadata or
//! assignments; it only picks the protocol every member supports by vote.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    CommitRequest, CommitResponse, CommittedOffset, ErrorCode, FetchOffsetsResponse,
    GroupDescription, GroupListing, GroupState, HeartbeatRequest, JoinRequest, JoinResponse,
    JoinedMember, LeaveResponse, LeavingMember, MemberDescription, Output, Protocol, SyncRequest,
    SyncResponse, Token, TopicPartition,
};

/// Limits, as Kafka's broker configs of the same names.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// How long a brand-new member may wait in a rebalance without heartbeating.
    pub new_member_join_timeout_ms: u64,
    /// `offset.metadata.max.bytes`.
    pub max_offset_metadata_bytes: usize,
    /// Mixed into generated member ids so ids from before a restart never collide with new ones.
    pub member_id_seed: String,
    /// `group.initial.rebalance.delay.ms` (KIP-134): the first rebalance of an empty group
    /// waits this long (extended by each new member, up to the rebalance timeout) so members
    /// starting together land in one generation instead of a rebalance per member.
    pub initial_rebalance_delay_ms: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            new_member_join_timeout_ms: 300_000,
            max_offset_metadata_bytes: 4096,
            member_id_seed: String::from("0"),
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    join_waiter: Option<Token>,
    sync_waiter: Option<Token>,
    last_heartbeat_ms: u64,
    /// Joined but not yet through a completed join (gets the longer new-member timeout).
    is_new: bool,
}

impl Member {
    fn from_join(req: &JoinRequest, session: u64, rebalance: u64, now: u64) -> Self {
        Self {
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id.clone(),
            client_host: req.client_host.clone(),
            session_timeout_ms: session,
            rebalance_timeout_ms: rebalance,
            protocols: req.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            last_heartbeat_ms: now,
            is_new: true,
        }
    }

    fn update(&mut self, req: &JoinRequest, session: u64, rebalance: u64, now: u64) {
        self.client_id.clone_from(&req.client_id);
        self.client_host.clone_from(&req.client_host);
        self.session_timeout_ms = session;
        self.rebalance_timeout_ms = rebalance;
        self.protocols.clone_from(&req.protocols);
        self.last_heartbeat_ms = now;
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }

    /// Whether the session is still alive at `now`. Members waiting on the coordinator (in a
    /// join or sync) are kept alive, as Kafka does; a new member only for a bounded time.
    fn alive(&self, now: u64, new_member_timeout: u64) -> bool {
        if self.join_waiter.is_some() {
            !self.is_new || self.last_heartbeat_ms.saturating_add(new_member_timeout) > now
        } else if self.sync_waiter.is_some() {
            true
        } else {
            self.last_heartbeat_ms
                .saturating_add(self.session_timeout_ms)
                > now
        }
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// group.instance.id → current member id (KIP-345).
    static_members: BTreeMap<String, String>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending_members: BTreeMap<String, u64>,
    rebalance_deadline_ms: Option<u64>,
    /// KIP-134: while set, the first rebalance of a formerly empty group waits until then.
    initial_join_until: Option<u64>,
    /// The coordinator's `initial_rebalance_delay_ms`, refreshed on every join.
    initial_delay_ms: u64,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            rebalance_deadline_ms: None,
            initial_join_until: None,
            initial_delay_ms: 0,
            offsets: BTreeMap::new(),
        }
    }

    /// A static member whose instance id now belongs to another member id is fenced.
    fn is_fenced(&self, instance: Option<&String>, member_id: &str) -> bool {
        instance
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// Can a member with these protocols join? Every other member must support one of them.
    fn supports_protocols(
        &self,
        joining: &str,
        protocol_type: &str,
        protocols: &[Protocol],
    ) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != joining)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|p| others.iter().all(|m| m.supports(&p.name)))
    }

    /// Kafka's vote: among protocols every member supports, each member votes for the first it
    /// lists; most votes wins, ties go to the one listed first by the first member.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                if let Some(v) = votes.get_mut(i) {
                    *v += 1;
                }
            }
        }
        let mut best: Option<(usize, &str)> = None;
        for (name, v) in candidates.iter().zip(votes) {
            if best.is_none_or(|(b, _)| v > b) {
                best = Some((v, name));
            }
        }
        best.map(|(_, name)| name.to_owned())
            .or_else(|| first.protocols.first().map(|p| p.name.clone()))
    }

    fn member_metadata(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    /// The current generation as seen by `member_id` (members listed for the leader only).
    fn current_join_response(&self, member_id: &str) -> JoinResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error: ErrorCode::None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.member_metadata()
            } else {
                Vec::new()
            },
        }
    }

    fn set_join_waiter(&mut self, member_id: &str, token: Token, out: &mut Vec<Output>) {
        if let Some(m) = self.members.get_mut(member_id) {
            if let Some(old) = m.join_waiter.replace(token) {
                // A retried join supersedes the first; that one is told to rejoin.
                out.push(Output::Join(
                    old,
                    JoinResponse::error(ErrorCode::RebalanceInProgress, member_id),
                ));
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now: u64,
        member_id: String,
        mut member: Member,
        token: Token,
        protocol_type: &str,
        out: &mut Vec<Output>,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(protocol_type.to_owned());
        }
        if let Some(instance) = &member.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        member.join_waiter = Some(token);
        self.members.insert(member_id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(until) = self.initial_join_until {
                    // KIP-134: each new member extends the delay, up to the rebalance timeout.
                    let cap = self.rebalance_deadline_ms.unwrap_or(until);
                    let extended = now.saturating_add(self.initial_delay_ms).min(cap);
                    self.initial_join_until = Some(extended.max(until));
                }
                self.maybe_complete_join(now, out)
            }
            GroupState::Empty if self.initial_delay_ms > 0 => {
                let timeout = self.max_rebalance_timeout();
                self.state = GroupState::PreparingRebalance;
                self.rebalance_deadline_ms = Some(now.saturating_add(timeout));
                self.initial_join_until =
                    Some(now.saturating_add(self.initial_delay_ms.min(timeout)));
            }
            _ => self.prepare_rebalance(now, out),
        }
    }

    fn max_rebalance_timeout(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being synced is stale: everyone waiting in SyncGroup rejoins.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(t) = m.sync_waiter.take() {
                    out.push(Output::Sync(
                        t,
                        SyncResponse::error(ErrorCode::RebalanceInProgress),
                    ));
                }
            }
        }
        let timeout = self.max_rebalance_timeout();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = Some(now.saturating_add(timeout));
        self.maybe_complete_join(now, out);
    }

    fn maybe_complete_join(&mut self, now: u64, out: &mut Vec<Output>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_join_until.is_none()
            && self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now, out);
        }
    }

    /// Start the next generation with the members that rejoined.
    fn complete_join(&mut self, now: u64, out: &mut Vec<Output>) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, ErrorCode::UnknownMemberId, out);
        }
        self.pending_members.clear();
        self.rebalance_deadline_ms = None;
        self.initial_join_until = None;
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.current_join_response(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.is_new = false;
                m.last_heartbeat_ms = now;
                if let Some(t) = m.join_waiter.take() {
                    out.push(Output::Join(t, response));
                }
            }
        }
    }

    /// Remove a member, answering whatever it is waiting on with `error`.
    fn remove_member(&mut self, member_id: &str, error: ErrorCode, out: &mut Vec<Output>) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(t) = m.join_waiter {
            out.push(Output::Join(t, JoinResponse::error(error, member_id)));
        }
        if let Some(t) = m.sync_waiter {
            out.push(Output::Sync(t, SyncResponse::error(error)));
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
    }

    /// After members left or expired: a running generation must rebalance.
    fn on_members_removed(&mut self, now: u64, out: &mut Vec<Output>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, out)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Expire sessions, KIP-394 pending members and the rebalance timeout.
    fn tick(&mut self, now: u64, new_member_timeout: u64, out: &mut Vec<Output>) {
        let before = self.pending_members.len();
        self.pending_members.retain(|_, deadline| *deadline > now);
        let pending_expired = self.pending_members.len() != before;
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.alive(now, new_member_timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id, ErrorCode::UnknownMemberId, out);
        }
        if !expired.is_empty() {
            self.on_members_removed(now, out);
        } else if pending_expired {
            self.maybe_complete_join(now, out);
        }
        if self.initial_join_until.is_some_and(|d| d <= now) {
            self.initial_join_until = None;
            self.maybe_complete_join(now, out);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline_ms.is_some_and(|d| d <= now)
        {
            self.complete_join(now, out);
        }
    }
}

/// The coordinator for every group on this node.
#[derive(Debug)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    groups: BTreeMap<String, Group>,
    outputs: Vec<Output>,
    next_member: u64,
    pending_commits: BTreeMap<Token, PendingCommit>,
}

#[derive(Debug)]
struct PendingCommit {
    group_id: String,
    offsets: Vec<(TopicPartition, CommittedOffset)>,
    /// Request order; `None` for partitions whose fate is the persist's.
    results: Vec<(TopicPartition, Option<ErrorCode>)>,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
            outputs: Vec::new(),
            next_member: 0,
            pending_commits: BTreeMap::new(),
        }
    }

    /// Restore a durable committed offset (on startup, from the offset store).
    pub fn load_offset(&mut self, group_id: &str, tp: TopicPartition, offset: CommittedOffset) {
        self.groups
            .entry(group_id.to_owned())
            .or_insert_with(Group::new)
            .offsets
            .insert(tp, offset);
    }

    /// Change `group.initial.rebalance.delay.ms` (KIP-134) for joins from now on.
    pub fn set_initial_rebalance_delay_ms(&mut self, ms: u64) {
        self.config.initial_rebalance_delay_ms = ms;
    }

    /// Take everything the coordinator has produced since the last call.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    fn new_member_id(&mut self, prefix: &str) -> String {
        self.next_member = self.next_member.saturating_add(1);
        format!(
            "{prefix}-{}-{}",
            self.config.member_id_seed, self.next_member
        )
    }

    fn timeouts(&self, req: &JoinRequest) -> Option<(u64, u64)> {
        let session = u64::try_from(req.session_timeout_ms).ok()?;
        if session < self.config.min_session_timeout_ms
            || session > self.config.max_session_timeout_ms
        {
            return None;
        }
        // JoinGroup v0 has no rebalance timeout: it is the session timeout.
        let rebalance = u64::try_from(req.rebalance_timeout_ms)
            .ok()
            .filter(|r| *r > 0)
            .unwrap_or(session);
        Some((session, rebalance))
    }

    /// JoinGroup: answered through [`Output::Join`] with `token`, now or when the rebalance
    /// completes.
    pub fn join(&mut self, now: u64, token: Token, req: JoinRequest) {
        let mut out = std::mem::take(&mut self.outputs);
        self.join_inner(now, token, req, &mut out);
        self.outputs = out;
    }

    fn join_inner(&mut self, now: u64, token: Token, req: JoinRequest, out: &mut Vec<Output>) {
        let fail = |out: &mut Vec<Output>, e: ErrorCode| {
            out.push(Output::Join(token, JoinResponse::error(e, &req.member_id)));
        };
        if req.group_id.is_empty() {
            return fail(out, ErrorCode::InvalidGroupId);
        }
        let Some((session, rebalance)) = self.timeouts(&req) else {
            return fail(out, ErrorCode::InvalidSessionTimeout);
        };
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return fail(out, ErrorCode::InconsistentGroupProtocol);
        }
        if !req.member_id.is_empty() && !self.groups.contains_key(&req.group_id) {
            return fail(out, ErrorCode::UnknownMemberId);
        }
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let new_id = if req.member_id.is_empty() {
            let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
            let prefix = if prefix.is_empty() { "member" } else { prefix };
            Some(self.new_member_id(prefix))
        } else {
            None
        };
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(Group::new);
        group.initial_delay_ms = initial_delay;
        if !group.supports_protocols(&req.member_id, &req.protocol_type, &req.protocols) {
            return fail(out, ErrorCode::InconsistentGroupProtocol);
        }
        match new_id {
            Some(new_id) => join_unknown(group, now, token, new_id, &req, session, rebalance, out),
            None => join_known(group, now, token, &req, session, rebalance, out),
        }
    }

    /// SyncGroup: answered through [`Output::Sync`] with `token`, now or once the leader has
    /// sent the assignments.
    pub fn sync(&mut self, now: u64, token: Token, req: SyncRequest) {
        let fail = |e| Output::Sync(token, SyncResponse::error(e));
        if req.group_id.is_empty() {
            self.outputs.push(fail(ErrorCode::InvalidGroupId));
            return;
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            self.outputs.push(fail(ErrorCode::UnknownMemberId));
            return;
        };
        let error = if group.is_fenced(req.group_instance_id.as_ref(), &req.member_id) {
            Some(ErrorCode::FencedInstanceId)
        } else if !group.members.contains_key(&req.member_id) {
            Some(ErrorCode::UnknownMemberId)
        } else if req.generation_id != group.generation {
            Some(ErrorCode::IllegalGeneration)
        } else if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| group.protocol.as_ref() != Some(p))
        {
            Some(ErrorCode::InconsistentGroupProtocol)
        } else {
            match group.state {
                GroupState::Empty | GroupState::Dead => Some(ErrorCode::UnknownMemberId),
                GroupState::PreparingRebalance => Some(ErrorCode::RebalanceInProgress),
                GroupState::CompletingRebalance | GroupState::Stable => None,
            }
        };
        if let Some(e) = error {
            self.outputs.push(fail(e));
            return;
        }
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol.clone();
        let answer = |assignment: Bytes| SyncResponse {
            error: ErrorCode::None,
            protocol_type: protocol_type.clone(),
            protocol_name: protocol_name.clone(),
            assignment,
        };
        if group.state == GroupState::Stable {
            if let Some(m) = group.members.get_mut(&req.member_id) {
                m.last_heartbeat_ms = now;
                self.outputs
                    .push(Output::Sync(token, answer(m.assignment.clone())));
            }
            return;
        }
        // CompletingRebalance: wait for the leader's assignment.
        if let Some(m) = group.members.get_mut(&req.member_id) {
            m.last_heartbeat_ms = now;
            if let Some(old) = m.sync_waiter.replace(token) {
                self.outputs.push(Output::Sync(
                    old,
                    SyncResponse::error(ErrorCode::RebalanceInProgress),
                ));
            }
        }
        if group.leader.as_deref() == Some(req.member_id.as_str()) {
            let mut given: BTreeMap<String, Bytes> = req.assignments.into_iter().collect();
            for (id, m) in group.members.iter_mut() {
                m.assignment = given.remove(id).unwrap_or_default();
            }
            group.state = GroupState::Stable;
            for m in group.members.values_mut() {
                if let Some(t) = m.sync_waiter.take() {
                    self.outputs
                        .push(Output::Sync(t, answer(m.assignment.clone())));
                }
            }
        }
    }

    /// Heartbeat: always answered at once.
    pub fn heartbeat(&mut self, now: u64, req: HeartbeatRequest) -> ErrorCode {
        if req.group_id.is_empty() {
            return ErrorCode::InvalidGroupId;
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if group.is_fenced(req.group_instance_id.as_ref(), &req.member_id) {
            return ErrorCode::FencedInstanceId;
        }
        let generation = group.generation;
        let state = group.state;
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        if req.generation_id != generation {
            return ErrorCode::IllegalGeneration;
        }
        match state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => {
                member.last_heartbeat_ms = now;
                ErrorCode::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.last_heartbeat_ms = now;
                ErrorCode::None
            }
        }
    }

    /// LeaveGroup (v3+ batches members, by member id or group.instance.id).
    pub fn leave(
        &mut self,
        now: u64,
        group_id: &str,
        members: Vec<LeavingMember>,
    ) -> LeaveResponse {
        if group_id.is_empty() {
            return LeaveResponse {
                error: ErrorCode::InvalidGroupId,
                members: Vec::new(),
            };
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            let members = members
                .into_iter()
                .map(|m| (m, ErrorCode::UnknownMemberId))
                .collect();
            return LeaveResponse {
                error: ErrorCode::None,
                members,
            };
        };
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        let mut pending_removed = false;
        for leaving in members {
            let target = match &leaving.group_instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    None => Err(ErrorCode::UnknownMemberId),
                    Some(id) if !leaving.member_id.is_empty() && *id != leaving.member_id => {
                        Err(ErrorCode::FencedInstanceId)
                    }
                    Some(id) => Ok(id.clone()),
                },
                None => Ok(leaving.member_id.clone()),
            };
            let error = match target {
                Err(e) => e,
                Ok(id) if group.pending_members.remove(&id).is_some() => {
                    pending_removed = true;
                    ErrorCode::None
                }
                Ok(id) if group.members.contains_key(&id) => {
                    group.remove_member(&id, ErrorCode::UnknownMemberId, &mut self.outputs);
                    removed = true;
                    ErrorCode::None
                }
                Ok(_) => ErrorCode::UnknownMemberId,
            };
            results.push((leaving, error));
        }
        if removed {
            group.on_members_removed(now, &mut self.outputs);
        } else if pending_removed {
            group.maybe_complete_join(now, &mut self.outputs);
        }
        LeaveResponse {
            error: ErrorCode::None,
            members: results,
        }
    }

    /// OffsetCommit: answered through [`Output::Commit`] with `token`, after an
    /// [`Output::Persist`] and [`Self::persisted`] when anything is to be stored.
    pub fn commit(&mut self, now: u64, token: Token, req: CommitRequest) {
        let group_error = self.commit_group_error(now, &req);
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut accepted = Vec::new();
        for (tp, offset) in req.offsets {
            let error = match group_error {
                Some(e) => Some(e),
                None if offset
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > self.config.max_offset_metadata_bytes) =>
                {
                    Some(ErrorCode::OffsetMetadataTooLarge)
                }
                None => {
                    accepted.push((tp.clone(), offset));
                    None
                }
            };
            results.push((tp, error));
        }
        if accepted.is_empty() {
            let results = results
                .into_iter()
                .map(|(tp, e)| (tp, e.unwrap_or(ErrorCode::None)))
                .collect();
            self.outputs
                .push(Output::Commit(token, CommitResponse { results }));
            return;
        }
        self.outputs.push(Output::Persist {
            token,
            group_id: req.group_id.clone(),
            offsets: accepted.clone(),
        });
        self.pending_commits.insert(
            token,
            PendingCommit {
                group_id: req.group_id,
                offsets: accepted,
                results,
            },
        );
    }

    /// Kafka's checks for a commit, in Kafka's order; `None` means accept.
    ///
    /// As Kafka's `validateOffsetCommit` (2.5+, and the 3.x/4.x classic group): who is
    /// committing and with which generation is checked first, and only a current member of the
    /// current generation hears REBALANCE_IN_PROGRESS while the group is CompletingRebalance.
    /// A member still on the previous generation gets ILLEGAL_GENERATION, which clients treat
    /// as "rejoin, your commit is stale" (librdkafka 0113 `v_commit_during_rebalance` accepts
    /// only that), not REBALANCE_IN_PROGRESS.
    fn commit_group_error(&mut self, now: u64, req: &CommitRequest) -> Option<ErrorCode> {
        if req.group_id.is_empty() {
            return Some(ErrorCode::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            // Not managed by the coordinator (manual assignment): accepted, and the group
            // comes into being to hold the offsets. A generation means a stale member.
            if req.generation_id < 0 {
                self.groups.insert(req.group_id.clone(), Group::new());
                return None;
            }
            return Some(ErrorCode::IllegalGeneration);
        };
        if group.is_fenced(req.group_instance_id.as_ref(), &req.member_id) {
            return Some(ErrorCode::FencedInstanceId);
        }
        if req.generation_id < 0 && group.state == GroupState::Empty {
            return None;
        }
        let generation = group.generation;
        let state = group.state;
        // Outside group management (no member id, no generation) commits are only accepted
        // while the group is Empty: here the lookup of "" fails with UNKNOWN_MEMBER_ID.
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return Some(ErrorCode::UnknownMemberId);
        };
        if req.generation_id != generation {
            return Some(ErrorCode::IllegalGeneration);
        }
        if state == GroupState::CompletingRebalance {
            // The member has this generation's JoinGroup answer but not yet its assignment.
            return Some(ErrorCode::RebalanceInProgress);
        }
        member.last_heartbeat_ms = now;
        None
    }

    /// The caller made (or failed to make) the offsets of [`Output::Persist`] `token` durable.
    pub fn persisted(&mut self, token: Token, ok: bool) {
        let Some(pending) = self.pending_commits.remove(&token) else {
            return;
        };
        if ok {
            let group = self
                .groups
                .entry(pending.group_id)
                .or_insert_with(Group::new);
            group.offsets.extend(pending.offsets);
        }
        // A failed write is retriable from the client's point of view, as in Kafka.
        let fate = if ok {
            ErrorCode::None
        } else {
            ErrorCode::CoordinatorNotAvailable
        };
        let results = pending
            .results
            .into_iter()
            .map(|(tp, e)| (tp, e.unwrap_or(fate)))
            .collect();
        self.outputs
            .push(Output::Commit(token, CommitResponse { results }));
    }

    /// OffsetFetch: `None` asks for every partition the group has committed.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> FetchOffsetsResponse {
        if group_id.is_empty() {
            return FetchOffsetsResponse {
                error: ErrorCode::InvalidGroupId,
                offsets: Vec::new(),
            };
        }
        let stored = self.groups.get(group_id).map(|g| &g.offsets);
        let offsets = match partitions {
            Some(list) => list
                .into_iter()
                .map(|tp| {
                    let found = stored.and_then(|o| o.get(&tp)).cloned();
                    (tp, found)
                })
                .collect(),
            None => stored
                .into_iter()
                .flatten()
                .map(|(tp, o)| (tp.clone(), Some(o.clone())))
                .collect(),
        };
        FetchOffsetsResponse {
            error: ErrorCode::None,
            offsets,
        }
    }

    /// DescribeGroups; unknown groups are reported Dead, as Kafka does.
    pub fn describe(&self, group_ids: &[String]) -> Vec<GroupDescription> {
        group_ids
            .iter()
            .map(|id| match self.groups.get(id) {
                None => GroupDescription {
                    group_id: id.clone(),
                    error: if id.is_empty() {
                        ErrorCode::InvalidGroupId
                    } else {
                        ErrorCode::None
                    },
                    state: GroupState::Dead,
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                },
                Some(g) => {
                    let stable = g.state == GroupState::Stable;
                    let protocol = g.protocol.clone().unwrap_or_default();
                    let members = g
                        .members
                        .iter()
                        .map(|(mid, m)| MemberDescription {
                            member_id: mid.clone(),
                            group_instance_id: m.group_instance_id.clone(),
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            metadata: if stable {
                                m.metadata_for(&protocol)
                            } else {
                                Bytes::new()
                            },
                            assignment: if stable {
                                m.assignment.clone()
                            } else {
                                Bytes::new()
                            },
                        })
                        .collect();
                    GroupDescription {
                        group_id: id.clone(),
                        error: ErrorCode::None,
                        state: g.state,
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        protocol: if stable { protocol } else { String::new() },
                        members,
                    }
                }
            })
            .collect()
    }

    /// ListGroups, optionally filtered by state name (case-insensitive, v4+).
    pub fn list(&self, states: &[String]) -> Vec<GroupListing> {
        self.groups
            .iter()
            .filter(|(_, g)| {
                states.is_empty()
                    || states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect()
    }

    /// Expire sessions and rebalance timeouts as of `now`.
    pub fn tick(&mut self, now: u64) {
        let timeout = self.config.new_member_join_timeout_ms;
        for group in self.groups.values_mut() {
            group.tick(now, timeout, &mut self.outputs);
        }
        // Forget groups that hold nothing (e.g. a KIP-394 member id that never came back),
        // so group ids from clients cannot grow the map without bound. Offsets keep a group.
        let pending: Vec<&str> = self
            .pending_commits
            .values()
            .map(|p| p.group_id.as_str())
            .collect();
        let idle: Vec<String> = self
            .groups
            .iter()
            .filter(|(id, g)| {
                g.state == GroupState::Empty
                    && g.members.is_empty()
                    && g.pending_members.is_empty()
                    && g.offsets.is_empty()
                    && !pending.contains(&id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.groups.remove(&id);
        }
    }

    /// A one-line summary of a group's internals, for tests and debugging.
    pub fn debug_group(&self, group_id: &str) -> String {
        let Some(g) = self.groups.get(group_id) else {
            return format!("{group_id} absent");
        };
        let members: Vec<&str> = g.members.keys().map(String::as_str).collect();
        let pending: Vec<&str> = g.pending_members.keys().map(String::as_str).collect();
        format!(
            "{group_id} state={} gen={} proto={} leader={} members=[{}] pending=[{}]",
            g.state.name(),
            g.generation,
            g.protocol.as_deref().unwrap_or("-"),
            g.leader.as_deref().unwrap_or("-"),
            members.join(" "),
            pending.join(" "),
        )
    }
}

/// JoinGroup from a member without an id.
#[allow(clippy::too_many_arguments)]
fn join_unknown(
    group: &mut Group,
    now: u64,
    token: Token,
    new_id: String,
    req: &JoinRequest,
    session: u64,
    rebalance: u64,
    out: &mut Vec<Output>,
) {
    let existing = req
        .group_instance_id
        .as_ref()
        .and_then(|i| group.static_members.get(i))
        .cloned();
    if let Some(old_id) = existing {
        return replace_static_member(
            group, now, token, &old_id, new_id, req, session, rebalance, out,
        );
    }
    if req.require_known_member_id && req.group_instance_id.is_none() {
        // KIP-394: hand out the id; the member joins for real when it comes back with it.
        group
            .pending_members
            .insert(new_id.clone(), now.saturating_add(session));
        out.push(Output::Join(
            token,
            JoinResponse::error(ErrorCode::MemberIdRequired, &new_id),
        ));
        return;
    }
    let member = Member::from_join(req, session, rebalance, now);
    group.add_member_and_rebalance(now, new_id, member, token, &req.protocol_type, out);
}

/// JoinGroup from a member that has an id.
fn join_known(
    group: &mut Group,
    now: u64,
    token: Token,
    req: &JoinRequest,
    session: u64,
    rebalance: u64,
    out: &mut Vec<Output>,
) {
    let id = &req.member_id;
    let fail = |out: &mut Vec<Output>, e| out.push(Output::Join(token, JoinResponse::error(e, id)));
    if group.pending_members.remove(id).is_some() {
        let member = Member::from_join(req, session, rebalance, now);
        group.add_member_and_rebalance(now, id.clone(), member, token, &req.protocol_type, out);
        return;
    }
    if group.is_fenced(req.group_instance_id.as_ref(), id) {
        return fail(out, ErrorCode::FencedInstanceId);
    }
    let Some(member) = group.members.get_mut(id) else {
        return fail(out, ErrorCode::UnknownMemberId);
    };
    let same_protocols = member.protocols == req.protocols;
    let is_leader = group.leader.as_deref() == Some(id.as_str());
    match group.state {
        GroupState::Empty | GroupState::Dead => fail(out, ErrorCode::UnknownMemberId),
        GroupState::PreparingRebalance => {
            member.update(req, session, rebalance, now);
            group.set_join_waiter(id, token, out);
            group.maybe_complete_join(now, out);
        }
        GroupState::CompletingRebalance if same_protocols => {
            // A retransmitted join: the member has not seen this generation's answer.
            member.last_heartbeat_ms = now;
            out.push(Output::Join(token, group.current_join_response(id)));
        }
        GroupState::Stable if same_protocols && !is_leader => {
            member.last_heartbeat_ms = now;
            out.push(Output::Join(token, group.current_join_response(id)));
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            // Changed subscriptions, or the leader asking for a rebalance.
            member.update(req, session, rebalance, now);
            group.set_join_waiter(id, token, out);
            group.prepare_rebalance(now, out);
        }
    }
}

/// KIP-345: a static member rejoined without its member id (e.g. after a restart). It takes
/// over the old member's place; the old id is fenced.
#[allow(clippy::too_many_arguments)]
fn replace_static_member(
    group: &mut Group,
    now: u64,
    token: Token,
    old_id: &str,
    new_id: String,
    req: &JoinRequest,
    session: u64,
    rebalance: u64,
    out: &mut Vec<Output>,
) {
    let Some(mut member) = group.members.remove(old_id) else {
        return;
    };
    if let Some(t) = member.join_waiter.take() {
        out.push(Output::Join(
            t,
            JoinResponse::error(ErrorCode::FencedInstanceId, old_id),
        ));
    }
    if let Some(t) = member.sync_waiter.take() {
        out.push(Output::Sync(
            t,
            SyncResponse::error(ErrorCode::FencedInstanceId),
        ));
    }
    member.update(req, session, rebalance, now);
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), new_id.clone());
    }
    let old_leader = group.leader.clone().unwrap_or_default();
    if group.leader.as_deref() == Some(old_id) {
        group.leader = Some(new_id.clone());
    }
    group.members.insert(new_id.clone(), member);
    match group.state {
        GroupState::Stable if group.select_protocol() == group.protocol => {
            // Nothing changed for the group: no rebalance (the point of static membership).
            // As Kafka does, the answer names the old leader id and no members, so a
            // replaced leader does not compute an assignment a Stable group would not relay;
            // the member keeps its assignment and gets it back from SyncGroup.
            let mut response = group.current_join_response(&new_id);
            response.leader = old_leader;
            response.members = Vec::new();
            out.push(Output::Join(token, response));
        }
        GroupState::PreparingRebalance => {
            group.set_join_waiter(&new_id, token, out);
            group.maybe_complete_join(now, out);
        }
        _ => {
            group.set_join_waiter(&new_id, token, out);
            group.prepare_rebalance(now, out);
        }
    }
}
