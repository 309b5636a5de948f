//! The one HTTP listener: `/metrics` (Prometheus text), `/healthz` (process and inference
//! thread alive), `/readyz` (warm-up done, Redis reachable, not failing). GET only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::WORKER_READY;

/// Liveness and readiness, shared by the pipeline and the listener.
#[derive(Debug, Default)]
pub struct Health {
    /// The inference thread is running (false once it exits or panics).
    pub inference_alive: AtomicBool,
    /// Warm-up forward pass done.
    pub warm: AtomicBool,
    /// The last Redis command succeeded.
    pub redis_ok: AtomicBool,
    /// Too many consecutive failed batches.
    pub failing: AtomicBool,
}

impl Health {
    /// Alive: what `/healthz` reports.
    pub fn alive(&self) -> bool {
        self.inference_alive.load(Ordering::Relaxed)
    }

    /// Ready: what `/readyz` reports and `hmr2_worker_ready` shows.
    pub fn ready(&self) -> bool {
        self.alive()
            && self.warm.load(Ordering::Relaxed)
            && self.redis_ok.load(Ordering::Relaxed)
            && !self.failing.load(Ordering::Relaxed)
    }

    /// Sets one flag and refreshes the readiness gauge.
    pub fn set(&self, flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
        metrics::gauge!(WORKER_READY).set(if self.ready() { 1.0 } else { 0.0 });
    }

    fn report(&self) -> String {
        format!(
            "{{\"ready\":{},\"inference_alive\":{},\"warm\":{},\"redis_ok\":{},\"failing\":{}}}\n",
            self.ready(),
            self.alive(),
            self.warm.load(Ordering::Relaxed),
            self.redis_ok.load(Ordering::Relaxed),
            self.failing.load(Ordering::Relaxed)
        )
    }
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    health: Arc<Health>,
}

/// Serves the three endpoints on `listener` until `shutdown`.
pub async fn serve(
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
