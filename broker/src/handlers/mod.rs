//! Kafka API dispatch: one handler per API, selected by a closed enum of what Runnel supports.
//!
//! Handlers take the broker state and a decoded request and return a response whose Kafka
//! error codes say what went wrong; `Err` from [`handle_frame`] means the connection must close.

mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_topics;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::broker::Broker;
use crate::codec::frame::{self, FrameError};
use crate::log::Piece;

/// The APIs Runnel implements, with the versions it advertises. Nothing else is advertised.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9), // 0-2 are answered UNSUPPORTED_VERSION (old librdkafka needs 0 listed)
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4), // 0 must be listed: old librdkafka checks it exactly
    (ApiKey::FindCoordinator, 0, 3), // 0 must be listed: old librdkafka checks it exactly
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4), // KIP-320 position validation after a leader change
];

/// The advertised version range of an API, if Runnel supports it.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Why a request ends its connection.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {version} of {api:?} (supported {min}-{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Decode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {api:?} v{version} response: {reason}")]
    Encode {
        api: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Who is asking, and how to frame the answer.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// The client's address as the connection saw it (`None` when decoded without a socket).
    pub peer: Option<SocketAddr>,
}

/// A response that completes later (e.g. after an fsync); yields the frame to send, if any.
pub type Deferred = Pin<Box<dyn Future<Output = Result<Option<BytesMut>, RequestError>> + Send>>;

/// What a request produced. Side effects (appends) have all happened when this is returned, in
/// request order; only waiting may be deferred, and the connection sends replies in order.
pub enum Reply {
    /// Nothing is sent back (Produce with acks=0).
    None,
    /// A whole response frame.
    Now(BytesMut),
    /// A whole response frame in pieces, written in order (record data is not copied into
    /// one buffer; pieces in segment files are sent from there).
    Chunks(Vec<Piece>),
    /// A response frame once the future completes.
    Later(Deferred),
}

/// A decoded request of an API Runnel supports: the closed set handlers dispatch on.
/// Requests are decoded once and moved straight into their handler, so the size difference
/// between variants costs nothing worth a box.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Request {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
}

impl Request {
    /// The API's name as Kafka spells it (a metrics label).
    pub fn api_name(&self) -> &'static str {
        match self {
            Request::ApiVersions(_) => "ApiVersions",
            Request::Metadata(_) => "Metadata",
            Request::Produce(_) => "Produce",
            Request::Fetch(_) => "Fetch",
            Request::ListOffsets(_) => "ListOffsets",
            Request::CreateTopics(_) => "CreateTopics",
            Request::DeleteTopics(_) => "DeleteTopics",
            Request::CreatePartitions(_) => "CreatePartitions",
            Request::InitProducerId(_) => "InitProducerId",
            Request::FindCoordinator(_) => "FindCoordinator",
            Request::JoinGroup(_) => "JoinGroup",
            Request::SyncGroup(_) => "SyncGroup",
            Request::Heartbeat(_) => "Heartbeat",
            Request::LeaveGroup(_) => "LeaveGroup",
            Request::OffsetCommit(_) => "OffsetCommit",
            Request::OffsetFetch(_) => "OffsetFetch",
            Request::DescribeGroups(_) => "DescribeGroups",
            Request::ListGroups(_) => "ListGroups",
            Request::OffsetForLeaderEpoch(_) => "OffsetForLeaderEpoch",
        }
    }
}

/// What a frame decodes to.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A request to handle.
    Request(RequestContext, Request),
    /// A request answered without touching broker state (unsupported ApiVersions or Produce
    /// versions); `None` when no reply is owed.
    Answered(Option<BytesMut>),
}

