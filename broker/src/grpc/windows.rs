//! The `Windows` service: `Query` answers one key's window results over a range of window
//! starts: the closed ones read from the pipeline's aggregates output topic, the open ones
//! from the running pipeline's live state.
//!
//! Why closed windows come from the topic and not the processor's state: the state holds only
//! windows still open or within their allowed lateness, while the topic holds every result
//! the processor committed, exactly once, including those whose state is long dropped.
//! Records are timestamped with their window's start, so the time index finds where windows
//! starting at or after `start_ms` begin; the scan from there to the high watermark runs on a
//! blocking thread (file reads).
//!
//! Open windows exist only in the state, which the pipeline's driver owns: the query goes to
//! the driver ([`crate::processing::PipelineQueries`]), which answers between two steps. The
//! state is asked first and the topic second, so a window that closes in between is found
//! in the topic and its (stale) open copy is dropped: each window is answered once.
//!
//! Cluster mode: a pipeline runs on one node, the leader of its journal
//! (`crate::cluster_processing`). A node that does not run it **forwards** the query to that
//! node's gRPC address (the `grpc` entry of `[cluster] nodes`, as in the publish path's
//! `runnel-leader` hint) and relays the answer, so every node answers the same open windows;
//! the forwarded request carries `runnel-forwarded` and is never forwarded again (a node that
//! got one but no longer runs the pipeline answers UNAVAILABLE: placement moved, retry). When
//! no node is known to run the pipeline yet, or its node has no gRPC address configured, the
//! answer is UNAVAILABLE (with `runnel-leader: <node id>` when a node is known), never the
//! closed windows alone. Forwarding rather than redirecting: a query is read-only and
//! idempotent, so a lost answer costs a retry, not an unknown outcome (the reason publishes
//! are redirected), and every client (grpcurl included) gets the answer without following
//! anything; the cost is one extra hop, bounded by [`FORWARD_TIMEOUT`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_processor::driver::journal_topic;
use runnel_proto::v1::{self, windows_client::WindowsClient, windows_server::Windows};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::alerts::find_pipeline;
use super::convert::window_from_record;
use super::error::{GrpcError, LeaderHint, LEADER_METADATA};
use super::subscribe::decode;
use crate::broker::Broker;
use crate::partition::Partition;

/// Windows per answer unless the client asks for fewer.
const DEFAULT_MAX_WINDOWS: usize = 1000;
const MAX_WINDOWS_CAP: usize = 10_000;
/// Bytes read from the log per step of the scan.
const READ_BYTES: usize = 1 << 20;
/// How long the pipeline's driver has to answer for its open windows (it answers between
/// steps, so this bounds one step, not the query).
const OPEN_WINDOWS_TIMEOUT: Duration = Duration::from_secs(5);

/// Request metadata of a query forwarded by another node: answered here, never forwarded.
pub const FORWARDED_METADATA: &str = "runnel-forwarded";
/// How long the pipeline's node has to answer a forwarded query.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the pipeline's node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct WindowsService {
    broker: Arc<Broker>,
    /// Channels to the gRPC addresses queries were forwarded to (they reconnect by themselves).
    peers: Arc<Mutex<HashMap<String, Channel>>>,
}

