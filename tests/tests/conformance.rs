//! Conformance tests: unmodified third-party Kafka clients against a real `runnel` process.
//!
//! One test per client. Each starts its own broker, creates a 3-partition topic (through the
//! client's admin API; kcat has none, so rdkafka's creates it), produces keyed records with
//! headers and every compression codec to explicit partitions, consumes each partition from the
//! beginning with manual assignment (no consumer groups), checks every key, value, header,
//! offset, timestamp and the order, and checks ListOffsets earliest / latest / by timestamp.
//! The script-driven clients live in `tests/clients/`; the rdkafka client runs in-process.
//!
//! A missing client or `runnel` binary skips a test locally and fails it under `CI=true`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, Timestamp, TopicPartitionList};
use runnel_tests::kafka::{create_topic, runtime};
use runnel_tests::raw::fetch_batches;
use runnel_tests::{
    require, require_tool, run_client, unique_topic, venv_python_with, workspace_root, Broker,
};

/// Deadline for one external client run (its own waits are shorter).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);
/// Deadline for one rdkafka operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PARTITIONS: i32 = 3;
const PER_CODEC: i64 = 4;

// ---------------------------------------------------------------------------------------------
// External clients
// ---------------------------------------------------------------------------------------------

fn run_python_client(script: &str, module: &str, topic_prefix: &str) {
    let Some(python) = venv_python_with(module) else {
        return;
    };
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let dir = workspace_root().join("tests/clients/python");
    let topic = unique_topic(topic_prefix);
    let out = run_client(
        Command::new(python)
            .arg(dir.join(script))
            .arg(broker.bootstrap())
            .args(["--topic", &topic])
            .current_dir(&dir),
        CLIENT_TIMEOUT,
    )
    .expect("run client");
    println!("{}", out.stdout);
    out.assert_success(script);
    check_stored_batches(&broker, &topic);
}

/// Reads the batches back raw. Batches lie back to back from offset 0 and hold every record;
/// each holds records of one codec's producer only and is stored with that codec, or
/// uncompressed: librdkafka sends a batch uncompressed when compressing it does not shrink
/// it, which happens to the small first batch when a producer splits its records (seen in
/// CI: a 1-record batch then a 3-record one). Every codec must be stored somewhere in the
/// topic. Catches a client that silently did not compress and a broker that recompressed or
/// rewrote batches.
fn check_stored_batches(broker: &Broker, topic: &str) {
    let mut stored = std::collections::BTreeSet::new();
    for p in 0..PARTITIONS {
        let batches = fetch_batches(&broker.bootstrap(), topic, p).expect("raw fetch");
        let mut next = 0;
        for b in &batches {
            let end = b.base_offset + i64::from(b.records);
            assert_eq!(
                b.base_offset, next,
                "partition {p}: batches back to back from offset 0\nbatches: {batches:?}"
            );
            // The plan's records are in codec order, PER_CODEC of each per partition.
            let produced_with = usize::try_from(b.base_offset / PER_CODEC)
                .ok()
                .and_then(|i| CODECS.get(i))
                .unwrap_or_else(|| panic!("partition {p}: batch past the plan: {b:?}"));
            assert!(
                end <= (b.base_offset / PER_CODEC + 1) * PER_CODEC,
                "partition {p}: batch {b:?} holds records of two producers"
            );
            assert!(
                b.codec == *produced_with || b.codec == "none",
                "partition {p}: batch at {} stored as {}, produced with {produced_with}\n\
                 batches: {batches:?}",
                b.base_offset,
                b.codec
            );
            stored.insert(b.codec);
            next = end;
        }
        assert_eq!(
            next,
            Plan::total(),
            "partition {p}: records in the stored batches"
        );
    }
    // librdkafka (kcat, confluent-kafka, rdkafka) turns LZ4 into no compression, silently,
    // unless the broker advertises FindCoordinator (rdkafka_feature.c, RD_KAFKA_FEATURE_LZ4).
    let hint = if stored.contains("lz4") {
        ""
    } else {
        "\nhint: no lz4 batch; librdkafka-based clients only compress with LZ4 when ApiVersions \
         advertises FindCoordinator (any version)"
    };
    assert_eq!(
        stored,
        CODECS.into_iter().collect(),
        "codecs of the stored batches, all partitions{hint}"
    );
}

