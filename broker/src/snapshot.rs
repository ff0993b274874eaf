//! Replicated checkpoints of the cluster-mode processor: a pipeline's state store, dumped
//! right after a committed local checkpoint, written as chunked records to the replicated
//! topic `__runnel_checkpoint.<pipeline>`, and restored from there by a node that takes the
//! pipeline over with an older (or no) local checkpoint.
//!
//! - **Format.** A snapshot is the store's whole contents (`scan_prefix(b"")`, so the
//!   `CheckpointMeta` is in it) as length-prefixed `(key, value)` pairs; its position is the
//!   meta's `steps_applied` (the journal index replay resumes at). It is cut into chunks of at
//!   most [`CHUNK_BYTES`], one record each, every chunk carrying the position, an upload id
//!   (random per upload), its index, the chunk count, the snapshot's length and its CRC-32C.
//! - **Selection** ([`newest_complete`]): chunks are grouped by (position, upload id); a group
//!   is used only if every chunk is there, the header fields agree, the length and CRC-32C of
//!   the reassembled bytes match, and they decode to entries whose meta names this pipeline at
//!   the same position. The highest position among the usable groups wins; anything else is
//!   skipped. Grouping by upload id means two nodes' uploads of the same position (their
//!   bytes may differ: the checkpoint id and its counters are per node) never mix.
//! - **Upload** ([`SnapshotTap`], [`uploader`]): the step loop pays only for the dump (taken
//!   at most every `snapshot_interval_ms`); encoding and the Kafka produces run in a
//!   background task that always takes the newest dump, dropping any it had no time for.
//!
//! The argument that any node's snapshot may be restored by any other is in
//! `processor/EXACTLY-ONCE.md` ("Node loss").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_processor::state::{CheckpointMeta, KeyValue, StateStore, CHECKPOINT_META_KEY};
use thiserror::Error;
use tokio::sync::watch;

use crate::codec::builder::{encode_batch, ProducerInfo, Record};
use crate::kafka_client::fetch::decode_fetched;
use crate::kafka_client::{Client, KafkaClientError};

/// Largest chunk payload (the record stays well under the default 1 MiB message limit).
pub const CHUNK_BYTES: usize = 512 * 1024;
/// Records read from the topic's end first; doubled until a usable snapshot is found.
const FIRST_WINDOW: i64 = 16;
const MAGIC: &[u8; 8] = b"RNLSNAP1";
/// Magic, position, upload id, index, count, total length, CRC-32C.
const HEADER_LEN: usize = 8 + 8 + 16 + 4 + 4 + 8 + 4;

/// The checkpoint topic of a pipeline.
pub fn checkpoint_topic(pipeline: &str) -> String {
    format!("__runnel_checkpoint.{pipeline}")
}

/// A snapshot chunk or snapshot that cannot be used, or the topic cannot be read.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A chunk's or a snapshot's bytes are not what this module writes.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// Reading the checkpoint topic failed.
    #[error("checkpoint topic {topic}: {source}")]
    Read {
        /// The topic.
        topic: String,
        /// Why.
        source: KafkaClientError,
    },
}

fn malformed(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(what.into())
}

/// The header of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Journal position of the snapshot (its meta's `steps_applied`).
    pub position: u64,
    /// Random per upload: chunks of different uploads never mix.
    pub upload: [u8; 16],
    /// 0-based index of this chunk.
    pub index: u32,
    /// Chunks in the snapshot.
    pub count: u32,
    /// Length of the whole snapshot.
    pub total_len: u64,
    /// CRC-32C of the whole snapshot.
    pub crc: u32,
}

/// A dump of a store, ready to be uploaded or restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The meta's `steps_applied`.
    pub position: u64,
    /// Every entry of the store, meta included, in key order.
    pub entries: Vec<KeyValue>,
}

