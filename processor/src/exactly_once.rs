//! The pure parts of exactly-once output: deterministic output sequence numbers, the step
//! journal entry, and de-duplication against the output topics' tails on recovery.
//! The mechanism and its argument are in `EXACTLY-ONCE.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::record::{pipeline_seq, OutputRecord, StreamId};
use crate::time::Millis;

/// Assigns each output stream's records consecutive sequence numbers from 0, in emission
/// order. Because the pipeline is deterministic given its journal, record *n* of a stream is
/// the same record on every replay, so `(stream, seq)` identifies it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSequencer {
    next: BTreeMap<StreamId, u64>,
}

impl OutputSequencer {
    /// The next sequence number of `stream`, advancing it.
    pub fn assign(&mut self, stream: &StreamId) -> u64 {
        let n = self.next.entry(stream.clone()).or_insert(0);
        let seq = *n;
        *n = n.saturating_add(1);
        seq
    }

    /// Next sequence number per stream, for the checkpoint.
    pub fn snapshot(&self) -> Vec<(String, u32, u64)> {
        self.next
            .iter()
            .map(|(s, n)| (s.topic.clone(), s.partition, *n))
            .collect()
    }

    /// Restores from [`OutputSequencer::snapshot`].
    pub fn restore(snapshot: &[(String, u32, u64)]) -> Self {
        Self {
            next: snapshot
                .iter()
                .map(|(t, p, n)| {
                    (
                        StreamId {
                            topic: t.clone(),
                            partition: *p,
                        },
                        *n,
                    )
                })
                .collect(),
        }
    }
}

/// One journal entry: the nondeterministic choices of one step (which input records, at what
/// processing time), written durably *before* any output of the step. Replaying the journal
/// from a checkpoint re-creates exactly the outputs of the original run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDescriptor {
    /// Position in the journal (0-based, gap-free).
    pub index: u64,
    /// Processing time given to the step.
    pub processing_time: Millis,
    /// Input records consumed: `(topic, partition, first offset, end offset exclusive)`, in the
    /// order they were interleaved. Ranges are contiguous per partition.
    pub ranges: Vec<(String, u32, i64, i64)>,
    /// Whether the step ends a bounded input.
    pub end: bool,
}

/// The last `runnel.seq` this pipeline wrote to a stream, from the stream's tail (records in
/// log order, oldest first; only the end is examined). `None` if none of its records are there.
pub fn last_seq_in_tail<'a>(
    pipeline: &str,
    tail: impl DoubleEndedIterator<Item = &'a [(String, Vec<u8>)]>,
) -> Option<u64> {
    tail.rev()
        .filter_map(pipeline_seq)
        .find(|(p, _)| p == pipeline)
        .map(|(_, s)| s)
}

/// An output the recovering writer must not write: it would skip a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("output stream {stream}: next sequence should be {expected}, got {got}")]
pub struct SequenceGap {
    /// Stream.
    pub stream: StreamId,
    /// The sequence number the stream is missing.
    pub expected: u64,
    /// What the pipeline produced.
    pub got: u64,
}

/// Decides, per output record, whether it is new or already in its stream's tail.
#[derive(Debug, Clone, Default)]
pub struct TailDeduper {
    last_seen: BTreeMap<StreamId, Option<u64>>,
}

impl TailDeduper {
    /// A deduper knowing each stream's last written sequence number (`None`: nothing written).
    /// Streams not listed are treated as empty.
    pub fn new(last_seen: impl IntoIterator<Item = (StreamId, Option<u64>)>) -> Self {
        Self {
            last_seen: last_seen.into_iter().collect(),
        }
    }

    /// `Ok(true)`: write it (and it becomes the stream's last). `Ok(false)`: a duplicate of a
    /// record already written; drop it. `Err`: it would leave a gap, which means the output
    /// stream lost records or the replay is not deterministic; stop rather than write.
    pub fn admit(&mut self, rec: &OutputRecord) -> Result<bool, SequenceGap> {
        let last = self.last_seen.entry(rec.stream.clone()).or_insert(None);
        let expected = last.map_or(0, |l| l.saturating_add(1));
        if rec.seq < expected {
            Ok(false)
        } else if rec.seq == expected {
            *last = Some(rec.seq);
            Ok(true)
        } else {
            Err(SequenceGap {
                stream: rec.stream.clone(),
                expected,
                got: rec.seq,
            })
        }
    }
}

/// The records of one stream still to write, given the last sequence number found in its
/// tail: drops those already written, keeps order.
pub fn dedupe_against_tail(
    records: Vec<OutputRecord>,
    last_seq_seen: Option<u64>,
) -> Vec<OutputRecord> {
    records
        .into_iter()
        .filter(|r| last_seq_seen.is_none_or(|l| r.seq > l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{HEADER_PIPELINE, HEADER_SEQ};

    fn stream(t: &str) -> StreamId {
        StreamId {
            topic: t.into(),
            partition: 0,
        }
    }

    fn rec(t: &str, seq: u64) -> OutputRecord {
        OutputRecord {
            stream: stream(t),
            seq,
            key: None,
            value: Vec::new(),
            headers: vec![
                (HEADER_PIPELINE.into(), b"p".to_vec()),
                (HEADER_SEQ.into(), seq.to_string().into_bytes()),
            ],
            timestamp: 0,
        }
    }

    #[test]
    fn sequencer_is_per_stream_and_restores() {
        let mut s = OutputSequencer::default();
        assert_eq!(s.assign(&stream("a")), 0);
        assert_eq!(s.assign(&stream("a")), 1);
        assert_eq!(s.assign(&stream("b")), 0);
        let mut r = OutputSequencer::restore(&s.snapshot());
        assert_eq!(r.assign(&stream("a")), 2);
        assert_eq!(r, {
            s.assign(&stream("a"));
            s
        });
    }

    #[test]
    fn tail_scan_finds_this_pipelines_last_seq() {
        let mut other = rec("a", 99);
        other.headers[0].1 = b"q".to_vec();
        let plain: Vec<(String, Vec<u8>)> = Vec::new();
        let tail = [
            rec("a", 3).headers,
            rec("a", 4).headers,
            other.headers,
            plain,
        ];
        assert_eq!(
            last_seq_in_tail("p", tail.iter().map(Vec::as_slice)),
            Some(4)
        );
        assert_eq!(last_seq_in_tail("z", tail.iter().map(Vec::as_slice)), None);
    }

    #[test]
    fn dedupe_drops_written_and_refuses_gaps() {
        let recs: Vec<_> = (0..5).map(|i| rec("a", i)).collect();
        let kept = dedupe_against_tail(recs.clone(), Some(2));
        assert_eq!(kept.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(dedupe_against_tail(recs.clone(), None).len(), 5);

        let mut d = TailDeduper::new([(stream("a"), Some(2))]);
        let admitted: Vec<_> = recs.iter().map(|r| d.admit(r).unwrap()).collect();
        assert_eq!(admitted, [false, false, false, true, true]);
        assert_eq!(d.admit(&rec("b", 0)), Ok(true));
        assert!(d.admit(&rec("b", 2)).is_err());
    }
}
