//! Focused tests of the Raft core on a tiny hand-driven cluster: election, pre-vote against a
//! returning partitioned node, conflict truncation, the own-term commit rule (also as the Raft
//! paper's Figure 8, step by step), durable votes, the transport's leader-unreachable hint,
//! and hostile input.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::{
    Config, Entry, EntryKind, HardState, Index, MemRaftLog, Message, MessageBody, NodeId, Output,
    RaftError, RaftLog, RaftNode, Role, Term,
};

type Node = RaftNode<MemRaftLog>;

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        payload: Bytes::from(format!("{index}@{term}")),
    }
}

fn log_of(entries: &[Entry]) -> MemRaftLog {
    let mut log = MemRaftLog::new();
    log.append(entries).unwrap();
    log
}

/// Drains a node, acknowledging every durability request at once; returns what it sent.
fn sent(node: &mut Node) -> Vec<Message> {
    let mut sent = Vec::new();
    loop {
        let outputs = node.drain();
        if outputs.is_empty() {
            return sent;
        }
        for output in outputs {
            match output {
                Output::Send(m) => sent.push(m),
                Output::PersistHardState(hs) => node.hard_state_persisted(hs).unwrap(),
                Output::PersistLog { index, term } => node.log_persisted(index, term).unwrap(),
                Output::Committed(_) | Output::RoleChanged { .. } => {}
            }
        }
    }
}

fn terms(node: &Node) -> Vec<Term> {
    node.log().all().iter().map(|e| e.term).collect()
}

/// Nodes wired through a FIFO queue. Durability requests are acknowledged at once, except log
/// syncs of a `stalled` node, which wait in `held` until released.
struct Cluster {
    nodes: BTreeMap<NodeId, Node>,
    queue: VecDeque<Message>,
    /// Isolated nodes: nothing reaches them, nothing they send arrives.
    cut: BTreeSet<NodeId>,
    /// One-way cuts: (from, to).
    cut_links: BTreeSet<(NodeId, NodeId)>,
    stalled: BTreeSet<NodeId>,
    held: BTreeMap<NodeId, Vec<(Index, Term)>>,
}

impl Cluster {
    fn new(n: u64) -> Self {
        Self::build(vec![Vec::new(); usize::try_from(n).unwrap()], 0, |_| {})
    }

    /// One node per log, all at hard-state `term`, configured by `tweak`.
    fn build(logs: Vec<Vec<Entry>>, term: Term, tweak: impl Fn(&mut Config)) -> Self {
        let ids: Vec<NodeId> = (1..=u64::try_from(logs.len()).unwrap()).collect();
        let nodes = ids
            .iter()
            .zip(logs)
            .map(|(&id, entries)| {
                let mut cfg = Config::new(id, ids.clone());
                cfg.seed = id;
                tweak(&mut cfg);
                let hs = HardState {
                    term,
                    vote: None,
                    commit: 0,
                };
                (id, RaftNode::new(cfg, log_of(&entries), hs).unwrap())
            })
            .collect();
        Self {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            cut_links: BTreeSet::new(),
            stalled: BTreeSet::new(),
            held: BTreeMap::new(),
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// Carries out one node's outputs until it has none.
    fn pump(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).unwrap();
            let outputs = node.drain();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                let node = self.nodes.get_mut(&id).unwrap();
                match output {
                    Output::Send(m) => {
                        let cut = self.cut.contains(&m.from)
                            || self.cut.contains(&m.to)
                            || self.cut_links.contains(&(m.from, m.to));
                        if !cut {
                            self.queue.push_back(m);
                        }
                    }
                    Output::PersistHardState(hs) => node.hard_state_persisted(hs).unwrap(),
                    Output::PersistLog { index, term } => {
                        if self.stalled.contains(&id) {
                            self.held.entry(id).or_default().push((index, term));
                        } else {
                            node.log_persisted(index, term).unwrap();
                        }
                    }
                    Output::Committed(_) | Output::RoleChanged { .. } => {}
                }
            }
        }
    }

    /// Delivers messages until the network is quiet.
    fn settle(&mut self) {
        loop {
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                self.pump(id);
            }
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            if self.cut.contains(&m.to) {
                continue;
            }
            let to = m.to;
            self.nodes.get_mut(&to).unwrap().step(m).unwrap();
        }
    }

    /// Every node ticks `times` times, the network settling after each round.
    fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            for node in self.nodes.values_mut() {
                node.tick().unwrap();
            }
            self.settle();
        }
    }

    /// Ticks only `id` until it leads.
    fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            self.nodes.get_mut(&id).unwrap().tick().unwrap();
            self.settle();
            if self.node(id).role() == Role::Leader {
                return;
            }
        }
        panic!("n{id} was not elected");
    }

    fn release(&mut self, id: NodeId) {
        self.stalled.remove(&id);
        for (index, term) in self.held.remove(&id).unwrap_or_default() {
            self.nodes
                .get_mut(&id)
                .unwrap()
                .log_persisted(index, term)
                .unwrap();
        }
        self.settle();
    }
}

