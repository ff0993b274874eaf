//! The `Windows` service: `Query` answers one key's window results over a range of window
//! starts, read from the pipeline's aggregates output topic.
//!
//! Why the topic and not the processor's sled state: the state is owned by the pipeline's
//! driver thread and holds only windows still open or within their allowed lateness, while
//! the topic holds every result the processor committed, exactly once, including those whose
//! state is long dropped. Records are timestamped with their window's start, so the time
//! index finds where windows starting at or after `start_ms` begin; the scan from there to
//! the high watermark runs on a blocking thread (file reads).

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_proto::v1::{self, windows_server::Windows};
use tonic::{Request, Response, Status};

use super::alerts::find_pipeline;
use super::convert::window_from_record;
use super::error::GrpcError;
use super::subscribe::decode;
use crate::broker::Broker;
use crate::partition::Partition;

/// Windows per answer unless the client asks for fewer.
const DEFAULT_MAX_WINDOWS: usize = 1000;
const MAX_WINDOWS_CAP: usize = 10_000;
/// Bytes read from the log per step of the scan.
const READ_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct WindowsService {
    broker: Arc<Broker>,
}

impl WindowsService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
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
        let Some(topic) = self.broker.topics.get(&pipeline.outputs.aggregates.topic) else {
            return Ok(Response::new(v1::QueryWindowsResponse::default()));
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
        let mut windows: Vec<v1::WindowResult> = if req.all_revisions {
            found
        } else {
            // The latest revision of each window (a later revision replaces an earlier one).
            let mut latest: BTreeMap<(i64, i64), v1::WindowResult> = BTreeMap::new();
            for w in found {
                let k = (w.window_start_ms, w.window_end_ms);
                if latest.get(&k).is_none_or(|old| old.revision <= w.revision) {
                    latest.insert(k, w);
                }
            }
            latest.into_values().collect()
        };
        windows.sort_by_key(|w| (w.window_start_ms, w.window_end_ms, w.revision, w.offset));
        let truncated = windows.len() > max;
        windows.truncate(max);
        Ok(Response::new(v1::QueryWindowsResponse {
            windows,
            truncated,
        }))
    }
}
