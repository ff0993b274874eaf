//! Deterministic simulation of the Raft core: seeded, single-threaded, simulated time.
//!
//! A [`Sim`] drives 3 or 5 [`RaftNode`]s over a network that drops, duplicates, delays,
//! reorders and partitions (symmetric splits, one-way cuts, bridges), and a disk per node
//! ([`SimLog`] plus a hard-state "file") that loses unsynced writes on a crash and can tear the
//! last one. Nodes crash, restart and pause; clients propose entries and an entry counts as
//! acknowledged once its leader reports it committed. Invariants are checked after every step
//! (see [`Sim::check_step`]); then the faults heal and a leader must commit within a bound.
//! The transport's "peer down" hint ([`RaftNode::leader_unreachable`]) reaches the others
//! after a crash (usually, after a delay) and also arrives spuriously about live nodes, as a
//! reset link would cause.
//!
//! Every run is a pure function of its seed. A failure names the seed and the command that
//! replays it; `RAFT_SEED=<seed>` also prints a trace of the run's last events.
//!
//! - `RAFT_SEED=123 cargo test -p runnel-broker --lib raft::sim` — one seed, with a trace.
//! - `RAFT_SEEDS=100000 cargo test --release -p runnel-broker --lib raft::sim` — a long run
//!   (`RAFT_SEED_BASE` shifts the range).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use bytes::Bytes;

use super::{
    Config, Entry, EntryKind, HardState, Index, MemRaftLog, Message, MessageBody, NodeId, Output,
    RaftLog, RaftNode, Role, StorageError, Term,
};

/// The workspace's splitmix64 (`runnel_client::simulate::rng`), so a seed keeps its meaning
/// whatever crates change (the seeds ARCHITECTURE.md cites replay as written), with the
/// simulation's helpers.
#[derive(Debug, Clone)]
struct Rng(runnel_client::simulate::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(runnel_client::simulate::rng::SplitMix64::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// True with probability `per_million / 1e6`.
    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }

    /// A uniform position in a slice of `len`.
    fn pick(&mut self, len: usize) -> usize {
        let n = u64::try_from(len).expect("len fits u64");
        usize::try_from(self.below(n)).expect("below len fits usize")
    }

    fn choose<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.pick(items.len())]
    }
}

/// One write not yet synced.
#[derive(Debug, Clone)]
enum Op {
    Append(Entry),
    Truncate(Index),
    /// A snapshot install: the log restarts empty after `(index, term)`.
    Install(Index, Term, Bytes),
}

/// A node's log on a simulated disk: what the node sees, what a sync made durable, and the
/// writes in between, which a crash keeps only a prefix of (the last one possibly torn).
/// Compaction is durable at once (the real log writes its start record with fsync before it
/// deletes anything), and only ever discards durable entries.
#[derive(Debug)]
struct SimLog {
    view: MemRaftLog,
    durable: MemRaftLog,
    unsynced: Vec<Op>,
    /// The lowest index truncated since the simulator last looked.
    lowest_truncation: Option<Index>,
    /// Snapshot installs, over the disk's whole life (crashes included).
    installs: usize,
}

impl SimLog {
    fn new() -> Self {
        Self::from_disk(MemRaftLog::new(), 0)
    }

    fn from_disk(disk: MemRaftLog, installs: usize) -> Self {
        Self {
            view: disk.clone(),
            durable: disk,
            unsynced: Vec::new(),
            lowest_truncation: None,
            installs,
        }
    }

    /// `fsync`: everything written so far becomes durable.
    fn sync(&mut self) {
        self.durable = self.view.clone();
        self.unsynced.clear();
    }

    fn durable_term(&self, index: Index) -> Option<Term> {
        self.durable.term(index)
    }

    /// Power loss: the synced state, plus a prefix of the unsynced writes in order; the next
    /// write may have reached the disk torn, which recovery detects (a bad checksum) and cuts.
    fn crash(self, rng: &mut Rng) -> (Self, usize, bool, String) {
        let kept = rng.pick(self.unsynced.len() + 1);
        let mut disk = self.durable;
        for op in &self.unsynced[..kept] {
            let replayed = match op {
                Op::Append(e) => disk.append(std::slice::from_ref(e)),
                Op::Truncate(from) => disk.truncate(*from),
                Op::Install(index, term, payload) => {
                    disk.install_snapshot(*index, *term, payload.clone())
                }
            };
            replayed.expect("the writes replay as they were made");
        }
        // A torn append: recovery finds a bad checksum at the end and cuts it, so the disk is
        // as if it had not been written.
        let torn = matches!(self.unsynced.get(kept), Some(Op::Append(_))) && rng.chance(500_000);
        let note = format!(
            "kept {kept}/{} unsynced writes{}, log {}..={}",
            self.unsynced.len(),
            if torn { " + a torn one (cut)" } else { "" },
            disk.first_index(),
            disk.last_index()
        );
        let lost = self.unsynced.len() - kept;
        (Self::from_disk(disk, self.installs), lost, torn, note)
    }

