//! `Windows.Query` answers a device's open windows (partial aggregates from the embedded
//! pipeline's live state, marked `open`) next to its closed ones (from the aggregates topic),
//! each window once, against a real broker fed typed readings over gRPC.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_broker::grpc::partitioner::partition_for_key;
use runnel_client::{v1, Client};
use tokio::time::Instant;

mod common;
use common::*;

/// 2025-08-17T00:00:00Z, minute-aligned: readings carry event times from here on.
const T0: i64 = 1_755_388_800_000;
const STEP_MS: i64 = 10_000;
const SOURCE_PARTITIONS: u32 = 3;

/// One device per source partition, so no partition is idle (which would hold the watermark
/// back for the idle timeout).
fn devices() -> Vec<String> {
    let mut by_partition: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0..1000 {
        let d = format!("dev-{i}");
        by_partition
            .entry(partition_for_key(d.as_bytes(), SOURCE_PARTITIONS))
            .or_insert(d);
        if by_partition.len() == 3 {
            break;
        }
    }
    by_partition.into_values().collect()
}

fn temperature(step: i64) -> f64 {
    20.0 + f64::from(u32::try_from(step).unwrap()) * 3.0
}

async fn publish_steps(c: &Client, devices: &[String], steps: std::ops::Range<i64>) {
    publish_sensor_steps(c, devices, steps, T0, STEP_MS, temperature).await;
}

/// (start, open, count, avg) of each window answered, in answer order.
type Shape = Vec<(i64, bool, u64, f64)>;

fn shape(r: &v1::QueryWindowsResponse) -> Shape {
    r.windows
        .iter()
        .map(|w| {
            (
                w.window_start_ms,
                w.open,
                w.count,
                w.values["temperature_c_avg"],
            )
        })
        .collect()
}

/// The expected window of the readings of `steps` that fall in the minute starting `start`.
fn expected(start: i64, open: bool, steps: std::ops::Range<i64>) -> (i64, bool, u64, f64) {
    let temps: Vec<f64> = steps
        .filter(|s| {
            let at = T0 + s * STEP_MS;
            (start..start + 60_000).contains(&at)
        })
        .map(temperature)
        .collect();
    let n = u32::try_from(temps.len()).unwrap();
    (
        start,
        open,
        u64::from(n),
        temps.iter().sum::<f64>() / f64::from(n),
    )
}

/// Polls the query until it answers `want` (the processor runs asynchronously).
async fn wait_for_windows(c: &Client, dev: &str, want: &Shape) -> v1::QueryWindowsResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = c.query_windows("", dev, T0, 0, 0).await.unwrap();
        let s = shape(&got);
        if s.len() == want.len()
            && s.iter()
                .zip(want)
                .all(|(a, b)| (a.0, a.1, a.2) == (b.0, b.1, b.2) && (a.3 - b.3).abs() < 1e-9)
        {
            return got;
        }
        assert!(Instant::now() < deadline, "got {s:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_query_answers_open_windows_from_state_then_closed_ones_from_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let c = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    c.create_topic("sensor_events", i32::try_from(SOURCE_PARTITIONS).unwrap())
        .await
        .unwrap();
    let devices = devices();
    let dev = &devices[0];

    // Three readings at T0, +10 s, +20 s: the watermark (newest - 10 s) is T0 + 10 s, so the
    // window [T0, T0 + 60 s) is open, visible only in the state.
    publish_steps(&c, &devices, 0..3).await;
    let got = wait_for_windows(&c, dev, &vec![expected(T0, true, 0..3)]).await;
    let w = &got.windows[0];
    assert_eq!((w.window_end_ms, w.revision), (T0 + 60_000, 0));
    assert_eq!((w.partition, w.offset), (-1, -1));
    assert_eq!(w.key, *dev);
    let json: serde_json::Value = serde_json::from_slice(&w.json).unwrap();
    assert_eq!(json["count"], 3);
    // Nothing is in the topic yet: the open window really comes from the state.
    let stored = c
        .admin()
        .describe_topic(v1::DescribeTopicRequest {
            name: "sensor_aggregates".into(),
        })
        .await
        .map(|r| {
            r.into_inner()
                .partitions
                .iter()
                .map(|p| p.log_end)
                .sum::<i64>()
        })
        .unwrap_or(0);
    assert_eq!(stored, 0);
    // The range is on window starts: a range after T0 has no open window.
    let later = c.query_windows("", dev, T0 + 1, 0, 0).await.unwrap();
    assert!(later.windows.is_empty(), "{later:?}");

    // Up to T0 + 80 s: the watermark (T0 + 70 s) passes the first window's end. It is now
    // answered closed, from the topic, once; the next window is open.
    publish_steps(&c, &devices, 3..9).await;
    let got = wait_for_windows(
        &c,
        dev,
        &vec![expected(T0, false, 0..9), expected(T0 + 60_000, true, 0..9)],
    )
    .await;
    let closed = &got.windows[0];
    assert!(closed.partition >= 0 && closed.offset >= 0, "{closed:?}");
    b.shutdown().await;
}