#[test]
fn raft_election_elects_one_leader_that_commits_its_noop() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2); // a heartbeat carries the commit index
    for id in 1..=3 {
        let n = c.node(id);
        assert_eq!(n.term(), 1, "pre-vote does not raise the term");
        assert_eq!(n.leader(), Some(1));
        assert_eq!(n.commit(), 1);
        let noop = &n.log().all()[0];
        assert_eq!((noop.index, noop.term, noop.kind), (1, 1, EntryKind::Noop));
    }
    assert_eq!(c.node(2).role(), Role::Follower);
    assert_eq!(c.node(3).role(), Role::Follower);
}

/// Isolates node 3 for a long time, lets it return, and reports the leader's term afterwards.
fn partitioned_node_returns(pre_vote_and_check_quorum: bool) -> (Node, Node) {
    let mut c = Cluster::build(vec![Vec::new(); 3], 0, |cfg| {
        cfg.pre_vote = pre_vote_and_check_quorum;
        cfg.check_quorum = pre_vote_and_check_quorum;
    });
    c.elect(1);
    c.tick_all(2);
    c.cut.insert(3);
    c.tick_all(200);
    c.cut.remove(&3);
    c.tick_all(50);
    let mut nodes = c.nodes.into_values();
    let first = nodes.next().unwrap();
    let third = nodes.nth(1).unwrap();
    (first, third)
}

#[test]
fn raft_pre_vote_keeps_a_returning_partitioned_node_from_deposing_the_leader() {
    let (leader, returned) = partitioned_node_returns(true);
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(leader.term(), 1);
    assert_eq!(
        returned.term(),
        1,
        "the isolated node never raised its term"
    );
    assert_eq!(returned.leader(), Some(1));

    // Without pre-vote and check-quorum the same scenario deposes the leader.
    let (old_leader, returned) = partitioned_node_returns(false);
    assert!(returned.term() > 1);
    assert!(old_leader.term() > 1);
}

/// Node 3 stops hearing the leader (a one-way cut) but still reaches node 2.
fn one_way_cut_from_leader(check_quorum: bool) -> Vec<(Role, Term)> {
    let mut c = Cluster::build(vec![Vec::new(); 3], 0, |cfg| {
        cfg.check_quorum = check_quorum
    });
    c.elect(1);
    c.tick_all(2);
    c.cut_links.insert((1, 3));
    c.tick_all(100);
    c.nodes.values().map(|n| (n.role(), n.term())).collect()
}

#[test]
fn raft_leader_lease_keeps_a_node_that_cannot_hear_the_leader_from_deposing_it() {
    // Node 2 still hears the leader, so it refuses node 3's pre-votes: the leader stays.
    let roles = one_way_cut_from_leader(true);
    assert_eq!(roles[0], (Role::Leader, 1));
    assert_eq!(roles[1], (Role::Follower, 1));
    assert_eq!(roles[2].1, 1, "node 3 never raised its term");

    // Without check-quorum's lease node 2 grants them, and the leader is deposed.
    let roles = one_way_cut_from_leader(false);
    assert!(roles.iter().all(|(_, term)| *term > 1), "{roles:?}");
}

/// The leader (node 1) dies; `told` nodes get the transport's peer-down hint on every tick
/// (as repeated refused reconnects would give it). Returns each node's (role, term, leader)
/// after `ticks` ticks.
fn leader_dies(told: &[NodeId], ticks: usize) -> Vec<(Role, Term, Option<NodeId>)> {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.cut.insert(1);
    for _ in 0..ticks {
        for &id in told {
            c.nodes.get_mut(&id).unwrap().leader_unreachable(1);
        }
        c.tick_all(1);
    }
    [2, 3]
        .iter()
        .map(|id| {
            let n = c.node(*id);
            (n.role(), n.term(), n.leader())
        })
        .collect()
}

