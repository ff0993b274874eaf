//! The durable offset store: an append-only file of checksummed commit records.
//!
//! Layout of `<dir>/offsets.log`: a sequence of records, each
//! `u32 length | u32 crc32c(payload) | payload` (big-endian), where one payload is one whole
//! commit (so a commit is replayed all or nothing):
//!
//! ```text
//! u8 version (1) | u32 group len | group | u32 count |
//!   count × (u32 topic len | topic | i32 partition | i64 offset | i32 leader epoch |
//!            i32 metadata len (-1 = null) | metadata)
//! ```
//!
//! Every commit is fsynced before it is acknowledged. On open the file is replayed and cut at
//! the first torn or corrupt record (a crash mid-append leaves at most one). When the file grows
//! past [`COMPACT_FACTOR`] times the size of the live offsets it is rewritten: temp file, fsync,
//! rename, fsync the directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::store::{OffsetMap, OffsetStore, StoreError};
use super::{CommittedOffset, TopicPartition};

/// Rewrite the file once it is this many times larger than its live contents.
pub const COMPACT_FACTOR: u64 = 4;
/// Never compact files smaller than this (by default).
pub const DEFAULT_MIN_COMPACT_BYTES: u64 = 1 << 20;
/// Larger records are refused on write and treated as corruption on replay.
const MAX_RECORD_BYTES: usize = 64 << 20;
const HEADER: usize = 8;
const VERSION: u8 = 1;
const FILE_NAME: &str = "offsets.log";
const TEMP_NAME: &str = "offsets.log.tmp";

/// Committed offsets in an append-only file.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    file: File,
    len: u64,
    offsets: OffsetMap,
    /// Live size as of the last check, so it is not recomputed on every commit.
    live_estimate: u64,
    min_compact_bytes: u64,
    poisoned: bool,
    /// How many times the file has been rewritten (for tests and metrics).
    pub compactions: u64,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl FileStore {
    /// Open (or create) the store in `dir`, replaying the file and cutting a torn tail.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, DEFAULT_MIN_COMPACT_BYTES)
    }

    /// As [`Self::open`], compacting files as small as `min_compact_bytes`.
    pub fn open_with(dir: &Path, min_compact_bytes: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let _ = std::fs::remove_file(dir.join(TEMP_NAME));
        let existed = path.exists();
        let data = if existed {
            std::fs::read(&path).map_err(io(format!("read {}", path.display())))?
        } else {
            Vec::new()
        };
        let (offsets, good) = replay(&data);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("open {}", path.display())))?;
        let good_len = u64::try_from(good).unwrap_or(u64::MAX);
        if good < data.len() {
            tracing::warn!(
                path = %path.display(),
                kept = good,
                dropped = data.len() - good,
                "offset store: cutting a torn or corrupt tail"
            );
            file.set_len(good_len)
                .map_err(io(format!("truncate {}", path.display())))?;
            file.sync_all()
                .map_err(io(format!("fsync {}", path.display())))?;
        }
        if !existed {
            sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            file,
            len: good_len,
            offsets,
            live_estimate: good_len,
            min_compact_bytes,
            poisoned: false,
            compactions: 0,
        })
    }

    /// Current file size in bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        if self.len < self.min_compact_bytes
            || self.len <= self.live_estimate.saturating_mul(COMPACT_FACTOR)
        {
            return Ok(());
        }
        let mut live = Vec::new();
        for (group, offsets) in &self.offsets {
            let entries: Vec<(TopicPartition, CommittedOffset)> = offsets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            live.extend_from_slice(&encode_record(group, &entries)?);
        }
        let live_len = u64::try_from(live.len()).unwrap_or(u64::MAX);
        self.live_estimate = live_len;
        if self.len <= live_len.saturating_mul(COMPACT_FACTOR) {
            return Ok(());
        }
        let tmp = self.dir.join(TEMP_NAME);
        let path = self.dir.join(FILE_NAME);
        {
            let mut f = File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
            f.write_all(&live)
                .map_err(io(format!("write {}", tmp.display())))?;
            f.sync_all()
                .map_err(io(format!("fsync {}", tmp.display())))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))?;
        // From here the open handle is the replaced file: appends to it would be lost, so a
        // failure poisons the store instead of being merely reported.
        let reopened = sync_dir(&self.dir).and_then(|()| {
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io(format!("reopen {}", path.display())))
        });
        self.file = match reopened {
            Ok(f) => f,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        self.len = live_len;
        self.compactions = self.compactions.saturating_add(1);
        Ok(())
    }
}

