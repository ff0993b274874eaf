//! Control batches, as a replicated partition stores each Raft no-op (a LEADER_CHANGE control
//! batch, `runnel_broker::raft::segment_log`), are skipped by every client, which still moves
//! past them — also when a control batch is the very last batch of the partition, where some
//! clients used to stall (tulios/kafkajs#403; librdkafka before 1.4 did not store the
//! offset of a trailing control message, confluentinc/librdkafka#2539).
//!
//! Each test writes a data directory with the broker library while no broker runs: one
//! partition holding `r0 r1 r2 | no-op | r3 r4 | no-op`, so offsets 0-2 and 4-5 are records,
//! 3 and 6 control batches, and the log ends at 7. Then `runnel serve` opens it and the client
//! reads from the beginning: every record once, in order, with its offset, and its position
//! must reach 7 without stalling; it then produces one record (offset 7, after the trailing
//! control batch) and must read it too.
//!
//! A missing client or `runnel` binary skips a test locally and fails it under `CI=true`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use runnel_broker::codec::batch;
use runnel_broker::codec::builder::{
    control_type, encode_batch, encode_control_batch, leader_change_message, ProducerInfo, Record,
};
use runnel_tests::kafka::{config, runtime};
use runnel_tests::{
    require, require_tool, run_client, unique_topic, venv_python_with, workspace_root, Broker,
};

/// The log end: the offset after the trailing control batch.
const END: i64 = 7;
/// The records, with their offsets (3 and 6 are control batches).
const RECORDS: [(i64, &str); 5] = [(0, "r0"), (1, "r1"), (2, "r2"), (4, "r3"), (5, "r4")];
/// Deadline for one client run (its own waits are 30 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for one rdkafka step.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes `topic` into `data_dir` with the broker library: one partition of records, a no-op,
/// records, and a no-op as the last batch.
fn write_topic(data_dir: &Path, topic: &str) {
    runtime().block_on(async {
        let config = runnel_broker::config::Config {
            data_dir: data_dir.to_owned(),
            ..runnel_broker::config::Config::default()
        };
        let broker = runnel_broker::broker::Broker::open(config).expect("open the data dir");
        let t = broker
            .topics
            .create(topic, 1, &[], false)
            .expect("create topic");
        let part = &t.partitions[0];
        let data = |values: &[&str]| {
            let records: Vec<Record> = values
                .iter()
                .map(|v| Record {
                    key: None,
                    value: Some(v.as_bytes().to_vec()),
                    headers: Vec::new(),
                    timestamp: 1_700_000_000_000,
                })
                .collect();
            encode_batch(&records, ProducerInfo::default())
        };
        let noop =
            || encode_control_batch(control_type::LEADER_CHANGE, &leader_change_message(-1), -1);
        for b in [
            data(&["r0", "r1", "r2"]),
            noop(),
            data(&["r3", "r4"]),
            noop(),
        ] {
            let header = batch::validate(&b).expect("valid batch");
            part.append(b, &header).expect("append");
        }
        assert_eq!(part.offsets().high_watermark, END);
        part.wait_durable(END, OP_TIMEOUT)
            .await
            .expect("fsync the batches");
    });
}

/// A `runnel serve` whose data directory holds `topic` as [`write_topic`] wrote it: started once
/// (it initialises the directory), killed, written, started again.
fn broker_with(topic: &str) -> Option<Broker> {
    let mut broker = Broker::start_or_skip()?;
    broker.kill().expect("stop runnel");
    write_topic(broker.data_dir(), topic);
    broker.restart().expect("restart runnel");
    Some(broker)
}

/// Checks a script's `RECORD` / `POSITION` / `PRODUCED` lines: every record once, in order,
/// the end reached, the record produced after the trailing control batch read back.
fn check_lines(client: &str, stdout: &str) {
    let mut records = Vec::new();
    let mut positions = Vec::new();
    let mut produced = Vec::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("RECORD"), Some(o), Some(v)) => {
                records.push((o.parse::<i64>().expect("offset"), v.to_string()));
            }
            (Some("POSITION"), Some(p), None) => positions.push(p.parse::<i64>().expect("pos")),
            (Some("PRODUCED"), Some(o), None) => produced.push(o.parse::<i64>().expect("offset")),
            _ => {}
        }
    }
    let mut want: Vec<(i64, String)> = RECORDS.iter().map(|&(o, v)| (o, v.into())).collect();
    want.push((END, "after".into()));
    assert_eq!(records, want, "{client}: records read\n{stdout}");
    assert_eq!(
        produced,
        vec![END],
        "{client}: produced after the control batch\n{stdout}"
    );
    assert_eq!(
        positions.first(),
        Some(&END),
        "{client}: position at the end\n{stdout}"
    );
    assert_eq!(
        positions.last(),
        Some(&(END + 1)),
        "{client}: position after the new record\n{stdout}"
    );
}

fn run_script(cmd: &mut Command, client: &str) {
    let out = run_client(cmd, CLIENT_TIMEOUT).expect("run client");
    println!("{}\n{}", out.stdout, out.stderr);
    out.assert_success(client);
    check_lines(client, &out.stdout);
}