#[test]
fn raft_followers_told_the_leader_is_unreachable_elect_within_a_few_ticks() {
    // election_tick is 10: without the hint nobody stands before tick 10.
    let untold = leader_dies(&[], 5);
    assert_eq!(untold[0], (Role::Follower, 1, Some(1)));
    assert_eq!(untold[1], (Role::Follower, 1, Some(1)));

    // Both told at once: node 2 (next after 1 in the voter list) stands first and wins in the
    // very next term, no split vote, although the hint keeps coming.
    let told = leader_dies(&[2, 3], 5);
    assert_eq!(told[0], (Role::Leader, 2, Some(2)), "{told:?}");
    assert_eq!(told[1], (Role::Follower, 2, Some(2)), "{told:?}");

    // Only node 3 told (node 2's link to the dead leader lingers): node 2 is still in its
    // lease and refuses the pre-vote, so node 3 waits for node 2's own timeout.
    let one = leader_dies(&[3], 5);
    assert_eq!(one[1].1, 1, "node 3 never raised its term alone: {one:?}");
    let one = leader_dies(&[3], 25);
    assert!(
        one.iter()
            .any(|(role, term, _)| *role == Role::Leader && *term == 2),
        "{one:?}"
    );
}

#[test]
fn raft_a_wrong_unreachable_hint_does_not_depose_a_live_leader() {
    // Node 3's link from the leader resets and stays down; node 2 still hears the leader.
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.cut_links.insert((1, 3));
    for _ in 0..100 {
        c.nodes.get_mut(&3).unwrap().leader_unreachable(1);
        c.tick_all(1);
    }
    assert_eq!((c.node(1).role(), c.node(1).term()), (Role::Leader, 1));
    assert_eq!(c.node(2).leader(), Some(1));
    assert_eq!(c.node(3).term(), 1, "node 3's pre-votes were refused");

    // The link comes back: node 3 follows the leader again.
    c.cut_links.clear();
    c.tick_all(4);
    assert_eq!(
        (c.node(3).role(), c.node(3).leader()),
        (Role::Follower, Some(1))
    );

    // A hint about a node that is not the leader, or to the leader itself, changes nothing.
    for _ in 0..30 {
        c.nodes.get_mut(&2).unwrap().leader_unreachable(3);
        c.nodes.get_mut(&1).unwrap().leader_unreachable(2);
        c.tick_all(1);
    }
    for id in 1..=3 {
        assert_eq!((c.node(id).term(), c.node(id).leader()), (1, Some(1)));
    }
}

#[test]
fn raft_follower_truncates_only_at_a_real_conflict() {
    let append = |prev_index: Index, prev_term: Term, entries: Vec<Entry>| Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit: 0,
        },
    };
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 0,
    };
    let log = log_of(&[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]);
    let mut n = RaftNode::new(Config::new(2, vec![1, 2, 3]), log, hs).unwrap();

    // Stale or duplicated appends that agree with the log change nothing.
    n.step(append(0, 0, vec![entry(1, 1)])).unwrap();
    n.step(append(1, 1, vec![entry(2, 1), entry(3, 2)]))
        .unwrap();
    assert_eq!(terms(&n), [1, 1, 2, 2]);

    // A mismatch at prev_index is rejected with a hint that skips the whole conflicting term.
    sent(&mut n);
    n.step(append(4, 3, vec![entry(5, 3)])).unwrap();
    let hint = sent(&mut n).into_iter().find_map(|m| match m.body {
        MessageBody::AppendResponse {
            success: false,
            index,
            rejected,
        } => Some((index, rejected)),
        _ => None,
    });
    assert_eq!(hint, Some((2, 4)));
    assert_eq!(terms(&n), [1, 1, 2, 2]);

    // A real conflict at index 3 removes 3 and 4 and appends the leader's entry.
    n.step(append(2, 1, vec![entry(3, 3)])).unwrap();
    assert_eq!(terms(&n), [1, 1, 3]);

    // A reordered older append of the same leader does not truncate the newer entry.
    n.step(append(3, 3, vec![entry(4, 3)])).unwrap();
    n.step(append(2, 1, vec![entry(3, 3)])).unwrap();
    assert_eq!(terms(&n), [1, 1, 3, 3]);
}

