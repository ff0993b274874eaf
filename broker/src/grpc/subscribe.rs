//! The `Subscribe` service: a server stream of one partition's records that follows the log.
//!
//! The stream is pulled, not pushed: the next message is read from the log only when tonic
//! asks for it, which it does only while HTTP/2 flow control lets it send. A client that stops
//! reading therefore pins at most one message of records in the server (plus the transport's
//! window), however far behind it falls.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use runnel_proto::v1::{self, subscribe_request::Start, subscribe_server::Subscribe};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::convert::consumed_from_kafka;
use super::error::GrpcError;
use crate::broker::Broker;
use crate::codec::batch;
use crate::partition::Partition;

/// Records per message unless the client asks for fewer.
const DEFAULT_MAX_RECORDS: usize = 500;
const MAX_RECORDS_CAP: usize = 10_000;
/// Bytes read from the log per message (at least one whole batch is always read).
const READ_BYTES: usize = 1 << 20;
/// How often an idle stream checks that its topic still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct SubscribeService {
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
}

impl SubscribeService {
    pub fn new(broker: Arc<Broker>, shutdown: watch::Receiver<bool>) -> Self {
        Self { broker, shutdown }
    }
}

/// One subscription's position in its partition. Also what `Alerts.Watch` follows, one per
/// partition of a pipeline's alerts topic.
pub(super) struct Cursor {
    broker: Arc<Broker>,
    topic: String,
    topic_id: uuid::Uuid,
    part: Arc<Partition>,
    next: i64,
    max_records: usize,
    shutdown: watch::Receiver<bool>,
    done: bool,
}

impl Cursor {
    /// A cursor at `next` of `part` (the partition `part.index` of topic `topic`).
    pub(super) fn new(
        broker: Arc<Broker>,
        topic: &crate::topics::Topic,
        part: Arc<Partition>,
        next: i64,
        max_records: u32,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let max_records = match usize::try_from(max_records).unwrap_or(MAX_RECORDS_CAP) {
            0 => DEFAULT_MAX_RECORDS,
            n => n.min(MAX_RECORDS_CAP),
        };
        Self {
            broker,
            topic: topic.name.clone(),
            topic_id: topic.id,
            part,
            next,
            max_records,
            shutdown,
            done: false,
        }
    }

    /// The next message, or `None` when the stream should end (shutdown).
    pub(super) async fn next_message(
        &mut self,
    ) -> Result<Option<v1::SubscribeResponse>, GrpcError> {
        loop {
            if *self.shutdown.borrow() {
                return Ok(None);
            }
            // Subscribe before reading so an append in between is not missed.
            let mut hw_rx = self.part.watch_high_watermark();
            let offsets = self.part.offsets();
            if self.next < offsets.log_start {
                return Err(GrpcError::OutOfRange(format!(
                    "offset {} of {:?} partition {} was removed by retention; the log now starts at {}",
                    self.next, self.topic, self.part.index, offsets.log_start
                )));
            }
            if self.next < offsets.high_watermark {
                let bytes = self
                    .part
                    .read(self.next, READ_BYTES)
                    .map_err(|e| GrpcError::Storage(format!("read failed: {e}")))?;
                let (records, next) = decode(bytes, self.part.index, self.next, self.max_records)?;
                let advanced = next > self.next;
                self.next = next;
                if !records.is_empty() {
                    return Ok(Some(v1::SubscribeResponse {
                        records,
                        next_offset: self.next,
                        high_watermark: offsets.high_watermark,
                    }));
                }
                if advanced {
                    continue; // only control records: skip them
                }
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = hw_rx.changed() => {}
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(IDLE_CHECK) => {
                    let same = self.broker.topics.get(&self.topic).is_some_and(|t| t.id == self.topic_id);
                    if !same {
                        return Err(GrpcError::TopicDeleted(self.topic.clone()));
                    }
                }
            }
        }
    }
}

