//! The narrow log-storage trait the Raft core writes through, and its in-memory implementation.
//!
//! The core calls these methods as buffered writes: nothing here has to be durable when it
//! returns. Durability is requested separately with [`super::Output::PersistLog`], so a real
//! implementation (the partition's segment files, later) can group-commit many appends under
//! one fsync. Compaction ([`RaftLog::compact_to`]) is the exception: it is durable when it
//! returns, since it only ever discards committed, durable entries.

use super::{Entry, Index, StorageError, Term};

/// Entries appended after `last` must start at `last + 1` and be consecutive (what every
/// [`RaftLog::append`] checks before it changes anything).
pub fn check_contiguous(last: Index, entries: &[Entry]) -> Result<(), StorageError> {
    let mut next = last.saturating_add(1);
    for entry in entries {
        if entry.index != next {
            return Err(StorageError::NotContiguous {
                got: entry.index,
                last: next.saturating_sub(1),
            });
        }
        next = next.saturating_add(1);
    }
    Ok(())
}

/// The Raft log of one partition.
///
/// Entries are dense from [`RaftLog::first_index`] to [`RaftLog::last_index`]. Entries before
/// the first have been compacted away (retention): they were committed, and all the log still
/// knows of them is the `(index, term)` of the last one — [`RaftLog::term`] answers for
/// `first_index() - 1` — and an opaque snapshot payload describing where the log now starts
/// (for a data partition, the Kafka log-start offset; the core never looks inside).
pub trait RaftLog {
    /// The index of the first entry kept: 1 if nothing was ever compacted. When every entry
    /// has been compacted, `last_index() + 1`.
    fn first_index(&self) -> Index;

    /// The index of the last entry, 0 if the log is empty and nothing was compacted (else at
    /// least `first_index() - 1`).
    fn last_index(&self) -> Index;

    /// The term of the entry at `index`: `Some(0)` for index 0 of a log that never compacted,
    /// the compacted entry's term for `first_index() - 1`, `None` below that and beyond the
    /// end. Called often, so implementations keep terms in memory (one `(term, first index)`
    /// pair per term is enough).
    fn term(&self, index: Index) -> Option<Term>;

    /// Up to `max` entries starting at `from` (fewer at the end of the log); `from` must be in
    /// `first_index()..=last_index() + 1`.
    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError>;

    /// Appends entries, which must start at `last_index() + 1` and be consecutive.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// [`RaftLog::append`] for the entries this node proposes as leader (its no-op on
    /// election, and proposals): their payloads were validated where they entered the broker,
    /// or built by it, so an implementation need not check them again, and may keep them in
    /// memory for the Append messages the leader sends next. Same contract otherwise.
    fn append_proposed(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.append(entries)
    }

    /// Removes every entry at `from` and after (`from` in `first_index()..=last_index() + 1`).
    fn truncate(&mut self, from: Index) -> Result<(), StorageError>;

    /// Discards the entries up to and including `index`, which the caller knows committed and
    /// durable; `index` becomes `first_index() - 1` and keeps its term. An `index` below
    /// `first_index()` changes nothing; beyond `last_index()` is an error. An implementation
    /// may keep more than asked (a segment log deletes whole segments only): callers read
    /// [`RaftLog::first_index`] afterwards. Durable when it returns: a crash after it never
    /// brings back what it discarded, and never loses what it kept.
    fn compact_to(&mut self, index: Index) -> Result<(), StorageError>;

    /// The snapshot payload describing the log's start (what a follower installing a snapshot
    /// at `first_index() - 1` needs); empty for a log that never compacted.
    fn snapshot_payload(&self) -> bytes::Bytes;

    /// Discards the whole log and restarts it empty after `(index, term)`: then
    /// `first_index() == index + 1`, `last_index() == index`, `term(index) == Some(term)`, and
    /// [`RaftLog::snapshot_payload`] is `payload`. A buffered write like
    /// [`RaftLog::append`]: durable after the next sync (`Output::PersistLog`).
    fn install_snapshot(
        &mut self,
        index: Index,
        term: Term,
        payload: bytes::Bytes,
    ) -> Result<(), StorageError>;
}

