//! The replication series of `/metrics` on a real three-node cluster: one leader per partition
//! and one metadata leader, every node in the same term and naming the same leader, commit
//! indexes advancing after acks=all produces on every node, replica lag and commit latency on
//! the leader, peer traffic counted; after the leader of a partition is SIGKILLed, both
//! survivors count a leader change and agree on a new leader in a higher term.

use std::time::{Duration, Instant};

use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_broker::kafka_client::Client;
use runnel_tests::cluster::Cluster;

const TOPIC: &str = "metrics-repl";
const PARTITIONS: i32 = 2;

fn client(bootstrap: &str) -> Client {
    runnel_tests::replicated::fault_tolerant_client(bootstrap)
}

/// `name{topic="…",partition="p"}` as exported.
fn series(name: &str, partition: i32) -> String {
    format!("{name}{{topic=\"{TOPIC}\",partition=\"{partition}\"}}")
}

/// A metric of node `id` as an integer.
fn value(c: &Cluster, id: i32, series: &str) -> Option<i64> {
    c.metric(id, series).map(|v| {
        assert!(v.fract() == 0.0 && v.abs() < 1e15, "{series} = {v}");
        format!("{v:.0}").parse().expect("an integer")
    })
}

/// Node `id`'s whole `/metrics` text.
fn scrape(c: &Cluster, id: i32) -> String {
    use std::io::{Read, Write};
    let node = c.nodes.iter().find(|n| n.id == id).expect("a node");
    let mut s = std::net::TcpStream::connect(node.http).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read /metrics");
    body
}

