//! Everything that happens, logged and counted in one call so logs and metrics never
//! drift. Label values are bounded: workspace ids come from the configuration and
//! reasons from fixed codes; never a user id, key or offset.
//!
//! One [`Metrics`] handle for the whole pipeline; its metrics and the calls that
//! report them are kept by stage: `source.rs` (Kafka, the buffer, lag and the scaling
//! signal), `delivery.rs` (requests, retries, dead letters, latency), `limits.rs` (the
//! limiter) and `parking.rs`. [`outage`] and [`quiet`] keep a failure to one line per
//! condition per interval; [`process`] is this process's CPU and memory.

mod delivery;
mod latency;
mod limits;
pub(crate) mod outage;
mod parking;
#[cfg(target_os = "linux")]
pub mod process;
pub(crate) mod quiet;
mod register;
mod source;

use register::{counter_vec, register_build_info, registered};

use std::sync::Arc;

use prometheus::{IntCounterVec, Opts, Registry};

/// The worker's Prometheus registry and the handles the pipeline reports through.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    source: source::SourceMetrics,
    delivery: delivery::DeliveryMetrics,
    limits: limits::LimitMetrics,
    parking: parking::ParkingMetrics,
    /// The brokers unreachable (one target, `brokers`).
    kafka_outages: Arc<outage::Outages>,
    /// A workspace's API unreachable (connection refused, timeouts).
    api_outages: Arc<outage::Outages>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every sluice metric registered.
    pub fn new() -> Self {
        let r = Registry::new();
        let dependency_down = registered(
            &r,
            prometheus::IntGaugeVec::new(
                Opts::new(
                    "sluice_dependency_down",
                    "1 while a dependency (kafka: the brokers; api: a workspace's API) does not answer.",
                ),
                &["dependency", "target"],
            )
            .expect("valid metric"),
        );
        let dependency_failures = counter_vec(
            &r,
            "sluice_dependency_failures_total",
            "Failed attempts to reach a dependency (connection refused, timeouts, broker errors).",
            &["dependency", "target"],
        );
        Metrics {
            source: source::SourceMetrics::new(&r),
            delivery: delivery::DeliveryMetrics::new(&r),
            limits: limits::LimitMetrics::new(&r),
            parking: parking::ParkingMetrics::new(&r),
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

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding into a String cannot fail");
        out
    }
}

#[cfg(feature = "test-support")]
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