    fn note_truncation(&mut self, from: Index) {
        self.lowest_truncation = Some(self.lowest_truncation.map_or(from, |t| t.min(from)));
    }
}

impl RaftLog for SimLog {
    fn first_index(&self) -> Index {
        self.view.first_index()
    }

    fn last_index(&self) -> Index {
        self.view.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.view.term(index)
    }

    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
        self.view.entries(from, max)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.view.append(entries)?;
        self.unsynced
            .extend(entries.iter().cloned().map(Op::Append));
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        let last = self.view.last_index();
        self.view.truncate(from)?;
        if from <= last {
            self.unsynced.push(Op::Truncate(from));
            self.note_truncation(from);
        }
        Ok(())
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        if index < self.view.first_index() {
            return Ok(());
        }
        if self.durable.term(index) != self.view.term(index) {
            return Err(StorageError::Io(format!(
                "compacting through {index}, which is not durable"
            )));
        }
        self.durable.compact_to(index)?;
        self.view.compact_to(index)
    }

    fn snapshot_payload(&self) -> Bytes {
        self.view.snapshot_payload()
    }

    fn install_snapshot(
        &mut self,
        index: Index,
        term: Term,
        payload: Bytes,
    ) -> Result<(), StorageError> {
        self.view.install_snapshot(index, term, payload.clone())?;
        self.unsynced.push(Op::Install(index, term, payload));
        // Entries after `index` are gone; those up to it are replaced by the committed ones
        // the snapshot stands for.
        self.note_truncation(index.saturating_add(1));
        self.installs += 1;
        Ok(())
    }
}

/// A durability request from the core, answered after the next sync.
#[derive(Debug, Clone, Copy)]
enum Io {
    HardState(HardState),
    Log(Index, Term),
}

/// One simulated machine.
#[derive(Debug)]
struct Slot {
    node: Option<RaftNode<SimLog>>,
    /// The disk while the node is down.
    down_log: Option<SimLog>,
    /// The hard-state file as synced.
    hs_durable: HardState,
    /// Written (by atomic rename) but not yet synced: a crash keeps it or not.
    hs_written: Option<HardState>,
    pending_io: Vec<Io>,
    restart_at: u64,
    paused_until: u64,
    /// The committed prefix of this node has been checked up to here.
    checked: Index,
}

/// An entry seen committed.
#[derive(Debug, Clone)]
struct Committed {
    entry: Entry,
    /// The term of the node that first reported it committed: no lower than the term in which
    /// it was committed, since a node learns of a commit from that term's leader or later.
    seen_in: Term,
}

/// A client proposal, acknowledged once committed.
#[derive(Debug, Clone)]
struct Proposal {
    node: NodeId,
    term: Term,
    index: Index,
    payload: Bytes,
    /// Unique, increasing: the payload is `v<seq>`.
    seq: u64,
}

/// How harsh one run is; drawn from the seed.
#[derive(Debug, Clone)]
struct Faults {
    drop: u64,
    duplicate: u64,
    max_delay: u64,
    io: u64,
    crash: u64,
    partition: u64,
    pause: u64,
    propose: u64,
    /// Crash a node right after it grants a vote / a leader right after it proposes, before
    /// its disk syncs (the windows where durability bugs hide).
    crash_after_vote: u64,
    crash_after_propose: u64,
    /// Crash a leader right after its commit index moves, before followers hear of it.
    crash_after_commit: u64,
    /// Small appends split a leader's no-op from the entries before it.
    max_append_entries: usize,
    /// Chance that a crash is reported to each other node (the transport's peer-down hint)...
    crash_hint: u64,
    /// ... and a hint about a random live peer (a reset link), per node per time unit.
    spurious_hint: u64,
}

/// Rates are per million per time unit (or per message).
impl Faults {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            drop: rng.choose(&[0, 10_000, 50_000, 200_000]),
            duplicate: rng.choose(&[0, 20_000, 100_000]),
            max_delay: rng.choose(&[2, 5, 15]),
            io: rng.choose(&[150_000, 400_000, 900_000]),
            crash: rng.choose(&[1_000, 3_000, 8_000]),
            partition: rng.choose(&[2_000, 5_000, 15_000]),
            pause: rng.choose(&[0, 2_000]),
            propose: rng.choose(&[50_000, 300_000]),
            crash_after_vote: rng.choose(&[0, 30_000, 200_000]),
            crash_after_propose: rng.choose(&[0, 10_000, 50_000]),
            crash_after_commit: rng.choose(&[0, 20_000, 100_000]),
            max_append_entries: rng.choose(&[1, 2, 64]),
            crash_hint: rng.choose(&[0, 700_000, 1_000_000]),
            spurious_hint: rng.choose(&[0, 1_000, 10_000]),
        }
    }
}

/// Time units with faults.
const FAULT_STEPS: u64 = 2_000;
/// After healing, a leader must commit a new entry within this many time units...
const HEAL_LIMIT: u64 = 600;
/// ... and every node must have committed everything acknowledged within this many.
const CATCH_UP_LIMIT: u64 = 3_000;

