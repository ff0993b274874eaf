//! Shared by the processor's end-to-end tests (`processor_crash.rs`, embedded, and
//! `processor_standalone.rs`): `runnel` processes that are SIGKILLed when dropped, the seeded
//! sensor input published with an idempotent producer, and reading and comparing the four
//! output topics.
#![allow(dead_code)]

#[allow(dead_code, clippy::all)]
#[path = "../../../processor/tests/common/mod.rs"]
pub mod sensors;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use kafka_protocol::messages::InitProducerIdRequest;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_processor::exactly_once::StepDescriptor;

pub const SOURCE: &str = "sensor_events";
pub const OUTPUTS: [&str; 4] = [
    "sensor_aggregates",
    "sensor_alerts",
    "sensor_events_late",
    "sensor_events_dlq",
];
pub const JOURNAL: &str = "__runnel_journal.sensors";

/// The test's seed: `RUNNEL_TEST_SEED` or 42, printed so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("RUNNEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    eprintln!("seed {seed} (set RUNNEL_TEST_SEED to replay)");
    seed
}

/// The golden input of both tests: 6 devices over 25 minutes of event time (out-of-order,
/// late, silent-device and malformed events), long enough to outlast several kills.
pub fn golden_input(seed: u64) -> Vec<sensors::Arrival> {
    sensors::generate(seed, 6, 1_500)
}

/// A free loopback address for a child `runnel` (below the ephemeral range, so no outgoing
/// connection takes it before the child binds it).
pub fn free_addr() -> SocketAddr {
    runnel_broker::net::free_loopback_addr().expect("a free loopback port")
}

/// Small steps and frequent checkpoints so that kills land between every kind of action;
/// no time-only steps, so nothing changes once the input is consumed.
pub fn write_config(dir: &Path, enabled: bool) -> PathBuf {
    write_config_with(dir, enabled, "")
}

/// [`write_config`] with `top` (top-level keys and sections) before the `[processor]` section.
pub fn write_config_with(dir: &Path, enabled: bool, top: &str) -> PathBuf {
    write_config_full(dir, enabled, top, "")
}

/// [`write_config_with`], with `processor` (lines) added to the `[processor]` table.
pub fn write_config_full(dir: &Path, enabled: bool, top: &str, processor: &str) -> PathBuf {
    let path = dir.join("runnel.toml");
    std::fs::write(
        &path,
        format!(
            "{top}[processor]\nenabled = {enabled}\ncheckpoint_every_steps = 7\n\
             checkpoint_interval_ms = 100000000\nmax_step_records = 15\nalign_wait_ms = 50\n\
             idle_step_ms = 100000000\n{processor}"
        ),
    )
    .unwrap();
    path
}

/// `runnel serve` on `dir`, with the embedded processor on or off.
pub fn spawn_broker(dir: &Path, addr: SocketAddr, enabled: bool) -> Proc {
    let config = write_config(dir.parent().unwrap(), enabled);
    spawn_broker_with(dir, addr, &config)
}

/// `runnel serve` on `dir` with the config file `config`.
pub fn spawn_broker_with(dir: &Path, addr: SocketAddr, config: &Path) -> Proc {
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--kafka-addr", &addr.to_string()])
            .env("RUNNEL_CONFIG", config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    )
}

