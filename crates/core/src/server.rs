//! The operator's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the worker
//! is alive: its consumer loop turns and the group has not fenced it — what the
//! kubelet restarts the pod on) and `/readyz` (the worker is consuming: joined, not
//! evicted, brokers reached; false once shutdown starts).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// When the consumer loop last turned, in milliseconds after `since` plus one (0
    /// before it first does): an atomic, as it is set at every turn.
    turned: AtomicU64,
    since: tokio::time::Instant,
    /// Why the consumer can never consume again (fenced, a fatal client error).
    fatal: Mutex<Option<String>>,
}

/// A consumer loop that has not turned for this long is wedged: it turns at least every
/// 100 ms when idle, and a rebalance callback marks each of its bounded steps (the
/// revoke wait, the revoked partitions' commit, the parking marks read of up to 30 s)
/// as a turn. librdkafka evicts a member that does not poll for
/// `max.poll.interval.ms` (300 s by default): the kubelet restarts it well before.
pub(crate) const WEDGED_AFTER: Duration = Duration::from_secs(60);

impl Health {
    /// Readiness that trusts a broker contact for `broker_grace`.
    pub fn new(broker_grace: Duration) -> Self {
        Health {
            inner: Arc::new(HealthState {
                running: AtomicBool::new(false),
                joined: AtomicBool::new(false),
                broker_seen: Mutex::new(None),
                broker_grace,
                turned: AtomicU64::new(0),
                since: tokio::time::Instant::now(),
                fatal: Mutex::new(None),
            }),
        }
    }

    /// The consumer loop turned: it is not wedged.
    pub(crate) fn turned(&self) {
        let ms = self.inner.since.elapsed().as_millis() as u64 + 1;
        self.inner.turned.store(ms, Ordering::Relaxed);
    }

    /// The group took the partitions away (evicted for not polling in time, or its
    /// session lost): not ready until they are assigned again.
    pub(crate) fn evicted(&self) {
        if self.inner.joined.swap(false, Ordering::AcqRel) {
            tracing::warn!("evicted from the consumer group: not ready until it rejoins");
        }
    }

    /// The consumer can never consume again (`why`): not alive, so the kubelet
    /// restarts the pod.
    pub(crate) fn fatal(&self, why: &str) {
        let mut fatal = lock(&self.inner.fatal);
        if fatal.is_none() {
            tracing::error!(
                "the consumer cannot go on ({why}): /healthz fails so the pod is restarted"
            );
            *fatal = Some(why.to_string());
        }
    }

    /// Whether the worker is alive, and if not, why.
    pub(crate) fn liveness(&self) -> Result<(), String> {
        if let Some(why) = &*lock(&self.inner.fatal) {
            return Err(format!("the consumer failed for good: {why}"));
        }
        let turned = self.inner.turned.load(Ordering::Relaxed);
        let idle = self
            .inner
            .since
            .elapsed()
            .saturating_sub(Duration::from_millis(turned.saturating_sub(1)));
        if turned > 0 && self.inner.running.load(Ordering::Acquire) && idle > WEDGED_AFTER {
            return Err(format!(
                "the consumer loop has not turned for {} s (wedged)",
                idle.as_secs()
            ));
        }
        Ok(())
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
        *lock(&self.inner.broker_seen) = Some(Instant::now());
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
        let seen = *lock(&self.inner.broker_seen);
        if seen.is_none_or(|t| t.elapsed() > self.inner.broker_grace) {
            missing.push("brokers not reached recently");
        }
        if missing.is_empty() {
            self.liveness()
        } else {
            Err(missing.join("; "))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        .route("/healthz", get(alive))
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

async fn alive(State((_, health)): State<(Metrics, Health)>) -> impl IntoResponse {
    match health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not alive: {why}\n"),
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_consumer_loop_that_stops_turning_is_not_alive_after_a_minute() {
        let health = Health::new(Duration::from_secs(30));
        health.set_running(true);
        assert!(
            health.liveness().is_ok(),
            "alive while starting (no turn yet)"
        );
        health.turned();
        tokio::time::advance(WEDGED_AFTER).await;
        assert!(health.liveness().is_ok(), "not yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        let why = health.liveness().unwrap_err();
        assert!(why.contains("wedged"), "{why}");
        health.turned();
        assert!(health.liveness().is_ok(), "turning again");
        tokio::time::advance(WEDGED_AFTER * 2).await;
        health.set_running(false);
        assert!(
            health.liveness().is_ok(),
            "a drain does not turn the loop: not wedged"
        );
    }

    #[test]
    fn a_fenced_consumer_is_not_alive_and_an_evicted_one_not_ready_until_it_rejoins() {
        let health = Health::new(Duration::from_secs(30));
        health.set_running(true);
        health.joined();
        health.broker_reachable();
        assert!(health.readiness().is_ok());
        health.evicted();
        assert!(health.readiness().unwrap_err().contains("group"));
        assert!(
            health.liveness().is_ok(),
            "an evicted member rejoins by itself"
        );
        health.joined();
        assert!(health.readiness().is_ok());
        health.fatal("Static consumer fenced by other consumer with same group.instance.id");
        assert!(health.liveness().unwrap_err().contains("fenced"));
        assert!(health.readiness().is_err());
    }
}
