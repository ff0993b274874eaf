//! `runnel produce TOPIC`: records from stdin, one per line, published through the batching
//! `Publisher`. Plain lines are values (optionally `KEY<sep>VALUE`); with `--json` each line
//! is an object in the form `runnel consume` prints, so `consume | produce --json` copies
//! records exactly (keys, values, headers, timestamps, base64-marked bytes).

use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use runnel_client::{v1, PublisherConfig};
use serde::Deserialize;

use super::deliveries::Tracker;
use super::kafka_producer::Counters;
use super::output::{decode_bytes, Encoding};
use super::{client_error, note, GrpcArgs};

/// When the broker acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// After an fsync covers the records (Kafka acks=all)
    All,
    /// Once appended to the leader's log (Kafka acks=1)
    Leader,
}

impl From<AcksArg> for v1::Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::All => v1::Acks::All,
            AcksArg::Leader => v1::Acks::Leader,
        }
    }
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// Topic to publish to (must exist)
    pub topic: String,
    /// Split each line at the first SEP into key and value (a line without SEP has no key)
    #[arg(short = 'K', long, value_name = "SEP", conflicts_with = "json")]
    pub key_separator: Option<String>,
    /// Header KEY=VALUE added to every record (KEY alone: a null value); repeatable
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Partition for every record [default: from the key, like Kafka's partitioner]
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Each line is a JSON object: {"key", "value", "headers", "timestamp", and optional
    /// "key_encoding"/"value_encoding": "base64"}, as `runnel consume` prints it; a value
    /// that is not a string is stored as its compact JSON text
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    /// How long a record may wait for others to share its batch, in ms
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
}

/// A `--json` input line; `topic`, `partition` and `offset` of consumed records are ignored.
#[derive(Debug, Deserialize)]
struct JsonLine {
    #[serde(default)]
    key: Option<serde_json::Value>,
    #[serde(default)]
    key_encoding: Option<Encoding>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    value_encoding: Option<Encoding>,
    #[serde(default)]
    headers: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<i64>,
}

fn json_bytes(
    v: Option<serde_json::Value>,
    enc: Option<Encoding>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => decode_bytes(&s, enc)
            .map(Some)
            .map_err(|e| format!("{what}: {e}")),
        Some(other) if enc.is_none() => Ok(Some(other.to_string().into_bytes())),
        Some(_) => Err(format!("{what}: an encoded {what} must be a string")),
    }
}

fn json_headers(v: Option<serde_json::Value>) -> Result<Vec<v1::Header>, String> {
    let header = |key: String, value: Option<serde_json::Value>, enc| {
        Ok(v1::Header {
            value: json_bytes(value, enc, "header value")?,
            key,
        })
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        // [{"key": "k", "value": "v", "value_encoding": "base64"?}, ...]
        Some(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| {
                #[derive(Deserialize)]
                struct H {
                    key: String,
                    #[serde(default)]
                    value: Option<serde_json::Value>,
                    #[serde(default)]
                    value_encoding: Option<Encoding>,
                }
                let h: H = serde_json::from_value(item).map_err(|e| format!("header: {e}"))?;
                header(h.key, h.value, h.value_encoding)
            })
            .collect(),
        // {"k": "v", ...}
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| header(k, Some(v), None))
            .collect(),
        Some(_) => Err("headers must be a list of {key, value} objects or an object".into()),
    }
}

/// One `--json` line as a record.
fn parse_json_line(line: &[u8]) -> Result<v1::Record, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("expected a JSON object per line".into());
    }
    let j: JsonLine = serde_json::from_value(v).map_err(|e| format!("invalid record: {e}"))?;
    Ok(v1::Record {
        key: json_bytes(j.key, j.key_encoding, "key")?,
        value: json_bytes(j.value, j.value_encoding, "value")?,
        headers: json_headers(j.headers)?,
        timestamp_ms: j.timestamp,
    })
}