/// The entries as length-prefixed pairs (u32 big-endian lengths).
pub fn encode_entries(entries: &[KeyValue]) -> Result<Vec<u8>, SnapshotError> {
    let size: usize = entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for (k, v) in entries {
        for part in [k, v] {
            let len = u32::try_from(part.len())
                .map_err(|_| malformed(format!("an entry of {} bytes", part.len())))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// Reads `n` bytes at `*at`, moving it on.
fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], SnapshotError> {
    let end = at
        .checked_add(n)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| malformed(format!("{n} bytes wanted at {at} of {}", b.len())))?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

fn take_u32(b: &[u8], at: &mut usize) -> Result<u32, SnapshotError> {
    let mut a = [0u8; 4];
    a.copy_from_slice(take(b, at, 4)?);
    Ok(u32::from_be_bytes(a))
}

fn take_u64(b: &[u8], at: &mut usize) -> Result<u64, SnapshotError> {
    let mut a = [0u8; 8];
    a.copy_from_slice(take(b, at, 8)?);
    Ok(u64::from_be_bytes(a))
}

/// The inverse of [`encode_entries`].
pub fn decode_entries(b: &[u8]) -> Result<Vec<KeyValue>, SnapshotError> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < b.len() {
        let kl = usize::try_from(take_u32(b, &mut at)?).map_err(|_| malformed("key length"))?;
        let k = take(b, &mut at, kl)?.to_vec();
        let vl = usize::try_from(take_u32(b, &mut at)?).map_err(|_| malformed("value length"))?;
        let v = take(b, &mut at, vl)?.to_vec();
        out.push((k, v));
    }
    Ok(out)
}

/// The chunk records of one upload of `payload` (the encoded entries) at `position`.
pub fn encode_chunks(
    position: u64,
    upload: [u8; 16],
    payload: &[u8],
) -> Result<Vec<Vec<u8>>, SnapshotError> {
    let crc = crc32c::crc32c(payload);
    let total_len = u64::try_from(payload.len()).map_err(|_| malformed("snapshot length"))?;
    let parts: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(CHUNK_BYTES).collect()
    };
    let count = u32::try_from(parts.len()).map_err(|_| malformed("too many chunks"))?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let index = u32::try_from(i).map_err(|_| malformed("too many chunks"))?;
        let mut c = Vec::with_capacity(HEADER_LEN + part.len());
        c.extend_from_slice(MAGIC);
        c.extend_from_slice(&position.to_be_bytes());
        c.extend_from_slice(&upload);
        c.extend_from_slice(&index.to_be_bytes());
        c.extend_from_slice(&count.to_be_bytes());
        c.extend_from_slice(&total_len.to_be_bytes());
        c.extend_from_slice(&crc.to_be_bytes());
        c.extend_from_slice(part);
        out.push(c);
    }
    Ok(out)
}

/// A chunk's header and data.
pub fn decode_chunk(b: &[u8]) -> Result<(ChunkHeader, &[u8]), SnapshotError> {
    let mut at = 0;
    if take(b, &mut at, MAGIC.len())? != MAGIC {
        return Err(malformed("not a snapshot chunk"));
    }
    let position = take_u64(b, &mut at)?;
    let mut upload = [0u8; 16];
    upload.copy_from_slice(take(b, &mut at, 16)?);
    let index = take_u32(b, &mut at)?;
    let count = take_u32(b, &mut at)?;
    let total_len = take_u64(b, &mut at)?;
    let crc = take_u32(b, &mut at)?;
    if index >= count {
        return Err(malformed(format!("chunk {index} of {count}")));
    }
    let h = ChunkHeader {
        position,
        upload,
        index,
        count,
        total_len,
        crc,
    };
    Ok((h, &b[at..]))
}

/// One upload's chunks as found, by index (a repeated index keeps its first copy).
struct Group<'a> {
    first: ChunkHeader,
    consistent: bool,
    parts: BTreeMap<u32, &'a [u8]>,
}

/// Reassembles and checks one group; the snapshot if usable.
fn assemble(pipeline: &str, g: &Group<'_>) -> Option<Snapshot> {
    let h = g.first;
    if !g.consistent || u32::try_from(g.parts.len()).ok() != Some(h.count) {
        return None;
    }
    let mut payload = Vec::with_capacity(usize::try_from(h.total_len).ok()?);
    for part in g.parts.values() {
        payload.extend_from_slice(part);
    }
    if u64::try_from(payload.len()).ok() != Some(h.total_len) || crc32c::crc32c(&payload) != h.crc {
        return None;
    }
    let entries = decode_entries(&payload).ok()?;
    let meta = entries
        .iter()
        .find(|(k, _)| k.as_slice() == CHECKPOINT_META_KEY)
        .and_then(|(_, v)| serde_json::from_slice::<CheckpointMeta>(v).ok())?;
    if meta.pipeline != pipeline || meta.steps_applied != h.position {
        return None;
    }
    Some(Snapshot {
        position: h.position,
        entries,
    })
}

