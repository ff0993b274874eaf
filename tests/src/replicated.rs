//! Reading a replicated partition back for the fault tests' checks: every record's offset and
//! value, straight from the partition's leader through the broker library's Kafka client.

use std::time::{Duration, Instant};

use runnel_broker::kafka_client::fetch::{decode_fetched, FetchedPartition};
use runnel_broker::kafka_client::{Client, ClientConfig};

/// A Kafka client for a cluster under faults: short request timeout, many quick retries and
/// fresh metadata, so it follows leader changes within a test's patience.
pub fn fault_tolerant_client(bootstrap: &str) -> Client {
    let mut cfg = ClientConfig::new(bootstrap);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.attempts = 30;
    cfg.backoff = Duration::from_millis(50);
    cfg.metadata_max_age = Duration::from_millis(500);
    Client::new(cfg)
}

/// Creates `topic` with `partitions` partitions unless it exists, retrying while the cluster
/// elects its metadata leader (up to `patience`).
pub async fn ensure_topic(c: &Client, topic: &str, partitions: u32, patience: Duration) {
    let deadline = Instant::now() + patience;
    while let Err(e) = c.ensure_topic(topic, partitions).await {
        assert!(Instant::now() < deadline, "no topic {topic}: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader of `topic`/`partition` per fresh metadata, waiting up to `patience` for one.
pub async fn leader_of(c: &Client, topic: &str, partition: usize, patience: Duration) -> i32 {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(3), c.leaders(topic)).await {
            if let Some(Some(id)) = l.get(partition) {
                return *id;
            }
        }
        assert!(Instant::now() < deadline, "{topic}/{partition}: no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `(offset, value)` records of one fetch answer from `offset` on (CRC-checked, control
/// batches skipped; a value that is not UTF-8 fails the test) and where to fetch next.
pub fn decode(f: &FetchedPartition, offset: i64) -> (Vec<(i64, String)>, i64) {
    let d = decode_fetched(f.records.clone(), offset, i64::MAX, usize::MAX).expect("valid batches");
    let records = d
        .records
        .into_iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.unwrap_or_default().to_vec()).expect("UTF-8 values"),
            )
        })
        .collect();
    (records, d.next_offset)
}

/// A whole partition up to its high watermark, read from its leader (retried while the
/// cluster settles, for up to `patience`), and that high watermark.
pub async fn read_partition(
    c: &Client,
    topic: &str,
    partition: i32,
    patience: Duration,
) -> (Vec<(i64, String)>, i64) {
    let mut out = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + patience;
    loop {
        assert!(
            Instant::now() < deadline,
            "could not read {topic}/{partition}"
        );
        let Ok(Some(f)) = c.fetch(topic, partition, offset, 100).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (records, to) = decode(&f, offset);
        out.extend(records);
        offset = to;
        if offset >= f.high_watermark {
            return (out, f.high_watermark);
        }
    }
}
