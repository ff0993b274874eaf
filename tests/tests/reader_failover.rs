//! The Rust client's resuming readers, given every node of a three-node cluster
//! (`Client::connect_any`), carry on from their exact position on another node when the node
//! they read from is SIGKILLed: a [`Subscriber`](runnel_client::Subscriber) of an RF-3
//! partition and an [`AlertWatcher`](runnel_client::AlertWatcher) of the built-in pipeline's
//! alerts topic (2 partitions, RF 3; the test writes the alert records itself, so no
//! processor runs) both start on the partition's leader, read part of what is stored, lose
//! that node, and read on while more is published (through the new leader). Checked against
//! what each partition holds afterwards (read over Kafka Fetch): each reader saw every stored
//! record exactly once, in offset order, nothing else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runnel_client::{
    v1, AlertWatcher, AlertWatcherConfig, AlertsFrom, Client, Publisher, PublisherConfig, StartAt,
    Subscriber, SubscriberConfig,
};
use runnel_tests::cluster::Cluster;
use runnel_tests::replicated::{ensure_topic, fault_tolerant_client, leader_of, read_partition};

const TOPIC: &str = "reader-failover";
/// The built-in sensor pipeline's alerts topic (what `Alerts.Watch` with no pipeline reads).
const ALERTS: &str = "sensor_alerts";
const ALERT_PARTITIONS: i32 = 2;
/// Records published to the topic before the kill, and again after it.
const RECORDS: usize = 300;
/// Alerts published to each alerts partition before the kill, and again after it.
const ALERTS_EACH: usize = 100;
/// How long a leader election may take under a loaded machine.
const ELECTION: Duration = Duration::from_secs(30);
/// Longest wait for one record or alert (a failover included).
const PATIENCE: Duration = Duration::from_secs(90);

/// Publishes `values` through `p`, waiting for every outcome. Failed records are left out
/// (the check compares the readers with what is stored, not with what was sent).
async fn publish(p: &Publisher, values: impl Iterator<Item = String>) {
    let mut sent = Vec::new();
    for v in values {
        let d = p
            .send(runnel_client::record(None, v.as_bytes()))
            .await
            .expect("the publisher runs");
        sent.push(d);
    }
    for d in sent {
        let r = tokio::time::timeout(Duration::from_secs(60), d)
            .await
            .expect("an outcome within 60 s");
        if let Err(e) = r {
            eprintln!("a publish failed: {e}");
        }
    }
}

/// Publishes until at least `want` records of `topic`/`partition` are stored.
async fn publish_until_stored(
    p: &Publisher,
    admin: &runnel_broker::kafka_client::Client,
    topic: &str,
    partition: i32,
    prefix: &str,
    want: usize,
) {
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0usize;
    loop {
        let stored = read_partition(admin, topic, partition, PATIENCE)
            .await
            .0
            .len();
        if stored >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: {stored} of {want} stored"
        );
        let batch = (n..n + (want - stored)).map(|i| format!("{{\"id\":\"{prefix}{i}\"}}"));
        n += want - stored;
        publish(p, batch).await;
    }
}

fn publisher(client: &Client, topic: &str, partition: i32) -> Publisher {
    client.publisher(PublisherConfig {
        partition: Some(partition),
        acks: v1::Acks::All,
        ..PublisherConfig::new(topic)
    })
}

/// Reads records until `want` have been read in all (each within [`PATIENCE`]).
async fn read_records(s: &mut Subscriber, got: &mut Vec<(i64, String)>, want: usize) {
    while got.len() < want {
        let r = tokio::time::timeout(PATIENCE, s.next())
            .await
            .unwrap_or_else(|_| panic!("no record in {PATIENCE:?} after {}", got.len()))
            .unwrap_or_else(|e| panic!("the subscriber failed after {} records: {e}", got.len()));
        got.push((
            r.offset,
            String::from_utf8(r.value.unwrap_or_default()).expect("UTF-8"),
        ));
    }
}

