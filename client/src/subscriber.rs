//! A subscriber to one partition that survives dropped streams.
//!
//! It remembers the offset after the last record it returned; when the stream breaks (broker
//! restart, network) it subscribes again from exactly there after a backoff, so the caller
//! sees every record once, in order. Errors that retrying cannot fix (unknown topic, offset
//! out of range, bad request) are returned.
//!
//! Given a cluster's endpoints ([`crate::Client::connect_any`]), a broken stream is resumed on
//! the next node (then the others in turn): every replica holds the same committed records at
//! the same offsets, so the next offset means the same record everywhere. A node that has not
//! caught up to that offset yet waits for it (or, lacking the records, answers UNAVAILABLE and
//! the next node is tried).

use std::collections::VecDeque;
use std::time::Duration;

use crate::endpoints::{Endpoints, OPEN_TIMEOUT};
use crate::resume::{self, Resumable};
use crate::ClientError;
use runnel_proto::v1::{self, subscribe_client::SubscribeClient, subscribe_request::Start};

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
    endpoints: Endpoints,
    config: SubscriberConfig,
    /// The offset to resume from, once any record or message has been seen.
    next_offset: Option<i64>,
    stream: Option<tonic::Streaming<v1::SubscribeResponse>>,
    buffer: VecDeque<v1::ConsumedRecord>,
    high_watermark: i64,
}

impl Subscriber {
    pub(crate) fn new(endpoints: Endpoints, config: SubscriberConfig) -> Self {
        Self {
            endpoints,
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

    /// The next record, waiting for one to be published if needed.
    pub async fn next(&mut self) -> Result<v1::ConsumedRecord, ClientError> {
        resume::next(self, "subscription stream ended").await
    }
}

impl Resumable for Subscriber {
    type Message = v1::SubscribeResponse;
    type Stream = tonic::Streaming<v1::SubscribeResponse>;
    type Item = v1::ConsumedRecord;

    fn stream(&mut self) -> &mut Option<Self::Stream> {
        &mut self.stream
    }

    async fn open(&mut self) -> Result<Self::Stream, tonic::Status> {
        let req = v1::SubscribeRequest {
            topic: self.config.topic.clone(),
            partition: self.config.partition,
            start: Some(self.start()),
            max_records: self.config.max_records,
        };
        self.endpoints
            .open(None, OPEN_TIMEOUT, |channel| {
                let req = req.clone();
                async move {
                    let stream = SubscribeClient::new(channel).subscribe(req).await?;
                    Ok::<_, tonic::Status>(stream.into_inner())
                }
            })
            .await
    }

    fn pop(&mut self) -> Option<v1::ConsumedRecord> {
        let r = self.buffer.pop_front()?;
        self.next_offset = Some(r.offset + 1);
        Some(r)
    }

    fn absorb(&mut self, msg: v1::SubscribeResponse) {
        self.high_watermark = msg.high_watermark;
        if msg.records.is_empty() {
            self.next_offset = Some(msg.next_offset);
        }
        self.buffer.extend(msg.records);
    }

    fn policy(&self) -> (u32, Duration) {
        (self.config.max_reconnects, self.config.max_backoff)
    }

    fn log_drop(&self, status: &tonic::Status, backoff: Duration) {
        tracing::debug!(
            topic = %self.config.topic,
            partition = self.config.partition,
            "subscription dropped ({status}); resuming at {:?} in {backoff:?}",
            self.next_offset
        );
    }

    fn moved_on(&mut self) {
        self.endpoints.advance();
    }
}
