//! The partition log: an append-only sequence of Kafka v2 record batches behind a narrow trait.
//!
//! A partition log stores record batches byte-for-byte as received (after validation by
//! [`crate::codec::batch`]), except that the log rewrites `baseOffset` (offset assignment) and
//! `partitionLeaderEpoch` (the leader epoch, later the Raft term). Neither field is covered by the
//! batch CRC, so the stored batch stays valid.
//!
//! Two implementations pass one contract suite: [`file::FileLog`] (segment files on disk, with
//! sparse offset and time indexes) and [`memory::MemLog`] (a `Vec`, for tests and as a model).
//!
//! Offsets: `log_start_offset <= (high watermark, kept by the caller) <= log_end_offset`. The log
//! itself knows nothing of the high watermark; the partition layer decides what is visible.

mod closed;
mod common;
#[cfg(test)]
mod contract;
mod direct;
pub use direct::DirectReads;
pub(crate) mod fault;
pub mod file;
pub use closed::ClosedLog;
mod index;
pub mod memory;
mod reader;
mod segment;

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::batch::IntactBatches;

/// Whole batches read from a log, in order: bytes in memory, or a region of a segment file.
///
/// A [`FileSlice`] stays valid while it is sent: segments are append-only below the high
/// watermark (a read never goes above it, and only uncommitted data is ever truncated), and a
/// segment deleted by retention stays readable through the open file.
#[derive(Debug, Clone, Default)]
pub struct Batches {
    pieces: Vec<Piece>,
    len: usize,
}

/// One piece of [`Batches`].
#[derive(Debug, Clone)]
pub enum Piece {
    Bytes(Bytes),
    File(FileSlice),
}

/// `len` bytes of an open segment file from `position`, holding whole batches.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileSlice {
    /// The bytes of the slice, read from the file.
    pub fn read(&self) -> std::io::Result<Bytes> {
        let mut out = Vec::with_capacity(self.len);
        self.read_into(&mut out)?;
        Ok(Bytes::from(out))
    }

    /// Append the bytes of the slice to `out`.
    pub fn read_into(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        segment::pread_append(&self.file, out, self.len, self.position)
    }
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Extend<Piece> for Batches {
    fn extend<I: IntoIterator<Item = Piece>>(&mut self, pieces: I) {
        pieces.into_iter().for_each(|p| self.push(p));
    }
}

impl Batches {
    /// Add a piece at the end (empty ones are dropped).
    pub fn push(&mut self, piece: Piece) {
        if !piece.is_empty() {
            self.len = self.len.saturating_add(piece.len());
            self.pieces.push(piece);
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// All the bytes in one buffer (file pieces are read; one piece of bytes is not copied).
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        match self.pieces.as_slice() {
            [] => Ok(Bytes::new()),
            [Piece::Bytes(b)] => Ok(b.clone()),
            [Piece::File(f)] => f.read(),
            pieces => {
                let mut out = Vec::with_capacity(self.len);
                for piece in pieces {
                    match piece {
                        Piece::Bytes(b) => out.extend_from_slice(b),
                        Piece::File(f) => f.read_into(&mut out)?,
                    }
                }
                Ok(Bytes::from(out))
            }
        }
    }
}

impl From<Bytes> for Batches {
    fn from(bytes: Bytes) -> Self {
        let mut batches = Batches::default();
        batches.push(Piece::Bytes(bytes));
        batches
    }
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The requested offset is below the log start or above the log end.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// The bytes handed to `append` are not a sequence of whole, valid v2 batches.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] crate::codec::batch::BatchError),
    /// `truncate_to` was asked to cut inside a batch.
    #[error("offset {0} is not a batch boundary")]
    NotBatchBoundary(i64),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// On-disk state that cannot be repaired automatically.
    #[error("corrupt log: {0}")]
    Corrupt(String),
    /// The partition was closed (the broker is shutting down, or the topic was deleted).
    #[error("the log is closed: the broker is shutting down or the topic was deleted")]
    Closed,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record of the first batch.
    pub base_offset: i64,
    /// Offset of the last record of the last batch.
    pub last_offset: i64,
    /// Largest `maxTimestamp` among the appended batches.
    pub max_timestamp: i64,
}

/// The first offset whose batch has a max timestamp at or after a target time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

/// Retention limits; `None` means unlimited. Only whole, inactive segments are ever deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
}

/// What `sync` must make durable: the file handles written since the last flush and the log end
/// offset they cover. It is taken under the log's lock and run outside it, so one fsync covers
/// every append made before it was taken (group commit).
#[derive(Debug, Default)]
pub struct FlushPlan {
    /// Each file with the length of data in it when the plan was taken (the file may be
    /// longer: blocks reserved ahead of appends).
    pub files: Vec<(Arc<File>, u64)>,
    pub up_to: i64,
    /// `(file, from, len)`: ranges whose page cache to drop once `files` are synced (see
    /// `FileLogConfig::cache_tail_bytes`); each lies within data this plan or an earlier one
    /// fsyncs.
    pub drop_cache: Vec<(Arc<File>, u64, u64)>,
}

impl FlushPlan {
    /// fsync every file, data only (`fdatasync` also makes durable the length and extent
    /// changes needed to read the data back; directories are synced on segment roll).
    pub fn sync(&self) -> std::io::Result<()> {
        for (f, len) in &self.files {
            fault::sync(f, false, *len)?;
        }
        for (f, from, len) in &self.drop_cache {
            // Advice only: a refusal costs memory, never data.
            let advised = std::num::NonZeroU64::new(*len).map(|len| {
                rustix::fs::fadvise(&**f, *from, Some(len), rustix::fs::Advice::DontNeed)
            });
            if let Some(Err(e)) = advised {
                tracing::debug!(error = %e, "dropping synced segment pages from the page cache");
            }
        }
        Ok(())
    }
}

