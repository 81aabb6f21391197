//! One-second samples of a capacity run, read from the worker's own metrics registry and
//! the load generator's counters, and what they say: what bounds the pipeline and the
//! most it sustained (a stress run's breaking point is [`super::stairs`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use sluice_core::metrics::Metrics;

/// The cumulative counters a sample is the difference of.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Events the load generator sent.
    pub sent: f64,
    /// Events delivered.
    pub delivered: f64,
    /// Events dead-lettered.
    pub dead_lettered: f64,
    /// HTTP requests answered.
    pub requests: f64,
    /// 429s (and silent throttles).
    pub throttled: f64,
    /// Seconds attempts waited on workspace limits.
    pub limit_wait: f64,
    /// Seconds attempts waited or were in flight.
    pub limit_busy: f64,
    /// CPU seconds of this process.
    pub cpu: f64,
}

/// One point of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// Events/s the load generator sent.
    pub offered_per_s: f64,
    /// Events/s delivered.
    pub delivered_per_s: f64,
    /// Events/s dead-lettered.
    pub dead_lettered_per_s: f64,
    /// Requests/s.
    pub requests_per_s: f64,
    /// 429s/s.
    pub throttled_per_s: f64,
    /// Events sent and not yet delivered or dead-lettered.
    pub backlog: f64,
    /// Share of lane time spent waiting on the API's limit (0..1).
    pub limiter_wait_share: f64,
    /// CPU cores this process used.
    pub cpu_cores: f64,
    /// Requests in flight at the sample.
    pub in_flight: f64,
    /// p99 of end-to-end latency over the interval, ms.
    pub p99_ms: f64,
    /// 1 when back-pressure held the consumer back at the sample.
    pub paused: f64,
    /// The process's resident memory at the sample, MB (worker, and with the embedded
    /// parts the broker, API and generator too): flat over a soak, or something leaks.
    pub rss_mb: f64,
}

impl Sample {
    /// Events/s done: delivered or dead-lettered.
    pub(crate) fn done_per_s(&self) -> f64 {
        self.delivered_per_s + self.dead_lettered_per_s
    }
}

/// Reads the counters now.
pub fn read(metrics: &Metrics, sent: &AtomicU64, start: Instant) -> Counters {
    let (limit_wait, limit_busy) = metrics.limit_time();
    Counters {
        t: start.elapsed().as_secs_f64(),
        sent: sent.load(Ordering::Relaxed) as f64,
        delivered: metrics.delivered_count() as f64,
        dead_lettered: metrics.dead_lettered_total() as f64,
        requests: family_sum(metrics, "sluice_http_requests_total"),
        throttled: family_sum(metrics, "sluice_throttled_total"),
        limit_wait,
        limit_busy,
        cpu: process_cpu_seconds().unwrap_or(0.0),
    }
}

/// The sample between two readings.
pub fn between(a: &Counters, b: &Counters, metrics: &Metrics, p99_ms: f64) -> Sample {
    let dt = (b.t - a.t).max(1e-3);
    let rate = |x: f64, y: f64| (y - x).max(0.0) / dt;
    let busy = b.limit_busy - a.limit_busy;
    Sample {
        t_s: b.t,
        offered_per_s: rate(a.sent, b.sent),
        delivered_per_s: rate(a.delivered, b.delivered),
        dead_lettered_per_s: rate(a.dead_lettered, b.dead_lettered),
        requests_per_s: rate(a.requests, b.requests),
        throttled_per_s: rate(a.throttled, b.throttled),
        backlog: (b.sent - b.delivered - b.dead_lettered).max(0.0),
        limiter_wait_share: if busy > 0.0 {
            ((b.limit_wait - a.limit_wait) / busy).clamp(0.0, 1.0)
        } else {
            0.0
        },
        cpu_cores: rate(a.cpu, b.cpu),
        in_flight: family_sum(metrics, "sluice_http_requests_in_flight"),
        p99_ms,
        paused: if metrics.paused() { 1.0 } else { 0.0 },
        rss_mb: resident_mb().unwrap_or(0.0),
    }
}

/// How much resident memory grew from the first minute (warm-up) to the end of
/// `timeline`, as a share of the first: `None` under two minutes or without figures.
pub(crate) fn rss_growth(timeline: &[Sample]) -> Option<f64> {
    let first = timeline.iter().find(|s| s.t_s >= 60.0 && s.rss_mb > 0.0)?;
    let end = timeline.iter().rev().find(|s| s.rss_mb > 0.0)?;
    (end.t_s >= 120.0).then(|| (end.rss_mb - first.rss_mb) / first.rss_mb)
}

/// This process's resident memory, MB (`None` off Linux).
fn resident_mb() -> Option<f64> {
    #[cfg(target_os = "linux")]
    return sluice_core::metrics::process::resident_bytes().map(|b| b as f64 / 1e6);
    #[cfg(not(target_os = "linux"))]
    None
}

/// Sum of every sample of a metric family in the registry (counters and gauges).
pub(crate) fn family_sum(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .map(|f| {
            let kind = f.get_field_type();
            f.get_metric()
                .iter()
                .map(|m| match kind {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => 0.0,
                })
                .sum::<f64>()
        })
        .sum()
}

