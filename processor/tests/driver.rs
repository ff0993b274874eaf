//! The async driver against in-memory logs: a crash at every durable action (journal append,
//! each output append, checkpoint commit), then recovery by a new driver, must leave output
//! topics identical to an uninterrupted run's, with gap-free sequences and no duplicates.
//! A journal entry of an earlier lifetime that lands late (its append's outcome was unknown)
//! must be replayed, not overtaken by a later lifetime's entry of the same step.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use common::{generate, test_config, Arrival, TOPIC};
use runnel_processor::driver::{
    journal_topic, Clock, Driver, DriverConfig, InputLog, LogIoError, OutputLog, StepOutcome,
};
use runnel_processor::record::pipeline_seq;
use runnel_processor::state::memory::MemStore;
use runnel_processor::state::{KeyValue, StateError, StateStore, WriteBatch};
use runnel_processor::time::Millis;
use runnel_processor::{InputRecord, OutputRecord, StreamId};

/// The fakes' futures are always ready: poll once with a no-op waker.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp: Millis,
    /// A control record: takes an offset, never read (like a Raft leader's marker batch).
    control: bool,
}

/// Everything durable: topics (partition logs) and the state store. A crash loses nothing
/// here; `budget` durable actions are allowed, then every action fails (the process "died").
#[derive(Default)]
struct World {
    topics: BTreeMap<String, Vec<Vec<Rec>>>,
    store: MemStore,
    budget: Option<usize>,
    actions: usize,
    /// The next journal append fails, its outcome unknown: the entry is kept in `held`, not
    /// in the log, until `release_held`.
    hold_next_journal: bool,
    held: Vec<Rec>,
    /// The held entries land in the journal just before the next journal append.
    release_held: bool,
    /// A control record lands in the journal just before the next journal append.
    marker_before_next_journal: bool,
}

impl World {
    fn act(&mut self) -> Result<(), LogIoError> {
        if self.budget == Some(0) {
            return Err(LogIoError("crashed".into()));
        }
        if let Some(b) = &mut self.budget {
            *b -= 1;
        }
        self.actions += 1;
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<World>>);

impl Logs {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    fn with_input(arrivals: &[Arrival]) -> Self {
        let logs = Self::default();
        logs.publish(arrivals);
        logs
    }

    /// Appends `arrivals` to the source topic (each at its own offset).
    fn publish(&self, arrivals: &[Arrival]) {
        let mut w = self.world();
        let parts = w.topics.entry(TOPIC.into()).or_default();
        parts.resize(3, Vec::new());
        for a in arrivals {
            let r = &a.record;
            let p = usize::try_from(r.partition).unwrap();
            assert_eq!(parts[p].len(), usize::try_from(r.offset).unwrap());
            parts[p].push(Rec {
                key: r.key.as_deref().map(<[u8]>::to_vec),
                value: r.value.as_deref().unwrap_or_default().to_vec(),
                headers: Vec::new(),
                timestamp: r.timestamp,
                control: false,
            });
        }
    }

    /// Output topics only (not the source, not the journal).
    fn outputs(&self) -> BTreeMap<(String, usize), Vec<Rec>> {
        let w = self.world();
        let mut out = BTreeMap::new();
        for (t, parts) in &w.topics {
            if t == TOPIC || t.starts_with("__runnel_journal") {
                continue;
            }
            for (p, recs) in parts.iter().enumerate() {
                out.insert((t.clone(), p), recs.clone());
            }
        }
        out
    }
}

impl InputLog for Logs {
    async fn partitions(&self, topic: &str) -> Result<Option<u32>, LogIoError> {
        Ok(self
            .world()
            .topics
            .get(topic)
            .map(|p| u32::try_from(p.len()).unwrap()))
    }

    async fn offsets(&self, topic: &str, partition: u32) -> Result<(i64, i64), LogIoError> {
        let w = self.world();
        let n = w
            .topics
            .get(topic)
            .and_then(|p| p.get(usize::try_from(partition).unwrap()))
            .map_or(0, Vec::len);
        Ok((0, i64::try_from(n).unwrap()))
    }

