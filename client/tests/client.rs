//! The client against a real in-process broker (127.0.0.1:0, temp dir), plus a stub broker
//! that never acknowledges, to show the publisher's backpressure.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runnel_broker::config::Config;
use runnel_broker::server::{start, Running};
use runnel_client::{record, sensor, v1, Client, PublisherConfig, StartAt, SubscriberConfig};
use tokio_stream::StreamExt;

async fn broker(dir: &std::path::Path, grpc: Option<SocketAddr>) -> Running {
    let config = Config {
        data_dir: dir.to_owned(),
        kafka_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_addr: grpc,
        ..Config::default()
    };
    start(config).await.expect("broker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_batches_and_acknowledges_every_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), None).await;
    let client = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    client.create_topic("p1", 1).await.unwrap();
    let publisher = client.publisher(PublisherConfig {
        linger: Duration::from_millis(10),
        max_batch_records: 64,
        max_in_flight: 2,
        ..PublisherConfig::new("p1")
    });
    let mut deliveries = Vec::new();
    for i in 0..1000u32 {
        let d = publisher
            .send(record(Some(b"k"), format!("v{i}").as_bytes()))
            .await
            .unwrap();
        deliveries.push(d);
    }
    publisher.flush().await.unwrap();
    for (i, d) in deliveries.into_iter().enumerate() {
        let pos = d.await.unwrap();
        assert_eq!((pos.partition, pos.offset), (0, i64::try_from(i).unwrap()));
    }
    // A lone record goes out after the linger time, without a flush.
    let d = publisher.send(record(None, b"last")).await.unwrap();
    let pos = tokio::time::timeout(Duration::from_secs(5), d)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pos.offset, 1000);
    publisher.close().await.unwrap();
    b.shutdown().await;
}

/// Linger 0 sends a batch as soon as the window lets it, without waiting for a timer; and a
/// flush that arrives with nothing gathered while the window is full must not spin (it once
/// did: the publisher busy-looped on the empty batch and never read the acknowledgements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_zero_sends_at_once_and_flushes_with_a_full_window() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), None).await;
    let client = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    client.create_topic("l0", 1).await.unwrap();
    for (batch, in_flight) in [(1, 1), (1, 8), (500, 1)] {
        let publisher = client.publisher(PublisherConfig {
            linger: Duration::ZERO,
            max_batch_records: batch,
            max_in_flight: in_flight,
            ..PublisherConfig::new("l0")
        });
        for round in 0..20 {
            let mut deliveries = Vec::new();
            for i in 0..20 {
                let v = format!("{batch}/{in_flight}/{round}/{i}");
                deliveries.push(publisher.send(record(None, v.as_bytes())).await.unwrap());
            }
            tokio::time::timeout(Duration::from_secs(10), publisher.flush())
                .await
                .expect("flush returns")
                .unwrap();
            for d in deliveries {
                tokio::time::timeout(Duration::from_secs(10), d)
                    .await
                    .expect("delivered")
                    .unwrap();
            }
        }
        publisher.close().await.unwrap();
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_reports_refusals_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), None).await;
    let client = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    let publisher = client.publisher(PublisherConfig::new("missing"));
    let d = publisher.send(record(None, b"x")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), publisher.flush())
        .await
        .expect("flush 1")
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), d)
        .await
        .expect("delivery 1")
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    // The publisher recovers with a new stream once the topic exists.
    client.create_topic("missing", 1).await.unwrap();
    let d = publisher.send(record(None, b"y")).await.unwrap();
    publisher.flush().await.unwrap();
    assert_eq!(d.await.unwrap().offset, 0);
    b.shutdown().await;
}

/// An Ingest server that takes publish streams and never answers; counts the batches.
struct NeverAcks(Arc<AtomicUsize>);

