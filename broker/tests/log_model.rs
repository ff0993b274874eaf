//! Model-based and crash-recovery tests of the partition logs.
//!
//! The proptest drives a [`FileLog`] and a [`MemLog`] with the same random operations (appends,
//! reads, truncations, restarts, retention, timestamp lookups, flushes) and compares both with a
//! plain `Vec` of stored batches. The other tests damage segment and index files directly and
//! check what `FileLog::open` makes of them.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use runnel_broker::codec::batch;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_broker::log::file::{CleanClose, FileLog, FileLogConfig};
use runnel_broker::log::memory::MemLog;
use runnel_broker::log::{LogError, PartitionLog, RetentionPolicy, TimestampOffset};
use tempfile::TempDir;

/// One stored batch of the model.
#[derive(Debug, Clone)]
struct Stored {
    base: i64,
    next: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

/// The reference: a `Vec` of the batches the log should hold, as it should hold them.
#[derive(Debug, Default)]
struct Model {
    start: i64,
    end: i64,
    batches: Vec<Stored>,
}

impl Model {
    fn append(&mut self, inputs: &[BytesMut], epoch: i32) {
        for input in inputs {
            let mut bytes = input.clone();
            let header = batch::validate(&bytes).unwrap();
            batch::set_base_offset(&mut bytes, self.end);
            batch::set_leader_epoch(&mut bytes, epoch);
            let next = self.end + i64::from(header.record_count);
            let max_timestamp = header.max_timestamp;
            self.batches.push(Stored {
                base: self.end,
                next,
                max_timestamp,
                bytes: bytes.freeze(),
            });
            self.end = next;
        }
    }

    fn read(&self, offset: i64, max_offset: i64, max_bytes: usize) -> Option<Vec<u8>> {
        if offset < self.start || offset > self.end {
            return None;
        }
        let mut out = Vec::new();
        if offset >= max_offset {
            return Some(out);
        }
        let from = self.batches.iter().skip_while(|b| b.next <= offset);
        for (n, b) in from.enumerate() {
            if b.base >= max_offset || (n > 0 && out.len() + b.bytes.len() > max_bytes) {
                break;
            }
            out.extend_from_slice(&b.bytes);
        }
        Some(out)
    }

    fn is_boundary(&self, offset: i64) -> bool {
        offset == self.end || self.batches.iter().any(|b| b.base == offset)
    }

    fn truncate(&mut self, offset: i64) {
        self.batches.retain(|b| b.base < offset);
        self.end = offset;
    }

    fn advance_start(&mut self, start: i64) {
        self.batches.retain(|b| b.base >= start);
        self.start = start;
    }

    fn offset_for_timestamp(&self, ts: i64) -> Option<TimestampOffset> {
        let b = self.batches.iter().find(|b| b.max_timestamp >= ts)?;
        Some(TimestampOffset {
            offset: b.base,
            timestamp: b.max_timestamp,
        })
    }
}

/// Batches as (timestamp, value length) per record.
type BatchSpec = Vec<(i64, usize)>;

#[derive(Debug, Clone)]
enum Op {
    Append {
        batches: Vec<BatchSpec>,
        epoch: i32,
    },
    Read {
        at: Index,
        max_offset_back: Option<u8>,
        max_bytes: u16,
    },
    Truncate {
        at: Index,
    },
    Restart {
        flush_first: bool,
    },
    Retention {
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    },
    Timestamp {
        ts: i64,
    },
    Flush,
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    prop::collection::vec((0i64..1000, 0usize..40), 1..5)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(batch_spec(), 1..4), 0i32..3)
            .prop_map(|(batches, epoch)| Op::Append { batches, epoch }),
        4 => (any::<Index>(), prop::option::of(0u8..4), 0u16..700)
            .prop_map(|(at, max_offset_back, max_bytes)| Op::Read { at, max_offset_back, max_bytes }),
        1 => any::<Index>().prop_map(|at| Op::Truncate { at }),
        1 => any::<bool>().prop_map(|flush_first| Op::Restart { flush_first }),
        1 => (prop::option::of(0i64..1000), prop::option::of(0u64..3000), 0i64..2000)
            .prop_map(|(retention_ms, retention_bytes, now_ms)| Op::Retention { retention_ms, retention_bytes, now_ms }),
        1 => (-1i64..1100).prop_map(|ts| Op::Timestamp { ts }),
        1 => Just(Op::Flush),
    ]
}