/// The simulation of one seed.
struct Sim {
    seed: u64,
    rng: Rng,
    ids: Vec<NodeId>,
    now: u64,
    slots: BTreeMap<NodeId, Slot>,
    in_flight: Vec<(u64, Message)>,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: Faults,
    healed: bool,
    /// Proposals numbered above this were made after healing.
    heal_seq: u64,
    /// (leader, term) pairs that proposed a marker after healing.
    markers: BTreeSet<(NodeId, Term)>,
    /// The leader of each term, as first seen.
    leaders: BTreeMap<Term, NodeId>,
    /// The committed log as first seen committed on any node: entry `i` at position `i - 1`.
    committed: Vec<Committed>,
    proposals: Vec<Proposal>,
    acked: Vec<Proposal>,
    next_payload: u64,
    verbose: bool,
    trace: Vec<String>,
    stats: Stats,
    /// Crashed at the next step, before their disks sync.
    crash_soon: Vec<NodeId>,
    /// Peer-down hints to deliver: (time, to, about).
    hints: Vec<(u64, NodeId, NodeId)>,
    /// Compaction (retention) decisions: a stream of their own, so that a seed's other draws
    /// stay where they were before compaction existed.
    compact_rng: Rng,
    /// Per node per time unit (per million): compact a running node at a random point of its
    /// checked committed prefix.
    compact: u64,
    /// The lagging-follower scenario: this node is down from [`LAG_FROM`] until the others
    /// have committed after healing and compacted past everything it has; it must then catch
    /// up by a snapshot install.
    lagger: Option<NodeId>,
}

/// When the lagging follower goes down (and stays down until after healing).
const LAG_FROM: u64 = 100;

/// What one run did, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    acked: usize,
    terms: usize,
    committed: usize,
    heal_ticks: u64,
    catch_up_ticks: u64,
    crashes: usize,
    torn_writes: usize,
    lost_writes: usize,
    truncations: usize,
    delivered: usize,
    lost_messages: usize,
    hints: usize,
    compactions: usize,
    installs: usize,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.acked += other.acked;
        self.terms += other.terms;
        self.committed += other.committed;
        self.heal_ticks = self.heal_ticks.max(other.heal_ticks);
        self.catch_up_ticks = self.catch_up_ticks.max(other.catch_up_ticks);
        self.crashes += other.crashes;
        self.torn_writes += other.torn_writes;
        self.lost_writes += other.lost_writes;
        self.truncations += other.truncations;
        self.delivered += other.delivered;
        self.lost_messages += other.lost_messages;
        self.hints += other.hints;
        self.compactions += other.compactions;
        self.installs += other.installs;
    }
}

impl Sim {
    fn new(seed: u64, nodes: u64, verbose: bool, lagging: bool) -> Self {
        let mut rng = Rng::new(seed);
        let faults = Faults::draw(&mut rng);
        let mut compact_rng = Rng::new(seed ^ 0x5EED_C0A1_E5CE_0001);
        let compact = if lagging {
            200_000
        } else {
            compact_rng.choose(&[0, 2_000, 20_000, 200_000])
        };
        let lagger = lagging.then(|| 1 + compact_rng.below(nodes));
        let ids: Vec<NodeId> = (1..=nodes).collect();
        let slots = ids
            .iter()
            .map(|&id| {
                let slot = Slot {
                    node: None,
                    down_log: Some(SimLog::new()),
                    hs_durable: HardState::default(),
                    hs_written: None,
                    pending_io: Vec::new(),
                    restart_at: 0,
                    paused_until: 0,
                    checked: 0,
                };
                (id, slot)
            })
            .collect();
        let mut sim = Self {
            seed,
            rng,
            ids,
            now: 0,
            slots,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            faults,
            healed: false,
            heal_seq: 0,
            markers: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: Vec::new(),
            proposals: Vec::new(),
            acked: Vec::new(),
            next_payload: 0,
            verbose,
            trace: Vec::new(),
            stats: Stats::default(),
            crash_soon: Vec::new(),
            hints: Vec::new(),
            compact_rng,
            compact,
            lagger,
        };
        for id in sim.ids.clone() {
            sim.restart(id);
        }
        let faults = format!("{:?}", sim.faults);
        let (compact, lagger) = (sim.compact, sim.lagger);
        sim.note(|| format!("faults {faults}, compact {compact}, lagger {lagger:?}"));
        sim
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.verbose {
            let line = line();
            self.trace.push(format!("t={} {line}", self.now));
        }
    }

    fn fail(&self, what: &str) -> ! {
        if self.verbose {
            let from = self.trace.len().saturating_sub(400);
            for line in &self.trace[from..] {
                eprintln!("{line}");
            }
        }
        panic!(
            "raft simulation: seed {} ({} nodes) at t={}: {what}",
            self.seed,
            self.ids.len(),
            self.now
        );
    }

