//! Allocates idempotent-producer ids that are never reused, even across crashes.
//!
//! Ids are handed out from blocks; the end of the current block is made durable before any id
//! in it is used, so after a crash allocation resumes past every id that may have been given out.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::topics::{write_synced, TopicError};

const BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block, exclusive)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<Self, TopicError> {
        let path = data_dir.join("producer_ids");
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|e| TopicError::Storage(format!("bad {}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(TopicError::Storage(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Self {
            path,
            state: Mutex::new((next, next)),
        })
    }

    /// A fresh producer id.
    pub fn allocate(&self) -> Result<i64, TopicError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 >= state.1 {
            let end = state
                .0
                .checked_add(BLOCK)
                .ok_or_else(|| TopicError::Storage("producer ids exhausted".into()))?;
            write_synced(&self.path, end.to_string().as_bytes())?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert!(
            b.allocate().unwrap() >= BLOCK,
            "a reopened allocator skips the reserved block"
        );
    }
}