/// A [`RaftLog`] in a `Vec`; entry `i` is at position `i - start.0 - 1`.
#[derive(Debug, Clone, Default)]
pub struct MemRaftLog {
    /// `(index, term)` of the last compacted entry; `(0, 0)` if none.
    start: (Index, Term),
    /// Describes the log start (see [`RaftLog::snapshot_payload`]).
    snapshot: bytes::Bytes,
    entries: Vec<Entry>,
}

impl MemRaftLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry kept, in order (from [`RaftLog::first_index`]).
    pub fn all(&self) -> &[Entry] {
        &self.entries
    }

    /// The position of `index` in `entries`, if it is in the log.
    fn position(&self, index: Index) -> Option<usize> {
        let pos = usize::try_from(index.checked_sub(self.start.0.checked_add(1)?)?).ok()?;
        (pos < self.entries.len()).then_some(pos)
    }

    fn out_of_range(&self, index: Index) -> StorageError {
        StorageError::OutOfRange {
            index,
            last: self.last_index(),
        }
    }

    /// Whether `from` is in `first_index()..=last_index() + 1`.
    fn bounds(&self, from: Index) -> bool {
        from >= self.first_index() && from <= self.last_index().saturating_add(1)
    }
}

impl RaftLog for MemRaftLog {
    fn first_index(&self) -> Index {
        self.start.0.saturating_add(1)
    }

    fn last_index(&self) -> Index {
        // A Vec never holds more than u64::MAX entries.
        let len = Index::try_from(self.entries.len()).unwrap_or(Index::MAX);
        self.start.0.saturating_add(len)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == self.start.0 {
            return Some(self.start.1);
        }
        self.position(index).map(|pos| self.entries[pos].term)
    }

    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
        if !self.bounds(from) {
            return Err(self.out_of_range(from));
        }
        let start = self.position(from).unwrap_or(self.entries.len());
        let end = start.saturating_add(max).min(self.entries.len());
        Ok(self.entries[start..end].to_vec())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        check_contiguous(self.last_index(), entries)?;
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        if !self.bounds(from) {
            return Err(self.out_of_range(from));
        }
        let keep = self.position(from).unwrap_or(self.entries.len());
        self.entries.truncate(keep);
        Ok(())
    }

    fn compact_to(&mut self, index: Index) -> Result<(), StorageError> {
        if index <= self.start.0 {
            return Ok(());
        }
        let (Some(pos), Some(term)) = (self.position(index), self.term(index)) else {
            return Err(self.out_of_range(index));
        };
        self.entries.drain(..=pos);
        self.start = (index, term);
        // A stand-in for what a real log describes (its start offset), so that the simulator
        // can check a follower installed exactly what its leader sent.
        self.snapshot = bytes::Bytes::from(index.to_be_bytes().to_vec());
        Ok(())
    }

    fn snapshot_payload(&self) -> bytes::Bytes {
        self.snapshot.clone()
    }

    fn install_snapshot(
        &mut self,
        index: Index,
        term: Term,
        payload: bytes::Bytes,
    ) -> Result<(), StorageError> {
        self.entries.clear();
        self.start = (index, term);
        self.snapshot = payload;
        Ok(())
    }
}

/// The contract every [`RaftLog`] implementation must meet; run against each one.
#[cfg(test)]
pub(crate) fn contract<L: RaftLog>(log: L) {
    contract_with(log, |index, term| {
        bytes::Bytes::from(format!("{index}@{term}"))
    });
}

