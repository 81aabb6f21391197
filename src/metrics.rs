//! Everything that happens, logged and counted in one call so logs and metrics never
//! drift. Label values are bounded: workspace ids come from the configuration and
//! reasons from fixed codes; never a user id, key or offset.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::source::Origin;

/// The worker's Prometheus registry and the handles the pipeline reports through.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    consumed: IntCounter,
    delivered: IntCounterVec,
    invalid: IntCounterVec,
    rejected: IntCounterVec,
    requests: IntCounterVec,
    retries: IntCounterVec,
    commits: IntCounter,
    rebalances: IntCounterVec,
    buffered: IntGauge,
    paused: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    /// A fresh registry with every sluice metric registered.
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            consumed: counter(
                &r,
                "sluice_events_consumed_total",
                "Messages read from Kafka.",
            ),
            delivered: counter_vec(
                &r,
                "sluice_events_delivered_total",
                "Events the API accepted.",
                &["workspace"],
            ),
            invalid: counter_vec(
                &r,
                "sluice_events_invalid_total",
                "Messages that could not be decoded or validated, by reason.",
                &["reason"],
            ),
            rejected: counter_vec(
                &r,
                "sluice_events_rejected_total",
                "Events the API refused permanently, by reason.",
                &["workspace", "reason"],
            ),
            requests: counter_vec(
                &r,
                "sluice_http_requests_total",
                "HTTP requests to the destination, by status class.",
                &["workspace", "status_class"],
            ),
            retries: counter_vec(
                &r,
                "sluice_retries_total",
                "Requests tried again, by reason.",
                &["workspace", "reason"],
            ),
            commits: counter(&r, "sluice_commits_total", "Offset commits that succeeded."),
            rebalances: counter_vec(
                &r,
                "sluice_rebalances_total",
                "Partition assignments and revocations.",
                &["kind"],
            ),
            buffered: gauge(
                &r,
                "sluice_buffered_events",
                "Events consumed and not yet delivered or rejected.",
            ),
            paused: gauge(
                &r,
                "sluice_partitions_paused",
                "1 while the assigned partitions are paused for back-pressure.",
            ),
            registry: r,
        }
    }

    /// The registry, for the `/metrics` endpoint.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A message was read from Kafka.
    pub fn consumed(&self) {
        self.consumed.inc();
    }

    /// `count` events of `workspace` were accepted by the API.
    pub fn delivered(&self, workspace: &str, count: usize) {
        self.delivered
            .with_label_values(&[workspace])
            .inc_by(count as u64);
    }

    /// A message could not be decoded or validated.
    pub fn invalid(&self, origin: &Origin, reason: &'static str, detail: &dyn std::fmt::Display) {
        tracing::warn!(
            topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
            reason, "invalid event: {detail}"
        );
        self.invalid.with_label_values(&[reason]).inc();
    }

    /// The API refused an event permanently.
    pub fn rejected(&self, workspace: &str, origin: &Origin, reason: &str, detail: &str) {
        tracing::warn!(
            workspace, topic = %origin.tp.topic, partition = origin.tp.partition,
            offset = origin.offset, reason, "event rejected by the API: {detail}"
        );
        self.rejected.with_label_values(&[workspace, reason]).inc();
    }

    /// A request got an answer (or failed to) of this class (`2xx`, `4xx`, `error`...).
    pub fn request(&self, workspace: &str, status_class: &str) {
        self.requests
            .with_label_values(&[workspace, status_class])
            .inc();
    }

    /// A request will be tried again.
    pub fn retry(&self, workspace: &str, reason: &str, detail: &str) {
        tracing::info!(workspace, reason, "request failed, retrying: {detail}");
        self.retries.with_label_values(&[workspace, reason]).inc();
    }

    /// Offsets were committed.
    pub fn committed(&self, partitions: usize) {
        tracing::debug!(partitions, "committed offsets");
        self.commits.inc();
    }

    /// Partitions were assigned or revoked.
    pub fn rebalance(&self, kind: &'static str, partitions: usize) {
        tracing::info!(kind, partitions, "rebalance");
        self.rebalances.with_label_values(&[kind]).inc();
    }

    /// Buffered events changed.
    pub fn set_buffered(&self, events: usize) {
        self.buffered.set(events as i64);
    }

    /// The consumer paused or resumed its partitions.
    pub fn set_paused(&self, paused: bool, buffered: usize) {
        if paused {
            tracing::info!(buffered, "back-pressure: pausing partitions");
        } else {
            tracing::info!(buffered, "back-pressure released: resuming partitions");
        }
        self.paused.set(paused.into());
    }

    /// Total invalid messages with this reason, for tests and reports.
    pub fn invalid_count(&self, reason: &str) -> u64 {
        self.invalid.with_label_values(&[reason]).get()
    }

    /// Total events delivered over all workspaces.
    pub fn delivered_count(&self) -> u64 {
        sum(&self.delivered)
    }

    /// Total events rejected over all workspaces and reasons.
    pub fn rejected_count(&self) -> u64 {
        sum(&self.rejected)
    }

    /// Total messages read.
    pub fn consumed_count(&self) -> u64 {
        self.consumed.get()
    }

    /// Total retries.
    pub fn retry_count(&self) -> u64 {
        sum(&self.retries)
    }

    /// Partition assignments (`assign`) or revocations (`revoke`) so far.
    pub fn rebalance_count(&self, kind: &str) -> u64 {
        self.rebalances.with_label_values(&[kind]).get()
    }

    /// Events consumed and not yet completed, as last reported.
    pub fn buffered(&self) -> i64 {
        self.buffered.get()
    }

    /// Whether the partitions are paused for back-pressure.
    pub fn paused(&self) -> bool {
        self.paused.get() == 1
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding into a String cannot fail");
        out
    }
}

fn sum(vec: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