#[test]
fn raft_an_append_contradicting_the_committed_prefix_is_ignored() {
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 2,
    };
    let log = log_of(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
    let mut n = RaftNode::new(Config::new(2, vec![1, 2, 3]), log, hs).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(2, 3)],
            commit: 2,
        },
    })
    .unwrap();
    assert_eq!(terms(&n), [1, 1, 2]);
    assert_eq!(n.commit(), 2);
}

#[test]
fn raft_a_leader_does_not_commit_an_earlier_terms_entry_by_counting_replicas() {
    // Nodes 1 and 2 hold entry 1 of term 1, uncommitted; node 3 is cut off.
    let mut c = Cluster::build(
        vec![vec![entry(1, 1)], vec![entry(1, 1)], vec![]],
        1,
        |_| {},
    );
    c.cut.insert(3);
    c.stalled.insert(2); // node 2 writes the leader's no-op but has not synced it yet
    c.elect(1);
    assert_eq!(c.node(1).term(), 2);
    c.tick_all(4);
    // Entry 1 is on a majority (nodes 1 and 2), but it is from term 1: not committed.
    assert_eq!(c.node(1).log().all().len(), 2);
    assert_eq!(c.node(2).log().all().len(), 2);
    assert_eq!(c.node(1).commit(), 0);

    // Once node 2 has the term-2 no-op durable, both entries commit together.
    c.release(2);
    assert_eq!(c.node(1).commit(), 2);
    c.tick_all(2);
    assert_eq!(c.node(2).commit(), 2);
}

/// The Raft paper's Figure 8, step by step on five nodes (one entry per append, so durability
/// can stop between entries). (b) S5 holds 2@3, S1 and S2 hold 2@2. (c) S1 leads term 4 and
/// gets 2@2 durable on S3 too: on a majority, but from an earlier term, so it must not commit
/// — (d) shows why: S1 crashes before its own no-op 3@4 is durable anywhere else, S5 wins
/// term 5 with the votes of S2, S3 and S4 (its last term 3 beats their 2) and replaces 2@2
/// everywhere. Had S1 counted replicas, a committed entry would be gone. (e) The other
/// branch: once S1's no-op is durable on a majority, 2@2 commits with it and S5 can no
/// longer win.
#[test]
fn raft_figure_8_an_entry_on_a_majority_from_an_earlier_term_is_not_committed() {
    fn setup() -> Cluster {
        let logs = vec![
            vec![entry(1, 1), entry(2, 2)],
            vec![entry(1, 1), entry(2, 2)],
            vec![entry(1, 1)],
            vec![entry(1, 1)],
            vec![entry(1, 1), entry(2, 3)],
        ];
        let mut c = Cluster::build(logs, 3, |cfg| cfg.max_append_entries = 1);
        // (c) S4 and S5 are away; S2 and S3 receive S1's entries but sync nothing yet.
        c.cut.extend([4, 5]);
        c.stalled.extend([2, 3]);
        c.elect(1);
        assert_eq!((c.node(1).term(), terms(c.node(1))), (4, vec![1, 2, 4]));
        c.tick_all(6);
        // S3 got 2@2 (then 3@4); only the prefix up to 2@2 becomes durable there.
        assert_eq!(terms(c.node(3)), vec![1, 2, 4]);
        let n3 = c.nodes.get_mut(&3).unwrap();
        n3.log_persisted(2, 2).unwrap();
        c.held.get_mut(&3).unwrap().retain(|&(i, _)| i > 2);
        c.tick_all(4);
        c
    }

    let mut c = setup();
    // 2@2 is durable on S1, S2 and S3 — a majority of five — and S1 knows it.
    assert_eq!(terms(c.node(2))[..2], [1, 2]);
    assert_eq!(
        c.node(1).commit(),
        0,
        "an entry of term 2 must not commit in term 4 by counting replicas"
    );

    // (d) S1 crashes; S2 and S3 restart from what they synced (3@4 was never durable).
    c.cut.insert(1);
    c.cut.remove(&4);
    c.cut.remove(&5);
    c.stalled.clear();
    c.held.clear();
    for id in [2, 3] {
        let hs = c.node(id).hard_state();
        let mut cfg = Config::new(id, (1..=5).collect());
        cfg.seed = id;
        cfg.max_append_entries = 1;
        let durable = vec![entry(1, 1), entry(2, 2)];
        c.nodes
            .insert(id, RaftNode::new(cfg, log_of(&durable), hs).unwrap());
    }
    c.elect(5);
    assert_eq!(c.node(5).term(), 5);
    c.tick_all(10);
    for id in 2..=5 {
        assert_eq!(
            terms(c.node(id)),
            vec![1, 3, 5],
            "n{id}: 2@2 replaced by 2@3"
        );
        assert_eq!(c.node(id).commit(), 3, "n{id}");
    }

    // (e) The same start, but S1 stays and S2, S3 sync its no-op: 2@2 commits with 3@4, and
    // S5 (last term 3) can no longer win an election.
    let mut c = setup();
    c.release(2);
    c.release(3);
    c.tick_all(2);
    assert_eq!(c.node(1).commit(), 3);
    c.cut.insert(1);
    c.cut.remove(&4);
    c.cut.remove(&5);
    for _ in 0..200 {
        c.nodes.get_mut(&5).unwrap().tick().unwrap();
        c.settle();
    }
    assert_ne!(c.node(5).role(), Role::Leader, "S5 lacks the committed 3@4");
    assert_eq!(terms(c.node(2)), vec![1, 2, 4]);
    assert_eq!(terms(c.node(3)), vec![1, 2, 4]);
}

