//! Allocates idempotent-producer ids that are never reused, even across crashes.
//!
//! Ids are handed out from blocks; the end of the current block is made durable before any id
//! in it is used, so after a crash allocation resumes past every id that may have been given out.
//!
//! Ids at and above [`RESERVED_START`] (2^62) are never handed out by `InitProducerId`: the
//! embedded processor in cluster mode writes each pipeline's outputs as idempotent batches
//! under a fixed id of that range ([`pipeline_producer_id`]), the same on every node and in
//! every lifetime, so the partition's producer table can deduplicate a deposed driver's
//! writes (see `processor/EXACTLY-ONCE.md`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::topics::{write_synced, TopicError};

const BLOCK: i64 = 1000;

/// The first producer id reserved for the processor's pipelines; no id handed out reaches it.
pub const RESERVED_START: i64 = 1 << 62;

/// The allocator's own ids stay below this: in cluster mode an id is scaled to
/// `id * (MAX_CLUSTER_NODE_ID + 1) + node` (`handlers/init_producer_id.rs`), which then
/// stays below [`RESERVED_START`] too.
pub const ALLOCATABLE_END: i64 = RESERVED_START / (crate::config::MAX_CLUSTER_NODE_ID + 1);

/// The producer id a pipeline's outputs carry in cluster mode: a stable hash (FNV-1a) of its
/// name, inside `[RESERVED_START, i64::MAX]`.
pub fn pipeline_producer_id(pipeline: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pipeline.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The low 62 bits, so the id is RESERVED_START + (< 2^62) <= i64::MAX.
    let low = i64::try_from(h & ((1 << 62) - 1)).unwrap_or(0);
    RESERVED_START | low
}

pub struct ProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block, exclusive)
    state: Mutex<(i64, i64)>,
    /// Set by [`ProducerIds::close`], under `state`'s lock.
    closed: std::sync::atomic::AtomicBool,
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
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A fresh producer id.
    /// Always below [`ALLOCATABLE_END`] (so no id handed out, scaled or not, is in the
    /// reserved range): once that is used up, allocation fails.
    pub fn allocate(&self) -> Result<i64, TopicError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(TopicError::Storage(
                "producer ids are closed: the broker is shutting down".into(),
            ));
        }
        if state.0 >= ALLOCATABLE_END {
            return Err(TopicError::Storage("producer ids exhausted".into()));
        }
        if state.0 >= state.1 {
            let end = state
                .0
                .checked_add(BLOCK)
                .map(|e| e.min(ALLOCATABLE_END))
                .ok_or_else(|| TopicError::Storage("producer ids exhausted".into()))?;
            write_synced(&self.path, end.to_string().as_bytes())?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }

    /// Refuse every later allocation; once this returns, the file is never written again
    /// (a write in progress holds the lock this waits for).
    pub fn close(&self) {
        let _state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_allocator_refuses_and_never_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        ids.allocate().unwrap();
        let file = std::fs::read_to_string(dir.path().join("producer_ids")).unwrap();
        ids.close();
        let err = ids.allocate().unwrap_err().to_string();
        assert!(err.contains("closed"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("producer_ids")).unwrap(),
            file
        );
    }

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

    #[test]
    fn the_pipeline_range_is_never_allocated() {
        let dir = tempfile::tempdir().unwrap();
        // An allocator a few ids short of the reserved range.
        write_synced(
            &dir.path().join("producer_ids"),
            (ALLOCATABLE_END - 2).to_string().as_bytes(),
        )
        .unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(a.allocate().unwrap(), ALLOCATABLE_END - 2);
        let last = a.allocate().unwrap();
        assert_eq!(last, ALLOCATABLE_END - 1);
        // Scaled as cluster mode scales it, with the largest node id: still below.
        let node = crate::config::MAX_CLUSTER_NODE_ID;
        assert!(last * (node + 1) + node < RESERVED_START);
        assert!(
            a.allocate().is_err(),
            "the reserved range is not handed out"
        );
        assert!(a.allocate().is_err());
        // Reopened at the durable block end: still refused.
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert!(b.allocate().is_err());

        for name in ["sensors", "", "machines", "a-much-longer-pipeline-name"] {
            let id = pipeline_producer_id(name);
            assert!(id >= RESERVED_START, "{name}: {id}");
            assert_eq!(id, pipeline_producer_id(name), "stable");
        }
        assert_ne!(
            pipeline_producer_id("sensors"),
            pipeline_producer_id("machines")
        );
    }
}
