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

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

fn journal() -> Option<&'static Mutex<File>> {
    static JOURNAL: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    JOURNAL
        .get_or_init(|| {
            let path = std::env::var_os("RUNNEL_FAULT_SYNC_JOURNAL")?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(PathBuf::from(path))
                .ok()?;
            Some(Mutex::new(file))
        })
        .as_ref()
}

/// `file.sync_data()` (or `sync_all` with `all`) of a file holding `data_len` bytes of data,
/// journaled when the hook is on.
pub(crate) fn sync(file: &File, all: bool, data_len: u64) -> std::io::Result<()> {
    let Some(journal) = journal() else {
        return if all {
            file.sync_all()
        } else {
            file.sync_data()
        };
    };
    let len = data_len;
    if all {
        file.sync_all()?;
    } else {
        file.sync_data()?;
    }
    if let Ok(path) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        let mut j = journal.lock().unwrap_or_else(|e| e.into_inner());
        // Best effort: a failed journal write only makes the test's power cut gentler.
        let _ = writeln!(j, "{} {len}", path.display());
    }
    Ok(())
}