/// [`contract`] with the payload of the `Normal` entry at `(index, term)` made by `payload`, for
/// logs that store only certain payloads (the segment-file log stores one Kafka batch whose
/// base offset is where the entry lands: every entry of the contract takes one offset, so
/// entry `i` starts at offset `i - 1`).
#[cfg(test)]
pub(crate) fn contract_with<L: RaftLog>(mut log: L, payload: impl Fn(Index, Term) -> bytes::Bytes) {
    use super::EntryKind;
    use bytes::Bytes;

    let entry = |index: Index, term: Term| Entry {
        term,
        index,
        kind: EntryKind::Normal,
        payload: payload(index, term),
    };
    let noop = |index: Index, term: Term| Entry {
        term,
        index,
        kind: EntryKind::Noop,
        payload: Bytes::new(),
    };
    assert_eq!(log.last_index(), 0);
    assert_eq!(log.term(0), Some(0));
    assert_eq!(log.term(1), None);
    assert_eq!(log.entries(1, 10).unwrap(), vec![]);
    assert!(log.entries(2, 10).is_err());

    log.append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
        .unwrap();
    assert_eq!(log.last_index(), 3);
    assert_eq!(log.term(3), Some(2));
    assert_eq!(log.term(4), None);
    assert_eq!(log.entries(2, 1).unwrap(), vec![entry(2, 1)]);
    assert_eq!(log.entries(2, 10).unwrap(), vec![entry(2, 1), entry(3, 2)]);
    assert_eq!(log.entries(4, 10).unwrap(), vec![]);

    // Gaps and overlaps are refused and change nothing.
    assert!(log.append(&[entry(5, 2)]).is_err());
    assert!(log.append(&[entry(3, 3)]).is_err());
    assert!(log.append(&[entry(4, 2), entry(6, 2)]).is_err());
    assert_eq!(log.last_index(), 3);

    log.truncate(2).unwrap();
    assert_eq!(log.last_index(), 1);
    assert_eq!(log.term(2), None);
    log.truncate(2).unwrap(); // truncating at the end is a no-op
    assert!(log.truncate(3).is_err());
    assert!(log.truncate(0).is_err());
    log.append(&[entry(2, 3)]).unwrap();
    assert_eq!(log.entries(1, 10).unwrap(), vec![entry(1, 1), entry(2, 3)]);

    // A no-op (a new leader's first entry) reads back as a no-op, and can be truncated.
    log.append(&[noop(3, 4), entry(4, 4)]).unwrap();
    assert_eq!(log.term(3), Some(4));
    assert_eq!(log.entries(3, 1).unwrap(), vec![noop(3, 4)]);
    assert_eq!(
        log.entries(2, 10).unwrap(),
        vec![entry(2, 3), noop(3, 4), entry(4, 4)]
    );
    log.truncate(3).unwrap();
    assert_eq!(log.last_index(), 2);
    log.append(&[noop(3, 5)]).unwrap();
    assert_eq!(log.entries(3, 10).unwrap(), vec![noop(3, 5)]);
}

/// The compaction part of the contract: [`RaftLog::compact_to`] and
/// [`RaftLog::install_snapshot`], on a fresh log. `exact`: the log compacts exactly as far as
/// asked (an implementation that keeps more only has to stay consistent).
#[cfg(test)]
pub(crate) fn contract_compaction<L: RaftLog>(log: L, exact: bool) {
    contract_compaction_with(
        log,
        exact,
        |index, term| bytes::Bytes::from(format!("{index}@{term}")),
        |index| bytes::Bytes::from(format!("start after {index}")),
    );
}

