//! Replication under faults, with real processes: three `runnel serve` nodes, a topic with 3
//! partitions and replication factor 3, producers writing unique values with acks=all and a
//! consumer tailing every partition while a fault script runs (leaders SIGKILLed, nodes paused
//! with SIGSTOP, the leader isolated, one-way cuts, a bridge, two of three nodes down, a rolling
//! restart by SIGTERM where each node must exit 0 without logging an error). After each
//! scenario, with every fault healed:
//! - every acknowledged value is present, once, at its acknowledged offset;
//! - no offset ever held two values (final log vs. everything the consumer read);
//! - no value whose produce was definitely refused is stored; nothing never sent appears;
//! - the consumer never went backwards or skipped a record that the final log holds;
//! - the replicas' logs are identical byte for byte below the high watermark.
//!
//! Power loss: a killed node also loses every byte its fsyncs did not cover (the node journals
//! its segment fsyncs under `RUNNEL_FAULT_SYNC_JOURNAL`; `Cluster::power_loss` cuts the files).
//!
//! Consumer groups: committed offsets survive the loss of the coordinator, and a live
//! two-member rdkafka group keeps consuming (and committing) through it.
//!
//! `REPL_SEED=<n>` replays the random choices of a run (printed at the start).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_broker::codec::batch;
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_broker::kafka_client::{Client, KafkaClientError};
use runnel_client::simulate::rng::Rng;
use runnel_tests::cluster::Cluster;
use runnel_tests::link_proxy::Mode;
use runnel_tests::replicated::{decode, read_partition};

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;
const PRODUCERS: usize = 3;

/// The scenarios share the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Delays drawn from the workspace's seeded generator (a failing run replays from its
/// printed seed).
trait Delays {
    /// `from` ms plus up to `spread` ms.
    fn ms(&mut self, from: u64, spread: u64) -> Duration;
}

impl Delays for Rng {
    fn ms(&mut self, from: u64, spread: u64) -> Duration {
        Duration::from_millis(from + self.below(spread.max(1)))
    }
}

#[derive(Default)]
struct Ledger {
    /// value -> (partition, offset) for every acknowledged record.
    acked: HashMap<String, (i32, i64)>,
    /// When each acknowledgement arrived.
    ack_times: Vec<Instant>,
    /// Values whose produce had no definite answer: may or may not be present.
    unknown: HashSet<String>,
    /// Values whose produce was definitely refused: must never be read.
    failed: HashSet<String>,
    /// (partition, offset) -> value, for everything the tailing consumer read.
    read: HashMap<(i32, i64), String>,
}

fn client(bootstrap: &str) -> Client {
    runnel_tests::replicated::fault_tolerant_client(bootstrap)
}

