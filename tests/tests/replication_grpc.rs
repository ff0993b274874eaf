//! gRPC publishing to a replicated partition, with real processes: three `runnel serve`
//! nodes, a topic with replication factor 3, publishers writing unique values over gRPC
//! `Publish` with acks=all while the partition's leader is SIGKILLed (three times). A publisher
//! follows the `runnel-leader` hint of a follower's answer and otherwise tries the next node.
//! Afterwards, read back over Kafka Fetch from the leader:
//! - every acknowledged value is stored once, at the acknowledged partition and offset;
//! - no value whose publish was refused with `runnel-outcome: not-stored` is stored;
//! - nothing never sent is stored;
//! - after each kill, publishing resumes on another node (the new leader).
//!
//! Also: a follower answers UNAVAILABLE naming the leader (`runnel-leader: <id> <grpc addr>`),
//! and keyed records without an explicit partition land where Kafka's partitioner puts them,
//! whichever node the publisher first asked.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_broker::grpc::partitioner::partition_for_key;
use runnel_broker::kafka_client::Client as KafkaClient;
use runnel_client::{v1, Client, ClientError};
use runnel_tests::cluster::Cluster;
use runnel_tests::replicated::read_partition;

const TOPIC: &str = "grpc-replicated";
const KEYED: &str = "grpc-keyed";
const KEYED_PARTITIONS: u32 = 3;
const PUBLISHERS: usize = 2;
const KILLS: usize = 3;

#[derive(Default)]
struct Ledger {
    /// value -> (partition, offset) for every acknowledged record.
    acked: HashMap<String, (i32, i64)>,
    /// (when, node) of every acknowledgement.
    acks: Vec<(Instant, i32)>,
    /// Publishes with no definite answer: may or may not be stored.
    unknown: HashSet<String>,
    /// Publishes refused with `runnel-outcome: not-stored`: must never be stored.
    failed: HashSet<String>,
}

fn kafka(bootstrap: &str) -> KafkaClient {
    runnel_tests::replicated::fault_tolerant_client(bootstrap)
}

/// A record with this value and no key.
fn record(value: &str) -> v1::Record {
    runnel_client::record(None, value.as_bytes())
}

/// One gRPC publish to `addr`, bounded in time.
async fn publish(
    addr: &str,
    topic: &str,
    partition: Option<i32>,
    records: Vec<v1::Record>,
) -> Result<Vec<v1::RecordPosition>, ClientError> {
    let call = async {
        let c = Client::connect(addr).await?;
        c.publish(topic, partition, records, v1::Acks::All).await
    };
    match tokio::time::timeout(Duration::from_secs(8), call).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Status(tonic::Status::deadline_exceeded(
            "test: no answer in 8 s",
        ))),
    }
}

/// The `runnel-outcome` and `runnel-leader` metadata of a failed call.
fn outcome(e: &ClientError) -> (Option<String>, Option<String>) {
    let ClientError::Status(s) = e else {
        return (None, None);
    };
    let get = |k: &str| {
        s.metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    (get("runnel-outcome"), get("runnel-leader"))
}

/// The node whose gRPC address is `addr`'s, from a `runnel-leader` value `<id> <addr>`.
fn hinted(nodes: &[(i32, String)], hint: &str) -> Option<usize> {
    let (id, addr) = hint.split_once(' ')?;
    let id: i32 = id.parse().ok()?;
    nodes.iter().position(|(n, a)| *n == id && a == addr)
}

async fn publisher(
    nodes: Vec<(i32, String)>,
    id: usize,
    stop: Arc<Mutex<bool>>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut at = id % nodes.len();
    for seq in 0u64.. {
        if *stop.lock().unwrap() {
            return;
        }
        let n = 1 + usize::try_from(seq % 3).unwrap();
        let values: Vec<String> = (0..n).map(|i| format!("g{id}-s{seq}-{i}")).collect();
        let records = values.iter().map(|v| record(v)).collect();
        let (node, addr) = &nodes[at];
        match publish(addr, TOPIC, Some(0), records).await {
            Ok(positions) => {
                assert_eq!(positions.len(), values.len(), "one position per record");
                let mut l = ledger.lock().unwrap();
                l.acks.push((Instant::now(), *node));
                for (v, p) in values.iter().zip(positions) {
                    l.acked.insert(v.clone(), (p.partition, p.offset));
                }
            }
            Err(e) => {
                let (outcome, leader) = outcome(&e);
                if outcome.as_deref() == Some("not-stored") {
                    ledger.lock().unwrap().failed.extend(values);
                } else {
                    ledger.lock().unwrap().unknown.extend(values);
                }
                at = match leader.as_deref().and_then(|h| hinted(&nodes, h)) {
                    Some(i) => i,
                    None => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        (at + 1) % nodes.len()
                    }
                };
            }
        }
    }
}