/// Decode one request frame (sans-io): header peek, version checks, body decode.
pub fn decode_request(mut frame: BytesMut) -> Result<Decoded, RequestError> {
    let peek = frame::peek_header(&frame)?;
    let api = ApiKey::try_from(peek.api_key).map_err(|_| RequestError::UnknownApi(peek.api_key))?;
    let Some((min, max)) = supported_range(api) else {
        return Err(RequestError::UnknownApi(peek.api_key));
    };
    if api == ApiKey::ApiVersions && !(min..=max).contains(&peek.api_version) {
        // KIP-511: an unsupported ApiVersions version is answered in the v0 layout with
        // UNSUPPORTED_VERSION and our ranges, so the client can retry with one we support.
        return Ok(Decoded::Answered(Some(
            api_versions::unsupported_version_response(peek.correlation_id),
        )));
    }
    if !(min..=max).contains(&peek.api_version) {
        return Err(RequestError::UnsupportedVersion {
            api,
            version: peek.api_version,
            min,
            max,
        });
    }
    if api == ApiKey::Produce && peek.api_version < 3 {
        return Ok(Decoded::Answered(produce::legacy_unsupported(
            &frame,
            peek.api_version,
        )));
    }
    let version = peek.api_version;
    let header = frame::decode_header(api, version, &mut frame)?;
    let ctx = RequestContext {
        api,
        version,
        correlation_id: peek.correlation_id,
        client_id: header.client_id.map(|c| c.to_string()),
        peer: None,
    };
    let f = &mut frame;
    let request = match api {
        ApiKey::ApiVersions => Request::ApiVersions(decode(f, api, version)?),
        ApiKey::Metadata => Request::Metadata(decode(f, api, version)?),
        ApiKey::Produce => Request::Produce(decode(f, api, version)?),
        ApiKey::Fetch => Request::Fetch(decode(f, api, version)?),
        ApiKey::ListOffsets => Request::ListOffsets(decode(f, api, version)?),
        ApiKey::CreateTopics => Request::CreateTopics(decode(f, api, version)?),
        ApiKey::DeleteTopics => Request::DeleteTopics(decode(f, api, version)?),
        ApiKey::CreatePartitions => Request::CreatePartitions(decode(f, api, version)?),
        ApiKey::InitProducerId => Request::InitProducerId(decode(f, api, version)?),
        ApiKey::FindCoordinator => Request::FindCoordinator(decode(f, api, version)?),
        ApiKey::JoinGroup => Request::JoinGroup(decode(f, api, version)?),
        ApiKey::SyncGroup => Request::SyncGroup(decode(f, api, version)?),
        ApiKey::Heartbeat => Request::Heartbeat(decode(f, api, version)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(decode(f, api, version)?),
        ApiKey::OffsetCommit => Request::OffsetCommit(decode(f, api, version)?),
        ApiKey::OffsetFetch => Request::OffsetFetch(decode(f, api, version)?),
        ApiKey::DescribeGroups => Request::DescribeGroups(decode(f, api, version)?),
        ApiKey::ListGroups => Request::ListGroups(decode(f, api, version)?),
        ApiKey::OffsetForLeaderEpoch => Request::OffsetForLeaderEpoch(decode(f, api, version)?),
        _ => return Err(RequestError::UnknownApi(peek.api_key)),
    };
    Ok(Decoded::Request(ctx, request))
}

/// Handle one request frame from the client at `peer`.
pub async fn handle_frame(
    broker: &Broker,
    frame: BytesMut,
    peer: Option<SocketAddr>,
) -> Result<Reply, RequestError> {
    let (mut ctx, request) = match decode_request(frame)? {
        Decoded::Answered(reply) => return Ok(reply.map_or(Reply::None, Reply::Now)),
        Decoded::Request(ctx, request) => (ctx, request),
    };
    ctx.peer = peer;
    let started = std::time::Instant::now();
    let api = request.api_name();
    // The request id a log line carries: the connection's span adds `conn` and `peer`.
    let span = tracing::debug_span!(
        "kafka_request",
        api,
        v = ctx.version,
        corr = ctx.correlation_id,
        client = ctx.client_id.as_deref().unwrap_or("")
    );
    let reply = tracing::Instrument::instrument(dispatch(broker, &ctx, request), span).await;
    match reply {
        // A deferred reply (acks=all waiting for its fsync) is ready only when its future
        // completes: that is when the duration is taken, as Kafka's TotalTimeMs counts the
        // time a produce spends in purgatory.
        Ok(Reply::Later(wait)) => {
            let metrics = broker.metrics.clone();
            Ok(Reply::Later(Box::pin(async move {
                let frame = wait.await;
                metrics.kafka_request(api, started.elapsed().as_secs_f64());
                frame
            })))
        }
        reply => {
            broker
                .metrics
                .kafka_request(api, started.elapsed().as_secs_f64());
            reply
        }
    }
}

/// Runs the handler of `request`. (A produce with acks=all returns before its fsync wait;
/// `handle_frame` times the wait as part of the request.)
async fn dispatch(
    broker: &Broker,
    ctx: &RequestContext,
    request: Request,
) -> Result<Reply, RequestError> {
    let now = |body: Result<BytesMut, RequestError>| body.map(Reply::Now);
    match request {
        Request::Produce(req) => produce::handle(broker, ctx, req),
        Request::ApiVersions(req) => now(encode_body(
            ctx,
            &api_versions::handle(broker, ctx, req).await,
        )),
        Request::Metadata(req) => now(encode_body(ctx, &metadata::handle(broker, ctx, req).await)),
        Request::Fetch(req) => {
            let reply = fetch::handle(broker, ctx, req).await;
            let encoded = crate::codec::fetch_response::encode(
                ctx.correlation_id,
                ctx.version,
                &reply.response,
                &reply.records,
            );
            match encoded {
                Some(chunks) => Ok(Reply::Chunks(chunks)),
                None => now(encode_body(ctx, &reply.into_response())),
            }
        }
        Request::ListOffsets(req) => now(encode_body(
            ctx,
            &list_offsets::handle(broker, ctx, req).await,
        )),
        Request::CreateTopics(req) => now(encode_body(
            ctx,
            &create_topics::handle(broker, ctx, req).await,
        )),
        Request::DeleteTopics(req) => now(encode_body(
            ctx,
            &delete_topics::handle(broker, ctx, req).await,
        )),
        Request::CreatePartitions(req) => now(encode_body(
            ctx,
            &create_partitions::handle(broker, ctx, req).await,
        )),
        Request::InitProducerId(req) => now(encode_body(
            ctx,
            &init_producer_id::handle(broker, ctx, req).await,
        )),
        // Group requests are answered in order like all others; a JoinGroup or SyncGroup
        // holds its connection until the rebalance completes, as Kafka's muted channel does.
        Request::FindCoordinator(req) => now(encode_body(
            ctx,
            &find_coordinator::handle(broker, ctx, req).await,
        )),
        Request::JoinGroup(req) => now(encode_body(
            ctx,
            &join_group::handle(broker, ctx, req).await,
        )),
        Request::SyncGroup(req) => now(encode_body(
            ctx,
            &sync_group::handle(broker, ctx, req).await,
        )),
        Request::Heartbeat(req) => {
            now(encode_body(ctx, &heartbeat::handle(broker, ctx, req).await))
        }
        Request::LeaveGroup(req) => now(encode_body(
            ctx,
            &leave_group::handle(broker, ctx, req).await,
        )),
        Request::OffsetCommit(req) => now(encode_body(
            ctx,
            &offset_commit::handle(broker, ctx, req).await,
        )),
        Request::OffsetFetch(req) => now(encode_body(
            ctx,
            &offset_fetch::handle(broker, ctx, req).await,
        )),
        Request::DescribeGroups(req) => now(encode_body(
            ctx,
            &describe_groups::handle(broker, ctx, req).await,
        )),
        Request::ListGroups(req) => now(encode_body(
            ctx,
            &list_groups::handle(broker, ctx, req).await,
        )),
        Request::OffsetForLeaderEpoch(req) => now(encode_body(
            ctx,
            &offset_for_leader_epoch::handle(broker, ctx, req).await,
        )),
    }
}

fn decode<T: Decodable>(
    frame: &mut BytesMut,
    api: ApiKey,
    version: i16,
) -> Result<T, RequestError> {
    T::decode(frame, version).map_err(|e| RequestError::Decode {
        api,
        version,
        reason: e.to_string(),
    })
}

/// Encode a whole response frame for `ctx`'s request.
pub(crate) fn encode_body<M: Encodable>(
    ctx: &RequestContext,
    body: &M,
) -> Result<BytesMut, RequestError> {
    let mut out = BytesMut::new();
    let header = ctx.api.response_header_version(ctx.version);
    frame::encode_response(&mut out, ctx.correlation_id, header, body, ctx.version).map_err(
        |e| RequestError::Encode {
            api: ctx.api,
            version: ctx.version,
            reason: e.to_string(),
        },
    )?;
    Ok(out)
}

/// Kafka error codes used by the handlers.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const INVALID_REQUEST: i16 = 42;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// A request's `current_leader_epoch` is older than the leader's.
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    /// A request's `current_leader_epoch` is newer than the leader's.
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes at all decode to a request or an error, never a panic.
        #[test]
        fn arbitrary_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(BytesMut::from(&data[..]));
        }

        /// A valid header for each supported API followed by junk: still no panic.
        #[test]
        fn junk_bodies_never_panic(which in 0..SUPPORTED.len(), version in 0i16..14, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (key, _, _) = SUPPORTED[which];
            let mut frame = BytesMut::new();
            frame.extend_from_slice(&(key as i16).to_be_bytes());
            frame.extend_from_slice(&version.to_be_bytes());
            frame.extend_from_slice(&7i32.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = decode_request(frame);
        }
    }

    /// The value of the sample whose name-and-labels part is exactly `series`.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// An acks=all produce is timed until its fsync wait ends, not until the handler returns:
    /// the request is counted only once its reply is ready, and it took at least as long as
    /// the one fsync that made it durable (which began after its append).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acks_all_produce_is_timed_until_durable() {
        use crate::codec::builder::{encode_batch, ProducerInfo, Record};
        use crate::kafka_client::connection::encode_request;
        use bytes::Buf;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, TopicName};
        use kafka_protocol::protocol::StrBytes;

        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config {
            data_dir: dir.path().to_owned(),
            ..crate::config::Config::default()
        };
        let b = Broker::open(config).unwrap();
        b.topics.get_or_auto_create("t").unwrap();
        let records = vec![Record {
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
            timestamp: 1_000,
        }];
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(
                        encode_batch(&records, ProducerInfo::default()).freeze(),
                    ))])]);
        // `handle_frame` takes a frame without its length prefix.
        let mut frame = encode_request(&req, 9, 1, &StrBytes::from_static_str("test")).unwrap();
        frame.advance(4);

        let count = r#"runnel_kafka_requests_total{api="Produce"}"#;
        let Reply::Later(wait) = handle_frame(&b, frame, None).await.unwrap() else {
            panic!("an acks=all produce waits for its fsync");
        };
        assert_eq!(sample(&b.metrics.render(&b), count), 0.0);
        assert!(wait.await.unwrap().is_some());
        let text = b.metrics.render(&b);
        assert_eq!(sample(&text, count), 1.0);
        let fsyncs = sample(&text, "runnel_log_fsync_duration_seconds_count");
        assert_eq!(fsyncs, 1.0, "one group-commit round");
        let took = sample(
            &text,
            r#"runnel_kafka_request_duration_seconds_sum{api="Produce"}"#,
        );
        let fsync = sample(&text, "runnel_log_fsync_duration_seconds_sum");
        assert!(took >= fsync, "produce {took} s < its fsync {fsync} s");
    }

    #[test]
    fn unknown_api_is_an_error_not_a_panic() {
        let frame = BytesMut::from(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1][..]);
        assert!(matches!(
            decode_request(frame),
            Err(RequestError::UnknownApi(0x7f7f))
        ));
    }
}