    fn run(mut self) -> Stats {
        while self.now < FAULT_STEPS {
            self.step();
        }
        self.heal();
        let healed_at = self.now;
        while !self.acked.iter().any(|p| p.seq > self.heal_seq) {
            if self.now - healed_at > HEAL_LIMIT {
                self.fail(&format!(
                    "no new commit within {HEAL_LIMIT} ticks of healing"
                ));
            }
            self.step();
        }
        let recovered = self.now - healed_at;
        let installs_before = self.lagger.map(|id| self.release_lagger(id));
        while !self.all_caught_up() {
            if self.now - healed_at > CATCH_UP_LIMIT {
                self.fail(&format!(
                    "not every node committed everything acknowledged within \
                     {CATCH_UP_LIMIT} ticks of healing"
                ));
            }
            self.step();
        }
        self.check_final();
        if let (Some(id), Some(before)) = (self.lagger, installs_before) {
            let after = self.node(id).log().installs;
            if after <= before {
                self.fail(&format!(
                    "lagging n{id} caught up without a snapshot install"
                ));
            }
        }
        Stats {
            acked: self.acked.len(),
            terms: self.leaders.len(),
            committed: self.committed.len(),
            heal_ticks: recovered,
            catch_up_ticks: self.now - healed_at,
            installs: self
                .ids
                .iter()
                .map(|&id| self.node(id).log().installs)
                .sum(),
            ..self.stats
        }
    }

    /// One time unit: deliveries, disk syncs, proposals, faults, ticks, then the invariants.
    fn step(&mut self) {
        self.now += 1;
        if self.in_flight.len() > 50_000 {
            self.fail("message storm: more than 50000 messages in flight");
        }
        self.deliver();
        self.deliver_hints();
        for id in std::mem::take(&mut self.crash_soon) {
            if self.is_up(id) && !self.healed {
                self.crash(id);
            }
        }
        for id in self.ids.clone() {
            if self.is_running(id) && self.rng.chance(self.faults.io) {
                self.sync(id);
            }
        }
        self.propose();
        if !self.healed {
            self.inject_faults();
        }
        if let Some(id) = self.lagger.filter(|_| self.now == LAG_FROM) {
            if self.is_up(id) {
                self.crash(id);
            }
            self.slots.get_mut(&id).expect("slot").restart_at = u64::MAX;
        }
        self.compact_some();
        for id in self.ids.clone() {
            if self.is_running(id) {
                self.call(id, |n| n.tick());
            }
        }
        self.check_step();
    }

    /// Retention: running nodes compact at random points of their checked committed prefix.
    fn compact_some(&mut self) {
        for id in self.ids.clone() {
            if !self.is_running(id) || !self.compact_rng.chance(self.compact) {
                continue;
            }
            let checked = self.slots[&id].checked;
            let start = self.node(id).log().first_index().saturating_sub(1);
            if checked <= start {
                continue;
            }
            let to = start + 1 + self.compact_rng.below(checked - start);
            self.stats.compactions += 1;
            self.note(|| format!("n{id} compacts to {to}"));
            self.call(id, |n| n.compact(to).map(|_| ()));
        }
    }

    /// After healing in the lagging-follower scenario: every other node compacts all it has
    /// checked committed (past all the lagger holds: a commit of the post-heal term is there),
    /// then the lagger comes back. Returns its installs so far.
    fn release_lagger(&mut self, lagger: NodeId) -> usize {
        for id in self.ids.clone() {
            if id != lagger && self.is_up(id) {
                let checked = self.slots[&id].checked;
                self.call(id, |n| n.compact(checked).map(|_| ()));
            }
        }
        let slot = self.slots.get_mut(&lagger).expect("slot");
        let installs = slot.down_log.as_ref().map_or(0, |log| log.installs);
        self.restart(lagger);
        self.note(|| format!("lagging n{lagger} is back"));
        installs
    }

    fn is_up(&self, id: NodeId) -> bool {
        self.slots[&id].node.is_some()
    }

    fn is_running(&self, id: NodeId) -> bool {
        self.is_up(id) && self.slots[&id].paused_until <= self.now
    }

    fn node(&self, id: NodeId) -> &RaftNode<SimLog> {
        self.slots[&id].node.as_ref().expect("node is up")
    }

