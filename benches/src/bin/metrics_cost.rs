//! Metrics overhead, measured directly: the CPU time the broker's per-request recording adds
//! to one Kafka Produce request (`Metrics::kafka_request` + `Metrics::produced`, exactly the
//! calls the produce path makes), with recording on and off, from 1 or more threads at once.
//!
//! `benches/metrics_overhead.sh` multiplies this by the number of Produce requests a real run
//! served and divides by the broker's CPU time in that run: the share of the broker's CPU
//! that recording costs, without the run-to-run noise of a throughput comparison.

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use runnel_broker::metrics::Metrics;

#[derive(Parser)]
#[command(about = "ns of CPU per Produce request spent recording metrics (on vs off)")]
struct Args {
    /// Produce requests recorded per thread and mode.
    #[arg(long, default_value_t = 5_000_000)]
    requests: u64,
    /// Threads recording at once into the same series (the broker's connections do).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Distinct partitions the requests go to (label sets).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
}

/// Records `n` Produce requests the way the produce path does; returns ns per request.
fn record(metrics: &Metrics, n: u64, partitions: i32) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let partition = i32::try_from(i % u64::from(partitions.unsigned_abs())).unwrap_or(0);
        metrics.produced(
            black_box("bench"),
            partition,
            black_box(1000),
            black_box(100_000),
        );
        metrics.kafka_request(black_box("Produce"), black_box(0.000_2));
    }
    let ns = started.elapsed().as_secs_f64() * 1e9;
    // u64 → f64 loses nothing below 2^53 requests.
    ns / f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Mean ns per request over `threads` threads recording into one `Metrics` at once.
fn run(recording: bool, args: &Args) -> f64 {
    let metrics = Metrics::new(recording);
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.threads)
            .map(|_| s.spawn(|| record(&metrics, args.requests, args.partitions.max(1))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f64::NAN))
            .collect()
    });
    let threads = f64::from(u32::try_from(per_thread.len()).unwrap_or(1));
    per_thread.iter().sum::<f64>() / threads
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.requests > 0 && args.threads > 0,
        "requests and threads must be > 0"
    );
    anyhow::ensure!(
        args.requests < u64::from(u32::MAX),
        "requests must be < 2^32"
    );
    // Warm up (label sets created, caches hot), then alternate to spread drift.
    run(true, &args);
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..3 {
        on.push(run(true, &args));
        off.push(run(false, &args));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut on), median(&mut off));
    println!(
        "recording on: {on:.1} ns per Produce request, off: {off:.1} ns, cost: {:.1} ns \
         ({} threads, {} partitions, {} requests per thread and run, median of 3)",
        on - off,
        args.threads,
        args.partitions,
        args.requests
    );
    Ok(())
}