fn config() -> impl Strategy<Value = FileLogConfig> {
    (100u64..1500, 1u64..300, prop::option::of(Just(500i64))).prop_map(
        |(segment_bytes, index_interval_bytes, segment_ms)| FileLogConfig {
            segment_bytes,
            segment_ms,
            index_interval_bytes,
            ..FileLogConfig::default()
        },
    )
}

fn encode(spec: &BatchSpec) -> BytesMut {
    let records: Vec<Record> = spec
        .iter()
        .map(|&(timestamp, len)| Record {
            value: Some(vec![b'v'; len]),
            timestamp,
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerInfo::default())
}

/// The system under test: both logs side by side.
struct Logs {
    dir: TempDir,
    config: FileLogConfig,
    file: Option<FileLog>,
    mem: MemLog,
}

impl Logs {
    fn file(&mut self) -> &mut FileLog {
        self.file.as_mut().expect("file log is open")
    }

    fn both(&mut self) -> [&mut dyn PartitionLog; 2] {
        [self.file.as_mut().expect("file log is open"), &mut self.mem]
    }
}

fn run_op(logs: &mut Logs, model: &mut Model, op: &Op) {
    match op {
        Op::Append { batches, epoch } => {
            let inputs: Vec<BytesMut> = batches.iter().map(encode).collect();
            let mut buf = BytesMut::new();
            inputs.iter().for_each(|b| buf.extend_from_slice(b));
            let expected_base = model.end;
            model.append(&inputs, *epoch);
            for log in logs.both() {
                let info = log.append(buf.clone().freeze(), *epoch).unwrap();
                assert_eq!(
                    (info.base_offset, info.last_offset),
                    (expected_base, model.end - 1)
                );
            }
        }
        Op::Read {
            at,
            max_offset_back,
            max_bytes,
        } => {
            // Offsets from start - 1 to end + 1, so out-of-range reads happen too.
            let span = usize::try_from(model.end - model.start + 3).unwrap();
            let offset = model.start - 1 + i64::try_from(at.index(span)).unwrap();
            let max_offset = max_offset_back.map_or(i64::MAX, |back| model.end - i64::from(back));
            let max_bytes = usize::from(*max_bytes);
            let expected = model.read(offset, max_offset, max_bytes);
            for log in logs.both() {
                match (log.read(offset, max_offset, max_bytes), &expected) {
                    (Ok(got), Some(want)) => assert_eq!(
                        &got[..],
                        &want[..],
                        "read({offset}, {max_offset}, {max_bytes})"
                    ),
                    (Err(LogError::OffsetOutOfRange { .. }), None) => {}
                    (got, want) => panic!("read({offset}) gave {got:?}, model says {want:?}"),
                }
                // The same batches located in the segment files (what Fetch sends).
                match (log.read_batches(offset, max_offset, max_bytes), &expected) {
                    (Ok(got), Some(want)) => assert_eq!(
                        &got.to_bytes().unwrap()[..],
                        &want[..],
                        "read_batches({offset}, {max_offset}, {max_bytes})"
                    ),
                    (Err(LogError::OffsetOutOfRange { .. }), None) => {}
                    (got, want) => {
                        panic!("read_batches({offset}) gave {got:?}, model says {want:?}")
                    }
                }
            }
        }
        Op::Truncate { at } => {
            let mut candidates: Vec<i64> = model
                .batches
                .iter()
                .flat_map(|b| [b.base, b.base + 1])
                .collect();
            candidates.push(model.end);
            let offset = candidates[at.index(candidates.len())];
            let boundary = model.is_boundary(offset);
            for log in logs.both() {
                match log.truncate_to(offset) {
                    Ok(()) => assert!(boundary, "truncate_to({offset}) accepted a non-boundary"),
                    Err(LogError::NotBatchBoundary(o)) => assert!(!boundary && o == offset),
                    Err(e) => panic!("truncate_to({offset}): {e}"),
                }
            }
            if boundary {
                model.truncate(offset);
            }
            check_everything(logs, model);
        }
        Op::Restart { flush_first } => {
            if *flush_first {
                flush(logs.file());
            }
            logs.file = None;
            let reopened = FileLog::open(logs.dir.path(), logs.config.clone()).unwrap();
            assert_eq!(reopened.flushed_offset(), reopened.log_end_offset());
            logs.file = Some(reopened);
            check_everything(logs, model);
        }
        Op::Retention {
            retention_ms,
            retention_bytes,
            now_ms,
        } => {
            let policy = RetentionPolicy {
                retention_ms: *retention_ms,
                retention_bytes: *retention_bytes,
            };
            let from_file = logs.file().enforce_retention(*now_ms, &policy).unwrap();
            let from_mem = logs.mem.enforce_retention(*now_ms, &policy).unwrap();
            assert_eq!(from_file, from_mem, "both logs delete the same segments");
            assert!(from_file >= model.start && model.is_boundary(from_file));
            model.advance_start(from_file);
        }
        Op::Timestamp { ts } => {
            let expected = model.offset_for_timestamp(*ts);
            for log in logs.both() {
                assert_eq!(
                    log.offset_for_timestamp(*ts).unwrap(),
                    expected,
                    "offset_for_timestamp({ts})"
                );
            }
        }
        Op::Flush => {
            for log in logs.both() {
                flush(log);
                assert_eq!(log.flushed_offset(), log.log_end_offset());
            }
        }
    }
    for log in logs.both() {
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (model.start, model.end)
        );
        assert!(log.flushed_offset() <= log.log_end_offset());
    }
}

