//! Segment-file implementation of [`super::PartitionLog`]: a directory of Kafka-style segments.
//!
//! Layout: `{base_offset:020}.log` holds whole batches byte-for-byte; `.index` and `.timeindex`
//! are sparse indexes (see [`super::index`]). The last segment is the active one; the log start
//! offset is the first segment's base offset, so it needs no file of its own, and the active
//! segment is never deleted, so the log end offset survives even when retention empties the log.
//!
//! Durability: appends are written with one positional write and only then indexed. `flush_plan`
//! hands out the active segment's file for a group-commit fsync; rolling a segment fsyncs it, its
//! indexes and the directory. On open, the active segment is rescanned with full CRC checks and
//! cut at the first torn or discontiguous batch (see [`super::segment`]), unless the log was
//! closed cleanly: dropping a [`FileLog`] fsyncs the active segment and leaves a
//! [`CleanClose`] marker naming its length, and an open that finds the segment at exactly that
//! length walks only its batch headers (as Kafka skips recovery after a clean shutdown). The
//! marker is removed, durably, by the open, so a crash after it gets the full scan.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::batch::IntactBatches;

use super::common::{
    check_read_range, check_truncate_range, expired, io_context, prepare_intact, should_roll,
};
use super::direct::DirectReads;
pub use super::segment::CleanClose;
use super::segment::{
    remove_if_present, segment_path, Segment, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT,
};
use super::{
    AppendInfo, Batches, FlushPlan, LogError, PartitionLog, RetentionPolicy, TimestampOffset,
    ZeroAhead,
};

/// How a [`FileLog`] lays out segments. Also used by [`super::memory::MemLog`] so that both roll
/// segments, and therefore apply retention, identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLogConfig {
    /// Roll to a new segment when an append would take the active one past this size. An
    /// append bigger than this still goes whole into a fresh segment.
    pub segment_bytes: u64,
    /// Roll when an append's max timestamp is more than this after the max timestamp of the
    /// active segment's first batch (record time, not wall-clock time; see `should_roll`).
    pub segment_ms: Option<i64>,
    /// Bytes of batches between sparse offset-index entries.
    pub index_interval_bytes: u64,
    /// Once an fsync covered them, drop the active segment's pages from the page cache except
    /// its last this-many bytes (`None`: leave the page cache to the kernel, as Kafka does).
    /// Readers at the tail keep finding their data cached; older data is read from disk. New
    /// appends then reuse the memory just released instead of taking fresh page-cache pages,
    /// which on a VM whose host reclaimed the guest's free memory cost ~2 ms of CPU per MB
    /// (BENCHMARKS.md).
    pub cache_tail_bytes: Option<u64>,
    /// Memory for reading what lies below the dropped page cache with `O_DIRECT` (one
    /// budget shared by every log of a broker; see `log/direct.rs`).
    pub direct_reads: DirectReads,
    /// At most this many bytes per second of the blocks reserved ahead of appends are
    /// written with zeros when no append waits on a flush ([`PartitionLog::zero_ahead`]);
    /// 0 = never. Low-rate acks=all appends then land in written blocks, and their fsyncs
    /// write no extent change; at high rates appends outrun the zeros and land in reserved
    /// blocks as before, the disk doing at most this much more writing.
    pub zero_ahead_bytes_per_sec: u64,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: None,
            index_interval_bytes: 4096,
            cache_tail_bytes: Some(DEFAULT_CACHE_TAIL_BYTES),
            direct_reads: DirectReads::with_budget(DEFAULT_DIRECT_READ_BYTES),
            zero_ahead_bytes_per_sec: DEFAULT_ZERO_AHEAD_BYTES_PER_SEC,
        }
    }
}

/// The default of [`FileLogConfig::cache_tail_bytes`].
pub const DEFAULT_CACHE_TAIL_BYTES: u64 = 64 << 20;

/// The default of [`FileLogConfig::zero_ahead_bytes_per_sec`].
pub const DEFAULT_ZERO_AHEAD_BYTES_PER_SEC: u64 = 32 << 20;

/// Zeros are written ahead again once fewer than this many bytes of them lie past the log
/// end (within the reservation).
pub(crate) const ZERO_AHEAD_LOW: u64 = 256 << 10;

/// Zeros written ahead at a time: each chunk costs one fsync with a metadata write, and
/// appends wait for the log's lock while it is written.
pub(crate) const ZERO_AHEAD_CHUNK: u64 = 256 << 10;

/// The default budget of [`FileLogConfig::direct_reads`]: six partitions catching up at
/// once each keep the chunk they read and the four after it.
pub const DEFAULT_DIRECT_READ_BYTES: u64 = 128 << 20;

