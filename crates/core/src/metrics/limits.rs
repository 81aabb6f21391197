//! The rate limiter: time waited on limits, the learned rate and this pod's share,
//! and the fleet budget's fallbacks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{HistogramVec, IntCounter, IntGauge, Opts, Registry};

use super::register::*;
use super::Metrics;

/// What the limiter reports.
#[derive(Clone, Debug)]
pub(super) struct LimitMetrics {
    pub(super) limiter_wait_seconds: HistogramVec,
    pub(super) effective_rate: prometheus::GaugeVec,
    pub(super) limiter_share: prometheus::GaugeVec,
    pub(super) limiter_fallbacks: IntCounter,
    pub(super) limiter_fleet_up: IntGauge,
    pub(super) limit_bound: prometheus::Gauge,
    /// Nanoseconds attempts waited on their workspace's limit, and spent waiting or
    /// in flight in all: the limit-bound share of lane time.
    pub(super) limit_nanos: std::sync::Arc<(AtomicU64, AtomicU64)>,
}

impl LimitMetrics {
    /// Registers them in `r`.
    pub(super) fn new(r: &Registry) -> Self {
        LimitMetrics {
            limiter_wait_seconds: histogram(
                r,
                "sluice_limiter_wait_seconds",
                "Time an attempt waited for its workspace's token and a global slot.",
                &["workspace"],
                seconds_buckets(),
            ),
            effective_rate: registered(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "sluice_limiter_effective_rate",
                        "Requests per second the limiter currently allows a workspace.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric"),
            ),
            limiter_share: gauge_vec(
                r,
                "sluice_limiter_share",
                "Share of the workspace's limit this pod may use: its share of the partitions \
                 (partition-share, and redis while Redis is away), 1 on the fleet budget or local.",
                &["workspace"],
            ),
            limiter_fallbacks: counter(
                r,
                "sluice_limiter_fallback_total",
                "Times the fleet budget (Redis) became unreachable and the limiter fell back \
                 to partition-share.",
            ),
            limiter_fleet_up: gauge(
                r,
                "sluice_limiter_fleet_up",
                "1 while tokens come from the fleet budget in Redis (limits.mode = redis).",
            ),
            limit_bound: registered(
                r,
                prometheus::Gauge::new(
                    "sluice_limit_bound_ratio",
                    "Share of lane time (waiting plus in flight) spent waiting on workspace \
                     limits over the last measurement.",
                )
                .expect("valid metric"),
            ),
            limit_nanos: Default::default(),
        }
    }
}

impl Metrics {
    /// An attempt waited this long for the limiter.
    pub(crate) fn limiter_wait(&self, workspace: &str, waited: Duration) {
        self.limits
            .limiter_wait_seconds
            .with_label_values(&[workspace])
            .observe(waited.as_secs_f64());
        let nanos = waited.as_nanos() as u64;
        self.limits
            .limit_nanos
            .0
            .fetch_add(nanos, Ordering::Relaxed);
        self.limits
            .limit_nanos
            .1
            .fetch_add(nanos, Ordering::Relaxed);
    }

    /// Seconds attempts have waited on workspace limits, and spent waiting or in
    /// flight in all, since start.
    pub fn limit_time(&self) -> (f64, f64) {
        let (wait, busy) = &*self.limits.limit_nanos;
        (
            wait.load(Ordering::Relaxed) as f64 / 1e9,
            busy.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// This pod's share of a workspace's limit.
    pub(crate) fn set_share(&self, workspace: &str, share: f64) {
        self.limits
            .limiter_share
            .with_label_values(&[workspace])
            .set(share);
    }

    /// The fleet budget became unreachable: the limiter falls back to partition-share.
    pub(crate) fn limiter_fallback(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            "fleet rate limit unavailable, falling back to partition-share until Redis \
             answers: {error}"
        );
        self.limits.limiter_fallbacks.inc();
        self.limits.limiter_fleet_up.set(0);
    }

    /// The fleet budget answers again.
    pub(crate) fn limiter_fleet_back(&self) {
        tracing::info!("fleet rate limit (Redis) is back: leaving partition-share");
        self.limits.limiter_fleet_up.set(1);
    }

    /// Whether the fleet budget is in use.
    pub(crate) fn set_fleet_up(&self, up: bool) {
        self.limits.limiter_fleet_up.set(up as i64);
    }

    /// The limiter's current rate for a workspace.
    pub(crate) fn set_effective_rate(&self, workspace: &str, rate: f64) {
        self.limits
            .effective_rate
            .with_label_values(&[workspace])
            .set(rate);
    }

    /// The last reported effective rate of a workspace.
    pub fn effective_rate(&self, workspace: &str) -> f64 {
        self.limits
            .effective_rate
            .with_label_values(&[workspace])
            .get()
    }
}
