//! Consumer groups and idempotent producers with unmodified clients against a real `runnel`.
//!
//! Per client (the programs of `tests/clients/GROUPS.md`):
//! - `*_group_lifecycle`: three members share a 6-partition topic; one leaves (SIGTERM), one
//!   is SIGKILLed (its partitions move after the session timeout), the broker is SIGKILLed and
//!   restarted; after each step more records are produced and the group must consume them all.
//!   Checked: nothing is lost, live members' assignments are disjoint and cover the topic, no
//!   record is delivered again after its offset was committed, and the final committed offsets
//!   are the log end.
//! - `*_idempotent_retries`: the client's idempotent producer writes through a proxy that cuts
//!   the connection after Produce requests reached the broker but before their responses got
//!   back; the log must hold every record exactly once, in order.
//!
//! A missing client skips a test locally and fails it under `CI=true`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use runnel_tests::group::{Entry, Event, Journal, MemberProcess};
use runnel_tests::kafka::{create_topic, runtime};
use runnel_tests::proxy::CutProxy;
use runnel_tests::{find_tool, require, require_tool, run_client, unique_topic, workspace_root};
use runnel_tests::{venv_python_with, Broker, ClientOutput};

const PARTITIONS: i32 = 6;
/// Records produced per phase of the lifecycle test.
const PER_PHASE: i64 = 240;
/// Session timeout the members ask for (the broker's minimum).
const SESSION_TIMEOUT_MS: u32 = 6000;
/// Longest wait for a group to consume a phase (joins, a session timeout, a restart).
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a member to close after SIGTERM.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(40);
/// Deadline for one rdkafka operation.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Records each idempotent producer writes.
const IDEMPOTENT_RECORDS: i64 = 3000;
const IDEMPOTENT_PARTITIONS: i32 = 3;

// ---------------------------------------------------------------------------------------------
// The programs
// ---------------------------------------------------------------------------------------------

/// One client's program: how to start it, and whether it reports commits.
struct Program {
    name: &'static str,
    argv: Vec<OsString>,
    commits: bool,
}

impl Program {
    fn command(&self, sub: &str, args: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).arg(sub);
        for (flag, value) in args {
            cmd.arg(format!("--{flag}")).arg(value);
        }
        cmd.current_dir(workspace_root().join("tests/clients"));
        cmd
    }
}

fn clients_dir() -> PathBuf {
    workspace_root().join("tests/clients")
}

fn python_program(name: &'static str, module: &str, script: &str) -> Option<Program> {
    venv_python_with(module).map(|python| Program {
        name,
        argv: vec![
            python.into_os_string(),
            clients_dir().join("python").join(script).into_os_string(),
        ],
        commits: true,
    })
}

fn program(name: &str) -> Option<Program> {
    match name {
        "confluent" => python_program("confluent", "confluent_kafka", "confluent_group.py"),
        "kafka_python" => python_program("kafka_python", "kafka", "kafka_python_group.py"),
        "aiokafka" => python_program("aiokafka", "aiokafka", "aiokafka_group.py"),
        "kafkajs" => {
            let node = require_tool("node")?;
            let modules = clients_dir().join("js/node_modules/kafkajs");
            require(
                "KafkaJS in tests/clients/js/node_modules",
                modules.is_dir(),
                "run .ci/install-clients.sh (npm ci in tests/clients/js)",
            )
            .then(|| Program {
                name: "kafkajs",
                argv: vec![
                    node.into_os_string(),
                    clients_dir().join("js/kafkajs_group.js").into_os_string(),
                ],
                commits: true,
            })
        }
        "kcat" => {
            require_tool("kcat")?;
            let bash = find_tool("bash")?;
            Some(Program {
                name: "kcat",
                argv: vec![
                    bash.into_os_string(),
                    clients_dir().join("sh/kcat_group.sh").into_os_string(),
                ],
                commits: false,
            })
        }
        "rdkafka" => Some(Program {
            name: "rdkafka",
            argv: vec![env!("CARGO_BIN_EXE_rdkafka_group").into()],
            commits: true,
        }),
        other => panic!("no program for {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// In-process helpers (rdkafka crate): topics, producing phases, reading back, committed offsets
// ---------------------------------------------------------------------------------------------

/// Produces `count` records `{tag}-{i}` round-robin over the partitions; returns
/// `(partition, offset) -> value` as acknowledged.
fn produce_phase(
    bootstrap: &str,
    topic: &str,
    tag: &str,
    count: i64,
) -> BTreeMap<(i32, i64), String> {
    let producer: FutureProducer = config(bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let rt = runtime();
    let mut acked = BTreeMap::new();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..count {
            let partition = i32::try_from(i % i64::from(PARTITIONS)).expect("small");
            let value = format!("{tag}-{i}");
            let key = format!("k-{i}");
            let fut = producer.send_result(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            );
            let fut = fut.expect("enqueue");
            pending.push((value, fut));
        }
        for (value, fut) in pending {
            let delivery = fut.await.expect("delivery future").expect("delivered");
            acked.insert((delivery.partition, delivery.offset), value);
        }
    });
    acked
}

/// Every record of every partition, read back with manual assignment.
fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<(i32, i64), String> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", "runnel-groups-readback")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = BTreeMap::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + OP_TIMEOUT;
    while at_end.len() < usize::try_from(partitions).expect("small") {
        assert!(Instant::now() < deadline, "reading {topic} back timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.insert((m.partition(), m.offset()), value);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic} back: {e}"),
        }
    }
    out
}

