//! A Raft group's hard state (term, vote, commit) in a small file, replaced atomically; and a
//! partition group's log start record ([`LogStart`]), kept the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::raft::segment_log::LogStart;
use crate::raft::HardState;
use crate::topics::{sync_dir, write_synced};

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    term: u64,
    vote: Option<u64>,
    commit: u64,
}

/// Where one group keeps its hard state.
#[derive(Debug, Clone)]
pub struct HardStateFile {
    path: PathBuf,
}

impl HardStateFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved state; the default (term 0, no vote) when none was ever saved.
    pub fn load(&self) -> Result<HardState, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let s: Stored = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("bad raft state {}: {e}", self.path.display()))?;
                Ok(HardState {
                    term: s.term,
                    vote: s.vote,
                    commit: s.commit,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HardState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Write to a temporary file, fsync it, rename it over the old one, fsync the directory:
    /// a crash leaves the old state or the new one, never a mix.
    pub fn save(&self, hs: HardState) -> Result<(), String> {
        let text = serde_json::to_vec(&Stored {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        })
        .map_err(|e| e.to_string())?;
        replace_synced(&self.path, &text)
    }

    /// Forget the state (the group's topic was deleted).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Write `bytes` to a temporary file, fsync it, rename it over `path`, fsync the directory
/// (created if missing): a crash leaves the old content or the new, never a mix.
fn replace_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the directory of {}: {e}", path.display()))?;
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    sync_dir(dir).map_err(|e| e.to_string())
}

/// Where one partition group keeps its log start record (retention and snapshot installs
/// moved its Raft log's start; see `raft::segment_log`).
#[derive(Debug, Clone)]
pub struct LogStartFile {
    path: PathBuf,
}

impl LogStartFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved record; `None` when the log never started above offset 0.
    pub fn load(&self) -> Result<Option<LogStart>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("bad log start record {}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Replaces the record durably (see [`HardStateFile::save`]).
    pub fn save(&self, start: &LogStart) -> Result<(), String> {
        let text = serde_json::to_vec(start).map_err(|e| e.to_string())?;
        replace_synced(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back_and_missing_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = HardStateFile::new(dir.path().join("a/b.json"));
        assert_eq!(f.load().unwrap(), HardState::default());
        let hs = HardState {
            term: 7,
            vote: Some(2),
            commit: 40,
        };
        f.save(hs).unwrap();
        assert_eq!(f.load().unwrap(), hs);
        std::fs::write(dir.path().join("a/b.json"), b"{garbage").unwrap();
        assert!(f.load().is_err());
    }

    #[test]
    fn log_start_record_loads_back_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let f = LogStartFile::new(dir.path().join("raft/t-0.start.json"));
        assert_eq!(f.load().unwrap(), None);
        let start = LogStart {
            index: u64::MAX,
            term: 3,
            offset: i64::MAX,
            resetting: true,
        };
        f.save(&start).unwrap();
        assert_eq!(f.load().unwrap(), Some(start));
        let later = LogStart {
            resetting: false,
            ..start
        };
        f.save(&later).unwrap();
        assert_eq!(f.load().unwrap(), Some(later));
        assert!(!dir.path().join("raft/t-0.start.tmp").exists());
        std::fs::write(dir.path().join("raft/t-0.start.json"), b"[1,").unwrap();
        assert!(f.load().is_err());
    }
}
