//! `sluice capacity report`: a capacity review from exported metrics — two scrapes of
//! each pod's `/metrics` (or two saved scrape files) some interval apart — per
//! workspace and for the fleet: rates in and out, the limit's budget used, 429s and
//! retries, lag and time to drain, CPU per pod, and the most the setup can carry with
//! what bounds it (the API's limit × batch size, pods × a pod's ceiling, or the
//! partitions), the replicas that rate justifies and the daily volume.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::cpu_model::CpuModel;

/// The process's CPU seconds.
const CPU: &str = "process_cpu_seconds_total";

/// `sluice capacity report` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["metrics", "scrapes", "prometheus"])))]
pub struct ReportArgs {
    /// A pod's metrics endpoint (repeatable, one per pod), scraped over `--interval`.
    #[arg(long)]
    pub metrics: Vec<String>,
    /// How long to watch the `--metrics` endpoints (first scrape to last), or the time
    /// between the first and last of `--scrapes`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Time between scrapes of `--metrics` (default: a tenth of `--interval`, at least
    /// 1 s), between `--scrapes` files, or between the points read from
    /// `--prometheus` (default: a twentieth of `--range`). With the rate varying
    /// between them, CPU per pod is modelled as a fixed part plus a part per event.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Saved scrapes of one pod, oldest first (at least two), `--interval` from first
    /// to last, evenly spaced.
    #[arg(long, num_args = 2.., value_names = ["BEFORE", "AFTER"])]
    pub scrapes: Vec<PathBuf>,
    /// A Prometheus server's URL (its HTTP API) that scrapes the pods; each `instance`
    /// is a pod.
    #[arg(long)]
    pub prometheus: Option<String>,
    /// `--prometheus`: how far back from `--end` to look.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub range: Duration,
    /// `--prometheus`: the end of the range (RFC 3339; default now).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub end: Option<std::time::SystemTime>,
    /// `--prometheus`: label matchers that pick sluice's series, e.g. `job="sluice"`.
    #[arg(long)]
    pub selector: Option<String>,
    /// CPU cores each pod may use (its Kubernetes limit), for the CPU ceiling.
    #[arg(long, default_value_t = 1.0)]
    pub cores_per_pod: f64,
    /// Where report.json and report.md go (default: a new folder under
    /// `./capacity-reports/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One series' value in a scrape.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub metric: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value (counters and gauges; histograms as their `_bucket`/`_sum`/`_count`
    /// series, or not at all).
    pub value: f64,
}

/// One scrape of one pod.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken, seconds (any origin; only differences count).
    pub at_s: f64,
    /// Its series.
    pub samples: Vec<Sample>,
}