    /// Calls into a running node, then carries out what it asks for.
    fn call(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut RaftNode<SimLog>) -> Result<(), super::RaftError>,
    ) {
        let slot = self.slots.get_mut(&id).expect("slot");
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if let Err(e) = f(node) {
            self.fail(&format!("node {id} failed: {e}"));
        }
        let outputs = node.drain();
        for output in outputs {
            self.handle_output(id, output);
        }
    }

    fn handle_output(&mut self, id: NodeId, output: Output) {
        match output {
            Output::Send(m) => {
                let granted = matches!(m.body, MessageBody::VoteResponse { granted: true });
                if granted && self.rng.chance(self.faults.crash_after_vote) {
                    self.crash_soon.push(id);
                }
                self.check_send(id, &m);
                self.send(m);
            }
            Output::PersistHardState(hs) => {
                let slot = self.slots.get_mut(&id).expect("slot");
                slot.hs_written = Some(hs);
                slot.pending_io.push(Io::HardState(hs));
            }
            Output::PersistLog { index, term } => {
                let slot = self.slots.get_mut(&id).expect("slot");
                slot.pending_io.push(Io::Log(index, term));
            }
            Output::Committed(index) => {
                self.note(|| format!("n{id} committed {index}"));
                let leader = self.node(id).role() == Role::Leader;
                if leader && self.rng.chance(self.faults.crash_after_commit) {
                    self.crash_soon.push(id);
                }
            }
            Output::RoleChanged { role, term, leader } => {
                self.note(|| format!("n{id} {role:?} term {term} leader {leader:?}"));
                if role == Role::Leader {
                    self.check_new_leader(id, term);
                }
            }
        }
    }

    /// A message leaves a node: it may be lost, duplicated and is delayed (so reordered).
    fn send(&mut self, m: Message) {
        let copies = if self.rng.chance(self.faults.drop) {
            self.stats.lost_messages += 1;
            0
        } else if self.rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if !self.healed && self.rng.chance(10_000) {
                1 + self.rng.below(60)
            } else {
                1 + self.rng.below(self.faults.max_delay)
            };
            self.in_flight.push((self.now + delay, m.clone()));
        }
    }

    /// Delivers every due message, in random order; a cut link or a down node loses it, a
    /// paused node gets it when it resumes.
    fn deliver(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            let (at, m) = &self.in_flight[i];
            let paused = self.slots[&m.to].paused_until > now;
            if *at <= now && !paused {
                due.push(self.in_flight.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        while !due.is_empty() {
            let m = due.swap_remove(self.rng.pick(due.len()));
            if self.cut.contains(&(m.from, m.to)) || !self.is_up(m.to) {
                self.stats.lost_messages += 1;
                continue;
            }
            self.stats.delivered += 1;
            self.call(m.to, |n| n.step(m));
        }
    }

    /// `fsync` of the log and the hard-state file, then the acknowledgements.
    fn sync(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        node.log_mut().sync();
        let pending = std::mem::take(&mut slot.pending_io);
        if let Some(hs) = slot.hs_written.take() {
            let old = slot.hs_durable;
            slot.hs_durable = hs;
            self.check_hard_state_monotonic(id, old, hs);
        }
        for io in pending {
            match io {
                Io::HardState(hs) => self.call(id, |n| n.hard_state_persisted(hs)),
                Io::Log(index, term) => self.call(id, |n| n.log_persisted(index, term)),
            }
        }
    }

    fn propose(&mut self) {
        let leader = self
            .ids
            .iter()
            .copied()
            .find(|&id| self.is_running(id) && self.node(id).role() == Role::Leader);
        let Some(id) = leader else { return };
        let term = self.node(id).term();
        // After healing, only one marker per leader and term: everything acknowledged before
        // it sits below it in the log.
        let wanted = if self.healed {
            self.markers.insert((id, term))
        } else {
            self.rng.chance(self.faults.propose)
        };
        if !wanted {
            return;
        }
        self.next_payload += 1;
        let payload = Bytes::from(format!("v{}", self.next_payload));
        let slot = self.slots.get_mut(&id).expect("slot");
        let node = slot.node.as_mut().expect("up");
        match node.propose(payload.clone()) {
            Ok(index) => {
                let p = Proposal {
                    node: id,
                    term,
                    index,
                    payload,
                    seq: self.next_payload,
                };
                self.note(|| format!("n{id} proposed {index}@{term}"));
                self.proposals.push(p);
                if self.rng.chance(self.faults.crash_after_propose) {
                    self.crash_soon.push(id);
                }
                self.call(id, |_| Ok(()));
            }
            Err(e) => self.fail(&format!("leader {id} refused a proposal: {e}")),
        }
    }

    /// Hands due peer-down hints to their nodes; a paused node gets them when it resumes, a
    /// crashed one never.
    fn deliver_hints(&mut self) {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.hints)
            .into_iter()
            .partition(|&(at, to, _)| at <= now && (!self.is_up(to) || self.is_running(to)));
        self.hints = later;
        for (_, to, about) in due {
            if self.is_up(to) {
                self.stats.hints += 1;
                self.note(|| format!("n{to} told n{about} is unreachable"));
                self.call(to, |n| {
                    n.leader_unreachable(about);
                    Ok(())
                });
            }
        }
    }

    fn inject_faults(&mut self) {
        let ids = self.ids.clone();
        for &id in &ids {
            if self.is_up(id) && self.rng.chance(self.faults.spurious_hint) {
                let about = self.rng.choose(&ids);
                let at = self.now + self.rng.below(self.faults.max_delay + 1);
                self.hints.push((at, id, about));
            }
        }
        let down = ids.iter().filter(|&&id| !self.is_up(id)).count();
        for &id in &ids {
            if !self.is_up(id) {
                if self.now >= self.slots[&id].restart_at {
                    self.restart(id);
                }
            } else if down < ids.len() && self.rng.chance(self.faults.crash) {
                self.crash(id);
            } else if self.rng.chance(self.faults.pause) {
                let until = self.now + 5 + self.rng.below(80);
                self.slots.get_mut(&id).expect("slot").paused_until = until;
                self.note(|| format!("n{id} paused until {until}"));
            }
        }
        if self.rng.chance(self.faults.partition) {
            self.repartition();
        }
    }

    /// Replaces the network's cuts with a new random shape.
    fn repartition(&mut self) {
        self.cut.clear();
        let ids = self.ids.clone();
        let a = self.rng.choose(&ids);
        let b = loop {
            let b = self.rng.choose(&ids);
            if b != a {
                break b;
            }
        };
        let shape = self.rng.below(5);
        match shape {
            0 => {} // healed
            1 => {
                // A symmetric split into two random sides.
                let side: BTreeSet<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng.chance(500_000))
                    .collect();
                for &x in &ids {
                    for &y in &ids {
                        if side.contains(&x) != side.contains(&y) {
                            self.cut.insert((x, y));
                        }
                    }
                }
            }
            2 => {
                // One node isolated both ways.
                for &y in &ids {
                    if y != a {
                        self.cut.insert((a, y));
                        self.cut.insert((y, a));
                    }
                }
            }
            3 => {
                // A one-way cut: a can no longer reach b (b still reaches a).
                self.cut.insert((a, b));
            }
            _ => {
                // A bridge: a and b cannot talk, everyone else reaches both.
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
        let cut = format!("{:?}", self.cut);
        self.note(|| format!("network cuts {cut}"));
    }

    fn crash(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        let node = slot.node.take().expect("up");
        let (log, lost, torn, disk_note) = node.into_log().crash(&mut self.rng);
        self.stats.crashes += 1;
        self.stats.lost_writes += lost;
        self.stats.torn_writes += usize::from(torn);
        let old = slot.hs_durable;
        let mut hs_note = "hard state: synced";
        if let Some(hs) = slot.hs_written.take() {
            if self.rng.chance(500_000) {
                slot.hs_durable = hs;
                hs_note = "hard state: unsynced write survived";
            } else {
                hs_note = "hard state: unsynced write lost";
            }
        }
        slot.pending_io.clear();
        slot.down_log = Some(log);
        slot.restart_at = self.now + 5 + self.rng.below(150);
        let new = slot.hs_durable;
        self.check_hard_state_monotonic(id, old, new);
        self.proposals.retain(|p| p.node != id); // outcome unknown: never acknowledged
        for other in self.ids.clone() {
            if other != id && self.rng.chance(self.faults.crash_hint) {
                let at = self.now + self.rng.below(self.faults.max_delay + 1);
                self.hints.push((at, other, id));
            }
        }
        self.note(|| format!("n{id} CRASHED: {disk_note}; {hs_note}"));
    }

    fn restart(&mut self, id: NodeId) {
        let mut cfg = Config::new(id, self.ids.clone());
        cfg.max_append_entries = self.faults.max_append_entries;
        cfg.seed = self.rng.next();
        let slot = self.slots.get_mut(&id).expect("slot");
        let log = slot.down_log.take().expect("down");
        let hs = slot.hs_durable;
        match RaftNode::new(cfg, log, hs) {
            Ok(node) => slot.node = Some(node),
            Err(e) => self.fail(&format!("node {id} cannot restart: {e}")),
        }
        slot.checked = 0;
        slot.paused_until = 0;
        self.note(|| format!("n{id} restarted with {hs:?}"));
    }

    /// Stops every fault: links heal, nodes come back, nothing more is lost.
    fn heal(&mut self) {
        self.healed = true;
        self.heal_seq = self.next_payload;
        self.cut.clear();
        self.faults.spurious_hint = 0;
        self.faults.drop = 0;
        self.faults.max_delay = self.faults.max_delay.min(5);
        for id in self.ids.clone() {
            if !self.is_up(id) && self.lagger != Some(id) {
                self.restart(id);
            }
            self.slots.get_mut(&id).expect("slot").paused_until = 0;
        }
        self.note(|| "HEALED".to_string());
    }

    /// Every node has committed everything acknowledged.
    fn all_caught_up(&self) -> bool {
        let top = self.acked.iter().map(|p| p.index).max().unwrap_or(0);
        self.ids.iter().all(|&id| self.node(id).commit() >= top)
    }

    // ---- invariants ----

    /// A message may leave only once what it depends on is durable.
    fn check_send(&self, id: NodeId, m: &Message) {
        let slot = &self.slots[&id];
        let hs = slot.hs_durable;
        let log = self.node(id).log();
        match m.body {
            MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. } => {}
            _ if hs.term != m.term => self.fail(&format!(
                "n{id} sent {m:?} while its durable term is {}",
                hs.term
            )),
            MessageBody::VoteResponse { granted: true } if hs.vote != Some(m.to) => self.fail(
                &format!("n{id} granted a vote to {} before it was durable", m.to),
            ),
            MessageBody::AppendResponse {
                success: true,
                index,
                ..
            } if log.durable_term(index) != log.term(index) => self.fail(&format!(
                "n{id} acknowledged index {index} before it was durable"
            )),
            _ => {}
        }
    }

    /// Term never decreases; a vote never changes within a term; commit never decreases.
    fn check_hard_state_monotonic(&self, id: NodeId, old: HardState, new: HardState) {
        let ok = new.term > old.term
            || (new.term == old.term
                && (old.vote.is_none() || old.vote == new.vote)
                && new.commit >= old.commit);
        let ok = ok && new.commit >= old.commit;
        if !ok {
            self.fail(&format!(
                "n{id} durable hard state went from {old:?} to {new:?}"
            ));
        }
    }

    /// At most one leader per term, and it holds every entry committed in an earlier term
    /// (leader completeness) — acknowledged or not. A leader of an old term may be elected
    /// late (its vote grants were delayed) and need not hold what later terms committed.
    fn check_new_leader(&mut self, id: NodeId, term: Term) {
        let first = *self.leaders.entry(term).or_insert(id);
        if first != id {
            self.fail(&format!("two leaders in term {term}: n{first} and n{id}"));
        }
        let log = self.node(id).log();
        // Entries it compacted were committed here and checked then.
        let start = log.first_index().saturating_sub(1);
        for c in self.committed.iter().filter(|c| c.seen_in < term) {
            if c.entry.index < start {
                continue;
            }
            if log.term(c.entry.index) != Some(c.entry.term) {
                let acked = self.acked.iter().any(|p| p.index == c.entry.index);
                self.fail(&format!(
                    "new leader n{id} (term {term}) lacks entry {}@{}, committed by term {} \
                     (acknowledged: {acked})",
                    c.entry.index, c.entry.term, c.seen_in
                ));
            }
        }
    }

    /// Checked after every time unit.
    fn check_step(&mut self) {
        for id in self.ids.clone() {
            if !self.is_up(id) {
                continue;
            }
            let (role, term, commit) = {
                let n = self.node(id);
                (n.role(), n.term(), n.commit())
            };
            if role == Role::Leader {
                let first = *self.leaders.entry(term).or_insert(id);
                if first != id {
                    self.fail(&format!("two leaders in term {term}: n{first} and n{id}"));
                }
            }
            let slot = self.slots.get_mut(&id).expect("slot");
            let checked = slot.checked;
            let node = slot.node.as_mut().expect("up");
            let truncated = node.log_mut().lowest_truncation.take();
            if let Some(t) = truncated {
                self.stats.truncations += 1;
                if t <= checked {
                    self.fail(&format!(
                        "n{id} truncated at {t}, below its commit {checked}"
                    ));
                }
            }
            if commit < checked {
                self.fail(&format!(
                    "n{id} commit went back from {checked} to {commit}"
                ));
            }
            // Committed prefixes are identical everywhere, where the logs still hold them; a
            // compacted start is a committed entry (same term), described by its payload.
            let log = self.node(id).log();
            let start = log.first_index().saturating_sub(1);
            if start > 0 && start <= commit {
                let seen = usize::try_from(start - 1)
                    .ok()
                    .and_then(|p| self.committed.get(p));
                match seen {
                    Some(c) if Some(c.entry.term) == log.term(start) => {}
                    _ => self.fail(&format!(
                        "n{id} starts after {start}@{:?}, which is not the committed entry {:?}",
                        log.term(start),
                        seen.map(|c| &c.entry)
                    )),
                }
                if log.snapshot_payload() != start.to_be_bytes().as_slice() {
                    self.fail(&format!(
                        "n{id}'s snapshot payload does not describe {start}"
                    ));
                }
            }
            let from = (checked + 1).max(log.first_index());
            let fresh = match log.entries(from, usize::MAX) {
                Ok(fresh) => fresh,
                Err(e) => self.fail(&format!("n{id} cannot read its committed entries: {e}")),
            };
            for e in fresh.into_iter().take_while(|e| e.index <= commit) {
                let pos = usize::try_from(e.index - 1).expect("fits");
                match self.committed.get(pos) {
                    Some(c) if c.entry == e => {}
                    Some(c) => self.fail(&format!(
                        "n{id} committed {e:?} where another node committed {:?}",
                        c.entry
                    )),
                    None if pos == self.committed.len() => self.committed.push(Committed {
                        entry: e,
                        seen_in: term,
                    }),
                    None => self.fail(&format!(
                        "n{id} committed {e:?}, but entries before it were never seen committed"
                    )),
                }
            }
            self.slots.get_mut(&id).expect("slot").checked = commit;
        }
        // Proposals whose leader reports them committed are acknowledged to the client.
        let mut i = 0;
        while i < self.proposals.len() {
            let p = &self.proposals[i];
            let n = self.node(p.node);
            if n.commit() < p.index {
                i += 1;
                continue;
            }
            let p = self.proposals.swap_remove(i);
            if self.node(p.node).log().term(p.index) == Some(p.term) {
                self.note(|| format!("ack {}@{}", p.index, p.term));
                self.acked.push(p);
            }
        }
    }

    /// After healing: every acknowledged entry is committed, in place, on every node.
    fn check_final(&self) {
        for p in &self.acked {
            let pos = usize::try_from(p.index - 1).expect("fits");
            let ok = self.committed.get(pos).is_some_and(|c| {
                let e = &c.entry;
                e.term == p.term && e.payload == p.payload && e.kind == EntryKind::Normal
            });
            if !ok {
                self.fail(&format!(
                    "acknowledged {}@{} is not committed",
                    p.index, p.term
                ));
            }
            for &id in &self.ids {
                let n = self.node(id);
                let compacted = p.index < n.log().first_index();
                if n.commit() < p.index || (!compacted && n.log().term(p.index) != Some(p.term)) {
                    self.fail(&format!("n{id} lacks acknowledged {}@{}", p.index, p.term));
                }
            }
        }
    }
}

