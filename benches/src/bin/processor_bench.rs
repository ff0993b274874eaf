//! Processor benchmark (BENCHMARKS.md, "Processor"): the default sensor pipeline's events/s —
//! wall clock and per CPU-second of the processing process — embedded (`runnel serve` with
//! the processor on) and standalone (`runnel process --bootstrap`), over a source topic
//! preloaded while no processor ran, with JSON or protobuf readings; publish → alert latency
//! at a fixed publish rate; and the state size and checkpoint time for many devices.
//!
//! Everything runs against release binaries on 127.0.0.1 in a fresh directory per run.
//! CPU time is utime + stime from /proc/PID/stat, so the per-CPU-second figures hold on a
//! busy machine where wall-clock rates do not.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use prost::Message;
use runnel_benches::{due, ms, percentile};
use runnel_broker::codec::builder::Record;
use runnel_broker::kafka_client::fetch::decode_fetched;
use runnel_broker::kafka_client::{produce::encode_batches, Client, ClientConfig};
use runnel_client::simulate::rng::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Source partitions (the built-in pipeline expects 3).
const PARTITIONS: i32 = 3;
/// Records per produced batch.
const BATCH_RECORDS: usize = 500;

#[derive(Parser)]
#[command(about = "Sensor-pipeline processor benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Preload N readings with the processor off, then process them all and time it.
    Throughput(ThroughputArgs),
    /// Publish readings at a fixed rate to a broker with the processor on; time alerts.
    Latency(LatencyArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Embedded,
    Standalone,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Protobuf,
}

#[derive(clap::Args)]
struct Common {
    /// The `runnel` binary (release build).
    #[arg(long, default_value = "target/release/runnel")]
    runnel: PathBuf,
    /// Working directory (wiped first).
    #[arg(long, default_value = "/tmp/runnel-processor-bench")]
    dir: PathBuf,
    /// Distinct devices.
    #[arg(long, default_value_t = 10_000)]
    devices: u64,
    /// One reading in this many is a spike over the temperature threshold (0: none).
    #[arg(long, default_value_t = 1000)]
    spike_every: u64,
}

#[derive(clap::Args)]
struct ThroughputArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value = "embedded")]
    mode: Mode,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Readings preloaded (device d reports once per event-time second).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Give up after this many seconds of processing.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

#[derive(clap::Args)]
struct LatencyArgs {
    #[command(flatten)]
    common: Common,
    /// Readings per second, over all partitions.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds at the start whose alerts are left out of the percentiles.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Publish tick: every tick each partition's producer sends what is due.
    #[arg(long, default_value_t = 5)]
    tick_ms: u64,
}

/// A count as f64 (counts here stay far below 2^32).
fn count(n: u64) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The pipeline under test: the built-in one for JSON, the same windows and rules over
/// protobuf `SensorReading`s for protobuf (as examples/pipelines.toml).
struct PipelineSpec {
    name: &'static str,
    source: &'static str,
    alerts: &'static str,
    toml: &'static str,
}

fn pipeline(format: Format) -> PipelineSpec {
    match format {
        Format::Json => PipelineSpec {
            name: "sensors",
            source: "sensor_events",
            alerts: "sensor_alerts",
            toml: "",
        },
        Format::Protobuf => PipelineSpec {
            name: "sensors_pb",
            source: "sensor_readings_pb",
            alerts: "sensor_pb_alerts",
            toml: r#"
[[processor.pipelines]]
name = "sensors_pb"

[processor.pipelines.source]
topics = ["sensor_readings_pb"]
format = "protobuf"

[processor.pipelines.outputs]
aggregates = { topic = "sensor_pb_aggregates" }
alerts = { topic = "sensor_pb_alerts" }
late = { topic = "sensor_pb_late" }
dlq = { topic = "sensor_pb_dlq" }
"#,
        },
    }
}

fn write_config(path: &Path, processor_on: bool, spec: &PipelineSpec) -> Result<()> {
    let text = format!("[processor]\nenabled = {processor_on}\n{}", spec.toml);
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A running `runnel serve`.
struct Broker {
    child: Child,
    kafka: SocketAddr,
    http: SocketAddr,
}

impl Broker {
    fn start(bin: &Path, dir: &Path, config: &Path, kafka_port: u16) -> Result<Self> {
        let kafka: SocketAddr = format!("127.0.0.1:{kafka_port}").parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--kafka-addr")
            .arg(kafka.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child, kafka, http })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait()? {
                bail!("broker exited: {st}");
            }
            if scrape(self.http).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("broker not ready after 60 s")
    }
}