/// `runnel process` against the cluster at `bootstrap`, checkpoints in `state_dir`, with the
/// same `[processor]` settings as the embedded runs.
pub fn spawn_process(bootstrap: SocketAddr, state_dir: &Path) -> Proc {
    let config = write_config(state_dir.parent().unwrap(), false);
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args([
                "process",
                "--bootstrap",
                &bootstrap.to_string(),
                "--state-dir",
            ])
            .arg(state_dir)
            .arg("--config")
            .arg(&config)
            // No fixed port in tests (the listener has its own test).
            .args(["--http-addr", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    )
}

pub async fn connect(addr: SocketAddr) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = Client::connect_to(addr).await {
            return c;
        }
        assert!(Instant::now() < deadline, "broker did not start on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of a partition: (key, value, headers, timestamp).
pub type Rec = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

pub async fn read_all(c: &mut Client, name: &str, partition: i32) -> Vec<Rec> {
    match read_from(c, name, partition, 0).await {
        Ok(out) => out,
        Err(err) => panic!("fetch {name}/{partition}: error {err}"),
    }
}

/// The records of a partition that retention has kept: (the log start, its records from
/// there on). Retried if retention moves the start while it reads.
pub async fn read_kept(c: &mut Client, name: &str, partition: i32) -> (i64, Vec<Rec>) {
    loop {
        let (err, start) = list_offset(c, name, partition, -2).await;
        if err == 3 {
            return (0, Vec::new());
        }
        assert_eq!(err, 0, "list offsets {name}/{partition}");
        match read_from(c, name, partition, start).await {
            Ok(out) => return (start, out),
            Err(1) => continue, // OFFSET_OUT_OF_RANGE: retention moved the start
            Err(err) => panic!("fetch {name}/{partition} from {start}: error {err}"),
        }
    }
}

/// Every record of a partition from `from` on; an unknown topic has none; any other
/// error code is returned.
async fn read_from(c: &mut Client, name: &str, partition: i32, from: i64) -> Result<Vec<Rec>, i16> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let (err, hw, data) = fetch(c, name, partition, offset, 0).await;
        if err == 3 {
            return Ok(out); // unknown topic: nothing written (yet)
        }
        if err != 0 {
            return Err(err);
        }
        if offset >= hw {
            return Ok(out);
        }
        for (o, r) in decode_all(data) {
            if o >= offset {
                out.push((r.key, r.value, r.headers, r.timestamp));
                offset = o + 1;
            }
        }
    }
}

/// Input records the journal says were consumed (0 if there is no journal yet).
pub async fn consumed(c: &mut Client) -> i64 {
    consumed_in(c, JOURNAL).await
}

/// Input records the journal topic `journal` says were consumed.
pub async fn consumed_in(c: &mut Client, journal: &str) -> i64 {
    let mut seen = BTreeMap::new();
    for (_, value, _, _) in read_all(c, journal, 0).await {
        let d: StepDescriptor = serde_json::from_slice(&value.unwrap()).unwrap();
        let n: i64 = d.ranges.iter().map(|r| r.3 - r.2).sum();
        seen.entry(d.index).or_insert(n);
    }
    seen.values().sum()
}

pub async fn outputs(c: &mut Client) -> BTreeMap<&'static str, Vec<Rec>> {
    let mut out = BTreeMap::new();
    for t in OUTPUTS {
        out.insert(t, read_all(c, t, 0).await);
    }
    out
}

/// Waits until the journal covers all input and the outputs stop growing.
pub async fn wait_finished(c: &mut Client, total: i64) -> BTreeMap<&'static str, Vec<Rec>> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while consumed(c).await < total {
        assert!(
            Instant::now() < deadline,
            "pipeline did not consume its input"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last = outputs(c).await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = outputs(c).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Publishes the seeded stream with an idempotent producer (acks=all), keeping each
/// partition's records in generation order so offsets match the generator's.
pub async fn publish(addr: SocketAddr, arrivals: &[sensors::Arrival]) {
    publish_to(addr, SOURCE, 3, arrivals).await;
}

/// [`publish`] to `topic` (created with `partitions`, at most 3).
pub async fn publish_to(
    addr: SocketAddr,
    topic: &str,
    partitions: u32,
    arrivals: &[sensors::Arrival],
) {
    let mut c = connect(addr).await;
    let n = i32::try_from(partitions).unwrap();
    assert_eq!(create(&mut c, topic, n).await, 0);
    let init = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, 0);
    let mut seq = [0i32; 3];
    for chunk in arrivals.chunks(40) {
        for p in 0..partitions {
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
            let i = usize::try_from(p).unwrap();
            let producer = ProducerInfo {
                producer_id: init.producer_id.0,
                producer_epoch: init.producer_epoch,
                base_sequence: seq[i],
            };
            seq[i] += i32::try_from(recs.len()).unwrap();
            let batch = encode_batch(&recs, producer).freeze();
            let (err, _) = produce(&mut c, topic, i32::try_from(p).unwrap(), batch, -1).await;
            assert_eq!(err, 0, "produce to partition {p}");
        }
    }
}

