//! Typed helpers for the processor's results: an alert watcher that survives dropped streams,
//! and window queries.
//!
//! [`AlertWatcher`] keeps the position just after the last alert it returned (per partition
//! of the alerts topic); when the stream breaks it watches again from exactly there, so the
//! caller sees every alert once. [`AlertWatcher::position`] can be saved and passed back as
//! [`AlertsFrom::Position`] to continue in a later process.
//!
//! Given a cluster's endpoints ([`crate::Client::connect_any`]), a broken watch is resumed on
//! the next node (then the others in turn) from the same position: the alerts topic's
//! replicas hold the same committed alerts at the same offsets.

use std::collections::VecDeque;
use std::time::Duration;

use crate::endpoints::{Endpoints, OPEN_TIMEOUT};
use crate::resume::{self, Resumable};
use crate::ClientError;
use runnel_proto::v1::{self, alerts_client::AlertsClient, watch_alerts_request::From};

/// Where a watch starts.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertsFrom {
    /// Only alerts written after the watch starts.
    Now,
    /// Every alert still stored.
    Earliest,
    /// Alerts from this event time on (ms since the Unix epoch).
    EventTime(i64),
    /// Exactly after a saved [`AlertWatcher::position`].
    Position(v1::AlertPosition),
}

#[derive(Debug, Clone)]
pub struct AlertWatcherConfig {
    /// The pipeline; empty = the broker's first (the built-in "sensors").
    pub pipeline: String,
    pub from: AlertsFrom,
    /// Most alerts per message (0 = the broker's default).
    pub max_alerts: u32,
    /// Consecutive failed reconnects before `next` gives up with the last error.
    pub max_reconnects: u32,
    /// Longest wait between reconnects (the wait doubles from 50 ms up to this).
    pub max_backoff: Duration,
}

impl AlertWatcherConfig {
    pub fn new(from: AlertsFrom) -> Self {
        Self {
            pipeline: String::new(),
            from,
            max_alerts: 0,
            max_reconnects: 20,
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Follows a pipeline's alerts. See the module docs.
#[derive(Debug)]
pub struct AlertWatcher {
    endpoints: Endpoints,
    config: AlertWatcherConfig,
    /// Just after the last alert returned; known once the first message arrived.
    position: Option<v1::AlertPosition>,
    /// The position after the buffered alerts (the last message's `resume`).
    buffered_end: Option<v1::AlertPosition>,
    stream: Option<tonic::Streaming<v1::WatchAlertsResponse>>,
    buffer: VecDeque<v1::Alert>,
}

impl AlertWatcher {
    pub(crate) fn new(endpoints: Endpoints, config: AlertWatcherConfig) -> Self {
        Self {
            endpoints,
            config,
            position: None,
            buffered_end: None,
            stream: None,
            buffer: VecDeque::new(),
        }
    }

    /// The position just after the last alert returned (after the first message arrived).
    pub fn position(&self) -> Option<&v1::AlertPosition> {
        self.position.as_ref()
    }

    /// Drop the current stream (as a network failure would); the next `next` resumes.
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// The next alert, waiting for one to be written if needed.
    pub async fn next(&mut self) -> Result<v1::Alert, ClientError> {
        resume::next(self, "alert stream ended").await
    }
}

impl Resumable for AlertWatcher {
    type Message = v1::WatchAlertsResponse;
    type Stream = tonic::Streaming<v1::WatchAlertsResponse>;
    type Item = v1::Alert;

    fn stream(&mut self) -> &mut Option<Self::Stream> {
        &mut self.stream
    }

    async fn open(&mut self) -> Result<Self::Stream, tonic::Status> {
        let from = match (&self.position, &self.config.from) {
            (Some(p), _) | (None, AlertsFrom::Position(p)) => From::Position(p.clone()),
            (None, AlertsFrom::Now) => From::Start(v1::StartPosition::Latest.into()),
            (None, AlertsFrom::Earliest) => From::Start(v1::StartPosition::Earliest.into()),
            (None, AlertsFrom::EventTime(t)) => From::EventTimeMs(*t),
        };
        // Alerts still buffered were not returned: resume before them.
        self.buffer.clear();
        self.buffered_end = None;
        let req = v1::WatchAlertsRequest {
            pipeline: self.config.pipeline.clone(),
            from: Some(from),
            max_alerts: self.config.max_alerts,
        };
        self.endpoints
            .open(None, OPEN_TIMEOUT, |channel| {
                let req = req.clone();
                async move {
                    let stream = AlertsClient::new(channel).watch(req).await?;
                    Ok::<_, tonic::Status>(stream.into_inner())
                }
            })
            .await
    }

    fn pop(&mut self) -> Option<v1::Alert> {
        let a = self.buffer.pop_front()?;
        let pos = self.position.get_or_insert_with(Default::default);
        if let Some(slot) = usize::try_from(a.partition)
            .ok()
            .and_then(|p| pos.next_offsets.get_mut(p))
        {
            *slot = a.offset.saturating_add(1);
        }
        if self.buffer.is_empty() {
            // Also covers offsets the message skipped (control records).
            self.position = self.buffered_end.take();
        }
        Some(a)
    }

    fn absorb(&mut self, msg: v1::WatchAlertsResponse) {
        if msg.alerts.is_empty() {
            self.position = msg.resume;
        } else {
            self.buffered_end = msg.resume;
            self.buffer.extend(msg.alerts);
        }
    }

    fn policy(&self) -> (u32, Duration) {
        (self.config.max_reconnects, self.config.max_backoff)
    }

    fn log_drop(&self, status: &tonic::Status, backoff: Duration) {
        tracing::debug!(
            "alert watch dropped ({status}); resuming at {:?} in {backoff:?}",
            self.position
        );
    }

    fn moved_on(&mut self) {
        self.endpoints.advance();
    }
}