impl WindowsService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            peers: Arc::default(),
        }
    }

    /// Where a query for `pipeline`, whose driver does not run in this process, is answered.
    fn route(&self, pipeline: &str, forwarded: bool) -> Route {
        let Some(cluster) = self.broker.cluster() else {
            return Route::Here;
        };
        let leader = cluster
            .leader_of(&journal_topic(pipeline), 0)
            .map(|(id, _)| id);
        route(
            self.broker.config.processor.enabled,
            forwarded,
            cluster.node_id,
            leader,
            |id| cluster.config.node(id).and_then(|n| n.grpc.clone()),
            pipeline,
        )
    }

    /// The query answered by the node at `addr` (which runs the pipeline).
    async fn forward(
        &self,
        node: i32,
        addr: &str,
        req: v1::QueryWindowsRequest,
    ) -> Result<Response<v1::QueryWindowsResponse>, Status> {
        let channel = self.channel_to(addr)?;
        let mut request = Request::new(req);
        request
            .metadata_mut()
            .insert(FORWARDED_METADATA, MetadataValue::from_static("1"));
        request.set_timeout(FORWARD_TIMEOUT);
        let answered =
            tokio::time::timeout(FORWARD_TIMEOUT, WindowsClient::new(channel).query(request))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::unavailable(format!(
                        "no answer within {FORWARD_TIMEOUT:?}"
                    )))
                });
        match answered {
            Ok(resp) => Ok(Response::new(resp.into_inner())),
            Err(s) => {
                let mut status = Status::new(
                    s.code(),
                    format!(
                        "node {node} at {addr}, which runs the pipeline, did not answer the forwarded query: {}",
                        s.message()
                    ),
                );
                if let Ok(v) = MetadataValue::try_from(format!("{node} {addr}")) {
                    status.metadata_mut().insert(LEADER_METADATA, v);
                }
                Err(status)
            }
        }
    }

    fn channel_to(&self, addr: &str) -> Result<Channel, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("invalid grpc address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        peers.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Where a query is answered when the pipeline's driver does not run in this process.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Here, with the closed windows only, as on a single node: not a cluster (the pipeline is
    /// still starting or stopped), or the processor is disabled (it runs nowhere).
    Here,
    /// By the node that runs the pipeline.
    Forward { node: i32, addr: String },
    /// Nowhere now (UNAVAILABLE, retry): why, and the node that runs it if known.
    Unavailable {
        why: String,
        node: Option<LeaderHint>,
    },
}

/// The routing decision, without I/O: `leader` is the node leading the pipeline's journal as
/// this node knows it (the node that runs it), `grpc_of` a node's gRPC address.
fn route(
    processor_enabled: bool,
    forwarded: bool,
    this_node: i32,
    leader: Option<i32>,
    grpc_of: impl Fn(i32) -> Option<String>,
    pipeline: &str,
) -> Route {
    if !processor_enabled {
        return Route::Here;
    }
    let unavailable = |why: String, node: Option<LeaderHint>| Route::Unavailable { why, node };
    if forwarded {
        return unavailable(
            format!("pipeline {pipeline:?} does not run on this node (any more); retry"),
            None,
        );
    }
    match leader {
        None => unavailable(
            format!("no node runs pipeline {pipeline:?} yet (its journal has no leader); retry shortly"),
            None,
        ),
        Some(id) if id == this_node => unavailable(
            format!("pipeline {pipeline:?} is starting on this node; retry shortly"),
            None,
        ),
        Some(id) => match grpc_of(id) {
            Some(addr) => Route::Forward { node: id, addr },
            None => unavailable(
                format!("pipeline {pipeline:?} runs on node {id}, which has no grpc address in [cluster] nodes; ask it"),
                Some(LeaderHint { node_id: id, grpc: None }),
            ),
        },
    }
}

/// A validated query.
struct Query {
    key: Vec<u8>,
    start_ms: i64,
    /// Exclusive; `i64::MAX` for no bound.
    end_ms: i64,
    key_field: String,
}

