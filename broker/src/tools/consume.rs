//! `runnel consume TOPIC`: records of one partition or all, from the earliest, latest, an
//! offset or a time, printed as JSON lines (see [`super::output`]). Without `--follow` it
//! stops at the end of each partition as it was when the command started.

use std::io::Write;

use anyhow::{anyhow, bail};
use clap::Args;
use runnel_client::simulate::time;
use runnel_client::{v1, StartAt, SubscriberConfig};
use tokio::sync::mpsc;

use super::output::record_line;
use super::{client_error, GrpcArgs};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub grpc: GrpcArgs,
    pub topic: String,
    /// Only this partition [default: every partition]
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Where to start: earliest, latest, or an offset (in every partition read)
    #[arg(short, long, default_value = "earliest", value_parser = parse_from)]
    pub from: From,
    /// Start at the first record at or after this time: RFC 3339
    /// (2025-08-17T12:34:56.789Z) or milliseconds since the Unix epoch
    #[arg(long, value_name = "TIME", conflicts_with = "from", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Stop after this many records (across partitions)
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end
    #[arg(short = 'F', long)]
    pub follow: bool,
}

/// A named or numbered start position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Earliest,
    Latest,
    Offset(i64),
}

fn parse_from(s: &str) -> Result<From, String> {
    match s {
        "earliest" | "beginning" => Ok(From::Earliest),
        "latest" | "end" => Ok(From::Latest),
        n => n
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(From::Offset)
            .ok_or_else(|| format!("expected earliest, latest or an offset >= 0, got {n:?}")),
    }
}

/// RFC 3339 or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return if ms >= 0 {
            Ok(ms)
        } else {
            Err("a time must not be before 1970".into())
        };
    }
    time::parse_ms(s).ok_or_else(|| {
        format!("expected an RFC 3339 time like 2025-08-17T12:34:56.789Z or epoch ms, got {s:?}")
    })
}

/// One partition's reading plan.
struct Plan {
    partition: i32,
    start: StartAt,
    /// Stop before this offset (`None` with --follow).
    end: Option<i64>,
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.grpc.connect().await?;
    let desc = client
        .admin()
        .describe_topic(v1::DescribeTopicRequest {
            name: args.topic.clone(),
        })
        .await
        .map_err(|s| client_error(s.into()))?
        .into_inner();
    let partitions: Vec<&v1::PartitionOffsets> = match args.partition {
        None => desc.partitions.iter().collect(),
        Some(p) => vec![desc
            .partitions
            .iter()
            .find(|o| o.partition == p)
            .ok_or_else(|| {
                anyhow!(
                    "topic {:?} has {} partition(s); there is no partition {p}",
                    args.topic,
                    desc.partitions.len()
                )
            })?],
    };
    let mut plans = Vec::new();
    for o in partitions {
        let end = (!args.follow).then_some(o.high_watermark);
        let start = match (args.from_time, args.from) {
            (Some(ts), _) => {
                if !args.follow {
                    // Nothing at or after `ts` in this partition: skip it.
                    let found = client
                        .admin()
                        .get_offsets(v1::GetOffsetsRequest {
                            topic: args.topic.clone(),
                            partition: o.partition,
                            timestamp_ms: Some(ts),
                        })
                        .await
                        .map_err(|s| client_error(s.into()))?
                        .into_inner();
                    if found.offset_for_timestamp.is_none() {
                        continue;
                    }
                }
                StartAt::Timestamp(ts)
            }
            (None, From::Earliest) => StartAt::Earliest,
            (None, From::Latest) => {
                if !args.follow {
                    continue;
                }
                StartAt::Latest
            }
            (None, From::Offset(off)) => {
                if off > o.high_watermark {
                    bail!(
                        "offset {off} is beyond the end of {:?} partition {} (high watermark {})",
                        args.topic,
                        o.partition,
                        o.high_watermark
                    );
                }
                StartAt::Offset(off)
            }
        };
        let first = match start {
            StartAt::Earliest => o.log_start,
            StartAt::Offset(off) => off,
            _ => i64::MIN,
        };
        if end.is_some_and(|e| first >= e) {
            continue;
        }
        plans.push(Plan {
            partition: o.partition,
            start,
            end,
        });
    }
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<v1::ConsumedRecord>>(1024);
    let mut tasks = Vec::new();
    for plan in plans {
        let mut sub = client.subscriber(SubscriberConfig::new(
            &args.topic,
            plan.partition,
            plan.start,
        ));
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let r = sub.next().await.map_err(client_error);
                let last = match (&r, plan.end) {
                    (Ok(rec), Some(end)) => rec.offset + 1 >= end,
                    (Err(_), _) => true,
                    _ => false,
                };
                let skip = matches!((&r, plan.end), (Ok(rec), Some(end)) if rec.offset >= end);
                if !skip && tx.send(r).await.is_err() {
                    return;
                }
                if last || skip {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let outcome = print_records(&args.topic, args.count, &mut rx).await;
    for t in tasks {
        t.abort();
    }
    outcome
}

/// Print records as they come until the partitions end, `count` is reached, or stdout closes.
async fn print_records(
    topic: &str,
    count: Option<u64>,
    rx: &mut mpsc::Receiver<anyhow::Result<v1::ConsumedRecord>>,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let write =
        |out: &mut std::io::BufWriter<std::io::StdoutLock<'_>>, line: &str| writeln!(out, "{line}");
    while count.is_none_or(|c| printed < c) {
        // Flush whenever no record is waiting, so followers see records as they arrive.
        let next = match rx.try_recv() {
            Ok(r) => Some(r),
            Err(_) => {
                if let Err(e) = out.flush() {
                    return broken_pipe_is_fine(e);
                }
                rx.recv().await
            }
        };
        let Some(r) = next else { break };
        let line = record_line(topic, r?);
        if let Err(e) = write(&mut out, &line) {
            return broken_pipe_is_fine(e);
        }
        printed += 1;
    }
    match out.flush() {
        Ok(()) => Ok(()),
        Err(e) => broken_pipe_is_fine(e),
    }
}

fn broken_pipe_is_fine(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(anyhow!("cannot write to stdout: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_times_parse() {
        assert_eq!(parse_from("earliest"), Ok(From::Earliest));
        assert_eq!(parse_from("latest"), Ok(From::Latest));
        assert_eq!(parse_from("42"), Ok(From::Offset(42)));
        assert!(parse_from("-1").is_err());
        assert!(parse_from("soon").is_err());
        assert_eq!(parse_time("1755434096789"), Ok(1_755_434_096_789));
        assert_eq!(
            parse_time("2025-08-17T12:34:56.789Z"),
            Ok(1_755_434_096_789)
        );
        assert!(parse_time("-5").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
