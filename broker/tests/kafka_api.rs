//! In-process tests of the Kafka API: a real broker on 127.0.0.1:0 in a temp dir, spoken to
//! with requests encoded by the kafka-protocol crate.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use runnel_broker::codec::builder::{decode_records, encode_batch, ProducerInfo, Record};
use runnel_broker::config::Config;
use runnel_broker::server::{start, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    async fn connect(b: &Running) -> Self {
        Self { stream: TcpStream::connect(b.kafka_addr).await.unwrap(), correlation: 0 }
    }

    async fn send_raw(&mut self, body: &[u8]) {
        let mut frame = BytesMut::new();
        frame.put_i32(i32::try_from(body.len()).unwrap());
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn read_frame(&mut self) -> Option<Bytes> {
        let len = self.stream.read_i32().await.ok()?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap()];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.correlation += 1;
        let api = ApiKey::try_from(R::KEY).unwrap();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("runnel-test")));
        let mut body = BytesMut::new();
        header.encode(&mut body, api.request_header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        self.send_raw(&body).await;
        let mut resp = self.read_frame().await.expect("response");
        let rh = ResponseHeader::decode(&mut resp, api.response_header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        R::Response::decode(&mut resp, version).unwrap()
    }
}

async fn broker(dir: &std::path::Path) -> Running {
    let config = Config {
        data_dir: dir.to_owned(),
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    start(config).await.expect("broker starts")
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn records(n: usize, ts: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("value-{ts}-{i}").into_bytes()),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            timestamp: ts + i64::try_from(i).unwrap(),
        })
        .collect()
}

async fn create(c: &mut Client, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default().with_name(topic(name)).with_num_partitions(partitions).with_replication_factor(1)])
        .with_timeout_ms(5000);
    c.call(&req, 5).await.topics[0].error_code
}

async fn produce(c: &mut Client, name: &str, partition: i32, batch: Bytes, acks: i16) -> (i16, i64) {
    let req = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic(name))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))])]);
    let resp = c.call(&req, 9).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn fetch(c: &mut Client, name: &str, partition: i32, offset: i64, max_wait_ms: i32) -> (i16, i64, Bytes) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default().with_topic(topic(name)).with_partitions(vec![FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)])]);
    let resp = c.call(&req, 12).await;
    let p = &resp.responses[0].partitions[0];
    (p.error_code, p.high_watermark, p.records.clone().unwrap_or_default())
}

async fn list_offset(c: &mut Client, name: &str, partition: i32, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic(name))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(ts)])]);
    let resp = c.call(&req, 7).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// Decode every record of a fetched buffer of uncompressed batches, with offsets.
