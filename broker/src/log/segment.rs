//! One segment of a [`super::file::FileLog`]: a `.log` file of whole batches plus its indexes.
//!
//! A segment is either *sealed* (rolled: its data and index files were fsynced at roll time, so
//! the indexes may be trusted if they validate) or *active* (the last one: always rescanned
//! batch by batch with full CRC checks on open and cut at the first bad batch). Rescanning the
//! whole active segment costs one sequential read of at most `segment_bytes` per open; in
//! exchange no recovery checkpoint has to be kept in step with the data.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::common::{
    io_context, len_u64, next_offset, parse_header_prefix, to_usize, ActiveSegment, PreparedAppend,
};
use super::direct::{DirectReader, DirectReads, SegmentBytes};
use super::index::SegmentIndex;
use super::reader::{BatchReader, Peek};
use super::{FileSlice, LogError, Piece, TimestampOffset, ZeroAhead};
use crate::codec::batch::{self, BatchHeader, HEADER_LEN};

/// Extension of segment data files.
pub(crate) const LOG_EXT: &str = "log";
/// Extension of offset index files.
pub(crate) const INDEX_EXT: &str = "index";
/// Extension of time index files.
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";

/// The path of a segment file: the base offset zero-padded to 20 digits, as Kafka names them.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Where a reservation covering `end` stops: the next multiple of a step about as large as
/// `end` itself (a power of two from [`MIN_PREALLOCATE_STEP`] to [`PREALLOCATE_STEP`]).
fn preallocation_target(end: u64) -> u64 {
    let step = end
        .checked_next_power_of_two()
        .unwrap_or(PREALLOCATE_STEP)
        .clamp(MIN_PREALLOCATE_STEP, PREALLOCATE_STEP);
    end.div_ceil(step).saturating_mul(step)
}

/// How far ahead of the write position the active segment's blocks are reserved, at most.
pub(crate) const PREALLOCATE_STEP: u64 = 8 << 20;

/// The smallest reservation: a segment reserves about as much again as it already holds,
/// between this and [`PREALLOCATE_STEP`], so a partition that receives little keeps little
/// reserved (a thousand idle partitions at the full step would hold 8 GB of zeros).
pub(crate) const MIN_PREALLOCATE_STEP: u64 = 64 << 10;

/// Page cache is dropped behind the fsynced data in ranges of at least this many bytes (one
/// `posix_fadvise` per range, not one per group-commit round).
pub(crate) const CACHE_DROP_STEP: u64 = 4 << 20;

/// Ranges dropped start and end on page boundaries.
const CACHE_DROP_ALIGN: u64 = 4096;

/// Zeros written ahead of appends end on a multiple of this (the file system's block).
const ZERO_AHEAD_ALIGN: u64 = 4096;

/// How far past a read from a dropped range the kernel is asked to read ahead.
const PREFETCH_BYTES: u64 = 16 << 20;

/// A segment's file, in-memory index and extent.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: i64,
    next_offset: i64,
    /// Bytes of batches; the file may be longer (`allocated`), the rest reading as zeros.
    size: u64,
    /// The file's length: `size` plus blocks reserved ahead of appends (active segment only).
    allocated: u64,
    /// Cleared when the file system cannot preallocate.
    preallocate: bool,
    /// The file's blocks below this (and past `size`) were written with zeros ahead of
    /// appends ([`Segment::zero_ahead`]); past it, reserved blocks are still unwritten.
    zeroed: u64,
    file: Arc<File>,
    index: SegmentIndex,
    dir: PathBuf,
    path: PathBuf,
    /// The page cache of `[0, cache_dropped)` was (or is about to be) dropped after an fsync
    /// covered it: see [`Segment::plan_cache_drop`]. Atomic because plans are taken under the
    /// log's read side.
    cache_dropped: AtomicU64,
    /// Reads below `cache_dropped` (a consumer catching up) bypass the page cache; set on
    /// segments that become active ([`Segment::with_direct_reads`]), the only ones dropped.
    direct: Option<Arc<DirectReader>>,
}

/// What a batch-by-batch scan of a segment found.
struct Scan {
    index: SegmentIndex,
    next_offset: i64,
    /// Length of the prefix made of good, contiguous batches.
    valid_len: u64,
    /// Why the scan stopped before the end, if it did.
    problem: Option<String>,
}