/// Decode whole batches read from `from`, keeping records at or after `from`, at most `max`.
/// Returns the records and the offset after the last one taken (or after skipped control
/// batches).
pub(super) fn decode(
    mut bytes: Bytes,
    partition: i32,
    from: i64,
    max: usize,
) -> Result<(Vec<v1::ConsumedRecord>, i64), GrpcError> {
    let mut out = Vec::new();
    let mut next = from;
    while bytes.len() >= batch::HEADER_LEN && out.len() < max {
        let header = batch::parse_header(&bytes)
            .map_err(|e| GrpcError::Storage(format!("stored batch does not parse: {e}")))?;
        let mut one = bytes.split_to(header.total_len().min(bytes.len()));
        if header.is_control() {
            next = next.max(header.next_offset());
            continue;
        }
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut one)
            .map_err(|e| GrpcError::Storage(format!("stored batch does not decode: {e}")))?;
        for r in set.records {
            if r.offset < next || r.control {
                continue;
            }
            if out.len() >= max {
                break;
            }
            next = r.offset + 1;
            out.push(consumed_from_kafka(partition, r));
        }
        if out.len() < max {
            next = next.max(header.next_offset());
        }
    }
    Ok((out, next))
}

/// Where a subscription starts. `replicated`: cluster mode, where this node's copy of the
/// partition may be behind the one the reader came from (see [`offset_start`]).
pub(super) fn start_offset(
    part: &Partition,
    start: Option<Start>,
    replicated: bool,
) -> Result<i64, GrpcError> {
    let o = part.offsets();
    match start {
        None => Ok(o.high_watermark),
        Some(Start::Position(p)) => match v1::StartPosition::try_from(p) {
            Ok(v1::StartPosition::Earliest) => Ok(o.log_start),
            Ok(v1::StartPosition::Latest | v1::StartPosition::Unspecified) => Ok(o.high_watermark),
            Err(_) => Err(GrpcError::InvalidArgument(format!(
                "unknown start position {p}"
            ))),
        },
        Some(Start::Offset(off)) => offset_start(off, o, replicated),
        Some(Start::TimestampMs(ts)) => {
            let found = part
                .offset_for_timestamp(ts)
                .map_err(|e| GrpcError::Storage(format!("timestamp lookup failed: {e}")))?;
            let Some(found) = found else {
                return Ok(o.high_watermark);
            };
            // The index finds the batch; the exact record is the first at or after `ts`.
            let bytes = part
                .read(found.offset, 1)
                .map_err(|e| GrpcError::Storage(format!("read failed: {e}")))?;
            let (records, _) = decode(bytes, part.index, found.offset, usize::MAX)?;
            Ok(records
                .iter()
                .find(|r| r.timestamp_ms >= ts)
                .map_or(found.offset, |r| r.offset))
        }
    }
}

/// Where a subscription asking for offset `off` starts, given the partition's offsets here.
///
/// Single node: `off` must be in `log_start..=high_watermark` (else OUT_OF_RANGE). Cluster
/// mode: a reader that moved here from another node may be ahead of this replica's high
/// watermark (a follower catching up, a new leader before its first commit, a node just
/// restarted whose high watermark is the log start until its group reports a commit). The
/// committed log is the same on every replica, so `off` names the same record here: if this
/// replica has the records up to `off` (`off <= log_end`), the subscription starts there and
/// waits until they are committed (nothing above the high watermark is ever served); if not,
/// UNAVAILABLE, so the client tries another node or again later. Below the log start is
/// still OUT_OF_RANGE (retention removed it on every replica).
fn offset_start(
    off: i64,
    o: crate::partition::Offsets,
    replicated: bool,
) -> Result<i64, GrpcError> {
    if off >= o.log_start && off <= o.high_watermark {
        return Ok(off);
    }
    if replicated && off > o.high_watermark {
        if off <= o.log_end {
            return Ok(off);
        }
        return Err(GrpcError::NotYet(format!(
            "this node's copy of the partition ends at offset {} (committed up to {}), before offset {off}; another node may have it",
            o.log_end, o.high_watermark
        )));
    }
    Err(GrpcError::OutOfRange(format!(
        "offset {off} is outside the partition's range {}..={}",
        o.log_start, o.high_watermark
    )))
}