/// [`contract_compaction`] with the entries' payloads made by `payload` (as for
/// [`contract_with`]) and the snapshot payload of a log starting after entry `i` by `start`.
#[cfg(test)]
pub(crate) fn contract_compaction_with<L: RaftLog>(
    mut log: L,
    exact: bool,
    payload: impl Fn(Index, Term) -> bytes::Bytes,
    start: impl Fn(Index) -> bytes::Bytes,
) {
    use super::EntryKind;
    use bytes::Bytes;

    let entry = |index: Index, term: Term| Entry {
        term,
        index,
        kind: EntryKind::Normal,
        payload: payload(index, term),
    };
    assert_eq!(log.first_index(), 1);
    assert_eq!(log.snapshot_payload(), Bytes::new());
    let all: Vec<Entry> = (1..=6).map(|i| entry(i, 1 + i / 3)).collect();
    log.append(&all).unwrap();
    log.compact_to(0).unwrap(); // nothing to do
    assert_eq!(log.first_index(), 1);
    assert!(log.compact_to(7).is_err(), "beyond the end");
    assert_eq!(log.first_index(), 1);

    // Whatever a log kept, it answers consistently around its start.
    let consistent = |log: &mut L, asked: Index| {
        let first = log.first_index();
        assert!(
            first >= 1 && first <= asked + 1,
            "compacted past {asked}: {first}"
        );
        if exact {
            assert_eq!(first, asked + 1);
        }
        assert_eq!(log.last_index(), 6);
        assert_eq!(
            log.term(first - 1),
            Some(if first == 1 { 0 } else { 1 + (first - 1) / 3 })
        );
        if first >= 2 {
            assert_eq!(log.term(first - 2), None, "below the start is gone");
            assert!(log.entries(first - 1, 10).is_err());
            assert!(log.truncate(first - 1).is_err());
        }
        let from = usize::try_from(first - 1).unwrap();
        assert_eq!(log.entries(first, 10).unwrap(), all[from..].to_vec());
    };
    log.compact_to(2).unwrap();
    consistent(&mut log, 2);
    log.compact_to(1).unwrap(); // below the start: nothing
    consistent(&mut log, 2);
    log.compact_to(4).unwrap();
    consistent(&mut log, 4);
    // Truncating and appending after the start work as before.
    log.truncate(6).unwrap();
    log.append(&[entry(6, 9)]).unwrap();
    assert_eq!(log.term(6), Some(9));
    log.compact_to(6).unwrap();
    if exact {
        assert_eq!(log.first_index(), 7);
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.term(6), Some(9));
        assert_eq!(log.entries(7, 10).unwrap(), vec![]);
    }

    // A snapshot install replaces everything, whatever was there.
    let at_100 = start(100);
    log.install_snapshot(100, 12, at_100.clone()).unwrap();
    assert_eq!(log.first_index(), 101);
    assert_eq!(log.last_index(), 100);
    assert_eq!(log.term(100), Some(12));
    assert_eq!(log.term(99), None);
    assert_eq!(log.term(6), None);
    assert_eq!(log.snapshot_payload(), at_100);
    assert_eq!(log.entries(101, 10).unwrap(), vec![]);
    assert!(log.entries(100, 10).is_err());
    assert!(log.append(&[entry(100, 12)]).is_err());
    log.append(&[entry(101, 12), entry(102, 13)]).unwrap();
    assert_eq!(
        log.entries(101, 10).unwrap(),
        vec![entry(101, 12), entry(102, 13)]
    );
    log.truncate(101).unwrap();
    assert_eq!(log.last_index(), 100);
    assert!(log.truncate(100).is_err());
    // ... and may go backwards too (only the core knows what is committed).
    log.install_snapshot(50, 11, start(50)).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (51, 50));
    assert_eq!(log.term(50), Some(11));
}

#[cfg(test)]
mod tests {
    use super::{contract_compaction, MemRaftLog, RaftLog};

    #[test]
    fn raft_mem_log_meets_the_contract() {
        super::contract(MemRaftLog::new());
        contract_compaction(MemRaftLog::new(), true);
    }

    #[test]
    fn raft_mem_log_extreme_indexes_never_panic() {
        let mut log = MemRaftLog::new();
        log.install_snapshot(u64::MAX, 1, bytes::Bytes::new())
            .unwrap();
        assert_eq!(log.last_index(), u64::MAX);
        assert_eq!(log.first_index(), u64::MAX);
        assert_eq!(log.term(u64::MAX), Some(1));
        assert_eq!(log.term(0), None);
        let _ = log.entries(u64::MAX, 10);
        assert!(log.compact_to(u64::MAX).is_ok());
        let _ = log.truncate(u64::MAX);
        let _ = log.entries(0, usize::MAX);
    }
}
