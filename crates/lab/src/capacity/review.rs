//! `sluice capacity review`: a capacity review from exported metrics — two scrapes of
//! each pod's `/metrics` (or two saved scrape files) some interval apart — per
//! workspace and for the fleet: rates in and out, the limit's budget used, 429s and
//! retries, lag and time to drain, CPU per pod, and the most the setup can carry with
//! what bounds it (the API's limit × batch size, pods × a pod's ceiling, or the
//! partitions), the replicas that rate justifies and the daily volume.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::cpu_model::CpuModel;
use super::scrapes::{increase, PodScrapes};

mod markdown;

/// The process's CPU seconds.
const CPU: &str = "process_cpu_seconds_total";

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
pub(crate) const SCHEMA: &str = "sluice.capacity.review/1";

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

/// The sum over `pods` of a counter's rate.
fn rate(pods: &[PodScrapes], metric: &str, filter: &[(&str, &str)]) -> f64 {
    pods.iter().map(|p| p.rate(metric, filter)).sum()
}

/// One workspace's figures across `pods`.
fn workspace_review(pods: &[PodScrapes], ws: &str) -> WorkspaceReview {
    let f = [("workspace", ws)];
    let delivered = rate(pods, "sluice_events_delivered_total", &f);
    let requests = rate(pods, "sluice_http_requests_total", &f);
    let ok = rate(
        pods,
        "sluice_http_requests_total",
        &[("workspace", ws), ("status_class", "2xx")],
    );
    // Each pod reports the workspace's fleet-wide rate: the same figure, not a share.
    let limit = pods
        .iter()
        .map(|p| p.last().sum("sluice_limiter_effective_rate", &f))
        .fold(0.0, f64::max);
    let mean_batch = if ok > 0.0 { delivered / ok } else { 0.0 };
    let bytes = rate(pods, "sluice_batch_event_bytes_total", &f);
    let full_batch =
        full_batch(pods, bytes, delivered).map_or(mean_batch, |full| full.max(mean_batch));
    WorkspaceReview {
        delivered_per_s: delivered,
        requests_per_s: requests,
        limit_per_s: limit,
        budget_used: if limit > 0.0 { requests / limit } else { 0.0 },
        throttled_per_s: rate(pods, "sluice_throttled_total", &f),
        retries_per_s: rate(pods, "sluice_retries_total", &f),
        amplification: if ok > 0.0 { requests / ok } else { 1.0 },
        mean_batch,
        full_batch,
        api_ceiling_per_s: limit * full_batch,
    }
}

/// Every workspace any pod delivered for, reviewed.
fn workspace_reviews(pods: &[PodScrapes]) -> BTreeMap<String, WorkspaceReview> {
    let workspaces: BTreeSet<String> = pods
        .iter()
        .flat_map(|p| {
            p.last()
                .label_values("sluice_events_delivered_total", "workspace")
        })
        .collect();
    workspaces
        .into_iter()
        .map(|ws| {
            let review = workspace_review(pods, &ws);
            (ws, review)
        })
        .collect()
}

/// Each interval of each pod as an operating point: (events handled/s, cores).
fn operating_points(pods: &[PodScrapes]) -> Vec<(f64, f64)> {
    pods.iter()
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
        .collect()
}

/// At today's mix, the fleet carries at most the rate at which the first workspace
/// reaches its ceiling.
fn api_ceiling(per_ws: &BTreeMap<String, WorkspaceReview>, delivered: f64) -> f64 {
    per_ws
        .values()
        .filter(|w| w.delivered_per_s > 0.0 && w.api_ceiling_per_s > 0.0)
        .map(|w| w.api_ceiling_per_s / (w.delivered_per_s / delivered.max(1e-9)))
        .fold(f64::INFINITY, f64::min)
}

/// Cores each pod used, by pod (pods that report no CPU left out).
fn cpu_per_pod(pods: &[PodScrapes]) -> BTreeMap<String, f64> {
    pods.iter()
        .map(|p| (p.name.clone(), p.rate(CPU, &[])))
        .filter(|c| c.1 > 0.0)
        .collect()
}