#[test]
fn confluent_kafka_python() {
    run_python_client("confluent_client.py", "confluent_kafka", "confluent");
}

#[test]
fn kafka_python() {
    run_python_client("kafka_python_client.py", "kafka", "kafkapython");
}

#[test]
fn aiokafka() {
    run_python_client("aiokafka_client.py", "aiokafka", "aiokafka");
}

#[test]
fn kafkajs() {
    let Some(node) = require_tool("node") else {
        return;
    };
    let dir = workspace_root().join("tests/clients/js");
    if !require(
        "KafkaJS (tests/clients/js/node_modules)",
        dir.join("node_modules/kafkajs/package.json").is_file(),
        "run .ci/install-clients.sh (npm ci in tests/clients/js)",
    ) {
        return;
    }
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let topic = unique_topic("kafkajs");
    let out = run_client(
        Command::new(node)
            .arg(dir.join("kafkajs_client.js"))
            .arg(broker.bootstrap())
            .args(["--topic", &topic])
            .current_dir(&dir),
        CLIENT_TIMEOUT,
    )
    .expect("run client");
    println!("{}", out.stdout);
    out.assert_success("kafkajs_client.js");
    check_stored_batches(&broker, &topic);
}

#[test]
fn kcat() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    // kcat has no admin API: create the topic with rdkafka's.
    let topic = unique_topic("kcat");
    create_topic(&broker.bootstrap(), &topic, PARTITIONS);
    let out = run_client(
        Command::new("bash")
            .arg(workspace_root().join("tests/clients/sh/kcat.sh"))
            .arg(broker.bootstrap())
            .arg(&topic)
            .env("KCAT", kcat),
        CLIENT_TIMEOUT,
    )
    .expect("run client");
    println!("{}", out.stdout);
    out.assert_success("kcat.sh");
    check_stored_batches(&broker, &topic);
}

// ---------------------------------------------------------------------------------------------
// rdkafka (librdkafka 2.12, built from source), in-process
// ---------------------------------------------------------------------------------------------

/// The records one run produces: the same plan as `tests/clients/python/plan.py`.
struct Plan {
    t0: i64,
}

impl Plan {
    fn new() -> Plan {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let now_s = i64::try_from(now_s).expect("seconds fit i64");
        // An hour ago on a whole second, one second per offset.
        Plan {
            t0: (now_s - 3600) * 1000,
        }
    }

    fn total() -> i64 {
        i64::try_from(CODECS.len()).expect("few codecs") * PER_CODEC
    }

    fn ts_of(&self, offset: i64) -> i64 {
        self.t0 + offset * 1000
    }

    fn key(codec: &str, p: i32, j: i64) -> Vec<u8> {
        format!("key-{codec}-{p}-{j}").into_bytes()
    }

    fn value(codec: &str, p: i32, j: i64) -> Vec<u8> {
        let mut v = format!("value-{codec}-{p}-{j}|").into_bytes();
        for _ in 0..8 * j {
            v.extend_from_slice(b"0123456789abcdef");
        }
        v.extend_from_slice(&[u8::try_from(j).expect("small j"), 0, 255]);
        v
    }

    fn headers(codec: &str, p: i32, j: i64) -> Vec<(String, Vec<u8>)> {
        vec![
            ("codec".into(), codec.as_bytes().to_vec()),
            ("pj".into(), format!("{p}-{j}").into_bytes()),
            ("dup".into(), b"first".to_vec()),
            ("dup".into(), b"second".to_vec()),
            ("empty".into(), Vec::new()),
        ]
    }

    /// The record at `offset` of partition `p`: (codec, j).
    fn at(offset: i64) -> (&'static str, i64) {
        let ci = usize::try_from(offset / PER_CODEC).expect("non-negative offset");
        (CODECS[ci], offset % PER_CODEC)
    }
}

