//! End-to-end exactly-once of the embedded processor: a seeded sensor stream (out-of-order,
//! late, silent-device and malformed events) is published with an idempotent producer; the
//! real `runnel` binary then runs the built-in sensor pipeline over it, once uninterrupted and
//! once SIGKILLed at random points several times. The output topics (aggregates, alerts, late,
//! DLQ) must be equal record for record (key, value, headers, timestamp).
//!
//! The input is published before the pipeline starts, so the pipeline's time-ordered merge of
//! partitions sees the same interleaving in both runs (see `driver.rs`: with all input present
//! the order does not depend on fetch timing).

mod common;

#[allow(dead_code, clippy::all)]
#[path = "../../processor/tests/common/mod.rs"]
mod sensors;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::InitProducerIdRequest;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_processor::exactly_once::StepDescriptor;

const SOURCE: &str = "sensor_events";
const OUTPUTS: [&str; 4] = [
    "sensor_aggregates",
    "sensor_alerts",
    "sensor_events_late",
    "sensor_events_dlq",
];
const JOURNAL: &str = "__runnel_journal.sensors";
const KILLS: usize = 5;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Small steps and frequent checkpoints so that kills land between every kind of action;
/// no time-only steps, so nothing changes once the input is consumed.
fn write_config(dir: &Path, enabled: bool) -> std::path::PathBuf {
    let path = dir.join("runnel.toml");
    std::fs::write(
        &path,
        format!(
            "[processor]\nenabled = {enabled}\ncheckpoint_every_steps = 7\n\
             checkpoint_interval_ms = 100000000\nmax_step_records = 15\nalign_wait_ms = 50\n\
             idle_step_ms = 100000000\n"
        ),
    )
    .unwrap();
    path
}

/// A broker process, SIGKILLed when dropped (also when the test fails).
struct Proc(Child);

impl Proc {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_broker(dir: &Path, addr: SocketAddr, enabled: bool) -> Proc {
    let config = write_config(dir.parent().unwrap(), enabled);
    Proc(
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--kafka-addr", &addr.to_string()])
            .env("RUNNEL_CONFIG", &config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn runnel"),
    )
}

async fn connect(addr: SocketAddr) -> Client {
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
type Rec = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

async fn read_all(c: &mut Client, name: &str, partition: i32) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (err, hw, data) = fetch(c, name, partition, offset, 0).await;
        if err == 3 {
            return out; // unknown topic: nothing written (yet)
        }
        assert_eq!(err, 0, "fetch {name}/{partition} at {offset}");
        if offset >= hw {
            return out;
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
async fn consumed(c: &mut Client) -> i64 {
    let mut seen = BTreeMap::new();
    for (_, value, _, _) in read_all(c, JOURNAL, 0).await {
        let d: StepDescriptor = serde_json::from_slice(&value.unwrap()).unwrap();
        let n: i64 = d.ranges.iter().map(|r| r.3 - r.2).sum();
        seen.entry(d.index).or_insert(n);
    }
    seen.values().sum()
}

async fn outputs(c: &mut Client) -> BTreeMap<&'static str, Vec<Rec>> {
    let mut out = BTreeMap::new();
    for t in OUTPUTS {
        out.insert(t, read_all(c, t, 0).await);
    }
    out
}

/// Waits until the journal covers all input and the outputs stop growing.
async fn wait_finished(c: &mut Client, total: i64) -> BTreeMap<&'static str, Vec<Rec>> {
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
async fn publish(addr: SocketAddr, arrivals: &[sensors::Arrival]) {
    let mut c = connect(addr).await;
    assert_eq!(create(&mut c, SOURCE, 3).await, 0);
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
        for p in 0..3u32 {
            let recs: Vec<Record> = chunk
                .iter()
                .filter(|a| a.record.partition == p)
                .map(|a| Record {
                    key: a.record.key.clone(),
                    value: a.record.value.clone(),
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
            let (err, _) = produce(&mut c, SOURCE, i32::try_from(p).unwrap(), batch, -1).await;
            assert_eq!(err, 0, "produce to partition {p}");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_after_random_sigkills_equal_the_uninterrupted_run() {
    let seed: u64 = std::env::var("RUNNEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    eprintln!("seed {seed} (set RUNNEL_TEST_SEED to replay)");
    let arrivals = sensors::generate(seed, 6, 420);
    let total = i64::try_from(arrivals.len()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (input_dir, ref_dir, crash_dir) = (
        root.path().join("input").join("data"),
        root.path().join("ref").join("data"),
        root.path().join("crash").join("data"),
    );
    for d in [&input_dir, &ref_dir, &crash_dir] {
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
    }

    // 1. The input, published with the processor off.
    let addr = free_addr();
    let mut b = spawn_broker(&input_dir, addr, false);
    publish(addr, &arrivals).await;
    b.kill();
    copy_dir(&input_dir, &ref_dir);
    copy_dir(&input_dir, &crash_dir);

    // 2. Uninterrupted run.
    let addr = free_addr();
    let mut b = spawn_broker(&ref_dir, addr, true);
    let mut c = connect(addr).await;
    let expected = wait_finished(&mut c, total).await;
    b.kill();
    for t in OUTPUTS {
        assert!(
            !expected[t].is_empty(),
            "{t} is empty in the uninterrupted run"
        );
        eprintln!("{t}: {} records", expected[t].len());
    }

    // 3. The same, SIGKILLed at random points while the pipeline runs.
    let mut rng = sensors::Rng::new(seed ^ 0xdead_beef);
    let mut kills = 0;
    for _ in 0..KILLS {
        let addr = free_addr();
        let mut b = spawn_broker(&crash_dir, addr, true);
        let mut c = connect(addr).await;
        tokio::time::sleep(Duration::from_millis(100 + rng.below(500))).await;
        let done = consumed(&mut c).await >= total;
        b.kill();
        if done {
            break;
        }
        kills += 1;
    }
    eprintln!("killed the broker {kills} times mid-run");
    assert!(
        kills >= 2,
        "the pipeline finished before it could be killed twice"
    );
    let addr = free_addr();
    let mut b = spawn_broker(&crash_dir, addr, true);
    let mut c = connect(addr).await;
    let got = wait_finished(&mut c, total).await;
    b.kill();

    let show = |r: &Rec| {
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
    };
    let seqs = |v: &[Rec]| -> Vec<String> {
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
    };
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
                "{t}: record {i} differs after {kills} kills:\n got {}\nwant {}",
                show(g),
                show(e)
            );
        }
        assert_eq!(
            got[t].len(),
            expected[t].len(),
            "{t}: record count after {kills} kills"
        );
    }
}
