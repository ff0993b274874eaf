//! `Alerts.Watch` and `Windows.Query` against a real broker running the embedded processor
//! (the built-in sensor pipeline), fed typed sensor readings over gRPC.
//!
//! The watcher test checks exactly-once delivery across a dropped watcher and a broken
//! stream: what the watchers returned, concatenated, must equal the alerts topic read back
//! from the start — every alert once, in each partition's order.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_broker::grpc::partitioner::partition_for_key;
use runnel_broker::server::Running;
use runnel_client::{v1, AlertWatcherConfig, AlertsFrom, Client, StartAt, SubscriberConfig};
use tokio::time::Instant;
use tonic::Code;

mod common;
use common::*;

/// 2025-08-17T00:00:00Z: readings carry event times from here on.
const T0: i64 = 1_755_388_800_000;
const STEP_MS: i64 = 10_000;
const SOURCE_PARTITIONS: u32 = 3;

/// Two devices per source partition, so no partition is idle (which would hold the
/// watermark back for the idle timeout).
fn devices() -> Vec<String> {
    let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..1000 {
        let d = format!("dev-{i}");
        let p = partition_for_key(d.as_bytes(), SOURCE_PARTITIONS);
        let slot = by_partition.entry(p).or_default();
        if slot.len() < 2 {
            slot.push(d);
        }
        if by_partition.len() == 3 && by_partition.values().all(|v| v.len() == 2) {
            break;
        }
    }
    by_partition.into_values().flatten().collect()
}

/// Reading `step` of `device`: 20 °C and 95 °C alternate, so the temperature_high rule
/// (above 85, clears below 83) fires on every other reading.
fn temperature(step: i64) -> f64 {
    if step % 2 == 1 {
        95.0
    } else {
        20.0
    }
}

async fn publish_steps(c: &Client, devices: &[String], steps: std::ops::Range<i64>) {
    publish_sensor_steps(c, devices, steps, T0, STEP_MS, temperature).await;
}

async fn start(dir: &std::path::Path) -> (Running, Client) {
    let b = broker(dir).await;
    let c = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    c.create_topic("sensor_events", i32::try_from(SOURCE_PARTITIONS).unwrap())
        .await
        .unwrap();
    // The processor creates its output topics once its source exists.
    wait_for(Duration::from_secs(30), || async {
        c.admin()
            .describe_topic(v1::DescribeTopicRequest {
                name: "sensor_alerts".into(),
            })
            .await
            .is_ok()
    })
    .await;
    (b, c)
}

async fn wait_for<F, Fut>(limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Log end offsets of every partition of `topic`.
async fn log_ends(c: &Client, topic: &str) -> Vec<i64> {
    c.admin()
        .describe_topic(v1::DescribeTopicRequest { name: topic.into() })
        .await
        .unwrap()
        .into_inner()
        .partitions
        .iter()
        .map(|p| p.log_end)
        .collect()
}

/// Wait until `topic` stops growing (nothing new for a second) and has at least `min` records.
async fn settled(c: &Client, topic: &str, min: i64) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = log_ends(c, topic).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = log_ends(c, topic).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if last.iter().sum::<i64>() >= min && since.elapsed() > Duration::from_secs(1) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} did not settle: {last:?}"
        );
    }
}

/// Every record of `topic` below `ends`, as (partition, offset, alert id header).
async fn read_topic(c: &Client, topic: &str, ends: &[i64]) -> Vec<(i32, i64, String)> {
    let mut out = Vec::new();
    for (p, end) in ends.iter().enumerate() {
        let p = i32::try_from(p).unwrap();
        let mut s = c.subscriber(SubscriberConfig::new(topic, p, StartAt::Earliest));
        for _ in 0..*end {
            let r = s.next().await.unwrap();
            let id = r
                .headers
                .iter()
                .find(|h| h.key == "runnel.alert.id")
                .and_then(|h| h.value.clone())
                .map(|v| String::from_utf8(v).unwrap())
                .unwrap_or_default();
            out.push((r.partition, r.offset, id));
        }
    }
    out
}

fn key(a: &v1::Alert) -> (i32, i64, String) {
    (a.partition, a.offset, a.id.clone())
}