/// Runs the seeds chosen by the environment for a cluster of `nodes`: `RAFT_SEED` alone (with
/// a trace), or `RAFT_SEEDS` seeds from `RAFT_SEED_BASE` (default `default_seeds` from 0).
fn run_seeds(test: &str, nodes: u64, default_seeds: u64, lagging: bool) {
    let env = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
    };
    let (seeds, verbose) = match env("RAFT_SEED") {
        Some(seed) => (seed..seed + 1, true),
        None => {
            let base = env("RAFT_SEED_BASE").unwrap_or(0);
            (
                base..base + env("RAFT_SEEDS").unwrap_or(default_seeds),
                false,
            )
        }
    };
    let started = Instant::now();
    let mut total = Stats::default();
    let count = seeds.end - seeds.start;
    for seed in seeds {
        let outcome = std::panic::catch_unwind(|| Sim::new(seed, nodes, verbose, lagging).run());
        match outcome {
            Ok(stats) => {
                total.add(&stats);
                if verbose {
                    eprintln!("seed {seed}: {stats:?}");
                }
            }
            Err(_) => panic!(
                "raft simulation failed for seed {seed}; replay with: \
                 RAFT_SEED={seed} cargo test -p runnel-broker --lib raft::sim::tests::{test}"
            ),
        }
    }
    eprintln!(
        "{test}: {count} seeds in {:.1?}: {total:?}",
        started.elapsed()
    );
}