/// Collects mismatches so that one run reports all of them.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    checks: usize,
}

impl Report {
    fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl FnOnce() -> String,
        want: T,
        got: T,
    ) {
        self.checks += 1;
        if want != got {
            let msg = format!("{}: expected {want:?}, got {got:?}", what());
            println!("MISMATCH {msg}");
            self.errors.push(msg);
        }
    }

    fn finish(self, client: &str) {
        assert!(
            self.errors.is_empty(),
            "{client}: {} of {} checks failed:\n  - {}",
            self.errors.len(),
            self.checks,
            self.errors.join("\n  - ")
        );
        println!("OK {client}: {} checks passed", self.checks);
    }
}

/// Produces the whole plan, one producer per codec; checks each delivery's offset.
fn rdkafka_produce(bootstrap: &str, topic: &str, plan: &Plan, report: &mut Report) {
    let rt = runtime();
    for (ci, codec) in CODECS.iter().enumerate() {
        let ci = i64::try_from(ci).expect("few codecs");
        let producer: FutureProducer = config(bootstrap)
            .set("compression.type", *codec)
            .set("enable.idempotence", "false")
            .set("linger.ms", "50")
            .create()
            .expect("producer");
        let mut pending = Vec::new();
        for p in 0..PARTITIONS {
            for j in 0..PER_CODEC {
                let key = Plan::key(codec, p, j);
                let value = Plan::value(codec, p, j);
                let mut headers = OwnedHeaders::new();
                for (k, v) in Plan::headers(codec, p, j) {
                    headers = headers.insert(Header {
                        key: &k,
                        value: Some(&v),
                    });
                }
                let record = FutureRecord::to(topic)
                    .partition(p)
                    .key(&key)
                    .payload(&value)
                    .headers(headers)
                    .timestamp(plan.ts_of(ci * PER_CODEC + j));
                let fut = producer.send_result(record).expect("queue record");
                pending.push((p, j, fut));
            }
        }
        producer.flush(OP_TIMEOUT).expect("flush");
        for (p, j, fut) in pending {
            match rt.block_on(fut).expect("delivery report") {
                Ok(d) => {
                    report.eq(|| format!("{codec}: delivered partition"), p, d.partition);
                    report.eq(
                        || format!("{codec}: delivered offset (partition {p}, j={j})"),
                        ci * PER_CODEC + j,
                        d.offset,
                    );
                }
                Err((e, _)) => report.eq(
                    || format!("{codec}: delivery (partition {p}, j={j})"),
                    "ok".to_string(),
                    e.to_string(),
                ),
            }
        }
    }
}

/// Consumes partition `p` from `start` to the end with assign(), checking every field.
fn rdkafka_consume(
    bootstrap: &str,
    topic: &str,
    plan: &Plan,
    p: i32,
    start: i64,
    report: &mut Report,
) {
    // librdkafka's assign() needs a group.id, but with assign() and no commits nothing
    // talks to the group coordinator beyond looking it up.
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "runnel-conformance-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, p, Offset::Offset(start))
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let mut next = start;
    let deadline = Instant::now() + OP_TIMEOUT;
    while Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(_)) => break,
            Err(e) => {
                report.eq(
                    || format!("partition {p}: consume"),
                    "ok".to_string(),
                    e.to_string(),
                );
                break;
            }
        };
        let offset = msg.offset();
        let (codec, j) = Plan::at(next.min(Plan::total() - 1));
        let where_ = format!("partition {p} record #{next} ({codec}, j={j})");
        report.eq(|| format!("{where_} partition"), p, msg.partition());
        report.eq(|| format!("{where_} offset"), next, offset);
        report.eq(
            || format!("{where_} key"),
            Some(Plan::key(codec, p, j)),
            msg.key().map(<[u8]>::to_vec),
        );
        report.eq(
            || format!("{where_} value"),
            Some(Plan::value(codec, p, j)),
            msg.payload().map(<[u8]>::to_vec),
        );
        let headers: Vec<(String, Vec<u8>)> = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        report.eq(
            || format!("{where_} headers"),
            Plan::headers(codec, p, j),
            headers,
        );
        report.eq(
            || format!("{where_} timestamp"),
            Timestamp::CreateTime(plan.ts_of(next)),
            msg.timestamp(),
        );
        next += 1;
    }
    report.eq(
        || format!("partition {p}: next offset after consuming from {start}"),
        Plan::total(),
        next,
    );
}

