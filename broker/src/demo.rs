//! `runnel demo`: a broker with the default sensor pipeline, the simulator feeding it over
//! gRPC, the dashboard's address, and a one-line live status, until Ctrl-C. The data
//! directory is kept for inspection afterwards.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::cli::ServeArgs;
use crate::dashboard::Snapshot;
use crate::tools::simulate::SimulateArgs;

/// Where the demo keeps its data unless told otherwise.
const DEMO_DATA_DIR: &str = "runnel-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Broker settings, as for `runnel serve` (the data directory defaults to ./runnel-demo)
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Simulated sensor readings per second
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Simulated devices
    #[arg(long, default_value_t = 100)]
    pub devices: u32,
    /// Simulator seed [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many seconds [default: run until Ctrl-C]
    #[arg(long)]
    pub duration: Option<u64>,
}

/// Parses simulator flags as `runnel simulate` would.
#[derive(Debug, Parser)]
struct SimulateCommand {
    #[command(flatten)]
    args: SimulateArgs,
}

/// Runs the demo until `stop` resolves (or `--duration` passes).
pub async fn run(args: DemoArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut config = args.serve.to_config()?;
    if args.serve.data_dir.is_none() {
        config.data_dir = PathBuf::from(DEMO_DATA_DIR);
    }
    let data_dir = config.data_dir.clone();
    let running = crate::server::start(config).await?;
    let grpc = running.grpc_addr.to_string();
    let http = running.http_addr;
    let mut sim = vec![
        "simulate".to_owned(),
        "--grpc-addr".into(),
        grpc.clone(),
        "--sources".into(),
        "sensors".into(),
        "--rate".into(),
        args.rate.to_string(),
        "--devices".into(),
        args.devices.to_string(),
        "--partitions".into(),
        "3".into(),
        "--quiet".into(),
    ];
    if let Some(seed) = args.seed {
        sim.extend(["--seed".into(), seed.to_string()]);
    }
    let sim = SimulateCommand::try_parse_from(sim)?.args;
    eprintln!(
        "Runnel demo\n  dashboard  http://{http}/\n  metrics    http://{http}/metrics\n  Kafka      {kafka}   (kcat -b {kafka} -C -t sensor_alerts)\n  gRPC       {grpc}\n  data       {data} (kept on exit)\nSimulating {devices} devices at {rate} readings/s; Ctrl-C stops.",
        kafka = running.kafka_addr,
        data = data_dir.display(),
        devices = args.devices,
        rate = args.rate,
    );
    let simulator = tokio::spawn(crate::tools::simulate::run(sim));
    let broker = running.broker.clone();
    let status = tokio::spawn(async move {
        let mut prev: Option<Snapshot> = None;
        let tty = std::io::stderr().is_terminal();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = broker.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || crate::dashboard::snapshot(&b)).await
            else {
                continue;
            };
            if let Some(before) = &prev {
                let line = status_line(before, &now);
                let mut err = std::io::stderr().lock();
                let _ = if tty {
                    write!(err, "\r\x1b[2K{line}")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
            prev = Some(now);
        }
    });
    let limit = async {
        match args.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = stop => {}
        () = limit => {}
        r = simulator => match r {
            Ok(Ok(())) => eprintln!("\nthe simulator finished"),
            Ok(Err(e)) => eprintln!("\nthe simulator stopped: {e:#}"),
            Err(e) => eprintln!("\nthe simulator stopped: {e}"),
        },
    }
    status.abort();
    eprintln!("\nstopping; data kept in {}", data_dir.display());
    running.shutdown().await;
    Ok(())
}

/// `events 500/s · alerts 1.2/s · late 0.4/s · dlq 2.1/s · lag 0 · windows 100`, from two
/// snapshots a moment apart.
pub fn status_line(before: &Snapshot, now: &Snapshot) -> String {
    let dt_ms = now.now_ms.saturating_sub(before.now_ms).max(1);
    let per_s = |a: i64, b: i64| -> f64 {
        // Counts and intervals far below 2^53: exact in f64.
        let d = u32::try_from(b.saturating_sub(a).max(0)).unwrap_or(u32::MAX);
        f64::from(d) * 1000.0 / f64::from(u32::try_from(dt_ms).unwrap_or(u32::MAX))
    };
    let sum = |s: &Snapshot, f: &dyn Fn(&crate::dashboard::PipelineSummary) -> i64| {
        s.pipelines.iter().map(f).fold(0_i64, i64::saturating_add)
    };
    let count = |s: &Snapshot, f: &dyn Fn(&runnel_processor::pipeline::Stats) -> u64| {
        sum(s, &|p| {
            i64::try_from(f(&p.status.stats)).unwrap_or(i64::MAX)
        })
    };
    let events = per_s(
        sum(before, &|p| p.source_high_watermark),
        sum(now, &|p| p.source_high_watermark),
    );
    let alerts = per_s(count(before, &|s| s.alerts), count(now, &|s| s.alerts));
    let late = per_s(count(before, &|s| s.late), count(now, &|s| s.late));
    let dlq = per_s(count(before, &|s| s.dlq), count(now, &|s| s.dlq));
    let lag = sum(now, &|p| p.input_lag);
    let windows = now
        .pipelines
        .iter()
        .map(|p| p.status.windows_open)
        .fold(0_u64, u64::saturating_add);
    let latency = now
        .pipelines
        .iter()
        .find_map(|p| p.alert_latency_p99_ms)
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
    format!(
        "events {events:.0}/s · alerts {alerts:.1}/s · late {late:.1}/s · dlq {dlq:.1}/s · lag {lag} · windows {windows} · alert p99 {latency}"
    )
}
