//! Fault-injection hook for power-loss tests: which bytes of which segment files an fsync made
//! durable.
//!
//! SIGKILL never tests fsync: the page cache survives the process. With the environment
//! variable `RUNNEL_FAULT_SYNC_JOURNAL=<file>` set (tests only; it is not a setting), every
//! fsync of a segment file appends `<path> <length>` to that file, where `length` is the
//! length of data the caller had written before the fsync began (so the fsync covers it; the
//! file itself may be longer, by blocks reserved ahead of appends). A test harness that kills the process can then cut every segment
//! to its last journaled length, losing exactly what a power cut could lose
//! (`tests/src/cluster.rs`, `Cluster::power_loss`). Without the variable this costs one
//! `OnceLock` read per fsync.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The journal file, and per segment file the length its last journaled sync covered.
struct Journal {
    file: File,
    covered: HashMap<PathBuf, u64>,
}

fn journal() -> Option<&'static Mutex<Journal>> {
    static JOURNAL: OnceLock<Option<Mutex<Journal>>> = OnceLock::new();
    JOURNAL
        .get_or_init(|| {
            let path = std::env::var_os("RUNNEL_FAULT_SYNC_JOURNAL")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(PathBuf::from(path))
                .ok()?;
            Some(Mutex::new(Journal {
                file,
                covered: HashMap::new(),
            }))
        })
        .as_ref()
}

/// `file.sync_data()` (or `sync_all` with `all`) of a file holding `data_len` bytes of data,
/// journaled when the hook is on.
///
/// A partition may run several data syncs of one file at once, finishing in any order, and
/// the harness keeps each file's last line: so a data sync (`all == false`, which only ever
/// covers appends) journals the longest length any sync of the file has covered, never a
/// shorter one that finished late. `all == true` syncs (open, truncation, seal, clean close)
/// set the file's exact length and are journaled as given.
pub(crate) fn sync(file: &File, all: bool, data_len: u64) -> std::io::Result<()> {
    if all {
        file.sync_all()?;
    } else {
        file.sync_data()?;
    }
    let Some(journal) = journal() else {
        return Ok(());
    };
    if let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
        let len = match j.covered.get(&path) {
            Some(&before) if !all => before.max(data_len),
            _ => data_len,
        };
        j.covered.insert(path.clone(), len);
        // Best effort: a failed journal write only makes the test's power cut gentler.
        let _ = writeln!(j.file, "{} {len}", path.display());
    }
    Ok(())
}
