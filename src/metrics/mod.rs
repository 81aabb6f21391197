//! Everything that happens, logged and counted in one call so logs and metrics never
//! drift. Label values are bounded: workspace ids come from the configuration and
//! reasons from fixed codes; never a user id, key or offset.

pub mod outage;
#[cfg(target_os = "linux")]
pub mod process;
pub mod quiet;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::deliver::FailureReason;
use crate::source::Origin;

/// The worker's Prometheus registry and the handles the pipeline reports through.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    consumed: IntCounter,
    stale: IntCounter,
    revoked_dropped: IntCounter,
    delivered: IntCounterVec,
    invalid: IntCounterVec,
    dead_lettered: IntCounterVec,
    dlq_errors: IntCounter,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    limiter_wait_seconds: HistogramVec,
    throttled: IntCounterVec,
    auth_failures: IntCounterVec,
    retries: IntCounterVec,
    commits: IntCounter,
    rebalances: IntCounterVec,
    buffered: IntGauge,
    buffered_bytes: IntGauge,
    paused: IntGauge,
    effective_rate: prometheus::GaugeVec,
    queue_depth: IntGauge,
    partition_lag: prometheus::IntGaugeVec,
    batch_size: prometheus::Histogram,
    in_flight: IntGauge,
    end_to_end_seconds: prometheus::Histogram,
    delivery_seconds: prometheus::Histogram,
    /// Delivery latency in µs: since start, and since the last interval read.
    delivery_hdr:
        Arc<std::sync::Mutex<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)>>,
    limiter_share: prometheus::GaugeVec,
    parked: IntCounterVec,
    parked_waiting: prometheus::IntGaugeVec,
    workspace_parked: prometheus::IntGaugeVec,
    limiter_fallbacks: IntCounter,
    limiter_fleet_up: IntGauge,
    scaling_depth: IntGauge,
    limit_bound: prometheus::Gauge,
    /// Nanoseconds attempts waited on their workspace's limit, and spent waiting or
    /// in flight in all: the limit-bound share of lane time.
    limit_nanos: std::sync::Arc<(AtomicU64, AtomicU64)>,
    /// The brokers unreachable (one target, `brokers`).
    kafka_outages: Arc<outage::Outages>,
    /// A workspace's API unreachable (connection refused, timeouts).
    api_outages: Arc<outage::Outages>,
    /// Retry lines, one per workspace and reason per interval.
    retry_lines: Arc<quiet::Quiet>,
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

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

