//! Crash test: acks=all producers write unique values while the broker process is SIGKILLed at
//! random moments (and, every third time, stopped cleanly with SIGTERM, which makes the next
//! start trust the logs' clean-close markers); after every restart each acknowledged value is
//! present exactly once at its acknowledged offset, offsets are dense, and nothing appears that
//! was never sent.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_client::simulate::rng::Rng;

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 2;
const PRODUCERS: usize = 4;
const KILLS: usize = 6;

fn free_addr() -> SocketAddr {
    runnel_broker::net::free_loopback_addr().expect("a free loopback port")
}

/// `runnel serve`, SIGKILLed when dropped (so a failing assertion leaves no broker behind).
fn spawn_broker(dir: &std::path::Path, addr: SocketAddr) -> Proc {
    Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--kafka-addr", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// SIGTERM, and a clean exit within 30 s.
fn stop_cleanly(broker: &mut Proc) {
    let status = broker.terminate(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "runnel serve on SIGTERM: {status:?} (None: no exit within 30 s)"
    );
}

/// How many of the test topic's partitions hold a clean-close marker.
fn clean_close_markers(data_dir: &std::path::Path) -> usize {
    (0..PARTITIONS)
        .filter(|p| {
            data_dir
                .join("topics")
                .join(TOPIC)
                .join(p.to_string())
                .join(runnel_broker::log::file::CleanClose::FILE)
                .exists()
        })
        .count()
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect_to(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "broker did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct Ledger {
    /// value -> (partition, offset) for every acknowledged record.
    acked: HashMap<String, (i32, i64)>,
    /// Values whose produce had no answer (connection died): may or may not be present.
    unknown: HashSet<String>,
}

async fn producer(
    addr: SocketAddr,
    id: usize,
    round: usize,
    ledger: Arc<Mutex<Ledger>>,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let Ok(mut c) = Client::connect_to(addr).await else {
        return;
    };
    for seq in 0.. {
        let n = 1 + rng.below(5);
        let partition = i32::try_from(rng.below(u64::try_from(PARTITIONS).unwrap())).unwrap();
        let values: Vec<String> = (0..n)
            .map(|i| format!("r{round}-p{id}-s{seq}-{i}"))
            .collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                key: Some(b"k".to_vec()),
                value: Some(v.clone().into_bytes()),
                headers: vec![],
                timestamp: 1,
            })
            .collect();
        let batch = encode_batch(&records, ProducerInfo::default()).freeze();
        ledger
            .lock()
            .unwrap()
            .unknown
            .extend(values.iter().cloned());
        match try_produce(&mut c, TOPIC, partition, batch).await {
            Ok((0, base)) => {
                let mut l = ledger.lock().unwrap();
                for (i, v) in values.iter().enumerate() {
                    l.unknown.remove(v);
                    l.acked
                        .insert(v.clone(), (partition, base + i64::try_from(i).unwrap()));
                }
            }
            Ok((code, _)) => panic!("produce failed with error {code} while the broker was up"),
            Err(_) => return, // broker killed: outcome unknown
        }
    }
}

async fn try_produce(
    c: &mut Client,
    topic_name: &str,
    partition: i32,
    batch: Bytes,
) -> std::io::Result<(i16, i64)> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(topic_name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp = c.try_call(&req, 9).await?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

async fn read_partition(c: &mut Client, partition: i32) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (err, hw, data) = fetch(c, TOPIC, partition, offset, 0).await;
        assert_eq!(err, 0, "fetch error at offset {offset}");
        for (o, r) in decode_all(data) {
            if o >= offset {
                out.push((o, String::from_utf8(r.value.unwrap()).unwrap()));
                offset = o + 1;
            }
        }
        if offset >= hw {
            return out;
        }
    }
}

fn check(ledger: &Ledger, logs: &[Vec<(i64, String)>]) -> usize {
    let mut seen: HashMap<&str, (i32, i64)> = HashMap::new();
    for (p, log) in (0..).zip(logs) {
        for (expected, (offset, _)) in (0..).zip(log) {
            assert_eq!(
                *offset, expected,
                "partition {p}: offsets must be dense from 0"
            );
        }
        for (offset, value) in log {
            let prior = seen.insert(value, (p, *offset));
            assert!(
                prior.is_none(),
                "value {value} appears twice: {prior:?} and {:?}",
                (p, offset)
            );
            assert!(
                ledger.acked.contains_key(value) || ledger.unknown.contains(value),
                "value {value} was never sent"
            );
        }
    }
    for (value, at) in &ledger.acked {
        assert_eq!(
            seen.get(value.as_str()),
            Some(at),
            "acknowledged value {value} lost or moved"
        );
    }
    ledger.acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % 1_000_000_007,
            )
            .unwrap()
        });
    eprintln!("crash test seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut broker = spawn_broker(dir.path(), addr);
    wait_ready(addr).await;
    let mut c = Client::connect_to(addr).await.unwrap();
    assert_eq!(create(&mut c, TOPIC, PARTITIONS).await, 0);
    drop(c);
    for round in 0..KILLS {
        let tasks: Vec<_> = (0..PRODUCERS)
            .map(|id| tokio::spawn(producer(addr, id, round, ledger.clone(), rng.next_u64())))
            .collect();
        tokio::time::sleep(Duration::from_millis(100 + rng.below(600))).await;
        // Every third stop is a clean one, mid-write too: it leaves each partition a
        // clean-close marker the next start trusts, and the kills after that start must find
        // the marker gone (the full check again).
        let clean = round % 3 == 1;
        if clean {
            stop_cleanly(&mut broker);
        } else {
            broker.kill();
        }
        for t in tasks {
            t.await.unwrap();
        }
        let markers = clean_close_markers(dir.path());
        assert_eq!(
            markers,
            if clean {
                usize::try_from(PARTITIONS).unwrap()
            } else {
                0
            },
            "round {round}: clean-close markers after a {} stop",
            if clean { "clean" } else { "SIGKILL" }
        );
        broker = spawn_broker(dir.path(), addr);
        wait_ready(addr).await;
        let mut c = Client::connect_to(addr).await.unwrap();
        let mut logs = Vec::new();
        for p in 0..PARTITIONS {
            logs.push(read_partition(&mut c, p).await);
        }
        // Checked once the broker has answered fetches: it binds its port before it opens
        // the logs, so a connection alone does not mean the start is done.
        assert_eq!(
            clean_close_markers(dir.path()),
            0,
            "round {round}: the start removes the markers"
        );
        let acked = check(&ledger.lock().unwrap(), &logs);
        eprintln!("round {round}: {acked} acknowledged records verified");
    }
    let total = ledger.lock().unwrap().acked.len();
    assert!(
        total > 100,
        "the test must actually acknowledge writes (got {total})"
    );
}