/// What a clean close of a log made durable: its active segment (by base offset) holds
/// exactly `len` bytes of whole, fsynced batches. Stored in the partition directory
/// ([`CleanClose::FILE`]) at the close and removed, durably, when the log is opened again,
/// before anything is appended: so it never outlives the state it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanClose {
    pub base_offset: i64,
    pub len: u64,
}

impl CleanClose {
    /// The marker's file name in a partition directory.
    pub const FILE: &'static str = "clean-close";

    /// The marker's contents: `<base offset> <length>\n`.
    pub fn encode(&self) -> String {
        format!("{} {}\n", self.base_offset, self.len)
    }

    /// Parses [`CleanClose::encode`]'s text; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        let (base, len) = text.strip_suffix('\n')?.split_once(' ')?;
        Some(Self {
            base_offset: base.parse().ok()?,
            len: len.parse().ok()?,
        })
    }

    /// Writes the marker into `dir` (fsynced; the caller fsyncs the directory).
    pub fn store(&self, dir: &Path) -> Result<(), LogError> {
        write_file(&dir.join(Self::FILE), self.encode().as_bytes(), true)
    }

    /// Reads and removes the marker in `dir` (the caller fsyncs the directory before
    /// anything is appended); `None` if there was none or it does not parse.
    pub fn take(dir: &Path) -> Result<Option<Self>, LogError> {
        let path = dir.join(Self::FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_context(format!("reading {}", path.display()))(e)),
        };
        remove_if_present(&path)?;
        Ok(std::str::from_utf8(&text).ok().and_then(Self::decode))
    }
}

