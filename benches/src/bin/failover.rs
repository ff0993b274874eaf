//! Failover benchmark (issue 6): three release `runnel serve` processes, one 1-partition RF-3
//! topic, a producer sending one small record at a time with acks=all, and repeated SIGKILLs
//! of the partition leader. Per kill: kill → a new leader named in Metadata, and kill → the
//! first acknowledged produce that was sent after the kill (so it can only have been answered
//! by the new leader: the old process is gone). The killed node is restarted and caught up
//! before the next kill. See BENCHMARKS.md, "Replication".
//!
//! `failover run --runnel target/release/runnel` runs the benchmark; `failover create-topic`
//! creates a topic with the cluster's default replication factor (used by
//! `benches/replication_throughput.sh`, since `rk_helper` asks for replication factor 1);
//! `failover cluster` starts the same three nodes with RF-3 topics and keeps them running
//! until Ctrl-C / SIGINT / SIGTERM, printing their addresses and process ids (for probes such
//! as `produce_latency`, and for reading each node's CPU time from `/proc/PID/stat`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use runnel_benches::{ms, percentile};
use runnel_broker::codec::builder::Record;
use runnel_broker::kafka_client::{produce::encode_batches, Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(about = "Leader-failover benchmark of a 3-node Runnel cluster")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a 3-node cluster, kill the partition leader repeatedly and time each failover.
    Run(RunArgs),
    /// Start a 3-node cluster, create RF-3 topics, print the bootstrap list and the nodes'
    /// process ids, and run until interrupted.
    Cluster(ClusterArgs),
    /// Produce batches as fast as acks=all allows, with a few calls in flight, and report
    /// records/s and (with `--pids`) the brokers' CPU time per MB of payload.
    Load(LoadArgs),
    /// Create a topic (replication factor: the cluster's default) and wait for its leaders.
    CreateTopic {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
}

/// The nodes' `[cluster]` timing.
#[derive(clap::Args)]
struct ClusterTiming {
    /// `[cluster] tick_ms` of every node.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// `[cluster] election_ticks` (election timeout drawn from n..2n ticks).
    #[arg(long, default_value_t = 20)]
    election_ticks: u32,
    /// `[cluster] heartbeat_ticks`.
    #[arg(long, default_value_t = 2)]
    heartbeat_ticks: u32,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// The `runnel` binary (a release build).
    #[arg(long, default_value = "target/release/runnel")]
    runnel: PathBuf,
    #[command(flatten)]
    timing: ClusterTiming,
    /// Topics to create (1 partition each, RF 3), comma-separated.
    #[arg(long, default_value = "lat", value_delimiter = ',')]
    topics: Vec<String>,
    /// Parent of the nodes' data directories (a fresh directory inside it is removed at the
    /// end).
    #[arg(long, default_value = "/tmp")]
    data: PathBuf,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Broker addresses (comma-separated); the client follows the partition's leader.
    #[arg(long)]
    bootstrap: String,
    /// An existing topic; partition 0 is written.
    #[arg(long)]
    topic: String,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per batch (one batch per Produce request).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Batches in all.
    #[arg(long, default_value_t = 2000)]
    batches: usize,
    /// Produce calls in flight (one client each).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Broker process ids whose CPU time (utime + stime) is read before and after.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
}

/// utime + stime of `pid` in clock ticks, from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat field")
    };
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Ok(field(11)? + field(12)?)
}

