//! See it working, as a person would: `runnel demo` (the README's first command) runs; its
//! dashboard is driven in headless Chromium (charts draw, new alerts stream in, window
//! aggregates appear, a screenshot is kept); `runnel status` reports the pipeline; and every
//! metric that the Grafana dashboards and Prometheus rules in `deploy/` query exists in the
//! demo's live `/metrics`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runnel_tests::{
    free_loopback_addr, require, require_tool, run_client, runnel_bin, workspace_root,
};

/// A `runnel demo` child process; SIGKILLed on drop if still running.
struct Demo {
    child: Child,
    stderr: PathBuf,
    dashboard: String,
    http: String,
    kafka: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(bin: &Path) -> Result<Demo> {
        let dir = tempfile::tempdir()?;
        let stderr = dir.path().join("demo.stderr");
        let kafka = free_loopback_addr()?;
        let child = Command::new(bin)
            .args(["demo", "--kafka-addr", &kafka.to_string(), "--rate", "500"])
            .args(["--devices", "50", "--seed", "7", "--duration", "600"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("spawn runnel demo")?;
        let mut demo = Demo {
            child,
            stderr,
            dashboard: String::new(),
            http: String::new(),
            kafka: kafka.to_string(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = demo.output();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("dashboard"))
                .map(str::trim)
            {
                demo.dashboard = url.to_owned();
                demo.http = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                return Ok(demo);
            }
            if let Some(status) = demo.child.try_wait()? {
                bail!("runnel demo exited with {status} before printing its dashboard:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("runnel demo printed no dashboard address in 30 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Ctrl-C, as a person stops it; returns what it printed.
    fn interrupt(&mut self) -> Result<String> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        assert!(status.success(), "kill -INT failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                assert!(
                    status.success(),
                    "runnel demo exited with {status} on Ctrl-C"
                );
                return Ok(self.output());
            }
            if Instant::now() > deadline {
                bail!("runnel demo did not stop within 30 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if std::thread::panicking() {
                eprintln!("---- runnel demo stderr ----\n{}", self.output());
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.0 GET; returns the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// Sample names in a Prometheus/OpenMetrics exposition (`runnel_x_total`, `runnel_y_bucket`),
/// including those of a family declared by `# TYPE` with no samples yet: the replication
/// series are declared on every node but have samples only in cluster mode, and a query
/// naming them is right (it finds nothing on a single node).
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    for declared in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = declared.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// Every `runnel_…` metric name a file refers to.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("runnel_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn deploy_files() -> Vec<PathBuf> {
    let root = workspace_root().join("deploy");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("deploy/ exists") {
            let p = e.expect("readable").path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "json" || x == "yml" || x == "yaml")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn referenced_names_finds_metric_identifiers_only() {
    let names = referenced_names(
        r#"{"uid":"runnel-prometheus","expr":"sum(rate(runnel_produce_records_total{x=\"a\"}[1m])) / runnel_log_end_offset"}"#,
    );
    let want: BTreeSet<String> = ["runnel_produce_records_total", "runnel_log_end_offset"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    let exposed = exposed_names("# HELP runnel_a x\nrunnel_a_total{p=\"1\"} 3\nrunnel_b 1\n");
    assert!(exposed.contains("runnel_a_total") && exposed.contains("runnel_b"));
    let declared = exposed_names(
        "# TYPE runnel_c counter\n# TYPE runnel_d histogram\n# TYPE runnel_e gauge\n",
    );
    for name in [
        "runnel_c_total",
        "runnel_d_bucket",
        "runnel_d_count",
        "runnel_e",
    ] {
        assert!(declared.contains(name), "{name} in {declared:?}");
    }
    assert!(!declared.contains("runnel_c") && !declared.contains("runnel_d"));
}

#[test]
fn demo_dashboard_status_and_grafana_metrics() {
    let Some(bin) = runnel_bin() else {
        require(
            "the runnel binary",
            false,
            "cargo build --release -p runnel-broker",
        );
        return;
    };
    let (Some(node), Some(_chromium), Some(kcat)) = (
        require_tool("node"),
        require_tool("chromium"),
        require_tool("kcat"),
    ) else {
        return;
    };
    let js = workspace_root().join("tests/clients/js");
    if !require(
        "playwright-core in tests/clients/js",
        js.join("node_modules/playwright-core").is_dir(),
        "run .ci/install-clients.sh",
    ) {
        return;
    }
    let mut demo = Demo::start(&bin).expect("start runnel demo");
    assert!(
        demo.output().contains("Ctrl-C stops"),
        "banner: {}",
        demo.output()
    );

    // A consumer group with committed offsets, so the lag series exist.
    let group = run_client(
        Command::new(&kcat).args([
            "-b",
            &demo.kafka,
            "-G",
            "observability-check",
            "-X",
            "auto.commit.interval.ms=100",
            "-o",
            "beginning",
            "-e",
            "-q",
            "sensor_events",
        ]),
        Duration::from_secs(20),
    )
    .expect("run kcat");
    eprintln!(
        "kcat -G consumed {} bytes in {:.1?}",
        group.stdout.len(),
        group.elapsed
    );

    // The dashboard in a real browser.
    let artifacts = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let shot = artifacts.join("dashboard.png");
    let out = run_client(
        Command::new(&node)
            .current_dir(&js)
            .arg("dashboard_check.mjs")
            .arg(&demo.dashboard)
            .arg(&shot)
            .arg("150"),
        Duration::from_secs(200),
    )
    .expect("run dashboard_check.mjs");
    out.assert_success("dashboard_check.mjs in headless Chromium");
    let seen: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).expect("dashboard_check prints JSON");
    eprintln!("dashboard: {seen}");
    assert!(seen["new_alert_id"].is_string(), "{seen}");
    assert!(seen["window_rows"].as_u64().unwrap_or(0) >= 1, "{seen}");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot kept at {}",
        shot.display()
    );

    // `runnel status`, text and JSON.
    let status = run_client(
        Command::new(&bin).args(["status", "--http-addr", &demo.http]),
        Duration::from_secs(20),
    )
    .expect("run runnel status");
    status.assert_success("runnel status");
    for want in [
        "pipelines (1)",
        "sensors (running)",
        "sensor_events",
        "observability-check",
    ] {
        assert!(
            status.stdout.contains(want),
            "status lacks {want:?}:\n{}",
            status.stdout
        );
    }
    let json = run_client(
        Command::new(&bin).args(["status", "--json", "--http-addr", &demo.http]),
        Duration::from_secs(20),
    )
    .expect("run runnel status --json");
    json.assert_success("runnel status --json");
    let snap: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("status JSON");
    assert!(
        snap["pipelines"][0]["stats"]["records"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{snap}"
    );
    assert!(
        snap["pipelines"][0]["stats"]["alerts"]
            .as_u64()
            .unwrap_or(0)
            > 0
    );

    // Every metric that deploy/ queries is exported.
    let metrics = http_get(&demo.http, "/metrics").expect("GET /metrics");
    let exposed = exposed_names(&metrics);
    let mut checked = 0;
    for file in deploy_files() {
        let text = std::fs::read_to_string(&file).expect("read deploy file");
        for name in referenced_names(&text) {
            assert!(
                exposed.contains(&name),
                "{} queries {name}, which /metrics does not export; exported: {exposed:?}",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} metric references found in deploy/"
    );

    let said = demo.interrupt().expect("stop the demo");
    assert!(said.contains("data kept in"), "{said}");
    assert!(said.contains("events "), "no status line: {said}");
}
