//! `/metrics` over HTTP from a real in-process broker: produce, fetch, fsync, offsets,
//! segments and consumer-group lag show up with the right names, labels and values.

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest};
use runnel_broker::codec::builder::{encode_batch, ProducerInfo, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

/// GET `path` with a bare HTTP/1.1 request; returns (status line, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: runnel\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// The value of the sample whose name-and-labels part is exactly `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn batch(n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'v'; 10]),
            headers: Vec::new(),
            timestamp: 1_700_000_000_000,
        })
        .collect();
    encode_batch(&records, ProducerInfo::default()).freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_traffic_state_and_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "m", 2).await, 0);
    let one = batch(3);
    let one_len = one.len();
    assert_eq!(produce(&mut c, "m", 0, one, -1).await, (0, 0));
    assert_eq!(produce(&mut c, "m", 0, batch(2), -1).await, (0, 3));
    let (err, _, served) = fetch(&mut c, "m", 0, 0, 0).await;
    assert_eq!(err, 0);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(
            kafka_protocol::protocol::StrBytes::from_static_str("g"),
        ))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic("m"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let resp = c.call(&commit, 8).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, 0);

    let (status, body) = get(b.http_addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let p0 = r#"{topic="m",partition="0"}"#;
    let p1 = r#"{topic="m",partition="1"}"#;
    let at = |series: String| sample(&body, &series);
    assert_eq!(
        at(format!("runnel_produce_records_total{p0}")),
        Some(5.0),
        "{body}"
    );
    assert!(
        at(format!("runnel_produce_bytes_total{p0}"))
            > Some(f64::from(u32::try_from(one_len).unwrap()))
    );
    assert_eq!(
        at(format!("runnel_fetch_bytes_total{p0}")),
        Some(f64::from(u32::try_from(served.len()).unwrap()))
    );
    assert_eq!(at(format!("runnel_log_end_offset{p0}")), Some(5.0));
    assert_eq!(at(format!("runnel_high_watermark_offset{p0}")), Some(5.0));
    assert_eq!(at(format!("runnel_log_start_offset{p0}")), Some(0.0));
    assert_eq!(at(format!("runnel_log_end_offset{p1}")), Some(0.0));
    assert_eq!(at(format!("runnel_log_segments{p0}")), Some(1.0));
    assert!(at(format!("runnel_log_size_bytes{p0}")) > Some(0.0));
    assert_eq!(
        at(r#"runnel_consumer_group_lag_records{group="g",topic="m",partition="0"}"#.into()),
        Some(4.0)
    );
    assert_eq!(
        at(r#"runnel_kafka_requests_total{api="Produce"}"#.into()),
        Some(2.0)
    );
    assert!(at(r#"runnel_kafka_request_duration_seconds_count{api="Fetch"}"#.into()) >= Some(1.0));
    // Two acks=all produces: at least one fsync was timed.
    assert!(
        at("runnel_log_fsync_duration_seconds_count".into()) >= Some(1.0),
        "{body}"
    );

    let (status, _) = get(b.http_addr, "/nope").await;
    assert!(status.contains("404"), "{status}");
}