#[test]
fn raft_a_vote_leaves_only_once_it_is_durable() {
    let mut n = RaftNode::new(
        Config::new(2, vec![1, 2, 3]),
        MemRaftLog::new(),
        HardState::default(),
    )
    .unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Vote {
            last_index: 0,
            last_term: 0,
        },
    })
    .unwrap();
    let voted = HardState {
        term: 1,
        vote: Some(1),
        commit: 0,
    };
    let outputs = n.drain();
    assert!(outputs.contains(&Output::PersistHardState(voted)));
    assert!(!outputs.iter().any(|o| matches!(o, Output::Send(_))));
    // An acknowledgement of some other state releases nothing.
    n.hard_state_persisted(HardState {
        term: 1,
        vote: None,
        commit: 0,
    })
    .unwrap();
    assert_eq!(n.drain(), vec![]);
    n.hard_state_persisted(voted).unwrap();
    let grant = Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::VoteResponse { granted: true },
    };
    assert_eq!(n.drain(), vec![Output::Send(grant)]);
}

#[test]
fn raft_a_follower_acknowledges_only_durable_entries() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.stalled.insert(2);
    c.stalled.insert(3);
    let index = c
        .nodes
        .get_mut(&1)
        .unwrap()
        .propose(Bytes::from_static(b"x"))
        .unwrap();
    c.tick_all(4);
    assert_eq!(c.node(2).log().last_index(), index);
    assert_eq!(
        c.node(1).commit(),
        index - 1,
        "written on all, durable on one"
    );
    c.release(3);
    assert_eq!(c.node(1).commit(), index);
}

#[test]
fn raft_progress_reports_each_followers_durable_match_on_the_leader_only() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    let noop = c.node(1).log().last_index();
    assert_eq!(
        c.node(1).progress().collect::<Vec<_>>(),
        vec![(2, noop), (3, noop)]
    );
    assert_eq!(
        c.node(2).progress().count(),
        0,
        "a follower reports nothing"
    );
    c.stalled.insert(3); // node 3 writes but does not sync
    let index = c
        .nodes
        .get_mut(&1)
        .unwrap()
        .propose(Bytes::from_static(b"x"))
        .unwrap();
    c.tick_all(4);
    assert_eq!(
        c.node(1).progress().collect::<Vec<_>>(),
        vec![(2, index), (3, noop)],
        "a written but unsynced entry is not matched"
    );
    c.release(3);
    c.tick_all(2);
    assert_eq!(
        c.node(1).progress().collect::<Vec<_>>(),
        vec![(2, index), (3, index)]
    );
}

/// Isolates node 3, commits `entries` more entries on 1 and 2 and compacts both to their
/// commit index: node 3 can then only catch up by a snapshot install.
fn lagging_follower(entries: usize) -> Cluster {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.cut.insert(3);
    for _ in 0..entries {
        c.nodes
            .get_mut(&1)
            .unwrap()
            .propose(Bytes::from_static(b"x"))
            .unwrap();
        c.settle();
    }
    c.tick_all(2);
    for id in [1, 2] {
        let n = c.nodes.get_mut(&id).unwrap();
        let commit = n.commit();
        assert_eq!(n.compact(u64::MAX).unwrap(), commit + 1);
    }
    c
}