async fn next_alert(w: &mut runnel_client::AlertWatcher) -> v1::Alert {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("an alert within 30 s")
        .expect("watch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_disconnects_and_resumes_sees_every_alert_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = start(dir.path()).await;
    let devices = devices();

    // Watching from now, before anything is published: the first message pins the position.
    let mut w1 = c.alert_watcher(AlertWatcherConfig::new(AlertsFrom::Now));
    let watching = tokio::spawn({
        let c = c.clone();
        let devices = devices.clone();
        async move { publish_steps(&c, &devices, 0..20).await }
    });
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(key(&next_alert(&mut w1).await));
    }
    // A watcher that goes away; a new one (another process, say) resumes from its position.
    let saved = w1.position().cloned().expect("a position after alerts");
    drop(w1);
    watching.await.unwrap();
    let mut w2 = c.alert_watcher(AlertWatcherConfig::new(AlertsFrom::Position(saved)));
    for _ in 0..5 {
        seen.push(key(&next_alert(&mut w2).await));
    }
    // More input while the stream breaks mid-run.
    let more = tokio::spawn({
        let c = c.clone();
        let devices = devices.clone();
        async move { publish_steps(&c, &devices, 20..40).await }
    });
    w2.disconnect();
    seen.push(key(&next_alert(&mut w2).await));
    more.await.unwrap();

    // 20 rising edges per device over 40 steps: at least that many temperature_high alerts.
    let min = i64::try_from(devices.len() * 20).unwrap();
    let ends = settled(&c, "sensor_alerts", min).await;
    let expected = read_topic(&c, "sensor_alerts", &ends).await;
    while seen.len() < expected.len() {
        seen.push(key(&next_alert(&mut w2).await));
    }
    // Nothing beyond what is stored arrives.
    let extra = tokio::time::timeout(Duration::from_millis(500), w2.next()).await;
    assert!(extra.is_err(), "unexpected extra alert: {extra:?}");

    // Watchers interleave partitions; within each partition the order must be the topic's.
    let by_partition = |v: &[(i32, i64, String)]| {
        let mut m: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
        for (p, o, id) in v {
            m.entry(*p).or_default().push((*o, id.clone()));
        }
        m
    };
    assert_eq!(by_partition(&seen), by_partition(&expected));
    assert!(expected.iter().all(|(_, _, id)| !id.is_empty()));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_query_answers_a_devices_closed_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = start(dir.path()).await;
    let devices = devices();
    // 40 steps of 10 s: tumbling 60 s windows from T0; the watermark (newest event - 10 s)
    // closes those ending by T0 + 380 s.
    publish_steps(&c, &devices, 0..40).await;
    settled(
        &c,
        "sensor_aggregates",
        i64::try_from(devices.len() * 6).unwrap(),
    )
    .await;

    let dev = &devices[0];
    let got = c.query_windows("", dev, T0, T0 + 180_000, 0).await.unwrap();
    assert!(!got.truncated);
    // A deliberately simple reference: readings of one device per 60 s window.
    let mut expected: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for step in 0..40 {
        let at = T0 + step * STEP_MS;
        let start = at - (at - T0) % 60_000;
        if start < T0 + 180_000 {
            expected.entry(start).or_default().push(temperature(step));
        }
    }
    let starts: Vec<i64> = got.windows.iter().map(|w| w.window_start_ms).collect();
    assert_eq!(starts, expected.keys().copied().collect::<Vec<_>>());
    for w in &got.windows {
        let temps = &expected[&w.window_start_ms];
        assert_eq!(w.key, *dev);
        assert_eq!(w.window_end_ms, w.window_start_ms + 60_000);
        assert_eq!(w.count, u64::try_from(temps.len()).unwrap());
        assert_eq!(w.values["temperature_c_max"], 95.0, "{w:?}");
        assert_eq!(w.values["temperature_c_min"], 20.0, "{w:?}");
        let avg = temps.iter().sum::<f64>() / f64::from(u32::try_from(temps.len()).unwrap());
        assert!((w.values["temperature_c_avg"] - avg).abs() < 1e-9, "{w:?}");
    }
    // The range is on window starts, half-open.
    let one = c
        .query_windows("", dev, T0 + 60_000, T0 + 120_000, 0)
        .await
        .unwrap();
    assert_eq!(one.windows.len(), 1);
    assert_eq!(one.windows[0].window_start_ms, T0 + 60_000);
    let capped = c.query_windows("", dev, T0, 0, 2).await.unwrap();
    assert_eq!(capped.windows.len(), 2);
    assert!(capped.truncated);
    // An unknown device has no windows; bad requests get the right status.
    let none = c
        .query_windows("", "no-such-device", T0, 0, 0)
        .await
        .unwrap();
    assert!(none.windows.is_empty());
    let e = c.query_windows("", dev, T0 + 1, T0, 0).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::InvalidArgument), "{e}");
    let e = c.query_windows("nope", dev, T0, 0, 0).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound), "{e}");
    b.shutdown().await;
}