impl Segment {
    /// Create an empty segment file (replacing any stale file of that name and its indexes).
    pub fn create(dir: &Path, base_offset: i64, interval: u64) -> Result<Self, LogError> {
        remove_if_present(&segment_path(dir, base_offset, INDEX_EXT))?;
        remove_if_present(&segment_path(dir, base_offset, TIME_INDEX_EXT))?;
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_context(format!("creating {}", path.display())))?;
        let file = Arc::new(file);
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            allocated: 0,
            preallocate: true,
            zeroed: 0,
            direct: None,
            file,
            index: SegmentIndex::new(base_offset, interval),
            dir: dir.to_owned(),
            path,
            cache_dropped: AtomicU64::new(0),
        })
    }

    /// Open the last segment: scan it with full validation, cut it at the first torn, corrupt or
    /// discontiguous batch, and fsync what remains. `clean` is what a clean close recorded
    /// ([`CleanClose`]); when it names this segment at exactly its length, every byte was
    /// fsynced whole before the close, so the scan only walks the batch headers (rebuilding
    /// the indexes, checking contiguity) and skips the per-batch validation; anything amiss
    /// in that walk falls back to the full scan.
    pub fn open_active(
        dir: &Path,
        base_offset: i64,
        interval: u64,
        clean: Option<CleanClose>,
    ) -> Result<Self, LogError> {
        let (path, file, len) = open_existing(dir, base_offset)?;
        let trusted = clean == Some(CleanClose { base_offset, len });
        let mut found = scan(&file, &path, base_offset, interval, len, !trusted)?;
        if trusted && found.problem.is_some() {
            found = scan(&file, &path, base_offset, interval, len, true)?;
        }
        if let Some(problem) = &found.problem {
            if zero_filled_at(&file, found.valid_len, len)? {
                // Blocks reserved ahead of appends that were never written (or written and
                // not yet durable when the power went): nothing to report.
                tracing::debug!(path = %path.display(), at = found.valid_len, "cutting preallocated segment tail");
            } else {
                tracing::warn!(path = %path.display(), at = found.valid_len, %problem, "truncating torn segment tail");
            }
            file.set_len(found.valid_len)
                .map_err(io_context(format!("truncating {}", path.display())))?;
        }
        super::fault::sync(&file, true, found.valid_len)
            .map_err(io_context(format!("syncing {}", path.display())))?;
        Ok(Self::from_scan(dir, path, file, base_offset, found))
    }

    /// Open a sealed segment, trusting its index files if they validate and rebuilding (and
    /// rewriting) them otherwise. Bad data in a sealed segment is [`LogError::Corrupt`]: it was
    /// fsynced before the next segment existed, so it is damage, not a torn write.
    pub fn open_sealed(dir: &Path, base_offset: i64, interval: u64) -> Result<Self, LogError> {
        let (path, file, len) = open_existing(dir, base_offset)?;
        if let Some(index) = load_index(dir, base_offset, interval, len) {
            if let Some(next_offset) = check_tail(&file, &path, len, &index)? {
                let segment =
                    Self::from_parts(dir, path, file, base_offset, next_offset, len, index);
                return Ok(segment);
            }
        }
        tracing::info!(path = %path.display(), "rebuilding segment index");
        let scan = scan(&file, &path, base_offset, interval, len, true)?;
        if let Some(problem) = scan.problem {
            return Err(LogError::Corrupt(format!(
                "{} at byte {}: {problem}",
                path.display(),
                scan.valid_len
            )));
        }
        let mut segment = Self::from_scan(dir, path, file, base_offset, scan);
        segment.index.seal();
        segment.write_index_files(true)?;
        Ok(segment)
    }

    fn from_scan(dir: &Path, path: PathBuf, file: File, base_offset: i64, scan: Scan) -> Self {
        Self::from_parts(
            dir,
            path,
            file,
            base_offset,
            scan.next_offset,
            scan.valid_len,
            scan.index,
        )
    }

    fn from_parts(
        dir: &Path,
        path: PathBuf,
        file: File,
        base_offset: i64,
        next_offset: i64,
        size: u64,
        index: SegmentIndex,
    ) -> Self {
        let file = Arc::new(file);
        Self {
            base_offset,
            next_offset,
            size,
            allocated: size,
            preallocate: true,
            zeroed: size,
            direct: None,
            file,
            index,
            dir: dir.to_owned(),
            path,
            cache_dropped: AtomicU64::new(0),
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the segment's last batch (its base offset when empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.index.max_timestamp()
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Read what lies below the dropped page cache with `O_DIRECT`, on `reads`' memory
    /// (a segment that has a reader keeps it).
    pub fn with_direct_reads(mut self, reads: &DirectReads) -> Self {
        if self.direct.is_none() {
            self.direct = reads.reader(Arc::clone(&self.file));
        }
        self
    }

    /// Where reads of this segment's bytes go: below the dropped mark, to the `O_DIRECT`
    /// reader (which falls back to the file where it cannot serve them).
    fn bytes(&self) -> SegmentBytes<'_> {
        let dropped = self.cache_dropped.load(Ordering::Relaxed);
        SegmentBytes {
            file: &self.file,
            direct: self
                .direct
                .as_ref()
                .filter(|_| dropped > 0)
                .map(|d| (d, dropped)),
        }
    }

    /// A read of `[start, end)` that reaches below the part whose page cache was dropped
    /// (`plan_cache_drop`) asks the kernel to read it, and [`PREFETCH_BYTES`] beyond, ahead
    /// (`POSIX_FADV_WILLNEED`: asynchronous readahead): a consumer catching up from disk then
    /// finds its next fetches cached instead of waiting on the default small readahead.
    fn prefetch_dropped(&self, start: u64, end: u64) {
        let dropped = self.cache_dropped.load(Ordering::Relaxed);
        if start >= dropped {
            return;
        }
        let end = end.saturating_add(PREFETCH_BYTES).min(dropped);
        if let Some(len) = std::num::NonZeroU64::new(end.saturating_sub(start)) {
            // Advice only: refused, the read just waits for the disk.
            let _ =
                rustix::fs::fadvise(&*self.file, start, Some(len), rustix::fs::Advice::WillNeed);
        }
    }

    /// The part of the file whose page cache an fsync of the whole segment may drop, keeping
    /// the last `keep` bytes cached for readers at the tail: `(from, len)`, or `None` while
    /// less than [`CACHE_DROP_STEP`] more became droppable since the last plan. Each range is
    /// handed out once.
    pub fn plan_cache_drop(&self, keep: u64) -> Option<(u64, u64)> {
        let target = self.size.saturating_sub(keep) & !(CACHE_DROP_ALIGN - 1);
        let from = self.cache_dropped.load(Ordering::Relaxed);
        if target < from.saturating_add(CACHE_DROP_STEP) {
            return None;
        }
        self.cache_dropped
            .compare_exchange(from, target, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| (from, target - from))
    }

    /// What the roll rule needs to know.
    pub fn roll_facts(&self) -> ActiveSegment {
        ActiveSegment {
            base_offset: self.base_offset,
            size: self.size,
            first_timestamp: self.index.first_timestamp(),
        }
    }

    /// Write the prepared batches at the end with one positional write, then index them.
    /// Positional writes keep positions exact even if a failed write could not be rolled back.
    /// Blocks are reserved ahead of the write, never past `limit` (the segment size at which
    /// the log rolls) unless this append alone goes past it.
    pub fn append(&mut self, prepared: &PreparedAppend, limit: u64) -> Result<(), LogError> {
        self.preallocate_for(self.size.saturating_add(prepared.len_u64()), limit);
        let context = || {
            format!(
                "appending {} bytes to {}",
                prepared.bytes.len(),
                self.path.display()
            )
        };
        write_all_vectored_at(&self.file, &mut prepared.io_slices(), self.size)
            .map_err(|e| io_context(context())(e))?;
        for span in &prepared.batches {
            let position = self.size.saturating_add(len_u64(span.start));
            self.index.record_batch(
                position,
                span.base_offset,
                span.max_timestamp,
                len_u64(span.len),
            );
        }
        self.size = self.size.saturating_add(prepared.len_u64());
        self.next_offset = prepared.next_offset();
        Ok(())
    }

    /// Cut off whatever a failed append left past the known size; `false` if that failed too.
    pub fn roll_back_failed_append(&mut self) -> bool {
        self.trim().is_ok()
    }

    /// Reserve the file's blocks up to `end` and some way beyond (`fallocate(2)`, which also
    /// sets the length). Appending into reserved blocks spares each group-commit fsync a block
    /// allocation and a length change in the file system's journal: on this project's test VM
    /// (ext4) fdatasync after a 1 KiB append fell from p50 0.22 / p99 1.2–2.3 ms to
    /// 0.16 / 0.42 ms (BENCHMARKS.md). The step doubles with the data (see
    /// [`MIN_PREALLOCATE_STEP`]), so a busy segment soon reserves in full steps and an idle
    /// one stays small. Best effort: a file system that cannot do it is appended to as before.
    fn preallocate_for(&mut self, end: u64, limit: u64) {
        if !self.preallocate || end <= self.allocated {
            return;
        }
        let target = preallocation_target(end).min(limit.max(end));
        let len = target.saturating_sub(self.allocated);
        match rustix::fs::fallocate(
            &*self.file,
            rustix::fs::FallocateFlags::empty(),
            self.allocated,
            len,
        ) {
            Ok(()) => self.allocated = target,
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                self.preallocate = false;
            }
            // Out of space, say: the write itself reports what matters.
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "could not preallocate")
            }
        }
    }

    /// Once fewer than `low` bytes of zeros lie past the data, write zeros over up to `chunk`
    /// more bytes of the blocks reserved past it (never past the reservation), ending on a
    /// block boundary. Returns the zeros to fsync (outside the log's lock), or `None` when
    /// there is nothing to do.
    ///
    /// Why: on ext4 a reserved block is unwritten until data lands in it, and the fsync
    /// after that first write must also write the inode (or extent block) that marks it
    /// written. Zeros written and fsynced here, off the request path, leave the rounds
    /// that follow a plain data write. They pay only in large whole-block chunks: topped up
    /// a few KiB at a time, each top-up would mark one more block written, one metadata
    /// write per block, as many as appends into reserved blocks would have caused
    /// (BENCHMARKS.md, "Zeros ahead in whole chunks"). Zeros past the data read the same as
    /// unwritten blocks, so recovery (which cuts a zero-filled tail) sees no difference.
    pub fn zero_ahead(&mut self, low: u64, chunk: u64) -> Result<Option<ZeroAhead>, LogError> {
        if !self.preallocate || self.zeroed.saturating_sub(self.size) >= low {
            return Ok(None);
        }
        let from = self.zeroed.max(self.size);
        let end = from
            .saturating_add(chunk)
            .checked_next_multiple_of(ZERO_AHEAD_ALIGN)
            .unwrap_or(u64::MAX)
            .min(self.allocated);
        if end <= from {
            return Ok(None);
        }
        write_zeros_at(&self.file, from, end - from).map_err(io_context(format!(
            "writing zeros ahead of appends to {} at {from}",
            self.path.display()
        )))?;
        self.zeroed = end;
        Ok(Some(ZeroAhead::new(Arc::clone(&self.file), self.size, end)))
    }

    /// Give back blocks reserved past the data, so the file's length is its size again.
    fn trim(&mut self) -> io::Result<()> {
        self.file.set_len(self.size)?;
        self.allocated = self.size;
        self.zeroed = self.zeroed.min(self.size);
        Ok(())
    }

    /// For a clean close: fsync the data (and the file's length), and say what was made
    /// durable, for [`Segment::open_active`] to trust on the next open.
    pub fn sync_for_close(&self) -> Result<CleanClose, LogError> {
        super::fault::sync(&self.file, true, self.size)
            .map_err(io_context(format!("syncing {}", self.path.display())))?;
        Ok(CleanClose {
            base_offset: self.base_offset,
            len: self.size,
        })
    }

    /// Best effort at shutdown: leave the file exactly as long as its data.
    pub fn trim_quietly(&mut self) {
        if self.allocated > self.size {
            if let Err(e) = self.trim() {
                tracing::debug!(path = %self.path.display(), error = %e, "could not trim preallocated space");
            }
        }
    }

    /// Position and header of the batch holding `offset` (which must be in this segment).
    pub fn locate(&self, offset: i64) -> Result<(u64, BatchHeader), LogError> {
        let start = self.index.scan_start(offset);
        let mut reader = BatchReader::over(self.bytes(), &self.path, start.position, self.size);
        let mut expected = start.offset;
        loop {
            let header = match reader.peek()? {
                Peek::Batch(h) => h,
                Peek::End => {
                    return Err(
                        self.corrupt(reader.position(), &format!("offset {offset} not found"))
                    )
                }
                Peek::Bad(reason) => return Err(self.corrupt(reader.position(), &reason)),
            };
            let next = next_offset(&header).filter(|_| header.base_offset == expected);
            let Some(next) = next else {
                let why = format!(
                    "found base offset {} where {expected} was expected",
                    header.base_offset
                );
                return Err(self.corrupt(reader.position(), &why));
            };
            if next > offset {
                return Ok((reader.position(), header));
            }
            expected = next;
            reader.advance(header.total_len());
        }
    }

    /// Where the whole batches from `start` lie in the file (the first, `first_len` long,
    /// always; then as many as fit in `budget` bytes, each with a base offset below
    /// `max_offset`), found without reading them: the offset index gives a batch start near
    /// the byte budget's end, and only the batch headers from there on are read. Returns the
    /// pieces (a file slice; below the dropped mark, bytes read with `O_DIRECT`) and whether
    /// they reach the end of the segment.
    pub fn slice(
        &self,
        start: u64,
        first_len: usize,
        budget: usize,
        max_offset: i64,
    ) -> Result<(Vec<Piece>, bool), LogError> {
        let limit = self
            .index
            .position_bound(max_offset)
            .unwrap_or(self.size)
            .min(self.size);
        let want_end = start
            .saturating_add(len_u64(budget.max(first_len)))
            .min(limit);
        let source = self.bytes();
        let direct = source
            .direct
            .filter(|(d, dropped)| start < *dropped && d.available());
        if direct.is_none() {
            self.prefetch_dropped(start, want_end);
        }
        // Every batch before an indexed start whose base offset is below `max_offset` is
        // below it too, so the walk can begin there.
        let mut pos = match self.index.scan_start_before(want_end, max_offset) {
            Some(s) if s.position > start => s.position,
            _ => start,
        };
        let mut window = HeaderWindow::default();
        while pos.saturating_add(len_u64(HEADER_LEN)) <= want_end {
            let raw = window
                .header_at(source, pos, want_end)
                .map_err(io_context(format!(
                    "reading {} at {pos}",
                    self.path.display()
                )))?;
            let header = parse_header_prefix(raw).map_err(|e| self.corrupt(pos, &e.to_string()))?;
            let end = pos.saturating_add(len_u64(header.total_len()));
            if header.base_offset >= max_offset || end > want_end {
                break;
            }
            pos = end;
        }
        let reached_end = pos == self.size;
        if let Some((reader, dropped)) = direct {
            let read = reader
                .slices(start, pos, dropped)
                .map_err(io_context(format!(
                    "reading {} at {start} (O_DIRECT)",
                    self.path.display()
                )))?;
            if let Some(slices) = read {
                return Ok((slices.into_iter().map(Piece::Bytes).collect(), reached_end));
            }
        }
        let slice = FileSlice {
            file: Arc::clone(&self.file),
            position: start,
            len: to_usize(pos.saturating_sub(start))?,
        };
        Ok((vec![Piece::File(slice)], reached_end))
    }

    /// The first batch whose max timestamp is >= `timestamp`, if this segment has one.
    pub fn find_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError> {
        if self.index.max_timestamp().is_none_or(|max| max < timestamp) {
            return Ok(None);
        }
        let start = self.index.time_scan_start(timestamp);
        let mut reader = BatchReader::new(&self.file, &self.path, start.position, self.size);
        loop {
            match reader.peek()? {
                Peek::Batch(h) if h.max_timestamp >= timestamp => {
                    return Ok(Some(TimestampOffset {
                        offset: h.base_offset,
                        timestamp: h.max_timestamp,
                    }));
                }
                Peek::Batch(h) => reader.advance(h.total_len()),
                Peek::End => return Ok(None),
                Peek::Bad(reason) => return Err(self.corrupt(reader.position(), &reason)),
            }
        }
    }

    /// Cut the segment at `position` (a batch boundary), fsync, and rebuild its index.
    pub fn truncate(&mut self, position: u64) -> Result<(), LogError> {
        let context = format!("truncating {} to {position}", self.path.display());
        // What lies past the cut will be written again: it is neither dropped nor cached.
        self.cache_dropped
            .fetch_min(position & !(CACHE_DROP_ALIGN - 1), Ordering::Relaxed);
        if let Some(direct) = &self.direct {
            direct.forget_from(position);
        }
        self.file
            .set_len(position)
            .map_err(io_context(context.clone()))?;
        self.allocated = position;
        self.zeroed = self.zeroed.min(position);
        super::fault::sync(&self.file, true, position).map_err(io_context(context))?;
        let interval = self.index_interval();
        let scan = scan(
            &self.file,
            &self.path,
            self.base_offset,
            interval,
            position,
            false,
        )?;
        if let Some(problem) = scan.problem {
            return Err(self.corrupt(scan.valid_len, &problem));
        }
        self.size = position;
        self.next_offset = scan.next_offset;
        self.index = scan.index;
        Ok(())
    }

    fn index_interval(&self) -> u64 {
        self.index.interval()
    }

    /// Make the segment immutable: fsync its data, add the final time index entry, and write
    /// and fsync both index files.
    /// Sealed segment files are exactly as long as their data (`open_sealed` relies on it).
    pub fn seal(&mut self) -> Result<(), LogError> {
        self.trim()
            .map_err(io_context(format!("trimming {}", self.path.display())))?;
        super::fault::sync(&self.file, true, self.size)
            .map_err(io_context(format!("syncing {}", self.path.display())))?;
        self.index.seal();
        self.write_index_files(true)
    }

    /// Persist both indexes (fsynced when `sync`).
    pub fn write_index_files(&self, sync: bool) -> Result<(), LogError> {
        write_file(
            &segment_path(&self.dir, self.base_offset, INDEX_EXT),
            &self.index.encode_offsets(),
            sync,
        )?;
        write_file(
            &segment_path(&self.dir, self.base_offset, TIME_INDEX_EXT),
            &self.index.encode_times(),
            sync,
        )
    }

    /// Delete the segment's files, indexes first so that no index outlives its data.
    pub fn remove_files(&self) -> Result<(), LogError> {
        remove_if_present(&segment_path(&self.dir, self.base_offset, INDEX_EXT))?;
        remove_if_present(&segment_path(&self.dir, self.base_offset, TIME_INDEX_EXT))?;
        remove_if_present(&self.path)
    }

    fn corrupt(&self, position: u64, why: &str) -> LogError {
        LogError::Corrupt(format!("{} at byte {position}: {why}", self.path.display()))
    }
}