fn decode_all(mut buf: Bytes) -> Vec<(i64, Record)> {
    let mut out = Vec::new();
    while buf.len() >= 12 {
        let h = runnel_broker::codec::batch::parse_header(&buf).unwrap();
        let recs = decode_records(&buf[..h.total_len()]).expect("valid batch");
        out.extend((h.base_offset..).zip(recs));
        buf.advance(h.total_len());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_fetch_list_offsets_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t1", 3).await, 0);
    assert_eq!(create(&mut c, "t1", 3).await, 36, "TOPIC_ALREADY_EXISTS");

    let first = records(3, 1_000);
    let second = records(2, 5_000);
    let (err, base) = produce(&mut c, "t1", 1, encode_batch(&first, ProducerInfo::default()).freeze(), -1).await;
    assert_eq!((err, base), (0, 0));
    let (err, base) = produce(&mut c, "t1", 1, encode_batch(&second, ProducerInfo::default()).freeze(), 1).await;
    assert_eq!((err, base), (0, 3));

    let (err, hw, data) = fetch(&mut c, "t1", 1, 0, 100).await;
    assert_eq!((err, hw), (0, 5));
    let got = decode_all(data);
    let want: Vec<(i64, Record)> = (0..).zip(first.iter().chain(second.iter()).cloned()).collect();
    assert_eq!(got, want);

    assert_eq!(list_offset(&mut c, "t1", 1, -2).await, (0, 0));
    assert_eq!(list_offset(&mut c, "t1", 1, -1).await, (0, 5));
    assert_eq!(list_offset(&mut c, "t1", 1, 1_001).await, (0, 1), "first record at or after the time");
    assert_eq!(list_offset(&mut c, "t1", 1, 5_000).await, (0, 3));
    assert_eq!(list_offset(&mut c, "t1", 1, 9_000).await, (0, -1), "nothing that late");
    assert_eq!(list_offset(&mut c, "t1", 1, -3).await, (0, 4), "max timestamp record");
    assert_eq!(fetch(&mut c, "t1", 1, 6, 0).await.0, 1, "OFFSET_OUT_OF_RANGE above the end");
    assert_eq!(fetch(&mut c, "t1", 7, 0, 0).await.0, 3, "UNKNOWN_TOPIC_OR_PARTITION");

    drop(c);
    b.shutdown().await;
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let (err, hw, data) = fetch(&mut c, "t1", 1, 3, 100).await;
    assert_eq!((err, hw), (0, 5));
    assert_eq!(decode_all(data), want[3..].to_vec(), "data survives a restart at the same offsets");
    let (err, base) = produce(&mut c, "t1", 1, encode_batch(&first, ProducerInfo::default()).freeze(), -1).await;
    assert_eq!((err, base), (0, 5));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batches_are_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t2", 1).await, 0);
    let good = encode_batch(&records(2, 1), ProducerInfo::default());

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(produce(&mut c, "t2", 0, bad_crc.freeze(), -1).await.0, 2, "CORRUPT_MESSAGE");

    let mut lying = good.clone();
    lying[8..12].copy_from_slice(&(i32::try_from(good.len()).unwrap() + 100).to_be_bytes());
    assert_eq!(produce(&mut c, "t2", 0, lying.freeze(), -1).await.0, 2, "batch length beyond the data");

    let mut old_magic = good.clone();
    old_magic[16] = 1;
    assert_eq!(produce(&mut c, "t2", 0, old_magic.freeze(), -1).await.0, 43, "UNSUPPORTED_FOR_MESSAGE_FORMAT");

    assert_eq!(produce(&mut c, "t2", 0, Bytes::from_static(b"garbage"), -1).await.0, 2);
    assert_eq!(list_offset(&mut c, "t2", 0, -1).await, (0, 0), "nothing appended");
    assert_eq!(produce(&mut c, "t2", 0, good.freeze(), -1).await, (0, 0));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    let v = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(v.error_code, 0);
    let produce = v.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!((produce.min_version, produce.max_version), (0, 9));
    assert!(v.api_keys.iter().all(|k| k.api_key != 71 && k.api_key != 72), "no telemetry APIs");

    // ApiVersions v4 (unsupported): error 35 in the v0 layout, response header v0.
    let mut raw = BytesMut::new();
    raw.put_i16(18);
    raw.put_i16(4);
    raw.put_i32(77);
    raw.put_i16(-1);
    raw.put_u8(0);
    c.send_raw(&raw).await;
    let mut resp = c.read_frame().await.unwrap();
    assert_eq!(resp.get_i32(), 77);
    assert_eq!(resp.get_i16(), 35);
    assert!(resp.get_i32() > 0);

    // Garbage, a negative length, and an unknown API each close only their own connection.
    for junk in [&b"\xff\xff\xff\xfb"[..], &b"\x00\x00\x00\x08\x7f\x7f\x00\x00\x00\x00\x00\x01"[..], &b"\x7f\xff\xff\xff"[..]] {
        let mut bad = Client::connect(&b).await;
        bad.stream.write_all(junk).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(5), bad.read_frame()).await.expect("closed promptly");
        assert!(closed.is_none(), "connection closed after {junk:?}");
    }
    // A request claiming 2^31 array elements must not take the broker down.
    let mut huge = BytesMut::new();
    huge.put_i16(3);
    huge.put_i16(4);
    huge.put_i32(1);
    huge.put_i16(-1);
    huge.put_i32(i32::MAX);
    let mut bad = Client::connect(&b).await;
    bad.send_raw(&huge).await;
    assert!(bad.read_frame().await.is_none());

    let v = c.call(&MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic("auto")))])).with_allow_auto_topic_creation(true), 12).await;
    assert_eq!(v.topics[0].error_code, 0, "auto-created");
    assert_eq!(v.controller_id, BrokerId(1));
    assert!(v.cluster_id.is_some());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_poll_answers_when_data_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let mut c = Client::connect(&b).await;
    assert_eq!(create(&mut c, "t3", 1).await, 0);
    let mut producer = Client::connect(&b).await;
    let waiter = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = fetch(&mut c, "t3", 0, 0, 20_000).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    produce(&mut producer, "t3", 0, encode_batch(&records(1, 1), ProducerInfo::default()).freeze(), 1).await;
    let ((err, hw, data), waited) = waiter.await.unwrap();
    assert_eq!((err, hw), (0, 1));
    assert_eq!(decode_all(data).len(), 1);
    assert!(waited < Duration::from_secs(10), "answered when data arrived, not at max_wait ({waited:?})");
    b.shutdown().await;
}