/// One plain line as a record.
fn parse_text_line(line: &[u8], sep: Option<&[u8]>, headers: &[v1::Header]) -> v1::Record {
    let split = sep.filter(|s| !s.is_empty()).and_then(|s| {
        line.windows(s.len())
            .position(|w| w == s)
            .map(|i| (&line[..i], &line[i + s.len()..]))
    });
    let (key, value) = match split {
        Some((k, v)) => (Some(k.to_vec()), v.to_vec()),
        None => (None, line.to_vec()),
    };
    v1::Record {
        key,
        value: Some(value),
        headers: headers.to_vec(),
        timestamp_ms: None,
    }
}

fn cli_headers(specs: &[String]) -> Vec<v1::Header> {
    specs
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) => v1::Header {
                key: k.to_owned(),
                value: Some(v.as_bytes().to_vec()),
            },
            None => v1::Header {
                key: h.clone(),
                value: None,
            },
        })
        .collect()
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.grpc.connect().await?;
    // Refuse an unknown topic (or partition) before reading any input.
    let topic = client
        .admin()
        .describe_topic(v1::DescribeTopicRequest {
            name: args.topic.clone(),
        })
        .await
        .map_err(|s| client_error(s.into()))?
        .into_inner();
    if let Some(p) = args.partition {
        if usize::try_from(p).map_or(true, |p| p >= topic.partitions.len()) {
            bail!(
                "topic {:?} has {} partition(s); there is no partition {p}",
                args.topic,
                topic.partitions.len()
            );
        }
    }
    let publisher = client.publisher(PublisherConfig {
        partition: args.partition,
        linger: Duration::from_millis(args.linger_ms),
        acks: args.acks.into(),
        ..PublisherConfig::new(&args.topic)
    });
    let counters = Arc::new(Counters::default());
    let tracker = Tracker::new(counters.clone());
    let headers = cli_headers(&args.headers);
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    // stdin is read on a blocking thread and handed over line by line (bounded).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().split(b'\n') {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let mut line_no = 0u64;
    let mut sent = 0u64;
    let mut failure = None;
    while let Some(line) = rx.recv().await {
        line_no += 1;
        let mut line = line.context("cannot read stdin")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let record = if args.json {
            match parse_json_line(&line) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(anyhow!("line {line_no}: {e}"));
                    break;
                }
            }
        } else {
            parse_text_line(&line, sep, &headers)
        };
        let record = if args.json && !headers.is_empty() {
            let mut r = record;
            r.headers.extend(headers.iter().cloned());
            r
        } else {
            record
        };
        let d = publisher.send(record).await.map_err(client_error)?;
        tracker.track(d).await;
        sent += 1;
    }
    publisher.close().await.map_err(client_error)?;
    tracker.finish().await;
    let acked = counters.acked.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    note(&format!("produced {acked} record(s) to {:?}", args.topic));
    if failed > 0 {
        bail!(
            "{failed} of {sent} record(s) failed: {}",
            counters.first_error().unwrap_or_default()
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_split_at_the_first_separator() {
        let r = parse_text_line(b"k:v:w", Some(b":"), &[]);
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref()),
            (Some(&b"k"[..]), Some(&b"v:w"[..]))
        );
        let r = parse_text_line(b"no-sep", Some(b":"), &[]);
        assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"no-sep"[..])));
        let r = parse_text_line(b"x", None, &cli_headers(&["a=1".into(), "b".into()]));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[1].value, None);
    }

    #[test]
    fn json_lines_take_the_consume_form_and_plain_json_values() {
        let r = parse_json_line(
            br#"{"topic":"t","partition":0,"offset":3,"timestamp":5,"key":"k","value":"/wA=","value_encoding":"base64","headers":[{"key":"h","value":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&[0xff, 0][..]));
        assert_eq!(r.timestamp_ms, Some(5));
        assert_eq!(r.headers[0].value, None);
        let r = parse_json_line(br#"{"key":"d","value":{"t":1},"headers":{"a":"b"}}"#).unwrap();
        assert_eq!(r.value.as_deref(), Some(&br#"{"t":1}"#[..]));
        assert_eq!(r.headers[0].key, "a");
        for bad in [
            &b"{"[..],
            b"[]",
            br#"{"value":"!","value_encoding":"base64"}"#,
            br#"{"headers":3}"#,
        ] {
            assert!(parse_json_line(bad).is_err());
        }
    }
}