    async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_records: usize,
    ) -> Result<Vec<InputRecord>, LogIoError> {
        let w = self.world();
        let Some(log) = w
            .topics
            .get(topic)
            .and_then(|p| p.get(usize::try_from(partition).unwrap()))
        else {
            return Ok(Vec::new());
        };
        let from = usize::try_from(from.max(0)).unwrap();
        Ok(log
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, r)| !r.control)
            .take(max_records)
            .map(|(o, r)| InputRecord {
                topic: topic.into(),
                partition,
                offset: i64::try_from(o).unwrap(),
                key: r.key.clone().map(Into::into),
                value: Some(r.value.clone().into()),
                timestamp: r.timestamp,
            })
            .collect())
    }

    async fn wait_for_input(&self, _: &[(String, u32, i64)], _: u64) {}
}

impl OutputLog for Logs {
    async fn ensure_topic(&self, topic: &str, partitions: u32) -> Result<(), LogIoError> {
        let mut w = self.world();
        let parts = w.topics.entry(topic.into()).or_default();
        let n = usize::try_from(partitions).unwrap();
        if parts.len() < n {
            parts.resize(n, Vec::new());
        }
        Ok(())
    }

    async fn append(
        &self,
        stream: &StreamId,
        records: &[OutputRecord],
    ) -> Result<Range<i64>, LogIoError> {
        let mut w = self.world();
        // One durable action per append call: the whole batch or nothing.
        w.act()?;
        let recs: Vec<Rec> = records
            .iter()
            .map(|r| {
                assert_eq!(&r.stream, stream);
                Rec {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                    timestamp: r.timestamp,
                    control: false,
                }
            })
            .collect();
        let journal = stream.topic.starts_with("__runnel_journal");
        if journal && std::mem::take(&mut w.hold_next_journal) {
            w.held.extend(recs);
            return Err(LogIoError("timed out: outcome unknown".into()));
        }
        let mut landing = if journal && std::mem::take(&mut w.release_held) {
            std::mem::take(&mut w.held)
        } else {
            Vec::new()
        };
        if journal && std::mem::take(&mut w.marker_before_next_journal) {
            landing.push(Rec {
                key: None,
                value: Vec::new(),
                headers: Vec::new(),
                timestamp: 0,
                control: true,
            });
        }
        let log = w
            .topics
            .get_mut(&stream.topic)
            .and_then(|p| p.get_mut(usize::try_from(stream.partition).unwrap()))
            .ok_or_else(|| LogIoError(format!("no partition {stream}")))?;
        log.extend(landing);
        let start = i64::try_from(log.len()).unwrap();
        log.extend(recs);
        Ok(start..i64::try_from(log.len()).unwrap())
    }

    async fn tail(
        &self,
        stream: &StreamId,
        max_records: usize,
    ) -> Result<Vec<Vec<(String, Vec<u8>)>>, LogIoError> {
        let w = self.world();
        let Some(log) = w
            .topics
            .get(&stream.topic)
            .and_then(|p| p.get(usize::try_from(stream.partition).unwrap()))
        else {
            return Ok(Vec::new());
        };
        let skip = log.len().saturating_sub(max_records);
        Ok(log.iter().skip(skip).map(|r| r.headers.clone()).collect())
    }
}

/// The state store, living in the world so that it survives a crash; a checkpoint commit is
/// a durable action.
struct Store(Logs);

impl StateStore for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.0.world().store.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.0.world().store.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.0.world().store.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StateError> {
        self.0.world().store.scan_prefix(prefix)
    }
    fn write_batch(&mut self, batch: WriteBatch) -> Result<(), StateError> {
        let mut w = self.0.world();
        w.act().map_err(|e| StateError::Backend(e.0))?;
        w.store.write_batch(batch)
    }
}

/// Processing time advances 50 ms per reading of the clock (deterministic, and irrelevant to
/// the outputs with `test_config`'s idle timeout).
#[derive(Clone)]
struct TickClock(Arc<Mutex<Millis>>);

impl Clock for TickClock {
    fn now_ms(&self) -> Millis {
        let mut t = self.0.lock().unwrap();
        *t += 50;
        *t
    }
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        checkpoint_every_steps: 3,
        checkpoint_interval_ms: u64::MAX,
        max_step_records: 7,
        align_wait_ms: 0,
        idle_step_ms: u64::MAX,
        tail_scan_records: 100,
    }
}

/// One process lifetime: recover, then step until there is nothing left. `Err` = crashed.
fn lifetime(logs: &Logs, clock: &TickClock) -> Result<(), String> {
    block_on(async {
        let mut d = Driver::recover(
            logs.clone(),
            logs.clone(),
            clock.clone(),
            Store(logs.clone()),
            test_config(),
            driver_config(),
        )
        .await
        .map_err(|e| e.to_string())?;
        loop {
            match d.step().await.map_err(|e| e.to_string())? {
                StepOutcome::Idle => return Ok(()),
                StepOutcome::Applied | StepOutcome::Ticked => {}
            }
        }
    })
}

