//! gRPC ⇄ Kafka-client interop against a real `runnel` process: what the Rust gRPC client
//! publishes, kcat and kafka-python read back byte for byte; what kafka-python produces, a gRPC
//! subscriber reads unchanged, and resumes after a dropped stream (and a broker restart) at the
//! next offset with no gap and no duplicate.
//!
//! Both directions compare every key, value (null and empty included), header (binary values,
//! empty and null values, repeated names), partition, offset and CreateTime timestamp. kcat
//! 1.7.1 has no hex or base64 output; its `-J` envelope carries the raw bytes (see
//! [`kcat_read`]), piped through `od` so that the test reads them exactly (its `-f '%h'`
//! cannot: header values are printed as C strings, cut at the first NUL). kafka-python prints
//! base64 (`tests/clients/python/grpc_readback.py`, `grpc_produce.py`).
//!
//! A missing kcat, kafka-python or `runnel` binary skips a test locally and fails it under
//! `CI=true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use runnel_broker::grpc::convert::rfc3339_ms;
use runnel_client::{sensor, v1, Client, PublisherConfig, StartAt, SubscriberConfig};
use runnel_tests::kafka::runtime;
use runnel_tests::{
    free_loopback_addr, require_tool, run_client, unique_topic, venv_python_with, workspace_root,
    Broker,
};

/// Deadline for one external client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for one gRPC call or for the next record of a subscription.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Partitions of the topic the gRPC publisher writes (keys spread over all of them).
const PARTITIONS: i32 = 3;
/// Records the gRPC publisher sends (plus one typed sensor reading).
const PUBLISHED: u8 = 40;

/// Record headers in order: name and value (`None` = null).
type Headers = Vec<(String, Option<Vec<u8>>)>;

/// One record as every reader must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
    timestamp: i64,
}

/// Records by (partition, offset).
type Log = BTreeMap<(i32, i64), Rec>;

// ---------------------------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------------------------

/// A broker whose gRPC API listens on a free port of its own (not left to the default).
fn grpc_broker() -> Option<(Broker, String)> {
    let grpc = free_loopback_addr().expect("free port").to_string();
    let broker = Broker::start_or_skip_with(&["--grpc-addr", &grpc])?;
    Some((broker, grpc))
}

fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/clients/python").join(name)
}

/// Now minus an hour, on a whole second, in ms since the epoch.
fn an_hour_ago_ms() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    (i64::try_from(now).expect("seconds fit i64") - 3600) * 1000
}

// ---------------------------------------------------------------------------------------------
// gRPC publish -> kcat and kafka-python
// ---------------------------------------------------------------------------------------------

/// Record `i` of the gRPC publish: binary keys (some null), binary values (one null, one
/// empty), headers with binary, empty and null values and a repeated name (some records have
/// none), explicit timestamps one second apart.
fn published_record(i: u8, t0: i64) -> v1::Record {
    let key = (i % 5 != 0).then(|| vec![b'k', i, 0x00, 0xff, 0x80, b'\n']);
    let value = match i {
        3 => None,
        4 => Some(Vec::new()),
        // Every byte value, from a different start per record, up to 700 bytes.
        _ => Some(
            (0..=255u8)
                .cycle()
                .skip(usize::from(i))
                .take(usize::from(i) * 17 + 1)
                .collect(),
        ),
    };
    let headers = if i % 4 == 0 {
        Vec::new()
    } else {
        vec![
            header("seq", Some(i.to_string().as_bytes())),
            header(
                "bin",
                Some(&[
                    0x00, 0xff, 0xfe, 0x80, i, b',', b'=', b'"', b'\\', b'\n', 0x1e, 0x7f,
                ]),
            ),
            header("dup", Some(b"first")),
            header("empty", Some(b"")),
            header("dup", Some(b"second")),
            header("null", None),
        ]
    };
    v1::Record {
        key,
        value,
        headers,
        timestamp_ms: Some(t0 + i64::from(i) * 1000),
    }
}

fn header(key: &str, value: Option<&[u8]>) -> v1::Header {
    v1::Header {
        key: key.to_owned(),
        value: value.map(<[u8]>::to_vec),
    }
}

fn rec_of(r: &v1::Record) -> Rec {
    Rec {
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        timestamp: r.timestamp_ms.expect("explicit timestamp"),
    }
}