fn flush(log: &mut dyn PartitionLog) {
    let plan = log.flush_plan();
    plan.sync().unwrap();
    log.mark_flushed(plan.up_to);
}

/// Everything readable matches the model, batch for batch.
fn check_everything(logs: &mut Logs, model: &Model) {
    let all = model.read(model.start, i64::MAX, usize::MAX).unwrap();
    for log in logs.both() {
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (model.start, model.end)
        );
        assert_eq!(
            &log.read(model.start, i64::MAX, usize::MAX).unwrap()[..],
            &all[..]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn file_and_mem_logs_match_the_model(config in config(), ops in prop::collection::vec(op(), 1..40)) {
        let dir = TempDir::new().unwrap();
        let file = FileLog::open(dir.path(), config.clone()).unwrap();
        let mem = MemLog::with_config(config.clone());
        let mut logs = Logs { dir, config, file: Some(file), mem };
        let mut model = Model::default();
        for op in &ops {
            run_op(&mut logs, &mut model, op);
        }
        check_everything(&mut logs, &model);
    }
}

// ---- Crash recovery and index repair ------------------------------------------------------

fn small_batch(records: usize, ts: i64) -> Bytes {
    encode(&vec![(ts, 20); records]).freeze()
}

/// A batch that would be valid at `base_offset`, as the log would have written it.
fn stored_batch(records: usize, base_offset: i64) -> BytesMut {
    let mut b = encode(&vec![(5, 20); records]);
    batch::set_base_offset(&mut b, base_offset);
    b
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

fn active_segment(dir: &Path) -> PathBuf {
    files_with_ext(dir, "log").pop().unwrap()
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn read_all(log: &FileLog) -> Bytes {
    log.read(log.log_start_offset(), i64::MAX, usize::MAX)
        .unwrap()
}

/// Three appends (offsets 0..6) in one segment; returns the log's bytes and the segment length.
fn three_appends(dir: &Path) -> (Bytes, u64) {
    let mut log = FileLog::open(dir, FileLogConfig::default()).unwrap();
    for ts in 0..3 {
        log.append(small_batch(2, ts), 0).unwrap();
    }
    let bytes = read_all(&log);
    drop(log);
    (bytes, fs::metadata(active_segment(dir)).unwrap().len())
}

#[test]
fn torn_or_bad_tails_are_cut_on_open() {
    let whole = stored_batch(2, 6);
    let mut bad_crc = whole.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0x55;
    let mut good_after_garbage = BytesMut::from(&b"junk"[..]);
    good_after_garbage.extend_from_slice(&whole);
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"not a batch at all, just some bytes".repeat(3)),
        ("zeroes", vec![0; 4096]),
        ("partial header", whole[..30].to_vec()),
        ("half batch", whole[..whole.len() / 2].to_vec()),
        ("bad crc", bad_crc.to_vec()),
        ("discontiguous", stored_batch(2, 9).to_vec()),
        ("good batch behind garbage", good_after_garbage.to_vec()),
    ];
    for (what, tail) in tails {
        let dir = TempDir::new().unwrap();
        let (before, len) = three_appends(dir.path());
        append_to_file(&active_segment(dir.path()), &tail);
        let mut log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 6, "{what}");
        assert_eq!(log.flushed_offset(), 6, "{what}");
        assert_eq!(read_all(&log), before, "{what}");
        assert_eq!(
            fs::metadata(active_segment(dir.path())).unwrap().len(),
            len,
            "{what}: file cut"
        );
        assert_eq!(
            log.append(small_batch(1, 9), 0).unwrap().base_offset,
            6,
            "{what}"
        );
        drop(log);
        let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!(
            log.log_end_offset(),
            7,
            "{what}: stable across another restart"
        );
    }
}

