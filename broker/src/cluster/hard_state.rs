//! A Raft group's hard state (term, vote, commit) in a small file, replaced atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the directory of {}: {e}",
                self.path.display()
            )
        })?;
        let text = serde_json::to_vec(&Stored {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        })
        .map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("tmp");
        write_synced(&tmp, &text).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("cannot replace {}: {e}", self.path.display()))?;
        sync_dir(dir).map_err(|e| e.to_string())
    }

    /// Forget the state (the group's topic was deleted).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
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
}
