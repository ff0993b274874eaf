//! A batching publisher over one `PublishStream`.
//!
//! `send` hands a record to a background task through a bounded channel. The task groups
//! records into batches (up to `max_batch_records` / `max_batch_bytes`, or whatever has
//! gathered after `linger`) and keeps at most `max_in_flight` batches unacknowledged. When the
//! window is full and a batch is ready, the task stops taking records, the channel fills, and
//! `send` waits: memory stays bounded by the window, whatever the producer's rate.
//!
//! Acknowledgements arrive in order. If the stream fails, every unacknowledged record gets the
//! error (its outcome is unknown: it may be stored) and the next batch opens a new stream;
//! records are never re-sent automatically, so nothing is duplicated behind the caller's back.
//!
//! Cluster mode: a node that does not lead the partition ends the stream with UNAVAILABLE
//! and `runnel-leader: <node id> <grpc addr>`; the next stream opens on that address (the
//! failed records still get the error, which keeps its metadata).
//!
//! Endpoint fallback: a publisher knows the client's endpoints ([`crate::Client::connect_any`]).
//! Opening a stream tries the hinted leader first (if the last failure named one), then the
//! current endpoint, then the others in turn, each bounded by `OPEN_TIMEOUT`,
//! moving on only past retryable failures (a node down, unreachable, paused or shutting
//! down): the rotation in `endpoints.rs`, shared with the subscriber and the alert watcher. Nothing
//! is sent on a stream before it opens, so trying another endpoint re-sends nothing: the
//! no-duplicate rule above holds, and the batch fails only if no endpoint opens a stream.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use runnel_proto::v1::{self, ingest_client::IngestClient};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::endpoints::{Endpoints, OPEN_TIMEOUT};
use crate::ClientError;

/// How a [`Publisher`] batches and how much it keeps in flight.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub topic: String,
    /// `None`: the broker picks each record's partition from its key.
    pub partition: Option<i32>,
    /// How long the first record of a batch may wait for more to join it.
    pub linger: Duration,
    pub max_batch_records: usize,
    /// Approximate payload bytes (keys, values, headers) per batch.
    pub max_batch_bytes: usize,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    pub acks: v1::Acks,
}

impl PublisherConfig {
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            linger: Duration::from_millis(5),
            max_batch_records: 500,
            max_batch_bytes: 512 * 1024,
            max_in_flight: 8,
            acks: v1::Acks::All,
        }
    }
}

type Ack = oneshot::Sender<Result<v1::RecordPosition, ClientError>>;

enum Command {
    Record(v1::Record, Ack),
    Flush(oneshot::Sender<()>),
}

/// Resolves to where the record was stored once its batch is acknowledged.
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Result<v1::RecordPosition, ClientError>>);

impl Future for Delivery {
    type Output = Result<v1::RecordPosition, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// A batching, back-pressured publisher for one topic. See the module docs.
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// `channel` is connected to `endpoints[0]`; the other endpoints are fallbacks.
    pub(crate) fn new(channel: Channel, endpoints: Vec<String>, config: PublisherConfig) -> Self {
        let capacity = config.max_batch_records.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(run(Endpoints::new(channel, endpoints), config, rx));
        Self { tx, task }
    }

    /// Queue a record; waits while the in-flight window is full (backpressure). The returned
    /// [`Delivery`] resolves when the record's batch is acknowledged.
    pub async fn send(&self, record: v1::Record) -> Result<Delivery, ClientError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Command::Record(record, ack))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Delivery(rx))
    }

    /// Send what is queued now and wait until everything sent before this call is
    /// acknowledged (or failed).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Flush(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Flush and stop the background task.
    pub async fn close(self) -> Result<(), ClientError> {
        let flushed = self.flush().await;
        drop(self.tx);
        let _ = self.task.await;
        flushed
    }
}

/// An open publish stream: where to send batches and where their acks come from.
struct Stream {
    requests: mpsc::Sender<v1::PublishRequest>,
    acks: tonic::Streaming<v1::PublishResponse>,
}

