//! `sluice capacity review`'s options: where the scrapes come from and how the pods
//! run.

use std::path::PathBuf;
use std::time::Duration;

/// `sluice capacity review` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["metrics", "scrapes", "prometheus"])))]
pub struct ReviewArgs {
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
    /// Where review.json and review.md go (default: a new folder under
    /// `./capacity-reports/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}
