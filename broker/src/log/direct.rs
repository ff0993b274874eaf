//! Reads of the part of a segment whose page cache was dropped: `O_DIRECT` into memory the
//! broker owns, in aligned chunks, the chunks after the one read loaded ahead on blocking
//! threads.
//!
//! Drop-behind (ARCHITECTURE.md) releases an active segment's page cache once an fsync covered
//! it, so appends reuse memory instead of taking fresh page-cache pages. A consumer catching
//! up reads what was released. Through the page cache every page would be taken fresh again
//! (on the VMs measured that cost ~1 CPU-s per 1.5 GB, more than the rest of the Fetch path);
//! `O_DIRECT` lets the disk write into a buffer here, and the Fetch sends slices of it.
//!
//! What is cached never changes: only `[0, limit)` is read, `limit` being the segment's dropped
//! mark, which lies below data already appended. A truncation (Raft) calls
//! [`DirectReader::forget_from`], which drops every chunk reaching past the cut and makes a
//! read already in flight discard what it read.
//!
//! Where the file system refuses `O_DIRECT` (the reopen or a read fails with `EINVAL`), the
//! reader says so once and every later call answers `None`: the caller reads through the page
//! cache as before.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};

use bytes::Bytes;

use super::common::len_u64;

/// Bytes per chunk: one read, and the unit of what is cached and read ahead.
pub(crate) const CHUNK: u64 = 4 << 20;

/// Alignment of `O_DIRECT` positions, lengths and buffers (a page: more than any logical
/// block size Linux file systems use).
const ALIGN: u64 = 4096;

/// Chunks read ahead of the one being read, concurrently, by a stream that has just started
/// (or jumped): a catching-up consumer read 12 % faster with four 4 MiB reads in flight than
/// with two 2 MiB ones (BENCHMARKS.md).
const READ_AHEAD: u64 = 4;

/// Most chunks a stream reads ahead: its window doubles each time it moves on to the next
/// chunk, from [`READ_AHEAD`] up to this, as the kernel's read-ahead grows for a sequential
/// reader. The chunks past the first [`READ_AHEAD`] come only from budget no other reader
/// needs ([`Budget::take_spare`]): growing never makes another reader give way.
const MAX_READ_AHEAD: u64 = 16;

/// Forward-reading streams tracked per segment: consumers at different positions of one
/// partition share its segments' readers, and each keeps its own window; a new one takes the
/// place of the one used longest ago.
const MAX_STREAMS: usize = 4;

/// Longest a reader waits for a read-ahead of the chunk it wants before reading it itself.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Memory for `O_DIRECT` reads, shared by every segment it is given to (one per broker): a
/// chunk is cached only while the chunks cached stay within the budget; when a new one does
/// not fit, the chunks of the reader used longest ago are dropped first, and if it still does
/// not fit the read goes through the page cache. Off: every read goes through the page cache.
#[derive(Clone, Debug)]
pub struct DirectReads(Option<Arc<Budget>>);

impl DirectReads {
    /// Least budget that lets one reader work: the chunk it reads and those read ahead.
    pub const MIN_BYTES: u64 = (1 + READ_AHEAD) * CHUNK;

    /// A budget of `bytes` (below [`Self::MIN_BYTES`]: off).
    pub fn with_budget(bytes: u64) -> Self {
        Self((bytes >= Self::MIN_BYTES).then(|| {
            Arc::new(Budget {
                cap: bytes,
                used: AtomicU64::new(0),
                tick: AtomicU64::new(0),
                readers: Mutex::new(Vec::new()),
                free: Mutex::new(Vec::new()),
            })
        }))
    }

    /// Bytes of chunks cached now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |b| b.used.load(Ordering::Relaxed))
    }

    /// A reader of `source` drawing on this budget (`None` when off).
    pub(crate) fn reader(&self, source: Arc<File>) -> Option<Arc<DirectReader>> {
        let budget = self.0.as_ref()?;
        let reader = Arc::new(DirectReader {
            source,
            budget: Arc::clone(budget),
            direct: OnceLock::new(),
            state: Mutex::new(State::default()),
            loaded: Condvar::new(),
        });
        let mut readers = lock(&budget.readers);
        readers.retain(|r| r.strong_count() > 0);
        readers.push(Arc::downgrade(&reader));
        Some(reader)
    }
}