/// Watermarks and offsets_for_times (ListOffsets earliest / latest / by timestamp).
fn rdkafka_list_offsets(bootstrap: &str, topic: &str, plan: &Plan, report: &mut Report) {
    let consumer: BaseConsumer = config(bootstrap).create().expect("consumer");
    let total = Plan::total();
    for p in 0..PARTITIONS {
        let wm = consumer
            .fetch_watermarks(topic, p, OP_TIMEOUT)
            .map_err(|e| e.to_string());
        report.eq(
            || format!("partition {p}: watermarks (low, high)"),
            Ok((0, total)),
            wm,
        );
    }
    let mut cases = vec![
        (plan.ts_of(0) - 10_000, Offset::Offset(0)),
        (plan.ts_of(0), Offset::Offset(0)),
    ];
    for k in [1, PER_CODEC, PER_CODEC + 1, total - 1] {
        cases.push((plan.ts_of(k), Offset::Offset(k)));
        cases.push((plan.ts_of(k) - 500, Offset::Offset(k)));
    }
    // Past the last record Kafka answers -1, which rdkafka shows as Offset::End.
    cases.push((plan.ts_of(total - 1) + 500, Offset::End));
    for (ts, want) in cases {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts))
                .expect("partition offset");
        }
        match consumer.offsets_for_times(tpl, OP_TIMEOUT) {
            Ok(res) => {
                for p in 0..PARTITIONS {
                    let got = res
                        .find_partition(topic, p)
                        .map(|e| (e.offset(), e.error().is_ok()));
                    report.eq(
                        || {
                            format!(
                                "partition {p}: offset for timestamp {ts} (T0{:+}ms)",
                                ts - plan.t0
                            )
                        },
                        Some((want, true)),
                        got,
                    );
                }
            }
            Err(e) => report.eq(
                || format!("offsets_for_times({ts})"),
                "ok".to_string(),
                e.to_string(),
            ),
        }
    }
}

#[test]
fn rdkafka() {
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("rdkafka");
    let plan = Plan::new();
    let mut report = Report::default();
    create_topic(&bootstrap, &topic, PARTITIONS);
    rdkafka_produce(&bootstrap, &topic, &plan, &mut report);
    for p in 0..PARTITIONS {
        rdkafka_consume(&bootstrap, &topic, &plan, p, 0, &mut report);
        // Inside the second (compressed) batch: the client skips the batch's head.
        rdkafka_consume(&bootstrap, &topic, &plan, p, PER_CODEC + 1, &mut report);
    }
    rdkafka_list_offsets(&bootstrap, &topic, &plan, &mut report);
    report.finish("rdkafka");
    check_stored_batches(&broker, &topic);
}

/// The same data survives a SIGKILL and restart on the same data directory and port.
#[test]
fn rdkafka_survives_restart() {
    let Some(mut broker) = Broker::start_or_skip() else {
        return;
    };
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("restart");
    let plan = Plan::new();
    let mut report = Report::default();
    create_topic(&bootstrap, &topic, PARTITIONS);
    rdkafka_produce(&bootstrap, &topic, &plan, &mut report);
    broker.restart().expect("restart runnel");
    for p in 0..PARTITIONS {
        rdkafka_consume(&bootstrap, &topic, &plan, p, 0, &mut report);
    }
    rdkafka_list_offsets(&bootstrap, &topic, &plan, &mut report);
    report.finish("rdkafka after restart");
}

/// A client config for this file's in-process rdkafka clients.
fn config(bootstrap: &str) -> ClientConfig {
    runnel_tests::kafka::config(bootstrap, "runnel-conformance-rdkafka")
}