/// Publishes the records over a gRPC `PublishStream` (several batches, keys spread by the
/// broker) and one typed sensor reading; returns what was stored where, per the acks.
fn publish_over_grpc(grpc: &str, topic: &str) -> Log {
    let t0 = an_hour_ago_ms();
    runtime().block_on(async {
        let client = Client::connect(grpc).await.expect("connect gRPC");
        let created = client
            .create_topic(topic, PARTITIONS)
            .await
            .expect("CreateTopic");
        assert_eq!(created.partitions.len(), 3, "partitions of {created:?}");

        let mut config = PublisherConfig::new(topic);
        config.max_batch_records = 7;
        config.max_in_flight = 2;
        let publisher = client.publisher(config);
        let mut pending = Vec::new();
        for i in 0..PUBLISHED {
            let record = published_record(i, t0);
            let expected = rec_of(&record);
            let delivery = publisher.send(record).await.expect("send");
            pending.push((expected, delivery));
        }
        publisher.close().await.expect("close publisher");
        let mut log = Log::new();
        for (expected, delivery) in pending {
            let pos = tokio::time::timeout(OP_TIMEOUT, delivery)
                .await
                .expect("acknowledged in time")
                .expect("delivered");
            assert!(
                log.insert((pos.partition, pos.offset), expected).is_none(),
                "two records acknowledged at {pos:?}"
            );
        }

        // The typed publish: key = device id, value = the documented JSON, timestamp = the
        // event time truncated to ms.
        let event_ms = t0 + 123_456;
        let event_time = UNIX_EPOCH
            + Duration::from_millis(u64::try_from(event_ms).expect("after 1970"))
            + Duration::from_nanos(654_321);
        let reading = sensor::reading("MTR-00123", event_time, 78.6, 0.12, "WARN", "fab1", "L01");
        let positions = client
            .publish_sensor_readings(topic, vec![reading], v1::Acks::All)
            .await
            .expect("PublishSensorReadings");
        assert_eq!(positions.len(), 1, "one position per reading");
        let json = format!(
            r#"{{"device_id":"MTR-00123","ts":"{}","temperature_c":78.6,"vibration_g":0.12,"status":"WARN","site":"fab1","line":"L01"}}"#,
            rfc3339_ms(event_ms)
        );
        log.insert(
            (positions[0].partition, positions[0].offset),
            Rec {
                key: Some(b"MTR-00123".to_vec()),
                value: Some(json.into_bytes()),
                headers: Vec::new(),
                timestamp: event_ms,
            },
        );
        log
    })
}

/// Reads one partition from the beginning with kcat's JSON envelope (`-J`). kcat writes key,
/// payload and header values as JSON strings with the bytes themselves: control characters,
/// '"' and '\' escaped, every other byte (0x80..=0xff included) raw, so the output is not
/// UTF-8. It goes through `od` to survive the text capture; each byte is then read as the
/// char U+0000..=U+00FF of the same number (latin-1), which makes it valid JSON whose strings
/// map back to the exact bytes.
fn kcat_read(kcat: &Path, bootstrap: &str, topic: &str, partition: i32) -> Log {
    let out = run_client(
        Command::new("bash")
            .args([
                "-c",
                r#"set -o pipefail; "$0" -C -b "$1" -t "$2" -p "$3" -o beginning -e -q -J | od -An -v -tx1"#,
            ])
            .arg(kcat)
            .arg(bootstrap)
            .arg(topic)
            .arg(partition.to_string()),
        CLIENT_TIMEOUT,
    )
    .expect("run kcat");
    out.assert_success("kcat -C -J");
    let text: String = out
        .stdout
        .split_whitespace()
        .map(|b| char::from(u8::from_str_radix(b, 16).expect("od prints hex bytes")))
        .collect();
    let mut log = Log::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("kcat -J line {:?}: {e}", latin1_bytes(line)));
        let int = |name: &str| {
            v[name]
                .as_i64()
                .unwrap_or_else(|| panic!("{name} in kcat's {v}"))
        };
        assert_eq!(v["tstype"], "create", "timestamp type in kcat's {v}");
        let names_and_values = v["headers"].as_array().cloned().unwrap_or_default();
        let headers = names_and_values
            .chunks(2)
            .map(|pair| {
                let name = latin1_bytes(pair[0].as_str().expect("header name"));
                let name = String::from_utf8(name).expect("header names are UTF-8");
                (name, pair.get(1).and_then(|v| v.as_str()).map(latin1_bytes))
            })
            .collect();
        let pos = (
            i32::try_from(int("partition")).expect("partition fits i32"),
            int("offset"),
        );
        let rec = Rec {
            key: v["key"].as_str().map(latin1_bytes),
            value: v["payload"].as_str().map(latin1_bytes),
            headers,
            timestamp: int("ts"),
        };
        assert!(log.insert(pos, rec).is_none(), "kcat read {pos:?} twice");
    }
    log
}