/// Two handles are equal when they share one budget (or are both off).
impl PartialEq for DirectReads {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for DirectReads {}

#[derive(Debug)]
struct Budget {
    cap: u64,
    /// Bytes of the chunks alive (cached, or held by a read in progress).
    used: AtomicU64,
    /// Use counter: which reader was used longest ago.
    tick: AtomicU64,
    /// Every reader drawing on the budget (dead ones pruned as readers come).
    readers: Mutex<Vec<Weak<DirectReader>>>,
    /// Chunk buffers no longer referenced, kept for the next read (at most as many as chunks
    /// fit in `cap`): memory the kernel has to find and zero afresh for every chunk is what made
    /// the first version of these reads slower than the page cache (BENCHMARKS.md).
    free: Mutex<Vec<Vec<u8>>>,
}

impl Budget {
    /// A buffer for one chunk: a free one, or a new one.
    fn buffer(&self) -> Vec<u8> {
        lock(&self.free).pop().unwrap_or_default()
    }

    /// Keep `buf` for reuse unless as many buffers as chunks fit in `cap` are kept already.
    fn give_back(&self, buf: Vec<u8>) {
        let mut free = lock(&self.free);
        if len_u64(free.len()) < self.cap / CHUNK {
            free.push(buf);
        }
    }

    /// Reserve `bytes`, dropping the chunks of the readers used longest ago until they fit.
    /// Never called with a reader's state locked (eviction locks readers' states).
    fn take(self: &Arc<Self>, bytes: u64) -> Option<Arc<Charge>> {
        loop {
            if let Some(charge) = self.reserve(bytes, self.cap) {
                return Some(charge);
            }
            if !self.evict_least_recent() {
                return None;
            }
        }
    }

    /// Reserve `bytes` only if [`DirectReads::MIN_BYTES`] stay free after it (room for one
    /// more reader to start without evicting anyone); never evicts.
    fn take_spare(self: &Arc<Self>, bytes: u64) -> Option<Arc<Charge>> {
        self.reserve(bytes, self.cap.saturating_sub(DirectReads::MIN_BYTES))
    }

    fn reserve(self: &Arc<Self>, bytes: u64, up_to: u64) -> Option<Arc<Charge>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= up_to)
            })
            .ok()?;
        Some(Arc::new(Charge {
            budget: Arc::clone(self),
            bytes,
        }))
    }

    /// Drop the chunks of the reader used longest ago that has any; false when none has.
    fn evict_least_recent(&self) -> bool {
        let readers: Vec<Arc<DirectReader>> = {
            let mut readers = lock(&self.readers);
            readers.retain(|r| r.strong_count() > 0);
            readers.iter().filter_map(Weak::upgrade).collect()
        };
        let victim = readers
            .iter()
            .filter_map(|r| {
                let state = r.lock();
                (!state.chunks.is_empty()).then_some((state.last_used, r))
            })
            .min_by_key(|(used, _)| *used);
        match victim {
            Some((_, reader)) => {
                reader.lock().chunks.clear();
                true
            }
            None => false,
        }
    }
}

/// Bytes counted against a [`Budget`] while a chunk is alive.
#[derive(Debug)]
struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves only a cache behind: keep using it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `O_DIRECT` side of one segment file.
#[derive(Debug)]
pub(crate) struct DirectReader {
    /// The segment's own (buffered) file, reopened with `O_DIRECT` on first use.
    source: Arc<File>,
    budget: Arc<Budget>,
    direct: OnceLock<Option<File>>,
    state: Mutex<State>,
    /// Signalled when a read-ahead ends.
    loaded: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Sorted by start; only chunks some stream wants ([`wanted`]) are kept.
    chunks: Vec<Chunk>,
    /// At most [`MAX_STREAMS`].
    streams: Vec<Stream>,
    /// Starts of the chunks read-aheads are loading.
    loading: Vec<u64>,
    /// Bumped by every truncation: a read that began before it must not be cached.
    generation: u64,
    /// `O_DIRECT` was refused: the caller reads through the page cache.
    refused: bool,
    /// The budget's use counter when this reader was last asked for a chunk.
    last_used: u64,
}