#[test]
fn a_valid_whole_batch_at_the_tail_survives() {
    let dir = TempDir::new().unwrap();
    let (before, _) = three_appends(dir.path());
    let extra = stored_batch(3, 6);
    append_to_file(&active_segment(dir.path()), &extra);
    let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(read_all(&log)[..before.len()], before[..]);
}

#[test]
fn damage_inside_the_active_segment_cuts_from_the_damaged_batch() {
    let dir = TempDir::new().unwrap();
    let (before, _) = three_appends(dir.path());
    // Not closed cleanly (the marker is what a clean close leaves): every batch is checked.
    fs::remove_file(dir.path().join(CleanClose::FILE)).unwrap();
    let first_len = batch::parse_header(&before).unwrap().total_len();
    let path = active_segment(dir.path());
    let mut data = fs::read(&path).unwrap();
    data[first_len + 70] ^= 1; // inside the second batch's records
    fs::write(&path, &data).unwrap();
    let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log), before.slice(..first_len));
}

/// The clean-close marker's text.
fn clean_close(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(CleanClose::FILE)).ok()
}

/// A clean close leaves a marker naming the active segment and its length; the next open
/// trusts it (as Kafka trusts a clean shutdown: the batches' CRCs are not checked again, so
/// damage inside a record goes unseen, while a damaged header still sends it to the full
/// check) and removes it, so a crash after that open gets the full check again.
#[test]
fn a_clean_close_is_trusted_by_the_next_open_only() {
    let dir = TempDir::new().unwrap();
    let (before, len) = three_appends(dir.path());
    assert_eq!(
        clean_close(dir.path()).as_deref(),
        Some(&*format!("0 {len}\n"))
    );
    let first_len = batch::parse_header(&before).unwrap().total_len();
    let path = active_segment(dir.path());
    let mut data = fs::read(&path).unwrap();
    data[first_len + 70] ^= 1; // inside the second batch's records: only its CRC tells
    fs::write(&path, &data).unwrap();

    let mut log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(
        log.log_end_offset(),
        6,
        "trusted: the CRCs were not checked"
    );
    assert_eq!(clean_close(dir.path()), None, "the open removed the marker");
    assert_eq!(log.append(small_batch(1, 9), 0).unwrap().base_offset, 6);
    std::mem::forget(log); // a crash: no clean close
    assert_eq!(clean_close(dir.path()), None);
    let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(
        log.log_end_offset(),
        2,
        "after a crash every batch is checked"
    );
    drop(log);

    // A marker that names another length, or does not parse, is not trusted.
    for marker in [format!("0 {}\n", len + 1), "garbage".to_string()] {
        let dir = TempDir::new().unwrap();
        three_appends(dir.path());
        let path = active_segment(dir.path());
        let mut data = fs::read(&path).unwrap();
        data[first_len + 70] ^= 1;
        fs::write(&path, &data).unwrap();
        fs::write(dir.path().join(CleanClose::FILE), &marker).unwrap();
        let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 2, "marker {marker:?}");
        assert_eq!(clean_close(dir.path()), None);
    }

    // A trusted segment whose batch headers do not line up is checked in full and cut.
    let dir = TempDir::new().unwrap();
    three_appends(dir.path());
    let path = active_segment(dir.path());
    let mut data = fs::read(&path).unwrap();
    data[first_len + 8] ^= 0x40; // the second batch's length
    fs::write(&path, &data).unwrap();
    let log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log), before.slice(..first_len));
}

