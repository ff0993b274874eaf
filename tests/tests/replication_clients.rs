//! Unmodified clients' idempotent producers across leader failovers on a real 3-node cluster
//! (issue 6: "a request to a follower gets NOT_LEADER_OR_FOLLOWER and clients re-route by
//! themselves", "no duplicates from idempotent producers").
//!
//! Per client (librdkafka through confluent-kafka, and kafka-python): the client's idempotent
//! producer (acks=all) writes unique values to a topic with 3 partitions and replication factor
//! 3 (`tests/clients/python/failover_*.py`, one JSON line per delivery report) while the test
//! SIGKILLs the leader of a partition twice, restarting it a few seconds later, then cuts the
//! leader of the last partition off from the other nodes for a few seconds (it stays reachable
//! by clients, steps down and answers NOT_LEADER_OR_FOLLOWER). After healing,
//! kcat (a different client, librdkafka 2.0.2) reads every partition from the beginning to the
//! end, and the test checks:
//! - the producer finished: every value it sent got a delivery report, none failed;
//! - every delivered value is present exactly once, at the partition and offset its delivery
//!   report gave, and on the partition it was sent to;
//! - no value appears twice anywhere (idempotence across failover), nothing never sent
//!   appears, and each partition holds its values in the order they were sent;
//! - kcat reaches the end of every partition (its position = the high watermark that
//!   ListOffsets reports) within its deadline.
//!
//! It prints what the client did during each failover: how long after the fault the partitions
//! the victim led delivered again, the error codes the client logged (NOT_LEADER_OR_FOLLOWER,
//! LEADER_NOT_AVAILABLE, timeouts) and its own error callbacks. Node logs: `Cluster::log_tail`
//! (`RUNNEL_CLUSTER_LOG=debug` for more).
//! A missing client or tool skips a test locally and fails it under `CI=true`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_broker::kafka_client::{Client, ClientConfig};
use runnel_tests::cluster::Cluster;
use runnel_tests::kafka::runtime;
use runnel_tests::{require, require_tool, run_client, venv_python_with, workspace_root};

const PARTITIONS: i32 = 3;
/// How long the producer keeps sending, and how fast.
const PRODUCE_SECONDS: u32 = 25;
const RATE: u32 = 150;
/// Leader kills, each followed by a restart of the victim (then one leader isolation).
const KILLS: usize = 2;
/// The victim stays down this long.
const DOWN: Duration = Duration::from_secs(4);
/// Pause before the first kill and after each restart.
const SETTLE: Duration = Duration::from_secs(3);

/// Cluster tests share the machine's two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn seconds_since_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn client(bootstrap: &str) -> Client {
    let mut cfg = ClientConfig::new(bootstrap);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.attempts = 30;
    cfg.backoff = Duration::from_millis(50);
    cfg.metadata_max_age = Duration::from_millis(200);
    Client::new(cfg)
}