impl Snapshot {
    /// Parses one scrape's text (the Prometheus exposition format), taken at `at_s`.
    pub fn parse(text: &str, at_s: f64) -> anyhow::Result<Snapshot> {
        use prometheus_parse::Value;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        let samples = scrape
            .samples
            .into_iter()
            .filter_map(|s| {
                let value = match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    _ => return None,
                };
                let labels = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some(Sample {
                    metric: s.metric,
                    labels,
                    value,
                })
            })
            .collect();
        Ok(Snapshot { at_s, samples })
    }

    /// Sum of a metric's samples whose labels include every `(name, value)` of `filter`.
    fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn label_values(&self, metric: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// One pod's scrapes, oldest first (at least two).
#[derive(Debug, Clone)]
pub struct PodScrapes {
    /// Pod name (its URL, file or Prometheus `instance`).
    pub name: String,
    /// Its scrapes.
    pub scrapes: Vec<Snapshot>,
}

impl PodScrapes {
    fn first(&self) -> &Snapshot {
        &self.scrapes[0]
    }

    fn last(&self) -> &Snapshot {
        &self.scrapes[self.scrapes.len() - 1]
    }

    fn seconds(&self) -> f64 {
        (self.last().at_s - self.first().at_s).max(1e-3)
    }

    /// A counter's increase per second from the first scrape to the last (a pod that
    /// restarted in between counts from zero again, as Prometheus's `increase` does).
    fn rate(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        let total: f64 = self
            .scrapes
            .windows(2)
            .map(|w| increase(&w[0], &w[1], metric, filter))
            .sum();
        total / self.seconds()
    }
}

/// How much a counter grew from `a` to `b` (from zero if it was reset in between).
fn increase(a: &Snapshot, b: &Snapshot, metric: &str, filter: &[(&str, &str)]) -> f64 {
    let (before, after) = (a.sum(metric, filter), b.sum(metric, filter));
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Per workspace.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceReview {
    /// Events delivered per second.
    pub delivered_per_s: f64,
    /// Requests per second (all answers).
    pub requests_per_s: f64,
    /// The fleet's limit for it, requests/s (the learned fleet-wide rate its pods report).
    pub limit_per_s: f64,
    /// Requests/s ÷ the limit.
    pub budget_used: f64,
    /// 429s per second.
    pub throttled_per_s: f64,
    /// Retries per second.
    pub retries_per_s: f64,
    /// Requests ÷ successful requests (1: nothing repeated).
    pub amplification: f64,
    /// Events per successful request.
    pub mean_batch: f64,
    /// Events a request carries once the limit binds: events wait for a token, so
    /// batches fill to `batch.max_events`, or to `batch.max_bytes` at today's event
    /// size (the mean batch where the pods do not export their bounds).
    pub full_batch: f64,
    /// The most its limit carries with full batches, events/s.
    pub api_ceiling_per_s: f64,
}

/// The review.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Seconds between the scrapes.
    pub interval_s: f64,
    /// Pods scraped.
    pub pods: usize,
    /// Partitions the pods own (from their lag gauges).
    pub partitions: usize,
    /// Events consumed per second.
    pub arrival_per_s: f64,
    /// Events delivered per second.
    pub delivered_per_s: f64,
    /// Dead letters per second.
    pub dead_lettered_per_s: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Events waiting (queue depth) at the second scrape.
    pub lag: f64,
    /// lag ÷ (delivery − arrival), seconds; `null` when arrival ≥ delivery (never).
    pub time_to_drain_s: Option<f64>,
    /// CPU cores each pod used.
    pub cpu_cores_per_pod: BTreeMap<String, f64>,
    /// What an event costs a pod in CPU.
    pub cpu_model: Option<CpuModel>,
    /// Events/s one pod carries at `--cores-per-pod`, by the CPU model.
    pub pod_ceiling_per_s: Option<f64>,
    /// The most the API's limits carry at today's workspace mix, events/s.
    pub api_ceiling_per_s: f64,
    /// The most the pods carry, events/s.
    pub pods_ceiling_per_s: Option<f64>,
    /// The most any number of pods carries (one partition each at most), events/s.
    pub partitions_ceiling_per_s: Option<f64>,
    /// The most this setup carries: the lowest ceiling.
    pub max_sustainable_per_s: f64,
    /// Which ceiling it is: `api_limit`, `cpu` (the pods) or `partitions`.
    pub bound: &'static str,
    /// Pods that rate justifies (never more than the partitions, never more than the
    /// limits can use).
    pub replicas_justified: Option<u64>,
    /// (max − current) ÷ current.
    pub headroom: f64,
    /// `scale now` (< 30%), `monitor` (< 50%) or `adequate`.
    pub headroom_band: &'static str,
    /// Events a day at today's rate.
    pub daily_volume: f64,
    /// Events a day at the maximum sustainable rate.
    pub daily_volume_at_max: f64,
    /// Per workspace.
    pub workspaces: BTreeMap<String, WorkspaceReview>,
}

/// The version of the review's field names.
pub const SCHEMA: &str = "sluice.capacity.review/1";

/// Events in a full batch: `batch.max_events`, or fewer when `batch.max_bytes` fills
/// first at `bytes_per_s ÷ events_per_s` bytes an event (`None` when the pods do not
/// export their bounds).
fn full_batch(pods: &[PodScrapes], bytes_per_s: f64, events_per_s: f64) -> Option<f64> {
    let bound = |metric: &str| {
        pods.iter()
            .map(|p| p.last().sum(metric, &[]))
            .fold(0.0, f64::max)
    };
    let max_events = bound("sluice_batch_max_events");
    if max_events < 1.0 {
        return None;
    }
    let max_bytes = bound("sluice_batch_max_bytes");
    if bytes_per_s <= 0.0 || events_per_s <= 0.0 || max_bytes <= 0.0 {
        return Some(max_events);
    }
    // A comma between items and the envelope around them.
    let per_event = bytes_per_s / events_per_s + 1.0;
    Some(max_events.min(((max_bytes - 64.0) / per_event).floor().max(1.0)))
}

/// Reviews `pods`' scrapes taken `interval` apart, pods allowed `cores_per_pod` each.
pub fn review(pods: &[PodScrapes], cores_per_pod: f64) -> Review {
    let dt = pods.iter().map(PodScrapes::seconds).fold(1e-3, f64::max);
    let rate = |metric: &str, filter: &[(&str, &str)]| -> f64 {
        pods.iter().map(|p| p.rate(metric, filter)).sum()
    };
    let gauge = |metric: &str, filter: &[(&str, &str)]| -> f64 {
        pods.iter().map(|p| p.last().sum(metric, filter)).sum()
    };
    let workspaces: BTreeSet<String> = pods
        .iter()
        .flat_map(|p| {
            p.last()
                .label_values("sluice_events_delivered_total", "workspace")
        })
        .collect();
    let mut per_ws = BTreeMap::new();
    for ws in &workspaces {
        let f = [("workspace", ws.as_str())];
        let delivered = rate("sluice_events_delivered_total", &f);
        let requests = rate("sluice_http_requests_total", &f);
        let ok = rate(
            "sluice_http_requests_total",
            &[("workspace", ws.as_str()), ("status_class", "2xx")],
        );
        // Each pod reports the workspace's fleet-wide rate: the same figure, not a share.
        let limit = pods
            .iter()
            .map(|p| p.last().sum("sluice_limiter_effective_rate", &f))
            .fold(0.0, f64::max);
        let mean_batch = if ok > 0.0 { delivered / ok } else { 0.0 };
        let full_batch = full_batch(pods, rate("sluice_batch_event_bytes_total", &f), delivered)
            .map_or(mean_batch, |full| full.max(mean_batch));
        per_ws.insert(
            ws.clone(),
            WorkspaceReview {
                delivered_per_s: delivered,
                requests_per_s: requests,
                limit_per_s: limit,
                budget_used: if limit > 0.0 { requests / limit } else { 0.0 },
                throttled_per_s: rate("sluice_throttled_total", &f),
                retries_per_s: rate("sluice_retries_total", &f),
                amplification: if ok > 0.0 { requests / ok } else { 1.0 },
                mean_batch,
                full_batch,
                api_ceiling_per_s: limit * full_batch,
            },
        );
    }
    let delivered: f64 = per_ws.values().map(|w| w.delivered_per_s).sum();
    let arrival = rate("sluice_events_consumed_total", &[]);
    let lag = gauge("sluice_queue_depth", &[]);
    // At today's mix, the fleet carries at most the rate at which the first workspace
    // reaches its ceiling.
    let api_ceiling = per_ws
        .values()
        .filter(|w| w.delivered_per_s > 0.0 && w.api_ceiling_per_s > 0.0)
        .map(|w| w.api_ceiling_per_s / (w.delivered_per_s / delivered.max(1e-9)))
        .fold(f64::INFINITY, f64::min);
    let cpu: BTreeMap<String, f64> = pods
        .iter()
        .map(|p| (p.name.clone(), p.rate(CPU, &[])))
        .filter(|c| c.1 > 0.0)
        .collect();
    // Each interval of each pod is an operating point: (events handled/s, cores).
    let points: Vec<(f64, f64)> = pods
        .iter()
        .flat_map(|p| {
            p.scrapes.windows(2).map(|w| {
                let dt = (w[1].at_s - w[0].at_s).max(1e-3);
                let d = |m: &str| increase(&w[0], &w[1], m, &[]) / dt;
                (
                    d("sluice_events_delivered_total") + d("sluice_events_dead_lettered_total"),
                    d(CPU),
                )
            })
        })
        .collect();
    let cpu_model = CpuModel::fit(&points);
    let pod_ceiling = cpu_model.map(|m| m.ceiling(cores_per_pod));
    let partitions: usize = pods
        .iter()
        .map(|p| {
            p.last()
                .label_values("sluice_partition_lag", "partition")
                .len()
        })
        .sum();
    let pods_ceiling = pod_ceiling.map(|c| c * pods.len() as f64);
    let partitions_ceiling = pod_ceiling
        .filter(|_| partitions > 0)
        .map(|c| c * partitions as f64);
    let mut ceilings = vec![("api_limit", api_ceiling)];
    if let Some(c) = pods_ceiling {
        ceilings.push(("cpu", c));
    }
    if let Some(c) = partitions_ceiling {
        ceilings.push(("partitions", c));
    }
    let (bound, max) = ceilings
        .iter()
        .copied()
        .filter(|c| c.1.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or(("cpu", delivered));
    let replicas = pod_ceiling.map(|c| {
        let carry = api_ceiling.min(partitions_ceiling.unwrap_or(f64::INFINITY));
        let carry = if carry.is_finite() { carry } else { delivered };
        ((carry / c).ceil() as u64).clamp(1, (partitions.max(1)) as u64)
    });
    let headroom = if delivered > 0.0 {
        (max - delivered) / delivered
    } else {
        f64::INFINITY
    };
    Review {
        schema: SCHEMA,
        interval_s: dt,
        pods: pods.len(),
        partitions,
        arrival_per_s: arrival,
        delivered_per_s: delivered,
        dead_lettered_per_s: rate("sluice_events_dead_lettered_total", &[]),
        requests_per_s: rate("sluice_http_requests_total", &[]),
        lag,
        time_to_drain_s: (delivered > arrival).then(|| lag / (delivered - arrival)),
        cpu_cores_per_pod: cpu,
        cpu_model,
        pod_ceiling_per_s: pod_ceiling,
        api_ceiling_per_s: api_ceiling,
        pods_ceiling_per_s: pods_ceiling,
        partitions_ceiling_per_s: partitions_ceiling,
        max_sustainable_per_s: max,
        bound,
        replicas_justified: replicas,
        headroom: if headroom.is_finite() { headroom } else { 0.0 },
        headroom_band: if headroom < 0.3 {
            "scale now"
        } else if headroom < 0.5 {
            "monitor"
        } else {
            "adequate"
        },
        daily_volume: delivered * 86_400.0,
        daily_volume_at_max: max * 86_400.0,
        workspaces: per_ws,
    }
}

impl Review {
    /// Writes report.json and report.md into `dir` (created).
    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }

    /// report.md.
    pub fn markdown(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0}"));
        let mut md = format!(
            "## sluice capacity review\n\n{} pods, {} partitions, {:.0} s between scrapes\n\n| Fleet | Value |\n|---|---|\n",
            self.pods, self.partitions, self.interval_s
        );
        for (k, v) in [
            (
                "Events in / delivered per s",
                format!("{:.0} / {:.0}", self.arrival_per_s, self.delivered_per_s),
            ),
            ("Requests/s", format!("{:.1}", self.requests_per_s)),
            ("Dead letters/s", format!("{:.2}", self.dead_lettered_per_s)),
            (
                "Lag / time to drain",
                format!(
                    "{:.0} events / {}",
                    self.lag,
                    self.time_to_drain_s
                        .map_or("never (arrival ≥ delivery)".into(), |t| format!(
                            "{t:.0} s"
                        ))
                ),
            ),
            (
                "Ceiling: API limits, full batches, at today's mix",
                format!("{:.0} events/s", self.api_ceiling_per_s),
            ),
            (
                "CPU per pod",
                self.cpu_model.map_or("—".into(), |m| {
                    format!(
                        "{:.3} cores fixed + {:.1} µs/event ({}, {} points)",
                        m.fixed_cores, m.per_event_us, m.kind, m.points
                    )
                }),
            ),
            ("Ceiling: these pods", opt(self.pods_ceiling_per_s)),
            (
                "Ceiling: one pod per partition",
                opt(self.partitions_ceiling_per_s),
            ),
            (
                "Max sustainable",
                format!(
                    "{:.0} events/s, bound by {}",
                    self.max_sustainable_per_s, self.bound
                ),
            ),
            (
                "Replicas justified",
                self.replicas_justified
                    .map_or("—".into(), |r| r.to_string()),
            ),
            (
                "Headroom",
                format!("{:.0}% ({})", self.headroom * 100.0, self.headroom_band),
            ),
            (
                "Daily volume (now / at max)",
                format!("{:.0} / {:.0}", self.daily_volume, self.daily_volume_at_max),
            ),
        ] {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        md.push_str("\n| Workspace | delivered/s | requests/s | limit/s | budget used | 429s/s | retries/s | amplification | events/request (full) | ceiling/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (ws, w) in &self.workspaces {
            md.push_str(&format!(
                "| {ws} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.1} ({:.0}) | {:.0} |\n",
                w.delivered_per_s, w.requests_per_s, w.limit_per_s, w.budget_used * 100.0, w.throttled_per_s, w.retries_per_s, w.amplification, w.mean_batch, w.full_batch, w.api_ceiling_per_s
            ));
        }
        md
    }
}

/// Takes the scrapes `args` names: live ones over `--interval`, saved files, or a
/// Prometheus range.
pub async fn collect(args: &ReportArgs) -> anyhow::Result<Vec<PodScrapes>> {
    if !args.scrapes.is_empty() {
        let gap = args.interval.as_secs_f64() / (args.scrapes.len() - 1) as f64;
        let scrapes = args
            .scrapes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Snapshot::parse(&text, i as f64 * gap)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok(vec![PodScrapes {
            name: args.scrapes[0].display().to_string(),
            scrapes,
        }]);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    if let Some(url) = &args.prometheus {
        return super::prometheus_api::collect(&client, url, args).await;
    }
    let every = args
        .every
        .unwrap_or(args.interval / 10)
        .max(Duration::from_secs(1))
        .min(args.interval);
    let started = tokio::time::Instant::now();
    let mut pods: Vec<PodScrapes> = args
        .metrics
        .iter()
        .map(|m| PodScrapes {
            name: m.clone(),
            scrapes: Vec::new(),
        })
        .collect();
    let mut next = started;
    loop {
        for pod in &mut pods {
            let at_s = started.elapsed().as_secs_f64();
            let text = client
                .get(&pod.name)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| anyhow::anyhow!("scraping {}: {e}", pod.name))?
                .text()
                .await?;
            pod.scrapes.push(Snapshot::parse(&text, at_s)?);
        }
        if next >= started + args.interval {
            break;
        }
        next = (next + every).min(started + args.interval);
        tokio::time::sleep_until(next).await;
    }
    Ok(pods)
}

#[cfg(test)]
mod tests;