/// `failover load`: fixed work, as fast as acknowledged.
async fn load(a: LoadArgs) -> Result<()> {
    if a.batch == 0 || a.batches == 0 || a.in_flight == 0 {
        bail!("--batch, --batches and --in-flight must be positive");
    }
    let records: Vec<Record> = (0..a.batch).map(|_| record(a.size)).collect();
    let batch = encode_batches(&records, a.batch, usize::MAX).remove(0);
    let clients: Vec<Client> = (0..a.in_flight)
        .map(|_| {
            let mut c = ClientConfig::new(&a.bootstrap);
            c.client_id = "failover-load".into();
            c.request_timeout = Duration::from_secs(30);
            Client::new(c)
        })
        .collect();
    // Warm up: connections, metadata, the leader.
    for c in &clients {
        c.produce(&a.topic, 0, batch.clone()).await?;
    }
    let cpu = |pids: &[u32]| -> Result<Vec<u64>> { pids.iter().map(|p| cpu_ticks(*p)).collect() };
    let before = cpu(&a.pids)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (next, batch, topic, total) = (next.clone(), batch.clone(), a.topic.clone(), a.batches);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                c.produce(&topic, 0, batch.clone()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = cpu(&a.pids)?;
    let n = a.batch.saturating_mul(a.batches);
    let count = |x: usize| f64::from(u32::try_from(x).unwrap_or(u32::MAX));
    let mb = count(n) * count(a.size) / 1e6;
    print!(
        "records={n} size={} batch={} in_flight={} | {:.0} rec/s {:.1} MB/s",
        a.size,
        a.batch,
        a.in_flight,
        count(n) / secs,
        mb / secs
    );
    if !a.pids.is_empty() {
        let hz: f64 = String::from_utf8(
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .context("getconf CLK_TCK")?
                .stdout,
        )?
        .trim()
        .parse()
        .context("CLK_TCK")?;
        let ms_per_mb =
            |ticks: u64| f64::from(u32::try_from(ticks).unwrap_or(u32::MAX)) / hz * 1000.0 / mb;
        let per_node: Vec<String> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| format!("{:.2}", ms_per_mb(a.saturating_sub(*b))))
            .collect();
        let total = after
            .iter()
            .sum::<u64>()
            .saturating_sub(before.iter().sum::<u64>());
        print!(
            " | broker CPU ms per MB: {:.2} (per node {})",
            ms_per_mb(total),
            per_node.join(" / ")
        );
    }
    println!();
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    /// The `runnel` binary (a release build).
    #[arg(long, default_value = "target/release/runnel")]
    runnel: PathBuf,
    /// Leader kills.
    #[arg(long, default_value_t = 30)]
    kills: usize,
    #[command(flatten)]
    timing: ClusterTiming,
    /// Producer: first wait before a retry (the client doubles it once before re-asking
    /// Metadata and trying again).
    #[arg(long, default_value_t = 10)]
    backoff_ms: u64,
    /// Producer: cached metadata older than this is refreshed before use.
    #[arg(long, default_value_t = 1000)]
    metadata_max_age_ms: u64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Pause after a restarted node has caught up, before the next kill.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Parent of the nodes' data directories (must be a real disk so fsync costs what it
    /// costs); a fresh temporary directory inside it is removed at the end.
    #[arg(long, default_value = "/tmp")]
    data: PathBuf,
}

fn free_addr() -> Result<SocketAddr> {
    Ok(runnel_broker::net::free_loopback_addr()?)
}

struct Node {
    id: i32,
    kafka: SocketAddr,
    http: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

struct Cluster {
    nodes: Vec<Node>,
    bin: PathBuf,
}

impl Cluster {
    fn write(bin: &Path, root: &Path, a: &ClusterTiming) -> Result<Self> {
        let ids = [1, 2, 3];
        let mut nodes = Vec::new();
        let mut raft = Vec::new();
        for id in ids {
            let dir = root.join(format!("node{id}"));
            std::fs::create_dir_all(&dir)?;
            raft.push(free_addr()?);
            nodes.push(Node {
                id,
                kafka: free_addr()?,
                http: free_addr()?,
                config: root.join(format!("node{id}.toml")),
                log: root.join(format!("node{id}.log")),
                child: None,
            });
        }
        let entries: String = nodes
            .iter()
            .zip(&raft)
            .map(|(n, r)| {
                format!(
                    "  {{ id = {}, kafka = \"{}\", raft = \"{r}\" }},\n",
                    n.id, n.kafka
                )
            })
            .collect();
        for n in &nodes {
            std::fs::write(
                &n.config,
                format!(
                    "data_dir = \"{}\"\nkafka_addr = \"{}\"\ngrpc_addr = \"127.0.0.1:0\"\n\
                     http_addr = \"{}\"\nnode_id = {}\n\n[processor]\nenabled = false\n\n\
                     [cluster]\ntick_ms = {}\nelection_ticks = {}\nheartbeat_ticks = {}\n\
                     nodes = [\n{entries}]\n",
                    root.join(format!("node{}", n.id)).display(),
                    n.kafka,
                    n.http,
                    n.id,
                    a.tick_ms,
                    a.election_ticks,
                    a.heartbeat_ticks,
                ),
            )?;
        }
        Ok(Self {
            nodes,
            bin: bin.to_owned(),
        })
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node of the cluster")
    }

