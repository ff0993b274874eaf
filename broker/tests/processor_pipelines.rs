//! Pipelines declared in the TOML config, end to end: the `runnel` binary runs the three
//! pipelines of `examples/pipelines.toml` side by side in one broker:
//! - `machines` (JSON on its own topic, 10 s tumbling windows, a threshold rule with
//!   hysteresis, a silence rule) writes the windows and alerts a simple reference expects;
//! - `sensors_pb` reads the seeded sensor stream of `processor_crash.rs` as protobuf
//!   `runnel.v1.SensorReading`s and `sensors` the same readings as JSON: their aggregates,
//!   alerts and late data are equal (but for the pipeline name and alert ids), and the records
//!   that are malformed JSON in one are undecodable protobuf in the other, in the DLQ both.
//!
//! As in `processor_crash.rs`, the input is published before the pipelines start, so each
//! pipeline's time-ordered merge of partitions does not depend on fetch timing.

mod common;
mod processor_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Client, Proc};
use processor_common::sensors::{Arrival, T0};
use processor_common::*;
use prost::Message;
use runnel_processor::InputRecord;
use serde_json::Value;

const PB_SOURCE: &str = "sensor_readings_pb";
const MACHINES: &str = "machine_power";
const ALL_OUTPUTS: [&str; 12] = [
    "sensor_aggregates",
    "sensor_alerts",
    "sensor_events_late",
    "sensor_events_dlq",
    "sensor_pb_aggregates",
    "sensor_pb_alerts",
    "sensor_pb_late",
    "sensor_pb_dlq",
    "machine_power_aggregates",
    "machine_power_alerts",
    "machine_power_late",
    "machine_power_dlq",
];

/// The example's pipelines, with the driver settings of the other end-to-end tests (no
/// time-only steps: nothing changes once the input is consumed).
fn write_config(dir: &Path, enabled: bool) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipelines.toml");
    let pipelines = std::fs::read_to_string(example).unwrap();
    let path = dir.join(format!("pipelines-{enabled}.toml"));
    std::fs::write(
        &path,
        format!(
            "[processor]\nenabled = {enabled}\ncheckpoint_every_steps = 20\n\
             checkpoint_interval_ms = 100000000\nmax_step_records = 200\nalign_wait_ms = 50\n\
             idle_step_ms = 100000000\n\n{pipelines}"
        ),
    )
    .unwrap();
    path
}

/// A JSON reading of the seeded stream as protobuf `runnel.v1.SensorReading`.
fn protobuf_of(json: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(json).unwrap();
    let ms = runnel_processor::time::parse_rfc3339(v["ts"].as_str().unwrap()).unwrap();
    runnel_proto::v1::SensorReading {
        device_id: v["device_id"].as_str().unwrap().into(),
        event_time: Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap(),
        }),
        temperature_c: v["temperature_c"].as_f64().unwrap(),
        vibration_g: v["vibration_g"].as_f64().unwrap(),
        status: v["status"].as_str().unwrap().into(),
        site: v["site"].as_str().unwrap().into(),
        line: String::new(),
    }
    .encode_to_vec()
}

/// The arrival with its reading as protobuf; a malformed one as bytes that do not decode.
fn as_protobuf(a: &Arrival) -> Arrival {
    let mut out = a.clone();
    out.record.topic = PB_SOURCE.into();
    out.record.value = Some(
        match a.malformed {
            Some(_) => vec![0xff; 7],
            None => protobuf_of(a.record.value.as_deref().unwrap()),
        }
        .into(),
    );
    out
}

/// One machine reading, in event-time order on partition 0.
fn machine(offset: &mut i64, name: &str, time: Value, power: f64) -> Arrival {
    let value = serde_json::json!({"machine": name, "time": time, "power_kw": power});
    let record = InputRecord {
        topic: MACHINES.into(),
        partition: 0,
        offset: *offset,
        key: Some(name.as_bytes().to_vec().into()),
        value: Some(serde_json::to_vec(&value).unwrap().into()),
        timestamp: time.as_i64().unwrap_or(T0),
    };
    *offset += 1;
    Arrival {
        record,
        now: 0,
        malformed: None,
    }
}

/// Two minutes of three machines, once a second: press-1 hovers at the threshold (49/51:
/// one alert, hysteresis keeps it from re-arming), press-2 idles at 20 kW with two surges
/// (two alerts), press-3 stays low and stops after a minute (one silence alert). Plus a
/// reading later than the allowed lateness and two the DLQ takes.
fn machine_input() -> Vec<Arrival> {
    let mut offset = 0;
    let mut out = Vec::new();
    for k in 0..120i32 {
        let at = |m: i64| Value::from(T0 + i64::from(k) * 1000 + m * 100);
        out.push(machine(
            &mut offset,
            "press-1",
            at(0),
            49.0 + 2.0 * f64::from(k % 2),
        ));
        let surge = (30..35).contains(&k) || (80..82).contains(&k);
        let p2 = if surge {
            60.0 + f64::from(u8::from(k >= 80)) * 10.0
        } else {
            20.0
        };
        out.push(machine(&mut offset, "press-2", at(1), p2));
        if k < 60 {
            out.push(machine(
                &mut offset,
                "press-3",
                at(2),
                10.0 + f64::from(k % 7),
            ));
        }
        if k == 100 {
            out.push(machine(
                &mut offset,
                "press-1",
                Value::from(T0 + 50_000),
                49.0,
            ));
            out.push(machine(&mut offset, "press-3", Value::from("soon"), 1.0));
            out.push(machine(&mut offset, "press-1", at(3), 1e6));
        }
    }
    out
}