/// Poll `check` until it gives `Some` or `secs` pass.
fn wait_for<T>(what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = check() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `check` until it gives `Some` (returned) or `secs` pass (`None`).
fn wait_for_or<T>(_what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What each node reports about a partition: (node, is_leader, term, leader_id).
fn observed(c: &Cluster, ids: &[i32], partition: i32) -> String {
    let rows: Vec<_> = ids
        .iter()
        .map(|&id| {
            (
                id,
                value(c, id, &series("runnel_raft_is_leader", partition)),
                value(c, id, &series("runnel_raft_term", partition)),
                value(c, id, &series("runnel_raft_leader_id", partition)),
            )
        })
        .collect();
    format!("{rows:?}")
}

/// The partition's leader and term once every node in `ids` agrees: exactly one of them
/// reports `is_leader` 1, all name it as leader and are in the same term.
fn agreed_leader(c: &Cluster, ids: &[i32], partition: i32) -> Option<(i32, i64)> {
    let mut leaders = Vec::new();
    let mut terms = Vec::new();
    let mut named = Vec::new();
    for &id in ids {
        if value(c, id, &series("runnel_raft_is_leader", partition))? == 1 {
            leaders.push(id);
        }
        terms.push(value(c, id, &series("runnel_raft_term", partition))?);
        named.push(value(c, id, &series("runnel_raft_leader_id", partition))?);
    }
    let [leader] = leaders[..] else { return None };
    let all_same = |v: &[i64]| v.windows(2).all(|w| w[0] == w[1]);
    (all_same(&terms) && named.iter().all(|n| *n == i64::from(leader))).then(|| (leader, terms[0]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_series_track_leaders_terms_commits_and_failover() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let mut c = Cluster::start(bin, 3).expect("start the cluster");
    let admin = client(&c.bootstrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = admin.ensure_topic(TOPIC, PARTITIONS.unsigned_abs()).await {
        assert!(
            Instant::now() < deadline,
            "no topic: {e}\n{}",
            c.log_tail(1, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = [1, 2, 3];

    // One leader per partition, agreed on by all three nodes in one term.
    let mut leader_of = Vec::new();
    for p in 0..PARTITIONS {
        leader_of.push(tokio::task::block_in_place(|| {
            let found = wait_for_or("one agreed leader", 30, || agreed_leader(&c, &all, p));
            found.unwrap_or_else(|| panic!("no agreed leader of {p}: {}", observed(&c, &all, p)))
        }));
    }
    // The metadata group: one leader, one term, named by everyone.
    tokio::task::block_in_place(|| {
        wait_for("one metadata leader", 30, || {
            let mut leaders = 0;
            let mut terms = Vec::new();
            let mut named = Vec::new();
            for id in all {
                leaders += value(&c, id, "runnel_raft_metadata_is_leader")?;
                terms.push(value(&c, id, "runnel_raft_metadata_term")?);
                named.push(value(&c, id, "runnel_raft_metadata_leader_id")?);
            }
            (leaders == 1
                && terms.windows(2).all(|w| w[0] == w[1])
                && named.windows(2).all(|w| w[0] == w[1])
                && named[0] > 0)
                .then_some(())
        })
    });

    // Commit indexes advance on every node after acks=all produces to partition 0.
    let (leader, term) = leader_of[0];
    let commit_series = series("runnel_raft_commit_index", 0);
    let leader_before = value(&c, leader, &commit_series).expect("a commit index");
    assert!(leader_before >= 1, "the leader's no-op committed");
    const BATCHES: i64 = 5;
    for i in 0..BATCHES {
        let batch = encode_batch(
            &[Record {
                value: Some(format!("v{i}").into_bytes()),
                timestamp: 1,
                ..Record::default()
            }],
            ProducerInfo::default(),
        )
        .freeze();
        admin
            .produce(TOPIC, 0, batch)
            .await
            .expect("acks=all produce");
    }
    // (The published commit index may trail an acknowledgement by a hard-state save.)
    let leader_commit = tokio::task::block_in_place(|| {
        wait_for(
            "the leader's commit index to pass the produced batches",
            10,
            || value(&c, leader, &commit_series).filter(|n| *n >= leader_before + BATCHES),
        )
    });
    assert_eq!(
        value(&c, leader, &series("runnel_raft_last_index", 0)),
        Some(leader_commit),
        "nothing uncommitted is left on the leader"
    );
    tokio::task::block_in_place(|| {
        wait_for("followers learn the commit and catch up", 10, || {
            for id in all {
                (value(&c, id, &commit_series)? >= leader_commit).then_some(())?;
            }
            for f in all.iter().filter(|f| **f != leader) {
                let lag = format!(
                    "runnel_raft_replica_lag_entries{{topic=\"{TOPIC}\",partition=\"0\",follower=\"{f}\"}}"
                );
                (value(&c, leader, &lag)? == 0).then_some(())?;
            }
            Some(())
        })
    });
    let timed = value(
        &c,
        leader,
        &series("runnel_raft_commit_latency_seconds_count", 0),
    )
    .expect("commit latency on the leader");
    assert!(
        timed >= BATCHES,
        "{timed} commit latencies for {BATCHES} batches"
    );
    for id in all {
        assert!(value(&c, id, "runnel_peer_frames_sent_total").unwrap_or(0) > 0);
        assert!(value(&c, id, "runnel_peer_raft_messages_received_total").unwrap_or(0) > 0);
        assert!(value(&c, id, "runnel_peer_connects_total").unwrap_or(0) >= 2);
        assert_eq!(
            value(&c, id, "runnel_peer_drops_total{reason=\"misaddressed\"}"),
            Some(0)
        );
    }

    // Every name the replication dashboard queries has samples on the leader now.
    let exposition = scrape(&c, leader);
    let dashboard = std::fs::read_to_string(
        runnel_tests::workspace_root().join("deploy/grafana/dashboards/runnel-replication.json"),
    )
    .expect("the replication dashboard");
    let mut checked = 0;
    for name in dashboard
        .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .filter(|w| w.starts_with("runnel_"))
    {
        assert!(
            exposition
                .lines()
                .any(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name)),
            "the replication dashboard queries {name}, which has no sample on the leader"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} metric references");

    // SIGKILL the leader: both survivors count a leader change and agree on a new leader.
    let changes = series("runnel_raft_leader_changes_total", 0);
    let survivors: Vec<i32> = all.iter().copied().filter(|id| *id != leader).collect();
    let changes_before: Vec<i64> = survivors
        .iter()
        .map(|id| value(&c, *id, &changes).expect("leader changes"))
        .collect();
    assert!(changes_before.iter().all(|n| *n >= 1), "{changes_before:?}");
    c.kill(leader);
    let (new_leader, new_term) = tokio::task::block_in_place(|| {
        wait_for("a new leader among the survivors", 30, || {
            agreed_leader(&c, &survivors, 0)
        })
    });
    assert_ne!(new_leader, leader);
    assert!(new_term > term, "term {term} -> {new_term}");
    for (id, was) in survivors.iter().zip(&changes_before) {
        let now = value(&c, *id, &changes).expect("leader changes");
        assert!(now > *was, "node {id}: leader changes {was} -> {now}");
    }
    assert_eq!(
        value(&c, leader, &changes),
        None,
        "the killed node answers nothing"
    );
}