/// The group's committed offset per partition (OffsetFetch, without joining).
fn committed(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, Offset> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, OP_TIMEOUT)
        .expect("OffsetFetch");
    got.elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The lifecycle scenario
// ---------------------------------------------------------------------------------------------

/// The group under test: its members, what they printed, and what was produced.
struct Group {
    program: Program,
    /// `default` or `cooperative` (the `--strategy` every member gets).
    strategy: &'static str,
    bootstrap: String,
    topic: String,
    group: String,
    journal: Arc<Journal>,
    members: Vec<MemberProcess>,
    produced: BTreeMap<(i32, i64), String>,
    logs: tempfile::TempDir,
}

impl Group {
    fn start_member(&mut self, name: &str) {
        let cmd = self.program.command(
            "member",
            &[
                ("bootstrap", self.bootstrap.clone()),
                ("topic", self.topic.clone()),
                ("group", self.group.clone()),
                ("name", name.to_string()),
                ("session-timeout-ms", SESSION_TIMEOUT_MS.to_string()),
                ("strategy", self.strategy.to_string()),
            ],
        );
        let member =
            MemberProcess::spawn(name, cmd, &self.journal, self.logs.path()).expect("spawn member");
        self.members.push(member);
    }

    /// SIGTERMs a member and checks it closed gracefully.
    fn close(&mut self, name: &str) {
        let status = self
            .member(name)
            .terminate(CLOSE_TIMEOUT)
            .expect("close member");
        let client = self.program.name;
        assert!(
            status.success(),
            "{client} member {name} exited with {status}\n{}",
            self.dump()
        );
        let closed = self
            .journal
            .snapshot()
            .iter()
            .any(|e| e.member == name && e.event == Event::Closed);
        assert!(
            closed,
            "{client} member {name} did not print CLOSED\n{}",
            self.dump()
        );
    }

    fn member(&mut self, name: &str) -> &mut MemberProcess {
        self.members
            .iter_mut()
            .find(|m| m.name() == name)
            .expect("known member")
    }

    /// Everything about the run, for a failure message.
    fn dump(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let stderr = m.stderr();
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            out.push_str(&format!(
                "---- {} stderr (last {} lines) ----\n",
                m.name(),
                tail.len()
            ));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push_str("---- non-record events ----\n");
        for e in self.journal.snapshot() {
            if !matches!(e.event, Event::Rec { .. } | Event::Commit { .. }) {
                out.push_str(&format!("{} {:?}\n", e.member, e.event));
            }
        }
        out
    }

    fn produce(&mut self, tag: &str) {
        let acked = produce_phase(&self.bootstrap, &self.topic, tag, PER_PHASE);
        self.produced.extend(acked);
    }

    /// Waits until every produced record was consumed (and, for clients that report commits,
    /// committed) and the `live` members' latest assignments split the topic between them.
    fn wait_consumed(&self, step: &str, live: &[&str]) -> Duration {
        let end = self.log_end();
        let commits = self.program.commits;
        let live: BTreeSet<&str> = live.iter().copied().collect();
        let result = self.journal.wait_for(step, PHASE_TIMEOUT, |entries| {
            let mut seen = HashSet::new();
            let mut committed: HashMap<i32, i64> = HashMap::new();
            let mut assigned: BTreeMap<&str, &BTreeSet<i32>> = BTreeMap::new();
            for e in entries {
                match &e.event {
                    Event::Rec {
                        partition, offset, ..
                    } => {
                        seen.insert((*partition, *offset));
                    }
                    Event::Commit { partition, next } => {
                        let c = committed.entry(*partition).or_insert(0);
                        *c = (*c).max(*next);
                    }
                    Event::Assign(set) => {
                        assigned.insert(e.member.as_str(), set);
                    }
                    _ => {}
                }
            }
            let all_seen = self.produced.keys().all(|k| seen.contains(k));
            let all_committed = !commits
                || end
                    .iter()
                    .all(|(p, e)| committed.get(p).is_some_and(|c| c >= e));
            all_seen && all_committed && split_between(&assigned, &live)
        });
        match result {
            Ok(took) => took,
            Err(e) => panic!("{} {step}: {e}\n{}", self.program.name, self.dump()),
        }
    }