/// The newest usable snapshot of `pipeline` among `records` (chunk records' values, in any
/// order; other records are ignored): all chunks present, header fields agreeing, length and
/// CRC-32C matching, entries decoding with a meta of this pipeline at the chunk's position.
pub fn newest_complete<'a>(
    pipeline: &str,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Snapshot> {
    let mut groups: BTreeMap<(u64, [u8; 16]), Group<'a>> = BTreeMap::new();
    for r in records {
        let Ok((h, data)) = decode_chunk(r) else {
            continue;
        };
        let g = groups.entry((h.position, h.upload)).or_insert(Group {
            first: h,
            consistent: true,
            parts: BTreeMap::new(),
        });
        if (g.first.count, g.first.total_len, g.first.crc) != (h.count, h.total_len, h.crc) {
            g.consistent = false;
        }
        g.parts.entry(h.index).or_insert(data);
    }
    groups.values().rev().find_map(|g| assemble(pipeline, g))
}

/// Dumps `store` (all of it) as a snapshot; `None` if it holds no checkpoint.
pub fn dump(store: &impl StateStore) -> Result<Option<Snapshot>, SnapshotError> {
    let meta = store
        .checkpoint_meta()
        .map_err(|e| malformed(e.to_string()))?;
    let Some(meta) = meta else { return Ok(None) };
    let entries = store
        .scan_prefix(b"")
        .map_err(|e| malformed(e.to_string()))?;
    Ok(Some(Snapshot {
        position: meta.steps_applied,
        entries,
    }))
}

/// Feeds dumps of the store to the [`uploader`], at most every `interval` and only when the
/// checkpoint moved on. Cloned with the store; one per pipeline on a node.
pub struct SnapshotTap {
    interval: Duration,
    /// When the last dump was taken and its position.
    last: Mutex<Option<(Instant, u64)>>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl SnapshotTap {
    /// A tap and the receiving end for [`uploader`].
    pub fn new(interval: Duration) -> (Arc<Self>, watch::Receiver<Option<Arc<Snapshot>>>) {
        let (tx, rx) = watch::channel(None);
        let tap = Self {
            interval,
            last: Mutex::new(None),
            tx,
        };
        (Arc::new(tap), rx)
    }

    /// Called right after a checkpoint committed to `store`: dumps it if one is due.
    pub fn after_checkpoint(&self, store: &impl StateStore) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|(at, _)| at.elapsed() < self.interval) {
            return;
        }
        match dump(store) {
            Ok(Some(s)) if s.position > 0 && last.is_none_or(|(_, p)| p != s.position) => {
                *last = Some((Instant::now(), s.position));
                self.tx.send_replace(Some(Arc::new(s)));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot dump the checkpoint for the checkpoint topic: {e}"),
        }
    }
}

/// Writes one snapshot's chunks to `topic`, partition 0, one record per batch (acks=all).
pub async fn upload(client: &Client, topic: &str, s: &Snapshot) -> Result<usize, String> {
    let payload = encode_entries(&s.entries).map_err(|e| e.to_string())?;
    let upload = *uuid::Uuid::new_v4().as_bytes();
    let chunks = encode_chunks(s.position, upload, &payload).map_err(|e| e.to_string())?;
    let timestamp = crate::processing::unix_now_ms();
    for c in chunks {
        let rec = Record {
            key: None,
            value: Some(c),
            headers: Vec::new(),
            timestamp,
        };
        let batch = encode_batch(&[rec], ProducerInfo::default()).freeze();
        client
            .produce(topic, 0, batch)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(payload.len())
}

/// Uploads the newest dump each time the tap has one, until the tap is dropped or
/// `shutdown`. A failed upload is logged and left: the next dump replaces it.
pub async fn uploader(
    client: Arc<Client>,
    topic: String,
    mut rx: watch::Receiver<Option<Arc<Snapshot>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = crate::net::stopped(&mut shutdown) => return,
        }
        let Some(s) = rx.borrow_and_update().clone() else {
            continue;
        };
        match upload(&client, &topic, &s).await {
            Ok(bytes) => tracing::debug!(
                topic,
                position = s.position,
                bytes,
                "snapshot written to the checkpoint topic"
            ),
            Err(e) => tracing::warn!(topic, position = s.position, "snapshot upload failed: {e}"),
        }
    }
}

