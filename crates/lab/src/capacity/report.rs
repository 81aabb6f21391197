//! The capacity review: `report.json` (stable, versioned names), `report.md` (the
//! benchmark-template shape: configuration, results table, observations) and
//! `report.svg` (the timeline).

use std::path::Path;

use serde::Serialize;

use super::sample::{self, Diagnosis, Sample};
use super::stairs::Break;
use super::threshold::{Checked, Threshold};
use crate::latency::Percentiles;
use crate::loadgen;
use sluice_core::metrics::Metrics;
use sluice_mock_api::Snapshot;

mod markdown;
mod observe;

/// The version of `report.json`'s field names.
pub(crate) const SCHEMA: &str = "sluice.capacity.report/1";

/// Where and how the run ran.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// The broker was librdkafka's mock cluster.
    pub embedded_broker: bool,
    /// The API was the embedded `sluice mock-api`.
    pub embedded_api: bool,
    /// Broker description.
    pub brokers: String,
    /// API description.
    pub api: String,
    /// Topic loaded.
    pub topic: String,
    /// Its partitions (0: not known).
    pub partitions: i32,
    /// The most bytes of undelivered events the generator let one partition of the
    /// embedded broker hold (none on a real one).
    pub max_partition_backlog_bytes: Option<u64>,
    /// Requests the worker may have in flight at once.
    pub in_flight_window: f64,
    /// `batch.max_events`.
    pub batch_max_events: usize,
    /// `batch.linger_ms`.
    pub linger_ms: u64,
    /// `batch.max_in_flight`.
    pub max_in_flight: usize,
    /// Workspaces.
    pub workspaces: Vec<String>,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// sluice's version.
    pub version: &'static str,
    /// `git describe` of the working tree it ran from, when there is one.
    pub git: Option<String>,
    /// Run id (the loadgen's `sluice.run` header).
    pub run_id: String,
    /// When it ended, RFC 3339.
    pub finished_at: String,
    /// Profile name (`stages` for `--stage`).
    pub profile: String,
    /// Generator seed.
    pub seed: u64,
    /// Where it ran.
    pub environment: Environment,
    /// Events the load generator sent (acknowledged by the broker).
    pub sent: u64,
    /// Events the worker delivered.
    pub delivered: u64,
    /// Events the API accepted, by its own count (embedded API only).
    pub api_accepted: Option<u64>,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Deliberately invalid events sent (they should be dead-lettered).
    pub invalid_sent: u64,
    /// 429s (or silent throttles) the worker met.
    pub throttled: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Events the API received out of per-user order (embedded API only).
    pub order_violations: Option<u64>,
    /// Seconds from the first sample to the last.
    pub duration_s: f64,
    /// Delivered events per second over the run.
    pub delivered_per_s: f64,
    /// Requests per second over the run.
    pub requests_per_s: f64,
    /// Highest one-second delivery rate.
    pub max_delivered_per_s: f64,
    /// Highest one-second request rate.
    pub max_requests_per_s: f64,
    /// Highest delivery rate held over three seconds.
    pub max_sustainable_per_s: f64,
    /// Offered events/s where delivery stopped following (`stress` only).
    pub breaking_point_per_s: Option<f64>,
    /// Why it broke.
    pub broke: Option<Break>,
    /// What bounds the pipeline: `api_limit`, `cpu`, `in_flight`, `broker`, `partitions`.
    pub bound: sample::Bound,
    /// How close each bound came.
    pub diagnosis: Diagnosis,
    /// delivered ÷ (sent − invalid).
    pub delivered_ratio: f64,
    /// (dead-lettered − invalid sent) ÷ sent, never below 0: valid events that failed.
    pub error_rate: f64,
    /// delivered ÷ sent.
    pub success_rate: f64,
    /// throttled ÷ requests.
    pub throttled_rate: f64,
    /// End-to-end latency, scheduled send time → API acceptance, ms.
    pub latency_ms: Percentiles,
    /// Same, flattened for thresholds and scripts.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Share of lane time waiting on the API's limit over the run.
    pub limiter_wait_share: f64,
    /// The load generator's own summary (lateness, ack latency).
    pub loadgen: loadgen::Summary,
    /// Whether the run measured what it meant to (the generator kept its schedule).
    pub valid: bool,
    /// Thresholds and their results.
    pub thresholds: Vec<Checked>,
    /// Whether every threshold passed.
    pub passed: bool,
    /// Stopped early by a signal.
    pub stopped: bool,
    /// Sends the generator held back because the embedded broker's backlog was full.
    pub gate_waits: u64,
    /// What the figures say, in sentences.
    pub observations: Vec<String>,
    /// One sample a second.
    pub timeline: Vec<Sample>,
}