impl Cursor {
    /// The cursor's messages as a stream; it ends after the first error (sent as a status)
    /// or at shutdown.
    pub(super) fn into_stream(
        self,
    ) -> impl Stream<Item = Result<v1::SubscribeResponse, Status>> + Send {
        futures_util::stream::unfold(self, |mut c| async move {
            if c.done {
                return None;
            }
            match c.next_message().await {
                Ok(Some(msg)) => Some((Ok(msg), c)),
                Ok(None) => None,
                Err(e) => {
                    c.done = true;
                    Some((Err(Status::from(e)), c))
                }
            }
        })
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = Result<v1::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Subscribe for SubscribeService {
    type SubscribeStream = RecordStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let topic = self
            .broker
            .topics
            .get(&req.topic)
            .ok_or_else(|| GrpcError::UnknownTopic(req.topic.clone()))?;
        let part = usize::try_from(req.partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
            .cloned()
            .ok_or_else(|| GrpcError::UnknownPartition {
                topic: req.topic.clone(),
                partition: req.partition,
                partitions: topic.partitions.len(),
            })?;
        let next = start_offset(&part, req.start, self.broker.cluster().is_some())?;
        let cursor = Cursor::new(
            self.broker.clone(),
            &topic,
            part,
            next,
            req.max_records,
            self.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(cursor.into_stream())))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::builder::{
        control_type, encode_batch, encode_control_batch, leader_change_message, ProducerInfo,
        Record,
    };

    fn at(base: i64, mut b: BytesMut) -> BytesMut {
        batch::set_base_offset(&mut b, base);
        b
    }

    fn data(values: &[&str]) -> BytesMut {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record {
                value: Some(v.as_bytes().to_vec()),
                ..Record::default()
            })
            .collect();
        encode_batch(&records, ProducerInfo::default())
    }

    /// A Raft no-op as a replicated partition stores it.
    fn noop() -> BytesMut {
        encode_control_batch(control_type::LEADER_CHANGE, &leader_change_message(-1), -1)
    }

    #[test]
    fn a_replica_behind_the_reader_waits_for_records_it_has_and_sends_it_on_otherwise() {
        let o = crate::partition::Offsets {
            log_start: 5,
            high_watermark: 10,
            log_end: 14,
        };
        let code = |r: Result<i64, GrpcError>| r.map_err(|e| e.code());
        for replicated in [false, true] {
            assert_eq!(code(offset_start(5, o, replicated)), Ok(5));
            assert_eq!(code(offset_start(10, o, replicated)), Ok(10));
            assert_eq!(
                code(offset_start(4, o, replicated)),
                Err(tonic::Code::OutOfRange),
                "retention removed it everywhere"
            );
        }
        assert_eq!(
            code(offset_start(11, o, false)),
            Err(tonic::Code::OutOfRange)
        );
        assert_eq!(
            code(offset_start(11, o, true)),
            Ok(11),
            "stored, not yet committed here"
        );
        assert_eq!(code(offset_start(14, o, true)), Ok(14));
        assert_eq!(
            code(offset_start(15, o, true)),
            Err(tonic::Code::Unavailable),
            "not here: the client tries another node"
        );
    }

    #[test]
    fn decode_skips_control_batches_and_moves_past_them() {
        // records 0, 1 | no-op 2 | record 3 | no-op 4 (the last batch)
        let mut all = BytesMut::new();
        for b in [
            at(0, data(&["a", "b"])),
            at(2, noop()),
            at(3, data(&["c"])),
            at(4, noop()),
        ] {
            all.extend_from_slice(&b);
        }
        let all = all.freeze();
        let offsets = |r: &[v1::ConsumedRecord]| r.iter().map(|r| r.offset).collect::<Vec<_>>();
        let (got, next) = decode(all.clone(), 0, 0, usize::MAX).unwrap();
        assert_eq!((offsets(&got), next), (vec![0, 1, 3], 5));
        let (got, next) = decode(all.clone(), 0, 2, usize::MAX).unwrap();
        assert_eq!((offsets(&got), next), (vec![3], 5));
        let (got, next) = decode(all.clone(), 0, 0, 2).unwrap();
        assert_eq!((offsets(&got), next), (vec![0, 1], 2));
        // Only the trailing no-op: no record, but the cursor moves past it.
        let tail = all.slice(all.len() - noop().len()..);
        let (got, next) = decode(tail, 0, 4, usize::MAX).unwrap();
        assert_eq!((got.len(), next), (0, 5));
    }
}
