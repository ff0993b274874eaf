//! Loom models of the real cores: every interleaving of a few threads (appender, reader,
//! flusher, truncating follower) against the invariants the broker relies on. Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p runnel-sync --release`.
//!
//! The model log is a `Vec<u8>`: offset `i` holds the tag of the batch written there, so a
//! batch of two offsets is two equal tags, and a torn batch shows as a lone tag.

use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::{GroupCommit, StorageFailed, Waiter, Watermarked};

/// Every batch in these models is two offsets long.
const BATCH: usize = 2;

fn append(log: &mut Vec<u8>, tag: u8) {
    // Offset by offset, so that a reader that could see the log mid-append would see a
    // torn batch.
    for _ in 0..BATCH {
        log.push(tag);
    }
}

fn len(log: &[u8]) -> i64 {
    i64::try_from(log.len()).expect("small model")
}

/// What a reader is served below `hw`, checked: every offset below `hw` is there, and what the
/// log holds is whole batches.
fn serve(log: &[u8], hw: i64) -> Vec<u8> {
    assert!(
        len(log) >= hw,
        "high watermark {hw} published over a log ending at {}",
        log.len()
    );
    assert!(log.len() % BATCH == 0, "torn batch: {log:?}");
    for pair in log.chunks(BATCH) {
        assert!(pair.iter().all(|t| *t == pair[0]), "torn batch: {log:?}");
    }
    let hw = usize::try_from(hw).expect("non-negative");
    log[..hw].to_vec()
}

#[test]
fn a_reader_sees_every_offset_below_the_high_watermark_and_nothing_above() {
    loom::model(|| {
        let part = Arc::new(Watermarked::new(Vec::new(), 0));
        let writer = {
            let part = part.clone();
            thread::spawn(move || {
                // Partition::append on a single node: append, then publish under the lock.
                for tag in 1..=2 {
                    let mut log = part.write();
                    append(&mut log, tag);
                    part.publish(len(&log));
                }
            })
        };
        let mut seen = 0;
        for _ in 0..2 {
            let served = part.read_below(i64::MAX, |log, hw| {
                assert!(hw >= seen, "high watermark went back from {seen} to {hw}");
                seen = hw;
                serve(log, hw)
            });
            assert_eq!(
                served.len() % BATCH,
                0,
                "served a partial batch: {served:?}"
            );
        }
        writer.join().unwrap();
        assert_eq!(
            part.read_below(i64::MAX, |log, hw| serve(log, hw)),
            [1, 1, 2, 2]
        );
    });
}

#[test]
fn a_follower_truncation_is_never_seen_half_done_nor_served_as_committed() {
    loom::model(|| {
        // Batch 1 committed (HW 2); batch 2 appended but not committed.
        let part = Arc::new(Watermarked::new(vec![1, 1, 2, 2], 2));
        let follower = {
            let part = part.clone();
            thread::spawn(move || {
                // Partition::replica_truncate then replica_append; the commit comes after
                // (the Raft task publishes only what is in the log).
                {
                    let mut log = part.write();
                    log.truncate(2);
                }
                let end = {
                    let mut log = part.write();
                    append(&mut log, 3);
                    len(&log)
                };
                part.publish(end);
            })
        };
        let served = part.read_below(i64::MAX, |log, hw| serve(log, hw));
        // Batch 2 was never committed: it is never served.
        assert!(served == [1, 1] || served == [1, 1, 3, 3], "{served:?}");
        follower.join().unwrap();
    });
}

/// The model of a partition's storage: the log with its high watermark, and what is durable.
struct Store {
    log: Watermarked<Vec<u8>>,
    disk: Mutex<Vec<u8>>,
}

impl Store {
    fn new(log: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            log: Watermarked::new(log, 0),
            disk: Mutex::new(Vec::new()),
        })
    }
}

/// Every answer a probe got, with whether its batch was durable then.
type Slot = Arc<Mutex<Vec<(Result<(), StorageFailed>, bool)>>>;

/// A waiter for `end` that records its answer, and whether the disk then held the log's
/// current content below `end` (an `Ok` without it is an early ack).
struct Probe {
    end: usize,
    store: Arc<Store>,
    slot: Slot,
}

impl Waiter for Probe {
    fn answer(self, outcome: Result<(), StorageFailed>) {
        let durable = {
            let log = self.store.log.read();
            let disk = self.store.disk.lock().unwrap();
            log.len() >= self.end && disk.len() >= self.end && disk[..self.end] == log[..self.end]
        };
        self.slot.lock().unwrap().push((outcome, durable));
    }
}

fn probe(store: &Arc<Store>, end: usize) -> (Probe, Slot) {
    let slot = Slot::default();
    let p = Probe {
        end,
        store: store.clone(),
        slot: slot.clone(),
    };
    (p, slot)
}