/// What `machines` must write: per machine and 10 s window, the on-time readings' count,
/// sum and max, for the windows the final watermark closed.
fn machine_reference(input: &[Arrival]) -> BTreeMap<(String, i64), (u64, f64, f64)> {
    let mut max_time = i64::MIN;
    let mut windows: BTreeMap<(String, i64), (u64, f64, f64)> = BTreeMap::new();
    for a in input {
        let v: Value = serde_json::from_slice(a.record.value.as_deref().unwrap()).unwrap();
        let (Some(t), Some(p)) = (v["time"].as_i64(), v["power_kw"].as_f64()) else {
            continue;
        };
        if p > 10_000.0 || t < max_time.saturating_sub(1000) {
            continue; // the DLQ's, and the late one (its window closed long before)
        }
        max_time = max_time.max(t);
        let w = windows
            .entry((
                v["machine"].as_str().unwrap().to_owned(),
                t - t.rem_euclid(10_000),
            ))
            .or_insert((0, 0.0, f64::MIN));
        *w = (w.0 + 1, w.1 + p, w.2.max(p));
    }
    let watermark = max_time - 1000;
    windows.retain(|(_, start), _| start + 10_000 <= watermark);
    windows
}

async fn wait_consumed(c: &mut Client, journal: &str, total: usize) {
    let total = i64::try_from(total).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while consumed_in(c, journal).await < total {
        assert!(Instant::now() < deadline, "{journal}: input not consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn outputs_of(c: &mut Client) -> BTreeMap<&'static str, Vec<Rec>> {
    let mut out = BTreeMap::new();
    for t in ALL_OUTPUTS {
        out.insert(t, read_all(c, t, 0).await);
    }
    out
}

/// Every output topic, once none has grown for a while.
async fn settled_outputs(c: &mut Client) -> BTreeMap<&'static str, Vec<Rec>> {
    let mut last = outputs_of(c).await;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = outputs_of(c).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

fn json(r: &Rec) -> serde_json::Map<String, Value> {
    match serde_json::from_slice(r.1.as_deref().unwrap()).unwrap() {
        Value::Object(m) => m,
        v => panic!("not an object: {v}"),
    }
}

fn header<'a>(r: &'a Rec, name: &str) -> Option<&'a [u8]> {
    r.2.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.as_deref())
}

/// A record as compared across the JSON and protobuf pipelines: key, timestamp, the value's
/// fields but `drop`, and the headers but the pipeline name, alert id and source topic.
fn comparable(r: &Rec, drop: &[&str]) -> (Option<Vec<u8>>, i64, Option<Value>, Vec<String>) {
    let value = serde_json::from_slice::<Value>(r.1.as_deref().unwrap_or_default())
        .ok()
        .map(|mut v| {
            if let Some(m) = v.as_object_mut() {
                for k in drop {
                    m.remove(*k);
                }
            }
            v
        });
    let headers =
        r.2.iter()
            .filter(|(k, _)| {
                !["runnel.pipeline", "runnel.alert.id", "runnel.source.topic"].contains(&k.as_str())
            })
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    String::from_utf8_lossy(v.as_deref().unwrap_or_default())
                )
            })
            .collect();
    (r.0.clone(), r.3, value, headers)
}