/// The results in one partition of windows of `q.key` starting in range, in offset order.
fn scan(part: &Partition, q: &Query) -> Result<Vec<v1::WindowResult>, GrpcError> {
    let storage = |e: &dyn std::fmt::Display| GrpcError::Storage(format!("read failed: {e}"));
    let Some(found) = part
        .offset_for_timestamp(q.start_ms)
        .map_err(|e| storage(&e))?
    else {
        return Ok(Vec::new());
    };
    let hw = part.offsets().high_watermark;
    let mut at = found.offset;
    let mut out = Vec::new();
    while at < hw {
        let bytes = part.read(at, READ_BYTES).map_err(|e| storage(&e))?;
        if bytes.is_empty() {
            break;
        }
        let (records, next) = decode(bytes, part.index, at, usize::MAX)?;
        for r in records {
            if r.offset >= hw || r.key.as_deref() != Some(q.key.as_slice()) {
                continue;
            }
            if let Some(w) = window_from_record(r, &q.key_field) {
                if (q.start_ms..q.end_ms).contains(&w.window_start_ms) {
                    out.push(w);
                }
            }
        }
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(out)
}

#[tonic::async_trait]
impl Windows for WindowsService {
    async fn query(
        &self,
        request: Request<v1::QueryWindowsRequest>,
    ) -> Result<Response<v1::QueryWindowsResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED_METADATA);
        let req = request.into_inner();
        let pipeline = find_pipeline(&self.broker, &req.pipeline)?;
        if req.key.is_empty() {
            return Err(GrpcError::InvalidArgument("the key is empty".into()).into());
        }
        let end_ms = if req.end_ms == 0 {
            i64::MAX
        } else {
            req.end_ms
        };
        if end_ms < req.start_ms {
            return Err(GrpcError::InvalidArgument(format!(
                "end_ms {} is before start_ms {}",
                req.end_ms, req.start_ms
            ))
            .into());
        }
        let max = match usize::try_from(req.max_windows).unwrap_or(MAX_WINDOWS_CAP) {
            0 => DEFAULT_MAX_WINDOWS,
            n => n.min(MAX_WINDOWS_CAP),
        };
        // The live state first (see the module comment for why the order matters).
        let open = self
            .broker
            .queries
            .open_windows(
                &pipeline.name,
                &req.key,
                req.start_ms,
                end_ms,
                OPEN_WINDOWS_TIMEOUT,
            )
            .await
            .map_err(|e| GrpcError::NotYet(e.to_string()))?;
        let open = match open {
            Some(open) => open,
            None => match self.route(&pipeline.name, forwarded) {
                Route::Here => Vec::new(),
                Route::Forward { node, addr } => return self.forward(node, &addr, req).await,
                Route::Unavailable { why, node } => {
                    let mut status = Status::unavailable(why);
                    if let Some(v) =
                        node.and_then(|n| MetadataValue::try_from(n.metadata_value()).ok())
                    {
                        status.metadata_mut().insert(LEADER_METADATA, v);
                    }
                    return Err(status);
                }
            },
        };
        let open: Vec<v1::WindowResult> = open
            .into_iter()
            .map(|w| v1::WindowResult {
                key: w.result.key,
                window_start_ms: w.result.start,
                window_end_ms: w.result.end,
                revision: 0,
                count: w.result.count,
                values: w.result.columns.into_iter().collect(),
                json: w.json,
                partition: -1,
                offset: -1,
                open: true,
            })
            .collect();
        let Some(topic) = self.broker.topics.get(&pipeline.outputs.aggregates.topic) else {
            return Ok(Response::new(answer(
                Vec::new(),
                open,
                req.all_revisions,
                max,
            )));
        };
        let q = Query {
            key: req.key.into_bytes(),
            start_ms: req.start_ms,
            end_ms,
            key_field: pipeline.source.key_field.clone(),
        };
        let found = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for part in &topic.partitions {
                all.extend(scan(part, &q)?);
            }
            Ok::<_, GrpcError>(all)
        })
        .await
        .map_err(|e| GrpcError::Storage(format!("query task failed: {e}")))??;
        Ok(Response::new(answer(found, open, req.all_revisions, max)))
    }
}

