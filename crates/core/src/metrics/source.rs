//! Reading from Kafka: messages consumed, stale and invalid ones, commits, rebalances,
//! the buffer and back-pressure, lag and the autoscaling signal.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::register::*;
use super::Metrics;
use crate::record::FailureReason;
use crate::record::Origin;

/// What the source and the intake report.
#[derive(Clone, Debug)]
pub(super) struct SourceMetrics {
    pub(super) consumed: IntCounter,
    pub(super) stale: IntCounter,
    pub(super) revoked_dropped: IntCounter,
    pub(super) invalid: IntCounterVec,
    pub(super) commits: IntCounter,
    pub(super) rebalances: IntCounterVec,
    pub(super) buffered: IntGauge,
    pub(super) buffered_bytes: IntGauge,
    pub(super) paused: IntGauge,
    pub(super) depth: DepthMetrics,
}

/// What waits for this pod: per-partition lag, the queue depth and the scaling signal.
#[derive(Clone, Debug)]
pub(super) struct DepthMetrics {
    queue_depth: IntGauge,
    partition_lag: prometheus::IntGaugeVec,
    lag_seconds: prometheus::Gauge,
    scaling_lag: prometheus::Gauge,
}

impl DepthMetrics {
    fn new(r: &Registry) -> Self {
        DepthMetrics {
            queue_depth: gauge(
                r,
                "sluice_queue_depth",
                "Events waiting for this pod: lag of its assigned partitions plus events \
                 buffered in process.",
            ),
            partition_lag: registered(
                r,
                prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_partition_lag",
                        "Events in an assigned partition not yet read (high watermark - position).",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            lag_seconds: registered(
                r,
                prometheus::Gauge::new(
                    "sluice_lag_seconds",
                    "How long the events waiting for this pod (sluice_queue_depth) take at \
                     the rate it finished events over the last 10 s: the backlog, in \
                     seconds.",
                )
                .expect("valid metric"),
            ),
            scaling_lag: registered(
                r,
                prometheus::Gauge::new(
                    "sluice_scaling_lag_seconds",
                    "The autoscaling signal: sluice_lag_seconds times the share of lane \
                     time not spent waiting on the API's limit (0 while no event \
                     finishes) — the backlog another pod could drain faster.",
                )
                .expect("valid metric"),
            ),
        }
    }
}

impl SourceMetrics {
    /// Registers them in `r`.
    pub(super) fn new(r: &Registry) -> Self {
        SourceMetrics {
            consumed: counter(
                r,
                "sluice_events_consumed_total",
                "Messages read from Kafka.",
            ),
            stale: counter(
                r,
                "sluice_stale_messages_total",
                "Messages fetched before their partition was revoked, left to its new owner.",
            ),
            revoked_dropped: counter(
                r,
                "sluice_revoked_queued_dropped_total",
                "Queued, unsent events of revoked partitions dropped by the lanes (the new owner reads them).",
            ),
            invalid: counter_vec(
                r,
                "sluice_events_invalid_total",
                "Messages that could not be decoded or validated, by reason.",
                &["reason"],
            ),
            commits: counter(r, "sluice_commits_total", "Offset commits that succeeded."),
            rebalances: counter_vec(
                r,
                "sluice_rebalances_total",
                "Partition assignments and revocations.",
                &["kind"],
            ),
            buffered: gauge(
                r,
                "sluice_buffered_events",
                "Events consumed and not yet delivered or rejected.",
            ),
            buffered_bytes: gauge(
                r,
                "sluice_buffered_bytes",
                "Bytes of those events held in process (as read and as encoded).",
            ),
            paused: gauge(
                r,
                "sluice_partitions_paused",
                "1 while back-pressure stops the consumer reading (held, or its partitions paused).",
            ),
            depth: DepthMetrics::new(r),
        }
    }
}

impl Metrics {
    /// A message was read from Kafka.
    pub fn consumed(&self) {
        self.source.consumed.inc();
    }

    /// A message of a partition no longer assigned here arrived and was left alone.
    pub(crate) fn stale_after_revoke(&self) {
        self.source.stale.inc();
    }

    /// A lane dropped `events` queued events of revoked partitions.
    pub(crate) fn revoked_dropped(&self, events: usize) {
        self.source.revoked_dropped.inc_by(events as u64);
    }

    /// Queued events of revoked partitions dropped so far.
    #[cfg(feature = "test-support")]
    pub fn revoked_dropped_count(&self) -> u64 {
        self.source.revoked_dropped.get()
    }

    /// A message could not be decoded or validated.
    pub fn invalid(&self, origin: &Origin, reason: FailureReason, detail: &dyn std::fmt::Display) {
        let reason = reason.code();
        if let Some(held_back) = self.delivery.lines.allow(&format!("invalid/{reason}")) {
            tracing::warn!(
                topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
                reason = %reason, "invalid event: {detail}{}",
                super::delivery::more_like_it(held_back)
            );
        }
        self.source.invalid.with_label_values(&[&reason]).inc();
    }