async fn run_broker(dir: &Path, config: &Path) -> (Proc, Client, SocketAddr) {
    let addr = free_addr();
    let b = spawn_broker_with(dir, addr, config);
    let c = connect(addr).await;
    (b, c, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_declared_pipelines_run_side_by_side_and_protobuf_input_equals_json() {
    let seed = seed();
    let sensors = golden_input(seed);
    let sensors_pb: Vec<Arrival> = sensors.iter().map(as_protobuf).collect();
    let machines = machine_input();
    let root = tempfile::tempdir().unwrap();
    let [dir] = data_dirs(root.path(), ["broker"]);

    // 1. The input, published with the processor off.
    let (mut b, _, addr) = run_broker(&dir, &write_config(root.path(), false)).await;
    publish_to(addr, SOURCE, 3, &sensors).await;
    publish_to(addr, PB_SOURCE, 3, &sensors_pb).await;
    publish_to(addr, MACHINES, 1, &machines).await;
    b.kill();

    // 2. The three pipelines of the example, until each consumed its input.
    let (mut b, mut c, _) = run_broker(&dir, &write_config(root.path(), true)).await;
    wait_consumed(&mut c, "__runnel_journal.sensors", sensors.len()).await;
    wait_consumed(&mut c, "__runnel_journal.sensors_pb", sensors_pb.len()).await;
    wait_consumed(&mut c, "__runnel_journal.machines", machines.len()).await;
    let out = settled_outputs(&mut c).await;
    b.kill();
    for (t, recs) in &out {
        eprintln!("{t}: {} records", recs.len());
    }

    // 3. machines: windows and alerts as the reference says.
    let expected = machine_reference(&machines);
    let mut got = BTreeMap::new();
    for r in &out["machine_power_aggregates"] {
        let m = json(r);
        assert_eq!(m["pipeline"], "machines");
        assert_eq!(
            m["revision"], 0,
            "no lateness allowed: one result per window"
        );
        let key = (
            m["machine"].as_str().unwrap().to_owned(),
            m["window_start_ms"].as_i64().unwrap(),
        );
        let count = m["count"].as_u64().unwrap();
        assert_eq!(
            m["power_kw_count"].as_f64(),
            Some(f64::from(u32::try_from(count).unwrap()))
        );
        let sum = m["power_kw_sum"].as_f64().unwrap();
        let max = m["power_kw_max"].as_f64().unwrap();
        let p50 = m["power_kw_p50"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= max * 1.01, "{m:?}");
        assert!(
            got.insert(key.clone(), (count, sum, max)).is_none(),
            "{key:?} twice"
        );
    }
    assert_eq!(
        got.len(),
        28,
        "11 windows of press-1 and press-2, 6 of press-3"
    );
    assert_eq!(got, expected);
    let alerts: Vec<(String, String, f64)> = out["machine_power_alerts"]
        .iter()
        .map(|r| {
            let m = json(r);
            (
                m["rule"].as_str().unwrap().to_owned(),
                m["machine"].as_str().unwrap().to_owned(),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_owned();
    let mut sorted = alerts.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        sorted,
        [
            (s("machine_silent"), s("press-3"), 30_000.0),
            (s("power_high"), s("press-1"), 51.0),
            (s("power_high"), s("press-2"), 60.0),
            (s("power_high"), s("press-2"), 70.0),
        ],
        "{alerts:?}"
    );
    assert_eq!(out["machine_power_late"].len(), 1);
    let reasons: Vec<String> = out["machine_power_dlq"]
        .iter()
        .map(|r| String::from_utf8_lossy(header(r, "runnel.dlq.reason").unwrap()).into_owned())
        .collect();
    assert_eq!(
        reasons,
        [
            "field `time`: not an RFC 3339 timestamp: expected a digit",
            "field `power_kw` out of range: 1e6"
        ]
    );

    // 4. The same readings as JSON and as protobuf: the same results.
    for (json_topic, pb_topic, drop) in [
        (
            "sensor_aggregates",
            "sensor_pb_aggregates",
            &["pipeline"][..],
        ),
        ("sensor_alerts", "sensor_pb_alerts", &["pipeline", "id"][..]),
    ] {
        let a: Vec<_> = out[json_topic]
            .iter()
            .map(|r| comparable(r, drop))
            .collect();
        let b: Vec<_> = out[pb_topic].iter().map(|r| comparable(r, drop)).collect();
        assert!(!a.is_empty(), "{json_topic} is empty");
        assert_eq!(a.len(), b.len(), "{json_topic} vs {pb_topic}: record count");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{json_topic} vs {pb_topic}: record {i}");
        }
    }
    for r in &out["sensor_pb_aggregates"] {
        assert_eq!(json(r)["pipeline"], "sensors_pb");
    }
    // Late data keeps the input as it came: JSON in one, protobuf in the other.
    let (late, late_pb) = (&out["sensor_events_late"], &out["sensor_pb_late"]);
    assert!(!late.is_empty());
    assert_eq!(late.len(), late_pb.len(), "late record count");
    for (i, (x, y)) in late.iter().zip(late_pb).enumerate() {
        let json_value = x.1.as_deref().unwrap();
        assert_eq!(
            y.1.as_deref(),
            Some(&protobuf_of(json_value)[..]),
            "late {i}"
        );
        let strip = |r: &Rec| (r.0.clone(), r.3, comparable(r, &[]).3);
        assert_eq!(strip(x), strip(y), "late {i}");
    }
    let source = |r: &Rec| {
        (
            header(r, "runnel.source.partition").map(<[u8]>::to_vec),
            header(r, "runnel.source.offset").map(<[u8]>::to_vec),
        )
    };
    let json_dlq: Vec<_> = out["sensor_events_dlq"].iter().map(source).collect();
    let pb_dlq: Vec<_> = out["sensor_pb_dlq"].iter().map(source).collect();
    assert_eq!(
        json_dlq.len(),
        sensors.iter().filter(|a| a.malformed.is_some()).count()
    );
    assert_eq!(pb_dlq, json_dlq, "the same input records in both DLQs");
    for r in &out["sensor_pb_dlq"] {
        let reason = String::from_utf8_lossy(header(r, "runnel.dlq.reason").unwrap()).into_owned();
        assert!(reason.starts_with("invalid protobuf: "), "{reason}");
        assert_eq!(
            r.1.as_deref(),
            Some(&[0xff; 7][..]),
            "the input bytes as they came"
        );
    }
}