async fn producer(
    bootstrap: String,
    id: usize,
    stop: Arc<Mutex<bool>>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let c = client(&bootstrap);
    let mut rng = Rng::new(0x9E37_79B9 ^ u64::try_from(id + 1).unwrap());
    for seq in 0.. {
        if *stop.lock().unwrap() {
            return;
        }
        let n = 1 + rng.below(4);
        let partition = i32::try_from(rng.below(u64::try_from(PARTITIONS).unwrap())).unwrap();
        let values: Vec<String> = (0..n).map(|i| format!("p{id}-s{seq}-{i}")).collect();
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                value: Some(v.clone().into_bytes()),
                timestamp: 1,
                ..Record::default()
            })
            .collect();
        let batch = encode_batch(&records, ProducerInfo::default()).freeze();
        match c.produce(TOPIC, partition, batch).await {
            Ok(base) => {
                let mut l = ledger.lock().unwrap();
                l.ack_times.push(Instant::now());
                for (v, offset) in values.iter().zip(base..) {
                    l.acked.insert(v.clone(), (partition, offset));
                }
            }
            // A refusal that says nothing was appended (kafka_client retried the retriable ones).
            Err(KafkaClientError::Partition { code, .. }) if code != 7 => {
                ledger.lock().unwrap().failed.extend(values);
            }
            Err(_) => {
                ledger.lock().unwrap().unknown.extend(values);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tails every partition from its leader, checking it never goes backwards.
async fn consumer(bootstrap: String, stop: Arc<Mutex<bool>>, ledger: Arc<Mutex<Ledger>>) {
    let c = client(&bootstrap);
    let mut next = [0i64; 3];
    let mut hw_seen = [0i64; 3];
    while !*stop.lock().unwrap() {
        for p in 0..PARTITIONS {
            let i = usize::try_from(p).unwrap();
            let Ok(Some(f)) = c.fetch(TOPIC, p, next[i], 50).await else {
                continue;
            };
            if f.error_code != 0 {
                continue;
            }
            assert!(
                f.high_watermark >= hw_seen[i],
                "partition {p}: high watermark went back from {} to {}",
                hw_seen[i],
                f.high_watermark
            );
            hw_seen[i] = f.high_watermark;
            let (records, to) = decode(&f, next[i]);
            let mut l = ledger.lock().unwrap();
            for (o, v) in records {
                assert!(
                    o < f.high_watermark,
                    "served offset {o} above the high watermark"
                );
                if let Some(prior) = l.read.insert((p, o), v.clone()) {
                    assert_eq!(prior, v, "partition {p} offset {o} read with two values");
                }
            }
            next[i] = to;
        }
    }
}

/// Partition leaders as fresh metadata says.
async fn leaders(c: &Cluster) -> BTreeMap<i32, i32> {
    let Ok(l) = tokio::time::timeout(
        Duration::from_secs(3),
        client(&c.bootstrap()).leaders(TOPIC),
    )
    .await
    else {
        return BTreeMap::new();
    };
    l.unwrap_or_default()
        .into_iter()
        .zip(0..)
        .filter_map(|(leader, p)| Some((p, leader?)))
        .collect()
}

/// The leader of a random partition, or a random node when none is known.
async fn some_leader(c: &Cluster, rng: &mut Rng) -> i32 {
    let l = leaders(c).await;
    let p = i32::try_from(rng.below(3)).unwrap();
    match l.get(&p) {
        Some(id) => *id,
        None => i32::try_from(1 + rng.below(3)).unwrap(),
    }
}

/// The bytes of every batch below `hw` in a node's copy of the partition.
fn committed_bytes(dir: &Path, partition: i32, hw: i64) -> Result<Vec<u8>, String> {
    use runnel_broker::log::file::{FileLog, FileLogConfig};
    use runnel_broker::log::PartitionLog;
    let log = FileLog::open(
        &dir.join("topics").join(TOPIC).join(partition.to_string()),
        FileLogConfig::default(),
    )
    .expect("open replica log");
    let end = log.log_end_offset();
    if end < hw {
        return Err(format!(
            "a replica lacks committed entries: end {end} < hw {hw}"
        ));
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < hw {
        let chunk = log.read(at, hw, 1 << 20).expect("read");
        if chunk.is_empty() {
            break;
        }
        for h in batch::headers(&chunk) {
            at = h.expect("valid batch").next_offset();
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn seed() -> u64 {
    std::env::var("REPL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
                    % 1_000_000,
            )
            .unwrap()
        })
}

/// What a fault script may want to check afterwards.
#[derive(Default)]
struct Expect {
    /// No acknowledgement may arrive inside these windows (no majority was up).
    no_acks: Vec<(Instant, Instant)>,
}

/// Creates `TOPIC` (3 partitions, the cluster's replication factor 3), retrying while the
/// cluster elects its metadata leader; fails the test `name` after 60 s with node 1's log.
async fn create_topic(cluster: &Cluster, c: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = c.ensure_topic(TOPIC, 3).await {
        assert!(
            Instant::now() < deadline,
            "[{name}] no topic: {e}\n{}",
            cluster.log_tail(1, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start a cluster, create the topic, run producers and a consumer while `faults` runs, heal,
/// and check everything the module docs list.
async fn scenario<F, Fut>(name: &str, faults: F)
where
    F: FnOnce(Arc<tokio::sync::Mutex<Cluster>>, Rng) -> Fut,
    Fut: std::future::Future<Output = Expect>,
{
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        eprintln!("SKIPPED: no runnel binary");
        return;
    };
    let seed = seed();
    eprintln!("[{name}] REPL_SEED={seed}");
    let cluster = Cluster::start(bin, 3).expect("start the cluster");
    let bs = cluster.bootstrap();
    let admin = client(&bs);
    create_topic(&cluster, &admin, name).await;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(Mutex::new(false));
    let mut tasks: Vec<_> = (0..PRODUCERS)
        .map(|id| tokio::spawn(producer(bs.clone(), id, stop.clone(), ledger.clone())))
        .collect();
    tasks.push(tokio::spawn(consumer(
        bs.clone(),
        stop.clone(),
        ledger.clone(),
    )));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let expect = faults(cluster.clone(), Rng::new(seed)).await;

    let mut cluster = Arc::into_inner(cluster)
        .expect("the fault script keeps no handle")
        .into_inner();
    cluster.heal();
    for id in 1..=3 {
        cluster.start_node(id).unwrap();
    }
    // Liveness after healing: writes are accepted again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    *stop.lock().unwrap() = true;
    for t in tasks {
        t.await.expect("producer / consumer task");
    }
    let ledger = Arc::into_inner(ledger).unwrap().into_inner().unwrap();
    for (from, to) in &expect.no_acks {
        let inside = ledger
            .ack_times
            .iter()
            .filter(|t| *t > from && *t < to)
            .count();
        assert_eq!(
            inside, 0,
            "[{name}] {inside} writes acknowledged without a majority"
        );
    }
    let last_ack = ledger.ack_times.iter().max().copied();
    assert!(
        last_ack.is_some_and(|t| t.elapsed() < Duration::from_secs(5)),
        "[{name}] no write acknowledged after healing"
    );

    // Final read from the leaders.
    let reader = client(&bs);
    let mut seen: HashMap<String, (i32, i64)> = HashMap::new();
    let mut hws = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (log, hw) = read_partition(&reader, TOPIC, p, Duration::from_secs(60)).await;
        hws.insert(p, hw);
        let mut last = -1;
        for (offset, value) in log {
            assert!(
                offset > last,
                "[{name}] partition {p}: offsets go backwards at {offset}"
            );
            last = offset;
            assert!(
                !ledger.failed.contains(&value),
                "[{name}] refused value {value} is stored at {p}/{offset}"
            );
            assert!(
                ledger.acked.contains_key(&value) || ledger.unknown.contains(&value),
                "[{name}] value {value} was never sent"
            );
            if let Some(read) = ledger.read.get(&(p, offset)) {
                assert_eq!(read, &value, "[{name}] {p}/{offset} held two values");
            }
            let prior = seen.insert(value.clone(), (p, offset));
            assert!(
                prior.is_none(),
                "[{name}] value {value} appears twice: {prior:?} and {:?}",
                (p, offset)
            );
        }
    }
    for ((p, o), v) in &ledger.read {
        assert_eq!(
            seen.get(v),
            Some(&(*p, *o)),
            "[{name}] the consumer read {v} at {p}/{o}, which the final log does not hold there"
        );
    }
    for (value, at) in &ledger.acked {
        assert_eq!(
            seen.get(value),
            Some(at),
            "[{name}] acknowledged value {value} lost or moved"
        );
    }
    eprintln!(
        "[{name}] {} acknowledged, {} unknown, {} refused, {} read live; all checks passed",
        ledger.acked.len(),
        ledger.unknown.len(),
        ledger.failed.len(),
        ledger.read.len()
    );
    assert!(
        ledger.acked.len() > 100,
        "[{name}] too few acknowledged writes to mean anything"
    );

    // Every replica catches up (liveness after healing): each node's own high watermark (its
    // commit index) reaches the one the leader reported.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in 1..=3 {
        for p in 0..PARTITIONS {
            let series =
                format!("runnel_high_watermark_offset{{topic=\"{TOPIC}\",partition=\"{p}\"}}");
            loop {
                let hw = cluster.metric(id, &series).unwrap_or(-1.0);
                if hw >= hws[&p] as f64 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "[{name}] node {id} did not catch up on partition {p}: {hw} < {}\nits log:\n{}",
                    hws[&p],
                    cluster.log_tail(id, 60)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // Identical replicas: stop every node, compare bytes below the high watermark.
    for id in 1..=3 {
        cluster.kill(id);
    }
    for p in 0..PARTITIONS {
        let hw = hws[&p];
        let logs: Vec<Vec<u8>> = (1..=3)
            .map(|id| {
                committed_bytes(cluster.data_dir(id), p, hw).unwrap_or_else(|e| {
                    panic!(
                        "[{name}] partition {p}, node {id}: {e}\nits log:\n{}",
                        cluster.log_tail(id, 60)
                    )
                })
            })
            .collect();
        for (i, l) in logs.iter().enumerate().skip(1) {
            assert!(
                l == &logs[0],
                "[{name}] partition {p}: node {} differs from node 1 below hw {hw}",
                i + 1
            );
        }
    }
}

type Shared = Arc<tokio::sync::Mutex<Cluster>>;

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkilled_repeatedly() {
    scenario("kill leader", |c: Shared, mut rng| async move {
        for _ in 0..4 {
            sleep(rng.ms(1000, 1500)).await;
            let victim = some_leader(&*c.lock().await, &mut rng).await;
            c.lock().await.kill(victim);
            sleep(rng.ms(2000, 1500)).await;
            c.lock().await.start_node(victim).unwrap();
        }
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_node_sigkilled_repeatedly() {
    scenario("kill random node", |c: Shared, mut rng| async move {
        for _ in 0..4 {
            sleep(rng.ms(1000, 1500)).await;
            let victim = i32::try_from(1 + rng.below(3)).unwrap();
            c.lock().await.kill(victim);
            sleep(rng.ms(1500, 2000)).await;
            c.lock().await.start_node(victim).unwrap();
        }
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_down_acknowledge_nothing() {
    scenario("two of three down", |c: Shared, mut rng| async move {
        sleep(rng.ms(1000, 1000)).await;
        let a = i32::try_from(1 + rng.below(3)).unwrap();
        let b = a % 3 + 1;
        {
            let mut c = c.lock().await;
            c.kill(a);
            c.kill(b);
        }
        // Answers already on the wire may still arrive just after the kills.
        let from = Instant::now() + Duration::from_millis(500);
        sleep(Duration::from_secs(5)).await;
        let to = Instant::now();
        c.lock().await.start_node(a).unwrap();
        sleep(Duration::from_secs(4)).await;
        c.lock().await.start_node(b).unwrap();
        Expect {
            no_acks: vec![(from, to)],
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_past_the_election_timeout() {
    scenario("SIGSTOP leader", |c: Shared, mut rng| async move {
        for _ in 0..2 {
            sleep(rng.ms(1000, 1000)).await;
            let victim = some_leader(&*c.lock().await, &mut rng).await;
            c.lock().await.pause(victim, true);
            sleep(rng.ms(3000, 2000)).await;
            c.lock().await.pause(victim, false);
        }
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_isolated_on_the_minority_side() {
    scenario("isolate leader", |c: Shared, mut rng| async move {
        for _ in 0..2 {
            sleep(rng.ms(1000, 1000)).await;
            let victim = some_leader(&*c.lock().await, &mut rng).await;
            c.lock().await.isolate(victim, true);
            sleep(rng.ms(4000, 2000)).await;
            c.lock().await.isolate(victim, false);
        }
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_cut_from_the_leader() {
    scenario("one-way cut", |c: Shared, mut rng| async move {
        sleep(rng.ms(1000, 1000)).await;
        let victim = some_leader(&*c.lock().await, &mut rng).await;
        {
            let c = c.lock().await;
            for other in (1..=3).filter(|o| *o != victim) {
                c.link(victim, other, Mode::Blackhole);
            }
        }
        sleep(rng.ms(4000, 2000)).await;
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_partition() {
    scenario("bridge", |c: Shared, mut rng| async move {
        sleep(rng.ms(1000, 1000)).await;
        let bridge = i32::try_from(1 + rng.below(3)).unwrap();
        let others: Vec<i32> = (1..=3).filter(|o| *o != bridge).collect();
        {
            let c = c.lock().await;
            c.link(others[0], others[1], Mode::Blackhole);
            c.link(others[1], others[0], Mode::Blackhole);
        }
        sleep(rng.ms(5000, 2000)).await;
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_of_the_leader_and_of_every_node() {
    scenario("power loss", |c: Shared, mut rng| async move {
        for _ in 0..3 {
            sleep(rng.ms(1000, 1500)).await;
            let victim = some_leader(&*c.lock().await, &mut rng).await;
            c.lock().await.power_loss(victim).unwrap();
            sleep(rng.ms(1500, 1500)).await;
            c.lock().await.start_node(victim).unwrap();
        }
        // Every node at once: what was committed was fsynced on a majority first.
        sleep(rng.ms(1500, 1000)).await;
        {
            let mut c = c.lock().await;
            for id in 1..=3 {
                c.power_loss(id).unwrap();
            }
            for id in 1..=3 {
                c.start_node(id).unwrap();
            }
        }
        Expect::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    scenario("rolling restart", |c: Shared, mut rng| async move {
        for id in 1..=3 {
            sleep(rng.ms(1500, 1000)).await;
            // A rolling restart stops each node cleanly: it exits 0 once its Raft groups have
            // stopped and its logs are closed, with no error on the way.
            let (status, logged) = c
                .lock()
                .await
                .terminate(id, Duration::from_secs(20))
                .expect("a node stops on SIGTERM");
            assert!(
                status.success(),
                "node {id} exited with {status}:\n{logged}"
            );
            assert!(
                !logged.contains(" ERROR "),
                "node {id} logged an error while stopping:\n{logged}"
            );
            sleep(Duration::from_millis(500)).await;
            c.lock().await.start_node(id).unwrap();
            sleep(Duration::from_secs(2)).await;
        }
        Expect::default()
    })
    .await;
}

/// Committed offsets of a consumer group, as an rdkafka consumer in `group` sees them.
fn committed(bootstrap: &str, group: &str) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = runnel_tests::kafka::config(bootstrap, "repl-offsets")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("OffsetFetch");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Consume with a group member until `want` records arrived, commit synchronously, and return
/// the committed positions.
fn consume_and_commit(bootstrap: &str, group: &str, want: usize) -> BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = runnel_tests::kafka::config(bootstrap, "repl-member")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut positions = BTreeMap::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < want {
        assert!(Instant::now() < deadline, "consumed only {got} of {want}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            positions.insert(m.partition(), m.offset() + 1);
            got += 1;
        }
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("synchronous commit");
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_the_loss_of_the_coordinator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        return;
    };
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let bs = cluster.bootstrap();
    let c = client(&bs);
    create_topic(&cluster, &c, "groups").await;
    for i in 0..300 {
        let p = i % PARTITIONS;
        let batch = encode_batch(
            &[Record {
                value: Some(format!("v{i}").into_bytes()),
                timestamp: 1,
                ..Record::default()
            }],
            ProducerInfo::default(),
        )
        .freeze();
        c.produce(TOPIC, p, batch).await.expect("produce");
    }
    let (b, g) = (bs.clone(), "failover-group");
    let positions = tokio::task::spawn_blocking(move || consume_and_commit(&b, g, 150))
        .await
        .unwrap();
    let b = bs.clone();
    let before = tokio::task::spawn_blocking(move || committed(&b, g))
        .await
        .unwrap();
    assert_eq!(
        before, positions,
        "the coordinator answers what was committed"
    );

    // Kill the coordinator (the metadata leader); another node takes over with the offsets.
    let coordinator = c
        .controller()
        .await
        .expect("metadata")
        .expect("a controller");
    cluster.kill(coordinator);
    eprintln!("killed the coordinator, node {coordinator}; committed before: {before:?}");
    let b = bs.clone();
    let after = tokio::task::spawn_blocking(move || committed(&b, g))
        .await
        .unwrap();
    let now = client(&bs).controller().await.expect("metadata");
    assert_ne!(now, Some(coordinator), "a new coordinator");
    assert_eq!(after, before, "committed offsets survive the coordinator");
}

/// One live group member: polls `TOPIC` until `stop`, committing asynchronously as it goes (the
/// test stops it once the group's committed offsets reached every partition's end); returns
/// every (partition, offset, value) it received.
fn group_member(
    bootstrap: &str,
    group: &str,
    name: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<(i32, i64, String)> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::Message;
    let consumer: BaseConsumer = runnel_tests::kafka::config(bootstrap, name)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut got = Vec::new();
    let mut since_commit = 0;
    let mut last_commit = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let idle = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                got.push((m.partition(), m.offset(), value));
                since_commit += 1;
                false
            }
            // Errors while the coordinator or a leader moves are expected; the client recovers.
            Some(Err(e)) => {
                eprintln!("{name}: {e}");
                false
            }
            None => true,
        };
        // Every 20 records, and every second while idle (an async commit that failed while
        // the coordinator moved is thus repeated; with nothing new, librdkafka sends nothing).
        if since_commit >= 20 || (idle && last_commit.elapsed() > Duration::from_secs(1)) {
            last_commit = Instant::now();
            // May fail while the coordinator moves: the next one covers it.
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            since_commit = 0;
        }
    }
    got
}

/// Produces `live-<i>` for `i` in `from..to` (partition `i % PARTITIONS`), retrying each
/// until acknowledged; returns each value with where it was stored.
async fn produce_range(c: &Client, from: usize, to: usize) -> Vec<(String, (i32, i64))> {
    let mut out = Vec::new();
    for i in from..to {
        let value = format!("live-{i}");
        let p = i32::try_from(i).unwrap() % PARTITIONS;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let batch = encode_batch(
                &[Record {
                    value: Some(value.clone().into_bytes()),
                    timestamp: 1,
                    ..Record::default()
                }],
                ProducerInfo::default(),
            )
            .freeze();
            match c.produce(TOPIC, p, batch).await {
                Ok(offset) => {
                    out.push((value, (p, offset)));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "produce {value}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    out
}

/// The high watermark of each partition of `TOPIC`.
async fn end_offsets(c: &Client) -> Result<BTreeMap<i32, i64>, KafkaClientError> {
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        if let Some(end) = c
            .list_offset(TOPIC, p, runnel_broker::kafka_client::fetch::LATEST)
            .await?
        {
            ends.insert(p, end);
        }
    }
    Ok(ends)
}

/// Coordination, not only the offsets, survives the coordinator: a live two-member group keeps
/// consuming while the coordinator (the metadata leader) is SIGKILLed and producers keep
/// writing; every acknowledged value is consumed, and the group's final commit reaches the end
/// of every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_group_keeps_consuming_across_the_loss_of_its_coordinator() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(bin) = runnel_tests::runnel_bin() else {
        assert!(!runnel_tests::in_ci(), "no runnel binary under CI");
        return;
    };
    let mut cluster = Cluster::start(bin, 3).expect("start the cluster");
    let bs = cluster.bootstrap();
    let c = client(&bs);
    create_topic(&cluster, &c, "groups").await;
    let group = "live-failover-group";
    let stop = Arc::new(AtomicBool::new(false));
    let members: Vec<_> = ["live-a", "live-b"]
        .into_iter()
        .map(|name| {
            let (b, s) = (bs.clone(), stop.clone());
            std::thread::spawn(move || group_member(&b, group, name, &s))
        })
        .collect();

    // Acknowledged values, produced before, during and after the kill.
    let mut acked: BTreeMap<String, (i32, i64)> = BTreeMap::new();
    acked.extend(produce_range(&c, 0, 150).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let coordinator = c
        .controller()
        .await
        .expect("metadata")
        .expect("a controller");
    cluster.kill(coordinator);
    eprintln!("killed the coordinator, node {coordinator}");
    acked.extend(produce_range(&c, 150, 300).await);

    // Wait until the members together have read every acknowledged value.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ends = end_offsets(&c).await;
        let done = ends.as_ref().is_ok_and(|ends| {
            acked
                .values()
                .all(|(p, o)| ends.get(p).is_some_and(|end| end > o))
        });
        let positions = tokio::task::spawn_blocking({
            let b = bs.clone();
            move || committed(&b, group)
        })
        .await
        .unwrap();
        let caught_up = done
            && ends.as_ref().is_ok_and(|ends| {
                ends.iter()
                    .all(|(p, end)| positions.get(p).is_some_and(|c| c >= end))
            });
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not catch up: committed {positions:?}, ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    // A retried produce whose first outcome was unknown may have stored its value twice: the
    // acknowledged position must be among those read.
    let mut read: HashMap<String, HashSet<(i32, i64)>> = HashMap::new();
    for m in members {
        for (p, o, v) in m.join().expect("member") {
            read.entry(v).or_default().insert((p, o));
        }
    }
    for (value, at) in &acked {
        assert!(
            read.get(value).is_some_and(|seen| seen.contains(at)),
            "acknowledged {value} at {at:?} not consumed there (read at {:?})",
            read.get(value)
        );
    }
    let now = c.controller().await.expect("metadata");
    assert_ne!(now, Some(coordinator), "a new coordinator");
}
