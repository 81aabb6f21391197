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

/// `sluice capacity report` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["metrics", "scrapes"])))]
pub struct ReportArgs {
    /// A pod's metrics endpoint (repeatable, one per pod), scraped twice `--interval`
    /// apart.
    #[arg(long)]
    pub metrics: Vec<String>,
    /// Time between the two scrapes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Two saved scrapes of one pod, `BEFORE AFTER`, taken `--interval` apart.
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
    pub scrapes: Vec<PathBuf>,
    /// CPU cores each pod may use (its Kubernetes limit), for the CPU ceiling.
    #[arg(long, default_value_t = 1.0)]
    pub cores_per_pod: f64,
    /// Where report.json and report.md go (default: a new folder under
    /// `./capacity-reports/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One pod's two scrapes, parsed.
#[derive(Debug, Clone)]
pub struct PodScrapes {
    /// Pod name (its URL or file).
    pub name: String,
    /// The earlier scrape.
    pub before: prometheus_parse::Scrape,
    /// The later one.
    pub after: prometheus_parse::Scrape,
}

/// Parses one scrape's text.
pub fn parse(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_string())),
    )?)
}

/// Sum of a metric's samples whose labels include every `(name, value)` of `filter`.
fn sum(scrape: &prometheus_parse::Scrape, metric: &str, filter: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| filter.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn label_values(scrape: &prometheus_parse::Scrape, metric: &str, label: &str) -> BTreeSet<String> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| s.labels.get(label).map(str::to_string))
        .collect()
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
    /// The most its limit carries at that batch size, events/s.
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
    /// Events/s one pod carries at `--cores-per-pod` (its rate ÷ its CPU share).
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

/// Reviews `pods`' scrapes taken `interval` apart, pods allowed `cores_per_pod` each.
pub fn review(pods: &[PodScrapes], interval: Duration, cores_per_pod: f64) -> Review {
    let dt = interval.as_secs_f64().max(1e-3);
    let rate = |metric: &str, filter: &[(&str, &str)]| -> f64 {
        pods.iter()
            .map(|p| (sum(&p.after, metric, filter) - sum(&p.before, metric, filter)).max(0.0))
            .sum::<f64>()
            / dt
    };
    let gauge = |metric: &str, filter: &[(&str, &str)]| -> f64 {
        pods.iter().map(|p| sum(&p.after, metric, filter)).sum()
    };
    let workspaces: BTreeSet<String> = pods
        .iter()
        .flat_map(|p| label_values(&p.after, "sluice_events_delivered_total", "workspace"))
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
            .map(|p| sum(&p.after, "sluice_limiter_effective_rate", &f))
            .fold(0.0, f64::max);
        let mean_batch = if ok > 0.0 { delivered / ok } else { 0.0 };
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
                api_ceiling_per_s: limit * mean_batch,
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
        .filter_map(|p| {
            let used = sum(&p.after, "process_cpu_seconds_total", &[])
                - sum(&p.before, "process_cpu_seconds_total", &[]);
            (used > 0.0).then(|| (p.name.clone(), used / dt))
        })
        .collect();
    let pod_ceiling = (!cpu.is_empty() && delivered > 0.0).then(|| {
        let mean_cpu = cpu.values().sum::<f64>() / cpu.len() as f64;
        (delivered / pods.len() as f64) / (mean_cpu / cores_per_pod).max(1e-6)
    });
    let partitions: usize = pods
        .iter()
        .map(|p| label_values(&p.after, "sluice_partition_lag", "partition").len())
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
                "Ceiling: API limits at today's mix",
                format!("{:.0} events/s", self.api_ceiling_per_s),
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
        md.push_str("\n| Workspace | delivered/s | requests/s | limit/s | budget used | 429s/s | retries/s | amplification | events/request | ceiling/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (ws, w) in &self.workspaces {
            md.push_str(&format!(
                "| {ws} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |\n",
                w.delivered_per_s, w.requests_per_s, w.limit_per_s, w.budget_used * 100.0, w.throttled_per_s, w.retries_per_s, w.amplification, w.mean_batch, w.api_ceiling_per_s
            ));
        }
        md
    }
}

/// Takes the scrapes `args` names (waiting `--interval` between live ones).
pub async fn collect(args: &ReportArgs) -> anyhow::Result<Vec<PodScrapes>> {
    if !args.scrapes.is_empty() {
        let read = |p: &PathBuf| -> anyhow::Result<prometheus_parse::Scrape> {
            parse(&std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        };
        return Ok(vec![PodScrapes {
            name: args.scrapes[0].display().to_string(),
            before: read(&args.scrapes[0])?,
            after: read(&args.scrapes[1])?,
        }]);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let scrape_all = || async {
        let mut out = Vec::new();
        for url in &args.metrics {
            let text = client
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            out.push(parse(&text)?);
        }
        anyhow::Ok(out)
    };
    let before = scrape_all().await?;
    tokio::time::sleep(args.interval).await;
    let after = scrape_all().await?;
    Ok(args
        .metrics
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(name, (before, after))| PodScrapes {
            name: name.clone(),
            before,
            after,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, delivered: (f64, f64), requests: (f64, f64)) -> PodScrapes {
        let text = |d: f64, r: f64| {
            format!(
                "sluice_events_delivered_total{{workspace=\"a\"}} {d}\n\
                 sluice_http_requests_total{{workspace=\"a\",status_class=\"2xx\"}} {r}\n\
                 sluice_limiter_effective_rate{{workspace=\"a\"}} 100\n"
            )
        };
        PodScrapes {
            name: name.into(),
            before: parse(&text(delivered.0, requests.0)).unwrap(),
            after: parse(&text(delivered.1, requests.1)).unwrap(),
        }
    }

    #[test]
    fn two_pods_share_one_fleet_limit() {
        // Two pods, 50 requests/s each of 100 events: the fleet uses its whole limit.
        let pods = [
            pod("a", (0.0, 50_000.0), (0.0, 500.0)),
            pod("b", (0.0, 50_000.0), (0.0, 500.0)),
        ];
        let r = review(&pods, Duration::from_secs(10), 1.0);
        let ws = &r.workspaces["a"];
        assert_eq!(ws.limit_per_s, 100.0, "fleet-wide, not summed per pod");
        assert!((ws.budget_used - 1.0).abs() < 1e-9);
        assert!((r.api_ceiling_per_s - 10_000.0).abs() < 1e-6);
        assert_eq!(r.bound, "api_limit");
        assert_eq!(r.headroom_band, "scale now");
    }
}