fn check_well_formed(out: &BTreeMap<(String, usize), Vec<Rec>>) {
    let mut ids = std::collections::BTreeSet::new();
    for ((t, p), recs) in out {
        for (i, r) in recs.iter().enumerate() {
            let (pipeline, seq) = pipeline_seq(&r.headers).expect("sequenced");
            assert_eq!(pipeline, "sensors");
            assert_eq!(
                seq,
                u64::try_from(i).unwrap(),
                "{t}/{p}: gap-free, no duplicate"
            );
            if let Some((_, id)) = r.headers.iter().find(|(n, _)| n == "runnel.alert.id") {
                assert!(ids.insert(id.clone()), "duplicate alert id");
            }
        }
    }
}

fn reference(arrivals: &[Arrival]) -> (BTreeMap<(String, usize), Vec<Rec>>, usize) {
    let logs = Logs::with_input(arrivals);
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    lifetime(&logs, &clock).expect("no crash");
    let actions = logs.world().actions;
    (logs.outputs(), actions)
}

#[test]
fn crash_at_every_durable_action_then_recover_equals_uninterrupted() {
    let arrivals = generate(21, 4, 300);
    let (expected, total) = reference(&arrivals);
    check_well_formed(&expected);
    let n: usize = expected.values().map(Vec::len).sum();
    assert!(n > 30, "too few outputs to mean anything: {n}");
    for topic in [
        "sensor_aggregates",
        "sensor_alerts",
        "sensor_events_late",
        "sensor_events_dlq",
    ] {
        assert!(
            expected
                .iter()
                .any(|((t, _), v)| t == topic && !v.is_empty()),
            "{topic} is empty in the reference run"
        );
    }
    // Crash after action k (journal append, an output append, or a checkpoint), for every k.
    for k in 0..total {
        let logs = Logs::with_input(&arrivals);
        let clock = TickClock(Arc::new(Mutex::new(common::T0)));
        logs.world().budget = Some(k);
        assert!(
            lifetime(&logs, &clock).is_err(),
            "crash at {k} must stop the run"
        );
        logs.world().budget = None;
        lifetime(&logs, &clock).unwrap_or_else(|e| panic!("recovery after crash {k}: {e}"));
        let got = logs.outputs();
        check_well_formed(&got);
        assert_eq!(got, expected, "crash after durable action {k} of {total}");
    }
}

#[test]
fn repeated_crashes_including_during_recovery() {
    let arrivals = generate(5, 5, 90);
    let (expected, total) = reference(&arrivals);
    let mut rng = common::Rng::new(1234);
    for _ in 0..30 {
        let logs = Logs::with_input(&arrivals);
        let clock = TickClock(Arc::new(Mutex::new(common::T0)));
        for _ in 0..4 {
            let at = usize::try_from(rng.below(u64::try_from(total / 3).unwrap())).unwrap();
            logs.world().budget = Some(at);
            if lifetime(&logs, &clock).is_ok() {
                break;
            }
        }
        logs.world().budget = None;
        lifetime(&logs, &clock).expect("final lifetime");
        let got = logs.outputs();
        check_well_formed(&got);
        assert_eq!(got, expected);
    }
}

#[test]
fn journal_is_written_before_the_steps_outputs() {
    // Crash right after the first journal append: the journal holds step 0, no output yet.
    let arrivals = generate(3, 3, 60);
    let logs = Logs::with_input(&arrivals);
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    logs.world().budget = Some(1);
    assert!(lifetime(&logs, &clock).is_err());
    let w = logs.world();
    let journal = &w.topics[&journal_topic("sensors")][0];
    assert_eq!(journal.len(), 1);
    let desc: runnel_processor::exactly_once::StepDescriptor =
        serde_json::from_slice(&journal[0].value).unwrap();
    assert_eq!(desc.index, 0);
    assert!(!desc.ranges.is_empty());
    let outputs: usize = w
        .topics
        .iter()
        .filter(|(t, _)| t.as_str() != TOPIC && !t.starts_with("__runnel"))
        .flat_map(|(_, p)| p)
        .map(Vec::len)
        .sum();
    assert_eq!(outputs, 0);
}