fn run_python(script: &str, module: &str) {
    let Some(python) = venv_python_with(module) else {
        return;
    };
    let topic = unique_topic(&format!("ctrl-{module}"));
    let Some(broker) = broker_with(&topic) else {
        return;
    };
    let dir = workspace_root().join("tests/clients/python");
    run_script(
        Command::new(python)
            .arg(dir.join(script))
            .arg(broker.bootstrap())
            .arg(&topic)
            .arg(END.to_string())
            .current_dir(&dir),
        script,
    );
}

#[test]
fn kafka_python_skips_control_batches() {
    run_python("control_batches_kafka_python.py", "kafka");
}

#[test]
fn aiokafka_skips_control_batches() {
    run_python("control_batches_aiokafka.py", "aiokafka");
}

#[test]
fn kafkajs_skips_control_batches() {
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
    let topic = unique_topic("ctrl-kafkajs");
    let Some(broker) = broker_with(&topic) else {
        return;
    };
    run_script(
        Command::new(node)
            .arg(dir.join("control_batches_kafkajs.js"))
            .arg(broker.bootstrap())
            .arg(&topic)
            .arg(END.to_string())
            .current_dir(&dir),
        "control_batches_kafkajs.js",
    );
}

/// kcat (librdkafka 2.0.2): `-e` exits only at the end of the partition, which it reports on
/// stderr with the offset reached.
#[test]
fn kcat_skips_control_batches() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let topic = unique_topic("ctrl-kcat");
    let Some(broker) = broker_with(&topic) else {
        return;
    };
    let consume = |from: &str| {
        let out = run_client(
            Command::new(&kcat)
                .args(["-b", &broker.bootstrap(), "-C", "-t", &topic, "-p", "0"])
                .args(["-o", from, "-e", "-f", "RECORD %o %s\\n"]),
            CLIENT_TIMEOUT,
        )
        .expect("run kcat");
        out.assert_success("kcat -C");
        out
    };
    let out = consume("beginning");
    let reached = format!("Reached end of topic {topic} [0] at offset {END}");
    assert!(
        out.stderr.contains(&reached),
        "kcat: {reached}?\n{}",
        out.stderr
    );
    let produce = run_client(
        Command::new("sh").arg("-c").arg(format!(
            "echo after | {} -b {} -P -t {topic} -p 0 -X acks=all",
            kcat.display(),
            broker.bootstrap()
        )),
        CLIENT_TIMEOUT,
    )
    .expect("run kcat -P");
    produce.assert_success("kcat -P");
    let after = consume("beginning");
    let reached = format!("Reached end of topic {topic} [0] at offset {}", END + 1);
    assert!(
        after.stderr.contains(&reached),
        "kcat: {reached}?\n{}",
        after.stderr
    );
    let stdout = format!(
        "{}POSITION {END}\nPRODUCED {END}\n{}POSITION {}\n",
        out.stdout,
        after
            .stdout
            .lines()
            .filter(|l| l.starts_with(&format!("RECORD {END} ")))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
        END + 1
    );
    check_lines("kcat", &stdout);
}

/// The rdkafka crate (librdkafka 2.12.1), in-process.
#[test]
fn rdkafka_skips_control_batches() {
    let topic = unique_topic("ctrl-rdkafka");
    let Some(broker) = broker_with(&topic) else {
        return;
    };
    let bootstrap = broker.bootstrap();
    let consumer: BaseConsumer = config(&bootstrap, "runnel-control-batches-rdkafka")
        .set("group.id", "runnel-control-batches-unused")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");

    let mut lines = String::new();
    let read_to_eof = |lines: &mut String| {
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "rdkafka: no end of partition\n{lines}"
            );
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => {
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    lines.push_str(&format!("RECORD {} {v}\n", m.offset()));
                }
                Some(Err(KafkaError::PartitionEOF(0))) => break,
                Some(Err(e)) => panic!("rdkafka consume: {e}\n{lines}"),
            }
        }
        let position = consumer.position().expect("position");
        let at = position
            .find_partition(&topic, 0)
            .map(|e| e.offset())
            .expect("assigned");
        match at {
            Offset::Offset(o) => lines.push_str(&format!("POSITION {o}\n")),
            other => panic!("rdkafka position {other:?}\n{lines}"),
        }
    };
    read_to_eof(&mut lines);
    let producer: FutureProducer = config(&bootstrap, "runnel-control-batches-rdkafka")
        .set("enable.idempotence", "false")
        .set("acks", "all")
        .create()
        .expect("producer");
    let delivered = runtime()
        .block_on(
            producer.send(
                FutureRecord::<(), [u8]>::to(&topic)
                    .partition(0)
                    .payload(b"after"),
                OP_TIMEOUT,
            ),
        )
        .expect("produce");
    lines.push_str(&format!("PRODUCED {}\n", delivered.offset));
    read_to_eof(&mut lines);
    check_lines("rdkafka", &lines);
}
