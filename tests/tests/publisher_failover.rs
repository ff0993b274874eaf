//! The Rust client's batching [`Publisher`](runnel_client::Publisher), given every node of a
//! three-node cluster (`Client::connect_any`), keeps publishing while the partition's leader
//! is SIGKILLed (twice): one publisher object, first connected to a follower (so it must
//! follow the `runnel-leader` hint), moves to another node each time its node dies. Checked
//! against what the partition holds afterwards (read over Kafka Fetch from the leader):
//! every acknowledged value is stored exactly once at its acknowledged offset, no value
//! refused with `runnel-outcome: not-stored` is stored, no value is stored twice, and after
//! each kill the same publisher gets acknowledgements again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use runnel_client::{v1, Client, ClientError, Publisher, PublisherConfig};
use runnel_tests::cluster::Cluster;
use runnel_tests::replicated::{ensure_topic, fault_tolerant_client, leader_of, read_partition};

const TOPIC: &str = "publisher-failover";
const KILLS: usize = 2;
/// Records sent before waiting for their acknowledgements.
const CHUNK: usize = 20;
/// Acknowledged records wanted before the first kill and after each one.
const WANT_ACKED: usize = 100;

#[derive(Default)]
struct Ledger {
    /// value -> offset of every acknowledged record.
    acked: HashMap<String, i64>,
    /// Failed with no definite outcome: may or may not be stored.
    unknown: HashSet<String>,
    /// Failed with `runnel-outcome: not-stored`: must never be stored.
    failed: HashSet<String>,
    next: u64,
}

/// How long a leader election may take under a loaded machine.
const ELECTION: Duration = Duration::from_secs(30);

fn outcome(e: &ClientError) -> Option<String> {
    let ClientError::Status(s) = e else {
        return None;
    };
    s.metadata()
        .get("runnel-outcome")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Sends chunks of fresh values through `p` until `want` more are acknowledged, recording
/// every outcome; fails the test if that takes longer than `patience`.
async fn publish_until_acked(p: &Publisher, ledger: &mut Ledger, want: usize, patience: Duration) {
    let deadline = Instant::now() + patience;
    let goal = ledger.acked.len() + want;
    while ledger.acked.len() < goal {
        assert!(
            Instant::now() < deadline,
            "{} of {want} acknowledgements in {patience:?}; {} unknown, {} refused",
            want + ledger.acked.len() - goal,
            ledger.unknown.len(),
            ledger.failed.len(),
        );
        let mut sent = Vec::new();
        for _ in 0..CHUNK {
            let value = format!("v{}", ledger.next);
            ledger.next += 1;
            let d = p
                .send(runnel_client::record(None, value.as_bytes()))
                .await
                .expect("the publisher runs");
            sent.push((value, d));
        }
        for (value, d) in sent {
            // A batch answers (ack or error) within the broker's commit wait and the
            // publisher's open timeouts; far longer means the publisher is stuck.
            let r = tokio::time::timeout(Duration::from_secs(60), d)
                .await
                .unwrap_or_else(|_| panic!("no outcome for {value} in 60 s"));
            match r {
                Ok(pos) => {
                    assert_eq!(pos.partition, 0, "{value}: partition");
                    ledger.acked.insert(value, pos.offset);
                }
                Err(e) if outcome(&e).as_deref() == Some("not-stored") => {
                    ledger.failed.insert(value);
                }
                Err(_) => {
                    ledger.unknown.insert(value);
                }
            }
        }
        if ledger.acked.len() < goal {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_moves_to_another_node_when_its_node_dies() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let admin = fault_tolerant_client(&cluster.bootstrap());
    ensure_topic(&admin, TOPIC, 1, Duration::from_secs(60)).await;
    let leader = leader_of(&admin, TOPIC, 0, ELECTION).await;
    // A follower first, so the publisher starts on a node that refuses it.
    let mut addrs: Vec<(i32, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.grpc.to_string()))
        .collect();
    addrs.sort_by_key(|(id, _)| *id == leader);
    let addrs: Vec<String> = addrs.into_iter().map(|(_, a)| a).collect();
    let client = Client::connect_any(&addrs).await.expect("connect");
    let publisher = client.publisher(PublisherConfig {
        partition: Some(0),
        acks: v1::Acks::All,
        max_in_flight: 4,
        ..PublisherConfig::new(TOPIC)
    });

    let mut ledger = Ledger::default();
    let patience = Duration::from_secs(90);
    publish_until_acked(&publisher, &mut ledger, WANT_ACKED, patience).await;
    for round in 1..=KILLS {
        let leader = leader_of(&admin, TOPIC, 0, ELECTION).await;
        cluster.kill(leader);
        let killed_at = Instant::now();
        eprintln!("round {round}: killed leader {leader}");
        publish_until_acked(&publisher, &mut ledger, WANT_ACKED, patience).await;
        eprintln!(
            "round {round}: {WANT_ACKED} more acknowledged {} ms after the kill",
            killed_at.elapsed().as_millis()
        );
        cluster.start_node(leader).unwrap();
    }
    publisher.close().await.expect("close");
    eprintln!(
        "acknowledged {}, unknown {}, refused {}",
        ledger.acked.len(),
        ledger.unknown.len(),
        ledger.failed.len()
    );

    let stored = read_partition(&admin, TOPIC, 0, Duration::from_secs(30))
        .await
        .0;
    let mut seen: HashMap<&str, i64> = HashMap::new();
    for (offset, value) in &stored {
        assert!(
            !ledger.failed.contains(value),
            "refused value {value} is stored at offset {offset}"
        );
        assert!(
            ledger.acked.contains_key(value) || ledger.unknown.contains(value),
            "value {value} at {offset} was never sent"
        );
        let prior = seen.insert(value, *offset);
        assert!(
            prior.is_none(),
            "value {value} stored twice: {prior:?} and {offset}"
        );
    }
    for (value, offset) in &ledger.acked {
        assert_eq!(
            seen.get(value.as_str()),
            Some(offset),
            "acknowledged value {value} lost or moved"
        );
    }
}
