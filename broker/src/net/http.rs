//! The HTTP listener: Prometheus metrics at `/metrics` (no auth, as Prometheus expects by
//! default). The live dashboard will be served here too.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;

/// OpenMetrics text, which Prometheus negotiates and parses.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves HTTP on `listener` until `shutdown` flips to true.
pub async fn serve_http(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let broker = Arc::clone(&broker);
                async move {
                    let body = broker.metrics.render(&broker);
                    ([(header::CONTENT_TYPE, OPENMETRICS)], body)
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this is Runnel's HTTP port; metrics are at /metrics\n",
            )
                .into_response()
        });
    let mut stop = shutdown;
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { super::stopped(&mut stop).await })
        .await;
    if let Err(e) = result {
        tracing::error!("http server stopped: {e}");
    }
}