/// Zeros a log wrote over blocks reserved ahead of its appends ([`PartitionLog::zero_ahead`]),
/// to fsync outside the log's lock.
#[derive(Debug)]
pub struct ZeroAhead {
    file: Arc<File>,
    /// Bytes of data before the zeros: the fsync covers them too.
    data_len: u64,
    /// Where the zeros end in the file.
    end: u64,
}

impl ZeroAhead {
    pub(crate) fn new(file: Arc<File>, data_len: u64, end: u64) -> Self {
        Self {
            file,
            data_len,
            end,
        }
    }

    /// Where the zeros end in the file (the data before them is [`ZeroAhead::data_len`]).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of data in the file before the zeros.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// `fdatasync` of the file. A failure must be handled as a failed data fsync: the error
    /// may have been the data's (fsyncgate), and this call has now consumed it.
    pub fn sync(&self) -> std::io::Result<()> {
        fault::sync(&self.file, false, self.data_len)
    }
}

/// The narrow interface every partition log implements.
pub trait PartitionLog: Send + Sync {
    /// Append one or more whole v2 batches (already validated). Offsets are assigned from the
    /// current log end by rewriting each batch's `baseOffset`; `partitionLeaderEpoch` is set to
    /// `leader_epoch`. Either every batch is appended or none is. The log checks each batch's
    /// integrity (CRC-32C included) itself, whatever the caller did.
    fn append(&mut self, batches: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        self.append_intact(IntactBatches::check(batches)?, leader_epoch)
    }

    /// [`PartitionLog::append`] for batches whose integrity was checked where they entered the
    /// broker: the CRC-32C is not computed again (headers and sizes still are).
    fn append_intact(
        &mut self,
        batches: IntactBatches,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError>;

    /// Whole batches starting with the one that contains `offset`, ending before `max_offset`
    /// (exclusive; batches whose base offset is >= `max_offset` are not returned), at most
    /// `max_bytes` long except that the first batch is always returned whole. Returns empty bytes
    /// when `offset == max_offset` or `offset == log_end_offset`.
    /// Errors with `OffsetOutOfRange` if `offset < log_start_offset` or `offset > log_end_offset`.
    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Result<Bytes, LogError>;

    /// The batches [`PartitionLog::read`] returns, as pieces that may still lie in segment
    /// files (a consumer's Fetch sends those with `sendfile(2)`, never copying them through
    /// the broker). Same arguments, errors and result bytes as `read`; the default reads them.
    fn read_batches(
        &self,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
    ) -> Result<Batches, LogError> {
        self.read(offset, max_offset, max_bytes).map(Batches::from)
    }

    /// First offset still in the log.
    fn log_start_offset(&self) -> i64;

    /// Offset the next appended record will get.
    fn log_end_offset(&self) -> i64;

    /// The log end offset that is known to be on stable storage.
    fn flushed_offset(&self) -> i64;

    /// Files and offset to fsync to make everything appended so far durable.
    fn flush_plan(&self) -> FlushPlan;

    /// Record that a `FlushPlan` finished; `flushed_offset` never moves backwards.
    fn mark_flushed(&mut self, up_to: i64);

    /// A moment with no append waiting on a flush: the log may write zeros over some of the
    /// blocks it reserved ahead of its appends, paced by `now`, and return what to fsync
    /// (outside its lock) so that later appends overwrite written blocks. Changes no offset
    /// and nothing a read returns. The default (a log with no reserved blocks) does nothing.
    fn zero_ahead(&mut self, now: std::time::Instant) -> Result<Option<ZeroAhead>, LogError> {
        let _ = now;
        Ok(None)
    }

    /// First batch (by offset) whose max timestamp is >= `timestamp`.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>, LogError>;

    /// Remove every batch whose base offset is >= `offset` (Raft conflict truncation).
    /// `offset` must be a batch boundary or the log end.
    fn truncate_to(&mut self, offset: i64) -> Result<(), LogError>;

    /// Discard every batch and restart the log empty at `offset` (`>= 0`), which may be below,
    /// inside or past the current log: afterwards `log_start_offset == log_end_offset ==
    /// flushed_offset == offset`, and a read below `offset` is `OffsetOutOfRange`. For a Raft
    /// follower installing its leader's snapshot (the leader's log starts at `offset`).
    /// Durable when it returns. Old segments go oldest first, so a crash midway leaves a
    /// suffix of the old log, or an empty log at offset 0: the caller's own durable record of
    /// the new start says to redo it.
    fn reset_to(&mut self, offset: i64) -> Result<(), LogError>;

    /// Where the log would start if retention ran now but kept every segment holding an offset
    /// at or after `limit` (a replica's high watermark): the base offset of the first segment
    /// kept. Changes nothing.
    fn retention_start(&self, now_ms: i64, policy: &RetentionPolicy, limit: i64) -> i64;

    /// Delete, oldest first, the whole segments that end at or below `offset` (never the
    /// active one); returns the new log start offset (at most `offset`).
    fn delete_segments_before(&mut self, offset: i64) -> Result<i64, LogError>;

    /// Delete whole old segments past the retention limits; returns the new log start offset.
    fn enforce_retention(&mut self, now_ms: i64, policy: &RetentionPolicy)
        -> Result<i64, LogError>;

    /// How many segments the log has (the active one included) and their bytes of batches.
    fn disk_usage(&self) -> (usize, u64);
}
