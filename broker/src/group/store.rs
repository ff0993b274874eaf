//! Where committed offsets are kept: a narrow trait, an in-memory implementation, and the
//! contract suite every implementation must pass.

use std::collections::BTreeMap;

use super::{CommittedOffset, TopicPartition};

/// Why an offset store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A commit too large to be one record.
    #[error("commit of {0} bytes is too large")]
    TooLarge(usize),
    /// A previous write failed; the store refuses writes until reopened.
    #[error("offset store failed earlier and refuses writes until restart")]
    Poisoned,
    /// The broker closed the store (it is shutting down, and may have unlocked its data
    /// directory for another broker).
    #[error("offset store is closed: the broker is shutting down")]
    Closed,
}

/// Every committed offset, by group and partition.
pub type OffsetMap = BTreeMap<String, BTreeMap<TopicPartition, CommittedOffset>>;

/// Durable committed offsets.
pub trait OffsetStore: Send {
    /// Everything committed so far (the latest value per group and partition).
    fn load(&self) -> OffsetMap;

    /// Record one commit: all of it or none of it. Returns once it is durable.
    fn commit(
        &mut self,
        group_id: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), StoreError>;
}

/// What a closed broker holds instead of its store: nothing to load, every commit refused.
#[derive(Debug, Default)]
pub struct ClosedStore;

impl OffsetStore for ClosedStore {
    fn load(&self) -> OffsetMap {
        OffsetMap::default()
    }

    fn commit(
        &mut self,
        _group_id: &str,
        _offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
}

/// Offsets in memory only: for tests, and the model the durable store is held to.
#[derive(Debug, Default)]
pub struct MemStore {
    offsets: OffsetMap,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl OffsetStore for MemStore {
    fn load(&self) -> OffsetMap {
        self.offsets.clone()
    }

    fn commit(
        &mut self,
        group_id: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), StoreError> {
        let group = self.offsets.entry(group_id.to_owned()).or_default();
        for (tp, o) in offsets {
            group.insert(tp.clone(), o.clone());
        }
        Ok(())
    }
}

/// The contract every [`OffsetStore`] meets; run against each implementation.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    pub fn off(offset: i64, epoch: i32, metadata: Option<&str>) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: epoch,
            metadata: metadata.map(str::to_owned),
        }
    }

    /// Starts empty, keeps the latest value per key, keeps groups apart, keeps null metadata
    /// distinct from empty metadata, and accepts an empty commit.
    pub fn run(store: &mut dyn OffsetStore) {
        assert!(store.load().is_empty());
        store
            .commit(
                "g1",
                &[
                    (tp("a", 0), off(5, -1, None)),
                    (tp("a", 1), off(7, 3, Some("m"))),
                ],
            )
            .unwrap();
        store
            .commit("g2", &[(tp("a", 0), off(100, 0, Some("")))])
            .unwrap();
        store
            .commit("g1", &[(tp("a", 0), off(6, 2, Some("x")))])
            .unwrap();
        store.commit("g1", &[]).unwrap();
        let all = store.load();
        assert_eq!(all.len(), 2);
        let g1 = &all["g1"];
        assert_eq!(g1[&tp("a", 0)], off(6, 2, Some("x")));
        assert_eq!(g1[&tp("a", 1)], off(7, 3, Some("m")));
        assert_eq!(all["g2"][&tp("a", 0)], off(100, 0, Some("")));
        let unicode = "ünïcødé-topic";
        store
            .commit(
                "g3",
                &[(tp(unicode, i32::MAX), off(i64::MAX, i32::MIN, None))],
            )
            .unwrap();
        assert_eq!(
            store.load()["g3"][&tp(unicode, i32::MAX)],
            off(i64::MAX, i32::MIN, None)
        );
    }

    #[test]
    fn mem_store_meets_the_contract() {
        run(&mut MemStore::new());
    }
}