    /// The backlog was measured: `lag` seconds to read it at the current rate, `bound`
    /// the limit-bound share of lane time, `scaling` the part another pod would help with.
    pub(crate) fn set_scaling(&self, lag: f64, bound: f64, scaling: f64) {
        self.source.depth.lag_seconds.set(lag);
        self.source.depth.scaling_lag.set(scaling);
        self.limits.limit_bound.set(bound);
    }

    /// The last computed autoscaling signal, in seconds.
    pub fn scaling_lag_seconds(&self) -> f64 {
        self.source.depth.scaling_lag.get()
    }

    /// The last measured backlog, in seconds at the current rate.
    pub fn lag_seconds(&self) -> f64 {
        self.source.depth.lag_seconds.get()
    }

    /// The brokers could not be reached (librdkafka's transport errors, a failed poll).
    pub(crate) fn kafka_failed(&self, error: &str) {
        self.kafka_outages.failed("brokers", error);
    }

    /// The brokers' outage now, if they are away (for `/readyz`).
    pub(crate) fn kafka_outage(&self) -> Option<String> {
        self.kafka_outages.describe("brokers")
    }

    /// The brokers answered (a message read, a commit confirmed, watermarks read).
    pub(crate) fn kafka_ok(&self) {
        self.kafka_outages.recovered("brokers");
    }

    /// Offsets were committed.
    pub fn committed(&self, partitions: usize) {
        tracing::debug!(partitions, "committed offsets");
        self.source.commits.inc();
    }

    /// Partitions were assigned or revoked.
    pub fn rebalance(&self, kind: &'static str, partitions: usize) {
        tracing::info!(kind, partitions, "rebalance");
        self.source.rebalances.with_label_values(&[kind]).inc();
    }

    /// Buffered events (and their bytes) changed.
    pub(crate) fn set_buffered(&self, events: usize, bytes: usize) {
        self.source.buffered.set(events as i64);
        self.source.buffered_bytes.set(bytes as i64);
    }

    /// Back-pressure stopped the source reading (`held`) or let it read again;
    /// `partitions` when that meant pausing or resuming them in librdkafka (a long
    /// hold), which is logged. Short holds are the steady state of a busy worker.
    pub(crate) fn set_held_back(&self, held: bool, partitions: bool, buffered: usize) {
        match (held, partitions) {
            (true, true) => tracing::info!(buffered, "back-pressure held on: pausing partitions"),
            (false, true) => {
                tracing::info!(buffered, "back-pressure released: resuming partitions")
            }
            (true, false) => tracing::debug!(buffered, "back-pressure: holding"),
            (false, false) => tracing::debug!(buffered, "back-pressure released: reading"),
        }
        self.source.paused.set(held.into());
    }

    /// Total invalid messages with this reason, for tests and reports.
    #[cfg(feature = "test-support")]
    pub fn invalid_count(&self, reason: &str) -> u64 {
        self.source.invalid.with_label_values(&[reason]).get()
    }

    /// Total messages read.
    #[cfg(feature = "test-support")]
    pub fn consumed_count(&self) -> u64 {
        self.source.consumed.get()
    }

    /// The queue depth and per-partition lag were measured.
    pub(crate) fn set_queue_depth(
        &self,
        depth: u64,
        partitions: &[(&str, i32, i64)],
        gone: &[(&str, i32)],
    ) {
        self.source.depth.queue_depth.set(depth as i64);
        for (topic, partition, lag) in partitions {
            self.source
                .depth
                .partition_lag
                .with_label_values(&[*topic, partition.to_string().as_str()])
                .set(*lag);
        }
        for (topic, partition) in gone {
            let _ = self
                .source
                .depth
                .partition_lag
                .remove_label_values(&[*topic, partition.to_string().as_str()]);
        }
    }

    /// The last measured queue depth.
    pub fn queue_depth(&self) -> i64 {
        self.source.depth.queue_depth.get()
    }

    /// Partition assignments (`assign`) or revocations (`revoke`) so far.
    pub fn rebalance_count(&self, kind: &str) -> u64 {
        self.source.rebalances.with_label_values(&[kind]).get()
    }

    /// Events consumed and not yet completed, as last reported.
    pub fn buffered(&self) -> i64 {
        self.source.buffered.get()
    }

    /// Bytes of the buffered events, as last reported.
    pub fn buffered_bytes(&self) -> i64 {
        self.source.buffered_bytes.get()
    }

    /// Whether back-pressure stops the consumer reading.
    pub fn paused(&self) -> bool {
        self.source.paused.get() == 1
    }
}