#[test]
fn a_gap_in_an_output_stream_stops_recovery_instead_of_writing() {
    let arrivals = generate(9, 4, 120);
    let logs = Logs::with_input(&arrivals);
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    lifetime(&logs, &clock).expect("first run");
    // Lose all DLQ records but the first, keep the checkpoint, and publish one more malformed
    // record: its DLQ copy would be written after seq 0 with a seq far beyond 1.
    {
        let mut w = logs.world();
        let dlq = &mut w.topics.get_mut("sensor_events_dlq").unwrap()[0];
        assert!(dlq.len() > 2);
        dlq.truncate(1);
        let last_ts = w.topics[TOPIC][0].last().unwrap().timestamp;
        w.topics.get_mut(TOPIC).unwrap()[0].push(Rec {
            key: Some(b"MTR-00000".to_vec()),
            value: b"{not json".to_vec(),
            headers: Vec::new(),
            timestamp: last_ts + 1,
            control: false,
        });
    }
    let err = lifetime(&logs, &clock).unwrap_err();
    assert!(err.contains("sequence"), "{err}");
}

/// The outputs a replay of the whole journal writes, from an empty state and empty outputs.
fn replay_of_the_journal(logs: &Logs) -> BTreeMap<(String, usize), Vec<Rec>> {
    let fresh = Logs::default();
    {
        let w = logs.world();
        let mut f = fresh.world();
        for t in [TOPIC.to_owned(), journal_topic("sensors")] {
            f.topics.insert(t.clone(), w.topics[&t].clone());
        }
    }
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    block_on(Driver::recover(
        fresh.clone(),
        fresh.clone(),
        clock,
        Store(fresh.clone()),
        test_config(),
        driver_config(),
    ))
    .expect("replay");
    fresh.outputs()
}

#[test]
fn a_late_journal_entry_of_an_earlier_lifetime_is_replayed_not_overtaken() {
    let arrivals = generate(13, 4, 200);
    let logs = Logs::with_input(&arrivals[..100]);
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    lifetime(&logs, &clock).expect("first run");
    // Two more readings: the next lifetime journals a step of those two, and the append's
    // outcome is unknown (say a timeout); that lifetime ends.
    logs.publish(&arrivals[100..102]);
    logs.world().hold_next_journal = true;
    let err = lifetime(&logs, &clock).unwrap_err();
    assert!(err.contains("outcome unknown"), "{err}");
    // The rest arrives, and a new lifetime recovers without seeing that entry, which lands
    // just before its own entry for the same step index (with more readings in it).
    logs.publish(&arrivals[102..]);
    logs.world().release_held = true;
    let outputs_before = logs.outputs();
    let err = lifetime(&logs, &clock).unwrap_err();
    assert!(err.contains("another writer"), "{err}");
    assert!(logs.world().held.is_empty(), "the held entry landed");
    assert_eq!(
        logs.outputs(),
        outputs_before,
        "nothing of the overtaken step is written"
    );
    // The next lifetime replays the entry that landed first (the earlier lifetime's step).
    lifetime(&logs, &clock).expect("recovery");
    let got = logs.outputs();
    check_well_formed(&got);
    let n: usize = got.values().map(Vec::len).sum();
    assert!(n > 30, "too few outputs to mean anything: {n}");
    assert_eq!(
        got,
        replay_of_the_journal(&logs),
        "the outputs are what the journal says"
    );
}

#[test]
fn a_control_record_in_the_journal_is_not_another_writer() {
    let arrivals = generate(17, 4, 120);
    let (expected, _) = reference(&arrivals);
    let logs = Logs::with_input(&arrivals[..150]);
    let clock = TickClock(Arc::new(Mutex::new(common::T0)));
    lifetime(&logs, &clock).expect("first run");
    // A new leader's marker (a control batch) takes the offset this lifetime's next entry was
    // expected at: its entries land one later, and nobody else wrote an entry.
    logs.publish(&arrivals[150..]);
    logs.world().marker_before_next_journal = true;
    lifetime(&logs, &clock).expect("a marker does not stop the lifetime");
    let w = logs.world();
    let journal = &w.topics[&journal_topic("sensors")][0];
    assert_eq!(
        journal.iter().filter(|r| r.control).count(),
        1,
        "the marker is in the journal"
    );
    drop(w);
    let got = logs.outputs();
    check_well_formed(&got);
    assert_eq!(got, expected);
}
