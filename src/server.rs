//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process
//! is alive) and `/readyz` (the worker is consuming; false once shutdown starts).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness shared between the pipeline and the server: ready once the worker runs,
/// has joined its group and has recently reached the brokers; not ready once shutdown
/// starts.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    running: AtomicBool,
    joined: AtomicBool,
    broker_seen: Mutex<Option<Instant>>,
    /// How long a broker contact counts as fresh.
    broker_grace: Duration,
}

impl Health {
    /// Readiness that trusts a broker contact for `broker_grace`.
    pub fn new(broker_grace: Duration) -> Self {
        Health {
            inner: Arc::new(HealthState {
                running: AtomicBool::new(false),
                joined: AtomicBool::new(false),
                broker_seen: Mutex::new(None),
                broker_grace,
            }),
        }
    }

    /// The worker consumes (`true`) or has started shutting down (`false`).
    pub(crate) fn set_running(&self, running: bool) {
        self.inner.running.store(running, Ordering::Release);
    }

    /// The consumer got its (possibly empty) share of partitions.
    pub fn joined(&self) {
        self.inner.joined.store(true, Ordering::Release);
    }

    /// A broker answered just now.
    pub(crate) fn broker_reachable(&self) {
        *self
            .inner
            .broker_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Whether the worker is ready, and if not, why.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if !self.inner.running.load(Ordering::Acquire) {
            missing.push("not running (starting or shutting down)");
        }
        if !self.inner.joined.load(Ordering::Acquire) {
            missing.push("not yet in its consumer group");
        }
        let seen = *self
            .inner
            .broker_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.is_none_or(|t| t.elapsed() > self.inner.broker_grace) {
            missing.push("brokers not reached recently");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}

/// Serves the endpoints on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state((metrics, health));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("metrics server failed: {e}");
    }
}

async fn render_metrics(State((metrics, _)): State<(Metrics, Health)>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn ready(State((metrics, health)): State<(Metrics, Health)>) -> impl IntoResponse {
    // The destination is not part of readiness: while it fails sluice is in a known
    // back-off, holding events and offsets, which a restart would not improve.
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => {
            // The broker away is the likeliest why: say so, with its error.
            let why = match metrics.kafka_outage() {
                Some(outage) => format!("{why}; {outage}"),
                None => why.to_string(),
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
        }
    }
}
