//! Delivering to the API: requests and their answers, retries, throttling, dead
//! letters, batch sizes (the latencies are in `latency.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use super::latency::LatencyMetrics;
use super::register::*;
#[cfg(feature = "test-support")]
use super::sum_where;
use super::{outage, quiet, sum, Metrics};
use crate::record::FailureReason;
use crate::record::Origin;

/// What the lanes and the HTTP client report.
#[derive(Clone, Debug)]
pub(super) struct DeliveryMetrics {
    pub(super) delivered: IntCounterVec,
    pub(super) dead_lettered: IntCounterVec,
    pub(super) dlq_errors: IntCounter,
    pub(super) requests: IntCounterVec,
    pub(super) request_seconds: HistogramVec,
    pub(super) throttled: IntCounterVec,
    pub(super) auth_failures: IntCounterVec,
    pub(super) retries: IntCounterVec,
    pub(super) batches: BatchMetrics,
    pub(super) in_flight: IntGauge,
    pub(super) latency: LatencyMetrics,
    /// Retry lines, one per workspace and reason per interval.
    /// Lines that would repeat per event or per request (retries, dead letters, invalid
    /// events, refused credentials, throttling): one per condition per interval.
    pub(super) lines: Arc<quiet::Quiet>,
}

/// What a lane puts into requests, and the bounds it fills them to.
#[derive(Clone, Debug)]
pub(super) struct BatchMetrics {
    size: prometheus::Histogram,
    event_bytes: IntCounterVec,
    max_events: IntGauge,
    max_bytes: IntGauge,
}

impl BatchMetrics {
    fn new(r: &Registry) -> Self {
        BatchMetrics {
            size: unlabelled_histogram(
                r,
                "sluice_batch_size",
                "Events per request sent.",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            ),
            event_bytes: counter_vec(
                r,
                "sluice_batch_event_bytes_total",
                "Encoded event bytes put into batches (a full batch against batch.max_bytes).",
                &["workspace"],
            ),
            max_events: gauge(
                r,
                "sluice_batch_max_events",
                "The most events one request carries (batch.max_events).",
            ),
            max_bytes: gauge(
                r,
                "sluice_batch_max_bytes",
                "The most bytes one request body carries (batch.max_bytes).",
            ),
        }
    }
}

impl DeliveryMetrics {
    /// Registers them in `r`.
    pub(super) fn new(r: &Registry) -> Self {
        DeliveryMetrics {
            delivered: counter_vec(
                r,
                "sluice_events_delivered_total",
                "Events the API accepted.",
                &["workspace"],
            ),
            dead_lettered: counter_vec(
                r,
                "sluice_events_dead_lettered_total",
                "Events written to the dead-letter topic, by workspace and reason.",
                &["workspace", "reason"],
            ),
            dlq_errors: counter(
                r,
                "sluice_dlq_errors_total",
                "Failed attempts to write a dead letter (retried until acknowledged).",
            ),
            requests: counter_vec(
                r,
                "sluice_http_requests_total",
                "HTTP requests to the destination, by status class.",
                &["workspace", "status_class"],
            ),
            request_seconds: histogram(
                r,
                "sluice_http_request_duration_seconds",
                "Time from sending a request to its answer.",
                &["workspace"],
                seconds_buckets(),
            ),
            throttled: counter_vec(
                r,
                "sluice_throttled_total",
                "Answers that throttled a workspace (429, or 503 with Retry-After).",
                &["workspace"],
            ),
            auth_failures: counter_vec(
                r,
                "sluice_auth_failures_total",
                "Requests refused for bad credentials (401/403); retried until fixed.",
                &["workspace"],
            ),
            retries: counter_vec(
                r,
                "sluice_retries_total",
                "Requests tried again, by reason.",
                &["workspace", "reason"],
            ),
            batches: BatchMetrics::new(r),
            in_flight: gauge(
                r,
                "sluice_http_requests_in_flight",
                "HTTP requests sent and not yet answered.",
            ),
            latency: LatencyMetrics::new(r),
            lines: Arc::new(quiet::Quiet::new(outage::REMINDER)),
        }
    }
}

impl Metrics {
    /// `count` events of `workspace` were accepted by the API.
    pub fn delivered(&self, workspace: &str, count: usize) {
        self.delivery
            .delivered
            .with_label_values(&[workspace])
            .inc_by(count as u64);
        // A batch refused for good (count 0) is no sign the API is back.
        if count > 0 {
            self.api_outages.recovered(workspace);
        }
    }

    /// An event was written to the dead-letter topic (the write is acknowledged).
    pub(crate) fn dead_lettered(
        &self,
        workspace: Option<&str>,
        origin: &Origin,
        reason: FailureReason,
        detail: &str,
    ) {
        let workspace = workspace.unwrap_or("unknown");
        let reason = reason.code();
        if let Some(held_back) = self
            .delivery
            .lines
            .allow(&format!("dead/{workspace}/{reason}"))
        {
            tracing::warn!(
                workspace, topic = %origin.tp.topic, partition = origin.tp.partition,
                offset = origin.offset, reason = %reason,
                "dead-lettered: {detail}{}", more_like_it(held_back)
            );
        }
        self.delivery
            .dead_lettered
            .with_label_values(&[workspace, &reason])
            .inc();
    }

