//! Produce latency probe (issue 2): one Kafka connection, one record per Produce request, sent
//! at a fixed rate by a plain blocking writer thread, answers read by a second thread (a lean
//! client: no client-side queue, batching thread or timer between the call and the socket).
//! Up to `--max-in-flight` requests are outstanding, as with a pipelining client. Latency is
//! measured from when each request was *due*, so a slow answer that holds back later
//! requests counts against them too (no coordinated omission), and also as service time
//! (written → answer read).
//!
//! `produce_latency --bootstrap 127.0.0.1:9092 --topic t --acks -1 --rate 2000 --seconds 10`
//! prints one line of p50/p90/p99/p99.9/max. The topic must exist; works against any broker
//! that takes Produce v3+ (Runnel, the librdkafka mock). With several bootstrap addresses (a
//! cluster), the partition's leader is looked up with Metadata first (and waited for, up to
//! 30 s) and the probe connects to it; a leader change during the run ends it with an error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use kafka_protocol::messages::{MetadataRequest, ProduceRequest};
use kafka_protocol::protocol::StrBytes;
use runnel_benches::{due, latency_summary};
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use runnel_broker::kafka_client::connection::{decode_response, encode_request};
use runnel_broker::kafka_client::metadata::{self, TopicState};
use runnel_broker::kafka_client::produce;

#[derive(Parser)]
#[command(about = "Produce latency at a fixed rate over one connection, one record per request")]
struct Args {
    /// Broker address (host:port), which must lead the partition; or a comma-separated list
    /// of a cluster's addresses, in which case the partition's leader is found with Metadata.
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// 1 (leader append) or -1 (all: Runnel answers after the fsync).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
    /// Requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Produce version to send.
    #[arg(long, default_value_t = 7)]
    version: i16,
    /// Requests outstanding at most (the writer waits for an answer beyond this).
    #[arg(long, default_value_t = 5)]
    max_in_flight: usize,
    /// Requests at the start left out of the figures (connection and page warm-up).
    #[arg(long, default_value_t = 200)]
    warmup: u64,
}

/// What the writer tells the reader about each request, in send order.
struct Sent {
    correlation: i32,
    due: Instant,
    written: Instant,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate == 0 || args.seconds == 0 || args.max_in_flight == 0 {
        bail!("--rate, --seconds and --max-in-flight must be positive");
    }
    let target = if args.bootstrap.contains(',') {
        let leader = find_leader(&args.bootstrap, &args.topic, args.partition)?;
        eprintln!(
            "partition {} of {} is led by {leader}",
            args.partition, args.topic
        );
        leader
    } else {
        args.bootstrap.clone()
    };
    let mut writer =
        TcpStream::connect(&target).with_context(|| format!("connecting to {target}"))?;
    writer.set_nodelay(true)?;
    let mut reader = writer.try_clone()?;
    let total = args.rate.saturating_mul(args.seconds);
    let (tx, rx) = mpsc::sync_channel::<Sent>(args.max_in_flight);
    let version = args.version;
    let (topic, partition) = (args.topic.clone(), args.partition);
    let reading = std::thread::spawn(move || -> Result<Vec<(Duration, Duration)>> {
        let mut out = Vec::new();
        while let Ok(sent) = rx.recv() {
            let frame = read_frame(&mut reader)?;
            let done = Instant::now();
            let resp =
                decode_response::<ProduceRequest>(Bytes::from(frame), version, sent.correlation)
                    .map_err(anyhow::Error::msg)?;
            match produce::outcome(&resp, &topic, partition) {
                Some((0, _, _)) => {}
                Some((code, _, message)) => bail!("produce answered error {code}: {message}"),
                None => bail!("the answer does not mention the partition"),
            }
            out.push((
                done.saturating_duration_since(sent.due),
                done.saturating_duration_since(sent.written),
            ));
        }
        Ok(out)
    });
    let value = vec![b'x'; args.size];
    let client_id = StrBytes::from_static_str("produce-latency");
    let start = Instant::now();
    for i in 0..total {
        // A thread sleep: fine-grained, unlike a timer wheel's whole milliseconds.
        let due_at = start + due(i, args.rate);
        if let Some(wait) = due_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let batch = encode_batch(
            &[Record {
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
                timestamp: i64::try_from(now_ms).unwrap_or(0),
            }],
            ProducerInfo::default(),
        )
        .freeze();
        let req = produce::request(&args.topic, args.partition, batch, args.acks, 30_000);
        let correlation = i32::try_from(i % u64::from(i32::MAX.unsigned_abs())).unwrap_or(0);
        let frame = encode_request(&req, args.version, correlation, &client_id)?;
        // Blocks while max_in_flight requests are unanswered.
        if tx
            .send(Sent {
                correlation,
                due: due_at,
                written: Instant::now(),
            })
            .is_err()
        {
            break; // the reader stopped: its error is reported below
        }
        writer.write_all(&frame).context("sending a request")?;
    }
    drop(tx);
    let elapsed = start.elapsed().as_secs_f64();
    let measured = reading
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    let skip = usize::try_from(args.warmup).unwrap_or(usize::MAX);
    let (mut from_due, mut service): (Vec<Duration>, Vec<Duration>) =
        measured.into_iter().skip(skip).unzip();
    from_due.sort_unstable();
    service.sort_unstable();
    println!(
        "n={} rate={:.0}/s acks={} size={} in_flight<={} | {} | {}",
        from_due.len(),
        f64::from(u32::try_from(total).unwrap_or(u32::MAX)) / elapsed,
        args.acks,
        args.size,
        args.max_in_flight,
        latency_summary("from due", &from_due),
        latency_summary("service", &service)
    );
    Ok(())
}

/// Read one response frame (without its length prefix) from a blocking socket.
fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).context("reading an answer")?;
    let n = usize::try_from(i32::from_be_bytes(len)).context("negative frame length")?;
    let mut frame = vec![0u8; n];
    stream.read_exact(&mut frame).context("reading an answer")?;
    Ok(frame)
}

/// The address of `topic`/`partition`'s leader, asking each of the comma-separated
/// `bootstrap` addresses for Metadata in turn until one names a leader (30 s at most).
fn find_leader(bootstrap: &str, topic: &str, partition: i32) -> Result<String> {
    const VERSION: i16 = 7;
    let client_id = StrBytes::from_static_str("produce-latency");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_error = String::from("no answer");
    loop {
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            let asked = (|| -> Result<Option<String>> {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let req = metadata::request(&[topic]);
                s.write_all(&encode_request(&req, VERSION, 1, &client_id)?)?;
                let resp = decode_response::<MetadataRequest>(
                    Bytes::from(read_frame(&mut s)?),
                    VERSION,
                    1,
                )
                .map_err(anyhow::Error::msg)?;
                let m = metadata::parse(&resp);
                let leader = match m.topics.get(topic) {
                    Some(TopicState::Ready(leaders)) => usize::try_from(partition)
                        .ok()
                        .and_then(|p| leaders.get(p).copied().flatten()),
                    _ => None,
                };
                Ok(leader.and_then(|id| m.brokers.get(&id).cloned()))
            })();
            match asked {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => last_error = format!("{addr} names no leader for {topic}/{partition}"),
                Err(e) => last_error = format!("{addr}: {e:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("no leader for {topic}/{partition} within 30 s: {last_error}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