/// CPU seconds (user + system) this process has used (`None` off Linux).
fn process_cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    return sluice_core::metrics::process::cpu_seconds();
    #[cfg(not(target_os = "linux"))]
    None
}

/// What limits the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Lanes wait on the API's rate limit most of the time.
    ApiLimit,
    /// The worker uses every core it has.
    Cpu,
    /// Requests in flight stay at the window (latency × in-flight caps it).
    InFlight,
    /// The broker: the load generator could not hand it events on time, or delivery
    /// broke while nothing in the worker was full (it waited on fetches).
    Broker,
    /// Too few partitions for the consumers (not measured in one process).
    Partitions,
    /// The lanes: the consumer's buffer stayed full (back-pressure held it back) while
    /// neither the API's limit, the CPU nor the in-flight window was, so events waited
    /// on the lanes' own work.
    Lanes,
    /// Nothing: every resource stayed under half its ceiling, so the pipeline carried
    /// all it was offered.
    OfferedLoad,
}

impl Bound {
    /// The name in report.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::ApiLimit => "api_limit",
            Bound::Cpu => "cpu",
            Bound::InFlight => "in_flight",
            Bound::Broker => "broker",
            Bound::Partitions => "partitions",
            Bound::Lanes => "lanes",
            Bound::OfferedLoad => "offered_load",
        }
    }
}

/// How close each bound came, 0..1, over some samples, and the one that bound.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// The bound.
    pub bound: Bound,
    /// Share of lane time waiting on limits.
    pub limiter_wait_share: f64,
    /// CPU cores used ÷ cores available.
    pub cpu_share: f64,
    /// Requests in flight ÷ the window.
    pub in_flight_share: f64,
    /// Share of the load generator's sends that were late (a broker that fell
    /// behind).
    pub broker_late_share: f64,
    /// Share of samples with the consumer held back by back-pressure.
    pub paused_share: f64,
}

/// Names the bound over `samples`: the resource closest to its ceiling. `broke`: the
/// samples are of a run that stopped keeping up, so something was full — when nothing
/// the worker holds was, the events did not reach it fast enough: the broker.
pub(crate) fn diagnose(
    samples: &[Sample],
    in_flight_window: f64,
    broker_late_share: f64,
    broke: bool,
) -> Diagnosis {
    let n = samples.len().max(1) as f64;
    let mean = |f: fn(&Sample) -> f64| samples.iter().map(f).sum::<f64>() / n;
    let cores = std::thread::available_parallelism().map_or(1.0, |c| c.get() as f64);
    let limiter_wait_share = mean(|s| s.limiter_wait_share);
    let cpu_share = (mean(|s| s.cpu_cores) / cores).min(1.0);
    let in_flight_share = (mean(|s| s.in_flight) / in_flight_window.max(1.0)).min(1.0);
    let paused_share = mean(|s| s.paused);
    // A full resource first; a held-back consumer names the lanes only when nothing
    // they wait for is full; otherwise the resource nearest its ceiling.
    let bound = if limiter_wait_share >= 0.5 {
        Bound::ApiLimit
    } else if cpu_share >= 0.85 {
        Bound::Cpu
    } else if in_flight_share >= 0.9 {
        Bound::InFlight
    } else if broker_late_share >= 0.05 {
        Bound::Broker
    } else if paused_share >= 0.5 {
        Bound::Lanes
    } else {
        [(Bound::Cpu, cpu_share), (Bound::InFlight, in_flight_share)]
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|s| s.1 >= 0.5)
            .map_or(
                if broke {
                    Bound::Broker
                } else {
                    Bound::OfferedLoad
                },
                |s| s.0,
            )
    };
    Diagnosis {
        bound,
        limiter_wait_share,
        cpu_share,
        in_flight_share,
        broker_late_share,
        paused_share,
    }
}

/// Samples averaged per window: the most a run sustained, and a stress run's
/// error-rate and runaway-backlog checks.
pub(crate) const WINDOW: usize = 3;

/// The highest delivery rate sustained over a window, events/s.
pub(crate) fn max_sustained(samples: &[Sample]) -> f64 {
    samples
        .windows(WINDOW)
        .map(|w| w.iter().map(Sample::done_per_s).sum::<f64>() / WINDOW as f64)
        .fold(0.0, f64::max)
}

/// A sample of only the figures a break is judged on, for tests.
#[cfg(test)]
pub(crate) fn test_sample(t_s: f64, offered: f64, delivered: f64, backlog: f64) -> Sample {
    Sample {
        t_s,
        offered_per_s: offered,
        delivered_per_s: delivered,
        dead_lettered_per_s: 0.0,
        requests_per_s: 0.0,
        throttled_per_s: 0.0,
        backlog,
        limiter_wait_share: 0.0,
        cpu_cores: 0.0,
        in_flight: 0.0,
        p99_ms: 0.0,
        paused: 0.0,
        rss_mb: 0.0,
    }
}

/// Sleeps until `start + n` seconds (so samples stay one second apart).
pub(crate) async fn tick(start: Instant, n: u64) {
    tokio::time::sleep_until((start + Duration::from_secs(n)).into()).await;
}

/// The load generator's sent counter, shared.
pub type SentCounter = Arc<AtomicU64>;

#[cfg(test)]
mod tests;