/// One round of `Partition::flush_once`: plan under the log's read lock, sync outside any
/// lock, publish under the write lock, answer after it. The sync makes durable exactly what
/// the plan saw (the worst case for a log truncated meanwhile) — but, as an fsync, never
/// undoes a longer prefix another round already made durable. Returns whether the flusher
/// asks for another round (its sync was planned before a truncation and not published).
fn flush_round(store: &Store, commit: &GroupCommit<Probe>, fsync_fails: bool) -> bool {
    let (ticket, planned) = {
        let log = store.log.read();
        match commit.plan(len(&log)) {
            Some(t) => (t, log.clone()),
            None => return false,
        }
    };
    if fsync_fails {
        commit.fail().deliver();
        return false;
    }
    {
        let mut disk = store.disk.lock().unwrap();
        if !disk.starts_with(&planned) {
            *disk = planned;
        }
    }
    let answers = {
        let _log = store.log.write();
        commit.synced(ticket)
    };
    let again = !answers.published();
    answers.deliver();
    again
}

#[test]
fn an_acks_all_producer_is_answered_once_and_only_after_its_batch_is_durable() {
    loom::model(|| {
        let store = Store::new(Vec::new());
        let commit = Arc::new(GroupCommit::new(0));
        let (waiter, slot) = probe(&store, BATCH);
        let producer = {
            let (store, commit) = (store.clone(), commit.clone());
            thread::spawn(move || {
                let end = {
                    let mut log = store.log.write();
                    append(&mut log, 1);
                    len(&log)
                };
                // Partition::wait_durable: register, and ask for a round unless one
                // already planned covers the batch (`wait` says which, under one lock).
                commit.wait(end, waiter)
            })
        };
        let flusher = {
            let (store, commit) = (store.clone(), commit.clone());
            thread::spawn(move || flush_round(&store, &commit, false))
        };
        let asked = producer.join().unwrap();
        flusher.join().unwrap();
        if asked {
            // The round the producer's request guarantees (`FlushSignal` keeps it wanted).
            flush_round(&store, &commit, false);
        }
        assert_eq!(*slot.lock().unwrap(), [(Ok(()), true)]);
    });
}

#[test]
fn a_storage_failure_answers_every_waiter_with_an_error_exactly_once() {
    loom::model(|| {
        let store = Store::new(vec![1, 1]);
        let commit = Arc::new(GroupCommit::new(0));
        let (waiter, slot) = probe(&store, BATCH);
        let producer = {
            let commit = commit.clone();
            thread::spawn(move || commit.wait(2, waiter))
        };
        flush_round(&store, &commit, true);
        producer.join().unwrap();
        flush_round(&store, &commit, false);
        assert_eq!(*slot.lock().unwrap(), [(Err(StorageFailed), false)]);
        let (late, late_slot) = probe(&store, 0);
        let _ = commit.wait(0, late);
        assert_eq!(*late_slot.lock().unwrap(), [(Err(StorageFailed), true)]);
    });
}

#[test]
fn a_sync_planned_before_a_truncation_never_acks_the_replacing_batch() {
    loom::model(|| {
        // A follower with an uncommitted batch 1 that nothing has synced yet.
        let store = Store::new(vec![1, 1]);
        let commit = Arc::new(GroupCommit::new(0));
        let (waiter, slot) = probe(&store, BATCH);
        let follower = {
            let (store, commit) = (store.clone(), commit.clone());
            thread::spawn(move || {
                // Partition::replica_truncate, then the new leader's batch 2 at the same
                // offsets, then a wait for it to be durable (Raft's log sync), asking for a
                // round unless a planned one covers it (`wait` says): a round planned
                // before the cut must not count.
                let end = {
                    let mut log = store.log.write();
                    log.truncate(0);
                    commit.truncated(0);
                    append(&mut log, 2);
                    len(&log)
                };
                commit.wait(end, waiter)
            })
        };
        // `Partition::flush_once`: a round that is not published asks for the next one.
        let again = flush_round(&store, &commit, false);
        let asked = follower.join().unwrap();
        if asked || again {
            flush_round(&store, &commit, false);
        }
        assert_eq!(*slot.lock().unwrap(), [(Ok(()), true)]);
    });
}

#[test]
fn overlapping_rounds_answer_each_waiter_once_after_its_batch_is_durable() {
    loom::model(|| {
        // Two flushers (`FlushSignal` runs up to two per partition): one round starts over
        // batch 1 while batch 2 is appended and a second round runs, so the two rounds
        // overlap and may publish in either order.
        let store = Store::new(vec![1, 1]);
        let commit = Arc::new(GroupCommit::new(0));
        let (first, first_slot) = probe(&store, BATCH);
        let (second, second_slot) = probe(&store, 2 * BATCH);
        let _ = commit.wait(len(&[1, 1]), first);
        let flusher = {
            let (store, commit) = (store.clone(), commit.clone());
            thread::spawn(move || flush_round(&store, &commit, false))
        };
        let end = {
            let mut log = store.log.write();
            append(&mut log, 2);
            len(&log)
        };
        let _ = commit.wait(end, second);
        flush_round(&store, &commit, false);
        flusher.join().unwrap();
        assert_eq!(*first_slot.lock().unwrap(), [(Ok(()), true)]);
        assert_eq!(*second_slot.lock().unwrap(), [(Ok(()), true)]);
        assert_eq!(commit.flushed(), end);
    });
}
