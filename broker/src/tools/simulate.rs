//! `runnel simulate`: drives the deterministic generators of `runnel_client::simulate` against
//! the wall clock and ships the events to a broker over gRPC (the `Publisher`) or the Kafka
//! protocol ([`super::kafka_producer`]), with a progress line on stderr every second and a
//! summary at the end (a JSON line on stdout, readable lines on stderr).
//!
//! Sensor readings are encoded by the broker's own `record_from_sensor`, the code behind the
//! gRPC `PublishSensorReadings`, so simulated records are byte-for-byte what a typed publish
//! would store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use runnel_client::simulate::{Event, Kind, SimConfig, Simulator, Source, SourceMix};
use runnel_client::{v1, Publisher, PublisherConfig};
use serde::Serialize;

use super::consume::parse_time;
use super::deliveries::Tracker;
use super::kafka_producer::{Counters, KafkaProducer, ProducerConfig};
use super::{client_error, note, GrpcArgs};
use crate::codec::builder::Record;
use crate::grpc::convert::record_from_sensor;

/// How events reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SinkArg {
    /// runnel.v1 gRPC PublishStream (runnel-client Publisher)
    Grpc,
    /// Kafka protocol Produce, to Runnel or any Kafka cluster
    Kafka,
}

/// When a write counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimAcks {
    /// fsynced (Runnel) / all in-sync replicas (Kafka acks=-1)
    All,
    /// appended by the leader (acks=1)
    Leader,
    /// not acknowledged at all (Kafka acks=0; gRPC treats it as leader)
    None,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Where events go
    #[arg(long, value_enum, default_value = "grpc")]
    pub sink: SinkArg,
    /// Kafka bootstrap broker for --sink kafka, HOST:PORT
    #[arg(long, env = "RUNNEL_KAFKA_ADDR", default_value = "127.0.0.1:9092")]
    pub bootstrap_server: String,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: SimAcks,
    /// Sources to simulate, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "sensors,clicks,posts")]
    pub sources: Vec<SourceArg>,
    /// Target events per second (virtual time always advances at this rate)
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Send as fast as the sink accepts, not at --rate (event times still follow --rate)
    #[arg(long)]
    pub unpaced: bool,
    /// Stop after this many events
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Stop after this many seconds [default: run until Ctrl-C or --count]
    #[arg(long)]
    pub duration: Option<f64>,
    /// Random seed: the same seed, start time and settings give the same events [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Event time of the first event, RFC 3339 or epoch ms [default: now]
    #[arg(long, value_parser = parse_time)]
    pub start_time: Option<i64>,
    #[arg(long, default_value_t = 100)]
    pub devices: u32,
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Fraction of sensor readings over an alert threshold
    #[arg(long, default_value_t = 0.01)]
    pub anomaly_rate: f64,
    /// Fraction of events out of order, within the watermark bound
    #[arg(long, default_value_t = 0.02)]
    pub out_of_order_rate: f64,
    /// Fraction of events later than any sane watermark
    #[arg(long, default_value_t = 0.005)]
    pub late_rate: f64,
    /// Fraction of sensor records that are not valid JSON
    #[arg(long, default_value_t = 0.002)]
    pub malformed_rate: f64,
    /// Fraction of sensor records that are JSON but break the schema
    #[arg(long, default_value_t = 0.002)]
    pub schema_violation_rate: f64,
    /// Chance per sensor event that a device goes silent for 30 s to 5 min
    #[arg(long, default_value_t = 0.0005)]
    pub silence_rate: f64,
    /// Bounded out-of-orderness the downstream watermark allows, in ms
    #[arg(long, default_value_t = 10_000)]
    pub watermark_bound_ms: i64,
    #[arg(long, default_value_t = 85.0)]
    pub temperature_alert: f64,
    #[arg(long, default_value_t = 0.5)]
    pub vibration_alert: f64,
    #[arg(long, default_value = "sensor_events")]
    pub sensor_topic: String,
    #[arg(long, default_value = "user_events")]
    pub click_topic: String,
    #[arg(long, default_value = "social_posts")]
    pub post_topic: String,
    /// Partitions for topics the simulator creates
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Fail if a topic is missing instead of creating it
    #[arg(long)]
    pub no_create_topics: bool,
    /// Add headers sim.source and sim.kind (ground truth) to every record
    #[arg(long)]
    pub label_headers: bool,
    /// No progress lines, only the summary
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    Sensors,
    Clicks,
    Posts,
}

