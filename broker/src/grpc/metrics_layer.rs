//! A tower layer that counts gRPC calls and times them per method, into the broker's
//! [`Metrics`], and runs each call in a `grpc_call{call, method, peer}` span so its log lines
//! can be told apart. The time is until the response headers: for a unary call the whole
//! call, for a stream the time to establish it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::transport::server::TcpConnectInfo;
use tracing::Instrument;

use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::Metrics;

/// Wraps every gRPC service of the server.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
    calls: Arc<AtomicU64>,
}

impl MetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            calls: Arc::default(),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            calls: self.calls.clone(),
        }
    }
}

/// The per-call wrapper.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
    /// Call ids, shared by every service of the server.
    calls: Arc<AtomicU64>,
}

/// gRPC status UNIMPLEMENTED, as sent in the headers of an unknown method's answer.
const UNIMPLEMENTED: &str = "12";

impl<S, B, R> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let id = self.calls.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let span = tracing::debug_span!("grpc_call", call = id, method = %method, peer = %peer);
        let call = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = call.await;
                // Unknown methods are one series, so a client cannot mint series at will.
                let unknown = result.as_ref().is_ok_and(|r| {
                    r.headers()
                        .get("grpc-status")
                        .is_some_and(|v| v.as_bytes() == UNIMPLEMENTED.as_bytes())
                });
                let label = if unknown { "unimplemented" } else { &method };
                metrics.grpc_request(label, started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
