//! Buffered, positional, batch-by-batch reading of a segment file (needs only `&File`, and
//! the segment's `O_DIRECT` reader where the page cache was dropped).
//!
//! Reads go through `read_exact_at` in chunks, so scanning many small batches costs few system
//! calls and skipping a large batch costs none. The reader never trusts a length field further
//! than the end it was given: a batch that would run past it is reported as [`Peek::Bad`].

use std::fs::File;
use std::path::Path;

use super::common::{io_context, len_u64, parse_header_prefix, to_usize};
use super::direct::SegmentBytes;
use super::LogError;
use crate::codec::batch::{BatchHeader, HEADER_LEN};

/// How much to read at once when scanning.
const CHUNK: u64 = 64 * 1024;
/// How much the first read of a reader takes (one page).
const FIRST_CHUNK: u64 = 4 * 1024;

/// What is at the reader's position.
#[derive(Debug)]
pub(crate) enum Peek {
    /// The end was reached exactly at a batch boundary.
    End,
    /// A batch whose header parses and which lies wholly before the end.
    Batch(BatchHeader),
    /// Bytes that are not a whole batch: a partial or malformed header, or a batch running past
    /// the end. The reason is for messages.
    Bad(String),
}

/// Walks the batches of one segment file between two positions.
pub(crate) struct BatchReader<'f> {
    source: SegmentBytes<'f>,
    path: &'f Path,
    end: u64,
    position: u64,
    buf: Vec<u8>,
    buf_start: u64,
    /// No read yet (the first one is the small one).
    first: bool,
}

impl<'f> BatchReader<'f> {
    /// A reader over `[start, end)` of `file` (named `path` in errors).
    pub fn new(file: &'f File, path: &'f Path, start: u64, end: u64) -> Self {
        Self::over(SegmentBytes::file(file), path, start, end)
    }

    /// A reader over `[start, end)` of `source`.
    pub fn over(source: SegmentBytes<'f>, path: &'f Path, start: u64, end: u64) -> Self {
        Self {
            source,
            path,
            end,
            position: start,
            buf: Vec::new(),
            buf_start: start,
            first: true,
        }
    }

    /// File position of the batch `peek` looks at.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Parse the header at the current position.
    pub fn peek(&mut self) -> Result<Peek, LogError> {
        let remaining = self.end.saturating_sub(self.position);
        if remaining == 0 {
            return Ok(Peek::End);
        }
        if remaining < len_u64(HEADER_LEN) {
            return Ok(Peek::Bad(format!(
                "{remaining} trailing bytes are not a whole batch header"
            )));
        }
        let header = match parse_header_prefix(self.bytes(HEADER_LEN)?) {
            Ok(h) => h,
            Err(e) => return Ok(Peek::Bad(e.to_string())),
        };
        if len_u64(header.total_len()) > remaining {
            let reason = format!(
                "batch of {} bytes runs past the end ({remaining} left)",
                header.total_len()
            );
            return Ok(Peek::Bad(reason));
        }
        Ok(Peek::Batch(header))
    }

    /// The whole batch of `len` bytes at the current position (after `peek` returned it).
    pub fn batch_bytes(&mut self, len: usize) -> Result<&[u8], LogError> {
        self.bytes(len)
    }

    /// Move past the batch of `len` bytes at the current position.
    pub fn advance(&mut self, len: usize) {
        self.position = self.position.saturating_add(len_u64(len)).min(self.end);
    }

    /// `len` bytes at the current position, reading a chunk if they are not buffered. The caller
    /// guarantees they lie before `end`.
    fn bytes(&mut self, len: usize) -> Result<&[u8], LogError> {
        let offset_in_buf = self
            .position
            .checked_sub(self.buf_start)
            .map(to_usize)
            .transpose()?;
        let buffered = offset_in_buf.filter(|at| {
            at.checked_add(len)
                .is_some_and(|stop| stop <= self.buf.len())
        });
        let at = match buffered {
            Some(at) => at,
            None => {
                self.fill(len)?;
                0
            }
        };
        let stop = at.saturating_add(len);
        self.buf
            .get(at..stop)
            .ok_or_else(|| LogError::Corrupt(format!("short read in {}", self.path.display())))
    }

    /// Replace the buffer with at least `len` bytes from the current position. The first read
    /// takes [`FIRST_CHUNK`]: a lookup (`Segment::locate`) usually needs one header at an
    /// indexed position, and a large batch is read whole by `batch_bytes` anyway; later reads
    /// take [`CHUNK`], for scans over many small batches.
    fn fill(&mut self, len: usize) -> Result<(), LogError> {
        let chunk = if std::mem::take(&mut self.first) {
            FIRST_CHUNK
        } else {
            CHUNK
        };
        let want = len_u64(len)
            .max(chunk)
            .min(self.end.saturating_sub(self.position));
        self.buf.resize(to_usize(want)?, 0);
        self.buf_start = self.position;
        let read = self.source.read_exact_at(&mut self.buf, self.position);
        if read.is_err() {
            // Never leave unread zeroes looking like buffered data.
            self.buf.clear();
        }
        read.map_err(|e| {
            io_context(format!(
                "reading {} at {}",
                self.path.display(),
                self.buf_start
            ))(e)
        })
    }
}