/// One reader moving forward through the segment.
#[derive(Clone, Copy, Debug)]
struct Stream {
    /// Start of the chunk it read last.
    at: u64,
    /// Chunks it reads ahead of `at`.
    ahead: u64,
    /// The budget's use counter when it was last asked for a chunk.
    used: u64,
}

impl State {
    /// A read of the chunk at `start` (its position, a multiple of [`CHUNK`]), the budget's use
    /// counter being `tick`: the stream it continues, or a new one. Answers how many chunks
    /// to read ahead of it, and drops the cached chunks no stream wants any more.
    fn follow(&mut self, start: u64, tick: u64) -> u64 {
        if let Some(s) = self.streams.iter_mut().find(|s| s.at == start) {
            s.used = tick;
            return s.ahead;
        }
        let ahead = if let Some(s) = self
            .streams
            .iter_mut()
            .find(|s| s.at.checked_add(CHUNK) == Some(start))
        {
            *s = Stream {
                at: start,
                ahead: s.ahead.saturating_mul(2).min(MAX_READ_AHEAD),
                used: tick,
            };
            s.ahead
        } else {
            let fresh = Stream {
                at: start,
                ahead: READ_AHEAD,
                used: tick,
            };
            if self.streams.len() < MAX_STREAMS {
                self.streams.push(fresh);
            } else if let Some(oldest) = self.streams.iter_mut().min_by_key(|s| s.used) {
                *oldest = fresh;
            }
            READ_AHEAD
        };
        let streams = &self.streams;
        self.chunks.retain(|c| wanted(streams, c.start));
        ahead
    }
}

/// Whether a chunk starting at `start` is one a stream reads now or ahead.
fn wanted(streams: &[Stream], start: u64) -> bool {
    streams.iter().any(|s| {
        start
            .checked_sub(s.at)
            .is_some_and(|past| past <= s.ahead.saturating_mul(CHUNK))
    })
}

/// Bytes `[start, start + bytes.len())` of the file.
#[derive(Clone)]
struct Chunk {
    start: u64,
    bytes: Bytes,
    /// Released when the last copy of the chunk is dropped.
    _charge: Arc<Charge>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk[{}, {})", self.start, self.end())
    }
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start.saturating_add(len_u64(self.bytes.len()))
    }

    /// `[start, end)` of the file, as a slice of this chunk's bytes, when the chunk holds it.
    fn range(&self, start: u64, end: u64) -> Option<Bytes> {
        if start < self.start || end > self.end() || start > end {
            return None;
        }
        let from = usize::try_from(start - self.start).ok()?;
        let to = usize::try_from(end - self.start).ok()?;
        Some(self.bytes.slice(from..to))
    }
}

impl DirectReader {
    /// `[start, end)` of the file as slices of chunks (in order, together exactly that range),
    /// or `None` when `O_DIRECT` is not available or the range does not lie below
    /// `limit` rounded down to [`ALIGN`]. Chunks the range reads to the end of are dropped from
    /// the cache: a consumer catching up reads forward, and a segment read to its end keeps
    /// nothing (chunks wholly before the range stay: another stream may be reading them).
    pub fn slices(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        limit: u64,
    ) -> io::Result<Option<Vec<Bytes>>> {
        if start >= end {
            return Ok(None);
        }
        let Some(out) = self.pieces(start, end, limit)? else {
            return Ok(None);
        };
        self.lock()
            .chunks
            .retain(|c| c.end() > end || c.end() <= start);
        Ok(Some(out))
    }

    /// Fill `buf` with the bytes at `position`: `Some(())`, or `None` as for
    /// [`DirectReader::slices`].
    pub fn copy_at(
        self: &Arc<Self>,
        buf: &mut [u8],
        position: u64,
        limit: u64,
    ) -> io::Result<Option<()>> {
        let end = position.saturating_add(len_u64(buf.len()));
        let Some(pieces) = self.pieces(position, end, limit)? else {
            return Ok(None);
        };
        let mut filled = 0usize;
        for bytes in pieces {
            let Some(dest) = buf.get_mut(filled..filled.saturating_add(bytes.len())) else {
                return Ok(None);
            };
            dest.copy_from_slice(&bytes);
            filled = filled.saturating_add(bytes.len());
        }
        Ok((filled == buf.len()).then_some(()))
    }

