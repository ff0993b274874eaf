//! Conformance harness: starts a real `runnel` process and runs third-party Kafka clients
//! against it.
//!
//! [`Broker`] owns one `runnel serve` child on a free loopback port with its own temporary
//! data directory; [`run_client`] runs an external client with a deadline and captures its
//! output; [`require_tool`] decides whether a missing client skips a test (locally) or fails
//! it (when `CI=true`).

use std::fs::File;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
pub use runnel_broker::net::free_loopback_addr;

pub mod cluster;
pub mod group;
pub mod kafka;
pub mod link_proxy;
pub mod proxy;
pub mod raw;
pub mod replicated;

/// How long a freshly started broker may take to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay between connection attempts while waiting for the broker.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives inside the workspace")
        .to_path_buf()
}

/// Whether we run under CI (`CI=true`), where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports a missing prerequisite: panics under CI, otherwise prints a skip notice.
///
/// Returns `true` if the test should go on. Use as `if !require(..) { return; }`.
pub fn require(what: &str, available: bool, hint: &str) -> bool {
    if available {
        return true;
    }
    assert!(
        !in_ci(),
        "{what} is required under CI=true but is not available ({hint})"
    );
    eprintln!("SKIPPED: {what} is not available ({hint}); set CI=true to make this a failure");
    false
}

/// Looks `name` up as a path (if it contains `/`) or on `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| p.is_file();
    if name.contains('/') {
        let p = Path::new(name);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            workspace_root().join(p)
        };
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Requires an executable tool (a name on `PATH`, or a path relative to the workspace).
///
/// Missing: fails the test under `CI=true`, otherwise prints a skip message and returns
/// `None`, so a test can `let Some(kcat) = require_tool("kcat") else { return };`.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    require(
        name,
        found.is_some(),
        "run .ci/install-clients.sh as root to install the conformance clients",
    )
    .then(|| found.expect("checked above"))
}

/// The project's Python venv interpreter (`.venv/bin/python`), if `module` imports in it.
/// Missing: fails the test under `CI=true`, otherwise prints a skip message and returns `None`.
pub fn venv_python_with(module: &str) -> Option<PathBuf> {
    let python = workspace_root().join(".venv/bin/python");
    let ok = python.is_file()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
    require(
        &format!("Python module {module} in .venv"),
        ok,
        "run .ci/install-clients.sh to create .venv",
    )
    .then_some(python)
}

/// The `runnel` binary: `$RUNNEL_BIN`, else `target/release/runnel`, else `target/debug/runnel`.
pub fn runnel_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("RUNNEL_BIN") {
        let bin = PathBuf::from(bin);
        let bin = if bin.is_absolute() {
            bin
        } else {
            workspace_root().join(bin)
        };
        return bin.is_file().then_some(bin);
    }
    let target = workspace_root().join("target");
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("runnel"))
        .find(|p| p.is_file())
}

/// A `runnel serve` child process on `127.0.0.1:<free port>` with a private data directory.
///
/// The child is SIGKILLed when the `Broker` is dropped; if the test is panicking, the tail
/// of the broker's log is printed and its log and data directories are kept.
pub struct Broker {
    bin: PathBuf,
    data_dir: tempfile::TempDir,
    log_dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
    starts: u32,
    extra_args: Vec<String>,
}

impl Broker {
    /// Starts a broker, or returns `None` (after printing why) if no `runnel` binary exists
    /// outside CI. Under `CI=true` a missing binary fails the test.
    pub fn start_or_skip() -> Option<Broker> {
        Broker::start_or_skip_with(&[])
    }

    /// Like [`Broker::start_or_skip`], passing `extra_args` to every `runnel serve`.
    pub fn start_or_skip_with(extra_args: &[&str]) -> Option<Broker> {
        let bin = runnel_bin();
        if !require(
            "the runnel binary",
            bin.is_some(),
            "set RUNNEL_BIN or run `cargo build --release -p runnel-broker`",
        ) {
            return None;
        }
        let bin = bin.expect("checked above");
        Some(Broker::start_with_args(bin, extra_args).expect("start runnel"))
    }

    /// Starts `bin serve` on a free loopback port and waits until it accepts connections.
    pub fn start_with(bin: PathBuf) -> Result<Broker> {
        Broker::start_with_args(bin, &[])
    }