/// SIGTERM, then wait (a clean shutdown checkpoints).
fn stop(child: &mut Child) -> Result<()> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// The `/metrics` text.
async fn scrape(http: SocketAddr) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(http).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200") => Ok(body.to_owned()),
        _ => bail!("bad /metrics answer"),
    }
}

/// The value of a sample `name{...pipeline="p"...}` (or unlabelled `name`).
fn sample(text: &str, name: &str, pipeline: &str) -> Option<f64> {
    let label = format!("pipeline=\"{pipeline}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                rest.starts_with(' ') || (rest.starts_with('{') && rest.contains(&label))
            })
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A histogram of one pipeline: cumulative (upper bound s, count), sum, count.
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Hist {
    fn parse(text: &str, name: &str, pipeline: &str) -> Option<Self> {
        let label = format!("pipeline=\"{pipeline}\"");
        let prefix = format!("{name}_bucket{{");
        let mut buckets = Vec::new();
        for l in text
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(&label))
        {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let c: f64 = l.rsplit(' ').next()?.parse().ok()?;
            buckets.push((le, c));
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Self {
            buckets,
            sum: sample(text, &format!("{name}_sum"), pipeline)?,
            count: sample(text, &format!("{name}_count"), pipeline)?,
        })
    }

    /// The upper bound of the bucket holding the `q` quantile (0..1), in ms.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let want = (self.count * q).ceil().max(1.0);
        self.buckets
            .iter()
            .find(|(_, c)| *c >= want)
            .map(|(le, _)| le * 1000.0)
    }

    fn describe(&self) -> String {
        if self.count == 0.0 {
            return "no samples".into();
        }
        format!(
            "n={} mean={:.2} ms p50<={:.2} ms p99<={:.2} ms max-bucket<={:.2} ms",
            self.count,
            self.sum / self.count * 1000.0,
            self.quantile_ms(0.5).unwrap_or(f64::NAN),
            self.quantile_ms(0.99).unwrap_or(f64::NAN),
            self.quantile_ms(1.0).unwrap_or(f64::NAN),
        )
    }
}

/// CPU seconds (utime + stime) of a process.
fn cpu_seconds(pid: u32, tick: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(stat_ticks(&stat)? / tick)
}