/// The answer from the closed results found in the topic and the open windows of the state
/// (read before the topic): an open window that has a result in the topic closed meanwhile
/// and is left out.
fn answer(
    closed: Vec<v1::WindowResult>,
    open: Vec<v1::WindowResult>,
    all_revisions: bool,
    max: usize,
) -> v1::QueryWindowsResponse {
    let mut windows: Vec<v1::WindowResult> = if all_revisions {
        closed
    } else {
        // The latest revision of each window (a later revision replaces an earlier one).
        let mut latest: BTreeMap<(i64, i64), v1::WindowResult> = BTreeMap::new();
        for w in closed {
            let k = (w.window_start_ms, w.window_end_ms);
            if latest.get(&k).is_none_or(|old| old.revision <= w.revision) {
                latest.insert(k, w);
            }
        }
        latest.into_values().collect()
    };
    let stored: BTreeSet<(i64, i64)> = windows
        .iter()
        .map(|w| (w.window_start_ms, w.window_end_ms))
        .collect();
    windows.extend(
        open.into_iter()
            .filter(|w| !stored.contains(&(w.window_start_ms, w.window_end_ms))),
    );
    windows.sort_by_key(|w| (w.window_start_ms, w.window_end_ms, w.revision, w.offset));
    let truncated = windows.len() > max;
    windows.truncate(max);
    v1::QueryWindowsResponse { windows, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, revision: u64, offset: i64, open: bool) -> v1::WindowResult {
        v1::WindowResult {
            key: "k".into(),
            window_start_ms: start,
            window_end_ms: start + 10,
            revision,
            offset,
            open,
            ..v1::WindowResult::default()
        }
    }

    fn shape(r: &v1::QueryWindowsResponse) -> Vec<(i64, u64, bool)> {
        r.windows
            .iter()
            .map(|w| (w.window_start_ms, w.revision, w.open))
            .collect()
    }

    #[test]
    fn a_node_that_does_not_run_the_pipeline_forwards_to_the_one_that_does() {
        let grpc = |id: i32| (id != 3).then(|| format!("10.0.0.{id}:9093"));
        let r = |enabled, forwarded, leader| route(enabled, forwarded, 1, leader, grpc, "p");
        assert_eq!(
            r(true, false, Some(2)),
            Route::Forward {
                node: 2,
                addr: "10.0.0.2:9093".into()
            }
        );
        let unavailable = |r: Route| match r {
            Route::Unavailable { node, .. } => Some(node),
            _ => None,
        };
        assert_eq!(
            unavailable(r(true, false, Some(3))),
            Some(Some(LeaderHint {
                node_id: 3,
                grpc: None
            })),
            "no address: named, not forwarded"
        );
        assert_eq!(
            unavailable(r(true, false, None)),
            Some(None),
            "no leader yet"
        );
        assert_eq!(
            unavailable(r(true, false, Some(1))),
            Some(None),
            "leads but its driver is not up yet"
        );
        assert_eq!(
            unavailable(r(true, true, Some(2))),
            Some(None),
            "a forwarded query is never forwarded again"
        );
        assert_eq!(
            r(false, false, Some(2)),
            Route::Here,
            "no processor: as before"
        );
    }

    #[test]
    fn an_open_window_found_closed_in_the_topic_is_answered_once_closed() {
        let closed = vec![
            window(0, 0, 1, false),
            window(0, 1, 3, false),
            window(10, 0, 2, false),
        ];
        // Window 10 closed between the state read and the topic scan; 20 is still open.
        let open = vec![window(10, 0, -1, true), window(20, 0, -1, true)];
        let latest = answer(closed.clone(), open.clone(), false, 100);
        assert_eq!(
            shape(&latest),
            [(0, 1, false), (10, 0, false), (20, 0, true)]
        );
        assert!(!latest.truncated);
        let all = answer(closed.clone(), open.clone(), true, 100);
        assert_eq!(
            shape(&all),
            [(0, 0, false), (0, 1, false), (10, 0, false), (20, 0, true)]
        );
        let cut = answer(closed, open, false, 2);
        assert_eq!(shape(&cut), [(0, 1, false), (10, 0, false)]);
        assert!(cut.truncated);
    }
}