/// Many small sealed segments with dense indexes.
fn many_segments(dir: &Path) -> FileLogConfig {
    let config = FileLogConfig {
        segment_bytes: 700,
        index_interval_bytes: 60,
        segment_ms: None,
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir, config.clone()).unwrap();
    for i in 0..60 {
        log.append(
            small_batch(1 + i % 3, i64::try_from(i * 37 % 500).unwrap()),
            0,
        )
        .unwrap();
    }
    assert!(log.segment_count() > 5);
    config
}

fn snapshot(log: &FileLog) -> (Bytes, Vec<Option<TimestampOffset>>, Vec<Bytes>) {
    let timestamps = (0..520)
        .step_by(13)
        .map(|ts| log.offset_for_timestamp(ts).unwrap())
        .collect();
    let reads = (log.log_start_offset()..log.log_end_offset())
        .map(|o| log.read(o, i64::MAX, 300).unwrap())
        .collect();
    (read_all(log), timestamps, reads)
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt_on_open() {
    type Damage = fn(&Path);
    let damages: Vec<(&str, Damage)> = vec![
        ("deleted", |p| fs::remove_file(p).unwrap()),
        ("odd size", |p| fs::write(p, [1, 2, 3, 4, 5, 6, 7]).unwrap()),
        ("all ones", |p| {
            let len = fs::metadata(p).unwrap().len().max(24);
            fs::write(p, vec![0xff; usize::try_from(len).unwrap()]).unwrap();
        }),
        ("reversed", |p| {
            let mut data = fs::read(p).unwrap();
            data.reverse();
            fs::write(p, data).unwrap();
        }),
        ("plausible but wrong", |p| {
            // One entry, increasing and inside the file, but not at a batch start.
            let entry: Vec<u8> = if p.extension().is_some_and(|e| e == "index") {
                [1u32.to_be_bytes(), 5u32.to_be_bytes()].concat()
            } else {
                [0i64.to_be_bytes().to_vec(), 0u32.to_be_bytes().to_vec()].concat()
            };
            fs::write(p, entry).unwrap();
        }),
        ("emptied", |p| fs::write(p, []).unwrap()),
    ];
    for (what, damage) in damages {
        for ext in ["index", "timeindex"] {
            let dir = TempDir::new().unwrap();
            let config = many_segments(dir.path());
            let pristine: Vec<(PathBuf, Vec<u8>)> = files_with_ext(dir.path(), ext)
                .into_iter()
                .map(|p| (p.clone(), fs::read(&p).unwrap()))
                .collect();
            let expected = snapshot(&FileLog::open(dir.path(), config.clone()).unwrap());
            for (path, _) in &pristine {
                damage(path);
            }
            let log = FileLog::open(dir.path(), config.clone()).unwrap();
            assert!(
                snapshot(&log) == expected,
                "{what} {ext}: same answers after repair"
            );
            drop(log);
            // Sealed indexes are rewritten exactly as they were written at roll time.
            let (active, sealed) = pristine.split_last().unwrap();
            for (path, bytes) in sealed {
                assert_eq!(
                    &fs::read(path).unwrap(),
                    bytes,
                    "{what} {ext}: {} rebuilt",
                    path.display()
                );
            }
            assert!(active.0.exists());
        }
    }
}

#[test]
fn damaged_sealed_segment_data_is_reported_not_hidden() {
    let dir = TempDir::new().unwrap();
    let config = many_segments(dir.path());
    let first = files_with_ext(dir.path(), "log").remove(0);
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    for ext in ["index", "timeindex"] {
        fs::remove_file(first.with_extension(ext)).unwrap();
    }
    match FileLog::open(dir.path(), config) {
        Err(LogError::Corrupt(why)) => assert!(why.contains(&first.display().to_string()), "{why}"),
        other => panic!("expected a corrupt-log error, got {other:?}"),
    }
}

#[test]
fn a_log_emptied_by_retention_and_truncation_keeps_its_end_offset() {
    let dir = TempDir::new().unwrap();
    let config = many_segments(dir.path());
    let mut log = FileLog::open(dir.path(), config.clone()).unwrap();
    let everything = RetentionPolicy {
        retention_ms: Some(0),
        retention_bytes: Some(0),
    };
    let start = log.enforce_retention(i64::MAX, &everything).unwrap();
    assert!(start > 0);
    assert_eq!(log.segment_count(), 1);
    log.truncate_to(start).unwrap();
    drop(log);
    let mut log = FileLog::open(dir.path(), config).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (start, start)
    );
    assert_eq!(log.append(small_batch(1, 0), 0).unwrap().base_offset, start);
}