/// Partitions the pods own (each reports a lag per partition it owns).
fn owned_partitions(pods: &[PodScrapes]) -> usize {
    pods.iter()
        .map(|p| {
            p.last()
                .label_values("sluice_partition_lag", "partition")
                .len()
        })
        .sum()
}

/// What the setup can carry: each ceiling that applies, by name.
struct Ceilings {
    /// The API limits with full batches, at today's mix of workspaces.
    api: f64,
    /// One pod's ceiling from its CPU model, if one could be fitted.
    pod: Option<f64>,
    /// Pods × a pod's ceiling.
    pods: Option<f64>,
    /// Partitions × a pod's ceiling (one pod per partition at most).
    partitions: Option<f64>,
}

impl Ceilings {
    /// The lowest finite ceiling and its name (`delivered`, bound `cpu`, if none).
    fn lowest(&self, delivered: f64) -> (&'static str, f64) {
        let mut ceilings = vec![("api_limit", self.api)];
        ceilings.extend(self.pods.map(|c| ("cpu", c)));
        ceilings.extend(self.partitions.map(|c| ("partitions", c)));
        ceilings
            .into_iter()
            .filter(|c| c.1.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("cpu", delivered))
    }

    /// The pods the API limits and the partitions let work (never more than the
    /// partitions, at least one), if a pod's ceiling is known.
    fn replicas(&self, partitions: usize, delivered: f64) -> Option<u64> {
        self.pod.map(|c| {
            let carry = self.api.min(self.partitions.unwrap_or(f64::INFINITY));
            let carry = if carry.is_finite() { carry } else { delivered };
            ((carry / c).ceil() as u64).clamp(1, (partitions.max(1)) as u64)
        })
    }
}

/// The seeds' bands: under 30% headroom scale now, under 50% monitor.
fn headroom_band(headroom: f64) -> &'static str {
    if headroom < 0.3 {
        "scale now"
    } else if headroom < 0.5 {
        "monitor"
    } else {
        "adequate"
    }
}

/// Reviews `pods`' scrapes taken `interval` apart, pods allowed `cores_per_pod` each.
pub fn review(pods: &[PodScrapes], cores_per_pod: f64) -> Review {
    let dt = pods.iter().map(PodScrapes::seconds).fold(1e-3, f64::max);
    let per_ws = workspace_reviews(pods);
    let delivered: f64 = per_ws.values().map(|w| w.delivered_per_s).sum();
    let arrival = rate(pods, "sluice_events_consumed_total", &[]);
    let lag: f64 = pods
        .iter()
        .map(|p| p.last().sum("sluice_queue_depth", &[]))
        .sum();
    let api_ceiling = api_ceiling(&per_ws, delivered);
    let cpu_model = CpuModel::fit(&operating_points(pods));
    let pod_ceiling = cpu_model.map(|m| m.ceiling(cores_per_pod));
    let partitions = owned_partitions(pods);
    let ceilings = Ceilings {
        api: api_ceiling,
        pod: pod_ceiling,
        pods: pod_ceiling.map(|c| c * pods.len() as f64),
        partitions: pod_ceiling
            .filter(|_| partitions > 0)
            .map(|c| c * partitions as f64),
    };
    let (bound, max) = ceilings.lowest(delivered);
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
        dead_lettered_per_s: rate(pods, "sluice_events_dead_lettered_total", &[]),
        requests_per_s: rate(pods, "sluice_http_requests_total", &[]),
        lag,
        time_to_drain_s: (delivered > arrival).then(|| lag / (delivered - arrival)),
        cpu_cores_per_pod: cpu_per_pod(pods),
        cpu_model,
        pod_ceiling_per_s: pod_ceiling,
        api_ceiling_per_s: api_ceiling,
        pods_ceiling_per_s: ceilings.pods,
        partitions_ceiling_per_s: ceilings.partitions,
        max_sustainable_per_s: max,
        bound,
        replicas_justified: ceilings.replicas(partitions, delivered),
        headroom: if headroom.is_finite() { headroom } else { 0.0 },
        headroom_band: headroom_band(headroom),
        daily_volume: delivered * 86_400.0,
        daily_volume_at_max: max * 86_400.0,
        workspaces: per_ws,
    }
}

impl Review {
    /// Writes review.json and review.md into `dir` (created).
    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("review.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("review.md"), self.markdown())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