impl OffsetStore for FileStore {
    fn load(&self) -> OffsetMap {
        self.offsets.clone()
    }

    fn commit(
        &mut self,
        group_id: &str,
        offsets: &[(TopicPartition, CommittedOffset)],
    ) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let record = encode_record(group_id, offsets)?;
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // The file's state is unknown now (the page cache may or may not hold the
            // record); refuse further commits rather than vouch for them.
            self.poisoned = true;
            return Err(io("append offsets")(e));
        }
        self.len = self
            .len
            .saturating_add(u64::try_from(record.len()).unwrap_or(u64::MAX));
        let group = self.offsets.entry(group_id.to_owned()).or_default();
        for (tp, o) in offsets {
            group.insert(tp.clone(), o.clone());
        }
        if let Err(e) = self.maybe_compact() {
            // The commit itself is durable in the old file; a failed rewrite leaves it intact
            // (the rename is atomic), so only report it.
            tracing::error!("offset store compaction failed: {e}");
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync {}", dir.display())))
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u32::try_from(s.len()).map_err(|_| StoreError::TooLarge(s.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// One whole record (header included) for a commit.
fn encode_record(
    group: &str,
    offsets: &[(TopicPartition, CommittedOffset)],
) -> Result<Vec<u8>, StoreError> {
    let mut payload = vec![VERSION];
    put_str(&mut payload, group)?;
    let count = u32::try_from(offsets.len()).map_err(|_| StoreError::TooLarge(offsets.len()))?;
    payload.extend_from_slice(&count.to_be_bytes());
    for (tp, o) in offsets {
        put_str(&mut payload, &tp.topic)?;
        payload.extend_from_slice(&tp.partition.to_be_bytes());
        payload.extend_from_slice(&o.offset.to_be_bytes());
        payload.extend_from_slice(&o.leader_epoch.to_be_bytes());
        match &o.metadata {
            None => payload.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(m) => {
                let len = i32::try_from(m.len()).map_err(|_| StoreError::TooLarge(m.len()))?;
                payload.extend_from_slice(&len.to_be_bytes());
                payload.extend_from_slice(m.as_bytes());
            }
        }
    }
    if payload.len() > MAX_RECORD_BYTES {
        return Err(StoreError::TooLarge(payload.len()));
    }
    let len = u32::try_from(payload.len()).map_err(|_| StoreError::TooLarge(payload.len()))?;
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// Replay records; returns the offsets and the length of the valid prefix.
fn replay(data: &[u8]) -> (OffsetMap, usize) {
    let mut offsets = OffsetMap::new();
    let mut pos = 0usize;
    while let Some((group, entries, next)) = decode_record(data, pos) {
        let g = offsets.entry(group).or_default();
        g.extend(entries);
        pos = next;
    }
    (offsets, pos)
}

/// A bounds-checked reader over a payload.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
    fn string(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

type Entries = Vec<(TopicPartition, CommittedOffset)>;

/// Decode the record at `pos`; `None` if it is torn, corrupt, or absent.
fn decode_record(data: &[u8], pos: usize) -> Option<(String, Entries, usize)> {
    let mut r = Reader {
        buf: data.get(pos..)?,
    };
    let len = usize::try_from(r.u32()?).ok()?;
    let crc = r.u32()?;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let payload = r.take(len)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let next = pos.checked_add(HEADER)?.checked_add(len)?;
    let mut p = Reader { buf: payload };
    if p.array::<1>()? != [VERSION] {
        return None;
    }
    let glen = usize::try_from(p.u32()?).ok()?;
    let group = p.string(glen)?;
    let count = p.u32()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let tlen = usize::try_from(p.u32()?).ok()?;
        let topic = p.string(tlen)?;
        let partition = p.i32()?;
        let offset = p.i64()?;
        let leader_epoch = p.i32()?;
        let mlen = p.i32()?;
        let metadata = if mlen < 0 {
            None
        } else {
            Some(p.string(usize::try_from(mlen).ok()?)?)
        };
        entries.push((
            TopicPartition { topic, partition },
            CommittedOffset {
                offset,
                leader_epoch,
                metadata,
            },
        ));
    }
    if !p.buf.is_empty() {
        return None;
    }
    Some((group, entries, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::store::contract::{off, tp};
    use crate::group::store::{contract, MemStore};

    #[test]
    fn file_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract::run(&mut FileStore::open(dir.path()).unwrap());
    }

    #[test]
    fn contract_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let written = {
            let mut s = FileStore::open(dir.path()).unwrap();
            contract::run(&mut s);
            s.load()
        };
        let mut model = MemStore::new();
        contract::run(&mut model);
        assert_eq!(written, model.load());
        let reopened = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.load(),
            model.load(),
            "replay gives back every commit"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let mut s = FileStore::open(dir.path()).unwrap();
            s.commit("g", &[(tp("t", 0), off(1, -1, None))]).unwrap();
            s.commit(
                "g",
                &[
                    (tp("t", 0), off(2, -1, Some("m"))),
                    (tp("t", 1), off(9, 1, None)),
                ],
            )
            .unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        let first_len = decode_record(&full, 0).unwrap().2;
        for cut in first_len..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let s = FileStore::open(dir.path()).unwrap();
            let g = &s.load()["g"];
            assert_eq!(g[&tp("t", 0)], off(1, -1, None), "cut at {cut}");
            assert!(
                !g.contains_key(&tp("t", 1)),
                "second commit is all or nothing"
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                u64::try_from(first_len).unwrap()
            );
        }
        // A flipped byte inside the last record is corruption: the record is dropped.
        let mut bad = full.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 0xff;
        }
        std::fs::write(&path, &bad).unwrap();
        let mut s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load()["g"][&tp("t", 0)], off(1, -1, None));
        // Appends continue after the cut and replay.
        s.commit("g", &[(tp("t", 0), off(3, -1, None))]).unwrap();
        drop(s);
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load()["g"][&tp("t", 0)], off(3, -1, None));
    }

    #[test]
    fn garbage_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut seed = 0x1234_5678_u64;
        for n in 0..200usize {
            let mut junk = Vec::with_capacity(n);
            for _ in 0..n {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                junk.push(seed.to_be_bytes()[0]);
            }
            std::fs::write(&path, &junk).unwrap();
            let s = FileStore::open(dir.path()).unwrap();
            assert!(s.file_len() <= u64::try_from(n).unwrap());
        }
    }

    #[test]
    fn compaction_rewrites_to_the_live_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FileStore::open_with(dir.path(), 512).unwrap();
        let mut model = MemStore::new();
        for i in 0..500i64 {
            let p = i32::try_from(i % 3).unwrap();
            let entry = [(tp("topic", p), off(i, 0, Some("meta")))];
            s.commit("group", &entry).unwrap();
            model.commit("group", &entry).unwrap();
        }
        assert!(s.compactions > 0, "the file was rewritten");
        assert!(s.file_len() < 4 * 512, "and stays small: {}", s.file_len());
        assert_eq!(s.load(), model.load());
        drop(s);
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.load(), model.load(), "the compacted file replays");
        assert!(!dir.path().join(TEMP_NAME).exists());
    }
}
