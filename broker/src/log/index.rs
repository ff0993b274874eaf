//! Sparse per-segment indexes, kept in memory and persisted in Kafka's file formats.
//!
//! * Offset index (`.index`): 8-byte entries `relative offset u32 | file position u32`, one for a
//!   batch start every `index_interval_bytes` or so. A batch at position 0 needs no entry.
//! * Time index (`.timeindex`): 12-byte entries `timestamp i64 | relative offset u32`. An entry
//!   `(t, o)` means: the largest max timestamp of the batches up to and including the one at `o`
//!   is `t`. Timestamps in a log are not monotonic, so the index stores this running maximum
//!   (as Kafka does) and both columns strictly increase. When a segment is sealed a last entry
//!   records the segment's overall maximum.
//!
//! Lookups are only ever a starting point for a linear scan, so a missing entry costs time, not
//! correctness. Entries that do not fit 32 bits are simply not recorded.

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetEntry {
    relative_offset: u32,
    position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeEntry {
    timestamp: i64,
    relative_offset: u32,
}

const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// The indexes of one segment plus the running facts needed to extend them.
#[derive(Debug, Clone)]
pub(crate) struct SegmentIndex {
    base_offset: i64,
    interval: u64,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    max_timestamp: Option<i64>,
    first_timestamp: Option<i64>,
    last_batch: Option<u32>,
}

/// Where a scan for an offset can start: a batch start position and that batch's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanStart {
    pub offset: i64,
    pub position: u64,
}

impl SegmentIndex {
    /// An empty index for a segment starting at `base_offset`.
    pub fn new(base_offset: i64, interval: u64) -> Self {
        Self {
            base_offset,
            interval,
            offsets: Vec::new(),
            times: Vec::new(),
            bytes_since_entry: 0,
            max_timestamp: None,
            first_timestamp: None,
            last_batch: None,
        }
    }

