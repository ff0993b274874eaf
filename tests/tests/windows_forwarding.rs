//! `Windows.Query` in a three-node cluster answers the same open windows on every node: the
//! built-in sensor pipeline runs on one node (the leader of its journal), and a node that
//! does not run it forwards the query there instead of answering with the closed windows of
//! its own copy of the aggregates topic alone (which, here, holds none: every window is
//! still open).

use std::time::{Duration, Instant, UNIX_EPOCH};

use runnel_client::{v1, Client};
use runnel_tests::cluster::Cluster;
use runnel_tests::replicated::{ensure_topic, fault_tolerant_client, leader_of};

const SOURCE: &str = "sensor_events";
const JOURNAL: &str = "__runnel_journal.sensors";
const DEVICE: &str = "dev-1";
/// 2025-08-17T00:00:00Z, minute-aligned.
const T0: i64 = 1_755_388_800_000;
const STEP_MS: i64 = 10_000;
/// Readings at T0, +10 s, +20 s: the watermark (newest - 10 s) stays inside the first
/// one-minute window, so it is open and exists only in the pipeline's state.
const STEPS: i64 = 3;
const ELECTION: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(120);

/// (start, end, open, count, values) of each window answered.
type Shape = Vec<(i64, i64, bool, u64, Vec<(String, f64)>)>;

fn shape(r: &v1::QueryWindowsResponse) -> Shape {
    r.windows
        .iter()
        .map(|w| {
            let mut values: Vec<(String, f64)> =
                w.values.iter().map(|(k, v)| (k.clone(), *v)).collect();
            values.sort_by(|a, b| a.0.cmp(&b.0));
            (w.window_start_ms, w.window_end_ms, w.open, w.count, values)
        })
        .collect()
}

/// Publishes the readings to the source partition's leader (a refusal that stored nothing is
/// retried on the next node; any other failure fails the test).
async fn publish_readings(nodes: &[String]) {
    let readings: Vec<v1::SensorReading> = (0..STEPS)
        .map(|s| {
            let at = u64::try_from(T0 + s * STEP_MS).expect("a positive time");
            runnel_client::sensor::reading(
                DEVICE,
                UNIX_EPOCH + Duration::from_millis(at),
                20.0 + f64::from(u32::try_from(s).expect("small")),
                0.1,
                "OK",
                "s1",
                "l1",
            )
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    for addr in nodes.iter().cycle() {
        assert!(Instant::now() < deadline, "no node took the readings");
        let Ok(c) = Client::connect(addr).await else {
            continue;
        };
        match c
            .publish_sensor_readings(SOURCE, readings.clone(), v1::Acks::All)
            .await
        {
            Ok(_) => return,
            Err(runnel_client::ClientError::Status(s))
                if s.metadata()
                    .get("runnel-outcome")
                    .is_some_and(|v| v == "not-stored") =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish to {addr}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_the_pipelines_open_windows() {
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    // The harness starts nodes with the processor off; restart them with it on.
    cluster.set_processor("enabled = true").expect("config");
    let ids: Vec<i32> = cluster.nodes.iter().map(|n| n.id).collect();
    for id in &ids {
        cluster.kill(*id);
    }
    for id in &ids {
        cluster.start_node(*id).expect("restart");
    }
    let admin = fault_tolerant_client(&cluster.bootstrap());
    ensure_topic(&admin, SOURCE, 1, ELECTION * 2).await;
    let nodes: Vec<(i32, String)> = cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.grpc.to_string()))
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    publish_readings(&addrs).await;

    // The pipeline's node answers from its state once it has consumed the readings.
    let runs_it = leader_of(&admin, JOURNAL, 0, PATIENCE).await;
    let home = &nodes
        .iter()
        .find(|(id, _)| *id == runs_it)
        .expect("a node")
        .1;
    let deadline = Instant::now() + PATIENCE;
    let expected = loop {
        let c = Client::connect(home).await.expect("connect");
        if let Ok(r) = c.query_windows("", DEVICE, T0, 0, 0).await {
            let s = shape(&r);
            if s.len() == 1 && s[0].3 == u64::try_from(STEPS).expect("small") {
                break s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline's node never answered the open window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(expected[0].2, "the window is open: {expected:?}");
    assert_eq!((expected[0].0, expected[0].1), (T0, T0 + 60_000));

    // Every other node gives the same answer (forwarded to the pipeline's node).
    for (id, addr) in nodes.iter().filter(|(id, _)| *id != runs_it) {
        let c = Client::connect(addr).await.expect("connect");
        let got = c
            .query_windows("", DEVICE, T0, 0, 0)
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(
            shape(&got),
            expected,
            "node {id} (the pipeline runs on node {runs_it})"
        );
        assert!(!got.truncated);
    }
}
