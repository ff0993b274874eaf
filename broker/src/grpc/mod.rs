//! The gRPC API (`runnel.v1`, see `proto/`): Ingest, Subscribe and Admin services over the
//! shared [`Broker`], Alerts and Windows over the embedded processor's output topics, plus `grpc.health.v1` and server reflection so grpcurl and Kubernetes
//! probes work. Served beside the Kafka listener by [`crate::server::start`].
//!
//! In cluster mode every node serves reads from its own replicas (`Subscribe`, `Alerts.Watch`,
//! from an offset this replica may not have committed yet: see `subscribe::offset_start`) and
//! forwards `Windows.Query` to the node that runs the pipeline (`windows.rs`); publishes to a
//! follower are refused with the leader's address (`ingest.rs`).

pub mod admin;
pub mod alerts;
pub mod convert;
pub mod error;
pub mod ingest;
pub mod metrics_layer;
pub mod partitioner;
pub mod subscribe;
pub mod windows;

use std::sync::Arc;

use runnel_proto::v1::{
    admin_server::AdminServer, alerts_server::AlertsServer, ingest_server::IngestServer,
    subscribe_server::SubscribeServer, windows_server::WindowsServer,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

/// How long open calls may take to finish after shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// HTTP/2 receive window per stream. hyper's server default (1 MiB) holds two of the
/// client's default 512 KiB batches; the `Publisher` keeps up to eight in flight (4 MiB).
/// It is also what one stream can make the server buffer for a caller that stops reading.
const STREAM_WINDOW: u32 = 4 << 20;
/// HTTP/2 receive window per connection (all its streams together).
const CONNECTION_WINDOW: u32 = 8 << 20;

/// Why the gRPC server could not be set up or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serve the gRPC API on `listener` until `shutdown` turns true. Open streams (subscriptions)
/// end when it does, so shutdown does not wait for clients to hang up.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    // Requests as large as a Kafka frame may be; records are still held to max.message.bytes.
    let max_message = broker.config.max_frame_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IngestServer<ingest::IngestService>>()
        .await;
    health
        .set_serving::<SubscribeServer<subscribe::SubscribeService>>()
        .await;
    health
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    health
        .set_serving::<AlertsServer<alerts::AlertsService>>()
        .await;
    health
        .set_serving::<WindowsServer<windows::WindowsService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(runnel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl and older tools still ask the v1alpha reflection service.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(runnel_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let mut stop = shutdown.clone();
    let mut grace = shutdown.clone();
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .layer(metrics_layer::MetricsLayer::new(broker.metrics.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            IngestServer::new(ingest::IngestService::new(broker.clone(), shutdown.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            SubscribeServer::new(subscribe::SubscribeService::new(
                broker.clone(),
                shutdown.clone(),
            ))
            .max_decoding_message_size(max_message),
        )
        .add_service(
            AlertsServer::new(alerts::AlertsService::new(broker.clone(), shutdown.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            WindowsServer::new(windows::WindowsService::new(broker.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            AdminServer::new(admin::AdminService::new(broker))
                .max_decoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(
            // TCP_NODELAY: tonic's own `tcp_nodelay` does not reach sockets of an incoming
            // stream we pass in. Without it, Nagle holds each small write (acknowledgements,
            // WINDOW_UPDATEs) until the previous one is ACKed, and a client waiting for them
            // sends nothing to piggyback the ACK on: measured 1.7x (100 B) and 2.3x (1 KiB)
            // streaming publish throughput (BENCHMARKS.md, gRPC).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        );
    // Graceful shutdown waits for open calls; streams end on shutdown, but a client that never
    // reads its last messages must not hold the broker up forever.
    tokio::select! {
        served = server => served?,
        _ = async {
            let _ = grace.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("grpc: calls still open {SHUTDOWN_GRACE:?} after shutdown; closing them"),
    }
    Ok(())
}