/// A partition log stored as segment files in one directory.
#[derive(Debug)]
pub struct FileLog {
    dir: PathBuf,
    config: FileLogConfig,
    /// Rolled segments, oldest first.
    sealed: Vec<Segment>,
    /// The segment appends go to; always present, possibly empty.
    active: Segment,
    flushed_offset: i64,
    /// When zeros were last written ahead of appends (paces [`PartitionLog::zero_ahead`]).
    zeroed_at: Option<Instant>,
    /// Set when a failed append could not be rolled back: the file may hold stray bytes.
    poisoned: Option<String>,
}

impl FileLog {
    /// Open (or create) the log in `dir`, recovering from a crash: the active segment is cut
    /// after its last whole, valid batch and fsynced, so afterwards `flushed_offset` equals
    /// `log_end_offset`. Damaged or missing index files are rebuilt.
    pub fn open(dir: &Path, config: FileLogConfig) -> Result<FileLog, LogError> {
        fs::create_dir_all(dir).map_err(io_context(format!("creating {}", dir.display())))?;
        let bases = list_segments(dir)?;
        let interval = config.index_interval_bytes;
        // Removed before anything else; the directory fsync below makes the removal durable
        // before the first append.
        let clean = CleanClose::take(dir)?;
        let (sealed, active) = match bases.split_last() {
            None => (Vec::new(), Segment::create(dir, 0, interval)?),
            Some((&last, older)) => {
                let sealed = older
                    .iter()
                    .map(|&b| Segment::open_sealed(dir, b, interval))
                    .collect::<Result<Vec<_>, _>>()?;
                (sealed, Segment::open_active(dir, last, interval, clean)?)
            }
        };
        let active = active.with_direct_reads(&config.direct_reads);
        check_contiguous(sealed.iter().chain(std::iter::once(&active)))?;
        sync_dir(dir)?;
        let flushed_offset = active.next_offset();
        Ok(FileLog {
            dir: dir.to_owned(),
            config,
            sealed,
            active,
            flushed_offset,
            zeroed_at: None,
            poisoned: None,
        })
    }

    /// The directory holding the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.sealed.len().saturating_add(1)
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    /// Position in `segments()` of the segment that holds `offset` (which is in range).
    fn segment_index(&self, offset: i64) -> usize {
        if offset >= self.active.base_offset() {
            return self.sealed.len();
        }
        self.sealed
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    fn segment(&self, index: usize) -> &Segment {
        self.sealed.get(index).unwrap_or(&self.active)
    }

    /// Seal the active segment and start a new one at the log end.
    fn roll(&mut self) -> Result<(), LogError> {
        let base = self.active.next_offset();
        self.active.seal()?;
        let fresh = Segment::create(&self.dir, base, self.config.index_interval_bytes)?
            .with_direct_reads(&self.config.direct_reads);
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.active, fresh);
        // Every earlier segment was fsynced when it was sealed, and so was this one just now.
        self.flushed_offset = self.flushed_offset.max(old.next_offset());
        self.sealed.push(old);
        Ok(())
    }
}

impl PartitionLog for FileLog {
    fn append_intact(
        &mut self,
        batches: IntactBatches,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        if let Some(why) = &self.poisoned {
            return Err(LogError::Corrupt(format!(
                "log refuses appends after a failed write: {why}"
            )));
        }
        let prepared = prepare_intact(batches, self.log_end_offset(), leader_epoch)?;
        if should_roll(&self.config, &self.active.roll_facts(), &prepared) {
            self.roll()?;
        }
        if let Err(e) = self.active.append(&prepared, self.config.segment_bytes) {
            if !self.active.roll_back_failed_append() {
                self.poisoned = Some(e.to_string());
            }
            return Err(e);
        }
        Ok(prepared.info)
    }

