//! gRPC publish benchmark: streams `--records` records of `--size` bytes to a Runnel broker
//! through the Rust client's batching [`Publisher`] (one `PublishStream`), unpaced or paced at
//! `--rate` records/s, and prints one markdown table row: achieved records/s and MB/s (payload
//! bytes / 10^6, from the first send to the last acknowledgement) and the publish→acknowledge
//! latency p50 / p99 / max (from just before `Publisher::send` to the record's acknowledgement).
//!
//! Records are keyless (the broker spreads them round-robin over the topic's partitions) with a
//! broker timestamp. `--warmup` records are sent and flushed first and not counted. Pacing uses
//! tokio's timer (1 ms resolution): at 2000 records/s two records leave per millisecond.
//!
//! Usage: grpc_bench --addr 127.0.0.1:9093 --topic T [--create --partitions 1] --records N
//!        --size BYTES [--rate R] [--linger-ms 5] [--acks all|leader] [--header]

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use runnel_benches::{due, ms, percentile};
use runnel_client::{v1, Client, Delivery, Publisher, PublisherConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "gRPC streaming publish throughput and publish->ack latency")]
struct Args {
    /// The broker's gRPC address.
    #[arg(long, default_value = "127.0.0.1:9093")]
    addr: String,
    #[arg(long, default_value = "grpc-bench")]
    topic: String,
    /// Create the topic first (with --partitions partitions).
    #[arg(long)]
    create: bool,
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Records to measure.
    #[arg(long, default_value_t = 1_000_000)]
    records: u32,
    /// Value bytes per record (no key, no headers).
    #[arg(long, default_value_t = 100)]
    size: u32,
    /// Records per second; 0 sends as fast as the publisher's window allows.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// The publisher's linger time.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Most records per batch.
    #[arg(long, default_value_t = 500)]
    batch_records: usize,
    /// Most unacknowledged batches on the stream.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// `all` (acknowledged after fsync) or `leader` (after the append).
    #[arg(long, default_value = "all")]
    acks: String,
    /// Records sent and flushed before measuring.
    #[arg(long, default_value_t = 1000)]
    warmup: u32,
    /// Print the table header first.
    #[arg(long)]
    header: bool,
}

/// What the acknowledgement collector saw.
struct Acked {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    last_ack: Option<Instant>,
}

/// Awaits deliveries in send order (acknowledgements arrive in order) and times each.
async fn collect(mut rx: mpsc::Receiver<(Instant, Delivery)>, expected: usize) -> Acked {
    let mut acked = Acked {
        latencies: Vec::with_capacity(expected),
        errors: 0,
        first_error: None,
        last_ack: None,
    };
    while let Some((sent, delivery)) = rx.recv().await {
        let outcome = delivery.await;
        let now = Instant::now();
        acked.last_ack = Some(now);
        match outcome {
            Ok(_) => acked.latencies.push(now - sent),
            Err(e) => {
                acked.errors += 1;
                acked.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    acked
}

fn record(payload: &[u8]) -> v1::Record {
    v1::Record {
        key: None,
        value: Some(payload.to_vec()),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}

async fn warm_up(publisher: &Publisher, payload: &[u8], n: u32) -> Result<()> {
    let mut deliveries = Vec::new();
    for _ in 0..n {
        deliveries.push(publisher.send(record(payload)).await?);
    }
    publisher.flush().await?;
    for d in deliveries {
        d.await.context("warm-up record not delivered")?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let acks = match args.acks.as_str() {
        "all" => v1::Acks::All,
        "leader" => v1::Acks::Leader,
        other => bail!("--acks {other}: expected all or leader"),
    };
    let client = Client::connect(&args.addr)
        .await
        .with_context(|| format!("connect to {}", args.addr))?;
    if args.create {
        client
            .create_topic(&args.topic, args.partitions)
            .await
            .with_context(|| format!("create topic {}", args.topic))?;
    }
    let mut config = PublisherConfig::new(&args.topic);
    config.linger = Duration::from_millis(args.linger_ms);
    config.max_batch_records = args.batch_records;
    config.max_in_flight = args.in_flight;
    config.acks = acks;
    let publisher = client.publisher(config);
    let size = usize::try_from(args.size).context("--size")?;
    let payload: Vec<u8> = (0..=255u8).cycle().take(size).collect();
    warm_up(&publisher, &payload, args.warmup).await?;

    let expected = usize::try_from(args.records).context("--records")?;
    let (tx, rx) = mpsc::channel(65_536);
    let collector = tokio::spawn(collect(rx, expected));
    let start = Instant::now();
    for i in 0..args.records {
        if args.rate > 0 {
            tokio::time::sleep_until(start + due(u64::from(i), u64::from(args.rate))).await;
        }
        let sent = Instant::now();
        let delivery = publisher.send(record(&payload)).await?;
        if tx.send((sent, delivery)).await.is_err() {
            bail!("the acknowledgement collector stopped");
        }
    }
    let sent_all = start.elapsed();
    drop(tx);
    publisher.close().await?;
    let mut acked = collector.await.context("acknowledgement collector")?;
    let elapsed = acked.last_ack.map_or(sent_all, |t| t - start);
    acked.latencies.sort_unstable();

    let secs = elapsed.as_secs_f64();
    let rps = f64::from(args.records) / secs;
    let mbs = rps * f64::from(args.size) / 1e6;
    let pct =
        |p| percentile(&acked.latencies, p).map_or("-".to_owned(), |d| format!("{:.3}", ms(d)));
    let mode = if args.rate > 0 {
        format!("paced {} rec/s", args.rate)
    } else {
        "unpaced".to_owned()
    };
    if args.header {
        println!(
            "| record | records | mode | acks | batching | rec/s | MB/s | p50 ms | p99 ms | max ms | failed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {} B | {} | {mode} | {} | linger {} ms, ≤ {} rec/batch | {rps:.0} | {mbs:.2} | {} | {} | {} | {} |",
        args.size,
        args.records,
        args.acks,
        args.linger_ms,
        args.batch_records,
        pct(50),
        pct(99),
        pct(100),
        acked.errors
    );
    if let Some(e) = acked.first_error {
        eprintln!("first failed delivery: {e}");
    }
    Ok(())
}
