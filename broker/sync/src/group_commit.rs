//! Group commit: a partition's flushed (fsynced) offset and the acks=all waiters on it.

use std::collections::BTreeMap;

use crate::sync::{Mutex, MutexGuard};

/// The partition's storage failed: nothing more can be vouched durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFailed;

impl std::fmt::Display for StorageFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the partition's storage failed")
    }
}

impl std::error::Error for StorageFailed {}

/// Someone waiting for a durable offset: a producer's acks=all, a replica's log sync.
pub trait Waiter {
    /// Deliver the outcome; [`GroupCommit`] calls it exactly once per registered waiter,
    /// unless the waiter is abandoned first.
    fn answer(self, outcome: Result<(), StorageFailed>);
    /// The waiter gave up (timed out): it may be dropped unanswered.
    fn is_abandoned(&self) -> bool {
        false
    }
}

/// A sync about to run: what it covers and the truncation count it was planned at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncTicket {
    up_to: i64,
    truncations: u64,
}

impl SyncTicket {
    /// Every offset below this is covered by the sync.
    pub fn up_to(&self) -> i64 {
        self.up_to
    }
}

/// Waiters taken out of the table with their outcome, to be answered once the caller has
/// released its own locks (an answer may run code that takes them).
#[must_use = "deliver the answers"]
#[derive(Debug)]
pub struct Answers<W: Waiter> {
    waiters: Vec<W>,
    outcome: Result<(), StorageFailed>,
    published: bool,
}

impl<W: Waiter> Answers<W> {
    /// Whether the flushed offset moved (a sync that is published).
    pub fn published(&self) -> bool {
        self.published
    }

    pub fn deliver(self) {
        for w in self.waiters {
            w.answer(self.outcome);
        }
    }
}

/// Waiters pruned of abandoned ones once they reach this many (then at twice what is left).
const FIRST_PRUNE: usize = 1024;

#[derive(Debug)]
struct Inner<W> {
    flushed: i64,
    /// The highest `up_to` of a ticket planned since the last truncation (never below
    /// `flushed`): a round in flight will make everything below it durable, or fail, or (cut
    /// by a truncation) be re-planned by its flusher.
    planned: i64,
    failed: bool,
    /// Bumped by every truncation, so that a sync planned before it is not published.
    truncations: u64,
    /// By end offset: answered once `flushed` reaches it.
    waiters: BTreeMap<i64, Vec<W>>,
    len: usize,
    prune_at: usize,
}

/// The flushed offset and its waiters, changed together under one lock: a waiter checks the
/// offset and registers in one step, and a sync publishes and takes every waiter it covers in
/// one step, so no wake-up is lost between them. The flushed offset never moves back, except
/// to the new end when the log is truncated.
///
/// Protocol (see `Partition::flush_once`): [`plan`](Self::plan) a sync while the log cannot be
/// truncated (under its read lock), sync outside any lock, then [`synced`](Self::synced) and
/// [`truncated`](Self::truncated) under the log's write lock.
#[derive(Debug)]
pub struct GroupCommit<W> {
    inner: Mutex<Inner<W>>,
}

