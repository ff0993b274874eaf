//! Durable [`StateStore`] on sled: the only module that names sled.
//!
//! One sled tree per pipeline; `write_batch` is `Tree::apply_batch` (atomic) followed by
//! `flush` (durable), so a checkpoint is either wholly on disk or not at all.

use std::path::Path;

use super::{BatchOp, KeyValue, StateError, StateStore, WriteBatch};

/// Attempts after the first while another handle in this process still holds the lock.
const LOCK_RETRIES: u32 = 50;

/// Whether `open` failed only because another handle holds the database's file lock (sled
/// reports it as an `Other` I/O error with this message).
fn lock_taken(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

fn backend(e: sled::Error) -> StateError {
    StateError::Backend(e.to_string())
}

/// A sled-backed store.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledStore {
    /// Opens (or creates) the database at `path`, using tree `name` (one per pipeline).
    ///
    /// sled's background flusher can hold a just-dropped handle (and its file lock) for a
    /// moment, so reopening in the same process may find the lock taken: that is retried,
    /// with a doubling pause, for about [`LOCK_RETRIES`] × 100 ms before it is an error.
    pub fn open(path: &Path, name: &str) -> Result<Self, StateError> {
        let mut pause = std::time::Duration::from_millis(5);
        let mut attempt = 0;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(e) if lock_taken(&e) && attempt < LOCK_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(backend(e)),
            }
        };
        let tree = db.open_tree(name).map_err(backend)?;
        Ok(Self { db, tree })
    }

    /// Flushes everything written to disk.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    /// Applies `batch` atomically (visible at once, all or nothing after a crash) without
    /// waiting for it to be durable: it is durable once a later [`SledStore::flush`] returns.
    /// sled recovers the batches in the order they were applied, so a crash before that flush
    /// leaves the state of some earlier batch, never a mix.
    pub fn apply_batch(&self, batch: WriteBatch) -> Result<(), StateError> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put(k, v) => b.insert(k, v),
                BatchOp::Delete(k) => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(backend)
    }
}

impl StateStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.tree.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.tree.insert(key, value).map(|_| ()).map_err(backend)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.tree.remove(key).map(|_| ()).map_err(backend)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        self.apply_batch(batch)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CheckpointMeta;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        super::super::contract::run_all(|| {
            n += 1;
            Box::new(SledStore::open(&dir.path().join(format!("db{n}")), "p").unwrap())
        });
    }

    #[test]
    fn checkpoint_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CheckpointMeta {
            pipeline: "p".into(),
            id: 3,
            steps_applied: 10,
            input_next_offsets: vec![("t".into(), 0, 42)],
            output_next_seq: vec![("out".into(), 0, 7)],
            watermark: Some(1000),
            processing_time: 5,
            journal_next: Some(9),
        };
        {
            let mut s = SledStore::open(dir.path(), "p").unwrap();
            let mut b = WriteBatch::default();
            b.put(b"s/w/a".to_vec(), b"1".to_vec());
            b.set_checkpoint_meta(&meta);
            s.write_batch(b).unwrap();
        }
        let s = SledStore::open(dir.path(), "p").unwrap();
        assert_eq!(s.checkpoint_meta().unwrap(), Some(meta));
        assert_eq!(s.get(b"s/w/a").unwrap(), Some(b"1".to_vec()));
        // Trees are separate namespaces: another pipeline sees nothing.
        drop(s);
        let other = SledStore::open(dir.path(), "q").unwrap();
        assert_eq!(other.checkpoint_meta().unwrap(), None);
    }
}
