//! Idempotent-producer state of one partition: per producer id, its epoch and the last five
//! batches' sequence ranges with their offsets (Kafka's ProducerStateManager, KIP-98/KIP-360).
//!
//! Sans-io: the partition checks each incoming batch here under the same lock as its log append,
//! and rebuilds the table by replaying batch headers from the log on start, so a batch retried
//! across a broker crash is still recognised.

use std::collections::{HashMap, VecDeque};

use crate::codec::batch::BatchHeader;

/// How many recent batches per producer are remembered for duplicate detection (Kafka: 5, the
/// client's max in-flight requests with idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

/// A batch already in the log, as remembered for duplicate detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not idempotent (producer id -1) or next in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with its original offsets, append nothing.
    Duplicate(BatchMeta),
}

/// Why an idempotent batch is refused; each maps to a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer epoch {got} is older than the current epoch {current}")]
    StaleEpoch { got: i16, current: i16 },
    #[error("out of order sequence {got}: expected {expected}")]
    OutOfOrder { got: i32, expected: i32 },
}

impl SequenceError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            SequenceError::StaleEpoch { .. } => 47, // INVALID_PRODUCER_EPOCH
            SequenceError::OutOfOrder { .. } => 45, // OUT_OF_ORDER_SEQUENCE_NUMBER
        }
    }
}

fn last_seq(h: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0 (Kafka DefaultRecordBatch.incrementSequence).
    let span = i64::from(h.base_sequence) + i64::from(h.last_offset_delta);
    i32::try_from(span % (i64::from(i32::MAX) + 1)).unwrap_or(0)
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer state for one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerTable {
    /// Decide what to do with a batch before it is appended.
    pub fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if h.producer_id < 0 {
            return Ok(SequenceCheck::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producer (new, or its batches were removed by retention): accept any
            // sequence, as Kafka does since KIP-360.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::StaleEpoch {
                got: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if h.base_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    got: h.base_sequence,
                    expected: 0,
                })
            };
        }
        let last = last_seq(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence == expected {
            Ok(SequenceCheck::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                got: h.base_sequence,
                expected,
            })
        }
    }

    /// Record a batch that is now in the log (`h.base_offset` is its assigned offset). Used both
    /// after an append and when replaying the log on start.
    pub fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq(h),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
        });
        while entry.batches.len() > REMEMBERED_BATCHES {
            entry.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut t = ProducerTable::default();
        let b0 = batch(7, 0, 0, 3, 10);
        assert_eq!(t.check(&b0), Ok(SequenceCheck::Append));
        t.record(&b0);
        let b1 = batch(7, 0, 3, 2, 13);
        assert_eq!(t.check(&b1), Ok(SequenceCheck::Append));
        t.record(&b1);
        let retry = batch(7, 0, 0, 3, -1);
        assert_eq!(
            t.check(&retry),
            Ok(SequenceCheck::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 2,
                base_offset: 10,
                last_offset: 12
            }))
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut t = ProducerTable::default();
        t.record(&batch(7, 2, 0, 1, 0));
        assert_eq!(
            t.check(&batch(7, 2, 5, 1, 0)),
            Err(SequenceError::OutOfOrder {
                got: 5,
                expected: 1
            })
        );
        assert_eq!(
            t.check(&batch(7, 1, 1, 1, 0)),
            Err(SequenceError::StaleEpoch { got: 1, current: 2 })
        );
        assert_eq!(
            t.check(&batch(7, 3, 4, 1, 0)),
            Err(SequenceError::OutOfOrder {
                got: 4,
                expected: 0
            })
        );
        assert_eq!(t.check(&batch(7, 3, 0, 1, 0)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerTable::default();
        for i in 0..7 {
            t.record(&batch(1, 0, i, 1, i64::from(i)));
        }
        assert!(matches!(
            t.check(&batch(1, 0, 6, 1, 0)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(matches!(
            t.check(&batch(1, 0, 2, 1, 0)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        assert!(
            t.check(&batch(1, 0, 1, 1, 0)).is_err(),
            "too old to recognise: out of order"
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerTable::default();
        t.record(&batch(1, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.check(&batch(1, 0, 0, 1, 2)), Ok(SequenceCheck::Append));
    }

    #[test]
    fn non_idempotent_batches_are_always_appended() {
        let t = ProducerTable::default();
        assert_eq!(t.check(&batch(-1, -1, 0, 1, 0)), Ok(SequenceCheck::Append));
    }
}
