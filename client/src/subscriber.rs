//! A subscriber to one partition that survives dropped streams.
//!
//! It remembers the offset after the last record it returned; when the stream breaks (broker
//! restart, network) it subscribes again from exactly there after a backoff, so the caller
//! sees every record once, in order. Errors that retrying cannot fix (unknown topic, offset
//! out of range, bad request) are returned.

use std::collections::VecDeque;
use std::time::Duration;

use runnel_proto::v1::{self, subscribe_client::SubscribeClient, subscribe_request::Start};
use tonic::transport::Channel;
use tonic::Code;

use crate::ClientError;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    pub topic: String,
    pub partition: i32,
    pub start: StartAt,
    /// Most records per message from the broker (0 = the broker's default).
    pub max_records: u32,
    /// Consecutive failed reconnects before `next` gives up with the last error.
    pub max_reconnects: u32,
    /// Longest wait between reconnects (the wait doubles from 50 ms up to this).
    pub max_backoff: Duration,
}

impl SubscriberConfig {
    pub fn new(topic: impl Into<String>, partition: i32, start: StartAt) -> Self {
        Self {
            topic: topic.into(),
            partition,
            start,
            max_records: 0,
            max_reconnects: 20,
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Follows one partition. See the module docs.
#[derive(Debug)]
pub struct Subscriber {
    client: SubscribeClient<Channel>,
    config: SubscriberConfig,
    /// The offset to resume from, once any record or message has been seen.
    next_offset: Option<i64>,
    stream: Option<tonic::Streaming<v1::SubscribeResponse>>,
    buffer: VecDeque<v1::ConsumedRecord>,
    high_watermark: i64,
}

/// Failures worth a reconnect: the transport or the broker going away, not a refusal.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted | Code::Internal
    )
}

impl Subscriber {
    pub(crate) fn new(channel: Channel, config: SubscriberConfig) -> Self {
        Self {
            client: SubscribeClient::new(channel),
            config,
            next_offset: None,
            stream: None,
            buffer: VecDeque::new(),
            high_watermark: 0,
        }
    }

    /// The offset the next record will have (known after the first message).
    pub fn position(&self) -> Option<i64> {
        self.next_offset
    }

    /// The partition's high watermark as of the last message (for lag).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    fn start(&self) -> Start {
        match (self.next_offset, self.config.start) {
            (Some(o), _) | (None, StartAt::Offset(o)) => Start::Offset(o),
            (None, StartAt::Earliest) => Start::Position(v1::StartPosition::Earliest.into()),
            (None, StartAt::Latest) => Start::Position(v1::StartPosition::Latest.into()),
            (None, StartAt::Timestamp(t)) => Start::TimestampMs(t),
        }
    }

    async fn open(&mut self) -> Result<tonic::Streaming<v1::SubscribeResponse>, tonic::Status> {
        let req = v1::SubscribeRequest {
            topic: self.config.topic.clone(),
            partition: self.config.partition,
            start: Some(self.start()),
            max_records: self.config.max_records,
        };
        Ok(self.client.subscribe(req).await?.into_inner())
    }

    /// The next record, waiting for one to be published if needed.
    pub async fn next(&mut self) -> Result<v1::ConsumedRecord, ClientError> {
        let mut failures = 0u32;
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(r) = self.buffer.pop_front() {
                self.next_offset = Some(r.offset + 1);
                return Ok(r);
            }
            let outcome = match self.stream.as_mut() {
                Some(s) => s.message().await,
                None => match self.open().await {
                    Ok(s) => {
                        self.stream = Some(s);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            let status = match outcome {
                Ok(Some(msg)) => {
                    failures = 0;
                    backoff = Duration::from_millis(50);
                    self.high_watermark = msg.high_watermark;
                    if msg.records.is_empty() {
                        self.next_offset = Some(msg.next_offset);
                    }
                    self.buffer.extend(msg.records);
                    continue;
                }
                // The broker ended the stream (e.g. shutting down): resubscribe.
                Ok(None) => tonic::Status::unavailable("subscription stream ended"),
                Err(s) => s,
            };
            self.stream = None;
            if !retryable(&status) || failures >= self.config.max_reconnects {
                return Err(ClientError::Status(status));
            }
            failures += 1;
            tracing::debug!(
                topic = %self.config.topic,
                partition = self.config.partition,
                "subscription dropped ({status}); resuming at {:?} in {backoff:?}",
                self.next_offset
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}