impl SimulateArgs {
    fn config(&self, seed: u64, start_ms: i64) -> SimConfig {
        let on = |s: SourceArg, w: f64| if self.sources.contains(&s) { w } else { 0.0 };
        let d = SourceMix::default();
        SimConfig {
            seed,
            start_ms,
            rate_per_sec: self.rate,
            mix: SourceMix {
                sensors: on(SourceArg::Sensors, d.sensors),
                clicks: on(SourceArg::Clicks, d.clicks),
                posts: on(SourceArg::Posts, d.posts),
            },
            devices: self.devices,
            users: self.users,
            anomaly_rate: self.anomaly_rate,
            out_of_order_rate: self.out_of_order_rate,
            late_rate: self.late_rate,
            malformed_rate: self.malformed_rate,
            schema_violation_rate: self.schema_violation_rate,
            silence_rate: self.silence_rate,
            watermark_bound_ms: self.watermark_bound_ms,
            temperature_alert_c: self.temperature_alert,
            vibration_alert_g: self.vibration_alert,
            ..SimConfig::default()
        }
    }

    fn topic(&self, s: Source) -> &str {
        match s {
            Source::Sensors => &self.sensor_topic,
            Source::Clicks => &self.click_topic,
            Source::Posts => &self.post_topic,
        }
    }
}

/// An event as the record it is stored as. Sensor readings go through the broker's encoder.
pub fn to_record(e: &Event, label: bool) -> Result<Record, String> {
    let value = e.value(|r| {
        record_from_sensor(0, r)
            .map(|rec| rec.value.unwrap_or_default())
            .map_err(|err| err.to_string())
    })?;
    let headers = if label {
        vec![
            (
                "sim.source".to_owned(),
                Some(e.source.name().as_bytes().to_vec()),
            ),
            (
                "sim.kind".to_owned(),
                Some(e.kind.name().as_bytes().to_vec()),
            ),
        ]
    } else {
        Vec::new()
    };
    Ok(Record {
        key: Some(e.key.clone()),
        value: Some(value),
        headers,
        timestamp: e.event_time_ms,
    })
}

fn to_proto(r: Record) -> v1::Record {
    v1::Record {
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|(key, value)| v1::Header { key, value })
            .collect(),
        timestamp_ms: Some(r.timestamp),
    }
}

enum Sink {
    Grpc {
        publishers: BTreeMap<String, Publisher>,
        tracker: Tracker,
    },
    Kafka(KafkaProducer),
}

impl Sink {
    async fn send(&mut self, topic: &str, r: Record) -> anyhow::Result<()> {
        match self {
            Sink::Grpc {
                publishers,
                tracker,
            } => {
                let p = publishers
                    .get(topic)
                    .ok_or_else(|| anyhow!("no publisher for {topic}"))?;
                let d = p.send(to_proto(r)).await.map_err(client_error)?;
                tracker.track(d).await;
            }
            Sink::Kafka(k) => k.send(topic, r).await?,
        }
        Ok(())
    }

    async fn close(self) {
        match self {
            Sink::Grpc {
                publishers,
                tracker,
            } => {
                for (_, p) in publishers {
                    let _ = p.close().await;
                }
                tracker.finish().await;
            }
            Sink::Kafka(k) => k.close().await,
        }
    }
}