    /// Writing a dead letter failed; it is tried again and its offset stays uncommitted.
    /// `needs_operator`: the error is one retrying alone will not clear (rights, a
    /// missing topic, a record the topic refuses).
    pub(crate) fn dlq_error(
        &self,
        origin: &Origin,
        error: &dyn std::fmt::Display,
        needs_operator: bool,
    ) {
        if needs_operator {
            tracing::error!(
                topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
                "the dead-letter topic refuses this letter ({error}): it is kept and tried \
                 again, and this partition's commits wait, until the topic or the worker's \
                 rights are fixed"
            );
        } else {
            tracing::error!(
                topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
                "dead-letter topic unavailable, retrying (offsets stay uncommitted): {error}"
            );
        }
        self.delivery.dlq_errors.inc();
    }

    /// A request got an answer (or failed to) of this class (`2xx`, `4xx`, `error`...).
    pub fn request(&self, workspace: &str, status_class: &str, took: Duration) {
        self.delivery
            .requests
            .with_label_values(&[workspace, status_class])
            .inc();
        self.delivery
            .request_seconds
            .with_label_values(&[workspace])
            .observe(took.as_secs_f64());
        self.limits
            .limit_nanos
            .1
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The API throttled a workspace.
    pub fn throttled(&self, workspace: &str, retry_after: Option<Duration>) {
        if let Some(held_back) = self.delivery.lines.allow(&format!("throttled/{workspace}")) {
            tracing::warn!(
                workspace,
                ?retry_after,
                "throttled by the API: pausing and slowing down{}",
                more_like_it(held_back)
            );
        }
        self.delivery
            .throttled
            .with_label_values(&[workspace])
            .inc();
    }

    /// The API refused a workspace's credentials.
    pub(crate) fn auth_failure(&self, workspace: &str, status: u16) {
        if let Some(held_back) = self.delivery.lines.allow(&format!("auth/{workspace}")) {
            tracing::error!(
                workspace,
                status,
                "the API refuses this workspace's credentials; check its site_id and API key \
                 (events are kept and retried at the longest backoff){}",
                more_like_it(held_back)
            );
        }
        self.delivery
            .auth_failures
            .with_label_values(&[workspace])
            .inc();
    }

    /// A request will be tried again. An API that cannot be reached (connection
    /// refused) is one outage, logged when it starts and every 30 s while it lasts;
    /// an API that answers but fails some requests (5xx, timeouts, resets) is not
    /// down: one line per reason every 30 s, with how many were held back.
    pub fn retry(&self, workspace: &str, reason: FailureReason, detail: &str) {
        let unreachable = reason == FailureReason::Connect;
        let reason = reason.code();
        let reason = &*reason;
        self.delivery
            .retries
            .with_label_values(&[workspace, reason])
            .inc();
        if unreachable {
            self.api_outages
                .failed(workspace, &format!("{reason}: {detail}"));
        } else if let Some(held_back) = self
            .delivery
            .lines
            .allow(&format!("retry/{workspace}/{reason}"))
        {
            if held_back == 0 {
                tracing::info!(workspace, reason, "request failed, retrying: {detail}");
            } else {
                tracing::info!(
                    workspace,
                    reason,
                    "request failed, retrying: {detail} ({held_back} more like it since the last line)"
                );
            }
        }
    }

    /// Total events delivered over all workspaces.
    pub fn delivered_count(&self) -> u64 {
        sum(&self.delivery.delivered)
    }

    /// Events dead-lettered with this reason, over all workspaces.
    #[cfg(feature = "test-support")]
    pub fn dead_lettered_count(&self, reason: &str) -> u64 {
        sum_where(&self.delivery.dead_lettered, "reason", reason)
    }

    /// Total events dead-lettered.
    pub fn dead_lettered_total(&self) -> u64 {
        sum(&self.delivery.dead_lettered)
    }

    /// Answers that throttled `workspace`.
    #[cfg(feature = "test-support")]
    pub fn throttled_count(&self, workspace: &str) -> u64 {
        self.delivery
            .throttled
            .with_label_values(&[workspace])
            .get()
    }

    /// Failed dead-letter writes.
    #[cfg(feature = "test-support")]
    pub fn dlq_error_count(&self) -> u64 {
        self.delivery.dlq_errors.get()
    }

    /// Total retries.
    #[cfg(feature = "test-support")]
    pub fn retry_count(&self) -> u64 {
        sum(&self.delivery.retries)
    }

    /// A batch of `events` events holding `bytes` encoded bytes is about to be sent.
    pub fn batch(&self, workspace: &str, events: usize, bytes: usize) {
        let b = &self.delivery.batches;
        b.size.observe(events as f64);
        b.event_bytes
            .with_label_values(&[workspace])
            .inc_by(bytes as u64);
    }

    /// The batch bounds the lanes fill requests to, for capacity reviews: at an
    /// API's limit, batches fill to them.
    pub(crate) fn batch_limits(&self, max_events: usize, max_bytes: usize) {
        let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.delivery.batches.max_events.set(g(max_events));
        self.delivery.batches.max_bytes.set(g(max_bytes));
    }

    /// A request started (`true`) or ended (`false`).
    pub fn in_flight(&self, started: bool) {
        if started {
            self.delivery.in_flight.inc();
        } else {
            self.delivery.in_flight.dec();
        }
    }
}

/// What a line says of the lines like it held back since the last one.
pub(super) fn more_like_it(held_back: u64) -> String {
    match held_back {
        0 => String::new(),
        n => format!(" ({n} more like it since the last line)"),
    }
}