/// The partition's leader per fresh metadata, waiting for one.
async fn leader_of(c: &KafkaClient, topic: &str, partition: usize) -> i32 {
    runnel_tests::replicated::leader_of(c, topic, partition, Duration::from_secs(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_survives_leader_kills() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let started = Instant::now();
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let bs = cluster.bootstrap();
    let admin = kafka(&bs);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (topic, partitions) in [(TOPIC, 1), (KEYED, KEYED_PARTITIONS)] {
        while let Err(e) = admin.ensure_topic(topic, partitions).await {
            assert!(
                Instant::now() < deadline,
                "no topic {topic}: {e}\n{}",
                cluster.log_tail(1, 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let nodes: Vec<(i32, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.grpc.to_string()))
        .collect();
    let grpc_of = |id: i32| nodes.iter().find(|(n, _)| *n == id).unwrap().1.clone();

    // A follower refuses with UNAVAILABLE, names the leader, and stores nothing.
    let leader = leader_of(&admin, TOPIC, 0).await;
    let follower = nodes.iter().find(|(n, _)| *n != leader).unwrap().0;
    let refused = "follower-refused";
    let mut follower_failed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = publish(&grpc_of(follower), TOPIC, Some(0), vec![record(refused)])
            .await
            .expect_err("a follower must not take a publish");
        let (outcome, hint) = outcome(&e);
        let ClientError::Status(s) = &e else {
            panic!("not a status: {e}")
        };
        follower_failed.insert(refused.to_owned());
        // The follower may not have heard of the leader yet right after the election.
        if hint.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
        assert_eq!(outcome.as_deref(), Some("not-stored"), "{s:?}");
        let want = format!("{leader} {}", grpc_of(leader));
        assert_eq!(hint.as_deref(), Some(want.as_str()), "{s:?}");
        assert!(
            s.message().contains("not the partition's leader")
                && s.message().contains(&grpc_of(leader)),
            "{}",
            s.message()
        );
        eprintln!("follower {follower} answered: {}", s.message());
        break;
    }

    // Keyed records without a partition: wherever the publisher starts, each lands in the
    // partition Kafka's partitioner picks (a follower of that partition names its leader).
    let mut keyed: Vec<(String, i32, i64)> = Vec::new();
    for k in 0..12 {
        let key = format!("device-{k}");
        let mut at = k % nodes.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        let pos = loop {
            let r = runnel_client::record(Some(key.as_bytes()), key.as_bytes());
            match publish(&nodes[at].1, KEYED, None, vec![r]).await {
                Ok(p) => break p[0],
                Err(e) => {
                    let (outcome, hint) = outcome(&e);
                    assert_eq!(outcome.as_deref(), Some("not-stored"), "{e}");
                    assert!(Instant::now() < deadline, "key {key}: {e}");
                    match hint.as_deref().and_then(|h| hinted(&nodes, h)) {
                        Some(i) => at = i,
                        None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            at = (at + 1) % nodes.len();
                        }
                    }
                }
            }
        };
        let want = i32::try_from(partition_for_key(key.as_bytes(), KEYED_PARTITIONS)).unwrap();
        assert_eq!(pos.partition, want, "key {key}");
        keyed.push((key, pos.partition, pos.offset));
    }

    // Publishers run while the leader is killed a few times.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(Mutex::new(false));
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|id| tokio::spawn(publisher(nodes.clone(), id, stop.clone(), ledger.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for round in 0..KILLS {
        let leader = leader_of(&admin, TOPIC, 0).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        eprintln!("round {round}: killed leader {leader}");
        // Publishing resumes on another node while the old leader is down.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let resumed = ledger
                .lock()
                .unwrap()
                .acks
                .iter()
                .any(|(t, n)| *t > killed_at && *n != leader);
            if resumed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: no publish acknowledged after killing {leader}\n{}",
                cluster.log_tail(nodes[0].0, 20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "round {round}: resumed after {} ms",
            killed_at.elapsed().as_millis()
        );
        cluster.start_node(leader).unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    *stop.lock().unwrap() = true;
    for t in tasks {
        t.await.expect("publisher task");
    }
    let mut ledger = Arc::into_inner(ledger).unwrap().into_inner().unwrap();
    ledger.failed.extend(follower_failed);

    // Read everything back from the leader.
    let stored = read_partition(&admin, TOPIC, 0, Duration::from_secs(30))
        .await
        .0;
    let mut seen: HashMap<String, i64> = HashMap::new();
    for (offset, value) in &stored {
        assert!(
            !ledger.failed.contains(value),
            "refused value {value} is stored at offset {offset}"
        );
        assert!(
            ledger.acked.contains_key(value) || ledger.unknown.contains(value),
            "value {value} at {offset} was never sent"
        );
        let prior = seen.insert(value.clone(), *offset);
        assert!(
            prior.is_none(),
            "value {value} stored twice: {prior:?} and {offset}"
        );
    }
    for (value, (p, o)) in &ledger.acked {
        assert_eq!(*p, 0, "acknowledged in partition {p}");
        assert_eq!(
            seen.get(value),
            Some(o),
            "acknowledged value {value} lost or moved"
        );
    }
    for p in 0..KEYED_PARTITIONS {
        let p = i32::try_from(p).unwrap();
        let log = read_partition(&admin, KEYED, p, Duration::from_secs(30))
            .await
            .0;
        for (key, kp, ko) in keyed.iter().filter(|(_, kp, _)| *kp == p) {
            assert!(
                log.iter().any(|(o, v)| o == ko && v == key),
                "keyed record {key} not at {kp}/{ko}"
            );
        }
    }
    eprintln!(
        "{} acknowledged, {} unknown, {} refused (not stored), {} stored; all checks passed in {} s",
        ledger.acked.len(),
        ledger.unknown.len(),
        ledger.failed.len(),
        stored.len(),
        started.elapsed().as_secs()
    );
    assert!(
        ledger.acked.len() > 50,
        "too few acknowledged publishes to mean anything"
    );
}
