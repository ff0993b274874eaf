//! The narrow log-storage trait the Raft core writes through, and its in-memory implementation.
//!
//! The core calls these methods as buffered writes: nothing here has to be durable when it
//! returns. Durability is requested separately with [`super::Output::PersistLog`], so a real
//! implementation (the partition's segment files, later) can group-commit many appends under
//! one fsync.

use super::{Entry, Index, StorageError, Term};

/// The Raft log of one partition.
///
/// Indexes are dense from 1 to [`RaftLog::last_index`]; there is no compaction yet.
pub trait RaftLog {
    /// The index of the last entry, 0 if the log is empty.
    fn last_index(&self) -> Index;

    /// The term of the entry at `index`: `Some(0)` for index 0, `None` beyond the end. Called
    /// often, so implementations keep terms in memory (one `(term, first index)` pair per term
    /// is enough).
    fn term(&self, index: Index) -> Option<Term>;

    /// Up to `max` entries starting at `from` (fewer at the end of the log).
    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError>;

    /// Appends entries, which must start at `last_index() + 1` and be consecutive.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Removes every entry at `from` and after (`from` in `1..=last_index() + 1`).
    fn truncate(&mut self, from: Index) -> Result<(), StorageError>;
}

/// A [`RaftLog`] in a `Vec`; entry `i` is at position `i - 1`.
#[derive(Debug, Clone, Default)]
pub struct MemRaftLog {
    entries: Vec<Entry>,
}

impl MemRaftLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, in order.
    pub fn all(&self) -> &[Entry] {
        &self.entries
    }

    /// The position of `index` in `entries`, if it is in the log.
    fn position(&self, index: Index) -> Option<usize> {
        let pos = usize::try_from(index.checked_sub(1)?).ok()?;
        (pos < self.entries.len()).then_some(pos)
    }
}

impl RaftLog for MemRaftLog {
    fn last_index(&self) -> Index {
        // A Vec never holds more than u64::MAX entries.
        Index::try_from(self.entries.len()).unwrap_or(Index::MAX)
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.position(index).map(|pos| self.entries[pos].term)
    }

    fn entries(&self, from: Index, max: usize) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if from == 0 || from > last.saturating_add(1) {
            return Err(StorageError::OutOfRange { index: from, last });
        }
        let start = self.position(from).unwrap_or(self.entries.len());
        let end = start.saturating_add(max).min(self.entries.len());
        Ok(self.entries[start..end].to_vec())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut next = self.last_index().saturating_add(1);
        for entry in entries {
            if entry.index != next {
                return Err(StorageError::NotContiguous {
                    got: entry.index,
                    last: next.saturating_sub(1),
                });
            }
            next = next.saturating_add(1);
        }
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn truncate(&mut self, from: Index) -> Result<(), StorageError> {
        let last = self.last_index();
        if from == 0 || from > last.saturating_add(1) {
            return Err(StorageError::OutOfRange { index: from, last });
        }
        let keep = usize::try_from(from - 1)
            .map_err(|_| StorageError::OutOfRange { index: from, last })?;
        self.entries.truncate(keep);
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

#[cfg(test)]
mod tests {
    #[test]
    fn raft_mem_log_meets_the_contract() {
        super::contract(super::MemRaftLog::new());
    }
}