/// Partition → leader node as fresh metadata says (partitions without a leader left out).
fn leaders(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) -> BTreeMap<i32, i32> {
    let got = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(3), client(bootstrap).leaders(topic)).await
    });
    match got {
        Ok(Ok(l)) => l
            .into_iter()
            .zip(0..)
            .filter_map(|(leader, p)| Some((p, leader?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Waits until every partition has a leader; returns them.
fn all_leaders(c: &Cluster, rt: &tokio::runtime::Runtime, topic: &str) -> BTreeMap<i32, i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = leaders(rt, &c.bootstrap(), topic);
        if l.len() == usize::try_from(PARTITIONS).unwrap() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "partitions without a leader: {l:?}\n{}",
            tails(c)
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn tails(c: &Cluster) -> String {
    (1..=3)
        .map(|id| format!("---- node {id} ----\n{}\n", c.log_tail(id, 40)))
        .collect()
}

/// One leader kill: when, whom, and which partitions it led.
struct Kill {
    victim: i32,
    led: Vec<i32>,
    /// Seconds since the Unix epoch.
    at: f64,
}

/// What the producer program reported.
#[derive(Default)]
struct Report {
    /// Seconds since the Unix epoch when the program started (its `t` is relative to this).
    start: f64,
    sent: usize,
    /// value → (partition, offset, t).
    delivered: HashMap<String, (i32, i64, f64)>,
    /// (value, error) of every failed delivery.
    failed: Vec<(String, String)>,
    client_errors: Vec<(f64, String)>,
    /// Delivery reports for a value already reported.
    reported_twice: Vec<String>,
    done: Option<serde_json::Value>,
}

fn parse_report(stdout: &str) -> Report {
    let mut r = Report::default();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        let t = v["t"].as_f64().unwrap_or_default();
        if let Some(start) = v["start"].as_f64() {
            r.start = start;
        } else if v["done"].as_bool() == Some(true) {
            r.sent = usize::try_from(v["sent"].as_u64().unwrap()).unwrap();
            r.done = Some(v);
        } else if let Some(e) = v["client_error"].as_str() {
            r.client_errors.push((t, e.to_string()));
        } else if let Some(value) = v["value"].as_str() {
            let p = i32::try_from(v["partition"].as_i64().unwrap_or(-1)).unwrap();
            if let Some(err) = v["failed"].as_str() {
                r.failed.push((value.to_string(), err.to_string()));
            } else {
                let o = v["offset"].as_i64().unwrap();
                if r.delivered.insert(value.to_string(), (p, o, t)).is_some() {
                    r.reported_twice.push(value.to_string());
                }
            }
        }
    }
    r
}

/// What kcat read: (partition, offset, value) of every record, the end offset it reported
/// reaching per partition, and how long it took.
type KcatRead = (Vec<(i32, i64, String)>, BTreeMap<i32, i64>, Duration);

/// kcat reads every partition from the beginning to the end.
fn read_with_kcat(kcat: &Path, bootstrap: &str, topic: &str) -> KcatRead {
    let out = run_client(
        Command::new(kcat)
            .args(["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e"])
            .args(["-f", "%p %o %s\\n"]),
        Duration::from_secs(30),
    )
    .expect("run kcat");
    out.assert_success("kcat -C -e (reading everything back)");
    let mut records = Vec::new();
    for line in out.stdout.lines() {
        let mut f = line.splitn(3, ' ');
        let (Some(p), Some(o), Some(v)) = (f.next(), f.next(), f.next()) else {
            panic!("kcat printed {line:?}");
        };
        records.push((p.parse().unwrap(), o.parse().unwrap(), v.to_string()));
    }
    // "% Reached end of topic T [p] at offset X"
    let mut ends = BTreeMap::new();
    for line in out.stderr.lines() {
        if let Some(rest) = line
            .split(&format!("Reached end of topic {topic} ["))
            .nth(1)
        {
            // "...] at offset 123" or "...] at offset 123: exiting"
            let (p, rest) = rest.split_once(']').unwrap();
            let o: String = rest
                .trim_start_matches(" at offset ")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            ends.insert(p.parse().unwrap(), o.parse().unwrap());
        }
    }
    (records, ends, out.elapsed)
}

/// The scenario for one producer program (`script` in tests/clients/python, needing `module`).
fn idempotent_producer_across_leader_kills(name: &str, module: &str, script: &str) {
    let Some(python) = venv_python_with(module) else {
        return;
    };
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let bin = runnel_tests::runnel_bin();
    if !require(
        "the runnel binary",
        bin.is_some(),
        "set RUNNEL_BIN or run `cargo build -p runnel-broker --bin runnel`",
    ) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let topic = format!("failover-{name}");
    let rt = runtime();
    let mut cluster = Cluster::start(bin.expect("checked"), 3).expect("start the cluster");
    let bs = cluster.bootstrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = rt.block_on(client(&bs).ensure_topic(&topic, 3)) {
        assert!(
            Instant::now() < deadline,
            "[{name}] no topic: {e}\n{}",
            tails(&cluster)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let before = all_leaders(&cluster, &rt, &topic);
    eprintln!("[{name}] leaders before: {before:?}");

    // The producer runs in its own process; the faults run here meanwhile.
    let producer = {
        let mut cmd = Command::new(&python);
        cmd.arg(workspace_root().join("tests/clients/python").join(script))
            .arg(&bs)
            .arg(&topic)
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--rate", &RATE.to_string()])
            .args(["--seconds", &PRODUCE_SECONDS.to_string()])
            .args(["--flush-timeout", "40"]);
        thread::spawn(move || run_client(&mut cmd, Duration::from_secs(90)).expect("run producer"))
    };
    let mut kills = Vec::new();
    thread::sleep(SETTLE);
    for k in 0..KILLS {
        // The leader of partition k as fresh metadata says (another partition's if none).
        let l = all_leaders(&cluster, &rt, &topic);
        let p = i32::try_from(k).unwrap() % PARTITIONS;
        let victim = l[&p];
        let led: Vec<i32> = l
            .iter()
            .filter(|(_, n)| **n == victim)
            .map(|(p, _)| *p)
            .collect();
        cluster.kill(victim);
        kills.push(Kill {
            victim,
            led,
            at: seconds_since_epoch(),
        });
        eprintln!(
            "[{name}] killed node {victim} (leader of partitions {:?})",
            kills[k].led
        );
        thread::sleep(DOWN);
        cluster.start_node(victim).expect("restart the victim");
        eprintln!("[{name}] restarted node {victim}");
        thread::sleep(SETTLE);
    }
    // Then the leader of the last partition is cut off from the other nodes but stays
    // reachable by clients: it steps down (check-quorum) and answers NOT_LEADER_OR_FOLLOWER,
    // so the client must find the new leader through Metadata.
    let l = all_leaders(&cluster, &rt, &topic);
    let victim = l[&(PARTITIONS - 1)];
    cluster.isolate(victim, true);
    let isolated_at = seconds_since_epoch();
    eprintln!(
        "[{name}] isolated node {victim} (leader of partition {})",
        PARTITIONS - 1
    );
    thread::sleep(DOWN);
    cluster.isolate(victim, false);
    eprintln!("[{name}] reconnected node {victim}");
    let out = producer.join().expect("producer thread");
    let report = parse_report(&out.stdout);
    let show = |c: &Cluster| {
        format!(
            "---- producer stdout (last 30 lines) ----\n{}\n---- producer stderr (last 60 lines) ----\n{}\n{}",
            last_lines(&out.stdout, 30),
            last_lines(&out.stderr, 60),
            tails(c)
        )
    };
    assert!(
        out.success() && report.done.is_some(),
        "[{name}] the producer did not finish\n{}",
        show(&cluster)
    );

    // What the client did during each failover.
    for kill in &kills {
        let at = kill.at - report.start;
        for p in &kill.led {
            let next = report
                .delivered
                .values()
                .filter(|(q, _, t)| q == p && *t > at)
                .map(|(_, _, t)| *t)
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "[{name}] kill of node {} at +{at:.1}s: partition {p} delivered again {:.2}s later",
                kill.victim,
                next - at
            );
        }
    }
    let at = isolated_at - report.start;
    let p = PARTITIONS - 1;
    let next = report
        .delivered
        .values()
        .filter(|(q, _, t)| *q == p && *t > at)
        .map(|(_, _, t)| *t)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "[{name}] isolation of node {victim} at +{at:.1}s: partition {p} delivered again {:.2}s later",
        next - at
    );
    // What the client logged about leadership (librdkafka with debug=topic,msg; kafka-python
    // at INFO): how often each answer appears, and its first line.
    for (kind, needles) in [
        (
            "NOT_LEADER_OR_FOLLOWER",
            &["not_leader", "not leader", "notleader"][..],
        ),
        (
            "LEADER_NOT_AVAILABLE",
            &["leader_not_available", "leadernotavailable"][..],
        ),
        (
            "REQUEST_TIMED_OUT",
            &["request_timed_out", "requesttimedout", "timed out"][..],
        ),
    ] {
        let hits: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                needles.iter().any(|n| l.contains(n))
            })
            .collect();
        if let Some(first) = hits.first() {
            eprintln!(
                "[{name}] the client logged {kind} {} times, first: {}",
                hits.len(),
                first.chars().take(300).collect::<String>()
            );
        }
    }
    for (t, e) in &report.client_errors {
        eprintln!("[{name}] client error at +{t:.1}s: {e}");
    }
    let biggest_gap = biggest_gap(&report);
    eprintln!("[{name}] longest pause between delivery reports of a partition: {biggest_gap:?}");

    // Heal: every node up, every partition led; the high watermarks, then kcat's read.
    for id in 1..=3 {
        cluster.start_node(id).expect("start node");
    }
    let after = all_leaders(&cluster, &rt, &topic);
    let hw = |p: i32| -> i64 {
        rt.block_on(client(&bs).offsets(&topic, p))
            .expect("ListOffsets")
            .expect("partition exists")
            .1
    };
    let hws_before: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, hw(p))).collect();
    let (records, ends, took) = read_with_kcat(&kcat, &bs, &topic);
    let hws: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, hw(p))).collect();
    eprintln!(
        "[{name}] leaders after: {after:?}; high watermarks {hws:?}; kcat read {} records in {took:.1?}, ends {ends:?}",
        records.len()
    );

    // Checks.
    let done = report.done.clone().expect("checked");
    eprintln!("[{name}] producer summary: {done}");
    assert!(
        report.failed.is_empty() && done["left"].as_u64() == Some(0),
        "[{name}] {} deliveries failed, {} never reported: {:?}\n{}",
        report.failed.len(),
        done["left"],
        &report.failed[..report.failed.len().min(10)],
        show(&cluster)
    );
    assert!(
        report.reported_twice.is_empty(),
        "[{name}] delivery reported twice: {:?}",
        report.reported_twice
    );
    assert_eq!(
        report.delivered.len(),
        report.sent,
        "[{name}] every value sent must be delivered"
    );
    let prefix = format!("{}-", value_prefix(&done));
    let mut found: HashMap<&str, (i32, i64)> = HashMap::new();
    let mut last_index: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
    for (p, o, v) in &records {
        let index: Option<usize> = v.strip_prefix(&prefix).and_then(|i| i.parse().ok());
        let Some(index) = index.filter(|i| *i < report.sent) else {
            panic!("[{name}] {p}/{o} holds {v:?}, which was never sent");
        };
        assert_eq!(
            usize::try_from(*p).unwrap(),
            index % usize::try_from(PARTITIONS).unwrap(),
            "[{name}] {v} was sent to another partition than {p}"
        );
        if let Some(prior) = found.insert(v.as_str(), (*p, *o)) {
            panic!(
                "[{name}] {v} appears twice: {prior:?} and {:?} (duplicate across failover)\n{}",
                (p, o),
                show(&cluster)
            );
        }
        if let Some((po, pi)) = last_index.insert(*p, (*o, index)) {
            assert!(
                *o > po && index > pi,
                "[{name}] partition {p}: {v} (sent #{index}) at offset {o} follows sent #{pi} at offset {po}"
            );
        }
    }
    for (v, (p, o, _)) in &report.delivered {
        assert_eq!(
            found.get(v.as_str()),
            Some(&(*p, *o)),
            "[{name}] delivered value {v} (reported at {p}/{o}) is not there"
        );
    }
    for p in 0..PARTITIONS {
        assert_eq!(
            hws_before[&p], hws[&p],
            "[{name}] partition {p}: the high watermark moved while nothing was produced"
        );
        assert_eq!(
            ends.get(&p),
            Some(&hws[&p]),
            "[{name}] partition {p}: kcat's end position is not the high watermark"
        );
    }
    eprintln!(
        "[{name}] sent {}, delivered {}, failed {}, duplicates 0, read back {}; all checks passed in {:.1?}",
        report.sent,
        report.delivered.len(),
        report.failed.len(),
        records.len(),
        started.elapsed()
    );
}

/// The value prefix the program used (`cf-000001` → `cf`), from its first delivered value.
fn value_prefix(done: &serde_json::Value) -> String {
    done["prefix"].as_str().unwrap_or_default().to_string()
}

/// The longest time between two consecutive delivery reports of one partition.
fn biggest_gap(r: &Report) -> Duration {
    let mut by_partition: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    for (p, _, t) in r.delivered.values() {
        by_partition.entry(*p).or_default().push(*t);
    }
    let mut gap = 0f64;
    for ts in by_partition.values_mut() {
        ts.sort_by(f64::total_cmp);
        for w in ts.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
    }
    Duration::from_secs_f64(gap)
}

fn last_lines(s: &str, n: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// librdkafka's idempotent producer (confluent-kafka 2.16.1, librdkafka 2.16.0).
#[test]
fn librdkafka_idempotent_producer_across_leader_kills() {
    idempotent_producer_across_leader_kills(
        "confluent",
        "confluent_kafka",
        "failover_confluent.py",
    );
}

/// kafka-python's idempotent producer (3.0.12).
#[test]
fn kafka_python_idempotent_producer_across_leader_kills() {
    idempotent_producer_across_leader_kills("kafka-python", "kafka", "failover_kafka_python.py");
}