/// The bytes a latin-1-decoded string came from.
fn latin1_bytes(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("latin-1 decoding yields chars <= U+00FF"))
        .collect()
}

/// Reads the given partitions from the beginning with kafka-python.
fn kafka_python_read(python: &Path, bootstrap: &str, topic: &str) -> Log {
    let partitions: Vec<String> = (0..PARTITIONS).map(|p| p.to_string()).collect();
    let out = run_client(
        Command::new(python)
            .arg(python_script("grpc_readback.py"))
            .arg(bootstrap)
            .args(["--topic", topic, "--partitions", &partitions.join(",")]),
        CLIENT_TIMEOUT,
    )
    .expect("run grpc_readback.py");
    out.assert_success("grpc_readback.py");
    let mut log = Log::new();
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let (pos, rec, v) = parse_json_record(line);
        assert_eq!(
            v["timestamp_type"], 0,
            "kafka-python timestamp type (0 = CreateTime) of {line}"
        );
        assert!(log.insert(pos, rec).is_none(), "{pos:?} read twice");
    }
    log
}

fn b64(v: &serde_json::Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 from the Python script")
    })
}

/// One JSON line of the Python scripts: position, record, and the parsed line.
fn parse_json_record(line: &str) -> ((i32, i64), Rec, serde_json::Value) {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("JSON line {line:?}: {e}"));
    let int = |name: &str| {
        v[name]
            .as_i64()
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let partition = i32::try_from(int("partition")).expect("partition fits i32");
    let headers = v["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("headers in {line}"))
        .iter()
        .map(|h| {
            let name = h[0].as_str().expect("header name").to_owned();
            (name, b64(&h[1]))
        })
        .collect();
    let rec = Rec {
        key: b64(&v["key"]),
        value: b64(&v["value"]),
        headers,
        timestamp: int("timestamp"),
    };
    ((partition, int("offset")), rec, v)
}

fn assert_same_log(reader: &str, got: &Log, want: &Log) {
    for (pos, rec) in want {
        assert_eq!(
            got.get(pos),
            Some(rec),
            "{reader}: record at (partition, offset) {pos:?}"
        );
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
    assert!(
        extra.is_empty(),
        "{reader}: records never published at {extra:?}"
    );
}

#[test]
fn grpc_publish_is_read_unchanged_by_kcat_and_kafka_python() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(python) = venv_python_with("kafka") else {
        return;
    };
    let Some((broker, grpc)) = grpc_broker() else {
        return;
    };
    let topic = unique_topic("grpc-publish");
    let want = publish_over_grpc(&grpc, &topic);
    assert_eq!(
        want.len(),
        usize::from(PUBLISHED) + 1,
        "records acknowledged"
    );
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = want
            .keys()
            .filter(|(wp, _)| *wp == p)
            .map(|(_, o)| *o)
            .collect();
        let dense: Vec<i64> = (0..).take(offsets.len()).collect();
        assert_eq!(offsets, dense, "acknowledged offsets of partition {p}");
    }

    let mut by_kcat = Log::new();
    for p in 0..PARTITIONS {
        by_kcat.extend(kcat_read(&kcat, &broker.bootstrap(), &topic, p));
    }
    assert_same_log("kcat", &by_kcat, &want);

    let by_python = kafka_python_read(&python, &broker.bootstrap(), &topic);
    assert_same_log("kafka-python", &by_python, &want);
    println!(
        "{} records published over gRPC, read unchanged by kcat and kafka-python",
        want.len()
    );
}

// ---------------------------------------------------------------------------------------------
// kafka-python produce -> gRPC subscribe, resumed after dropped streams
// ---------------------------------------------------------------------------------------------

