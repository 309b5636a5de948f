//! The one HTTP listener: `/metrics` (Prometheus text), `/healthz` and `/readyz` (see
//! [`Health`]). GET only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::WORKER_READY;

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves the three endpoints on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    metrics::gauge!(WORKER_READY).set(if s.health.ready() { 1.0 } else { 0.0 });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    health_answer(s.health.alive(), &s.health)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    health_answer(s.health.ready(), &s.health)
}

/// 200 or 503, with every flag in the body so an operator sees why.
fn health_answer(ok: bool, health: &Health) -> impl IntoResponse {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        health.report(),
    )
}
