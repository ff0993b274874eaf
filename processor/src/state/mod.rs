//! Operator state behind a narrow [`StateStore`] trait, with checkpoint metadata.
//!
//! Implementations: [`memory::MemStore`] (tests, and a model for the others) and
//! [`sled_store::SledStore`] (durable; the only module that names sled). One contract suite
//! (`contract.rs`) runs against both.

pub mod memory;
pub mod sled_store;

#[cfg(test)]
pub(crate) mod contract;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::Millis;

/// A state-store failure: the pipeline cannot checkpoint or restore.
#[derive(Debug, Error)]
pub enum StateError {
    /// The backend failed (I/O, corruption detected by the backend).
    #[error("state backend: {0}")]
    Backend(String),
    /// A stored value does not decode.
    #[error("corrupt state at key {key}: {reason}")]
    Corrupt {
        /// The key, lossily as UTF-8.
        key: String,
        /// Decoder message.
        reason: String,
    },
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One operation of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (absent is fine).
    Delete(Vec<u8>),
}

/// Operations applied all-or-nothing by [`StateStore::write_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// In order; a later op on the same key wins.
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put(key.into(), value.into()));
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete(key.into()));
    }

    /// Records `meta` as the store's checkpoint metadata, atomically with the rest.
    pub fn set_checkpoint_meta(&mut self, meta: &CheckpointMeta) {
        // Serializing plain data to JSON cannot fail.
        let v = serde_json::to_vec(meta).unwrap_or_default();
        self.put(CHECKPOINT_META_KEY, v);
    }
}

/// Reserved key of the checkpoint metadata (state keys never start with a NUL byte).
pub const CHECKPOINT_META_KEY: &[u8] = b"\0checkpoint";

/// Where a checkpoint stands: enough to resume without loss or duplication.
/// See `EXACTLY-ONCE.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Pipeline name.
    pub pipeline: String,
    /// Checkpoint id, strictly increasing.
    pub id: u64,
    /// Steps (journal entries) applied before this checkpoint: replay starts at this index.
    pub steps_applied: u64,
    /// Per source partition, the next offset to read.
    pub input_next_offsets: Vec<(String, u32, i64)>,
    /// Per output stream (topic, partition), the next output sequence number.
    pub output_next_seq: Vec<(String, u32, u64)>,
    /// Pipeline watermark.
    pub watermark: Option<Millis>,
    /// Processing time of the last step.
    pub processing_time: Millis,
    /// Where the journal entries of the lifetime that took the checkpoint ended: every entry
    /// before it is of a step the checkpoint covers, so recovery from this checkpoint reads
    /// the journal from here. `None`: not known (a checkpoint written before this field
    /// existed) — recovery reads the journal from its log start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_next: Option<i64>,
}

/// A key-value store for operator state.
pub trait StateStore {
    /// Value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Sets `key`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    /// Removes `key`.
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError>;
    /// Applies `batch` atomically, and durably once this returns (for durable stores): after
    /// a crash either all of it or none of it is visible.
    fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError>;

    /// The last committed checkpoint's metadata.
    fn checkpoint_meta(&self) -> Result<Option<CheckpointMeta>, StateError> {
        match self.get(CHECKPOINT_META_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    key: "checkpoint".into(),
                    reason: e.to_string(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoints written before `journal_next` existed still restore (recovery then reads
    /// the journal from its start), and a checkpoint without a position writes none.
    #[test]
    fn checkpoint_meta_without_a_journal_position() {
        let old = br#"{"pipeline":"p","id":3,"steps_applied":10,"input_next_offsets":[["t",0,42]],
            "output_next_seq":[["o",1,7]],"watermark":1000,"processing_time":5}"#;
        let meta: CheckpointMeta = serde_json::from_slice(old).unwrap();
        assert_eq!(meta.journal_next, None);
        assert_eq!(meta.steps_applied, 10);
        let again = serde_json::to_vec(&meta).unwrap();
        assert!(!String::from_utf8_lossy(&again).contains("journal_next"));
        let with = CheckpointMeta {
            journal_next: Some(4),
            ..meta
        };
        let back: CheckpointMeta =
            serde_json::from_slice(&serde_json::to_vec(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }
}