#[test]
fn raft_compaction_discards_only_committed_entries() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.cut.insert(2);
    c.cut.insert(3);
    let leader = c.nodes.get_mut(&1).unwrap();
    leader.propose(Bytes::from_static(b"x")).unwrap();
    let _ = sent(leader);
    assert_eq!((leader.commit(), leader.log().last_index()), (1, 2));
    // Asked for everything, it keeps what is not committed.
    assert_eq!(leader.compact(u64::MAX).unwrap(), 2);
    assert_eq!(leader.log().term(1), Some(1));
    assert_eq!(leader.log().all().len(), 1);
}

#[test]
fn raft_a_lagging_follower_catches_up_by_a_snapshot_install() {
    let mut c = lagging_follower(5);
    let (first, payload) = {
        let l = c.node(1).log();
        (l.first_index(), l.snapshot_payload())
    };
    assert_eq!(
        first, 7,
        "the no-op and 5 entries, all committed and compacted"
    );
    assert_eq!(c.node(3).log().last_index(), 1);
    c.cut.remove(&3);
    c.tick_all(4);
    c.nodes
        .get_mut(&1)
        .unwrap()
        .propose(Bytes::from_static(b"after"))
        .unwrap();
    c.tick_all(4);
    let (leader, lagger) = (c.node(1), c.node(3));
    assert_eq!(
        lagger.log().first_index(),
        first,
        "installed the leader's start"
    );
    assert_eq!(lagger.log().snapshot_payload(), payload);
    assert_eq!(lagger.log().term(first - 1), leader.log().term(first - 1));
    assert_eq!(lagger.commit(), leader.commit());
    assert_eq!(lagger.log().all(), leader.log().all());
    assert_eq!(lagger.log().all().last().unwrap().payload, "after");
    let progress: Vec<_> = leader.progress().collect();
    assert!(progress.contains(&(3, leader.log().last_index())));
}

#[test]
fn raft_a_snapshot_install_is_acknowledged_only_once_durable() {
    let mut c = lagging_follower(3);
    c.stalled.insert(3);
    c.cut.remove(&3);
    c.tick_all(4);
    let start = c.node(1).log().first_index() - 1;
    assert_eq!(c.node(3).log().first_index(), start + 1, "installed");
    assert!(c.node(3).commit() < start, "not committed before durable");
    let matched = |c: &Cluster| c.node(1).progress().find(|p| p.0 == 3).unwrap().1;
    assert!(matched(&c) < start, "no acknowledgement before durable");
    c.release(3);
    c.tick_all(2);
    assert!(matched(&c) >= start);
    assert_eq!(c.node(3).commit(), c.node(1).commit());
}

#[test]
fn raft_a_follower_holding_the_snapshot_point_keeps_its_log() {
    let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1)).collect();
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 2,
    };
    let follower = || RaftNode::new(Config::new(2, vec![1, 2, 3]), log_of(&entries), hs).unwrap();
    let snapshot = |last_index, last_term, term| Message {
        from: 1,
        to: 2,
        term,
        body: MessageBody::Snapshot {
            last_index,
            last_term,
            payload: Bytes::from_static(b"p"),
        },
    };
    let ok = |index| MessageBody::AppendResponse {
        index,
        success: true,
        rejected: 0,
    };

    // It holds (4, 1): the log stays, and it says it matches up to there.
    let mut n = follower();
    n.step(snapshot(4, 1, 2)).unwrap();
    let replies: Vec<_> = sent(&mut n).into_iter().map(|m| m.body).collect();
    assert_eq!(n.log().all(), &entries[..]);
    assert_eq!(replies, vec![ok(4)]);

    // At or below its commit the logs are equal whatever it holds: nothing changes either.
    let mut n = follower();
    n.step(snapshot(2, 1, 2)).unwrap();
    let replies: Vec<_> = sent(&mut n).into_iter().map(|m| m.body).collect();
    assert_eq!(n.log().all(), &entries[..]);
    assert_eq!(replies, vec![ok(2)]);

    // (4, 2) conflicts with its uncommitted entry 4: the whole log goes.
    let mut n = follower();
    n.step(snapshot(4, 2, 2)).unwrap();
    let replies: Vec<_> = sent(&mut n).into_iter().map(|m| m.body).collect();
    assert_eq!((n.log().first_index(), n.log().last_index()), (5, 4));
    assert_eq!(n.log().term(4), Some(2));
    assert_eq!(n.log().snapshot_payload(), "p");
    assert_eq!(n.commit(), 4);
    assert_eq!(replies, vec![ok(4)]);

    // Stale (an earlier term than the follower's) or claiming a later term than the sender's:
    // refused, changing nothing.
    for m in [snapshot(9, 1, 1), snapshot(9, 3, 2)] {
        let mut n = follower();
        n.step(m).unwrap();
        let _ = sent(&mut n);
        assert_eq!(n.log().all(), &entries[..]);
        assert_eq!(n.commit(), 2);
    }
}