/// utime + stime, in clock ticks, of a /proc/PID/stat line.
fn stat_ticks(stat: &str) -> Result<f64> {
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One reading's value: JSON like the simulator's sensor readings, or a protobuf
/// `runnel.v1.SensorReading`. A spike is over the built-in temperature threshold (85 °C).
fn reading(format: Format, rng: &mut Rng, device: u64, ts_ms: i64, spike: bool) -> Vec<u8> {
    let temp = if spike {
        95.0 + rng.unit() * 5.0
    } else {
        60.0 + rng.unit() * 10.0
    };
    let temp = (temp * 100.0).round() / 100.0;
    let vib = (0.05 + rng.unit() * 0.1) * 1000.0;
    let vib = vib.round() / 1000.0;
    let status = if spike { "WARN" } else { "OK" };
    let site = ["fab1", "fab2", "fab3"][usize::try_from(device % 3).unwrap_or(0)];
    let line = format!("L{:02}", 1 + (device / 3) % 8);
    let id = format!("MTR-{device:06}");
    match format {
        Format::Json => format!(
            "{{\"device_id\":\"{id}\",\"ts\":{ts_ms},\"temperature_c\":{temp},\"vibration_g\":{vib},\"status\":\"{status}\",\"site\":\"{site}\",\"line\":\"{line}\"}}"
        )
        .into_bytes(),
        Format::Protobuf => runnel_proto::v1::SensorReading {
            device_id: id,
            event_time: Some(prost_types::Timestamp {
                seconds: ts_ms.div_euclid(1000),
                nanos: i32::try_from(ts_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
            }),
            temperature_c: temp,
            vibration_g: vib,
            status: status.into(),
            site: site.into(),
            line,
        }
        .encode_to_vec(),
    }
}

fn partition_of(device: u64) -> i32 {
    i32::try_from(device % 3).unwrap_or(0)
}

fn client(kafka: SocketAddr) -> Client {
    Client::new(ClientConfig::new(&kafka.to_string()))
}

/// Preloads `events` readings: event second s carries one reading of every device, spread
/// over the second; device d goes to partition d % 3.
async fn preload(kafka: SocketAddr, a: &ThroughputArgs, topic: &str) -> Result<()> {
    let c = a.common.devices.max(1);
    // Event time starts on a minute (the built-in window size), so a run of a given size
    // closes the same windows whenever it runs.
    let start_ts = runnel_broker::processing::unix_now_ms()
        - i64::try_from(a.events / c + 120)?.saturating_mul(1000);
    let start_ts = start_ts - start_ts.rem_euclid(60_000);
    let mut tasks = Vec::new();
    for p in 0..PARTITIONS {
        let (events, format, spike_every, topic) =
            (a.events, a.format, a.common.spike_every, topic.to_owned());
        tasks.push(tokio::spawn(async move {
            let cl = client(kafka);
            let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ u64::try_from(p + 1).unwrap_or(1));
            let mut buf = Vec::with_capacity(BATCH_RECORDS);
            for k in 0..events {
                let d = k % c;
                if partition_of(d) != p {
                    continue;
                }
                let s = i64::try_from(k / c).unwrap_or(0);
                let off = i64::try_from(d * 1000 / c).unwrap_or(0);
                let ts = start_ts + s * 1000 + off;
                let spike = spike_every > 0 && k % spike_every == spike_every - 1;
                buf.push(Record {
                    key: Some(format!("MTR-{d:06}").into_bytes()),
                    value: Some(reading(format, &mut rng, d, ts, spike)),
                    headers: vec![],
                    timestamp: runnel_broker::processing::unix_now_ms(),
                });
                if buf.len() == BATCH_RECORDS * 4 {
                    for b in encode_batches(&buf, BATCH_RECORDS, 900 * 1024) {
                        cl.produce(&topic, p, b).await?;
                    }
                    buf.clear();
                }
            }
            for b in encode_batches(&buf, BATCH_RECORDS, 900 * 1024) {
                cl.produce(&topic, p, b).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Input records a pipeline has taken, from its journal (each entry names the offset
/// ranges of one step): the sum over partitions of the highest end offset seen.
struct JournalWatch {
    client: Client,
    topic: String,
    next: i64,
    ends: BTreeMap<(String, u32), i64>,
}

#[derive(serde::Deserialize)]
struct StepEntry {
    ranges: Vec<(String, u32, i64, i64)>,
}

impl JournalWatch {
    fn new(kafka: SocketAddr, pipeline: &str) -> Self {
        // The journal topic appears once the pipeline starts: ask for metadata often so the
        // watch does not wait out a cached "no such topic".
        let mut config = ClientConfig::new(&kafka.to_string());
        config.metadata_max_age = Duration::from_millis(100);
        Self {
            client: Client::new(config),
            topic: format!("__runnel_journal.{pipeline}"),
            next: 0,
            ends: BTreeMap::new(),
        }
    }

    async fn consumed(&mut self) -> u64 {
        loop {
            let Ok(Some(part)) = self.client.fetch(&self.topic, 0, self.next, 0).await else {
                break;
            };
            let hw = part.high_watermark;
            let Ok(d) = decode_fetched(part.records, self.next, hw, usize::MAX) else {
                break;
            };
            let moved = d.next_offset > self.next;
            for r in &d.records {
                let Some(v) = &r.value else { continue };
                if let Ok(e) = serde_json::from_slice::<StepEntry>(v) {
                    for (t, p, _, end) in e.ranges {
                        let slot = self.ends.entry((t, p)).or_insert(0);
                        *slot = (*slot).max(end);
                    }
                }
            }
            self.next = d.next_offset;
            if !moved || self.next >= hw {
                break;
            }
        }
        self.ends
            .values()
            .map(|v| u64::try_from(*v).unwrap_or(0))
            .sum()
    }
}

async fn throughput(a: ThroughputArgs) -> Result<()> {
    let tick = clock_tick();
    let spec = pipeline(a.format);
    let dir = &a.common.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let off_cfg = dir.join("off.toml");
    let on_cfg = dir.join("on.toml");
    write_config(&off_cfg, false, &spec)?;
    write_config(&on_cfg, true, &spec)?;
    let port = free_port()?;
    let mut broker = Broker::start(&a.common.runnel, dir, &off_cfg, port)?;
    broker.wait_ready().await?;
    client(broker.kafka)
        .ensure_topic(spec.source, u32::try_from(PARTITIONS)?)
        .await?;
    let t = Instant::now();
    preload(broker.kafka, &a, spec.source).await?;
    let load_s = t.elapsed().as_secs_f64();
    let data_bytes = dir_bytes(&dir.join("data").join("topics").join(spec.source));
    println!(
        "preloaded {} {} readings from {} devices into {} ({} partitions) in {load_s:.1} s ({:.0}/s); source log {} bytes",
        a.events,
        match a.format {
            Format::Json => "JSON",
            Format::Protobuf => "protobuf",
        },
        a.common.devices,
        spec.source,
        PARTITIONS,
        count(a.events) / load_s,
        data_bytes
    );

    let (mut proc_child, state_dir, started) = match a.mode {
        Mode::Embedded => {
            stop(&mut broker.child)?;
            let started = Instant::now();
            broker = Broker::start(&a.common.runnel, dir, &on_cfg, port)?;
            broker.wait_ready().await?;
            println!(
                "embedded: broker up with the processor on after {:.2} s, {:.2} CPU-s",
                started.elapsed().as_secs_f64(),
                cpu_seconds(broker.child.id(), tick)?
            );
            (
                None,
                dir.join("data").join("processor").join(spec.name),
                started,
            )
        }
        Mode::Standalone => {
            let state = dir.join("process-state");
            let log = std::fs::File::create(dir.join("process.log"))?;
            let started = Instant::now();
            let child = Command::new(&a.common.runnel)
                .arg("process")
                .arg("--bootstrap")
                .arg(broker.kafka.to_string())
                .arg("--config")
                .arg(&on_cfg)
                .arg("--state-dir")
                .arg(&state)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            (Some(child), state.join(spec.name), started)
        }
    };
    let broker_cpu0 = cpu_seconds(broker.child.id(), tick)?;
    let proc_pid = proc_child.as_ref().map_or(broker.child.id(), Child::id);
    let mut watch = JournalWatch::new(broker.kafka, spec.name);
    let deadline = started + Duration::from_secs(a.timeout_s);
    let mut last_print = Instant::now();
    loop {
        let n = watch.consumed().await;
        if n >= a.events {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {} consumed after {} s", a.events, a.timeout_s);
        }
        if let Some(c) = proc_child.as_mut() {
            if let Some(st) = c.try_wait()? {
                bail!("runnel process exited: {st}");
            }
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!(
                "  ... {n} consumed at {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let proc_cpu = cpu_seconds(proc_pid, tick)?;
    let broker_cpu = cpu_seconds(broker.child.id(), tick)? - broker_cpu0;
    let ev = count(a.events);
    println!(
        "{} {}: {} events in {wall:.2} s wall = {:.0} events/s; processing process {proc_cpu:.2} CPU-s = {:.0} events per CPU-second",
        match a.mode {
            Mode::Embedded => "embedded",
            Mode::Standalone => "standalone",
        },
        match a.format {
            Format::Json => "JSON",
            Format::Protobuf => "protobuf",
        },
        a.events,
        ev / wall,
        ev / proc_cpu,
    );
    if a.mode == Mode::Standalone {
        println!(
            "  broker serving it: {broker_cpu:.2} CPU-s; processor + broker: {:.0} events per CPU-second",
            ev / (proc_cpu + broker_cpu)
        );
    }
    // Let the pipeline finish its last step and checkpoint, then read what it reports.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if a.mode == Mode::Embedded {
        let m = scrape(broker.http).await?;
        for name in [
            "runnel_processor_events_total",
            "runnel_processor_windows_open",
            "runnel_processor_window_results_total",
            "runnel_processor_late_events_total",
            "runnel_processor_dead_letters_total",
        ] {
            println!(
                "  {name} = {}",
                sample(&m, name, spec.name).map_or("-".into(), |v| v.to_string())
            );
        }
        if let Some(h) = Hist::parse(
            &m,
            "runnel_processor_checkpoint_duration_seconds",
            spec.name,
        ) {
            println!("  checkpoint duration: {}", h.describe());
        }
    }
    println!(
        "  state dir {} while running: {} bytes",
        state_dir.display(),
        dir_bytes(&state_dir)
    );
    if let Some(c) = proc_child.as_mut() {
        stop(c)?;
    }
    stop(&mut broker.child)?;
    println!(
        "  state dir after a clean stop: {} bytes",
        dir_bytes(&state_dir)
    );
    Ok(())
}

async fn latency(a: LatencyArgs) -> Result<()> {
    let tick = clock_tick();
    let spec = pipeline(Format::Json);
    let dir = &a.common.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let cfg = dir.join("on.toml");
    write_config(&cfg, true, &spec)?;
    let mut broker = Broker::start(&a.common.runnel, dir, &cfg, free_port()?)?;
    broker.wait_ready().await?;
    client(broker.kafka)
        .ensure_topic(spec.source, u32::try_from(PARTITIONS)?)
        .await?;
    // The pipeline creates its outputs once it sees the source.
    let alerts_client = client(broker.kafka);
    let deadline = Instant::now() + Duration::from_secs(30);
    while alerts_client.partition_count(spec.alerts).await?.is_none() {
        if Instant::now() > deadline {
            bail!("{} not created by the pipeline", spec.alerts);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let start = Instant::now();
    let start_ms = runnel_broker::processing::unix_now_ms();
    let warm_until = start_ms + i64::try_from(a.warmup_s * 1000)?;
    let stop_consuming = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // End to end: an alert's record timestamp is its triggering reading's, which the
    // producer set to the wall clock when it built the batch.
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let consumer = {
        let (lat, stop, topic) = (lat.clone(), stop_consuming.clone(), spec.alerts.to_owned());
        tokio::spawn(async move {
            let mut next = 0i64;
            let mut total = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(part)) = alerts_client.fetch(&topic, 0, next, 100).await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let got = runnel_broker::processing::unix_now_ms();
                let hw = part.high_watermark;
                let Ok(d) = decode_fetched(part.records, next, hw, usize::MAX) else {
                    continue;
                };
                next = d.next_offset;
                for r in &d.records {
                    total += 1;
                    if r.timestamp >= warm_until {
                        let ms = u64::try_from(got.saturating_sub(r.timestamp)).unwrap_or(0);
                        if let Ok(mut v) = lat.lock() {
                            v.push(Duration::from_millis(ms));
                        }
                    }
                }
            }
            total
        })
    };

    let broker_cpu0 = cpu_seconds(broker.child.id(), tick)?;
    let per_part = a.rate / u64::try_from(PARTITIONS)?;
    let total = per_part * a.seconds;
    let c = a.common.devices.max(1);
    let mut producers = Vec::new();
    for p in 0..PARTITIONS {
        let (kafka, spike_every, tick_ms) = (broker.kafka, a.common.spike_every, a.tick_ms);
        let topic = spec.source.to_owned();
        producers.push(tokio::spawn(async move {
            let cl = client(kafka);
            let mut rng = Rng::new(0xD1B5_4A32_D192_ED03 ^ u64::try_from(p + 7).unwrap_or(7));
            let devices: Vec<u64> = (0..c).filter(|d| partition_of(*d) == p).collect();
            let mut sent = 0u64;
            let mut interval = tokio::time::interval(Duration::from_millis(tick_ms));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while sent < total {
                interval.tick().await;
                let elapsed = start.elapsed();
                let mut recs = Vec::new();
                let ts = runnel_broker::processing::unix_now_ms();
                while sent < total && due(sent, per_part) <= elapsed {
                    let d = devices
                        .get(usize::try_from(sent).unwrap_or(0) % devices.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    let spike = spike_every > 0 && sent % spike_every == spike_every - 1;
                    recs.push(Record {
                        key: Some(format!("MTR-{d:06}").into_bytes()),
                        value: Some(reading(Format::Json, &mut rng, d, ts, spike)),
                        headers: vec![],
                        timestamp: ts,
                    });
                    sent += 1;
                }
                for b in encode_batches(&recs, 5000, 900 * 1024) {
                    cl.produce(&topic, p, b).await?;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for t in producers {
        sent += t.await??;
    }
    let pub_s = start.elapsed().as_secs_f64();
    // Give the last windows' alerts time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let broker_cpu = cpu_seconds(broker.child.id(), tick)? - broker_cpu0;
    let wall = start.elapsed().as_secs_f64();
    stop_consuming.store(true, std::sync::atomic::Ordering::Relaxed);
    let alerts = consumer.await?;
    let mut v = lat.lock().map(|v| v.clone()).unwrap_or_default();
    v.sort();
    println!(
        "published {sent} readings in {pub_s:.2} s = {:.0}/s (target {}), {} devices, 1 in {} a spike",
        count(sent) / pub_s,
        a.rate,
        a.common.devices,
        a.common.spike_every
    );
    println!(
        "broker (processor embedded) used {broker_cpu:.2} CPU-s over {wall:.2} s = {:.2} cores",
        broker_cpu / wall
    );
    println!(
        "alerts read: {alerts}; end to end (publish → alert fetched from {}), after {} s warmup, n={}: p50 {} ms, p99 {} ms, max {} ms",
        spec.alerts,
        a.warmup_s,
        v.len(),
        percentile(&v, 50).map_or("-".into(), |d| format!("{:.0}", ms(d))),
        percentile(&v, 99).map_or("-".into(), |d| format!("{:.0}", ms(d))),
        v.last().map_or("-".into(), |d| format!("{:.0}", ms(*d))),
    );
    let m = scrape(broker.http).await?;
    if let Some(h) = Hist::parse(&m, "runnel_processor_alert_latency_seconds", spec.name) {
        println!(
            "runnel_processor_alert_latency_seconds (whole run): {}",
            h.describe()
        );
    }
    if let Some(h) = Hist::parse(
        &m,
        "runnel_processor_checkpoint_duration_seconds",
        spec.name,
    ) {
        println!("checkpoint duration: {}", h.describe());
    }
    stop(&mut broker.child)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Throughput(a) => throughput(a).await,
        Cmd::Latency(a) => latency(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE runnel_processor_events counter
runnel_processor_events_total{pipeline=\"other\"} 5
runnel_processor_events_total{pipeline=\"sensors\"} 1200
runnel_processor_alert_latency_seconds_sum{pipeline=\"sensors\"} 0.03
runnel_processor_alert_latency_seconds_count{pipeline=\"sensors\"} 4
runnel_processor_alert_latency_seconds_bucket{le=\"0.002\",pipeline=\"sensors\"} 1
runnel_processor_alert_latency_seconds_bucket{le=\"0.001\",pipeline=\"sensors\"} 0
runnel_processor_alert_latency_seconds_bucket{le=\"0.004\",pipeline=\"sensors\"} 3
runnel_processor_alert_latency_seconds_bucket{le=\"+Inf\",pipeline=\"sensors\"} 4
";

    #[test]
    fn samples_are_read_for_the_named_pipeline() {
        assert_eq!(
            sample(METRICS, "runnel_processor_events_total", "sensors"),
            Some(1200.0)
        );
        assert_eq!(
            sample(METRICS, "runnel_processor_events_total", "nope"),
            None
        );
    }

    #[test]
    fn histogram_quantiles_are_bucket_upper_bounds() {
        let h = Hist::parse(METRICS, "runnel_processor_alert_latency_seconds", "sensors")
            .expect("histogram");
        assert_eq!(h.count, 4.0);
        assert_eq!(h.quantile_ms(0.25), Some(2.0));
        assert_eq!(h.quantile_ms(0.5), Some(4.0));
        assert_eq!(h.quantile_ms(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn stat_fields_after_a_command_with_spaces() {
        let line = "42 (tokio worker) S 1 42 42 0 -1 4194304 10 0 0 0 250 31 0 0 20 0 9 0";
        assert_eq!(stat_ticks(line).expect("parsed"), 281.0);
    }

    #[test]
    fn readings_parse_as_what_the_pipeline_expects() {
        let mut rng = Rng::new(7);
        let j = reading(Format::Json, &mut rng, 12, 1_700_000_000_123, true);
        let v: serde_json::Value = serde_json::from_slice(&j).expect("json");
        assert_eq!(v["device_id"], "MTR-000012");
        assert_eq!(v["ts"], 1_700_000_000_123_i64);
        assert!(v["temperature_c"].as_f64().expect("number") > 85.0);
        let p = reading(Format::Protobuf, &mut rng, 12, 1_700_000_000_123, false);
        let r = runnel_proto::v1::SensorReading::decode(p.as_slice()).expect("protobuf");
        assert_eq!(r.device_id, "MTR-000012");
        assert_eq!(r.event_time.map(|t| t.nanos), Some(123_000_000));
        assert!(r.temperature_c < 85.0);
    }
}