#[test]
fn stray_files_are_ignored_and_orphan_indexes_removed() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    fs::write(dir.path().join("00000000000000000099.index"), [0; 8]).unwrap();
    fs::write(dir.path().join("99.log"), "not a segment name").unwrap();
    let mut log = FileLog::open(dir.path(), FileLogConfig::default()).unwrap();
    assert_eq!(log.append(small_batch(1, 0), 0).unwrap().base_offset, 0);
    assert!(dir.path().join("notes.txt").exists());
    assert!(!dir.path().join("00000000000000000099.index").exists());
}

#[test]
fn a_gap_between_segments_is_reported() {
    let dir = TempDir::new().unwrap();
    let config = many_segments(dir.path());
    let logs = files_with_ext(dir.path(), "log");
    fs::remove_file(&logs[2]).unwrap();
    assert!(matches!(
        FileLog::open(dir.path(), config),
        Err(LogError::Corrupt(_))
    ));
}

/// The active segment reserves blocks ahead of its appends (up to the roll size), so its file
/// is longer than its data; sealed segments are trimmed to their data; after a crash (no clean
/// close) the reopened log has every batch, drops the reserved zeros, and appends where the
/// data ended.
#[test]
fn space_reserved_ahead_of_appends_never_shows() {
    let dir = TempDir::new().unwrap();
    let config = FileLogConfig {
        segment_bytes: 700,
        index_interval_bytes: 60,
        segment_ms: None,
        ..FileLogConfig::default()
    };
    let mut log = FileLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..20 {
        log.append(small_batch(1 + i % 2, 7), 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    let files = files_with_ext(dir.path(), "log");
    let (active, sealed) = files.split_last().unwrap();
    let sealed_lengths: Vec<u64> = sealed
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    assert_eq!(
        fs::metadata(active).unwrap().len(),
        700,
        "active segment reserved to the roll size"
    );
    let before = snapshot(&log);
    let end = log.log_end_offset();
    std::mem::forget(log); // a crash: nothing trimmed, no index written

    let mut log = FileLog::open(dir.path(), config.clone()).unwrap();
    assert!(snapshot(&log) == before, "same contents after the crash");
    let active_data = fs::metadata(active).unwrap().len();
    assert!(active_data < 700, "the reserved tail was cut at open");
    for (f, len) in sealed.iter().zip(&sealed_lengths) {
        assert_eq!(
            fs::metadata(f).unwrap().len(),
            *len,
            "sealed segments are exact"
        );
    }
    assert_eq!(log.append(small_batch(1, 8), 0).unwrap().base_offset, end);
    drop(log); // a clean close trims too
    let files = files_with_ext(dir.path(), "log");
    let last = files.last().unwrap();
    let log = FileLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
    let stored = read_all(&log);
    assert_eq!(batch::headers(&stored).count(), 21);
    drop(log);
    assert!(fs::metadata(last).unwrap().len() <= 700);
}
