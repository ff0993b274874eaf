//! The `Alerts` service: `Watch` streams a pipeline's alerts topic, every partition at once,
//! with a resume position in each message.
//!
//! It follows each partition with the `Subscribe` service's [`Cursor`] (pulled, so a client
//! that stops reading pins at most one message per partition) and merges them. The position
//! in a message is the per-partition offset just after everything delivered *up to and
//! including that message*, kept by the merge in delivery order; so watching again from it
//! continues with exactly the next alert of every partition — no gap, no duplicate. The first
//! message carries no alerts, only the start position.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use runnel_processor::PipelineConfig;
use runnel_proto::v1::{self, alerts_server::Alerts, subscribe_request::Start};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::convert::alert_from_record;
use super::error::GrpcError;
use super::subscribe::{start_offset, Cursor};
use crate::broker::Broker;

#[derive(Clone)]
pub struct AlertsService {
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
}

impl AlertsService {
    pub fn new(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) -> Self {
        Self { broker, shutdown }
    }
}

/// The configured pipeline called `name`; the first one for an empty name.
pub(super) fn find_pipeline(broker: &Broker, name: &str) -> Result<PipelineConfig, GrpcError> {
    let pipelines = crate::processing::configured_pipelines(&broker.config.processor);
    let found = if name.is_empty() {
        pipelines.into_iter().next()
    } else {
        pipelines.into_iter().find(|p| p.name == name)
    };
    found.ok_or_else(|| GrpcError::UnknownPipeline(name.to_owned()))
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<v1::WatchAlertsResponse, Status>> + Send>>;

/// One partition's messages, tagged with the partition's index.
type Tagged = Pin<Box<dyn Stream<Item = (usize, Result<v1::SubscribeResponse, Status>)> + Send>>;

/// The merged partitions and the resume position of what has been delivered.
struct Merge {
    inner: futures_util::stream::SelectAll<Tagged>,
    positions: Vec<i64>,
    key_field: String,
    /// The first message (no alerts, the start position) has been sent.
    started: bool,
    done: bool,
}

impl Merge {
    async fn next(&mut self) -> Option<Result<v1::WatchAlertsResponse, Status>> {
        if self.done {
            return None;
        }
        if !self.started {
            // Pins "now" (or a time) to offsets at once, so a client that disconnects before
            // any alert arrives can still resume without a gap.
            self.started = true;
            return Some(Ok(v1::WatchAlertsResponse {
                alerts: Vec::new(),
                resume: Some(v1::AlertPosition {
                    next_offsets: self.positions.clone(),
                }),
            }));
        }
        let (index, item) = self.inner.next().await?;
        match item {
            Ok(msg) => {
                if let Some(p) = self.positions.get_mut(index) {
                    *p = msg.next_offset;
                }
                Some(Ok(v1::WatchAlertsResponse {
                    alerts: msg
                        .records
                        .into_iter()
                        .map(|r| alert_from_record(r, &self.key_field))
                        .collect(),
                    resume: Some(v1::AlertPosition {
                        next_offsets: self.positions.clone(),
                    }),
                }))
            }
            Err(status) => {
                // One partition failing (its topic deleted, ...) ends the whole watch: a
                // stream that silently lost a partition would have gaps.
                self.done = true;
                Some(Err(status))
            }
        }
    }
}

#[tonic::async_trait]
impl Alerts for AlertsService {
    type WatchStream = AlertStream;

    async fn watch(
        &self,
        request: Request<v1::WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let pipeline = find_pipeline(&self.broker, &req.pipeline)?;
        let name = &pipeline.outputs.alerts.topic;
        let topic = self.broker.topics.get(name).ok_or_else(|| {
            GrpcError::NotYet(format!(
                "pipeline {:?} has not created its alerts topic {name:?} yet",
                pipeline.name
            ))
        })?;
        let starts: Vec<Option<Start>> = match req.from {
            None => vec![None; topic.partitions.len()],
            Some(v1::watch_alerts_request::From::Start(p)) => {
                vec![Some(Start::Position(p)); topic.partitions.len()]
            }
            Some(v1::watch_alerts_request::From::EventTimeMs(t)) => {
                vec![Some(Start::TimestampMs(t)); topic.partitions.len()]
            }
            Some(v1::watch_alerts_request::From::Position(p)) => {
                if p.next_offsets.len() != topic.partitions.len() {
                    return Err(GrpcError::InvalidArgument(format!(
                        "the position names {} partition(s); alerts topic {name:?} has {}",
                        p.next_offsets.len(),
                        topic.partitions.len()
                    ))
                    .into());
                }
                p.next_offsets
                    .into_iter()
                    .map(|o| Some(Start::Offset(o)))
                    .collect()
            }
        };
        let replicated = self.broker.cluster().is_some();
        let mut positions = Vec::with_capacity(starts.len());
        let mut streams = Vec::with_capacity(starts.len());
        for (index, (part, start)) in topic.partitions.iter().zip(starts).enumerate() {
            let next = start_offset(part, start, replicated)?;
            positions.push(next);
            let cursor = Cursor::new(
                self.broker.clone(),
                &topic,
                part.clone(),
                next,
                req.max_alerts,
                self.shutdown.clone(),
            );
            let tagged: Tagged = Box::pin(cursor.into_stream().map(move |m| (index, m)));
            streams.push(tagged);
        }
        let merge = Merge {
            inner: futures_util::stream::select_all(streams),
            positions,
            key_field: pipeline.source.key_field.clone(),
            started: false,
            done: false,
        };
        let stream = futures_util::stream::unfold(merge, |mut m| async move {
            let item = m.next().await?;
            Some((item, m))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