async fn open_sink(
    args: &SimulateArgs,
    topics: &[String],
    counters: Arc<Counters>,
) -> anyhow::Result<Sink> {
    match args.sink {
        SinkArg::Grpc => {
            let client = args.grpc.connect().await?;
            for t in topics {
                if args.no_create_topics {
                    client
                        .admin()
                        .describe_topic(v1::DescribeTopicRequest { name: t.clone() })
                        .await
                        .map_err(|s| client_error(s.into()))?;
                    continue;
                }
                match client.create_topic(t, args.partitions).await {
                    Ok(_) => note(&format!(
                        "created topic {t:?} with {} partitions",
                        args.partitions
                    )),
                    Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
                    Err(e) => return Err(client_error(e)).context(format!("topic {t:?}")),
                }
            }
            let acks = match args.acks {
                SimAcks::All => v1::Acks::All,
                SimAcks::Leader | SimAcks::None => v1::Acks::Leader,
            };
            let publishers = topics
                .iter()
                .map(|t| {
                    let p = client.publisher(PublisherConfig {
                        acks,
                        ..PublisherConfig::new(t)
                    });
                    (t.clone(), p)
                })
                .collect();
            Ok(Sink::Grpc {
                publishers,
                tracker: Tracker::new(counters),
            })
        }
        SinkArg::Kafka => {
            let config = ProducerConfig {
                acks: match args.acks {
                    SimAcks::All => -1,
                    SimAcks::Leader => 1,
                    SimAcks::None => 0,
                },
                ..ProducerConfig::new(&args.bootstrap_server)
            };
            let create = (!args.no_create_topics).then_some(args.partitions);
            Ok(Sink::Kafka(
                KafkaProducer::connect(config, topics, create, counters).await?,
            ))
        }
    }
}

/// The end-of-run numbers, also printed as one JSON line on stdout.
#[derive(Debug, Default, Serialize)]
struct Summary {
    seed: u64,
    start_ms: i64,
    sent: u64,
    acked: u64,
    errors: u64,
    elapsed_s: f64,
    rate_per_s: f64,
    by_source: BTreeMap<&'static str, u64>,
    by_kind: BTreeMap<&'static str, u64>,
    silences: u64,
}