/// Reads alerts until `want` have been read in all, by partition.
async fn read_alerts(
    w: &mut AlertWatcher,
    got: &mut BTreeMap<i32, Vec<(i64, String)>>,
    want: usize,
) {
    let mut n: usize = got.values().map(Vec::len).sum();
    while n < want {
        let a = tokio::time::timeout(PATIENCE, w.next())
            .await
            .unwrap_or_else(|_| panic!("no alert in {PATIENCE:?} after {n}"))
            .unwrap_or_else(|e| panic!("the watcher failed after {n} alerts: {e}"));
        let json = String::from_utf8(a.json).expect("UTF-8");
        got.entry(a.partition).or_default().push((a.offset, json));
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_and_alert_watcher_resume_on_another_node_when_theirs_dies() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let admin = fault_tolerant_client(&cluster.bootstrap());
    ensure_topic(&admin, TOPIC, 1, ELECTION * 2).await;
    ensure_topic(&admin, ALERTS, 2, ELECTION * 2).await;
    let writer = Client::connect_any(
        &cluster
            .nodes
            .iter()
            .map(|n| n.grpc.to_string())
            .collect::<Vec<_>>(),
    )
    .await
    .expect("connect");
    let records = publisher(&writer, TOPIC, 0);
    let alerts: Vec<Publisher> = (0..ALERT_PARTITIONS)
        .map(|p| publisher(&writer, ALERTS, p))
        .collect();
    publish_until_stored(&records, &admin, TOPIC, 0, "r", RECORDS).await;
    for (p, a) in (0..).zip(&alerts) {
        publish_until_stored(a, &admin, ALERTS, p, &format!("a{p}-"), ALERTS_EACH).await;
    }

    // Both readers start on the leader of the topic's partition (the node killed below).
    let victim = leader_of(&admin, TOPIC, 0, ELECTION).await;
    let mut addrs: Vec<(i32, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.grpc.to_string()))
        .collect();
    addrs.sort_by_key(|(id, _)| *id != victim);
    let addrs: Vec<String> = addrs.into_iter().map(|(_, a)| a).collect();
    let reader = Client::connect_any(&addrs).await.expect("connect");
    let mut sub = reader.subscriber(SubscriberConfig {
        max_records: 7,
        ..SubscriberConfig::new(TOPIC, 0, StartAt::Earliest)
    });
    let mut watch = reader.alert_watcher(AlertWatcherConfig {
        max_alerts: 5,
        ..AlertWatcherConfig::new(AlertsFrom::Earliest)
    });
    let mut got_records = Vec::new();
    let mut got_alerts = BTreeMap::new();
    read_records(&mut sub, &mut got_records, RECORDS / 2).await;
    read_alerts(&mut watch, &mut got_alerts, ALERTS_EACH).await;

    cluster.kill(victim);
    eprintln!("killed node {victim}, which both readers were reading from");
    publish_until_stored(&records, &admin, TOPIC, 0, "s", 2 * RECORDS).await;
    for (p, a) in (0..).zip(&alerts) {
        publish_until_stored(a, &admin, ALERTS, p, &format!("b{p}-"), 2 * ALERTS_EACH).await;
    }
    let stored = read_partition(&admin, TOPIC, 0, PATIENCE).await.0;
    let mut stored_alerts = BTreeMap::new();
    for p in 0..ALERT_PARTITIONS {
        stored_alerts.insert(p, read_partition(&admin, ALERTS, p, PATIENCE).await.0);
    }
    let total_alerts: usize = stored_alerts.values().map(Vec::len).sum();

    read_records(&mut sub, &mut got_records, stored.len()).await;
    read_alerts(&mut watch, &mut got_alerts, total_alerts).await;
    assert_eq!(
        got_records, stored,
        "the subscriber saw every stored record once, in order"
    );
    for p in 0..ALERT_PARTITIONS {
        assert_eq!(
            got_alerts.get(&p).map(Vec::as_slice).unwrap_or_default(),
            stored_alerts[&p].as_slice(),
            "the watcher saw every alert of partition {p} once, in order"
        );
    }
    eprintln!(
        "read {} records and {total_alerts} alerts across the kill",
        got_records.len()
    );
    for p in alerts {
        p.close().await.expect("close");
    }
    records.close().await.expect("close");
}