    /// `[start, end)` as slices of chunks, or `None` (see [`DirectReader::slices`]).
    fn pieces(
        self: &Arc<Self>,
        start: u64,
        end: u64,
        limit: u64,
    ) -> io::Result<Option<Vec<Bytes>>> {
        let limit = align_down(limit);
        if end > limit {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut at = start;
        while at < end {
            let Some(chunk) = self.chunk_at(at, limit)? else {
                return Ok(None);
            };
            let stop = chunk.end().min(end);
            let Some(bytes) = chunk.range(at, stop) else {
                return Ok(None);
            };
            out.push(bytes);
            at = stop;
        }
        Ok(Some(out))
    }

    /// Whether `O_DIRECT` reads may still be tried (not refused yet).
    pub fn available(&self) -> bool {
        !self.lock().refused
    }

    /// The file is cut at `position`: forget every chunk reaching past it, and make reads in
    /// flight drop what they read.
    pub fn forget_from(&self, position: u64) {
        let mut state = self.lock();
        state.generation = state.generation.wrapping_add(1);
        state.chunks.retain(|c| c.end() <= position);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The chunk holding `position` (`position < limit`, `limit` aligned): cached, or being
    /// read ahead (waited for), or read now. The chunks after it are then read ahead, as many
    /// as the stream reading it has come to ([`State::follow`]).
    fn chunk_at(self: &Arc<Self>, position: u64, limit: u64) -> io::Result<Option<Chunk>> {
        let start = position - position % CHUNK;
        let tick = self.budget.tick.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        state.last_used = tick;
        let ahead = state.follow(start, tick);
        loop {
            if state.refused {
                return Ok(None);
            }
            let cached = state
                .chunks
                .iter()
                .find(|c| c.start == start && c.end() > position)
                .cloned();
            if let Some(chunk) = cached {
                drop(state);
                self.read_ahead(chunk.end(), limit, ahead);
                return Ok(Some(chunk));
            }
            if !state.loading.contains(&start) {
                break;
            }
            // Bounded: a read-ahead that never ran (its runtime shut down) clears `loading`
            // when dropped, but never wait on another thread for long.
            let (next, _) = self
                .loaded
                .wait_timeout(state, LOAD_WAIT)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if state.loading.contains(&start) {
                break;
            }
        }
        let generation = state.generation;
        drop(state);
        let end = start.saturating_add(CHUNK).min(limit);
        let Some(charge) = self.budget.take(end.saturating_sub(start)) else {
            return Ok(None);
        };
        let Some(chunk) = self.load(start, end, generation, charge)? else {
            return Ok(None);
        };
        self.read_ahead(chunk.end(), limit, ahead);
        Ok(Some(chunk))
    }

    /// Read `[start, end)`, its memory reserved by `charge`, and cache it if a stream still
    /// wants it and no truncation came in between; `None` when `O_DIRECT` is refused.
    fn load(
        &self,
        start: u64,
        end: u64,
        generation: u64,
        charge: Arc<Charge>,
    ) -> io::Result<Option<Chunk>> {
        let Some(file) = self.direct_file() else {
            return Ok(None);
        };
        let bytes = match read_aligned(file, start, end, &self.budget) {
            Ok(bytes) => bytes,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                self.refuse(&e);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let chunk = Chunk {
            start,
            bytes,
            _charge: charge,
        };
        let mut state = self.lock();
        if state.generation == generation && wanted(&state.streams, start) {
            state.chunks.retain(|c| c.start != start);
            let at = state.chunks.partition_point(|c| c.start < start);
            state.chunks.insert(at, chunk.clone());
        }
        Ok(Some(chunk))
    }

    /// Load the `ahead` chunks from `from` on (those below `limit`, not cached and not
    /// loading), each on a blocking thread of the current Tokio runtime; those past the first
    /// [`READ_AHEAD`] only while spare budget lasts. Outside a runtime nothing is read ahead.
    fn read_ahead(self: &Arc<Self>, from: u64, limit: u64, ahead: u64) {
        if from % CHUNK != 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for i in 0..ahead {
            let start = from.saturating_add(i.saturating_mul(CHUNK));
            if start >= limit || !self.read_ahead_one(&runtime, start, limit, i >= READ_AHEAD) {
                return;
            }
        }
    }

    /// Start loading the chunk at `start` unless it is cached or loading; false when there is
    /// no budget for it (from spare budget only if `spare`) or `O_DIRECT` was refused.
    fn read_ahead_one(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        start: u64,
        limit: u64,
        spare: bool,
    ) -> bool {
        let generation = {
            let mut state = self.lock();
            if state.refused {
                return false;
            }
            if state.loading.contains(&start) || state.chunks.iter().any(|c| c.start == start) {
                return true;
            }
            state.loading.push(start);
            state.generation
        };
        let loading = Loading(Arc::clone(self), start);
        let end = start.saturating_add(CHUNK).min(limit);
        let bytes = end.saturating_sub(start);
        let charge = if spare {
            self.budget.take_spare(bytes)
        } else {
            self.budget.take(bytes)
        };
        let Some(charge) = charge else {
            return false;
        };
        runtime.spawn_blocking(move || {
            if let Err(e) = loading.0.load(start, end, generation, charge) {
                // The reader that wants the chunk reads it again and reports the error.
                tracing::debug!("read-ahead of a segment at {start} failed: {e}");
            }
            drop(loading);
        });
        true
    }

    fn direct_file(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| match reopen_direct(&self.source) {
                Ok(file) => Some(file),
                Err(e) => {
                    self.refuse(&e);
                    None
                }
            })
            .as_ref()
    }

    fn refuse(&self, why: &io::Error) {
        let mut state = self.lock();
        if !state.refused {
            tracing::debug!(
                "O_DIRECT reads refused ({why}): reads below the dropped page cache go through it"
            );
            state.refused = true;
        }
        drop(state);
        self.loaded.notify_all();
    }
}

/// Where a segment's bytes are read from: its file, or, for what lies below `limit` (the
/// dropped mark), a [`DirectReader`] when it has them.
#[derive(Clone, Copy)]
pub(crate) struct SegmentBytes<'a> {
    pub file: &'a File,
    pub direct: Option<(&'a Arc<DirectReader>, u64)>,
}

impl<'a> SegmentBytes<'a> {
    /// Only the file (the page cache).
    pub fn file(file: &'a File) -> Self {
        Self { file, direct: None }
    }

    /// Fill `buf` with the bytes at `position`.
    pub fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        if let Some((direct, limit)) = self.direct {
            if direct.copy_at(buf, position, limit)?.is_some() {
                return Ok(());
            }
        }
        std::os::unix::fs::FileExt::read_exact_at(self.file, buf, position)
    }

    /// Append the `len` bytes at `position` to `out`; after an error `out` is as it was.
    pub fn read_append(&self, out: &mut Vec<u8>, len: usize, position: u64) -> io::Result<()> {
        let from = out.len();
        let read = match self.direct {
            None => super::segment::pread_append(self.file, out, len, position),
            Some(_) => {
                out.resize(from.saturating_add(len), 0);
                self.read_exact_at(out.get_mut(from..).unwrap_or_default(), position)
            }
        };
        if read.is_err() {
            out.truncate(from);
        }
        read
    }
}

/// A read-ahead of the chunk at `.1` in progress: dropped when it ends, or with its task if
/// that never runs.
struct Loading(Arc<DirectReader>, u64);

impl Drop for Loading {
    fn drop(&mut self) {
        self.0.lock().loading.retain(|&s| s != self.1);
        self.0.loaded.notify_all();
    }
}

fn align_down(n: u64) -> u64 {
    n - n % ALIGN
}

/// The same file opened again, read-only, with `O_DIRECT` (through `/proc/self/fd`, so it is
/// the same inode even if the path was renamed or removed since).
fn reopen_direct(file: &File) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// `[start, end)` of `file` (both multiples of [`ALIGN`]) read with `O_DIRECT` into a buffer
/// of `budget`'s, aligned to [`ALIGN`]; the buffer goes back to `budget` when the last slice
/// of the answer is dropped.
fn read_aligned(file: &File, start: u64, end: u64, budget: &Arc<Budget>) -> io::Result<Bytes> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "chunk too large");
    let len = usize::try_from(end.saturating_sub(start)).map_err(|_| too_large())?;
    let align = usize::try_from(ALIGN).map_err(|_| too_large())?;
    let mut buf = budget.buffer();
    // Sized once (chunks are at most CHUNK): a reused buffer is not zeroed again.
    let want = len.checked_add(align).ok_or_else(too_large)?;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let skew = buf.as_ptr().addr() % align;
    let from = if skew == 0 { 0 } else { align - skew };
    let to = from.checked_add(len).ok_or_else(too_large)?;
    let mut filled = from;
    let mut at = start;
    let read = loop {
        if filled >= to {
            break Ok(());
        }
        let Some(dest) = buf.get_mut(filled..to) else {
            break Err(too_large());
        };
        match rustix::io::pread(file, dest, at) {
            Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                filled = filled.saturating_add(n);
                at = at.saturating_add(len_u64(n));
            }
            Err(e) => break Err(e.into()),
        }
    };
    if let Err(e) = read {
        budget.give_back(buf);
        return Err(e);
    }
    Ok(Bytes::from_owner(Pooled {
        buf,
        from,
        to,
        budget: Arc::clone(budget),
    }))
}

