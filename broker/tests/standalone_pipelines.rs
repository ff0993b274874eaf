//! `runnel process` with several pipelines, end to end: one `runnel serve` (its processor
//! off) plays the Kafka cluster, and `runnel process --bootstrap ... --config ...` runs two
//! pipelines against it — `readings_pb` (protobuf `runnel.v1.SensorReading`s, 60 s windows,
//! a temperature threshold) and `machines` (JSON power readings, 10 s windows, a power
//! threshold). Each pipeline's output topics must hold exactly the windows and alerts a
//! brute-force reference computes, and the process's own HTTP listener must show every
//! pipeline: `/metrics` (the processor series) and `runnel status` (its status page).

mod common;
mod processor_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Proc};
use processor_common::sensors::{Arrival, T0};
use processor_common::*;
use prost::Message;
use runnel_processor::InputRecord;
use serde_json::Value;

const PB_SOURCE: &str = "readings_pb";
const MACHINES: &str = "machine_power";
/// Each pipeline's journal, source bound (max out-of-orderness), window size, aggregates
/// and alerts topics.
const PB: Pipe = Pipe {
    name: "readings_pb",
    bound_ms: 10_000,
    size_ms: 60_000,
    aggregates: "pb_aggregates",
    alerts: "pb_alerts",
    key: "device_id",
    value: "temperature_c",
};
const MACH: Pipe = Pipe {
    name: "machines",
    bound_ms: 1_000,
    size_ms: 10_000,
    aggregates: "machine_power_aggregates",
    alerts: "machine_power_alerts",
    key: "machine",
    value: "power_kw",
};

struct Pipe {
    name: &'static str,
    bound_ms: i64,
    size_ms: i64,
    aggregates: &'static str,
    alerts: &'static str,
    key: &'static str,
    value: &'static str,
}

/// The two pipelines; rules are listed, so the built-in ones (z-score, silence) are off and
/// the expected alerts are just the thresholds'.
fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("pipelines.toml");
    std::fs::write(
        &path,
        r#"[processor]
enabled = false
checkpoint_every_steps = 1
checkpoint_interval_ms = 100000000
max_step_records = 200
align_wait_ms = 50
idle_step_ms = 100000000

[[processor.pipelines]]
name = "readings_pb"
[processor.pipelines.source]
topics = ["readings_pb"]
partitions = 1
format = "protobuf"
[[processor.pipelines.rules]]
kind = "threshold"
name = "temperature_high"
field = "temperature_c"
above = 85.0
hysteresis = 2.0
[processor.pipelines.outputs]
aggregates = { topic = "pb_aggregates" }
alerts = { topic = "pb_alerts" }
late = { topic = "pb_late" }
dlq = { topic = "pb_dlq" }

[[processor.pipelines]]
name = "machines"
[processor.pipelines.source]
topics = ["machine_power"]
partitions = 1
key_field = "machine"
time_field = "time"
[processor.pipelines.watermark]
max_out_of_orderness_ms = 1000
[processor.pipelines.window]
size_ms = 10000
allowed_lateness_ms = 0
[[processor.pipelines.aggregations]]
field = "power_kw"
functions = ["count", "sum", "max"]
[[processor.pipelines.rules]]
kind = "threshold"
name = "power_high"
field = "power_kw"
above = 50.0
hysteresis = 5.0
[processor.pipelines.outputs]
aggregates = { topic = "machine_power_aggregates" }
alerts = { topic = "machine_power_alerts" }
late = { topic = "machine_power_late" }
dlq = { topic = "machine_power_dlq" }
"#,
    )
    .unwrap();
    path
}

/// One reading as the test knows it: (key, event time, value).
type Reading = (String, i64, f64);

fn arrival(topic: &str, offset: i64, key: &str, t: i64, value: Vec<u8>) -> Arrival {
    Arrival {
        record: InputRecord {
            topic: topic.into(),
            partition: 0,
            offset,
            key: Some(key.as_bytes().to_vec().into()),
            value: Some(value.into()),
            timestamp: t,
        },
        now: 0,
        malformed: None,
    }
}

/// Three minutes of two devices every 5 s, as protobuf: d1 at 20-22 °C with two spells
/// above 85 °C (two alerts: the first ends below 83 °C, re-arming the rule), d2 at 30 °C.
fn pb_input() -> (Vec<Arrival>, Vec<Reading>) {
    let (mut arrivals, mut readings) = (Vec::new(), Vec::new());
    for k in 0..36i32 {
        for dev in ["d1", "d2"] {
            let t = T0 + i64::from(k) * 5_000;
            let temp = match (dev, k) {
                ("d1", 10..=12) => 90.0,
                ("d1", 20..=21) => 95.0,
                ("d1", _) => 20.0 + f64::from(k % 3),
                _ => 30.0,
            };
            let value = runnel_proto::v1::SensorReading {
                device_id: dev.into(),
                event_time: Some(prost_types::Timestamp {
                    seconds: t / 1000,
                    nanos: 0,
                }),
                temperature_c: temp,
                vibration_g: 0.1,
                status: "ok".into(),
                site: "s1".into(),
                line: "l1".into(),
            }
            .encode_to_vec();
            let offset = i64::try_from(arrivals.len()).unwrap();
            arrivals.push(arrival(PB_SOURCE, offset, dev, t, value));
            readings.push((dev.to_owned(), t, temp));
        }
    }
    (arrivals, readings)
}

