//! A cluster's gRPC endpoints and the one a client object uses now: the rotation shared by the
//! [`crate::Publisher`], the [`crate::Subscriber`], the [`crate::AlertWatcher`] and
//! [`crate::Client::query_windows`].
//!
//! [`Rotation`] is the plan, without I/O: the order in which to try the endpoints (a hinted
//! address first, added when it is not among them; then the current endpoint; then the others
//! in turn) and the move to the next endpoint after a dropped stream. [`Endpoints`] follows
//! that plan with real channels: [`Endpoints::open`] tries each endpoint in turn, each attempt
//! bounded by [`OPEN_TIMEOUT`], and moves on only past retryable failures (a node down,
//! unreachable, paused or shutting down). A refusal (unknown topic, bad request) is returned at
//! once: another node would refuse it the same way.

use std::future::Future;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::Status;

use crate::resume::retryable;

/// How long opening a call on one endpoint may take before the next is tried (a paused node
/// accepts the connection but never answers).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoints (`http://host:port` URIs) and where the next attempt starts. Sans-io.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// Those given, then hinted addresses that were not among them.
    uris: Vec<String>,
    /// Index into `uris` of the endpoint in use (or tried last).
    current: usize,
}

impl Rotation {
    /// `uris[0]` is the endpoint in use.
    pub(crate) fn new(uris: Vec<String>) -> Self {
        Self { uris, current: 0 }
    }

    pub(crate) fn uri(&self, i: usize) -> Option<&str> {
        self.uris.get(i).map(String::as_str)
    }

    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The endpoint in use is now `i` (an index from [`Rotation::order`]).
    pub(crate) fn set_current(&mut self, i: usize) {
        if i < self.uris.len() {
            self.current = i;
        }
    }

    /// After a stream on the current endpoint broke: the next attempt starts at the next one
    /// (the broken one is tried last, in case it was only a dropped connection).
    pub(crate) fn advance(&mut self) {
        if !self.uris.is_empty() {
            self.current = (self.current + 1) % self.uris.len();
        }
    }

    /// The indexes to try, in order: `hint` (a `host:port` a node named, e.g. a partition's
    /// leader; added to the endpoints when new and a valid URI), then the current endpoint,
    /// then the others cyclically. Each index once.
    pub(crate) fn order(&mut self, hint: Option<&str>) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.uris.len() + 1);
        if let Some(addr) = hint {
            let uri = crate::uri_of(addr);
            match self.uris.iter().position(|e| *e == uri) {
                Some(i) => order.push(i),
                None if tonic::transport::Endpoint::from_shared(uri.clone()).is_ok() => {
                    self.uris.push(uri);
                    order.push(self.uris.len() - 1);
                }
                None => tracing::warn!("ignoring the hint {addr}: not a valid address"),
            }
        }
        let n = self.uris.len();
        for k in 0..n {
            let i = (self.current + k) % n;
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }

    /// The endpoints, comma-separated (for error messages).
    fn list(&self) -> String {
        self.uris.join(", ")
    }
}

/// A [`Rotation`] with a channel to its current endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    rotation: Rotation,
    /// Connected to `rotation.uri(connected)`.
    channel: Channel,
    connected: usize,
}

impl Endpoints {
    /// `channel` is connected to `uris[0]`; the others are fallbacks.
    pub(crate) fn new(channel: Channel, uris: Vec<String>) -> Self {
        Self {
            rotation: Rotation::new(uris),
            channel,
            connected: 0,
        }
    }

    /// See [`Rotation::advance`].
    pub(crate) fn advance(&mut self) {
        self.rotation.advance();
    }

    /// The current endpoint's URI.
    pub(crate) fn current(&self) -> &str {
        self.rotation.uri(self.rotation.current()).unwrap_or("")
    }

    /// A channel to endpoint `i`: the one held if it is connected there, else a new lazy one
    /// (a dead address then fails the attempt made on it, like any other failure).
    fn channel_to(&mut self, i: usize) -> Result<Channel, Status> {
        if i != self.connected {
            let uri = self
                .rotation
                .uri(i)
                .ok_or_else(|| Status::internal(format!("no endpoint {i}")))?;
            let endpoint =
                crate::endpoint(uri).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.channel = endpoint.connect_lazy();
            self.connected = i;
        }
        Ok(self.channel.clone())
    }

    /// `attempt` on the first endpoint where it succeeds, in [`Rotation::order`] for `hint`;
    /// each attempt bounded by `limit` (for opening a stream: [`OPEN_TIMEOUT`]). Stops at the
    /// first failure that is not
    /// retryable; when every endpoint failed, the last failure with its code and metadata and
    /// a message naming every endpoint tried.
    pub(crate) async fn open<T, F, Fut>(
        &mut self,
        hint: Option<&str>,
        limit: Duration,
        mut attempt: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let order = self.rotation.order(hint);
        let mut last = Status::unavailable("no endpoint given");
        for i in order {
            let channel = match self.channel_to(i) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("skipping endpoint {:?}: {e}", self.rotation.uri(i));
                    last = e;
                    continue;
                }
            };
            self.rotation.set_current(i);
            let outcome = tokio::time::timeout(limit, attempt(channel))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::unavailable(format!("no answer within {limit:?}")))
                });
            match outcome {
                Ok(t) => return Ok(t),
                Err(status) if retryable(&status) => {
                    tracing::warn!(
                        "{} failed: {status}; trying the next endpoint",
                        self.current()
                    );
                    last = status;
                }
                Err(status) => return Err(status),
            }
        }
        Err(Status::with_metadata(
            last.code(),
            format!(
                "no endpoint answered (tried {}); last error: {}",
                self.rotation.list(),
                last.message()
            ),
            last.metadata().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Rotation {
        Rotation::new(vec![
            "http://a:1".into(),
            "http://b:1".into(),
            "http://c:1".into(),
        ])
    }

    #[test]
    fn the_current_endpoint_first_then_the_others_in_turn() {
        let mut r = three();
        assert_eq!(r.order(None), [0, 1, 2]);
        r.set_current(2);
        assert_eq!(r.order(None), [2, 0, 1]);
        r.set_current(7);
        assert_eq!(r.current(), 2, "an index out of range is ignored");
    }

    #[test]
    fn a_dropped_stream_moves_the_next_attempt_to_the_next_endpoint() {
        let mut r = three();
        r.advance();
        assert_eq!(r.order(None), [1, 2, 0]);
        r.advance();
        r.advance();
        assert_eq!(r.order(None), [0, 1, 2], "wraps around");
        let mut one = Rotation::new(vec!["http://a:1".into()]);
        one.advance();
        assert_eq!(one.order(None), [0]);
        let mut none = Rotation::new(Vec::new());
        none.advance();
        assert!(none.order(None).is_empty());
    }

    #[test]
    fn a_hint_goes_first_and_joins_the_endpoints_once() {
        let mut r = three();
        r.set_current(1);
        assert_eq!(r.order(Some("c:1")), [2, 1, 0], "a known endpoint");
        assert_eq!(r.order(Some("d:1")), [3, 1, 2, 0], "a new one is added");
        assert_eq!(r.uri(3), Some("http://d:1"));
        assert_eq!(r.order(Some("d:1")), [3, 1, 2, 0], "and not added twice");
        assert_eq!(r.order(Some("not an address")), [1, 2, 3, 0]);
        assert_eq!(r.uri(4), None, "an invalid hint is not added");
    }
}