/// Produces records `first..first+count` of `grpc_produce.py` to `partition`.
fn kafka_python_produce(
    python: &Path,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    first: u32,
    count: u32,
    t0: i64,
) -> Vec<((i32, i64), Rec)> {
    let out = run_client(
        Command::new(python)
            .arg(python_script("grpc_produce.py"))
            .arg(bootstrap)
            .args(["--topic", topic])
            .args(["--partition", &partition.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--t0", &t0.to_string()]),
        CLIENT_TIMEOUT,
    )
    .expect("run grpc_produce.py");
    out.assert_success("grpc_produce.py");
    let produced: Vec<_> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (pos, rec, _) = parse_json_record(l);
            (pos, rec)
        })
        .collect();
    assert_eq!(
        produced.len(),
        usize::try_from(count).expect("count fits usize"),
        "records kafka-python reported"
    );
    produced
}

fn consumed(r: v1::ConsumedRecord) -> ((i32, i64), Rec) {
    (
        (r.partition, r.offset),
        Rec {
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            timestamp: r.timestamp_ms,
        },
    )
}

/// Takes the next `n` records from `sub`, each within [`OP_TIMEOUT`].
async fn take(sub: &mut runnel_client::Subscriber, n: usize) -> Vec<((i32, i64), Rec)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = tokio::time::timeout(OP_TIMEOUT, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no record within {OP_TIMEOUT:?} after {}", out.len()))
            .expect("subscription");
        out.push(consumed(r));
    }
    out
}

#[test]
fn kafka_python_produce_is_subscribed_over_grpc_and_resumes_without_gap_or_duplicate() {
    const PARTITION: i32 = 1;
    const FIRST: u32 = 50;
    const CUT: usize = 21;
    const AFTER_RESTART: u32 = 25;
    let Some(python) = venv_python_with("kafka") else {
        return;
    };
    let Some((mut broker, grpc)) = grpc_broker() else {
        return;
    };
    let topic = unique_topic("grpc-subscribe");
    let t0 = an_hour_ago_ms();
    let rt = runtime();
    let client = rt.block_on(async {
        let client = Client::connect(&grpc).await.expect("connect gRPC");
        client.create_topic(&topic, 2).await.expect("CreateTopic");
        client
    });
    let mut want = kafka_python_produce(
        &python,
        &broker.bootstrap(),
        &topic,
        PARTITION,
        0,
        FIRST,
        t0,
    );
    let offsets: Vec<i64> = want.iter().map(|((_, o), _)| *o).collect();
    let dense: Vec<i64> = (0..).take(offsets.len()).collect();
    assert_eq!(offsets, dense, "offsets kafka-python was acknowledged");

    let mut got = Vec::new();
    let resume_at = rt.block_on(async {
        // Small messages, so that the cut falls inside one: records the dropped subscriber had
        // received but not returned must come again.
        let mut config = SubscriberConfig::new(&topic, PARTITION, StartAt::Earliest);
        config.max_records = 8;
        let mut first = client.subscriber(config);
        got.extend(take(&mut first, CUT).await);
        let at = first.position().expect("position after records");
        drop(first);
        at
    });
    assert_eq!(
        resume_at,
        i64::try_from(CUT).expect("fits"),
        "next offset after the cut"
    );

    let mut config = SubscriberConfig::new(&topic, PARTITION, StartAt::Offset(resume_at));
    config.max_records = 8;
    config.max_backoff = Duration::from_millis(500);
    let mut second = client.subscriber(config);
    let rest = usize::try_from(FIRST).expect("fits") - CUT;
    rt.block_on(async { got.extend(take(&mut second, rest).await) });
    assert_eq!(got, want, "records read across the cut");

    // The broker dies under the live subscription; records produced after its restart arrive
    // through the same subscriber, which resubscribes at its next offset.
    broker.restart().expect("restart runnel");
    let more = kafka_python_produce(
        &python,
        &broker.bootstrap(),
        &topic,
        PARTITION,
        FIRST,
        AFTER_RESTART,
        t0,
    );
    want.extend(more);
    let after = usize::try_from(AFTER_RESTART).expect("fits");
    rt.block_on(async { got.extend(take(&mut second, after).await) });
    assert_eq!(got, want, "records read across the cut and the restart");
    assert_eq!(second.position(), Some(i64::from(FIRST + AFTER_RESTART)));
    println!(
        "{} records produced by kafka-python, read over gRPC across a dropped stream and a broker restart",
        want.len()
    );
}
