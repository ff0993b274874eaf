//! The embedded processor in cluster mode stays exactly-once when the node running it dies:
//! three real `runnel serve` nodes run the built-in sensor pipeline over a seeded input
//! (out-of-order, late, silent-device and malformed events); the node leading the pipeline's
//! journal (the one running it) is SIGKILLed at random points at least three times and
//! restarted each time; in a second run it is cut off from the Raft majority (Kafka traffic
//! still flowing) or SIGSTOPped past the election timeout, so the deposed driver keeps
//! running, with writes in flight, beside its successor. The output topics must equal a single-node embedded run's over the
//! same input record for record (aggregates and alerts exactly; late data and DLQ records
//! up to their `runnel.source.offset` header, since a replicated partition's Raft no-ops
//! shift input offsets), every output stream's `runnel.seq` must be 0, 1, 2, … with no
//! duplicate, and the journal must have no gap.
//!
//! The input is published (acks=all) before any node runs the pipeline, so the pipeline's
//! time-ordered merge of partitions does not depend on fetch timing (`driver.rs`) and the
//! single-node run is a valid reference. Seeds are printed (`RUNNEL_TEST_SEED` replays).

#[allow(dead_code, clippy::all)]
#[path = "../../processor/tests/common/mod.rs"]
mod sensors;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_broker::config::{ClusterConfig, Config, ProcessorConfig};
use runnel_broker::kafka_client::fetch::decode_fetched;
use runnel_broker::kafka_client::{Client, ClientConfig};
use runnel_broker::snapshot::newest_complete;
use runnel_processor::exactly_once::StepDescriptor;
use runnel_tests::cluster::Cluster;

const SOURCE: &str = "sensor_events";
const JOURNAL: &str = "__runnel_journal.sensors";
const CHECKPOINTS: &str = "__runnel_checkpoint.sensors";
/// Compared exactly.
const EXACT: [&str; 2] = ["sensor_aggregates", "sensor_alerts"];
/// Compared without the `runnel.source.offset` header.
const BY_SOURCE: [&str; 2] = ["sensor_events_late", "sensor_events_dlq"];
const KILLS: usize = 3;
const PATIENCE: Duration = Duration::from_secs(300);
/// How often a wait prints how far the pipeline got (diagnostics only).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Records per step. One step is one Raft-committed journal entry, so tiny steps keep the
/// pipeline busy long enough (thousands of commits) for every fault to land while it runs,
/// however fast the machine.
const STEP_RECORDS: usize = 2;

/// Small steps and frequent checkpoints so faults land between every kind of action; no
/// time-only steps, so nothing changes once the input is consumed (as `processor_crash.rs`).
fn processor() -> ProcessorConfig {
    ProcessorConfig {
        enabled: true,
        checkpoint_every_steps: 7,
        checkpoint_interval_ms: 100_000_000,
        max_step_records: STEP_RECORDS,
        align_wait_ms: 50,
        idle_step_ms: 100_000_000,
        ..ProcessorConfig::default()
    }
}

/// [`processor`] as the `[processor]` section of a node's config.
fn processor_toml() -> String {
    format!(
        "enabled = true\ncheckpoint_every_steps = 7\ncheckpoint_interval_ms = 100000000\n\
         max_step_records = {STEP_RECORDS}\nalign_wait_ms = 50\nidle_step_ms = 100000000"
    )
}