impl<W: Waiter> GroupCommit<W> {
    /// Start with everything below `flushed` durable.
    pub fn new(flushed: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                flushed,
                planned: flushed,
                failed: false,
                truncations: 0,
                waiters: BTreeMap::new(),
                len: 0,
                prune_at: FIRST_PRUNE,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<W>> {
        // Nothing panics while holding it; a poisoned state is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every offset below this is durable.
    pub fn flushed(&self) -> i64 {
        self.lock().flushed
    }

    pub fn is_failed(&self) -> bool {
        self.lock().failed
    }

    /// Answer `waiter` once every offset below `end` is durable (now, if it already is), or
    /// with [`StorageFailed`] once (or if) the storage failed. Returns whether the caller
    /// must ask for a round: the waiter waits and no planned round covers `end` (see
    /// [`GroupCommit::covered`]), answered under the same lock as the registration.
    #[must_use = "a waiter no planned round covers is answered only after a round is asked for"]
    pub fn wait(&self, end: i64, waiter: W) -> bool {
        let mut inner = self.lock();
        let outcome = if inner.failed {
            Err(StorageFailed)
        } else if inner.flushed >= end {
            Ok(())
        } else {
            inner.add(end, waiter);
            return inner.planned < end;
        };
        drop(inner);
        waiter.answer(outcome);
        false
    }

    /// A sync of the log up to `up_to` is worth running: returns its ticket, or `None` when
    /// everything below `up_to` is already durable or the storage failed. Call it while the
    /// log cannot be truncated (so the ticket's truncation count is that of the log planned).
    pub fn plan(&self, up_to: i64) -> Option<SyncTicket> {
        let mut inner = self.lock();
        if inner.failed || up_to <= inner.flushed {
            return None;
        }
        inner.planned = inner.planned.max(up_to);
        Some(SyncTicket {
            up_to,
            truncations: inner.truncations,
        })
    }

    /// Whether a round already planned (or done) covers every offset below `end`, so that
    /// asking for another is not needed: the planned round publishes it, or fails and
    /// answers every waiter, or — cut by a truncation — its flusher asks for the next round.
    pub fn covered(&self, end: i64) -> bool {
        self.lock().planned >= end
    }

    /// The sync of `ticket` completed: publish it, unless the log was truncated since it was
    /// planned (what it covered may have been replaced; the next plan covers the new tail),
    /// and take every waiter it covers.
    pub fn synced(&self, ticket: SyncTicket) -> Answers<W> {
        let mut inner = self.lock();
        if inner.failed || inner.truncations != ticket.truncations {
            return Answers {
                waiters: Vec::new(),
                outcome: Ok(()),
                published: false,
            };
        }
        inner.flushed = inner.flushed.max(ticket.up_to);
        // The ticket was planned since the last truncation, so `planned` already covers it.
        debug_assert!(inner.planned >= inner.flushed);
        let covered = match inner.flushed.checked_add(1) {
            Some(first_uncovered) => {
                let rest = inner.waiters.split_off(&first_uncovered);
                std::mem::replace(&mut inner.waiters, rest)
            }
            None => std::mem::take(&mut inner.waiters),
        };
        let waiters: Vec<W> = covered.into_values().flatten().collect();
        inner.len = inner.len.saturating_sub(waiters.len());
        Answers {
            waiters,
            outcome: Ok(()),
            published: true,
        }
    }

    /// The log was cut to end at `end`: the flushed offset comes back to it, and no sync
    /// planned before is published. Waiters beyond `end` wait for what replaces the tail.
    pub fn truncated(&self, end: i64) {
        let mut inner = self.lock();
        inner.truncations = inner.truncations.wrapping_add(1);
        inner.flushed = inner.flushed.min(end);
        // No round planned before a truncation is published.
        inner.planned = inner.flushed;
    }

    /// The storage failed: refuse from now on, and take every waiter (answered with the error).
    pub fn fail(&self) -> Answers<W> {
        let mut inner = self.lock();
        inner.failed = true;
        inner.len = 0;
        let waiters = std::mem::take(&mut inner.waiters)
            .into_values()
            .flatten()
            .collect();
        Answers {
            waiters,
            outcome: Err(StorageFailed),
            published: false,
        }
    }
}

impl<W: Waiter> Inner<W> {
    fn add(&mut self, end: i64, waiter: W) {
        if self.len >= self.prune_at {
            // Waiters that timed out stay until a sync covers them; drop them in bulk so a
            // stalled disk cannot grow the table without bound.
            self.waiters.retain(|_, ws| {
                ws.retain(|w| !w.is_abandoned());
                !ws.is_empty()
            });
            self.len = self.waiters.values().map(Vec::len).sum();
            self.prune_at = FIRST_PRUNE.max(self.len.saturating_mul(2));
        }
        self.waiters.entry(end).or_default().push(waiter);
        self.len = self.len.saturating_add(1);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// Who was answered what, in order.
    type Record = Rc<RefCell<Vec<(u32, Result<(), StorageFailed>)>>>;

    /// Records its answer; `abandoned` says whether it gave up.
    struct Probe {
        id: u32,
        log: Record,
        abandoned: bool,
    }

    impl Waiter for Probe {
        fn answer(self, outcome: Result<(), StorageFailed>) {
            self.log.borrow_mut().push((self.id, outcome));
        }
        fn is_abandoned(&self) -> bool {
            self.abandoned
        }
    }

    fn probe(id: u32, log: &Record) -> Probe {
        Probe {
            id,
            log: log.clone(),
            abandoned: false,
        }
    }

    #[test]
    fn a_sync_answers_exactly_the_waiters_it_covers() {
        let log = Rc::default();
        let gc = GroupCommit::new(0);
        let _ = gc.wait(3, probe(1, &log));
        let _ = gc.wait(5, probe(2, &log));
        let _ = gc.wait(0, probe(3, &log));
        assert_eq!(*log.borrow(), vec![(3, Ok(()))]);
        let t = gc.plan(4).expect("something to sync");
        assert_eq!(gc.plan(0), None);
        let a = gc.synced(t);
        assert!(a.published());
        a.deliver();
        assert_eq!(*log.borrow(), vec![(3, Ok(())), (1, Ok(()))]);
        assert_eq!(gc.flushed(), 4);
        assert_eq!(gc.plan(4), None, "nothing new to sync");
        let t = gc.plan(5).unwrap();
        gc.synced(t).deliver();
        assert_eq!(log.borrow().last(), Some(&(2, Ok(()))));
    }

    #[test]
    fn a_planned_round_covers_what_it_planned_until_a_truncation() {
        let gc: GroupCommit<Probe> = GroupCommit::new(2);
        assert!(gc.covered(2), "durable already");
        assert!(!gc.covered(3), "nothing planned");
        let t = gc.plan(6).unwrap();
        assert!(gc.covered(6) && !gc.covered(7), "the plan covers below 6");
        assert!(gc.synced(t).published());
        assert!(gc.covered(6), "and, published, still does");
        let stale = gc.plan(9).unwrap();
        gc.truncated(4);
        assert!(
            !gc.covered(5),
            "a plan made before a truncation covers nothing after it"
        );
        assert!(!gc.synced(stale).published());
        assert!(!gc.covered(5));
        assert!(gc.covered(4));
    }

    #[test]
    fn a_waiter_is_told_to_ask_for_a_round_only_when_none_planned_covers_it() {
        let log = Record::default();
        let gc: GroupCommit<Probe> = GroupCommit::new(2);
        assert!(!gc.wait(2, probe(1, &log)), "durable already: answered");
        assert!(gc.wait(4, probe(2, &log)), "nothing planned: ask");
        let t = gc.plan(6).unwrap();
        assert!(!gc.wait(6, probe(3, &log)), "the planned round covers it");
        assert!(gc.wait(7, probe(4, &log)), "past the plan: ask");
        let answered = gc.synced(t);
        assert_eq!(answered.waiters.len(), 2, "the waiters up to 6");
        gc.fail().deliver();
        assert!(
            !gc.wait(9, probe(5, &log)),
            "failed: answered with the error"
        );
    }

    #[test]
    fn a_sync_planned_before_a_truncation_is_not_published() {
        let log = Rc::default();
        let gc = GroupCommit::new(2);
        let stale = gc.plan(6).unwrap();
        gc.truncated(1);
        assert_eq!(gc.flushed(), 1, "pulled back to the new end");
        let _ = gc.wait(4, probe(1, &log));
        let a = gc.synced(stale);
        assert!(!a.published());
        a.deliver();
        assert!(log.borrow().is_empty());
        assert_eq!(gc.flushed(), 1);
        let t = gc.plan(4).unwrap();
        gc.synced(t).deliver();
        assert_eq!(*log.borrow(), vec![(1, Ok(()))]);
    }

    #[test]
    fn a_failure_answers_every_waiter_and_every_later_one_with_an_error() {
        let log = Rc::default();
        let gc = GroupCommit::new(0);
        let _ = gc.wait(3, probe(1, &log));
        let t = gc.plan(3).unwrap();
        gc.fail().deliver();
        assert!(gc.is_failed());
        assert!(
            !gc.synced(t).published(),
            "nothing is vouched after a failure"
        );
        let _ = gc.wait(0, probe(2, &log));
        assert_eq!(gc.plan(9), None);
        assert_eq!(
            *log.borrow(),
            vec![(1, Err(StorageFailed)), (2, Err(StorageFailed))]
        );
    }

    #[test]
    fn abandoned_waiters_are_pruned_and_live_ones_kept() {
        let log = Rc::default();
        let gc = GroupCommit::new(0);
        for i in 0..3000u32 {
            let mut p = probe(i, &log);
            p.abandoned = i % 10 != 0;
            let _ = gc.wait(i64::from(i) + 1, p);
        }
        assert!(gc.lock().len < 3000, "pruned: {}", gc.lock().len);
        let t = gc.plan(i64::MAX).unwrap();
        gc.synced(t).deliver();
        let answered: Vec<u32> = log.borrow().iter().map(|(i, _)| *i).collect();
        // Every live waiter is answered (abandoned ones may or may not be).
        for i in (0..3000).step_by(10) {
            assert!(answered.contains(&i), "{i} lost");
        }
        assert_eq!(gc.lock().len, 0);
    }
}