/// Batch headers read ahead in one buffer, so walking many small batches costs one `pread`
/// per 64 KiB rather than one per batch.
#[derive(Default)]
struct HeaderWindow {
    at: u64,
    bytes: Vec<u8>,
}

impl HeaderWindow {
    const SPAN: u64 = 64 * 1024;

    /// The [`HEADER_LEN`] bytes at `pos` (`pos + HEADER_LEN <= end`), reading from `pos` up to
    /// `end` (at most [`Self::SPAN`]) when the window does not hold them.
    fn header_at(&mut self, source: SegmentBytes<'_>, pos: u64, end: u64) -> io::Result<&[u8]> {
        let held = pos >= self.at
            && pos.saturating_add(len_u64(HEADER_LEN))
                <= self.at.saturating_add(len_u64(self.bytes.len()));
        if !held {
            self.bytes.clear();
            self.at = pos;
            let want = end.saturating_sub(pos).min(Self::SPAN);
            let want = usize::try_from(want).unwrap_or(HEADER_LEN).max(HEADER_LEN);
            source.read_append(&mut self.bytes, want, pos)?;
        }
        let from = usize::try_from(pos.saturating_sub(self.at)).unwrap_or(usize::MAX);
        self.bytes
            .get(from..)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

/// Whether the bytes at `position` (a batch header's worth, or up to `len`) are all zero: the
/// look of reserved blocks that were never written.
fn zero_filled_at(file: &File, position: u64, len: u64) -> Result<bool, LogError> {
    let want = to_usize(len.saturating_sub(position))?.min(HEADER_LEN);
    let mut buf = vec![0u8; want];
    file.read_exact_at(&mut buf, position)
        .map_err(io_context(format!("reading segment tail at {position}")))?;
    Ok(buf.iter().all(|&b| b == 0))
}

/// Write `len` zero bytes at `position`.
fn write_zeros_at(file: &File, position: u64, len: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = position;
    let end = position.saturating_add(len);
    while at < end {
        let n = usize::try_from(end - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..n], at)?;
        at = at.saturating_add(len_u64(n));
    }
    Ok(())
}

/// Open an existing segment file for reading and writing; returns its path and length.
fn open_existing(dir: &Path, base_offset: i64) -> Result<(PathBuf, File, u64), LogError> {
    let path = segment_path(dir, base_offset, LOG_EXT);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_context(format!("opening {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_context(format!(
            "reading metadata of {}",
            path.display()
        )))?
        .len();
    Ok((path, file, len))
}

