//! The rdkafka crate's group member and idempotent producer, speaking the line protocol of
//! `tests/clients/GROUPS.md` so `tests/tests/groups.rs` can run (and SIGKILL) it as a process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// Prints one protocol line and flushes it at once.
fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Command-line flags as `--name value` pairs.
struct Args(BTreeMap<String, String>);

impl Args {
    fn parse(raw: &[String]) -> Result<Args> {
        let mut map = BTreeMap::new();
        let mut it = raw.iter();
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                bail!("unexpected argument {flag:?}");
            };
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Args(map))
    }

    fn get(&self, name: &str) -> Result<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("--{name} is required"))
    }

    fn get_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.0.get(name).map_or(default, String::as_str)
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: Option<T>) -> Result<T> {
        match (self.0.get(name), default) {
            (Some(v), _) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{name}: not a number: {v:?}")),
            (None, Some(d)) => Ok(d),
            (None, None) => bail!("--{name} is required"),
        }
    }
}

/// Tracks the member's assignment across (eager or incremental) rebalances.
struct MemberContext {
    assigned: Mutex<BTreeSet<i32>>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => {
                assigned.extend(tpl.elements().iter().map(|e| e.partition()));
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements() {
                    assigned.remove(&e.partition());
                }
            }
            Rebalance::Error(e) => {
                eprintln!("rebalance error: {e}");
                return;
            }
        }
        if assigned.is_empty() {
            line("ASSIGN -");
        } else {
            let list: Vec<String> = assigned.iter().map(i32::to_string).collect();
            line(&format!("ASSIGN {}", list.join(",")));
        }
    }
}

fn member(args: &Args) -> Result<()> {
    let strategy = match args.get_or("strategy", "default") {
        "default" => "range,roundrobin",
        "cooperative" => "cooperative-sticky",
        other => bail!("--strategy must be default or cooperative, not {other:?}"),
    };
    let topic = args.get("topic")?;
    let consumer: BaseConsumer<MemberContext> = ClientConfig::new()
        .set("bootstrap.servers", args.get("bootstrap")?)
        .set("group.id", args.get("group")?)
        .set("client.id", args.get("name")?)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set(
            "session.timeout.ms",
            args.number::<u32>("session-timeout-ms", Some(6000))?
                .to_string(),
        )
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", strategy)
        .create_with_context(MemberContext {
            assigned: Mutex::new(BTreeSet::new()),
        })
        .context("create consumer")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
        .context("install SIGTERM handler")?;
    line("READY");
    while !stop.load(Ordering::Relaxed) {
        // One poll's worth: the first message waits briefly, the rest are what is ready now.
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut wait = Duration::from_millis(100);
        while let Some(result) = consumer.poll(wait) {
            wait = Duration::ZERO;
            match result {
                Ok(m) => {
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                    line(&format!("REC {} {} {value}", m.partition(), m.offset()));
                    next.insert(m.partition(), m.offset() + 1);
                }
                Err(e) => eprintln!("consume error: {e}"),
            }
            if next.len() >= 6 || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if next.is_empty() {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &next {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))
                .context("build commit list")?;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                for (p, o) in next {
                    line(&format!("COMMIT {p} {o}"));
                }
            }
            Err(e) => eprintln!("commit failed: {e}"),
        }
    }
    consumer.unsubscribe();
    // Dropping the consumer closes it: rd_kafka_consumer_close leaves the group.
    drop(consumer);
    line("CLOSED");
    Ok(())
}

/// Prints an `ACKED` line per delivered record; counts failures.
struct ProduceContext {
    failed: AtomicBool,
}

impl ClientContext for ProduceContext {}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(m) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                line(&format!("ACKED {} {} {value}", m.partition(), m.offset()));
            }
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                self.failed.store(true, Ordering::Relaxed);
            }
        }
    }
}

fn produce(args: &Args) -> Result<()> {
    let topic = args.get("topic")?;
    let count: u64 = args.number("count", None)?;
    let partitions: i32 = args.number("partitions", None)?;
    if partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let prefix = args.get_or("prefix", "idem");
    let producer: ThreadedProducer<ProduceContext> = ClientConfig::new()
        .set("bootstrap.servers", args.get("bootstrap")?)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Small batches: many Produce requests, so the test proxy gets to cut some.
        .set("batch.size", "1024")
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("message.timeout.ms", "120000")
        .create_with_context(ProduceContext {
            failed: AtomicBool::new(false),
        })
        .context("create producer")?;
    let parts = i64::from(partitions);
    for i in 0..count {
        let partition = i32::try_from(i64::try_from(i)? % parts)?;
        let key = format!("k-{i}");
        let value = format!("{prefix}-{i}");
        let mut record = BaseRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    // Queue full: let deliveries drain, then try again.
                    eprintln!("send: {e}; retrying");
                    record = r;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flush: not every record was acknowledged")?;
    if producer.context().failed.load(Ordering::Relaxed) {
        bail!("some records were not delivered");
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => Args::parse(rest).and_then(|args| match cmd.as_str() {
            "member" => member(&args),
            "produce" => produce(&args),
            other => bail!("unknown sub-command {other:?} (member | produce)"),
        }),
        None => Err(anyhow::anyhow!(
            "usage: rdkafka_group member|produce --flag value ... (see tests/clients/GROUPS.md)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdkafka_group: {e:#}");
            ExitCode::FAILURE
        }
    }
}
