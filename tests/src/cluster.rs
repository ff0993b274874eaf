//! A three-node `runnel serve` cluster of real processes for fault tests, with a
//! [`LinkProxy`] on every directed replication link, so a test can kill (SIGKILL), pause
//! (SIGSTOP), resume and restart nodes and cut links one way or both.
//!
//! Node `i` dials node `j` (for its Raft messages to `j`) through the proxy `(i, j)`, so
//! blackholing that proxy cuts exactly the direction i → j. Kafka clients reach every node
//! directly.
//!
//! Every node's stdout/stderr goes to `node<id>.log` in the cluster's temp dir, appended
//! across restarts with a `--- start at <time> ---` marker, and the harness's own faults
//! (kill, pause, link cuts) are marked there too. When a test panics with the cluster alive,
//! dropping it prints the last [`PANIC_TAIL_LINES`] lines of every node's log and keeps the
//! temp dir (its path is printed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::free_loopback_addr;
use crate::link_proxy::{LinkProxy, Mode};

/// Lines of each node's log printed when a test panics.
pub const PANIC_TAIL_LINES: usize = 80;

/// One node: its process (when running), addresses and files.
pub struct Node {
    pub id: i32,
    pub kafka: SocketAddr,
    /// Prometheus metrics at `/metrics`.
    pub http: SocketAddr,
    /// The gRPC API (also given to every node as this node's `grpc` in `[cluster] nodes`, so a
    /// follower's leader hint names it).
    pub grpc: SocketAddr,
    pub dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// Where the node journals its segment fsyncs (`RUNNEL_FAULT_SYNC_JOURNAL`).
    syncs: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The cluster; every process is killed on drop (and, if the test panics, the logs are
/// printed and the temp dir kept).
pub struct Cluster {
    pub nodes: Vec<Node>,
    proxies: BTreeMap<(i32, i32), LinkProxy>,
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Write the configs of `n` nodes (ids 1..=n) and start every node with `bin`.
    pub fn start(bin: PathBuf, n: i32) -> Result<Self> {
        let root = tempfile::tempdir()?;
        let ids: Vec<i32> = (1..=n).collect();
        let mut raft = BTreeMap::new();
        let mut kafka = BTreeMap::new();
        let mut http = BTreeMap::new();
        let mut grpc = BTreeMap::new();
        for id in &ids {
            raft.insert(*id, free_loopback_addr()?);
            kafka.insert(*id, free_loopback_addr()?);
            http.insert(*id, free_loopback_addr()?);
            grpc.insert(*id, free_loopback_addr()?);
        }
        let mut proxies = BTreeMap::new();
        for from in &ids {
            for to in ids.iter().filter(|t| *t != from) {
                let p = LinkProxy::start("127.0.0.1:0".parse()?, raft[to])?;
                proxies.insert((*from, *to), p);
            }
        }
        let mut nodes = Vec::new();
        for id in &ids {
            let dir = root.path().join(format!("node{id}"));
            std::fs::create_dir_all(&dir)?;
            // This node's own entry has its real listener; the others' go through its proxies.
            let entries: String = ids
                .iter()
                .map(|other| {
                    let r = if other == id {
                        raft[id]
                    } else {
                        proxies[&(*id, *other)].addr()
                    };
                    format!(
                        "  {{ id = {other}, kafka = \"{}\", raft = \"{r}\", grpc = \"{}\" }},\n",
                        kafka[other], grpc[other]
                    )
                })
                .collect();
            let config = root.path().join(format!("node{id}.toml"));
            std::fs::write(
                &config,
                format!(
                    "data_dir = \"{}\"\nkafka_addr = \"{}\"\ngrpc_addr = \"{}\"\n\
                     http_addr = \"{}\"\nnode_id = {id}\n\n[processor]\nenabled = false\n\n\
                     [cluster]\nnodes = [\n{entries}]\n",
                    dir.display(),
                    kafka[id],
                    grpc[id],
                    http[id]
                ),
            )?;
            nodes.push(Node {
                id: *id,
                kafka: kafka[id],
                http: http[id],
                grpc: grpc[id],
                log: root.path().join(format!("node{id}.log")),
                syncs: root.path().join(format!("node{id}.syncs")),
                dir,
                config,
                child: None,
                paused: false,
            });
        }
        let mut c = Self {
            nodes,
            proxies,
            bin,
            root,
        };
        for id in ids {
            c.start_node(id)?;
        }
        Ok(c)
    }

    /// `host:port` of every node, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
    }

    /// Whether the node's process runs (paused or not).
    pub fn is_up(&self, id: i32) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.child.is_some())
    }

    /// Start a node that is down (its log is appended to `node<id>.log`).
    pub fn start_node(&mut self, id: i32) -> Result<()> {
        let bin = self.bin.clone();
        let node = self.node_mut(id);
        if node.child.is_some() {
            return Ok(());
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        {
            use std::io::Write;
            let first = log.metadata()?.len() == 0;
            let what = if first { "start" } else { "restart" };
            writeln!(log, "--- {what} at {} ---", now_utc())?;
        }
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&node.config)
            // `RUNNEL_CLUSTER_LOG` overrides the filter (e.g. `debug` to investigate a failure).
            .env(
                "RUST_LOG",
                std::env::var("RUNNEL_CLUSTER_LOG")
                    .unwrap_or_else(|_| "warn,runnel_broker::cluster=info".into()),
            )
            .env("NO_COLOR", "1")
            .env("RUNNEL_FAULT_SYNC_JOURNAL", &node.syncs)
            // `runnel serve` logs to stdout.
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Rewrites node `id`'s config file with `edit` (taking effect at its next start): e.g.
    /// top-level settings prepended, or a `[topics]` table inserted before `[processor]`.
    pub fn edit_config(&self, id: i32, edit: impl FnOnce(String) -> String) -> Result<()> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .context("a node of this cluster")?;
        let text = std::fs::read_to_string(&node.config)?;
        std::fs::write(&node.config, edit(text))?;
        Ok(())
    }

    /// SIGKILL a node (a paused one too).
    pub fn kill(&mut self, id: i32) {
        let node = self.node_mut(id);
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            mark(&node.log, "SIGKILL");
        }
        node.paused = false;
    }

    /// SIGTERM a running node (a clean shutdown) and wait up to `timeout` for it to exit;
    /// returns its exit status and what it logged from the signal on. A node still running
    /// after `timeout` is SIGKILLed and reported as an error.
    pub fn terminate(&mut self, id: i32, timeout: Duration) -> Result<(ExitStatus, String)> {
        let node = self.node_mut(id);
        let Some(mut child) = node.child.take() else {
            anyhow::bail!("node {id} is not running");
        };
        node.paused = false;
        mark(&node.log, "SIGTERM");
        let from = std::fs::metadata(&node.log).map(|m| m.len()).unwrap_or(0);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                mark(&node.log, "SIGKILL (SIGTERM not obeyed)");
                anyhow::bail!("node {id} still ran {timeout:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read(&node.log)?;
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
        Ok((status, String::from_utf8_lossy(&text[start..]).into_owned()))
    }

    /// SIGKILL a node and then lose what a power cut would: every segment file it fsynced in
    /// this lifetime is cut to the length its last fsync covered (the node journals them,
    /// `broker/src/log/fault.rs`), and index files are removed (they are rebuilt). Files it
    /// never fsynced since it started keep their bytes (a gentler cut than a real one).
    pub fn power_loss(&mut self, id: i32) -> Result<()> {
        self.kill(id);
        let node = self.node_mut(id);
        let journal = match std::fs::read_to_string(&node.syncs) {
            Ok(j) => j,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let mut last: BTreeMap<PathBuf, u64> = BTreeMap::new();
        for line in journal.lines() {
            if let Some((path, len)) = line.rsplit_once(' ') {
                if let Ok(len) = len.parse() {
                    last.insert(PathBuf::from(path), len);
                }
            }
        }
        for (path, len) in last {
            match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(f) => {
                    if f.metadata()?.len() > len {
                        f.set_len(len)?;
                    }
                }
                // Deleted since (a removed topic): nothing to cut.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        remove_indexes(&node.dir)?;
        let _ = std::fs::remove_file(&node.syncs);
        Ok(())
    }

    /// SIGSTOP (`pause = true`) or SIGCONT a running node.
    pub fn pause(&mut self, id: i32, pause: bool) {
        let node = self.node_mut(id);
        if let Some(c) = &node.child {
            let sig = if pause { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
            if node.paused != pause {
                mark(&node.log, if pause { "SIGSTOP" } else { "SIGCONT" });
            }
            node.paused = pause;
        }
    }

    /// Set the mode of the link `from → to` (Raft messages from `from` to `to`).
    pub fn link(&self, from: i32, to: i32, mode: Mode) {
        if let Some(p) = self.proxies.get(&(from, to)) {
            p.set_mode(mode);
            for n in self.nodes.iter().filter(|n| n.id == from || n.id == to) {
                mark(&n.log, &format!("link {from} -> {to}: {mode:?}"));
            }
        }
    }

    /// Cut (or restore) every link to and from `id`.
    pub fn isolate(&self, id: i32, cut: bool) {
        let mode = if cut { Mode::Blackhole } else { Mode::Pass };
        for (from, to) in self.proxies.keys() {
            if *from == id || *to == id {
                self.link(*from, *to, mode);
            }
        }
    }

    /// Every link passes again and every paused node resumes.
    pub fn heal(&mut self) {
        for p in self.proxies.values() {
            p.set_mode(Mode::Pass);
        }
        for n in &self.nodes {
            mark(&n.log, "heal: every link passes");
        }
        let paused: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.paused)
            .map(|n| n.id)
            .collect();
        for id in paused {
            self.pause(id, false);
        }
    }

    /// A node's data directory.
    pub fn data_dir(&self, id: i32) -> &Path {
        &self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
            .dir
    }

    /// The value of one series in a node's `/metrics` (`series` is the name with its labels
    /// exactly as exported, e.g. `runnel_high_watermark_offset{topic="t",partition="0"}`);
    /// `None` if the node does not answer or does not export it.
    pub fn metric(&self, id: i32, series: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let node = self.nodes.iter().find(|n| n.id == id)?;
        let mut s =
            std::net::TcpStream::connect_timeout(&node.http, std::time::Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Replace every node's `[processor]` section (`enabled = false` at start) with `section`
    /// (TOML keys, without the header); takes effect when a node next starts.
    pub fn set_processor(&self, section: &str) -> Result<()> {
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.config)?;
            let (head, rest) = text
                .split_once("[processor]\n")
                .context("a [processor] section")?;
            let (_, tail) = rest.split_once("\n\n").context("the section's end")?;
            std::fs::write(&n.config, format!("{head}[processor]\n{section}\n\n{tail}"))?;
        }
        Ok(())
    }

    /// The cluster's temp dir (configs, `node<id>/` data dirs, `node<id>.log`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The last `lines` lines of every node's log, each under a `---- node <id> (<path>) ----`
    /// header, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "---- node {} ({}) ----\n{}\n",
                    n.id,
                    n.log.display(),
                    self.log_tail(n.id, lines)
                )
            })
            .collect()
    }

    /// The last lines of a node's log, for failure messages.
    pub fn log_tail(&self, id: i32, lines: usize) -> String {
        let Some(n) = self.nodes.iter().find(|n| n.id == id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&n.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<i32> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.pause(id, false);
            self.kill(id);
        }
        if std::thread::panicking() {
            eprintln!(
                "==== the test panicked: last {PANIC_TAIL_LINES} lines of each node's log ====\n{}",
                self.logs_tail(PANIC_TAIL_LINES)
            );
            self.root.disable_cleanup(true);
            eprintln!(
                "==== kept the cluster's temp dir (logs, configs, data): {} ====",
                self.root.path().display()
            );
        }
    }
}

/// Append a `--- <what> at <time> ---` line to a node's log (best effort: a marker that cannot
/// be written must not fail the test). Lines are written whole in one `write` to a file opened
/// for appending, so they do not split the node's own lines.
fn mark(log: &Path, what: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = f.write_all(format!("--- {what} at {} ---\n", now_utc()).as_bytes());
    }
}

/// The wall-clock time as `HH:MM:SS.mmm UTC` (the nodes' own log lines carry UTC times).
fn now_utc() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        s / 3_600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

/// Remove every `.index` / `.timeindex` file under `dir`.
fn remove_indexes(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_indexes(&path)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