/// Walk `[0, end)` batch by batch (with full validation when `verify`), checking that base
/// offsets are contiguous from `base_offset`, and index what is good.
fn scan(
    file: &File,
    path: &Path,
    base_offset: i64,
    interval: u64,
    end: u64,
    verify: bool,
) -> Result<Scan, LogError> {
    let mut index = SegmentIndex::new(base_offset, interval);
    let mut next = base_offset;
    let mut reader = BatchReader::new(file, path, 0, end);
    let problem = loop {
        let header = match reader.peek()? {
            Peek::End => break None,
            Peek::Bad(reason) => break Some(reason),
            Peek::Batch(h) => h,
        };
        let len = header.total_len();
        if verify {
            if let Err(e) = batch::validate(reader.batch_bytes(len)?) {
                break Some(e.to_string());
            }
        }
        if header.base_offset != next {
            break Some(format!(
                "base offset {} where {next} was expected",
                header.base_offset
            ));
        }
        let Some(after) = next_offset(&header) else {
            break Some(format!(
                "bad last offset delta {}",
                header.last_offset_delta
            ));
        };
        index.record_batch(
            reader.position(),
            header.base_offset,
            header.max_timestamp,
            len_u64(len),
        );
        next = after;
        reader.advance(len);
    };
    Ok(Scan {
        index,
        next_offset: next,
        valid_len: reader.position(),
        problem,
    })
}