/// Starts a broker with `spawn` up to `max` times and SIGKILLs it each time once `progress`
/// (any measure that grows as the pipeline runs: input records journaled, journal entries)
/// is a random 1..=`within` past its value at the previous kill, until `done` says the run
/// finished; returns the kills that landed mid-run, asserting there were at least two. The
/// kill points are counted in progress, not time: with random pauses a fast machine ran the
/// whole input between two kills (CI, seed 42: one kill, then done).
pub async fn kill_mid_run(
    max: usize,
    rng: &mut sensors::Rng,
    within: u64,
    mut spawn: impl FnMut(SocketAddr) -> Proc,
    mut progress_of: impl AsyncFnMut(&mut Client) -> i64,
    mut done: impl AsyncFnMut(&mut Client) -> bool,
) -> usize {
    let mut kills = 0;
    let mut progress = 0;
    for _ in 0..max {
        let target = progress + 1 + i64::try_from(rng.below(within)).unwrap();
        let addr = free_addr();
        let mut b = spawn(addr);
        let mut c = connect(addr).await;
        let reached = wait_progress(&mut c, target, &mut progress_of, &mut done, kills + 1).await;
        b.kill();
        let Some(now) = reached else {
            break;
        };
        progress = now;
        kills += 1;
    }
    eprintln!("killed the broker {kills} times mid-run");
    assert!(
        kills >= 2,
        "the pipeline finished before it could be killed twice"
    );
    kills
}

/// Polls until `progress_of` reaches `target` (its value then) or `done` says the run
/// finished (`None`), asserting that progress does not stand still for 300 s before kill
/// number `kill`.
pub async fn wait_progress(
    c: &mut Client,
    target: i64,
    progress_of: &mut impl AsyncFnMut(&mut Client) -> i64,
    done: &mut impl AsyncFnMut(&mut Client) -> bool,
    kill: usize,
) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if done(c).await {
            return None;
        }
        let now = progress_of(c).await;
        if now >= target {
            return Some(now);
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline's progress stayed at {now} for 300 s (kill {kill})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A temp root with `<name>/data` directories (their parents exist; `data` does not).
pub fn data_dirs<const N: usize>(root: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|n| {
        let d = root.join(n).join("data");
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        d
    })
}

/// Every output topic non-empty (so a comparison means something); prints the counts.
pub fn assert_all_nonempty(outputs: &BTreeMap<&'static str, Vec<Rec>>, run: &str) {
    for t in OUTPUTS {
        assert!(!outputs[t].is_empty(), "{t} is empty in the {run}");
        eprintln!("{run}: {t}: {} records", outputs[t].len());
    }
}

fn seqs(v: &[Rec]) -> Vec<String> {
    v.iter()
        .map(|r| {
            r.2.iter()
                .find(|(k, _)| k == "runnel.seq")
                .map(|(_, v)| {
                    String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
                })
                .unwrap_or_default()
        })
        .collect()
}

fn show(r: &Rec) -> String {
    format!(
        "{} {:?}",
        String::from_utf8_lossy(r.1.as_deref().unwrap_or_default()),
        r.2.iter()
            .map(|(k, v)| format!(
                "{k}={}",
                String::from_utf8_lossy(v.as_deref().unwrap_or_default())
            ))
            .collect::<Vec<_>>()
    )
}

/// The four output topics equal record for record (key, value, headers, timestamp); on a
/// difference, prints both runs' `runnel.seq` lists and the first differing record.
pub fn assert_same_outputs(
    got: &BTreeMap<&'static str, Vec<Rec>>,
    expected: &BTreeMap<&'static str, Vec<Rec>>,
    context: &str,
) {
    for t in OUTPUTS {
        if got[t] != expected[t] {
            eprintln!(
                "{t}\n got seqs {:?}\nwant seqs {:?}",
                seqs(&got[t]),
                seqs(&expected[t])
            );
        }
    }
    for t in OUTPUTS {
        for (i, (g, e)) in got[t].iter().zip(&expected[t]).enumerate() {
            assert!(
                g == e,
                "{t}: record {i} differs {context}:\n got {}\nwant {}",
                show(g),
                show(e)
            );
        }
        assert_eq!(
            got[t].len(),
            expected[t].len(),
            "{t}: record count {context}"
        );
    }
}