    fn start(&mut self, id: i32) -> Result<()> {
        let bin = self.bin.clone();
        let n = self.node(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&n.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        n.child = Some(child);
        Ok(())
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    fn kill(&mut self, id: i32) {
        if let Some(mut c) = self.node(id).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn http(&self, id: i32) -> SocketAddr {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.http)
            .expect("node of the cluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in [1, 2, 3] {
            self.kill(id);
        }
    }
}

/// `runnel_high_watermark_offset{topic=..,partition="0"}` from a node's `/metrics`.
#[allow(clippy::cast_possible_truncation)]
async fn high_watermark(http: SocketAddr, topic: &str) -> Option<i64> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(http))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&body);
    let topic_label = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|l| l.starts_with("runnel_high_watermark_offset{"))
        .filter(|l| l.contains(&topic_label) && l.contains("partition=\"0\""))
        .find_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|v| v.round() as i64)
}

/// One acknowledged produce: when the call started and when it returned.
#[derive(Clone, Copy)]
struct Ack {
    sent: Instant,
    acked: Instant,
}

fn record(size: usize) -> Record {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    Record {
        key: None,
        value: Some(vec![b'x'; size]),
        headers: Vec::new(),
        timestamp: now,
    }
}

/// Sends one record at a time, forever; every acknowledgement is logged in `acks`.
async fn produce_loop(client: Client, topic: String, size: usize, acks: Arc<Mutex<Vec<Ack>>>) {
    loop {
        let batch = encode_batches(&[record(size)], 1, 1 << 20).remove(0);
        let sent = Instant::now();
        match client.produce(&topic, 0, batch).await {
            Ok(_) => {
                let acked = Instant::now();
                acks.lock().expect("acks lock").push(Ack { sent, acked });
            }
            // Unknown outcome (the leader died mid-request) or retries used up: try again.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

fn client(bootstrap: &str, a: &RunArgs) -> Client {
    let mut c = ClientConfig::new(bootstrap);
    c.client_id = "failover-bench".into();
    c.request_timeout = Duration::from_secs(10);
    // One try from the cache, then (after 2 × backoff) one with fresh Metadata; the caller
    // loops, so a leader change is retried every ~2 × backoff without exponential growth.
    c.attempts = 2;
    c.backoff = Duration::from_millis(a.backoff_ms);
    c.metadata_max_age = Duration::from_millis(a.metadata_max_age_ms);
    Client::new(c)
}

/// Creates `topic` (1 partition, the cluster's default replication factor), retrying every
/// 500 ms while the cluster is still forming, until `deadline`.
async fn create_topic_waiting(admin: &Client, topic: &str, deadline: Instant) -> Result<()> {
    loop {
        match admin.ensure_topic(topic, 1).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("create topic {topic}: {e}"),
        }
    }
}

async fn leader(c: &Client, topic: &str) -> Option<i32> {
    c.leaders(topic).await.ok()?.first().copied().flatten()
}

fn summary(name: &str, v: &mut [Duration]) {
    v.sort();
    let p = |q| percentile(v, q).map_or(f64::NAN, ms);
    println!(
        "{name}: n={} p50={:.0} ms p99={:.0} ms max={:.0} ms min={:.0} ms",
        v.len(),
        p(50),
        p(99),
        p(100),
        v.first().copied().map_or(f64::NAN, ms),
    );
}

async fn run(a: RunArgs) -> Result<()> {
    let bin = std::fs::canonicalize(&a.runnel)
        .with_context(|| format!("runnel binary {}", a.runnel.display()))?;
    let root = tempfile_dir(&a.data)?;
    let result = run_in(&a, &bin, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = parent.join(format!("runnel-failover-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn run_in(a: &RunArgs, bin: &Path, root: &Path) -> Result<()> {
    let mut cluster = Cluster::write(bin, root, &a.timing)?;
    for id in [1, 2, 3] {
        cluster.start(id)?;
    }
    let bootstrap = cluster.bootstrap();
    let topic = "failover";
    println!(
        "cluster: {bootstrap}; tick_ms={} election_ticks={} (election timeout {}..{} ms) \
         heartbeat_ticks={}; producer backoff {} ms, metadata max age {} ms, {} B records, \
         acks=all; data in {}",
        a.timing.tick_ms,
        a.timing.election_ticks,
        a.timing.tick_ms * u64::from(a.timing.election_ticks),
        a.timing.tick_ms * u64::from(a.timing.election_ticks) * 2,
        a.timing.heartbeat_ticks,
        a.backoff_ms,
        a.metadata_max_age_ms,
        a.size,
        root.display()
    );
    let admin = client(&bootstrap, a);
    create_topic_waiting(&admin, topic, Instant::now() + Duration::from_secs(60)).await?;
    let acks = Arc::new(Mutex::new(Vec::new()));
    let producer = tokio::spawn(produce_loop(
        client(&bootstrap, a),
        topic.to_owned(),
        a.size,
        acks.clone(),
    ));
    let monitor = client(&bootstrap, a);
    let ack_count = || acks.lock().expect("acks lock").len();
    let mut to_meta = Vec::new();
    let mut to_ack = Vec::new();
    println!("kill  killed  new  kill->metadata_ms  kill->first_ack_ms  acks_so_far");
    for k in 1..=a.kills {
        // Steady state: a leader is known and the producer is getting acknowledgements.
        let old = loop {
            let before = ack_count();
            tokio::time::sleep(Duration::from_millis(200)).await;
            if ack_count() > before {
                if let Some(l) = leader(&monitor, topic).await {
                    break l;
                }
            }
        };
        let killed_at = Instant::now();
        cluster.kill(old);
        // Kill → a leader other than the killed node in Metadata (asked every 5 ms).
        let new = loop {
            match leader(&monitor, topic).await {
                Some(l) if l != old => break l,
                _ => {}
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("no new leader 60 s after killing node {old}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let meta_at = Instant::now();
        // Kill → the first acknowledgement of a produce sent after the kill.
        let first_ack = loop {
            let found = acks
                .lock()
                .expect("acks lock")
                .iter()
                .rev()
                .take_while(|x| x.sent >= killed_at)
                .last()
                .map(|x| x.acked);
            if let Some(t) = found {
                break t;
            }
            if killed_at.elapsed() > Duration::from_secs(60) {
                bail!("no acknowledgement 60 s after killing node {old}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let dm = meta_at - killed_at;
        let da = first_ack - killed_at;
        println!(
            "{k:>4}  {old:>6}  {new:>3}  {:>17.0}  {:>18.0}  {:>11}",
            ms(dm),
            ms(da),
            ack_count()
        );
        to_meta.push(dm);
        to_ack.push(da);
        // Restart the killed node and wait until it has the leader's high watermark.
        cluster.start(old)?;
        let target = loop {
            if let Some(hw) = high_watermark(cluster.http(new), topic).await {
                break hw;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let restarted = Instant::now();
        loop {
            if high_watermark(cluster.http(old), topic)
                .await
                .is_some_and(|hw| hw >= target)
            {
                break;
            }
            if restarted.elapsed() > Duration::from_secs(120) {
                bail!("node {old} did not catch up to {target} in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(a.settle_ms)).await;
    }
    producer.abort();
    let all: Vec<Ack> = acks.lock().expect("acks lock").clone();
    println!();
    summary("kill -> new leader in Metadata", &mut to_meta);
    summary("kill -> first ack on the new leader", &mut to_ack);
    let mut lat: Vec<Duration> = all.iter().map(|x| x.acked - x.sent).collect();
    summary("send -> ack of each acknowledged produce call", &mut lat);
    Ok(())
}

/// `failover cluster`: three nodes and RF-3 topics, kept until interrupted.
async fn serve_cluster(a: ClusterArgs) -> Result<()> {
    let bin = std::fs::canonicalize(&a.runnel)
        .with_context(|| format!("runnel binary {}", a.runnel.display()))?;
    let root = tempfile_dir(&a.data)?;
    let result = serve_cluster_in(&a, &bin, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn serve_cluster_in(a: &ClusterArgs, bin: &Path, root: &Path) -> Result<()> {
    let mut cluster = Cluster::write(bin, root, &a.timing)?;
    for id in [1, 2, 3] {
        cluster.start(id)?;
    }
    let bootstrap = cluster.bootstrap();
    let admin = Client::new(ClientConfig::new(&bootstrap));
    for topic in &a.topics {
        let deadline = Instant::now() + Duration::from_secs(60);
        create_topic_waiting(&admin, topic, deadline).await?;
        while leader(&admin, topic).await.is_none() {
            if Instant::now() > deadline {
                bail!("topic {topic} has no leader after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pids: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.child.as_ref().map_or(0, Child::id).to_string())
        .collect();
    println!("bootstrap={bootstrap}");
    println!("pids={}", pids.join(","));
    println!("data={}", root.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Run(a) => run(a).await,
        Cmd::Cluster(a) => serve_cluster(a).await,
        Cmd::Load(a) => load(a).await,
        Cmd::CreateTopic {
            bootstrap,
            topic,
            partitions,
        } => {
            let c = Client::new(ClientConfig::new(&bootstrap));
            let n = c
                .ensure_topic(&topic, partitions)
                .await
                .with_context(|| format!("create {topic}"))?;
            println!(
                "{topic}: {n} partitions, leaders {:?}",
                c.leaders(&topic).await?
            );
            Ok(())
        }
    }
}