#[tonic::async_trait]
impl v1::ingest_server::Ingest for NeverAcks {
    async fn publish(
        &self,
        _: tonic::Request<v1::PublishRequest>,
    ) -> Result<tonic::Response<v1::PublishResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
    type PublishStreamStream = Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::PublishResponse, tonic::Status>> + Send>,
    >;
    async fn publish_stream(
        &self,
        request: tonic::Request<tonic::Streaming<v1::PublishRequest>>,
    ) -> Result<tonic::Response<Self::PublishStreamStream>, tonic::Status> {
        let mut incoming = request.into_inner();
        let seen = self.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(_batch)) = incoming.next().await {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::pending())))
    }
    async fn publish_sensor_readings(
        &self,
        _: tonic::Request<v1::PublishSensorReadingsRequest>,
    ) -> Result<tonic::Response<v1::PublishResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("stub"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_acknowledging_makes_send_wait() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::ingest_server::IngestServer::new(NeverAcks(
                seen.clone(),
            )))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let client = Client::connect(&addr.to_string()).await.unwrap();
    let (batch, window) = (10usize, 3usize);
    let publisher = client.publisher(PublisherConfig {
        linger: Duration::from_millis(1),
        max_batch_records: batch,
        max_in_flight: window,
        ..PublisherConfig::new("t")
    });
    let mut accepted = 0usize;
    let mut held = Vec::new();
    while let Ok(d) = tokio::time::timeout(
        Duration::from_millis(300),
        publisher.send(record(None, b"x")),
    )
    .await
    {
        held.push(d.unwrap());
        accepted += 1;
        assert!(accepted < 10_000, "send never pushed back");
    }
    // In flight + one gathering batch + the channel (one batch's worth).
    assert!(accepted <= batch * (window + 2), "accepted {accepted}");
    // Batches, not records: under load a linger can close a batch before it is full.
    assert_eq!(
        seen.load(Ordering::SeqCst),
        window,
        "exactly the window of batches was sent"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_resumes_after_the_broker_restarts_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), None).await;
    let grpc = b.grpc_addr;
    let client = Client::connect(&grpc.to_string()).await.unwrap();
    client.create_topic("r1", 1).await.unwrap();
    let batch = |from: u32| {
        (from..from + 10)
            .map(|i| record(None, format!("{i}").as_bytes()))
            .collect()
    };
    client
        .publish("r1", Some(0), batch(0), v1::Acks::All)
        .await
        .unwrap();
    let mut sub = client.subscriber(SubscriberConfig {
        max_records: 3,
        ..SubscriberConfig::new("r1", 0, StartAt::Earliest)
    });
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next().await.unwrap());
    }
    b.shutdown().await;
    // Same data dir, same gRPC address: the subscriber's reconnects find it again.
    let b = broker(dir.path(), Some(grpc)).await;
    let client2 = Client::connect(&grpc.to_string()).await.unwrap();
    client2
        .publish("r1", Some(0), batch(10), v1::Acks::All)
        .await
        .unwrap();
    while got.len() < 20 {
        let r = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap()
            .unwrap();
        got.push(r);
    }
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..20).collect::<Vec<_>>());
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(values, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(sub.position(), Some(20));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_readings_round_trip_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), None).await;
    let client = Client::connect(&b.grpc_addr.to_string()).await.unwrap();
    client.create_topic("sensor_events", 1).await.unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_755_434_096_789);
    let readings = vec![
        sensor::reading("MTR-1", at, 78.6, 0.12, "OK", "fab1", "L01"),
        sensor::reading("MTR-2", at, 91.0, 0.7, "WARN", "fab1", "L02"),
    ];
    client
        .publish_sensor_readings("sensor_events", readings, v1::Acks::All)
        .await
        .unwrap();
    let mut sub = client.subscriber(SubscriberConfig::new(
        "sensor_events",
        0,
        StartAt::Timestamp(0),
    ));
    let first = sub.next().await.unwrap();
    let j = sensor::parse(first.value.as_deref().unwrap()).unwrap();
    assert_eq!(
        (j.device_id.as_str(), j.ts.as_str(), j.temperature_c),
        ("MTR-1", "2025-08-17T12:34:56.789Z", 78.6)
    );
    assert_eq!(first.key.as_deref(), Some(&b"MTR-1"[..]));
    let second = sensor::parse(sub.next().await.unwrap().value.as_deref().unwrap()).unwrap();
    assert_eq!(second.status, "WARN");
    b.shutdown().await;
}