#[test]
fn raft_a_restart_after_compaction_counts_the_compacted_entries_committed() {
    let mut log = log_of(&[entry(1, 1), entry(2, 1), entry(3, 2)]);
    log.compact_to(2).unwrap();
    let hs = HardState {
        term: 2,
        vote: None,
        commit: 1, // the hard state lagged behind the compaction
    };
    let n = RaftNode::new(Config::new(1, vec![1, 2, 3]), log, hs).unwrap();
    assert_eq!(n.commit(), 2);
}

/// A tiny generator for the hostile-input test.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn raft_hostile_messages_never_panic_or_break_the_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for _ in 0..5 {
        c.nodes
            .get_mut(&1)
            .unwrap()
            .propose(Bytes::from_static(b"x"))
            .unwrap();
    }
    c.tick_all(4);
    let mut rng = 7;
    // Small values mostly (to hit real indexes and terms), sometimes extremes.
    let num = |rng: &mut u64| match splitmix(rng) % 8 {
        0 => u64::MAX,
        1 => u64::MAX - 1,
        _ => splitmix(rng) % 10,
    };
    for round in 0..5_000 {
        let to = 1 + splitmix(&mut rng) % 3;
        let from = num(&mut rng);
        let term = num(&mut rng);
        let (a, b) = (num(&mut rng), num(&mut rng));
        let body = match splitmix(&mut rng) % 7 {
            0 => MessageBody::PreVote {
                last_index: a,
                last_term: b,
            },
            1 => MessageBody::PreVoteResponse {
                granted: a % 2 == 0,
            },
            2 => MessageBody::Vote {
                last_index: a,
                last_term: b,
            },
            3 => MessageBody::VoteResponse {
                granted: a % 2 == 0,
            },
            4 => {
                let count = splitmix(&mut rng) % 4;
                let entries = (0..count)
                    .map(|_| entry(num(&mut rng), num(&mut rng)))
                    .collect();
                MessageBody::Append {
                    prev_index: a,
                    prev_term: b,
                    entries,
                    commit: num(&mut rng),
                }
            }
            5 => MessageBody::Snapshot {
                last_index: a,
                last_term: b,
                payload: Bytes::from_static(b"start"),
            },
            _ => MessageBody::AppendResponse {
                index: a,
                success: b % 2 == 0,
                rejected: num(&mut rng),
            },
        };
        let node = c.nodes.get_mut(&to).unwrap();
        node.step(Message {
            from,
            to,
            term,
            body,
        })
        .unwrap();
        if round % 7 == 0 {
            node.tick().unwrap();
        }
        let n = c.node(to);
        assert!(n.commit() <= n.log().last_index());
        let all = n.log().all();
        let first = n.log().first_index();
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == u64::try_from(i).unwrap() + first));
        assert!(all.windows(2).all(|w| w[0].term <= w[1].term));
        c.settle();
    }
}

#[test]
fn raft_config_and_durable_state_are_validated() {
    let bad = |tweak: fn(&mut Config)| {
        let mut cfg = Config::new(1, vec![1, 2, 3]);
        tweak(&mut cfg);
        RaftNode::new(cfg, MemRaftLog::new(), HardState::default()).unwrap_err()
    };
    assert!(matches!(
        bad(|c| c.voters = vec![2, 3]),
        RaftError::Config(_)
    ));
    assert!(matches!(
        bad(|c| c.voters = vec![1, 2, 2]),
        RaftError::Config(_)
    ));
    assert!(matches!(
        bad(|c| c.heartbeat_tick = 0),
        RaftError::Config(_)
    ));
    assert!(matches!(bad(|c| c.election_tick = 2), RaftError::Config(_)));
    let hs = HardState {
        term: 1,
        vote: None,
        commit: 3,
    };
    let err = RaftNode::new(Config::new(1, vec![1]), log_of(&[entry(1, 1)]), hs).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hard state commit 3 is beyond the log's last index 1"
    );
}