/// A minute of two machines every second, as JSON: m1 at 40 kW with one surge to 60 kW (one
/// alert), m2 at 10-14 kW.
fn machine_input() -> (Vec<Arrival>, Vec<Reading>) {
    let (mut arrivals, mut readings) = (Vec::new(), Vec::new());
    for k in 0..60i32 {
        for m in ["m1", "m2"] {
            let t = T0 + i64::from(k) * 1_000;
            let power = match (m, k) {
                ("m1", 25) => 60.0,
                ("m1", _) => 40.0,
                _ => 10.0 + f64::from(k % 5),
            };
            let value = serde_json::json!({"machine": m, "time": t, "power_kw": power});
            let offset = i64::try_from(arrivals.len()).unwrap();
            arrivals.push(arrival(
                MACHINES,
                offset,
                m,
                t,
                serde_json::to_vec(&value).unwrap(),
            ));
            readings.push((m.to_owned(), t, power));
        }
    }
    (arrivals, readings)
}

/// The windows the final watermark (newest event − bound) closed: (key, start) → (count,
/// sum, max), straight from the definition of a tumbling window.
fn reference_windows(p: &Pipe, readings: &[Reading]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let watermark = readings.iter().map(|r| r.1).max().unwrap() - p.bound_ms;
    let mut out: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for (key, t, v) in readings {
        let start = t - t.rem_euclid(p.size_ms);
        if start + p.size_ms <= watermark {
            let w = out
                .entry((key.clone(), start))
                .or_insert((0, 0.0, f64::MIN));
            *w = (w.0 + 1, w.1 + v, w.2.max(*v));
        }
    }
    out
}

/// Threshold alerts: fire above `above`, re-arm below `above - hysteresis`, per key.
fn reference_alerts(readings: &[Reading], above: f64, hysteresis: f64) -> Vec<(String, f64)> {
    let mut armed: BTreeMap<&str, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, _, v) in readings {
        let a = armed.entry(key).or_insert(true);
        if *a && *v > above {
            out.push((key.clone(), *v));
            *a = false;
        } else if !*a && *v < above - hysteresis {
            *a = true;
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn json(r: &Rec) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(r.1.as_deref().unwrap()).unwrap() {
        Value::Object(m) => m,
        v => panic!("not an object: {v}"),
    }
}

fn windows_of(p: &Pipe, recs: &[Rec]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut got = BTreeMap::new();
    for r in recs {
        let m = json(r);
        assert_eq!(m["pipeline"], p.name);
        let key = (
            m[p.key].as_str().unwrap().to_owned(),
            m["window_start_ms"].as_i64().unwrap(),
        );
        let count = m["count"].as_u64().unwrap();
        let avg = m.get(&format!("{}_avg", p.value)).and_then(Value::as_f64);
        let sum = m
            .get(&format!("{}_sum", p.value))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| avg.unwrap() * f64::from(u32::try_from(count).unwrap()));
        let max = m[format!("{}_max", p.value).as_str()].as_f64().unwrap();
        assert!(
            got.insert(key.clone(), (count, sum, max)).is_none(),
            "{key:?} twice"
        );
    }
    got
}