/// Reads `topic`'s tail (from its end backwards, doubling the window until a usable
/// snapshot is found or the whole topic was read) and returns its newest usable snapshot.
pub async fn read_newest(
    client: &Client,
    topic: &str,
    pipeline: &str,
) -> Result<Option<Snapshot>, SnapshotError> {
    let err = |source| SnapshotError::Read {
        topic: topic.to_owned(),
        source,
    };
    let Some((start, end)) = client.offsets(topic, 0).await.map_err(err)? else {
        return Ok(None);
    };
    let mut window = FIRST_WINDOW;
    loop {
        let from = end.saturating_sub(window).max(start);
        let mut values: Vec<bytes::Bytes> = Vec::new();
        let mut at = from;
        while at < end {
            let Some(f) = client.fetch(topic, 0, at, 0).await.map_err(err)? else {
                return Ok(None);
            };
            if f.error_code != 0 {
                return Err(malformed(format!(
                    "fetch at {at}: {}",
                    crate::kafka_client::error_text(f.error_code)
                )));
            }
            let until = end.min(f.high_watermark);
            let d = decode_fetched(f.records, at, until, usize::MAX)
                .map_err(|e| malformed(e.to_string()))?;
            values.extend(d.records.into_iter().filter_map(|r| r.value));
            if d.next_offset <= at {
                // Nothing whole came back below the end (a batch larger than a fetch).
                break;
            }
            at = d.next_offset;
        }
        if let Some(s) = newest_complete(pipeline, values.iter().map(|v| &v[..])) {
            return Ok(Some(s));
        }
        if from <= start {
            return Ok(None);
        }
        window = window.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_processor::state::memory::MemStore;
    use runnel_processor::state::WriteBatch;

    fn meta(pipeline: &str, steps: u64) -> Vec<u8> {
        serde_json::to_vec(&CheckpointMeta {
            pipeline: pipeline.into(),
            id: 3,
            steps_applied: steps,
            input_next_offsets: vec![("in".into(), 0, 17)],
            output_next_seq: vec![("out".into(), 0, 5)],
            watermark: Some(1_000),
            processing_time: 2_000,
            journal_next: Some(4),
        })
        .unwrap()
    }

    fn entries(pipeline: &str, steps: u64, big: usize) -> Vec<KeyValue> {
        vec![
            (CHECKPOINT_META_KEY.to_vec(), meta(pipeline, steps)),
            (b"a".to_vec(), vec![]),
            (
                b"w/dev-1".to_vec(),
                (0..big).map(|i| u8::try_from(i % 251).unwrap()).collect(),
            ),
        ]
    }

    fn chunks(steps: u64, upload: u8, big: usize) -> Vec<Vec<u8>> {
        let payload = encode_entries(&entries("p", steps, big)).unwrap();
        encode_chunks(steps, [upload; 16], &payload).unwrap()
    }

    fn pick(records: &[Vec<u8>]) -> Option<u64> {
        newest_complete("p", records.iter().map(Vec::as_slice)).map(|s| s.position)
    }

    #[test]
    fn entries_round_trip_and_truncations_are_errors() {
        let e = entries("p", 9, 1_000);
        let b = encode_entries(&e).unwrap();
        assert_eq!(decode_entries(&b).unwrap(), e);
        assert_eq!(decode_entries(&[]).unwrap(), Vec::<KeyValue>::new());
        // A cut between two pairs decodes to the pairs before it (the CRC-32C and length
        // in the chunk header catch those); any other cut is an error.
        let mut bounds = vec![0];
        for (k, v) in &e {
            bounds.push(bounds.last().unwrap() + 8 + k.len() + v.len());
        }
        for cut in 1..b.len() {
            match bounds.iter().position(|x| *x == cut) {
                Some(i) => assert_eq!(decode_entries(&b[..cut]).unwrap(), e[..i].to_vec()),
                None => assert!(decode_entries(&b[..cut]).is_err(), "cut at {cut}"),
            }
        }
    }

    #[test]
    fn a_large_snapshot_is_cut_into_bounded_chunks_that_reassemble() {
        let big = 2 * CHUNK_BYTES + 10;
        let c = chunks(40, 1, big);
        assert_eq!(c.len(), 3);
        for (i, chunk) in c.iter().enumerate() {
            assert!(chunk.len() <= HEADER_LEN + CHUNK_BYTES);
            let (h, _) = decode_chunk(chunk).unwrap();
            assert_eq!(
                (h.position, h.index, h.count),
                (40, u32::try_from(i).unwrap(), 3)
            );
        }
        // Any order, with a repeated chunk.
        let shuffled = [c[2].clone(), c[0].clone(), c[2].clone(), c[1].clone()];
        let s = newest_complete("p", shuffled.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(s.position, 40);
        assert_eq!(s.entries, entries("p", 40, big));
    }

    #[test]
    fn malformed_chunks_are_errors_not_panics() {
        let c = &chunks(5, 1, 10)[0];
        for cut in 0..HEADER_LEN {
            assert!(decode_chunk(&c[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = c.clone();
        bad[0] ^= 1;
        assert!(decode_chunk(&bad).is_err());
        // Index not below count.
        let mut bad = c.clone();
        bad[32..36].copy_from_slice(&7u32.to_be_bytes());
        assert!(decode_chunk(&bad).is_err());
    }

    #[test]
    fn the_newest_complete_snapshot_wins() {
        let big = CHUNK_BYTES + 1;
        let old = chunks(10, 1, big);
        let new = chunks(20, 2, big);
        let all: Vec<Vec<u8>> = old.iter().chain(&new).cloned().collect();
        assert_eq!(pick(&all), Some(20));
        // Log order does not matter.
        let rev: Vec<Vec<u8>> = new.iter().chain(&old).cloned().collect();
        assert_eq!(pick(&rev), Some(20));
        // Junk records are ignored.
        let mut junk = all.clone();
        junk.push(b"not a chunk".to_vec());
        assert_eq!(pick(&junk), Some(20));
    }

    #[test]
    fn an_incomplete_snapshot_falls_back_to_an_older_complete_one() {
        let big = CHUNK_BYTES + 1;
        let old = chunks(10, 1, big);
        let new = chunks(20, 2, big);
        let records = vec![old[0].clone(), old[1].clone(), new[0].clone()];
        assert_eq!(pick(&records), Some(10));
        assert_eq!(pick(&[new[1].clone()]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn a_corrupt_snapshot_falls_back_to_an_older_complete_one() {
        let old = chunks(10, 1, 100);
        let mut new = chunks(20, 2, 100);
        let last = new[0].len() - 1;
        new[0][last] ^= 0xff;
        let records: Vec<Vec<u8>> = old.iter().chain(&new).cloned().collect();
        assert_eq!(pick(&records), Some(10));
        // A CRC that matches but a position the meta does not have.
        let payload = encode_entries(&entries("p", 20, 100)).unwrap();
        let lying = encode_chunks(30, [3; 16], &payload).unwrap();
        let records: Vec<Vec<u8>> = old.iter().chain(&lying).cloned().collect();
        assert_eq!(pick(&records), Some(10));
        // Another pipeline's snapshot.
        let payload = encode_entries(&entries("q", 40, 100)).unwrap();
        let other = encode_chunks(40, [4; 16], &payload).unwrap();
        let records: Vec<Vec<u8>> = old.iter().chain(&other).cloned().collect();
        assert_eq!(pick(&records), Some(10));
    }

    #[test]
    fn two_uploads_of_one_position_do_not_mix() {
        let big = CHUNK_BYTES + 1;
        // Same position, different bytes (another node's checkpoint counters).
        let a = chunks(20, 1, big);
        let payload = encode_entries(&entries("p", 20, big + 5)).unwrap();
        let b = encode_chunks(20, [2; 16], &payload).unwrap();
        // Interleaved, and each upload missing one chunk the other has.
        let records = vec![a[0].clone(), b[1].clone()];
        assert_eq!(pick(&records), None);
        let records = [a[0].clone(), b[0].clone(), b[1].clone()];
        let s = newest_complete("p", records.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(s.entries, entries("p", 20, big + 5));
    }

    #[test]
    fn the_tap_dumps_at_most_once_per_interval_and_only_new_positions() {
        let mut store = MemStore::default();
        let (tap, rx) = SnapshotTap::new(Duration::ZERO);
        tap.after_checkpoint(&store);
        assert!(rx.borrow().is_none(), "no checkpoint, no dump");
        let mut b = WriteBatch::default();
        b.put(CHECKPOINT_META_KEY, meta("p", 7));
        b.put(b"k".to_vec(), b"v".to_vec());
        store.write_batch(b).unwrap();
        tap.after_checkpoint(&store);
        let s = rx.borrow().clone().unwrap();
        assert_eq!(s.position, 7);
        assert_eq!(s.entries.len(), 2);
        let (slow, rx) = SnapshotTap::new(Duration::from_secs(3_600));
        slow.after_checkpoint(&store);
        assert_eq!(rx.borrow().as_ref().map(|s| s.position), Some(7));
        let mut b = WriteBatch::default();
        b.put(CHECKPOINT_META_KEY, meta("p", 8));
        store.write_batch(b).unwrap();
        slow.after_checkpoint(&store);
        assert_eq!(
            rx.borrow().as_ref().map(|s| s.position),
            Some(7),
            "within the interval"
        );
    }
}