struct Batcher {
    /// The client's endpoints (then leader hints not among them) and the one in use.
    endpoints: Endpoints,
    config: PublisherConfig,
    stream: Option<Stream>,
    /// Records gathering into the next batch, with their acks.
    records: Vec<v1::Record>,
    waiters: Vec<Ack>,
    bytes: usize,
    deadline: Option<Instant>,
    next_id: u64,
    /// Sent batches awaiting acknowledgement, oldest first.
    in_flight: VecDeque<(u64, Vec<Ack>)>,
    /// Flush requests waiting for the batch with this id (and all before it).
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// The partition leader a node named when it refused the stream: the next stream opens
    /// there.
    redirect: Option<String>,
}

fn payload_len(r: &v1::Record) -> usize {
    let h: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + h
}

fn status_copy(s: &tonic::Status) -> ClientError {
    ClientError::Status(tonic::Status::with_metadata(
        s.code(),
        s.message().to_owned(),
        s.metadata().clone(),
    ))
}

/// The gRPC address of a `runnel-leader: <node id> <grpc addr>` hint, if the status has one.
fn leader_address(s: &tonic::Status) -> Option<String> {
    let hint = s.metadata().get("runnel-leader")?.to_str().ok()?;
    let (_, addr) = hint.split_once(' ')?;
    Some(addr.trim().to_owned()).filter(|a| !a.is_empty())
}

impl Batcher {
    fn full(&self) -> bool {
        self.records.len() >= self.config.max_batch_records.max(1)
            || self.bytes >= self.config.max_batch_bytes
    }

    fn window_open(&self) -> bool {
        self.in_flight.len() < self.config.max_in_flight.max(1)
    }

    fn push(&mut self, record: v1::Record, ack: Ack) {
        if self.records.is_empty() {
            self.deadline = Some(Instant::now() + self.config.linger);
        }
        self.bytes += payload_len(&record);
        self.records.push(record);
        self.waiters.push(ack);
    }

    /// Send the gathering batch (if any) on the stream, opening one if needed.
    async fn send_batch(&mut self) {
        if self.records.is_empty() {
            // Nothing gathered (a flush set the deadline while the window was full): no timer.
            self.deadline = None;
            return;
        }
        let records = std::mem::take(&mut self.records);
        let waiters = std::mem::take(&mut self.waiters);
        self.bytes = 0;
        self.deadline = None;
        let id = self.next_id;
        self.next_id += 1;
        if self.stream.is_none() {
            match self.open().await {
                Ok(s) => self.stream = Some(s),
                Err(e) => {
                    for w in waiters {
                        let _ = w.send(Err(status_copy(&e)));
                    }
                    self.release_flushes();
                    return;
                }
            }
        }
        let req = v1::PublishRequest {
            topic: self.config.topic.clone(),
            partition: self.config.partition,
            records,
            acks: self.config.acks.into(),
            batch_id: id,
        };
        let sent = match &self.stream {
            Some(s) => s.requests.send(req).await.is_ok(),
            None => false,
        };
        self.in_flight.push_back((id, waiters));
        if !sent {
            self.fail_stream(&tonic::Status::unavailable("publish stream closed"));
        }
    }

    /// Open a stream on the first endpoint that takes one, in the order the module docs give.
    async fn open(&mut self) -> Result<Stream, tonic::Status> {
        let hint = self.redirect.take();
        let depth = self.config.max_in_flight.max(1);
        self.endpoints
            .open(hint.as_deref(), OPEN_TIMEOUT, |channel| {
                let (requests, rx) = mpsc::channel(depth);
                async move {
                    let acks = IngestClient::new(channel)
                        .publish_stream(ReceiverStream::new(rx))
                        .await?;
                    Ok::<_, tonic::Status>(Stream {
                        requests,
                        acks: acks.into_inner(),
                    })
                }
            })
            .await
    }

    fn on_ack(&mut self, resp: v1::PublishResponse) {
        let Some((id, waiters)) = self.in_flight.pop_front() else {
            return;
        };
        if id != resp.batch_id || resp.positions.len() != waiters.len() {
            let s = tonic::Status::internal(format!(
                "acknowledgement for batch {} does not match batch {id}",
                resp.batch_id
            ));
            for w in waiters {
                let _ = w.send(Err(status_copy(&s)));
            }
            self.fail_stream(&s);
            return;
        }
        for (w, p) in waiters.into_iter().zip(resp.positions) {
            let _ = w.send(Ok(p));
        }
        self.release_flushes();
    }