fn alerts_of(p: &Pipe, recs: &[Rec]) -> Vec<(String, f64)> {
    let mut got: Vec<(String, f64)> = recs
        .iter()
        .map(|r| {
            let m = json(r);
            (
                m[p.key].as_str().unwrap().to_owned(),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    got
}

fn same_windows(
    got: &BTreeMap<(String, i64), (u64, f64, f64)>,
    want: &BTreeMap<(String, i64), (u64, f64, f64)>,
) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|((gk, g), (wk, w))| {
            gk == wk && g.0 == w.0 && (g.1 - w.1).abs() < 1e-6 && g.2 == w.2
        })
}

async fn wait_consumed(c: &mut Client, journal: &str, total: usize) {
    let total = i64::try_from(total).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed_in(c, journal).await < total {
        assert!(Instant::now() < deadline, "{journal}: input not consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `GET path` on `addr`, once it answers.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
            let mut text = String::new();
            if s.read_to_string(&mut text).is_ok() {
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    assert!(
                        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
                        "{head}"
                    );
                    return body.to_owned();
                }
            }
        }
        assert!(Instant::now() < deadline, "no HTTP answer on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample `series` (name and labels, exactly as exposed).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runnel_process_runs_several_pipelines_and_shows_them_to_operators() {
    let (pb, pb_readings) = pb_input();
    let (machines, machine_readings) = machine_input();
    let root = tempfile::tempdir().unwrap();
    let [dir, state] = data_dirs(root.path(), ["cluster", "process"]);
    let config = write_config(root.path());

    // The "cluster": a broker with its processor off, holding the input.
    let addr = free_addr();
    let _cluster = spawn_broker_with(&dir, addr, &config);
    let mut c = connect(addr).await;
    publish_to(addr, PB_SOURCE, 1, &pb).await;
    publish_to(addr, MACHINES, 1, &machines).await;

    // The standalone processor, with its HTTP listener on a free port.
    let http = free_addr();
    let _process = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["process", "--bootstrap", &addr.to_string(), "--state-dir"])
            .arg(&state)
            .arg("--config")
            .arg(&config)
            .args(["--http-addr", &http.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit()),
    );
    wait_consumed(&mut c, "__runnel_journal.readings_pb", pb.len()).await;
    wait_consumed(&mut c, "__runnel_journal.machines", machines.len()).await;

    // Each pipeline's outputs, once they hold what the reference expects (writes follow the
    // journal), then checked exactly.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (p, readings, above, hysteresis) in [
        (&PB, &pb_readings, 85.0, 2.0),
        (&MACH, &machine_readings, 50.0, 5.0),
    ] {
        let want_windows = reference_windows(p, readings);
        let want_alerts = reference_alerts(readings, above, hysteresis);
        assert!(!want_windows.is_empty() && !want_alerts.is_empty());
        loop {
            let aggregates = read_all(&mut c, p.aggregates, 0).await;
            let alerts = read_all(&mut c, p.alerts, 0).await;
            let (got_windows, got_alerts) = (windows_of(p, &aggregates), alerts_of(p, &alerts));
            if same_windows(&got_windows, &want_windows) && got_alerts == want_alerts {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: windows {got_windows:?}\nwant {want_windows:?}\nalerts {got_alerts:?}\nwant {want_alerts:?}",
                p.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Exactly: nothing more arrives once the input is consumed (no late or bad input).
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (p, readings, above, hysteresis) in [
        (&PB, &pb_readings, 85.0, 2.0),
        (&MACH, &machine_readings, 50.0, 5.0),
    ] {
        let aggregates = read_all(&mut c, p.aggregates, 0).await;
        assert_eq!(
            aggregates.len(),
            reference_windows(p, readings).len(),
            "{}",
            p.name
        );
        let alerts = read_all(&mut c, p.alerts, 0).await;
        assert_eq!(
            alerts_of(p, &alerts),
            reference_alerts(readings, above, hysteresis)
        );
    }

    // /metrics: every pipeline's series, with the counts the input implies.
    let metrics = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
        .await
        .unwrap();
    for (p, n, rule, alerts) in [
        (&PB, pb.len(), "temperature_high", 2.0),
        (&MACH, machines.len(), "power_high", 1.0),
    ] {
        let l = format!("{{pipeline=\"{}\"}}", p.name);
        assert_eq!(
            sample(&metrics, &format!("runnel_processor_events_total{l}")),
            Some(f64::from(u32::try_from(n).unwrap())),
            "{metrics}"
        );
        assert_eq!(
            sample(&metrics, &format!("runnel_processor_dead_letters_total{l}")),
            Some(0.0)
        );
        assert_eq!(
            sample(&metrics, &format!("runnel_processor_running{l}")),
            Some(1.0)
        );
        assert!(sample(&metrics, &format!("runnel_processor_windows_open{l}")).is_some());
        assert!(sample(
            &metrics,
            &format!("runnel_processor_watermark_lag_seconds{l}")
        )
        .is_some());
        assert_eq!(
            sample(
                &metrics,
                &format!(
                    "runnel_processor_alerts_total{{pipeline=\"{}\",rule=\"{rule}\"}}",
                    p.name
                )
            ),
            Some(alerts),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "runnel_processor_checkpoint_duration_seconds_count{l}"
            )),
            "{metrics}"
        );
    }
    assert!(
        !metrics.contains("runnel_kafka_requests"),
        "broker series in a processor's metrics"
    );

    // `runnel status` against the process: both pipelines, with what they processed.
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["status", "--http-addr", &http.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("standalone processor"), "{text}");
    assert!(text.contains("pipelines (2)"), "{text}");
    for (p, source, n) in [
        (&PB, PB_SOURCE, pb.len()),
        (&MACH, MACHINES, machines.len()),
    ] {
        let line = format!("{} (running): {source} → {}", p.name, p.aggregates);
        assert!(text.contains(&line), "{line:?} not in\n{text}");
        assert!(text.contains(&format!("processed {n} ")), "{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["status", "--json", "--http-addr", &http.to_string()])
        .output()
        .unwrap();
    let snapshot: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = snapshot["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["machines", "readings_pb"]);
}