/// Read and validate a sealed segment's persisted indexes; `None` if missing or damaged.
fn load_index(dir: &Path, base_offset: i64, interval: u64, len: u64) -> Option<SegmentIndex> {
    let offsets = fs::read(segment_path(dir, base_offset, INDEX_EXT)).ok()?;
    let times = fs::read(segment_path(dir, base_offset, TIME_INDEX_EXT)).ok()?;
    SegmentIndex::decode(base_offset, interval, &offsets, &times, len)
}

/// Check a loaded index against the data: the last entry must point at the batch it names, the
/// batches after it must be contiguous up to the end, and none of them may be one that should
/// have had an entry (which catches index files that lost trailing entries). Returns the
/// segment's next offset, or `None` if the index does not match and must be rebuilt.
fn check_tail(
    file: &File,
    path: &Path,
    len: u64,
    index: &SegmentIndex,
) -> Result<Option<i64>, LogError> {
    let start = index.last_entry();
    let mut reader = BatchReader::new(file, path, start.position, len);
    let mut expected = start.offset;
    let mut since_entry = 0u64;
    let mut last_batch = None;
    let mut tail_max = None::<i64>;
    loop {
        let header = match reader.peek()? {
            Peek::End => break,
            Peek::Bad(_) => return Ok(None),
            Peek::Batch(h) => h,
        };
        let Some(next) = next_offset(&header).filter(|_| header.base_offset == expected) else {
            return Ok(None);
        };
        let is_entry_batch = last_batch.is_none() && index.has_offset_entries();
        if since_entry >= index.interval() && !is_entry_batch {
            if index.can_index(reader.position(), header.base_offset) {
                return Ok(None);
            }
            since_entry = 0;
        }
        since_entry = since_entry.saturating_add(len_u64(header.total_len()));
        last_batch = Some(header.base_offset);
        tail_max = Some(tail_max.map_or(header.max_timestamp, |m| m.max(header.max_timestamp)));
        expected = next;
        reader.advance(header.total_len());
    }
    // A sealed time index ends with the segment's overall maximum; a later batch with a larger
    // timestamp means these are not the files written at seal time.
    let max_covered = match (tail_max, index.max_timestamp()) {
        (Some(tail), Some(max)) => tail <= max,
        (Some(_), None) => false,
        (None, _) => true,
    };
    Ok((max_covered && index.times_consistent(last_batch)).then_some(expected))
}

