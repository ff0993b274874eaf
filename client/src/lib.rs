//! Async Rust client for Runnel's gRPC API (`runnel.v1`).
//!
//! - [`Client`]: a connection with one-shot calls (publish a batch, admin).
//! - [`Publisher`]: batches records with a linger time over one publish stream, with a bounded
//!   window of unacknowledged batches: when the broker is slower than the producer, `send`
//!   waits instead of buffering without limit. Given a cluster's endpoints
//!   ([`Client::connect_any`]), it follows leader hints and moves past nodes that are down.
//! - [`Subscriber`]: follows one partition and reconnects after a dropped stream, resuming at
//!   the offset after the last record it returned (no gap, no duplicate).
//! - [`sensor`]: typed helpers for the factory-sensor workload.
//! - [`AlertWatcher`]: follows the embedded processor's alerts and resumes after a dropped
//!   stream with no gap and no duplicate; [`Client::query_windows`]: a key's window results.
//!
//! Cluster mode: a client made with [`Client::connect_any`] knows every node's endpoint, and
//! everything made from it moves on when its node fails. A [`Publisher`] follows leader hints
//! and opens its next stream on another node; a [`Subscriber`] or an [`AlertWatcher`] whose
//! stream breaks resumes on the next node from exactly its position (every replica holds the
//! same committed records at the same offsets, and a node serves nothing above its high
//! watermark, so no gap and no duplicate); [`Client::query_windows`] tries the next node when
//! one is down (any node answers it: one that does not run the pipeline forwards the query to
//! the one that does). Opening a stream on one node is bounded by 5 s, a window query by
//! [`QUERY_TIMEOUT`]; readers retry
//! with a doubling backoff up to their `max_reconnects` and then fail with an error naming
//! every endpoint tried.
//! - [`simulate`]: deterministic, sans-io generators of sensor, clickstream and social-post
//!   events (with anomalies, late events and garbage) behind `runnel simulate`.

mod alerts;
mod endpoints;
mod error;
mod publisher;
mod resume;
pub mod sensor;
pub mod simulate;
mod subscriber;

use std::time::Duration;

pub use alerts::{AlertWatcher, AlertWatcherConfig, AlertsFrom};
pub use error::ClientError;
pub use publisher::{Delivery, Publisher, PublisherConfig};
pub use runnel_proto::v1;
pub use subscriber::{StartAt, Subscriber, SubscriberConfig};

use tonic::transport::{Channel, Endpoint};
use v1::{admin_client::AdminClient, ingest_client::IngestClient, windows_client::WindowsClient};

/// A connection to a Runnel broker's gRPC endpoint. Cheap to clone (one HTTP/2 channel).
///
/// A client made with [`Client::connect_any`] also knows the cluster's other endpoints: its
/// publishers, subscribers, alert watchers and window queries move to another one when theirs
/// fails (see the crate docs).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    /// Every endpoint URI given, the connected one first.
    endpoints: Vec<String>,
}