    /// Fail every unacknowledged batch and drop the stream; the next batch opens a new one.
    fn fail_stream(&mut self, status: &tonic::Status) {
        tracing::warn!("publish stream failed: {status}");
        self.stream = None;
        if let Some(addr) = leader_address(status) {
            self.redirect = Some(addr);
        }
        for (_, waiters) in self.in_flight.drain(..) {
            for w in waiters {
                let _ = w.send(Err(status_copy(status)));
            }
        }
        self.release_flushes();
    }

    /// Answer flushes whose batches are no longer in flight.
    fn release_flushes(&mut self) {
        // Done: the batch was sent (its id is below next_id) and is no longer in flight.
        let oldest = self.in_flight.front().map_or(u64::MAX, |(id, _)| *id);
        let sent_below = self.next_id;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(id, _)| *id < oldest && *id < sent_below);
        self.flushes = waiting;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }
}

async fn next_ack(
    stream: &mut Option<Stream>,
) -> Result<Option<v1::PublishResponse>, tonic::Status> {
    match stream {
        Some(s) => s.acks.message().await,
        None => std::future::pending().await,
    }
}

async fn run(endpoints: Endpoints, config: PublisherConfig, mut rx: mpsc::Receiver<Command>) {
    let mut b = Batcher {
        endpoints,
        config,
        stream: None,
        records: Vec::new(),
        waiters: Vec::new(),
        bytes: 0,
        deadline: None,
        next_id: 0,
        in_flight: VecDeque::new(),
        flushes: Vec::new(),
        redirect: None,
    };
    let mut closing = false;
    loop {
        // A batch whose linger has run out leaves now, without a trip through the timer: with
        // linger 0, tokio's 1 ms timer resolution added ~1.2 ms to every publish (p50 1.48 ->
        // 0.26 ms at 2,000 rec/s, acks=leader). Records that arrive while the window is full
        // still gather into the next batch, as with Kafka's linger.ms=0.
        let lingered = !b.records.is_empty() && b.deadline.is_some_and(|d| d <= Instant::now());
        if b.window_open() && (b.full() || lingered || (closing && !b.records.is_empty())) {
            b.send_batch().await;
            continue;
        }
        if closing && b.records.is_empty() && b.in_flight.is_empty() {
            return;
        }
        let accept = !closing && !b.full();
        let linger = b.deadline.filter(|_| b.window_open());
        let waiting_acks = !b.in_flight.is_empty();
        tokio::select! {
            cmd = rx.recv(), if accept => match cmd {
                Some(Command::Record(r, ack)) => b.push(r, ack),
                Some(Command::Flush(tx)) => {
                    let last = b.next_id;
                    if b.records.is_empty() && b.in_flight.is_empty() {
                        let _ = tx.send(());
                    } else {
                        // Wait for the batch now gathering (it gets id `last`) or, if none,
                        // for the newest one in flight.
                        let id = if b.records.is_empty() { last.saturating_sub(1) } else { last };
                        b.flushes.push((id, tx));
                        if b.window_open() {
                            b.send_batch().await;
                        } else {
                            b.deadline = Some(Instant::now());
                        }
                    }
                }
                None => closing = true,
            },
            _ = sleep_until(linger), if linger.is_some() => b.send_batch().await,
            ack = next_ack(&mut b.stream), if waiting_acks => match ack {
                Ok(Some(resp)) => b.on_ack(resp),
                Ok(None) => b.fail_stream(&tonic::Status::unavailable("publish stream ended")),
                Err(status) => b.fail_stream(&status),
            },
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_hint_names_the_next_address() {
        let mut s = tonic::Status::unavailable("not the leader");
        assert_eq!(leader_address(&s), None);
        s.metadata_mut()
            .insert("runnel-leader", "2 10.0.0.2:9093".parse().unwrap());
        assert_eq!(leader_address(&s).as_deref(), Some("10.0.0.2:9093"));
        let copied = status_copy(&s);
        let ClientError::Status(c) = copied else {
            panic!("a status")
        };
        assert_eq!(leader_address(&c).as_deref(), Some("10.0.0.2:9093"));
        s.metadata_mut()
            .insert("runnel-leader", "2".parse().unwrap());
        assert_eq!(leader_address(&s), None, "an id alone is no address");
    }
}