/// Write `bytes` to `path`, replacing it, and fsync when asked.
fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<(), LogError> {
    let context = || format!("writing {}", path.display());
    let file = File::create(path).map_err(|e| io_context(context())(e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| io_context(context())(e))?;
    if sync {
        file.sync_all().map_err(|e| io_context(context())(e))?;
    }
    Ok(())
}

/// Delete a file; a file that is already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(io_context(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}
/// Append exactly `len` bytes of `file` from `offset` to `out`, reading into its spare capacity
/// (no zero-fill first: fetch reads are large). On error `out` may hold part of the bytes.
pub(crate) fn pread_append(
    file: &File,
    out: &mut Vec<u8>,
    len: usize,
    offset: u64,
) -> io::Result<()> {
    let target = out.len().saturating_add(len);
    out.reserve_exact(len);
    let mut at = offset;
    while out.len() < target {
        // The spare capacity may exceed what is wanted; the excess is cut off below.
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(out), at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        at = at.saturating_add(len_u64(n));
    }
    out.truncate(target);
    Ok(())
}

/// Most iovecs one `pwritev` takes (Linux `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Write all of `slices` at `position` with `pwritev(2)`, resuming after short writes; the
/// slices are consumed.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [io::IoSlice<'_>],
    mut position: u64,
) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut slices, 0); // drop leading empty slices
    while !slices.is_empty() {
        let batch = &slices[..slices.len().min(MAX_IOVECS)];
        match rustix::io::pwritev(file, batch, position) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ))
            }
            Ok(n) => {
                position = position.saturating_add(len_u64(n));
                io::IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More slices than one `pwritev` takes, empty ones among them, at a non-zero position:
    /// the file holds exactly their concatenation there.
    #[test]
    fn vectored_write_covers_every_slice_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("v"))
            .unwrap();
        let pieces: Vec<Vec<u8>> = (0..3 * MAX_IOVECS + 7)
            .map(|i| vec![u8::try_from(i % 251).unwrap(); i % 5])
            .collect();
        let mut slices: Vec<io::IoSlice<'_>> = pieces.iter().map(|p| io::IoSlice::new(p)).collect();
        write_all_vectored_at(&file, &mut slices, 3).unwrap();
        let written = fs::read(dir.path().join("v")).unwrap();
        assert_eq!(&written[..3], &[0, 0, 0]);
        assert_eq!(&written[3..], &pieces.concat()[..]);
    }

    /// A small segment reserves little, a growing one about its own size again, a large one
    /// whole steps; a reservation always covers the write it is made for.
    #[test]
    fn reservations_grow_with_the_segment() {
        assert_eq!(preallocation_target(1), MIN_PREALLOCATE_STEP);
        assert_eq!(
            preallocation_target(MIN_PREALLOCATE_STEP),
            MIN_PREALLOCATE_STEP
        );
        assert_eq!(preallocation_target(100 << 10), 128 << 10);
        assert_eq!(preallocation_target((128 << 10) + 1), 256 << 10);
        assert_eq!(preallocation_target((5 << 20) + 1), 8 << 20);
        assert_eq!(preallocation_target((8 << 20) + 1), 16 << 20);
        assert_eq!(preallocation_target((40 << 20) + 1), 48 << 20);
        for end in [0, 1, 4095, 65_537, 3 << 20, (1 << 30) + 7, u64::MAX / 2] {
            let target = preallocation_target(end);
            assert!(target >= end, "{end} -> {target}");
            assert!(
                target - end <= end.max(MIN_PREALLOCATE_STEP),
                "{end} -> {target}"
            );
            assert!(target - end <= PREALLOCATE_STEP, "{end} -> {target}");
        }
    }
}