    /// The next offset after the last record produced, per partition.
    fn log_end(&self) -> BTreeMap<i32, i64> {
        self.produced
            .keys()
            .fold(BTreeMap::new(), |mut m, &(p, o)| {
                let e = m.entry(p).or_insert(0);
                *e = (*e).max(o + 1);
                m
            })
    }

    /// For a client that auto-commits and does not report its commits (kcat): waits until the
    /// broker holds the log end as the group's committed offset of every partition.
    ///
    /// `wait_consumed` cannot tell who consumed a record: after the broker restart a member
    /// that has not yet learnt its membership is gone keeps fetching, so the records produced
    /// then may be seen only by a member whose commit the restarted coordinator then refuses
    /// (UNKNOWN_MEMBER_ID, as Kafka's would). The member that inherits such a partition starts
    /// it again from the last committed offset, and only commits once it has read it; closing it
    /// before that would leave the partition uncommitted through no fault of the broker.
    fn wait_auto_committed(&self, step: &str) {
        if self.program.commits {
            return;
        }
        let want: BTreeMap<i32, Offset> = self
            .log_end()
            .into_iter()
            .map(|(p, e)| (p, Offset::Offset(e)))
            .collect();
        let deadline = Instant::now() + PHASE_TIMEOUT;
        loop {
            let got = committed(&self.bootstrap, &self.group, &self.topic);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} {step}: the group's committed offsets are {got:?} after {PHASE_TIMEOUT:?}, \
                 the log end is {want:?}\n{}",
                self.program.name,
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The whole-run checks: nothing lost, nothing redelivered after its commit, no garbage.
    fn check_history(&self) {
        let mut seen: HashSet<(i32, i64)> = HashSet::new();
        let mut committed: HashMap<i32, i64> = HashMap::new();
        let mut problems = Vec::new();
        let mut redelivered = 0usize;
        for Entry { member, event, .. } in self.journal.snapshot() {
            match event {
                Event::Rec {
                    partition,
                    offset,
                    value,
                } => {
                    match self.produced.get(&(partition, offset)) {
                        Some(v) if *v == value => {}
                        other => problems.push(format!(
                            "{member} got {partition}/{offset} = {value:?}, produced {other:?}"
                        )),
                    }
                    if !seen.insert((partition, offset)) {
                        redelivered += 1;
                        if committed.get(&partition).is_some_and(|&c| c > offset) {
                            problems.push(format!(
                                "{member} got {partition}/{offset} again after offset {} was \
                                 committed",
                                committed[&partition]
                            ));
                        }
                    }
                }
                Event::Commit { partition, next } => {
                    let c = committed.entry(partition).or_insert(0);
                    *c = (*c).max(next);
                }
                Event::Garbled(line) => problems.push(format!("{member} printed {line:?}")),
                _ => {}
            }
        }
        for key in self.produced.keys() {
            if !seen.contains(key) {
                problems.push(format!("{}/{} was never consumed", key.0, key.1));
            }
        }
        eprintln!(
            "{}: {} records produced, {} deliveries redelivered before their commit",
            self.program.name,
            self.produced.len(),
            redelivered
        );
        assert!(
            problems.is_empty(),
            "{}: {}\n{}",
            self.program.name,
            summary(&problems),
            self.dump()
        );
    }
}

/// The first problems found, for a failure message.
fn summary(problems: &[String]) -> String {
    let shown: Vec<&str> = problems.iter().take(30).map(String::as_str).collect();
    format!("{} problems:\n{}", problems.len(), shown.join("\n"))
}

/// Whether the live members' assignments are disjoint, non-empty and cover every partition.
fn split_between(assigned: &BTreeMap<&str, &BTreeSet<i32>>, live: &BTreeSet<&str>) -> bool {
    let mut union = BTreeSet::new();
    for name in live {
        let Some(set) = assigned.get(name) else {
            return false;
        };
        if set.is_empty() || set.iter().any(|p| !union.insert(*p)) {
            return false;
        }
    }
    union.len() == usize::try_from(PARTITIONS).expect("small")
}

/// Checks KIP-429's promise for `survivors` over the journal entries from `since` on: an
/// incremental rebalance never takes a partition away from a member that keeps running, so
/// each survivor's assignment only grows.
fn check_incremental(g: &Group, since: usize, survivors: &[&str]) {
    let entries = g.journal.snapshot();
    for name in survivors {
        let mut before: Option<&BTreeSet<i32>> =
            entries[..since].iter().rev().find_map(|e| match &e.event {
                Event::Assign(set) if e.member == *name => Some(set),
                _ => None,
            });
        for e in &entries[since..] {
            if let Event::Assign(set) = &e.event {
                if e.member != *name {
                    continue;
                }
                if let Some(prev) = before {
                    assert!(
                        set.is_superset(prev),
                        "{}: cooperative member {name} went from {prev:?} to {set:?}: an \
                         incremental rebalance revoked a partition it kept\n{}",
                        g.program.name,
                        g.dump()
                    );
                }
                before = Some(set);
            }
        }
    }
}

fn group_lifecycle(client: &str, strategy: &'static str) {
    let Some(program) = program(client) else {
        return;
    };
    let Some(mut broker) = Broker::start_or_skip() else {
        return;
    };
    let topic = unique_topic(&format!("grp-{client}"));
    create_topic(&broker.bootstrap(), &topic, PARTITIONS);
    let mut g = Group {
        program,
        strategy,
        bootstrap: broker.bootstrap(),
        group: format!("{topic}-group"),
        topic,
        journal: Journal::new(),
        members: Vec::new(),
        produced: BTreeMap::new(),
        logs: tempfile::tempdir().expect("log dir"),
    };

    // 1. Three members share the topic.
    g.produce("before-join");
    for name in ["a", "b", "c"] {
        g.start_member(name);
    }
    let took = g.wait_consumed("three members consume everything", &["a", "b", "c"]);
    eprintln!("{client}: three members joined and consumed phase 1 in {took:.1?}");

    // 2. A member leaves gracefully: its partitions move to the others.
    let settled = g.journal.lock().len();
    g.close("c");
    g.produce("after-leave");
    let took = g.wait_consumed("two members take over after a leave", &["a", "b"]);
    eprintln!("{client}: leave handled in {took:.1?}");

    // 3. A member is SIGKILLed: after the session timeout its partitions move and consumption
    //    resumes from its committed offsets.
    g.member("b").kill();
    g.produce("after-kill");
    let took = g.wait_consumed("the survivor takes over after a SIGKILL", &["a"]);
    eprintln!("{client}: SIGKILLed member replaced in {took:.1?}");
    if strategy == "cooperative" {
        check_incremental(&g, settled, &["a", "b"]);
    }

    // 4. The broker is SIGKILLed and restarted: the group re-forms, resumes from the
    //    committed offsets, and consumes what is produced after the restart.
    broker.restart().expect("restart broker");
    g.produce("after-restart");
    g.start_member("d");
    let took = g.wait_consumed("the group re-forms after a broker restart", &["a", "d"]);
    eprintln!("{client}: group re-formed after a broker restart in {took:.1?}");

    // 5. The members leave one by one (each once the group has settled: a commit sent while
    //    the group rebalances is refused with REBALANCE_IN_PROGRESS, in Kafka as here); what
    //    the group committed is then the log end.
    g.close("a");
    g.wait_consumed("the last member takes over after a leave", &["d"]);
    g.wait_auto_committed("the last member auto-commits what it consumed");
    g.close("d");
    g.check_history();
    let committed = committed(&g.bootstrap, &g.group, &g.topic);
    for p in 0..PARTITIONS {
        let end = g.produced.keys().filter(|(q, _)| *q == p).count();
        let end = i64::try_from(end).expect("small");
        assert_eq!(
            committed.get(&p),
            Some(&Offset::Offset(end)),
            "{client}: committed offset of partition {p} after every member left\n{}",
            g.dump()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotent producer through a connection-cutting proxy
// ---------------------------------------------------------------------------------------------

fn idempotent_retries(client: &str) {
    let Some(program) = program(client) else {
        return;
    };
    let mut proxy = CutProxy::bind().expect("proxy");
    let port = proxy.addr().port().to_string();
    let Some(broker) = Broker::start_or_skip_with(&["--advertised-port", &port]) else {
        return;
    };
    let upstream = broker.bootstrap().parse().expect("broker address");
    // Every 4th Produce response is lost with its connection, up to 6 times.
    proxy.start(upstream, 4, 6).expect("start proxy");
    let bootstrap = proxy.addr().to_string();
    let topic = unique_topic(&format!("idem-{client}"));
    create_topic(&bootstrap, &topic, IDEMPOTENT_PARTITIONS);

    let out: ClientOutput = run_client(
        &mut program.command(
            "produce",
            &[
                ("bootstrap", bootstrap.clone()),
                ("topic", topic.clone()),
                ("count", IDEMPOTENT_RECORDS.to_string()),
                ("partitions", IDEMPOTENT_PARTITIONS.to_string()),
            ],
        ),
        Duration::from_secs(240),
    )
    .expect("run producer");
    out.assert_success(&format!("{client} idempotent producer"));
    let cuts = proxy.stats().cuts.load(Ordering::Relaxed);
    assert!(
        cuts > 0,
        "{client}: the proxy never cut a connection ({} Produce responses): the test proved nothing",
        proxy.stats().produce_responses.load(Ordering::Relaxed)
    );

    let stored = read_all(&bootstrap, &topic, IDEMPOTENT_PARTITIONS);
    let mut problems = Vec::new();
    // Every record exactly once, in its partition, in send order.
    let mut last: HashMap<i32, i64> = HashMap::new();
    let mut found: HashMap<i64, usize> = HashMap::new();
    for (&(p, o), value) in &stored {
        let Some(i) = value
            .strip_prefix("idem-")
            .and_then(|s| s.parse::<i64>().ok())
        else {
            problems.push(format!("{p}/{o}: unexpected value {value:?}"));
            continue;
        };
        *found.entry(i).or_default() += 1;
        if i % i64::from(IDEMPOTENT_PARTITIONS) != i64::from(p) {
            problems.push(format!("{p}/{o}: {value} is in the wrong partition"));
        }
        if let Some(&prev) = last.get(&p) {
            if i <= prev {
                problems.push(format!("{p}/{o}: {value} stored after idem-{prev}"));
            }
        }
        last.insert(p, i);
    }
    for i in 0..IDEMPOTENT_RECORDS {
        match found.get(&i) {
            Some(1) => {}
            Some(n) => problems.push(format!("idem-{i} stored {n} times")),
            None => problems.push(format!("idem-{i} missing")),
        }
    }
    // What the client says was acknowledged is what is stored there.
    for line in out.stdout.lines() {
        let mut w = line.split(' ');
        if let (Some("ACKED"), Some(p), Some(o), Some(v)) = (w.next(), w.next(), w.next(), w.next())
        {
            let key = (p.parse().unwrap_or(-1), o.parse().unwrap_or(-1));
            if stored.get(&key).map(String::as_str) != Some(v) {
                problems.push(format!(
                    "acknowledged {v} at {p}/{o}, stored {:?}",
                    stored.get(&key)
                ));
            }
        }
    }
    eprintln!(
        "{client}: {} records, {cuts} connections cut after a Produce reached the broker, {} stored",
        IDEMPOTENT_RECORDS,
        stored.len()
    );
    assert!(
        problems.is_empty(),
        "{client}: {}\n---- producer stderr ----\n{}",
        summary(&problems),
        out.stderr
    );
}

macro_rules! client_tests {
    ($($client:ident),* $(,)?) => {
        mod lifecycle {
            $(#[test]
            fn $client() {
                super::group_lifecycle(stringify!($client), "default");
            })*
        }
        mod idempotent {
            $(#[test]
            fn $client() {
                super::idempotent_retries(stringify!($client));
            })*
        }
    };
}

client_tests!(confluent, kafka_python, aiokafka, kafkajs, kcat, rdkafka);

/// Cooperative (incremental, KIP-429) rebalancing, with the clients that implement it
/// (kafka-python's cooperative assignor does not survive a broker restart, see GROUPS.md).
mod cooperative {
    #[test]
    fn confluent() {
        super::group_lifecycle("confluent", "cooperative");
    }

    #[test]
    fn kcat() {
        super::group_lifecycle("kcat", "cooperative");
    }

    #[test]
    fn rdkafka() {
        super::group_lifecycle("rdkafka", "cooperative");
    }
}

/// A client config for this file's in-process rdkafka clients.
fn config(bootstrap: &str) -> ClientConfig {
    runnel_tests::kafka::config(bootstrap, "runnel-groups-orchestrator")
}