fn u64_f64(n: u64) -> f64 {
    let hi = u32::try_from(n >> 32).unwrap_or(u32::MAX);
    let lo = u32::try_from(n & 0xffff_ffff).unwrap_or(0);
    f64::from(hi) * 4_294_967_296.0 + f64::from(lo)
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let seed = args
        .seed
        .unwrap_or_else(|| u64::try_from(crate::processing::unix_now_ms()).unwrap_or(0));
    let start_ms = args
        .start_time
        .unwrap_or_else(crate::processing::unix_now_ms);
    let config = args.config(seed, start_ms);
    let mut sim = Simulator::new(config.clone())?;
    let duration = match args.duration {
        None => None,
        Some(d) => match Duration::try_from_secs_f64(d) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => bail!("--duration must be a positive number of seconds, got {d}"),
        },
    };
    let sources: Vec<Source> = Source::ALL
        .into_iter()
        .filter(|s| {
            let m = &config.mix;
            match s {
                Source::Sensors => m.sensors > 0.0,
                Source::Clicks => m.clicks > 0.0,
                Source::Posts => m.posts > 0.0,
            }
        })
        .collect();
    let topics: Vec<String> = sources.iter().map(|s| args.topic(*s).to_owned()).collect();
    let counters = Arc::new(Counters::default());
    let mut sink = open_sink(&args, &topics, counters.clone()).await?;
    let mut summary = Summary {
        seed,
        start_ms,
        ..Summary::default()
    };
    let started = Instant::now();
    // A deadline beyond what the clock can represent is no deadline.
    let deadline = duration.and_then(|d| started.checked_add(d));
    let mut next_progress = started + Duration::from_secs(1);
    let mut last_sent = 0u64;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let mut send_error = None;
    loop {
        if stop.load(Ordering::Relaxed) || args.count.is_some_and(|c| summary.sent >= c) {
            break;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_progress {
            if !args.quiet {
                let acked = counters.acked.load(Ordering::Relaxed);
                let failed = counters.failed.load(Ordering::Relaxed);
                note(&format!(
                    "simulate: {:>6.1}s  sent {}  acked {}  errors {}  rate {}/s",
                    started.elapsed().as_secs_f64(),
                    summary.sent,
                    acked,
                    failed,
                    summary.sent - last_sent
                ));
            }
            last_sent = summary.sent;
            next_progress += Duration::from_secs(1);
        }
        if !args.unpaced {
            // Event n is due (n / rate) seconds after the start.
            let due_ms = sim.next_arrival_ms().saturating_sub(start_ms);
            let due = started
                .checked_add(Duration::from_millis(u64::try_from(due_ms).unwrap_or(0)))
                .unwrap_or(next_progress);
            if due > now {
                let wake = deadline.map_or(due, |d| due.min(d)).min(next_progress);
                tokio::time::sleep_until(wake.into()).await;
                continue;
            }
        }
        let event = sim.next_event();
        *summary.by_source.entry(event.source.name()).or_default() += 1;
        *summary.by_kind.entry(event.kind.name()).or_default() += 1;
        if event.silenced.is_some() {
            summary.silences += 1;
        }
        summary.sent += 1;
        let record = match to_record(&event, args.label_headers) {
            Ok(r) => r,
            Err(e) => {
                counters.fail(1, || e);
                continue;
            }
        };
        if let Err(e) = sink.send(args.topic(event.source), record).await {
            send_error = Some(e);
            break;
        }
        if args.unpaced && summary.sent % 1024 == 0 {
            // Let progress and Ctrl-C be noticed even when the sink never makes us wait.
            tokio::task::yield_now().await;
        }
    }
    stopper.abort();
    sink.close().await;
    summary.acked = counters.acked.load(Ordering::Relaxed);
    summary.errors = counters.failed.load(Ordering::Relaxed);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.rate_per_s = if summary.elapsed_s > 0.0 {
        (u64_f64(summary.sent) / summary.elapsed_s).round()
    } else {
        0.0
    };
    let line = serde_json::to_string(&summary).unwrap_or_default();
    note(&format!(
        "simulate: done: sent {} acked {} errors {} in {:.1}s ({}/s); seed {} start {}",
        summary.sent,
        summary.acked,
        summary.errors,
        summary.elapsed_s,
        summary.rate_per_s,
        seed,
        runnel_client::simulate::time::format_ms(start_ms)
    ));
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .filter_map(|k| {
            summary
                .by_kind
                .get(k.name())
                .map(|n| format!("{} {n}", k.name()))
        })
        .collect();
    note(&format!(
        "simulate: by source {:?}; by kind {}; {} device silences",
        summary.by_source,
        kinds.join(", "),
        summary.silences
    ));
    super::print_line(&line)?;
    if let Some(e) = send_error {
        return Err(e);
    }
    if summary.errors > 0 {
        bail!(
            "{} of {} record(s) failed; first: {}",
            summary.errors,
            summary.sent,
            counters.first_error().unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::sensor;
    use runnel_client::simulate::{Payload, Simulator};

    #[test]
    fn seeded_records_are_identical_bytes_and_readings_use_the_broker_encoding() {
        let config = SimConfig {
            seed: 77,
            malformed_rate: 0.02,
            schema_violation_rate: 0.02,
            ..SimConfig::default()
        };
        let records = |c: SimConfig| -> Vec<Record> {
            Simulator::new(c)
                .unwrap()
                .take(5000)
                .map(|e| to_record(&e, true).unwrap())
                .collect()
        };
        assert_eq!(records(config.clone()), records(config.clone()));
        assert_ne!(
            records(config.clone()),
            records(SimConfig {
                seed: 78,
                ..config.clone()
            })
        );
        for e in Simulator::new(config).unwrap().take(5000) {
            let r = to_record(&e, false).unwrap();
            let Payload::Sensor { reading, defect } = &e.payload else {
                continue;
            };
            let typed = record_from_sensor(0, reading).unwrap();
            assert_eq!(r.key, typed.key);
            assert_eq!(r.timestamp, typed.timestamp);
            if defect.is_none() {
                assert_eq!(r.value, typed.value, "same bytes as a typed gRPC publish");
                sensor::parse(r.value.as_deref().unwrap()).unwrap();
            } else {
                assert!(sensor::parse(r.value.as_deref().unwrap()).is_err());
            }
        }
    }

    #[test]
    fn the_client_time_format_matches_the_broker_one() {
        for ms in [
            0,
            1,
            951_782_400_000,
            1_755_434_096_789,
            253_402_300_799_999,
        ] {
            assert_eq!(
                runnel_client::simulate::time::format_ms(ms),
                crate::grpc::convert::rfc3339_ms(ms)
            );
        }
    }
}
