//! The HTTP listener: Prometheus metrics at `/metrics` (no auth, as Prometheus expects by
//! default), the live dashboard at `/` and its data at `/api/dashboard`. The standalone
//! processor (`runnel process`) serves the same `/metrics` and `/api/dashboard` for its
//! pipelines ([`serve_processor_http`]), so Prometheus and `runnel status` work against it too.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::processor_status::Observed;

/// OpenMetrics text, which Prometheus negotiates and parses.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The dashboard page: one self-contained file, built into the binary.
const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard.html");

/// Serves HTTP on `listener` until `shutdown` flips to true.
pub async fn serve_http(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics_broker = Arc::clone(&broker);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let broker = Arc::clone(&metrics_broker);
                async move {
                    let body = broker.metrics.render(&broker);
                    ([(header::CONTENT_TYPE, OPENMETRICS)], body)
                }
            }),
        )
        .route(
            "/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    DASHBOARD_HTML,
                )
            }),
        )
        .route(
            "/api/dashboard",
            get(move || {
                let broker = Arc::clone(&broker);
                async move {
                    // Reads tails of output topics from disk: off the async threads.
                    match tokio::task::spawn_blocking(move || crate::dashboard::snapshot(&broker))
                        .await
                    {
                        Ok(s) => (
                            [(header::CONTENT_TYPE, "application/json")],
                            serde_json::to_vec(&s).unwrap_or_default(),
                        )
                            .into_response(),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("snapshot failed: {e}\n"))
                            .into_response(),
                    }
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this is Runnel's HTTP port; the dashboard is at /, metrics at /metrics\n",
            )
                .into_response()
        });
    serve(listener, app, shutdown).await;
}

/// Serves a standalone processor's `/metrics` (the processor series) and `/api/dashboard`
/// (its pipelines, read by `runnel status`) on `listener` until `shutdown` flips to true.
pub async fn serve_processor_http(
    listener: TcpListener,
    observed: Arc<Observed>,
    shutdown: watch::Receiver<bool>,
) {
    let metrics_observed = Arc::clone(&observed);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let o = Arc::clone(&metrics_observed);
                async move {
                    let body = o.metrics.render_processor(&o.pipelines);
                    ([(header::CONTENT_TYPE, OPENMETRICS)], body)
                }
            }),
        )
        .route(
            "/api/dashboard",
            get(move || {
                let o = Arc::clone(&observed);
                async move {
                    let s = crate::dashboard::processor_snapshot(&o.pipelines);
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        serde_json::to_vec(&s).unwrap_or_default(),
                    )
                }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this is `runnel process`'s HTTP port; metrics at /metrics, status at /api/dashboard\n",
            )
                .into_response()
        });
    serve(listener, app, shutdown).await;
}

async fn serve(listener: TcpListener, app: Router, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown;
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { super::stopped(&mut stop).await })
        .await;
    if let Err(e) = result {
        tracing::error!("http server stopped: {e}");
    }
}