/// How long one node may take to answer [`Client::query_windows`] before the next is asked
/// (the scan of a long range of closed windows can take a while; a paused node never answers).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// `addr` as a URI: `host:port` gets `http://`.
fn uri_of(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// An endpoint for `uri` with the client's connection settings.
fn endpoint(uri: &str) -> Result<Endpoint, ClientError> {
    Ok(Endpoint::from_shared(uri.to_owned())
        .map_err(|e| ClientError::InvalidAddress(format!("{uri}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true))
}

impl Client {
    /// Connect to `addr`: `host:port` or a full `http://host:port` URI.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let uri = uri_of(addr);
        let channel = endpoint(&uri)?.connect().await?;
        Ok(Self {
            channel,
            endpoints: vec![uri],
        })
    }

    /// Connect to the first of `addrs` (the nodes of a cluster, each as for
    /// [`Client::connect`]) that answers, trying them in order; the others are kept as
    /// fallbacks (see the crate docs). Fails with the last error if none answers.
    pub async fn connect_any<S: AsRef<str>>(addrs: &[S]) -> Result<Self, ClientError> {
        let uris: Vec<String> = addrs.iter().map(|a| uri_of(a.as_ref())).collect();
        let mut last = ClientError::InvalidAddress("no address given".to_owned());
        for (i, uri) in uris.iter().enumerate() {
            match endpoint(uri)?.connect().await {
                Ok(channel) => {
                    let mut endpoints = uris.clone();
                    endpoints.rotate_left(i);
                    return Ok(Self { channel, endpoints });
                }
                Err(e) => last = e.into(),
            }
        }
        Err(last)
    }

    /// The underlying channel, for the generated clients in [`v1`].
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Generated admin client (create/delete/list/describe topics, offsets).
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Publish one batch and wait for its acknowledgement; returns where each record landed.
    pub async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: Vec<v1::Record>,
        acks: v1::Acks,
    ) -> Result<Vec<v1::RecordPosition>, ClientError> {
        let resp = IngestClient::new(self.channel.clone())
            .publish(v1::PublishRequest {
                topic: topic.to_owned(),
                partition,
                records,
                acks: acks.into(),
                batch_id: 0,
            })
            .await?;
        Ok(resp.into_inner().positions)
    }

    /// Publish typed sensor readings (stored as JSON keyed by device id).
    pub async fn publish_sensor_readings(
        &self,
        topic: &str,
        readings: Vec<v1::SensorReading>,
        acks: v1::Acks,
    ) -> Result<Vec<v1::RecordPosition>, ClientError> {
        let resp = IngestClient::new(self.channel.clone())
            .publish_sensor_readings(v1::PublishSensorReadingsRequest {
                topic: topic.to_owned(),
                readings,
                acks: acks.into(),
                batch_id: 0,
            })
            .await?;
        Ok(resp.into_inner().positions)
    }

    /// Create a topic (`partitions` 0 = the broker default).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
    ) -> Result<v1::TopicDescription, ClientError> {
        let resp = self
            .admin()
            .create_topic(v1::CreateTopicRequest {
                name: name.to_owned(),
                partitions,
                configs: Default::default(),
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// A publisher for `config.topic` over this connection (and the client's other endpoints
    /// when this one fails).
    pub fn publisher(&self, config: PublisherConfig) -> Publisher {
        Publisher::new(self.channel.clone(), self.endpoints.clone(), config)
    }

    /// A subscriber to one partition over this connection (and the client's other endpoints
    /// when this one fails).
    pub fn subscriber(&self, config: SubscriberConfig) -> Subscriber {
        Subscriber::new(self.endpoints(), config)
    }

    /// A watcher of a pipeline's alerts over this connection (and the client's other endpoints
    /// when this one fails).
    pub fn alert_watcher(&self, config: AlertWatcherConfig) -> AlertWatcher {
        AlertWatcher::new(self.endpoints(), config)
    }

    fn endpoints(&self) -> endpoints::Endpoints {
        endpoints::Endpoints::new(self.channel.clone(), self.endpoints.clone())
    }

    /// The latest result of each window of `key` whose start is in `start_ms..end_ms`
    /// (`end_ms` 0: no bound), from `pipeline` (empty: the broker's first), by window start.
    /// At most `max` windows (0: the broker's default); see the `truncated` flag.
    ///
    /// Any node of a cluster answers (one that does not run the pipeline forwards the query to
    /// the one that does); when this client's node is down, the next endpoint is asked.
    pub async fn query_windows(
        &self,
        pipeline: &str,
        key: &str,
        start_ms: i64,
        end_ms: i64,
        max: u32,
    ) -> Result<v1::QueryWindowsResponse, ClientError> {
        let req = v1::QueryWindowsRequest {
            pipeline: pipeline.to_owned(),
            key: key.to_owned(),
            start_ms,
            end_ms,
            all_revisions: false,
            max_windows: max,
        };
        let resp = self
            .endpoints()
            .open(None, QUERY_TIMEOUT, |channel| {
                let req = req.clone();
                async move { WindowsClient::new(channel).query(req).await }
            })
            .await?;
        Ok(resp.into_inner())
    }
}

/// A record with a key and value, no headers, timestamped by the broker.
pub fn record(key: Option<&[u8]>, value: &[u8]) -> v1::Record {
    v1::Record {
        key: key.map(<[u8]>::to_vec),
        value: Some(value.to_vec()),
        headers: Vec::new(),
        timestamp_ms: None,
    }
}