/// What a report is built from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// Run id.
    pub run_id: String,
    /// Profile name.
    pub profile: String,
    /// Seed.
    pub seed: u64,
    /// Where it ran.
    pub environment: Environment,
    /// The worker's metrics.
    pub metrics: &'a Metrics,
    /// The timeline.
    pub samples: Vec<Sample>,
    /// The load generator's summary.
    pub generated: loadgen::Summary,
    /// The embedded API's own count.
    pub api: Option<Snapshot>,
    /// Where a stress ramp broke.
    pub broke: Option<Break>,
    /// A stress run.
    pub stress: bool,
    /// Thresholds to check.
    pub thresholds: &'a [Threshold],
    /// Stopped by a signal.
    pub stopped: bool,
    /// Sends the generator held back for the embedded broker's backlog bound.
    pub gate_waits: u64,
}

impl Report {
    /// Builds the report.
    pub fn build(i: Inputs<'_>) -> Report {
        let (m, sent) = (i.metrics, i.generated.acknowledged);
        let invalid_sent: u64 = i.generated.invalid_events.values().sum();
        let delivered = m.delivered_count();
        let dead_lettered = m.dead_lettered_total();
        let throttled = sample::family_sum(m, "sluice_throttled_total") as u64;
        let requests = sample::family_sum(m, "sluice_http_requests_total") as u64;
        let duration = active_seconds(&i.samples);
        let latency = Percentiles::of_us(&m.latency_total());
        let (wait, busy) = m.limit_time();
        let diagnosis = diagnose(&i);
        let mut report = Report {
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION"),
            git: git_describe(),
            run_id: i.run_id,
            finished_at: chrono::Utc::now().to_rfc3339(),
            profile: i.profile,
            seed: i.seed,
            environment: i.environment,
            sent,
            delivered,
            api_accepted: i.api.as_ref().map(|a| a.events_accepted),
            dead_lettered,
            invalid_sent,
            throttled,
            requests,
            order_violations: i.api.as_ref().map(|a| a.order_violations),
            duration_s: duration,
            delivered_per_s: delivered as f64 / duration,
            requests_per_s: requests as f64 / duration,
            max_delivered_per_s: peak(&i.samples, |s| s.delivered_per_s),
            max_requests_per_s: peak(&i.samples, |s| s.requests_per_s),
            max_sustainable_per_s: sample::max_sustained(&i.samples),
            breaking_point_per_s: i.broke.as_ref().map(|b| b.offered_per_s),
            broke: i.broke,
            bound: diagnosis.bound,
            diagnosis,
            delivered_ratio: delivered as f64 / sent.saturating_sub(invalid_sent).max(1) as f64,
            error_rate: dead_lettered.saturating_sub(invalid_sent) as f64 / sent.max(1) as f64,
            success_rate: delivered as f64 / sent.max(1) as f64,
            throttled_rate: throttled as f64 / requests.max(1) as f64,
            p50_ms: latency.p50,
            p95_ms: latency.p95,
            p99_ms: latency.p99,
            latency_ms: latency,
            limiter_wait_share: if busy > 0.0 { wait / busy } else { 0.0 },
            valid: i.generated.valid,
            loadgen: i.generated,
            thresholds: Vec::new(),
            passed: true,
            stopped: i.stopped,
            gate_waits: i.gate_waits,
            observations: Vec::new(),
            timeline: i.samples,
        };
        report.judge(i.thresholds, i.stress);
        report
    }

