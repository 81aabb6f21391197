//! The capacity report: `report.json` (stable, versioned names), `report.md` (the
//! benchmark-template shape: configuration, results table, observations) and
//! `report.svg` (the timeline).

use std::path::Path;

use serde::Serialize;

use super::sample::{self, Diagnosis, Sample};
use super::stairs::Break;
use super::threshold::{Checked, Threshold};
use crate::metrics::Metrics;
use crate::tools::latency::Percentiles;
use crate::tools::loadgen;
use crate::tools::mock_api::Snapshot;

/// The version of `report.json`'s field names.
pub const SCHEMA: &str = "sluice.capacity.report/1";

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
    /// The backlog bound of the embedded broker, events (none on a real one).
    pub max_backlog: Option<u64>,
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
        let m = i.metrics;
        let sent = i.generated.acknowledged;
        let invalid_sent: u64 = i.generated.invalid_events.values().sum();
        let delivered = m.delivered_count();
        let dead_lettered = m.dead_lettered_total();
        let throttled = sample::family_sum(m, "sluice_throttled_total") as u64;
        let requests = sample::family_sum(m, "sluice_http_requests_total") as u64;
        let active: Vec<&Sample> = i
            .samples
            .iter()
            .filter(|s| s.offered_per_s > 0.0 || s.delivered_per_s > 0.0)
            .collect();
        let duration =
            active.last().map_or(0.0, |s| s.t_s) - active.first().map_or(0.0, |s| s.t_s - 1.0);
        let duration = duration.max(1e-3);
        let latency = Percentiles::of_us(&m.latency_total());
        let (wait, busy) = m.limit_time();
        // The bound: from the break to the end of the load for a stress run (what was
        // full once delivery stopped following), else over the busiest window.
        let window: Vec<Sample> = match &i.broke {
            Some(b) => i
                .samples
                .iter()
                .filter(|s| s.t_s >= b.at_s - 1.0 && s.offered_per_s > 0.0)
                .cloned()
                .collect(),
            None => busiest(&i.samples),
        };
        let diagnosis = sample::diagnose(
            &window,
            i.environment.in_flight_window,
            i.generated.late_share,
            i.broke.is_some(),
        );
        let valid_sent = sent.saturating_sub(invalid_sent).max(1);
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
            max_delivered_per_s: i
                .samples
                .iter()
                .map(|s| s.delivered_per_s)
                .fold(0.0, f64::max),
            max_requests_per_s: i
                .samples
                .iter()
                .map(|s| s.requests_per_s)
                .fold(0.0, f64::max),
            max_sustainable_per_s: sample::max_sustained(&i.samples),
            breaking_point_per_s: i.broke.as_ref().map(|b| b.offered_per_s),
            broke: i.broke,
            bound: diagnosis.bound,
            diagnosis,
            delivered_ratio: delivered as f64 / valid_sent as f64,
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
        if i.stress && report.broke.is_none() {
            report.observations.push(format!(
                "The ramp reached its end without breaking: the pipeline carried {:.0} events/s; raise --max-rate to find the limit.",
                report.max_sustainable_per_s
            ));
        }
        report.thresholds = i
            .thresholds
            .iter()
            .map(|t| t.check(|name| report.figure(name)))
            .collect();
        report.passed = report.thresholds.iter().all(|c| c.passed);
        report.observations.extend(report.observe());
        report
    }

    /// The figure a threshold names.
    pub fn figure(&self, name: &str) -> f64 {
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
            _ => f64::NAN,
        }
    }

    /// Sentences from the figures.
    fn observe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let lost = self
            .sent
            .saturating_sub(self.delivered + self.dead_lettered);
        if lost == 0 {
            out.push(format!(
                "Every event sent was delivered ({}) or dead-lettered ({}).",
                self.delivered, self.dead_lettered
            ));
        } else {
            out.push(format!(
                "{lost} events were still undelivered when the run ended (drain timeout or stop): they stay in the topic, uncommitted."
            ));
        }
        if let Some(accepted) = self.api_accepted {
            if accepted != self.delivered {
                out.push(format!("The API counted {accepted} events accepted against {} delivered by the worker's count.", self.delivered));
            }
        }
        if let Some(v) = self.order_violations.filter(|v| *v > 0) {
            out.push(format!("The API saw {v} events out of per-user order."));
        }
        let d = &self.diagnosis;
        out.push(match self.bound {
            sample::Bound::ApiLimit => format!(
                "Bound by the API's limit: lanes waited on it {:.0}% of the time, at {:.0} requests/s × {:.0} events a request. More pods or CPU add nothing; bigger batches or a higher limit do.",
                d.limiter_wait_share * 100.0,
                self.max_requests_per_s,
                self.delivered_per_s / self.requests_per_s.max(1e-9)
            ),
            sample::Bound::Cpu if d.cpu_share < 0.85 => format!(
                "No resource was full; the nearest its ceiling was CPU: the process used {:.0}% of the machine's cores (worker, embedded broker and API share them; the in-flight window was {:.0}% used).",
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
            sample::Bound::Cpu => format!(
                "Bound by CPU: the process used {:.0}% of the machine's cores (worker, embedded broker and API share them). More cores or pods raise it.",
                d.cpu_share * 100.0
            ),
            sample::Bound::InFlight => format!(
                "Bound by the in-flight window: {:.0}% of {} requests in flight; throughput ≈ window × batch ÷ API latency. Raise batch.max_in_flight or batch.max_events.",
                d.in_flight_share * 100.0,
                self.environment.in_flight_window
            ),
            sample::Bound::Broker if d.broker_late_share >= 0.05 => format!(
                "Bound by the broker: {:.1}% of the generator's sends were late (the producer's queue stayed full).",
                d.broker_late_share * 100.0
            ),
            sample::Bound::Broker => format!(
                "Bound by the broker: delivery fell behind while nothing in the worker was full (limiter wait {:.0}%, CPU {:.0}% of the cores, in-flight window {:.0}% used, paused {:.0}% of the time): it waited for events its fetches did not bring.",
                d.limiter_wait_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0,
                d.paused_share * 100.0
            ),
            sample::Bound::Partitions => "Bound by partitions.".to_string(),
            sample::Bound::Buffer => format!(
                "Bound by the consumer's buffer: paused by back-pressure in {:.0}% of the samples while the API's limit, the CPU ({:.0}%) and the in-flight window ({:.0}%) were not full; each resume costs a fetch round trip. Raise kafka.max_buffered_events.",
                d.paused_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
            sample::Bound::OfferedLoad => format!(
                "Nothing bound it: the pipeline carried all it was offered (limiter wait {:.0}%, CPU {:.0}% of the cores, in-flight window {:.0}% used).",
                d.limiter_wait_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
        });
        if let (Some(bp), Some(b)) = (self.breaking_point_per_s, &self.broke) {
            out.push(format!(
                "Broke at {bp:.0} events/s offered ({} at {:.0} s); the most it sustained was {:.0} events/s.",
                b.reason.replace('_', " "),
                b.at_s,
                self.max_sustainable_per_s
            ));
        }
        if !self.valid {
            out.push(format!(
                "Not a valid measurement: {}.",
                self.loadgen.invalid_reasons.join("; ")
            ));
        }
        if let Some(max) = self.environment.max_backlog {
            if self.gate_waits > 0 {
                out.push(format!(
                    "The embedded broker holds at most {max} undelivered events (~5 MB a partition); the generator held {} sends back until the worker caught up. Use --brokers for a deeper backlog.",
                    self.gate_waits
                ));
            }
        }
        out
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let e = &self.environment;
        let mut md = format!(
            "## sluice capacity report\n\n**Date:** {}  \n**Profile:** {}  \n**Version:** {}{}  \n**Run:** {} (seed {})\n\n",
            self.finished_at,
            self.profile,
            self.version,
            self.git.as_ref().map_or(String::new(), |g| format!(" ({g})")),
            self.run_id,
            self.seed
        );
        md.push_str("### Test configuration\n\n");
        md.push_str(&format!(
            "- Broker: {}; topic `{}`, {} partitions\n",
            e.brokers, e.topic, e.partitions
        ));
        md.push_str(&format!("- API: {}\n", e.api));
        md.push_str(&format!(
            "- Worker: batch {} events, linger {} ms, {} in flight per workspace; workspaces: {}\n",
            e.batch_max_events,
            e.linger_ms,
            e.max_in_flight,
            e.workspaces.join(", ")
        ));
        md.push_str(&format!("- Duration: {:.0} s\n\n", self.duration_s));
        md.push_str("### Results\n\n| Metric | Value |\n|---|---|\n");
        let rows: Vec<(&str, String)> = vec![
            ("Events sent", self.sent.to_string()),
            ("Events delivered", self.delivered.to_string()),
            (
                "Dead-lettered",
                format!(
                    "{} ({} deliberately invalid)",
                    self.dead_lettered, self.invalid_sent
                ),
            ),
            ("Success rate", format!("{:.2}%", self.success_rate * 100.0)),
            ("P50 latency", format!("{:.1} ms", self.latency_ms.p50)),
            ("P95 latency", format!("{:.1} ms", self.latency_ms.p95)),
            ("P99 latency", format!("{:.1} ms", self.latency_ms.p99)),
            (
                "P99.9 / max latency",
                format!(
                    "{:.1} / {:.1} ms",
                    self.latency_ms.p99_9, self.latency_ms.max
                ),
            ),
            (
                "Delivered events/s (mean / max 1 s)",
                format!(
                    "{:.0} / {:.0}",
                    self.delivered_per_s, self.max_delivered_per_s
                ),
            ),
            (
                "Requests/s (mean / max 1 s)",
                format!(
                    "{:.1} / {:.0}",
                    self.requests_per_s, self.max_requests_per_s
                ),
            ),
            (
                "Max sustainable events/s",
                format!("{:.0}", self.max_sustainable_per_s),
            ),
            (
                "Breaking point",
                self.breaking_point_per_s
                    .map_or("—".into(), |b| format!("{b:.0} events/s offered")),
            ),
            ("Bound", self.bound.as_str().to_string()),
            (
                "429s",
                format!(
                    "{} ({:.2}% of requests)",
                    self.throttled,
                    self.throttled_rate * 100.0
                ),
            ),
            (
                "Limiter wait",
                format!("{:.0}% of lane time", self.limiter_wait_share * 100.0),
            ),
            (
                "Generator lateness p99 / late sends",
                format!(
                    "{:.1} ms / {}",
                    self.loadgen.send_lateness_ms.p99, self.loadgen.late
                ),
            ),
        ];
        for (k, v) in rows {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        if !self.thresholds.is_empty() {
            md.push_str("\n### Thresholds\n\n| Threshold | Actual | Result |\n|---|---|---|\n");
            for c in &self.thresholds {
                md.push_str(&format!(
                    "| `{}` | {:.3} | {} |\n",
                    c.threshold.text,
                    c.actual,
                    if c.passed { "pass" } else { "**FAIL**" }
                ));
            }
        }
        md.push_str("\n### Observations\n\n");
        for o in &self.observations {
            md.push_str(&format!("- {o}\n"));
        }
        md
    }

    /// Writes report.json, report.md and report.svg into `dir` (created).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.svg"), super::chart::svg(self)?)?;
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