/// A chunk's buffer, `[from, to)` of it read; returned to its budget's free list when dropped.
struct Pooled {
    buf: Vec<u8>,
    from: usize,
    to: usize,
    budget: Arc<Budget>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.from..self.to).unwrap_or_default()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(len: usize) -> (tempfile::TempDir, Arc<File>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg.log");
        let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        (dir, Arc::new(File::open(&path).unwrap()), data)
    }

    fn reader_of(file: Arc<File>) -> Arc<DirectReader> {
        DirectReads::with_budget(8 * CHUNK).reader(file).unwrap()
    }

    fn us(n: u64) -> usize {
        usize::try_from(n).unwrap()
    }

    fn joined(slices: Vec<Bytes>) -> Vec<u8> {
        slices.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn slices_and_copies_return_the_file_bytes_across_chunks() {
        let len = 5 * us(CHUNK) + 12_345;
        let (_dir, file, data) = file_with(len);
        let reader = reader_of(file);
        let limit = len_u64(len);
        for (start, end) in [
            (0u64, 100u64),
            (CHUNK - 10, CHUNK + 10),
            (7, 3 * CHUNK + 77),
            (4 * CHUNK, align_down(limit)),
        ] {
            let got = reader.slices(start, end, limit).unwrap().unwrap();
            let want = &data[us(start)..us(end)];
            assert_eq!(joined(got), want, "[{start}, {end})");
            let mut buf = vec![0u8; us(end - start)];
            reader.copy_at(&mut buf, start, limit).unwrap().unwrap();
            assert_eq!(buf, want, "copy [{start}, {end})");
        }
        let most = MAX_STREAMS * us(1 + MAX_READ_AHEAD);
        assert!(reader.lock().chunks.len() <= most);
    }

    #[test]
    fn nothing_at_or_past_the_aligned_limit_is_read() {
        let (_dir, file, _) = file_with(3 * us(ALIGN));
        let reader = reader_of(file);
        let limit = 2 * ALIGN + 100;
        assert!(reader.slices(0, 2 * ALIGN + 1, limit).unwrap().is_none());
        assert!(reader.slices(10, 10, limit).unwrap().is_none());
        let mut buf = [0u8; 2];
        assert!(reader
            .copy_at(&mut buf, 2 * ALIGN - 1, limit)
            .unwrap()
            .is_none());
        let got = reader.slices(0, 2 * ALIGN, limit).unwrap().unwrap();
        assert_eq!(joined(got).len(), 2 * us(ALIGN));
    }

    #[test]
    fn a_truncation_forgets_what_lies_past_the_cut() {
        let len = 2 * us(CHUNK);
        let (dir, file, data) = file_with(len);
        let reader = reader_of(file);
        let limit = len_u64(len);
        let first = reader
            .slices(CHUNK + 10, CHUNK + 20, limit)
            .unwrap()
            .unwrap();
        assert_eq!(joined(first), &data[us(CHUNK) + 10..us(CHUNK) + 20]);
        // Rewrite the second chunk on disk, as a truncation and new appends would.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("seg.log"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 64], CHUNK).unwrap();
        f.sync_all().unwrap();
        reader.forget_from(CHUNK);
        let again = reader.slices(CHUNK, CHUNK + 64, limit).unwrap().unwrap();
        assert_eq!(joined(again), vec![7u8; 64]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reading_forward_loads_the_next_chunk_ahead() {
        let len = 4 * us(CHUNK);
        let (_dir, file, data) = file_with(len);
        let reader = reader_of(file);
        let limit = len_u64(len);
        let mut at = 0u64;
        while at < limit {
            let end = (at + 300_000).min(limit);
            let r = Arc::clone(&reader);
            let got = tokio::task::spawn_blocking(move || r.slices(at, end, limit))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(joined(got), &data[us(at)..us(end)]);
            at = end;
        }
        // Everything was read to the end: nothing is kept.
        let state = reader.lock();
        assert!(state.chunks.is_empty(), "{state:?}");
    }

    #[test]
    fn readers_share_one_budget_and_the_least_recently_used_gives_way() {
        // Without a runtime nothing is read ahead: one chunk per read.
        let per_reader = us(1 + READ_AHEAD);
        assert_eq!(DirectReads::MIN_BYTES, len_u64(per_reader) * CHUNK);
        assert!(DirectReads::with_budget(DirectReads::MIN_BYTES - 1)
            .reader(Arc::new(tempfile::tempfile().unwrap()))
            .is_none());
        let (_dir, file, data) = file_with(2 * us(CHUNK));
        let limit = 2 * CHUNK;
        // Room for `per_reader` chunks: one reader each, and one more.
        let reads = DirectReads::with_budget(DirectReads::MIN_BYTES);
        let full = len_u64(per_reader) * CHUNK;
        let mut readers: Vec<_> = (0..=per_reader)
            .map(|_| reads.reader(Arc::clone(&file)).unwrap())
            .collect();
        let last = readers.pop().unwrap();
        for reader in &readers {
            let got = reader.slices(10, 20, limit).unwrap().unwrap();
            assert_eq!(joined(got), &data[10..20]);
        }
        assert_eq!(reads.used(), full);
        let (a, b, c) = (&readers[0], &readers[1], &readers[2]);
        // Full: the last one's chunk takes the place of a's, the reader used longest ago.
        let got = last.slices(CHUNK + 5, CHUNK + 9, limit).unwrap().unwrap();
        assert_eq!(joined(got), &data[us(CHUNK) + 5..us(CHUNK) + 9]);
        assert!(a.lock().chunks.is_empty());
        assert_eq!(b.lock().chunks.len(), 1);
        assert_eq!(reads.used(), full);
        // a reads again: b gives way now.
        a.slices(30, 40, limit).unwrap().unwrap();
        assert!(b.lock().chunks.is_empty());
        assert_eq!(c.lock().chunks.len(), 1);
        assert_eq!(reads.used(), full);
        // Readers that go away give their memory back ...
        let b = readers.swap_remove(1);
        drop((readers.swap_remove(0), last));
        assert_eq!(reads.used(), full - 2 * CHUNK);
        // ... and their buffers, which the next read reuses.
        let budget = reads.0.as_ref().unwrap();
        let free = lock(&budget.free).len();
        assert_eq!(free, 2);
        let got = b.slices(0, 8, limit).unwrap().unwrap();
        assert_eq!(joined(got), &data[..8]);
        assert_eq!(reads.used(), full - CHUNK);
        assert_eq!(lock(&budget.free).len(), free - 1);
    }

    #[test]
    fn a_stream_reading_forward_reads_further_ahead_and_a_jump_starts_another() {
        let mut state = State::default();
        let mut tick = 0;
        let mut follow = |state: &mut State, chunk: u64| {
            tick += 1;
            state.follow(chunk * CHUNK, tick)
        };
        assert_eq!(follow(&mut state, 0), READ_AHEAD);
        assert_eq!(follow(&mut state, 0), READ_AHEAD, "the same chunk again");
        assert_eq!(follow(&mut state, 1), 2 * READ_AHEAD);
        let mut ahead = 2 * READ_AHEAD;
        for chunk in 2..12 {
            ahead = (2 * ahead).min(MAX_READ_AHEAD);
            assert_eq!(follow(&mut state, chunk), ahead, "chunk {chunk}");
        }
        assert_eq!(ahead, MAX_READ_AHEAD);
        // Another consumer far behind: a second stream, starting small; the first keeps its
        // window and goes on growing from where it was.
        assert_eq!(follow(&mut state, 3), READ_AHEAD);
        assert_eq!(follow(&mut state, 12), MAX_READ_AHEAD);
        assert_eq!(follow(&mut state, 4), 2 * READ_AHEAD);
        assert_eq!(state.streams.len(), 2);
        // What each stream reads now and ahead is wanted; nothing else is.
        let wants = |state: &State, chunk: u64| wanted(&state.streams, chunk * CHUNK);
        assert!(wants(&state, 12) && wants(&state, 12 + MAX_READ_AHEAD));
        assert!(!wants(&state, 13 + MAX_READ_AHEAD));
        assert!(wants(&state, 4) && wants(&state, 4 + 2 * READ_AHEAD));
        assert!(!wants(&state, 3));
        // At most MAX_STREAMS: a new one takes the place of the one used longest ago.
        let firsts: Vec<u64> = (0..u64::try_from(MAX_STREAMS).unwrap())
            .map(|i| 1000 + 100 * i)
            .collect();
        for &chunk in &firsts {
            assert_eq!(follow(&mut state, chunk), READ_AHEAD);
        }
        assert_eq!(state.streams.len(), MAX_STREAMS);
        let mut ats: Vec<u64> = state.streams.iter().map(|s| s.at / CHUNK).collect();
        ats.sort_unstable();
        assert_eq!(ats, firsts);
    }

    /// Read `[chunk * CHUNK, + 10)` on a blocking thread, then wait until no read-ahead is in
    /// flight.
    async fn read_in_chunk(reader: &Arc<DirectReader>, chunk: u64, limit: u64, data: &[u8]) {
        let at = chunk * CHUNK;
        let r = Arc::clone(reader);
        let got = tokio::task::spawn_blocking(move || r.slices(at, at + 10, limit))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(joined(got), &data[us(at)..us(at) + 10]);
        while !reader.lock().loading.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn cached_chunks(reader: &DirectReader) -> Vec<u64> {
        reader
            .lock()
            .chunks
            .iter()
            .map(|c| c.start / CHUNK)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_ahead_grows_into_spare_budget_only() {
        let (_dir, file, data) = file_with(12 * us(CHUNK));
        let limit = 12 * CHUNK;
        // Plenty: the window grows to the end of the file (chunk 2 + 16 > 11).
        let reads = DirectReads::with_budget(64 * CHUNK);
        let reader = reads.reader(Arc::clone(&file)).unwrap();
        for chunk in 0..3 {
            read_in_chunk(&reader, chunk, limit, &data).await;
        }
        assert_eq!(cached_chunks(&reader), (2..12).collect::<Vec<_>>());
        assert_eq!(reads.used(), 10 * CHUNK);
        // Room for two readers' first windows and two chunks more: this reader grows by those
        // two only, leaving room for another reader to start without evicting anyone.
        let cap = 2 * DirectReads::MIN_BYTES + 2 * CHUNK;
        let reads = DirectReads::with_budget(cap);
        let reader = reads.reader(Arc::clone(&file)).unwrap();
        for chunk in 0..3 {
            read_in_chunk(&reader, chunk, limit, &data).await;
        }
        let grown = 1 + READ_AHEAD + 2;
        assert_eq!(cached_chunks(&reader), (2..2 + grown).collect::<Vec<_>>());
        assert_eq!(reads.used(), cap - DirectReads::MIN_BYTES);
        let other = reads.reader(Arc::clone(&file)).unwrap();
        read_in_chunk(&other, 0, limit, &data).await;
        assert_eq!(cached_chunks(&other), (0..=READ_AHEAD).collect::<Vec<_>>());
        assert_eq!(cached_chunks(&reader), (2..2 + grown).collect::<Vec<_>>());
        assert_eq!(reads.used(), cap);
    }
}