    /// Account for the batch of `len` bytes at `position`, adding entries when due.
    pub fn record_batch(&mut self, position: u64, base_offset: i64, max_timestamp: i64, len: u64) {
        let running_max = self
            .max_timestamp
            .map_or(max_timestamp, |m| m.max(max_timestamp));
        self.max_timestamp = Some(running_max);
        self.first_timestamp.get_or_insert(max_timestamp);
        let relative = self.relative(base_offset);
        self.last_batch = relative;
        if self.bytes_since_entry >= self.interval {
            if let (Some(relative_offset), Ok(position)) = (relative, u32::try_from(position)) {
                self.offsets.push(OffsetEntry {
                    relative_offset,
                    position,
                });
                self.push_time(running_max, relative_offset);
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(len);
    }

    /// Bytes between offset index entries.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Add the final time entry a sealed segment carries (its overall max timestamp).
    pub fn seal(&mut self) {
        if let (Some(max), Some(relative_offset)) = (self.max_timestamp, self.last_batch) {
            self.push_time(max, relative_offset);
        }
    }

    fn push_time(&mut self, timestamp: i64, relative_offset: u32) {
        let newer = self
            .times
            .last()
            .is_none_or(|t| timestamp > t.timestamp && relative_offset > t.relative_offset);
        if newer {
            self.times.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
    }

    fn relative(&self, offset: i64) -> Option<u32> {
        u32::try_from(offset.checked_sub(self.base_offset)?).ok()
    }

    fn absolute(&self, relative_offset: u32) -> i64 {
        self.base_offset.saturating_add(i64::from(relative_offset))
    }

    /// Largest max timestamp of the segment's batches.
    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }

    /// Max timestamp of the segment's first batch (known for scanned segments only).
    pub fn first_timestamp(&self) -> Option<i64> {
        self.first_timestamp
    }

    /// The indexed batch start at or before `offset` (the segment start if none).
    pub fn scan_start(&self, offset: i64) -> ScanStart {
        let n = self
            .offsets
            .partition_point(|e| self.absolute(e.relative_offset) <= offset);
        match n.checked_sub(1).and_then(|i| self.offsets.get(i)) {
            Some(e) => ScanStart {
                offset: self.absolute(e.relative_offset),
                position: u64::from(e.position),
            },
            None => ScanStart {
                offset: self.base_offset,
                position: 0,
            },
        }
    }

    /// A position at or after which every batch has a base offset >= `offset`, if indexed.
    pub fn position_bound(&self, offset: i64) -> Option<u64> {
        let n = self
            .offsets
            .partition_point(|e| self.absolute(e.relative_offset) < offset);
        self.offsets.get(n).map(|e| u64::from(e.position))
    }

    /// The last indexed batch start at or before byte `position` whose base offset is below
    /// `max_offset`, if there is one.
    pub fn scan_start_before(&self, position: u64, max_offset: i64) -> Option<ScanStart> {
        let n = self.offsets.partition_point(|e| {
            u64::from(e.position) <= position && self.absolute(e.relative_offset) < max_offset
        });
        let e = self.offsets.get(n.checked_sub(1)?)?;
        Some(ScanStart {
            offset: self.absolute(e.relative_offset),
            position: u64::from(e.position),
        })
    }

    /// Where a search for the first batch with max timestamp >= `timestamp` can start: every
    /// batch before the returned one has a smaller max timestamp.
    pub fn time_scan_start(&self, timestamp: i64) -> ScanStart {
        let n = self.times.partition_point(|e| e.timestamp < timestamp);
        match n.checked_sub(1).and_then(|i| self.times.get(i)) {
            Some(e) => self.scan_start(self.absolute(e.relative_offset)),
            None => ScanStart {
                offset: self.base_offset,
                position: 0,
            },
        }
    }

    /// The last offset-index entry, where a tail scan of a sealed segment starts.
    pub fn last_entry(&self) -> ScanStart {
        self.offsets.last().map_or(
            ScanStart {
                offset: self.base_offset,
                position: 0,
            },
            |e| ScanStart {
                offset: self.absolute(e.relative_offset),
                position: u64::from(e.position),
            },
        )
    }

    /// Whether the offset index has any entries.
    pub fn has_offset_entries(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// Whether a batch at `position` starting at `offset` is one `record_batch` indexes when
    /// an entry is due (both fit the 32-bit entry fields).
    pub fn can_index(&self, position: u64, offset: i64) -> bool {
        self.relative(offset).is_some() && u32::try_from(position).is_ok()
    }

    /// Whether every time entry names a batch with an offset entry or the segment's last batch,
    /// as entries made by `record_batch` and `seal` do.
    pub fn times_consistent(&self, last_batch: Option<i64>) -> bool {
        self.times.iter().all(|t| {
            let indexed = self
                .offsets
                .binary_search_by_key(&t.relative_offset, |e| e.relative_offset)
                .is_ok();
            indexed || Some(self.absolute(t.relative_offset)) == last_batch
        })
    }

    /// The offset index in its file format.
    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len().saturating_mul(OFFSET_ENTRY_LEN));
        for e in &self.offsets {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// The time index in its file format.
    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len().saturating_mul(TIME_ENTRY_LEN));
        for e in &self.times {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Load persisted indexes of a sealed segment of `segment_len` bytes, or `None` if they are
    /// damaged: wrong size, entries not strictly increasing, or positions past the segment.
    /// The caller still checks the last offset entry against the segment data.
    pub fn decode(
        base_offset: i64,
        interval: u64,
        offsets: &[u8],
        times: &[u8],
        segment_len: u64,
    ) -> Option<Self> {
        let offsets = decode_offsets(offsets, segment_len)?;
        let times = decode_times(times)?;
        let max_timestamp = times.last().map(|t| t.timestamp);
        let last_batch = offsets.last().map(|e| e.relative_offset);
        Some(Self {
            base_offset,
            interval,
            offsets,
            times,
            bytes_since_entry: 0,
            max_timestamp,
            first_timestamp: None,
            last_batch,
        })
    }
}

fn decode_offsets(bytes: &[u8], segment_len: u64) -> Option<Vec<OffsetEntry>> {
    if bytes.len() % OFFSET_ENTRY_LEN != 0 {
        return None;
    }
    let entries: Vec<OffsetEntry> = bytes
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map(|c| OffsetEntry {
            relative_offset: be_u32(&c[0..4]),
            position: be_u32(&c[4..8]),
        })
        .collect();
    let increasing = entries
        .windows(2)
        .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
    let inside = entries
        .last()
        .is_none_or(|e| u64::from(e.position) < segment_len);
    (increasing && inside).then_some(entries)
}

fn decode_times(bytes: &[u8]) -> Option<Vec<TimeEntry>> {
    if bytes.len() % TIME_ENTRY_LEN != 0 {
        return None;
    }
    let entries: Vec<TimeEntry> = bytes
        .chunks_exact(TIME_ENTRY_LEN)
        .map(|c| TimeEntry {
            timestamp: be_i64(&c[0..8]),
            relative_offset: be_u32(&c[8..12]),
        })
        .collect();
    let increasing = entries
        .windows(2)
        .all(|w| w[0].timestamp < w[1].timestamp && w[0].relative_offset < w[1].relative_offset);
    increasing.then_some(entries)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    i64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten 100-byte batches of 2 records each at offsets 100, 102, ... with an interval of 250.
    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new(100, 250);
        let timestamps = [5, 3, 9, 9, 4, 12, 1, 1, 20, 2];
        for (i, ts) in timestamps.into_iter().enumerate() {
            let i = u64::try_from(i).unwrap();
            let offset = 100 + 2 * i64::try_from(i).unwrap();
            index.record_batch(i * 100, offset, ts, 100);
        }
        index
    }

    #[test]
    fn entries_are_sparse_and_lookups_start_early_enough() {
        let index = sample();
        // Entries at the batches starting at 300 and 600 and 900 bytes.
        assert_eq!(
            index.scan_start(105),
            ScanStart {
                offset: 100,
                position: 0
            }
        );
        assert_eq!(
            index.scan_start(106),
            ScanStart {
                offset: 106,
                position: 300
            }
        );
        assert_eq!(
            index.scan_start(1000),
            ScanStart {
                offset: 118,
                position: 900
            }
        );
        assert_eq!(index.position_bound(107), Some(600));
        assert_eq!(index.position_bound(119), None);
        assert_eq!(index.max_timestamp(), Some(20));
        assert_eq!(index.first_timestamp(), Some(5));
        // Running max is 9 at offset 106; for ts 10 the scan may start there.
        assert_eq!(index.time_scan_start(10).offset, 106);
        assert_eq!(index.time_scan_start(9).offset, 100);
    }

    #[test]
    fn round_trip_and_damage_detection() {
        let mut index = sample();
        index.seal();
        let (offsets, times) = (index.encode_offsets(), index.encode_times());
        let back = SegmentIndex::decode(100, 250, &offsets, &times, 1000).unwrap();
        assert_eq!(back.max_timestamp(), Some(20));
        assert_eq!(back.last_entry(), index.last_entry());
        assert!(SegmentIndex::decode(100, 250, &offsets[..7], &times, 1000).is_none());
        assert!(SegmentIndex::decode(100, 250, &offsets, &times, 900).is_none());
        let mut swapped = offsets.clone();
        swapped.rotate_left(8);
        assert!(SegmentIndex::decode(100, 250, &swapped, &times, 1000).is_none());
        assert!(SegmentIndex::decode(100, 250, &offsets, &times[..11], 1000).is_none());
    }
}