mod tests {
    use super::{run_seeds, Entry, Index, RaftLog, StorageError, Term};
    use bytes::Bytes;

    #[test]
    fn three_nodes() {
        run_seeds("three_nodes", 3, 200, false);
    }

    #[test]
    fn five_nodes() {
        run_seeds("five_nodes", 5, 100, false);
    }

    /// One node is down from early on while the others commit and compact; after healing it
    /// can only catch up by installing a snapshot, which the run checks it did.
    #[test]
    fn lagging_follower_catches_up_by_snapshot() {
        run_seeds("lagging_follower_catches_up_by_snapshot", 3, 200, true);
    }

    #[test]
    fn sim_log_meets_the_log_contract() {
        super::super::storage::contract(super::SimLog::new());
        super::super::storage::contract_compaction(Synced(super::SimLog::new()), true);
    }

    /// A [`super::SimLog`] synced after every write: the compaction contract compacts entries
    /// it has just written, which the simulated disk allows only once they are durable.
    struct Synced(super::SimLog);

    impl RaftLog for Synced {
        fn first_index(&self) -> Index {
            self.0.first_index()
        }
        fn last_index(&self) -> Index {
            self.0.last_index()
        }
        fn term(&self, index: Index) -> Option<Term> {
            self.0.term(index)
        }
        fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
            self.0.entries(from, max)
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            self.0.append(entries)?;
            self.0.sync();
            Ok(())
        }
        fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
            self.0.truncate(from)?;
            self.0.sync();
            Ok(())
        }
        fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
            self.0.compact_to(index)
        }
        fn snapshot_payload(&self) -> Bytes {
            self.0.snapshot_payload()
        }
        fn install_snapshot(
            &mut self,
            index: Index,
            term: Term,
            payload: Bytes,
        ) -> Result<(), StorageError> {
            self.0.install_snapshot(index, term, payload)?;
            self.0.sync();
            Ok(())
        }
    }

    #[test]
    fn sim_log_refuses_to_compact_what_is_not_durable() {
        let mut log = super::SimLog::new();
        let e = |index| Entry {
            term: 1,
            index,
            kind: super::EntryKind::Normal,
            payload: Bytes::new(),
        };
        log.append(&[e(1), e(2)]).unwrap();
        assert!(log.compact_to(1).is_err());
        log.sync();
        log.append(&[e(3)]).unwrap();
        log.compact_to(2).unwrap();
        assert!(log.compact_to(3).is_err());
        // A crash keeps the compaction (durable at once) whatever happens to entry 3.
        let (log, _, _, _) = log.crash(&mut super::Rng::new(1));
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
    }
}
