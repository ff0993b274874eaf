//! A minimal Kafka client for the broker's own tests: requests encoded with kafka-protocol.
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use runnel_broker::codec::builder::{decode_records, Record};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub async fn connect_to(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            correlation: 0,
        })
    }

    pub async fn connect(b: &runnel_broker::server::Running) -> Self {
        Self::connect_to(b.kafka_addr).await.expect("connect")
    }

    pub async fn try_send_raw(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut frame = BytesMut::new();
        frame.put_i32(i32::try_from(body.len()).expect("frame fits"));
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).await
    }

    pub async fn send_raw(&mut self, body: &[u8]) {
        self.try_send_raw(body).await.expect("send");
    }

    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let len = self.stream.read_i32().await.ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        self.stream.read_exact(&mut buf).await.ok()?;
        Some(Bytes::from(buf))
    }

    /// Send a request and read its response; `Err` if the connection breaks.
    pub async fn try_call<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> std::io::Result<R::Response> {
        self.correlation += 1;
        let api = ApiKey::try_from(R::KEY).expect("known api");
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("runnel-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, api.request_header_version(version))
            .expect("encode header");
        req.encode(&mut body, version).expect("encode request");
        self.try_send_raw(&body).await?;
        let broken = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
        let mut resp = self.read_frame().await.ok_or_else(broken)?;
        let rh = ResponseHeader::decode(&mut resp, api.response_header_version(version))
            .expect("response header");
        assert_eq!(rh.correlation_id, self.correlation);
        Ok(R::Response::decode(&mut resp, version).expect("response body"))
    }

    pub async fn call<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        self.try_call(req, version).await.expect("response")
    }
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub async fn create(c: &mut Client, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    c.call(&req, 5).await.topics[0].error_code
}

pub async fn produce(
    c: &mut Client,
    name: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp = c.call(&req, 9).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub async fn fetch(
    c: &mut Client,
    name: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = c.call(&req, 12).await;
    let p = &resp.responses[0].partitions[0];
    (
        p.error_code,
        p.high_watermark,
        p.records.clone().unwrap_or_default(),
    )
}

pub async fn list_offset(c: &mut Client, name: &str, partition: i32, ts: i64) -> (i16, i64) {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic(name))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(ts)])]);
    let resp = c.call(&req, 7).await;
    let p = &resp.topics[0].partitions[0];
    (p.error_code, p.offset)
}

/// Decode every record of a fetched buffer of uncompressed batches, with offsets.
pub fn decode_all(mut buf: Bytes) -> Vec<(i64, Record)> {
    let mut out = Vec::new();
    while buf.len() >= 12 {
        let h = runnel_broker::codec::batch::parse_header(&buf).unwrap();
        let recs = decode_records(&buf[..h.total_len()]).expect("valid batch");
        out.extend((h.base_offset..).zip(recs));
        buf.advance(h.total_len());
    }
    out
}

/// Start an in-process broker on 127.0.0.1:0 with its data in `dir`.
pub async fn broker(dir: &std::path::Path) -> runnel_broker::server::Running {
    let config = runnel_broker::config::Config {
        data_dir: dir.to_owned(),
        kafka_addr: "127.0.0.1:0".parse().expect("valid address"),
        ..runnel_broker::config::Config::default()
    };
    runnel_broker::server::start(config)
        .await
        .expect("broker starts")
}

/// Publishes over gRPC (acks=all), for each step, one `SensorReading` per device to
/// `sensor_events`: event time `t0 + step * step_ms`, temperature `temperature(step)`.
pub async fn publish_sensor_steps(
    c: &runnel_client::Client,
    devices: &[String],
    steps: std::ops::Range<i64>,
    t0: i64,
    step_ms: i64,
    temperature: fn(i64) -> f64,
) {
    use runnel_client::v1;
    for step in steps {
        let at = t0 + step * step_ms;
        let readings = devices
            .iter()
            .map(|d| v1::SensorReading {
                device_id: d.clone(),
                event_time: Some(prost_types::Timestamp {
                    seconds: at / 1000,
                    nanos: 0,
                }),
                temperature_c: temperature(step),
                vibration_g: 0.1,
                status: "ok".into(),
                site: "s1".into(),
                line: "l1".into(),
            })
            .collect();
        c.publish_sensor_readings("sensor_events", readings, v1::Acks::All)
            .await
            .expect("publish readings");
    }
}

/// SIGTERMs `child` and waits up to `within` for it to exit: its status, or `None` (then it
/// is SIGKILLed and reaped) if it did not exit in time.
pub fn terminate(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A `runnel` process, SIGKILLed when dropped (also when the test fails).
pub struct Proc(std::process::Child);

impl Proc {
    /// Spawns `cmd`, killed when dropped.
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Self(cmd.spawn().expect("spawn runnel"))
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then the exit status (SIGKILL after `within`).
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        terminate(&mut self.0, within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
