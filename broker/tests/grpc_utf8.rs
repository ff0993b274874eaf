//! Bad input the generated clients cannot send: strings that are not UTF-8 in gRPC string
//! fields (topic names, header keys, device ids). Sent as hand-built protobuf messages whose
//! string fields are declared as bytes; each call must be refused, append nothing, and leave
//! the broker serving.
//!
//! The servers' codec (`runnel_proto::codec::RequestCodec`) refuses such a request while
//! decoding it, before any Runnel code runs, with INVALID_ARGUMENT and prost's message naming
//! the message and field ("... PublishRequest.topic: invalid string value: data is not UTF-8
//! encoded"). tonic-prost's own codec would answer INTERNAL, blaming the server for the
//! caller's bytes. On a publish stream, the batches before the bad one are acknowledged and
//! the stream then ends with the same status.

use runnel_proto::v1::{self, admin_client::AdminClient, ingest_client::IngestClient};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;

mod common;
use common::*;

/// `runnel.v1.Header` with `key` as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawHeader {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", optional, tag = "2")]
    value: Option<Vec<u8>>,
}

/// `runnel.v1.Record`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawRecord {
    #[prost(bytes = "vec", optional, tag = "1")]
    key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    value: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "3")]
    headers: Vec<RawHeader>,
}

/// `runnel.v1.PublishRequest` with `topic` as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawPublish {
    #[prost(bytes = "vec", tag = "1")]
    topic: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<RawRecord>,
}

/// `runnel.v1.SensorReading` with `device_id` as raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawReading {
    #[prost(bytes = "vec", tag = "1")]
    device_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    event_time: Option<prost_types::Timestamp>,
    #[prost(double, tag = "3")]
    temperature_c: f64,
}

/// `runnel.v1.PublishSensorReadingsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawReadings {
    #[prost(string, tag = "1")]
    topic: String,
    #[prost(message, repeated, tag = "2")]
    readings: Vec<RawReading>,
}

/// A request with one raw bytes field 1: `CreateTopicRequest.name`, `SubscribeRequest.topic`.
#[derive(Clone, PartialEq, prost::Message)]
struct RawName {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
}

/// Call `path` with `req`; the answer is decoded as `Resp`.
async fn call<Req, Resp>(ch: &Channel, path: &'static str, req: Req) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<Req, Resp>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

const NOT_UTF8: &[u8] = b"dev\xff\xfe";

fn assert_refused(s: &tonic::Status, field: &str) {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(
        s.message().contains(field) && s.message().contains("UTF-8"),
        "{}",
        s.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_that_are_not_utf8_are_refused_and_append_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let ch = Channel::from_shared(format!("http://{}", b.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(ch.clone());
    admin
        .create_topic(v1::CreateTopicRequest {
            name: "u8".into(),
            partitions: 1,
            configs: Default::default(),
        })
        .await
        .unwrap();
    let record = |header_key: &[u8]| RawRecord {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: vec![RawHeader {
            key: header_key.to_vec(),
            value: None,
        }],
    };

    let e = call::<_, v1::PublishResponse>(
        &ch,
        "/runnel.v1.Ingest/Publish",
        RawPublish {
            topic: NOT_UTF8.to_vec(),
            records: vec![record(b"h")],
        },
    )
    .await
    .unwrap_err();
    assert_refused(&e, "topic");

    let e = call::<_, v1::PublishResponse>(
        &ch,
        "/runnel.v1.Ingest/Publish",
        RawPublish {
            topic: b"u8".to_vec(),
            records: vec![record(b"ok"), record(NOT_UTF8)],
        },
    )
    .await
    .unwrap_err();
    assert_refused(&e, "key");

    let e = call::<_, v1::PublishResponse>(
        &ch,
        "/runnel.v1.Ingest/PublishSensorReadings",
        RawReadings {
            topic: "u8".into(),
            readings: vec![RawReading {
                device_id: NOT_UTF8.to_vec(),
                event_time: Some(prost_types::Timestamp {
                    seconds: 1_755_434_096,
                    nanos: 0,
                }),
                temperature_c: 70.0,
            }],
        },
    )
    .await
    .unwrap_err();
    assert_refused(&e, "device_id");

    let e = call::<_, v1::TopicDescription>(
        &ch,
        "/runnel.v1.Admin/CreateTopic",
        RawName {
            name: NOT_UTF8.to_vec(),
        },
    )
    .await
    .unwrap_err();
    assert_refused(&e, "name");

    let e = call::<_, v1::SubscribeResponse>(
        &ch,
        "/runnel.v1.Subscribe/Subscribe",
        RawName {
            name: NOT_UTF8.to_vec(),
        },
    )
    .await
    .unwrap_err();
    assert_refused(&e, "topic");

    // A publish stream: the good batch before the bad one is acknowledged, then the stream
    // ends with INVALID_ARGUMENT and nothing of the bad batch is appended.
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let batches = vec![
        RawPublish {
            topic: b"u8".to_vec(),
            records: vec![record(b"ok")],
        },
        RawPublish {
            topic: b"u8".to_vec(),
            records: vec![record(b"ok"), record(NOT_UTF8)],
        },
    ];
    let mut acks = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(batches)),
            PathAndQuery::from_static("/runnel.v1.Ingest/PublishStream"),
            tonic_prost::ProstCodec::<RawPublish, v1::PublishResponse>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let first = acks
        .message()
        .await
        .unwrap()
        .expect("first batch acknowledged");
    assert_eq!(first.positions[0].offset, 0);
    let e = acks.message().await.unwrap_err();
    assert_refused(&e, "key");

    // Nothing else was appended or created, and the broker still serves good requests.
    let topics = admin
        .list_topics(v1::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert_eq!(topics.len(), 1);
    let d = admin
        .describe_topic(v1::DescribeTopicRequest { name: "u8".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.partitions[0].log_end, 1,
        "only the stream's good batch appended"
    );
    let ok = IngestClient::new(ch.clone())
        .publish(v1::PublishRequest {
            topic: "u8".into(),
            partition: None,
            records: vec![v1::Record {
                key: None,
                value: Some(b"fine".to_vec()),
                headers: vec![],
                timestamp_ms: None,
            }],
            acks: v1::Acks::All.into(),
            batch_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.positions[0].offset, 1);
    b.shutdown().await;
}