    /// The batches [`PartitionLog::read_batches`] locates, read into one buffer.
    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.read_batches(offset, max_offset, max_bytes)?
            .to_bytes()
            .map_err(io_context(format!(
                "reading {} from offset {offset}",
                self.dir.display()
            )))
    }

    fn read_batches(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
    ) -> Result<Batches, LogError> {
        let mut out = Batches::default();
        if check_read_range(
            offset,
            max_offset,
            self.log_start_offset(),
            self.log_end_offset(),
        )? {
            return Ok(out);
        }
        let mut segments = self.segments().skip(self.segment_index(offset));
        let Some(first) = segments.next() else {
            return Ok(out);
        };
        let (start, header) = first.locate(offset)?;
        let (pieces, mut reached_end) =
            first.slice(start, header.total_len(), max_bytes, max_offset)?;
        out.extend(pieces);
        for segment in segments {
            let budget = max_bytes.saturating_sub(out.len());
            if !reached_end || budget == 0 || segment.base_offset() >= max_offset {
                break;
            }
            let (pieces, end) = segment.slice(0, 0, budget, max_offset)?;
            reached_end = end;
            out.extend(pieces);
        }
        Ok(out)
    }

    fn log_start_offset(&self) -> i64 {
        self.segment(0).base_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.active.next_offset()
    }

    fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Only the active segment can hold unsynced data: sealed segments were fsynced at roll.
    fn flush_plan(&self) -> FlushPlan {
        let up_to = self.log_end_offset();
        let files = if up_to > self.flushed_offset {
            vec![(self.active.file().clone(), self.active.size())]
        } else {
            Vec::new()
        };
        // The range lies below the size this plan fsyncs: once synced, its pages are clean.
        let drop_cache = self
            .config
            .cache_tail_bytes
            .and_then(|keep| self.active.plan_cache_drop(keep))
            .map(|(from, len)| (self.active.file().clone(), from, len))
            .into_iter()
            .collect();
        FlushPlan {
            files,
            up_to,
            drop_cache,
        }
    }

    /// Clamped to the log end. A plan taken before a `truncate_to` that cut below its `up_to`
    /// must not be marked afterwards: it may not cover what was appended since the cut (the
    /// single-node broker never truncates; the Raft driver serializes the two).
    fn mark_flushed(&mut self, up_to: i64) {
        self.flushed_offset = self.flushed_offset.max(up_to.min(self.log_end_offset()));
    }

    /// One chunk of zeros into the active segment's reservation, no sooner after the last
    /// than [`FileLogConfig::zero_ahead_bytes_per_sec`] allows.
    fn zero_ahead(&mut self, now: Instant) -> Result<Option<ZeroAhead>, LogError> {
        let rate = self.config.zero_ahead_bytes_per_sec;
        if rate == 0 || self.poisoned.is_some() {
            return Ok(None);
        }
        let pace = Duration::from_nanos(ZERO_AHEAD_CHUNK.saturating_mul(1_000_000_000) / rate);
        if self
            .zeroed_at
            .is_some_and(|at| now.saturating_duration_since(at) < pace)
        {
            return Ok(None);
        }
        let zeroed = self.active.zero_ahead(ZERO_AHEAD_LOW, ZERO_AHEAD_CHUNK)?;
        if zeroed.is_some() {
            self.zeroed_at = Some(now);
        }
        Ok(zeroed)
    }

    /// Kafka's ListOffsets answers with the first *record* whose timestamp is >= the target;
    /// records inside (possibly compressed) batches are not inspected here, so this returns the
    /// base offset and max timestamp of the first *batch* whose max timestamp is >= the target.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        for segment in self.segments() {
            if let Some(found) = segment.find_timestamp(timestamp)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Deletes later segments newest first, then cuts the boundary segment, so a crash midway
    /// leaves a contiguous prefix of the old log.
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if check_truncate_range(offset, self.log_start_offset(), self.log_end_offset())? {
            return Ok(());
        }
        let keep = self.segment_index(offset);
        let (position, header) = self.segment(keep).locate(offset)?;
        if header.base_offset != offset {
            return Err(LogError::NotBatchBoundary(offset));
        }
        while self.sealed.len() > keep {
            self.active.remove_files()?;
            if let Some(previous) = self.sealed.pop() {
                self.active = previous.with_direct_reads(&self.config.direct_reads);
            }
        }
        self.active.truncate(position)?;
        sync_dir(&self.dir)?;
        self.flushed_offset = self.flushed_offset.min(offset);
        Ok(())
    }

    /// Deletes every segment oldest first (each step leaves a contiguous suffix), then creates
    /// the empty active segment at `offset` and fsyncs the directory.
    fn reset_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset(),
                log_end: self.log_end_offset(),
            });
        }
        while let Some(oldest) = self.sealed.first() {
            oldest.remove_files()?;
            self.sealed.remove(0);
        }
        self.active.remove_files()?;
        let fresh = Segment::create(&self.dir, offset, self.config.index_interval_bytes)?
            .with_direct_reads(&self.config.direct_reads);
        // Dropped without writing index files: `Drop` writes only the active segment's.
        self.active = fresh;
        sync_dir(&self.dir)?;
        self.flushed_offset = offset;
        self.poisoned = None;
        Ok(())
    }

    fn retention_start(&self, now_ms: i64, policy: &RetentionPolicy, limit: i64) -> i64 {
        let mut total = self
            .segments()
            .fold(0u64, |sum, s| sum.saturating_add(s.size()));
        for s in &self.sealed {
            if s.next_offset() > limit
                || !expired(s.max_timestamp(), s.size(), total, now_ms, policy)
            {
                return s.base_offset();
            }
            total = total.saturating_sub(s.size());
        }
        self.active.base_offset()
    }

    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let before = self.sealed.len();
        while let Some(oldest) = self.sealed.first() {
            if oldest.next_offset() > offset {
                break;
            }
            oldest.remove_files()?;
            self.sealed.remove(0);
        }
        if self.sealed.len() != before {
            sync_dir(&self.dir)?;
        }
        Ok(self.log_start_offset())
    }

    /// Deletes the oldest sealed segments while [`expired`] says so; the active segment is
    /// never deleted.
    fn enforce_retention(
        &mut self,
        now_ms: i64,
        policy: &RetentionPolicy,
    ) -> Result<i64, LogError> {
        let mut total = self
            .segments()
            .fold(0u64, |sum, s| sum.saturating_add(s.size()));
        let deleted_before = self.sealed.len();
        while let Some(oldest) = self.sealed.first() {
            if !expired(oldest.max_timestamp(), oldest.size(), total, now_ms, policy) {
                break;
            }
            oldest.remove_files()?;
            total = total.saturating_sub(oldest.size());
            self.sealed.remove(0);
        }
        if self.sealed.len() != deleted_before {
            sync_dir(&self.dir)?;
        }
        Ok(self.log_start_offset())
    }

    fn disk_usage(&self) -> (usize, u64) {
        self.segments().fold((0, 0), |(n, bytes), s| {
            (n + 1, bytes.saturating_add(s.size()))
        })
    }
}