    /// Starts `bin serve ... extra_args` (kept for restarts) and waits for it.
    pub fn start_with_args(bin: PathBuf, extra_args: &[&str]) -> Result<Broker> {
        let data_dir = tempfile::Builder::new()
            .prefix("runnel-data-")
            .tempdir()
            .context("create data dir")?;
        let log_dir = tempfile::Builder::new()
            .prefix("runnel-log-")
            .tempdir()
            .context("create log dir")?;
        let addr = free_loopback_addr()?;
        let mut broker = Broker {
            bin,
            data_dir,
            log_dir,
            addr,
            child: None,
            starts: 0,
            extra_args: extra_args.iter().map(|a| (*a).to_string()).collect(),
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `host:port` for a client's bootstrap servers setting.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's data directory (kept across [`Broker::restart`]).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Everything the broker printed so far, across restarts.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.starts {
            let path = self.log_path(n);
            if let Ok(mut f) = File::open(&path) {
                out.push_str(&format!("--- runnel start #{n} ({}) ---\n", path.display()));
                let mut buf = Vec::new();
                let _ = f.read_to_end(&mut buf);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
        }
        out
    }

    /// Kills the broker with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            match child.try_wait()? {
                Some(status) => bail!("runnel had already exited with {status}"),
                None => {
                    child.kill().context("SIGKILL runnel")?;
                    child.wait().context("reap runnel")?;
                }
            }
        }
        Ok(())
    }

    /// Kills the broker (if running) and starts it again on the same data dir and port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.log_dir.path().join(format!("runnel-{start}.log"))
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts)).context("create broker log")?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--kafka-addr")
            .arg(self.addr.to_string())
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            // Not the caller's directory: `runnel serve` would pick up a ./runnel.toml there.
            .current_dir(self.log_dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin.display()))?;
        self.child = Some(child);
        self.wait_ready()
            .with_context(|| format!("runnel did not come up; its log:\n{}", self.log()))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!("runnel exited with {status} before accepting connections");
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "runnel did not accept connections on {} within {READY_TIMEOUT:?}",
                    self.addr
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("==== last {} lines of the runnel log ====", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            self.log_dir.disable_cleanup(true);
            self.data_dir.disable_cleanup(true);
            eprintln!(
                "==== kept the broker's logs in {} and its data in {} ====",
                self.log_dir.path().display(),
                self.data_dir.path().display()
            );
        }
    }
}

/// What an external client printed, and how it exited.
#[derive(Debug)]
pub struct ClientOutput {
    /// Exit status; `None` if the client was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// Wall time the client ran.
    pub elapsed: Duration,
}

impl ClientOutput {
    /// Whether the client exited with status 0 before its deadline.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Fails (with the full output) unless the client succeeded.
    pub fn assert_success(&self, what: &str) {
        let verdict = match self.status {
            Some(s) if s.success() => return,
            Some(s) => format!("exited with {s}"),
            None => "timed out and was killed".to_string(),
        };
        panic!(
            "{what} {verdict} after {:.1?}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.elapsed, self.stdout, self.stderr
        );
    }
}

/// Runs `cmd` to completion or until `timeout` (then SIGKILLs it), capturing its output.
///
/// Standard input is closed. The output of a killed client is still returned.
pub fn run_client(cmd: &mut Command, timeout: Duration) -> Result<ClientOutput> {
    let started = Instant::now();
    // Its own process group, so that a deadline kills the client's children too (a shell
    // script's kcat would otherwise keep our output pipes open).
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let stdout = reader(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
    let stderr = reader(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?);
    let deadline = started + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            kill_process_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let join = |h: thread::JoinHandle<io::Result<Vec<u8>>>| -> String {
        match h.join() {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(e)) => format!("<error reading output: {e}>"),
            Err(_) => "<output reader panicked>".to_string(),
        }
    };
    Ok(ClientOutput {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
        elapsed: started.elapsed(),
    })
}

/// SIGKILLs every process in group `pgid` (the workspace forbids the `unsafe` a direct
/// `kill(2)` would need, so this asks `kill(1)`).
fn kill_process_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<io::Result<Vec<u8>>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        Ok(buf)
    })
}

/// A topic name unique to this process and call site, e.g. `conf-kcat-1234-1700000000123`.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "conf-{prefix}-{}-{millis}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