fn seed() -> u64 {
    let seed = std::env::var("RUNNEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    eprintln!("seed {seed} (set RUNNEL_TEST_SEED to replay)");
    seed
}

fn client(bootstrap: &str) -> Client {
    Client::new(ClientConfig::new(bootstrap))
}

/// Publishes the seeded stream (acks=all), each partition's records in generation order.
async fn publish(c: &Client, arrivals: &[sensors::Arrival]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = c.ensure_topic(SOURCE, 3).await {
        assert!(Instant::now() < deadline, "cannot create {SOURCE}: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for chunk in arrivals.chunks(40) {
        for p in 0..3u32 {
            let recs: Vec<Record> = chunk
                .iter()
                .filter(|a| a.record.partition == p)
                .map(|a| Record {
                    key: a.record.key.as_deref().map(<[u8]>::to_vec),
                    value: a.record.value.as_deref().map(<[u8]>::to_vec),
                    headers: vec![],
                    timestamp: a.record.timestamp,
                })
                .collect();
            if recs.is_empty() {
                continue;
            }
            let batch = encode_batch(&recs, ProducerInfo::default()).freeze();
            let p = i32::try_from(p).unwrap();
            c.produce(SOURCE, p, batch)
                .await
                .unwrap_or_else(|e| panic!("produce to {SOURCE}/{p}: {e}"));
        }
    }
}

/// One output record: key, value, headers, timestamp.
type Rec = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
    i64,
);

/// Every record of a topic (all partitions, by partition then offset); empty if it does not
/// exist.
async fn read_topic(c: &Client, topic: &str) -> Vec<Rec> {
    let deadline = Instant::now() + PATIENCE;
    let partitions = loop {
        match c.partition_count(topic).await {
            Ok(n) => break n.unwrap_or(0),
            Err(e) => {
                assert!(Instant::now() < deadline, "partitions of {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let mut out = Vec::new();
    for p in 0..i32::try_from(partitions).unwrap() {
        let mut offset = 0;
        loop {
            let f = match c.fetch(topic, p, offset, 0).await {
                Ok(Some(f)) if f.error_code == 0 => f,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "fetch {topic}/{p} at {offset}: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if offset >= f.high_watermark {
                break;
            }
            let d = decode_fetched(f.records, offset, f.high_watermark, usize::MAX)
                .expect("valid batches");
            for r in d.records {
                out.push((
                    r.key.map(Vec::from),
                    r.value.map(Vec::from),
                    r.headers,
                    r.timestamp,
                ));
            }
            assert!(d.next_offset > offset, "{topic}/{p} stuck at {offset}");
            offset = d.next_offset;
        }
    }
    out
}

/// The journal's descriptors, in log order.
async fn journal(c: &Client) -> Vec<StepDescriptor> {
    read_topic(c, JOURNAL)
        .await
        .into_iter()
        .map(|r| serde_json::from_slice(&r.1.expect("a journal value")).expect("a descriptor"))
        .collect()
}

/// Input records the journal says were consumed (repeats of an index counted once).
async fn consumed(c: &Client) -> i64 {
    let mut seen = BTreeMap::new();
    for d in journal(c).await {
        let n: i64 = d.ranges.iter().map(|r| r.3 - r.2).sum();
        seen.entry(d.index).or_insert(n);
    }
    seen.values().sum()
}

async fn outputs(c: &Client) -> BTreeMap<&'static str, Vec<Rec>> {
    let mut out = BTreeMap::new();
    for t in EXACT.into_iter().chain(BY_SOURCE) {
        out.insert(t, read_topic(c, t).await);
    }
    out
}

/// Waits until the journal covers all input and the outputs stop growing. Fails when the
/// pipeline consumes nothing for [`PATIENCE`] (stuck), not when a loaded machine makes the
/// whole run longer than that (slow: 8000 records took 100-217 s at load 8-19 on 2 cores);
/// prints the progress every [`PROGRESS_EVERY`].
async fn wait_finished(c: &Client, total: i64) -> BTreeMap<&'static str, Vec<Rec>> {
    let started = Instant::now();
    let mut reported = started;
    let mut moved = (consumed(c).await, started);
    while moved.0 < total {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = consumed(c).await;
        if now > moved.0 {
            moved = (now, Instant::now());
        }
        if reported.elapsed() >= PROGRESS_EVERY {
            eprintln!(
                "waiting: {now}/{total} input records consumed after {:?}",
                started.elapsed()
            );
            reported = Instant::now();
        }
        assert!(
            moved.1.elapsed() < PATIENCE,
            "the pipeline did not consume its input: stuck at {now}/{total} for {PATIENCE:?} \
             ({:?} into the wait)",
            started.elapsed()
        );
    }
    let mut last = outputs(c).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = outputs(c).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The reference: a single-node embedded run over the same input, published before the
/// pipeline starts (the broker is restarted with the processor on).
async fn single_node_run(
    arrivals: &[sensors::Arrival],
    total: i64,
) -> BTreeMap<&'static str, Vec<Rec>> {
    let dir = tempfile::tempdir().unwrap();
    let config = |enabled: bool| Config {
        data_dir: dir.path().to_owned(),
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        processor: ProcessorConfig {
            enabled,
            ..processor()
        },
        ..Config::default()
    };
    let running = runnel_broker::server::start(config(false)).await.unwrap();
    publish(&client(&running.kafka_addr.to_string()), arrivals).await;
    running.shutdown().await;
    let running = runnel_broker::server::start(config(true)).await.unwrap();
    let out = wait_finished(&client(&running.kafka_addr.to_string()), total).await;
    running.shutdown().await;
    out
}

fn header<'a>(r: &'a Rec, name: &str) -> Option<&'a [u8]> {
    r.2.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn without_source_offset(v: &[Rec]) -> Vec<Rec> {
    v.iter()
        .map(|r| {
            let mut r = r.clone();
            r.2.retain(|(k, _)| k != "runnel.source.offset");
            r
        })
        .collect()
}

/// Every stream's (topic, partition) `runnel.seq` is 0, 1, 2, …: no duplicate, no gap.
/// Topics are read partition by partition, so a restart of the count is a new partition.
fn assert_sequences(topic: &str, v: &[Rec]) {
    let mut expect = 0u64;
    for (i, r) in v.iter().enumerate() {
        let seq: u64 = std::str::from_utf8(header(r, "runnel.seq").expect("runnel.seq"))
            .unwrap()
            .parse()
            .unwrap();
        if seq == 0 {
            expect = 0;
        }
        assert_eq!(seq, expect, "{topic}: record {i} has runnel.seq {seq}");
        expect += 1;
    }
}

/// Journal indices 0, 1, 2, … in log order (a repeat only as an identical copy), and per
/// input partition ranges that never overlap.
fn assert_journal(entries: &[StepDescriptor]) {
    let mut by_index: BTreeMap<u64, &StepDescriptor> = BTreeMap::new();
    let mut next = 0u64;
    for d in entries {
        if let Some(first) = by_index.get(&d.index) {
            assert_eq!(
                *first, d,
                "journal index {} written twice differently",
                d.index
            );
            continue;
        }
        assert_eq!(
            d.index, next,
            "journal gap: index {} after {}",
            d.index, next
        );
        by_index.insert(d.index, d);
        next += 1;
    }
    let mut ends: BTreeMap<(String, u32), i64> = BTreeMap::new();
    for d in by_index.values() {
        for (t, p, from, to) in &d.ranges {
            let end = ends.entry((t.clone(), *p)).or_insert(0);
            assert!(
                *from >= *end,
                "step {}: {t}/{p} from {from} < {end}",
                d.index
            );
            assert!(to >= from);
            *end = *to;
        }
    }
    eprintln!(
        "journal: {} steps, {} entries",
        by_index.len(),
        entries.len()
    );
}

/// The node leading the journal (running the pipeline).
async fn pipeline_node(c: &Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(l) = c.leaders(JOURNAL).await {
            if let Some(Some(id)) = l.first() {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "the journal has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fault strikes within this many input records after the pipeline moved on from the last.
const STRIKE_WITHIN: u64 = 300;

/// The test cluster's longest election timeout: its nodes run the default `election_ticks`
/// and `tick_ms`, and a timeout is drawn from `election_ticks..2 * election_ticks` ticks.
fn election_timeout_max() -> Duration {
    let c = ClusterConfig::default();
    Duration::from_millis(2 * u64::from(c.election_ticks) * c.tick_ms)
}

/// Waits past [`election_timeout_max`] (so the driver's node is deposed even if a step of
/// its own committed after `before` was read) until the journal covers more than `before`
/// records — with the driver's node paused or cut off, another node has taken the pipeline
/// over and journaled a step — or until `at_most` passed, or the input is all consumed.
/// Returns how long. Reads through a client of its own, given up at `at_most`: a read sent
/// to the paused node waits for the client's request timeout.
async fn successor_moved_on(
    bootstrap: &str,
    before: i64,
    total: i64,
    at_most: Duration,
) -> Duration {
    let started = Instant::now();
    let floor = election_timeout_max();
    let probe = client(bootstrap);
    let watch = async {
        loop {
            let now = consumed(&probe).await;
            let moved = now > before || now >= total;
            if moved && started.elapsed() >= floor {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(at_most, watch).await;
    started.elapsed()
}

/// What happens to the node running the pipeline.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, restarted after up to a second.
    Kill,
    /// SIGSTOP past the election timeout until another node has taken the pipeline over and
    /// journaled a step (3-4 s at most), then SIGCONT: the driver wakes up deposed, with its
    /// steps and writes in flight.
    Pause,
    /// Its Raft links cut past the election timeout until another node has taken the
    /// pipeline over and journaled a step (4-6 s at most; Kafka traffic still flows): the
    /// deposed driver keeps running beside the new one until its journal append fails, and
    /// its output writes reach the other nodes.
    Isolate,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_survives_sigkills_of_its_node_exactly_once() {
    faulted_run(&[Fault::Kill; KILLS]).await;
}

/// A deposed driver that keeps running (paused, or cut off from the Raft majority) must not
/// write anything twice: its journal appends never commit (Raft fences them by term), and its
/// output batches carry the same idempotent sequence as the new driver's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_stays_exactly_once_when_its_node_is_cut_off_or_paused() {
    faulted_run(&[Fault::Isolate, Fault::Pause, Fault::Isolate]).await;
}

/// The replicated checkpoint topic: the node running the pipeline writes a snapshot after
/// every checkpoint (`snapshot_interval_ms = 0`) and is then SIGKILLed for good; the node
/// taking over has never run the pipeline (no local checkpoint), so it must restore the
/// topic's snapshot (its log says so, with no local checkpoint and a position > 0) instead of
/// replaying the journal from step 0, and the outputs must still equal the single-node run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_checkpoint_takes_over_from_the_replicated_snapshot() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let started = Instant::now();
    let seed = seed();
    let arrivals = sensors::generate(seed, 6, 1_500);
    let total = i64::try_from(arrivals.len()).unwrap();
    let expected = single_node_run(&arrivals, total).await;

    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let c = client(&cluster.bootstrap());
    publish(&c, &arrivals).await;
    cluster
        .set_processor(&format!("{}\nsnapshot_interval_ms = 0", processor_toml()))
        .unwrap();
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id).unwrap();
    }

    // Until the topic holds a complete snapshot past step 0, while input remains.
    let deadline = Instant::now() + PATIENCE;
    let position = loop {
        let chunks: Vec<Vec<u8>> = read_topic(&c, CHECKPOINTS)
            .await
            .into_iter()
            .filter_map(|r| r.1)
            .collect();
        let newest = newest_complete("sensors", chunks.iter().map(Vec::as_slice));
        if let Some(s) = newest.filter(|s| s.position > 0) {
            break s.position;
        }
        assert!(consumed(&c).await < total, "finished before any snapshot");
        assert!(Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let node = pipeline_node(&c).await;
    let ran = |cluster: &Cluster, id: i32| {
        cluster
            .log_tail(id, usize::MAX)
            .contains("running the pipeline here")
    };
    assert!(
        ran(&cluster, node),
        "node {node} leads the journal but never ran the pipeline"
    );
    let others: Vec<i32> = (1..=3).filter(|id| *id != node).collect();
    for id in &others {
        assert!(
            !ran(&cluster, *id),
            "node {id} ran the pipeline too: it may have a local checkpoint"
        );
    }
    let before = consumed(&c).await;
    eprintln!(
        "snapshot at step {position}; node {node} SIGKILLed for good at {before}/{total} input \
         records ({:?})",
        started.elapsed()
    );
    assert!(before < total, "the pipeline finished before the kill");
    cluster.kill(node);

    let got = wait_finished(&c, total).await;
    eprintln!("cluster run finished after {:?}", started.elapsed());
    let successor = others
        .iter()
        .copied()
        .find(|id| ran(&cluster, *id))
        .expect("another node ran the pipeline");
    let log = cluster.log_tail(successor, usize::MAX);
    let restored = log
        .lines()
        .find(|l| l.contains("from checkpoint topic"))
        .unwrap_or_else(|| panic!("node {successor} did not restore a snapshot:\n{log}"));
    eprintln!("node {successor}: {restored}");
    let at: u64 = restored
        .split("restored snapshot at journal ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a position in the restore line");
    assert!(
        at >= position,
        "restored step {at} < the snapshot seen at {position}"
    );
    assert!(restored.contains("local=None"), "{restored}");

    assert_outputs_match(&got, &expected);
    assert_journal(&journal(&c).await);
}

async fn faulted_run(faults: &[Fault]) {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let started = Instant::now();
    let seed = seed();
    // Twice the other runs' input: a fast stretch of the pipeline (CI: ~1,500 records/s,
    // 4,670 records journaled before the first poll after the restart answered) must not run
    // it out before the last fault.
    let arrivals = sensors::generate(seed, 6, 3_000);
    let total = i64::try_from(arrivals.len()).unwrap();

    let expected = single_node_run(&arrivals, total).await;
    for (t, v) in &expected {
        assert!(!v.is_empty(), "{t} is empty in the single-node run");
        eprintln!("single node: {t}: {} records", v.len());
    }
    eprintln!("reference done after {:?}", started.elapsed());

    // The input, published to the cluster with the processor off; then every node restarts
    // with it on.
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let c = client(&cluster.bootstrap());
    publish(&c, &arrivals).await;
    cluster.set_processor(&processor_toml()).unwrap();
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_node(id).unwrap();
    }

    // Each fault strikes a random few records after the pipeline moved on from the last one,
    // and a fault that deposes the driver (pause, cut-off) lasts until its successor has
    // moved the journal on, plus a random moment. Counted in records, not time, so a fast
    // machine cannot run the whole input between two faults.
    let mut rng = sensors::Rng::new(seed ^ 0x00c1_5e7e);
    let bootstrap = cluster.bootstrap();
    let mut done = 0;
    let mut target = 1 + i64::try_from(rng.below(STRIKE_WITHIN)).unwrap();
    let mut progress = 0;
    let deadline = Instant::now() + PATIENCE;
    while done < faults.len() {
        let now = consumed(&c).await;
        assert!(
            Instant::now() < deadline,
            "no progress between faults: {now}/{total} input records consumed, \
             {progress} at fault {done}"
        );
        if now >= total {
            break;
        }
        if now < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let node = pipeline_node(&c).await;
        let before = consumed(&c).await;
        if before >= total {
            break;
        }
        let fault = faults[done];
        done += 1;
        eprintln!(
            "fault {done} ({fault:?}): node {node} at {before}/{total} input records ({:?})",
            started.elapsed()
        );
        match fault {
            Fault::Kill => {
                cluster.kill(node);
                tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await;
                cluster.start_node(node).unwrap();
            }
            Fault::Pause => {
                cluster.pause(node, true);
                let at_most = Duration::from_millis(3_000 + rng.below(1_000));
                let took = successor_moved_on(&bootstrap, before, total, at_most).await;
                tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
                cluster.pause(node, false);
                eprintln!("  paused for {took:?} until the successor moved on, then a moment");
            }
            Fault::Isolate => {
                cluster.isolate(node, true);
                let at_most = Duration::from_millis(4_000 + rng.below(2_000));
                let took = successor_moved_on(&bootstrap, before, total, at_most).await;
                tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
                cluster.isolate(node, false);
                eprintln!("  cut off for {took:?} until the successor moved on, then a moment");
            }
        }
        progress = consumed(&c).await;
        target = progress + 1 + i64::try_from(rng.below(STRIKE_WITHIN)).unwrap();
    }
    assert!(
        done >= faults.len(),
        "the pipeline finished after {done} faults; it must meet all {}",
        faults.len()
    );

    let got = wait_finished(&c, total).await;
    eprintln!("cluster run finished after {:?}", started.elapsed());
    assert_outputs_match(&got, &expected);
    assert_journal(&journal(&c).await);
}

/// The cluster run's outputs equal the single-node reference: record for record on the
/// EXACT topics, up to source offsets on the BY_SOURCE ones, each gap-free in `runnel.seq`.
fn assert_outputs_match(
    got: &BTreeMap<&'static str, Vec<Rec>>,
    expected: &BTreeMap<&'static str, Vec<Rec>>,
) {
    for t in EXACT {
        assert_sequences(t, &got[t]);
        assert_eq!(got[t].len(), expected[t].len(), "{t}: record count");
        for (i, (g, e)) in got[t].iter().zip(&expected[t]).enumerate() {
            assert!(g == e, "{t}: record {i} differs:\n got {g:?}\nwant {e:?}");
        }
    }
    for t in BY_SOURCE {
        assert_sequences(t, &got[t]);
        assert_eq!(
            without_source_offset(&got[t]),
            without_source_offset(&expected[t]),
            "{t}"
        );
    }
}