/// Seconds, from 1 ms to a minute.
fn seconds_buckets() -> Vec<f64> {
    vec![
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

/// Registers `sluice_build_info{version}`: always 1, labelled with the running version.
fn register_build_info(registry: &Registry) {
    let g = prometheus::IntGaugeVec::new(
        Opts::new(
            "sluice_build_info",
            "The running sluice version (value is 1).",
        ),
        &["version"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
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
        let dependency_down = prometheus::IntGaugeVec::new(
            Opts::new(
                "sluice_dependency_down",
                "1 while a dependency (kafka: the brokers; api: a workspace's API) does not answer.",
            ),
            &["dependency", "target"],
        )
        .expect("valid metric");
        r.register(Box::new(dependency_down.clone()))
            .expect("unique metric");
        let dependency_failures = counter_vec(
            &r,
            "sluice_dependency_failures_total",
            "Failed attempts to reach a dependency (connection refused, timeouts, broker errors).",
            &["dependency", "target"],
        );
        Metrics {
            consumed: counter(
                &r,
                "sluice_events_consumed_total",
                "Messages read from Kafka.",
            ),
            stale: counter(
                &r,
                "sluice_stale_messages_total",
                "Messages fetched before their partition was revoked, left to its new owner.",
            ),
            revoked_dropped: counter(
                &r,
                "sluice_revoked_queued_dropped_total",
                "Queued, unsent events of revoked partitions dropped by the lanes (the new owner reads them).",
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
            dead_lettered: counter_vec(
                &r,
                "sluice_events_dead_lettered_total",
                "Events written to the dead-letter topic, by workspace and reason.",
                &["workspace", "reason"],
            ),
            dlq_errors: counter(
                &r,
                "sluice_dlq_errors_total",
                "Failed attempts to write a dead letter (retried until acknowledged).",
            ),
            requests: counter_vec(
                &r,
                "sluice_http_requests_total",
                "HTTP requests to the destination, by status class.",
                &["workspace", "status_class"],
            ),
            request_seconds: histogram(
                &r,
                "sluice_http_request_duration_seconds",
                "Time from sending a request to its answer.",
                &["workspace"],
                seconds_buckets(),
            ),
            limiter_wait_seconds: histogram(
                &r,
                "sluice_limiter_wait_seconds",
                "Time an attempt waited for its workspace's token and a global slot.",
                &["workspace"],
                seconds_buckets(),
            ),
            throttled: counter_vec(
                &r,
                "sluice_throttled_total",
                "Answers that throttled a workspace (429, or 503 with Retry-After).",
                &["workspace"],
            ),
            auth_failures: counter_vec(
                &r,
                "sluice_auth_failures_total",
                "Requests refused for bad credentials (401/403); retried until fixed.",
                &["workspace"],
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
            buffered_bytes: gauge(
                &r,
                "sluice_buffered_bytes",
                "Bytes of those events held in process (as read and as encoded).",
            ),
            paused: gauge(
                &r,
                "sluice_partitions_paused",
                "1 while the assigned partitions are paused for back-pressure.",
            ),
            effective_rate: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "sluice_limiter_effective_rate",
                        "Requests per second the limiter currently allows a workspace.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            queue_depth: gauge(
                &r,
                "sluice_queue_depth",
                "Events waiting for this pod: lag of its assigned partitions plus events \
                 buffered in process. The autoscaling signal.",
            ),
            partition_lag: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_partition_lag",
                        "Events in an assigned partition not yet read (high watermark - position).",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            batch_size: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new("sluice_batch_size", "Events per request sent.").buckets(
                        vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                    ),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            in_flight: gauge(
                &r,
                "sluice_http_requests_in_flight",
                "HTTP requests sent and not yet answered.",
            ),
            delivery_seconds: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "sluice_delivery_latency_seconds",
                        "From the event entering Kafka (its record timestamp, or loadgen's \
                         scheduled send time) to the API accepting it.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                        300.0,
                    ]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            delivery_hdr: {
                let micros = || {
                    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                        .expect("valid bounds")
                };
                Arc::new(std::sync::Mutex::new((micros(), micros())))
            },
            end_to_end_seconds: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "sluice_end_to_end_latency_seconds",
                        "From the event's own timestamp to the API accepting it.",
                    )
                    .buckets(vec![
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    ]),
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            limiter_share: gauge_vec(
                &r,
                "sluice_limiter_share",
                "Share of the workspace's limit this pod may use: its share of the partitions \
                 (partition-share, and redis while Redis is away), 1 on the fleet budget or local.",
                &["workspace"],
            ),
            parked: counter_vec(
                &r,
                "sluice_parked_events_total",
                "Events of parked workspaces written to the parking topic (kind=written) and \
                 read back into their lanes (kind=drained).",
                &["workspace", "kind"],
            ),
            parked_waiting: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_parked_events_waiting",
                        "Parking-topic records behind this pod's reader of a parked workspace.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            workspace_parked: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "sluice_workspace_parked",
                        "1 while a workspace is off the direct path (parked or returning) on \
                         this pod.",
                    ),
                    &["workspace"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            limiter_fallbacks: counter(
                &r,
                "sluice_limiter_fallback_total",
                "Times the fleet budget (Redis) became unreachable and the limiter fell back \
                 to partition-share.",
            ),
            limiter_fleet_up: gauge(
                &r,
                "sluice_limiter_fleet_up",
                "1 while tokens come from the fleet budget in Redis (limits.mode = redis).",
            ),
            scaling_depth: gauge(
                &r,
                "sluice_scaling_queue_depth",
                "The autoscaling signal: sluice_queue_depth times the share of lane time not \
                 spent waiting on the API's limit — the work another pod could speed up.",
            ),
            limit_bound: {
                let g = prometheus::Gauge::new(
                    "sluice_limit_bound_ratio",
                    "Share of lane time (waiting plus in flight) spent waiting on workspace \
                     limits over the last measurement.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            limit_nanos: Default::default(),
            kafka_outages: Arc::new(outage::Outages::new(
                "kafka",
                dependency_down.clone(),
                dependency_failures.clone(),
            )),
            api_outages: Arc::new(outage::Outages::new(
                "api",
                dependency_down,
                dependency_failures,
            )),
            retry_lines: Arc::new(quiet::Quiet::new(outage::REMINDER)),
            registry: {
                register_build_info(&r);
                // CPU seconds, memory, open files of this process (Linux): CPU per pod
                // for capacity reviews.
                #[cfg(target_os = "linux")]
                r.register(Box::new(process::ProcessCollector::new()))
                    .expect("unique metric");
                r
            },
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

    /// A message of a partition no longer assigned here arrived and was left alone.
    pub fn stale_after_revoke(&self) {
        self.stale.inc();
    }

    /// A lane dropped `events` queued events of revoked partitions.
    pub fn revoked_dropped(&self, events: usize) {
        self.revoked_dropped.inc_by(events as u64);
    }

    /// Queued events of revoked partitions dropped so far.
    pub fn revoked_dropped_count(&self) -> u64 {
        self.revoked_dropped.get()
    }

    /// `count` events of `workspace` were accepted by the API.
    pub fn delivered(&self, workspace: &str, count: usize) {
        self.delivered
            .with_label_values(&[workspace])
            .inc_by(count as u64);
        // A batch refused for good (count 0) is no sign the API is back.
        if count > 0 {
            self.api_outages.recovered(workspace);
        }
    }

    /// A message could not be decoded or validated.
    pub fn invalid(&self, origin: &Origin, reason: FailureReason, detail: &dyn std::fmt::Display) {
        let reason = reason.code();
        tracing::warn!(
            topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
            reason = %reason, "invalid event: {detail}"
        );
        self.invalid.with_label_values(&[&reason]).inc();
    }

    /// An event was written to the dead-letter topic (the write is acknowledged).
    pub fn dead_lettered(
        &self,
        workspace: Option<&str>,
        origin: &Origin,
        reason: FailureReason,
        detail: &str,
    ) {
        let workspace = workspace.unwrap_or("unknown");
        let reason = reason.code();
        tracing::warn!(
            workspace, topic = %origin.tp.topic, partition = origin.tp.partition,
            offset = origin.offset, reason = %reason, "dead-lettered: {detail}"
        );
        self.dead_lettered
            .with_label_values(&[workspace, &reason])
            .inc();
    }

    /// Writing a dead letter failed; it is tried again and its offset stays uncommitted.
    pub fn dlq_error(&self, origin: &Origin, error: &dyn std::fmt::Display) {
        tracing::error!(
            topic = %origin.tp.topic, partition = origin.tp.partition, offset = origin.offset,
            "dead-letter topic unavailable, retrying (offsets stay uncommitted): {error}"
        );
        self.dlq_errors.inc();
    }

    /// A request got an answer (or failed to) of this class (`2xx`, `4xx`, `error`...).
    pub fn request(&self, workspace: &str, status_class: &str, took: Duration) {
        self.requests
            .with_label_values(&[workspace, status_class])
            .inc();
        self.request_seconds
            .with_label_values(&[workspace])
            .observe(took.as_secs_f64());
        self.limit_nanos
            .1
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// An attempt waited this long for the limiter.
    pub fn limiter_wait(&self, workspace: &str, waited: Duration) {
        self.limiter_wait_seconds
            .with_label_values(&[workspace])
            .observe(waited.as_secs_f64());
        let nanos = waited.as_nanos() as u64;
        self.limit_nanos.0.fetch_add(nanos, Ordering::Relaxed);
        self.limit_nanos.1.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Seconds attempts have waited on workspace limits, and spent waiting or in
    /// flight in all, since start.
    pub fn limit_time(&self) -> (f64, f64) {
        let (wait, busy) = &*self.limit_nanos;
        (
            wait.load(Ordering::Relaxed) as f64 / 1e9,
            busy.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }

    /// The autoscaling signal was computed: `depth` events another pod could help
    /// with, `bound` the limit-bound share of lane time.
    pub fn set_scaling(&self, depth: u64, bound: f64) {
        self.scaling_depth.set(depth as i64);
        self.limit_bound.set(bound);
    }

    /// The last computed autoscaling signal.
    pub fn scaling_depth(&self) -> i64 {
        self.scaling_depth.get()
    }

    /// This pod's share of a workspace's limit.
    pub fn set_share(&self, workspace: &str, share: f64) {
        self.limiter_share
            .with_label_values(&[workspace])
            .set(share);
    }

    /// A workspace could not keep up and is parked (logged once per episode).
    pub fn workspace_parked(&self, workspace: &str, budget: usize) {
        let gauge = self.workspace_parked.with_label_values(&[workspace]);
        if gauge.get() == 0 {
            tracing::warn!(
                workspace,
                budget,
                "workspace parked: it holds its whole buffer budget; its new events go to \
                 the parking topic and are read back at its pace"
            );
            gauge.set(1);
        }
    }

    /// A parked workspace is back on the direct path everywhere on this pod.
    pub fn workspace_returned(&self, workspace: &str) {
        tracing::info!(
            workspace,
            "workspace back on the direct path: its parked events are delivered"
        );
        self.workspace_parked.with_label_values(&[workspace]).set(0);
        self.parked_waiting.with_label_values(&[workspace]).set(0);
    }

    /// One event of a parked workspace was written to the parking topic.
    pub fn parked_written(&self, workspace: &str) {
        self.parked.with_label_values(&[workspace, "written"]).inc();
    }

    /// One parked event was read back into its lane.
    pub fn parked_drained(&self, workspace: &str) {
        self.parked.with_label_values(&[workspace, "drained"]).inc();
    }

    /// Records behind a parked workspace's reader.
    pub fn set_parked_waiting(&self, workspace: &str, records: i64) {
        self.parked_waiting
            .with_label_values(&[workspace])
            .set(records);
    }

    /// Parked events written or drained so far (`kind`), for one workspace.
    pub fn parked_count(&self, workspace: &str, kind: &str) -> u64 {
        self.parked.with_label_values(&[workspace, kind]).get()
    }

    /// The fleet budget became unreachable: the limiter falls back to partition-share.
    pub fn limiter_fallback(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            "fleet rate limit unavailable, falling back to partition-share until Redis \
             answers: {error}"
        );
        self.limiter_fallbacks.inc();
        self.limiter_fleet_up.set(0);
    }

    /// The fleet budget answers again.
    pub fn limiter_fleet_back(&self) {
        tracing::info!("fleet rate limit (Redis) is back: leaving partition-share");
        self.limiter_fleet_up.set(1);
    }

    /// Whether the fleet budget is in use.
    pub fn set_fleet_up(&self, up: bool) {
        self.limiter_fleet_up.set(up as i64);
    }

    /// The API throttled a workspace.
    pub fn throttled(&self, workspace: &str, retry_after: Option<Duration>) {
        tracing::warn!(
            workspace,
            ?retry_after,
            "throttled by the API: pausing and slowing down"
        );
        self.throttled.with_label_values(&[workspace]).inc();
    }

    /// The API refused a workspace's credentials.
    pub fn auth_failure(&self, workspace: &str, status: u16) {
        tracing::error!(
            workspace,
            status,
            "the API refuses this workspace's credentials; check its site_id and API key \
             (events are kept and retried at the longest backoff)"
        );
        self.auth_failures.with_label_values(&[workspace]).inc();
    }

    /// A request will be tried again. An API that cannot be reached (connection
    /// refused) is one outage, logged when it starts and every 30 s while it lasts;
    /// an API that answers but fails some requests (5xx, timeouts, resets) is not
    /// down: one line per reason every 30 s, with how many were held back.
    pub fn retry(&self, workspace: &str, reason: FailureReason, detail: &str) {
        let unreachable = reason == FailureReason::Connect;
        let reason = reason.code();
        let reason = &*reason;
        self.retries.with_label_values(&[workspace, reason]).inc();
        if unreachable {
            self.api_outages
                .failed(workspace, &format!("{reason}: {detail}"));
        } else if let Some(held_back) = self.retry_lines.allow(&format!("{workspace}/{reason}")) {
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

    /// The brokers could not be reached (librdkafka's transport errors, a failed poll).
    pub fn kafka_failed(&self, error: &str) {
        self.kafka_outages.failed("brokers", error);
    }

    /// The brokers' outage now, if they are away (for `/readyz`).
    pub fn kafka_outage(&self) -> Option<String> {
        self.kafka_outages.describe("brokers")
    }

    /// The brokers answered (a message read, a commit confirmed, watermarks read).
    pub fn kafka_ok(&self) {
        self.kafka_outages.recovered("brokers");
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

    /// Buffered events (and their bytes) changed.
    pub fn set_buffered(&self, events: usize, bytes: usize) {
        self.buffered.set(events as i64);
        self.buffered_bytes.set(bytes as i64);
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

    /// Events dead-lettered with this reason, over all workspaces.
    pub fn dead_lettered_count(&self, reason: &str) -> u64 {
        sum_where(&self.dead_lettered, "reason", reason)
    }

    /// Total events dead-lettered.
    pub fn dead_lettered_total(&self) -> u64 {
        sum(&self.dead_lettered)
    }

    /// Answers that throttled `workspace`.
    pub fn throttled_count(&self, workspace: &str) -> u64 {
        self.throttled.with_label_values(&[workspace]).get()
    }

    /// Failed dead-letter writes.
    pub fn dlq_error_count(&self) -> u64 {
        self.dlq_errors.get()
    }

    /// Total messages read.
    pub fn consumed_count(&self) -> u64 {
        self.consumed.get()
    }

    /// Total retries.
    pub fn retry_count(&self) -> u64 {
        sum(&self.retries)
    }

    /// The autoscaling signal and per-partition lag were measured.
    pub fn set_queue_depth(
        &self,
        depth: u64,
        partitions: &[(&str, i32, i64)],
        gone: &[(&str, i32)],
    ) {
        self.queue_depth.set(depth as i64);
        for (topic, partition, lag) in partitions {
            self.partition_lag
                .with_label_values(&[*topic, partition.to_string().as_str()])
                .set(*lag);
        }
        for (topic, partition) in gone {
            let _ = self
                .partition_lag
                .remove_label_values(&[*topic, partition.to_string().as_str()]);
        }
    }

    /// The last measured queue depth.
    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    /// A batch of this many events is about to be sent.
    pub fn batch(&self, events: usize) {
        self.batch_size.observe(events as f64);
    }

    /// A request started (`true`) or ended (`false`).
    pub fn in_flight(&self, started: bool) {
        if started {
            self.in_flight.inc();
        } else {
            self.in_flight.dec();
        }
    }

    /// Events that entered Kafka at `entered_us` (unix µs) were accepted by the API at
    /// `now`: the Prometheus histogram, and the exact HDR ones `sluice capacity run`
    /// reads. One clock reading and one lock per batch, not per event.
    pub fn delivery_latency(&self, entered_us: impl IntoIterator<Item = i64>, now: SystemTime) {
        let now_us = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut hdr = self.delivery_hdr.lock().expect("not poisoned");
        for entered in entered_us {
            let us = (now_us - entered).max(0) as u64;
            self.delivery_seconds.observe(us as f64 / 1e6);
            hdr.0.saturating_record(us);
            hdr.1.saturating_record(us);
        }
    }

    /// Delivery latency (µs) since the last call, and reset.
    pub fn take_latency_interval(&self) -> hdrhistogram::Histogram<u64> {
        let mut hdr = self.delivery_hdr.lock().expect("not poisoned");
        let interval = hdr.1.clone();
        hdr.1.reset();
        interval
    }

    /// Delivery latency (µs) since start.
    pub fn latency_total(&self) -> hdrhistogram::Histogram<u64> {
        self.delivery_hdr.lock().expect("not poisoned").0.clone()
    }

    /// Events with these timestamps (unix seconds) were accepted by the API at `now`.
    pub fn end_to_end(&self, event_times: impl IntoIterator<Item = i64>, now: SystemTime) {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for event_time in event_times {
            let age = now - event_time as f64;
            if age >= 0.0 {
                self.end_to_end_seconds.observe(age);
            }
        }
    }

    /// The limiter's current rate for a workspace.
    pub fn set_effective_rate(&self, workspace: &str, rate: f64) {
        self.effective_rate
            .with_label_values(&[workspace])
            .set(rate);
    }

    /// The last reported effective rate of a workspace.
    pub fn effective_rate(&self, workspace: &str) -> f64 {
        self.effective_rate.with_label_values(&[workspace]).get()
    }

    /// Partition assignments (`assign`) or revocations (`revoke`) so far.
    pub fn rebalance_count(&self, kind: &str) -> u64 {
        self.rebalances.with_label_values(&[kind]).get()
    }

    /// Events consumed and not yet completed, as last reported.
    pub fn buffered(&self) -> i64 {
        self.buffered.get()
    }

    /// Bytes of the buffered events, as last reported.
    pub fn buffered_bytes(&self) -> i64 {
        self.buffered_bytes.get()
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

fn sum_where(vec: &IntCounterVec, label: &str, value: &str) -> u64 {
    use prometheus::core::Collector;
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == label && l.value() == value)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn sum(vec: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