    /// Checks `thresholds` and writes the observations.
    fn judge(&mut self, thresholds: &[Threshold], stress: bool) {
        if stress && self.broke.is_none() {
            self.observations.push(format!(
                "The ramp reached its end without breaking: the pipeline carried {:.0} events/s; raise --max-rate to find the limit.",
                self.max_sustainable_per_s
            ));
        }
        self.thresholds = thresholds
            .iter()
            .map(|t| t.check(|name| self.figure(name)))
            .collect();
        self.passed = self.thresholds.iter().all(|c| c.passed);
        let observations = self.observe();
        self.observations.extend(observations);
    }

    /// The figure a threshold names.
    pub(crate) fn figure(&self, name: &str) -> f64 {
        match name {
            "p50_latency" => self.latency_ms.p50,
            "p95_latency" => self.latency_ms.p95,
            "p99_latency" => self.latency_ms.p99,
            "p99_9_latency" => self.latency_ms.p99_9,
            "max_latency" => self.latency_ms.max,
            "error_rate" => self.error_rate,
            "delivered_ratio" => self.delivered_ratio,
            "throttled_rate" => self.throttled_rate,
            "delivered_per_s" => self.delivered_per_s,
            "requests_per_s" => self.requests_per_s,
            "rss_growth" => self.rss_growth().unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// How much resident memory grew from the first minute (warm-up) to the end, as a
    /// share of the first: `None` for runs shorter than two minutes or without it.
    pub(crate) fn rss_growth(&self) -> Option<f64> {
        sample::rss_growth(&self.timeline)
    }

    /// Writes report.json, report.md and report.svg into `dir` (created).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(
            dir.join("report.svg"),
            super::chart::svg(&self.timeline, self.broke.as_ref().map(|b| b.at_s))?,
        )?;
        Ok(())
    }
}

/// A new folder for a report: `./capacity-reports/<UTC time>-<kind>/`.
pub fn default_dir(kind: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("capacity-reports").join(format!(
        "{}-{kind}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

/// Seconds from the first sample with traffic to the last (at least 1 ms).
fn active_seconds(samples: &[Sample]) -> f64 {
    let active: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.offered_per_s > 0.0 || s.delivered_per_s > 0.0)
        .collect();
    let seconds =
        active.last().map_or(0.0, |s| s.t_s) - active.first().map_or(0.0, |s| s.t_s - 1.0);
    seconds.max(1e-3)
}

/// The highest per-second figure `f` of `samples` (0 if none).
fn peak(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).fold(0.0, f64::max)
}

/// What bounded the run, judged on the samples around its break (or its end).
fn diagnose(i: &Inputs<'_>) -> sample::Diagnosis {
    sample::diagnose(
        &bound_window(&i.samples, i.broke.as_ref()),
        i.environment.in_flight_window,
        i.generated.late_share,
        i.broke.is_some(),
    )
}

/// The samples the bound is judged over: from the break to the end of the load for a
/// stress run (what was full once delivery stopped following), else the busiest.
fn bound_window(samples: &[Sample], broke: Option<&Break>) -> Vec<Sample> {
    match broke {
        Some(b) => samples
            .iter()
            .filter(|s| s.t_s >= b.at_s - 1.0 && s.offered_per_s > 0.0)
            .cloned()
            .collect(),
        None => busiest(samples),
    }
}

/// The three samples around the highest delivery rate.
fn busiest(samples: &[Sample]) -> Vec<Sample> {
    let Some((i, _)) = samples
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.delivered_per_s.total_cmp(&b.1.delivered_per_s))
    else {
        return Vec::new();
    };
    samples[i.saturating_sub(1)..(i + 2).min(samples.len())].to_vec()
}

/// `git describe --always --dirty` of the current directory, if it is a checkout.
fn git_describe() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}