impl FileLog {
    /// Fsync the active segment and record that it was closed whole ([`CleanClose`]), so the
    /// next open skips validating every batch of it again.
    fn mark_clean(&self) -> Result<(), LogError> {
        self.active.sync_for_close()?.store(&self.dir)?;
        sync_dir(&self.dir)
    }
}

impl Drop for FileLog {
    /// A clean close: trim the active segment to its data, leave its indexes on disk too (best
    /// effort, unsynced: they are rebuilt on open anyway, but a complete directory is
    /// friendlier to tools), and, unless a failed write left stray bytes, mark the close clean.
    fn drop(&mut self) {
        self.active.trim_quietly();
        if let Err(e) = self.active.write_index_files(false) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "could not write active segment index");
        }
        if self.poisoned.is_none() {
            if let Err(e) = self.mark_clean() {
                tracing::debug!(dir = %self.dir.display(), error = %e, "could not mark the close clean");
            }
        }
    }
}

/// Base offsets of the `.log` files in `dir`, sorted; index files without a log are deleted.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let context = || format!("listing {}", dir.display());
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_context(context())(e))? {
        let name = entry.map_err(|e| io_context(context())(e))?.file_name();
        let Some((base, ext)) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        match ext {
            LOG_EXT => logs.push(base),
            INDEX_EXT | TIME_INDEX_EXT => indexes.push((base, ext)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, ext) in indexes {
        if logs.binary_search(&base).is_err() {
            remove_if_present(&segment_path(dir, base, ext))?;
        }
    }
    Ok(logs)
}

/// `00000000000000000042.log` -> `(42, "log")`.
fn parse_segment_name(name: &str) -> Option<(i64, &'static str)> {
    let (stem, ext) = name.split_once('.')?;
    let digits = stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit());
    let base = stem.parse::<i64>().ok().filter(|_| digits)?;
    [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT]
        .into_iter()
        .find(|e| *e == ext)
        .map(|e| (base, e))
}

/// Each segment must start where the previous one ended.
fn check_contiguous<'a>(segments: impl Iterator<Item = &'a Segment>) -> Result<(), LogError> {
    let mut previous: Option<&Segment> = None;
    for segment in segments {
        if let Some(p) = previous.filter(|p| p.next_offset() != segment.base_offset()) {
            return Err(LogError::Corrupt(format!(
                "segment {} ends at offset {} but the next one starts at {}",
                p.base_offset(),
                p.next_offset(),
                segment.base_offset()
            )));
        }
        previous = Some(segment);
    }
    Ok(())
}

/// fsync a directory so that file creations and deletions in it are durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let context = || format!("syncing directory {}", dir.display());
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_context(context())(e))
}
