//! `sluice capacity run`'s command line: the scenario, the embedded or real parts it
//! runs on, the thresholds it is judged by and where the report goes.

use std::path::PathBuf;
use std::time::Duration;

use super::threshold::Threshold;
use crate::loadgen::schedule::Stage;
use crate::loadgen::shape::ShapeArgs;
use sluice_mock_api::Latency;

/// `sluice capacity run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// What load: a loadgen profile (smoke, load, stress, spike, soak, or a file),
    /// `throughput` (as fast as the pipeline goes, against an unlimited API) or
    /// `stress` (a staircase of rates, each held, until a step is not carried; then the
    /// breaking point).
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// k6-style stages instead of a profile, `DURATION:EVENTS_PER_S` (repeatable).
    #[arg(long = "stage")]
    pub stages: Vec<Stage>,
    /// Multiplies the profile's rates.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Stop after this many events (`throughput`: default 200 000).
    #[arg(long)]
    pub events: Option<u64>,
    /// Where `report.json`, `report.md` and `report.svg` go (default: a new folder under
    /// `./capacity-reports/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A pass/fail criterion, k6-style (`p99_latency<500ms`, `error_rate<0.01`,
    /// `delivered_ratio>=1`); a failed one exits 99.
    #[arg(long = "threshold")]
    pub thresholds: Vec<Threshold>,
    /// A real broker instead of the embedded one.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The topic on `--brokers`/`--config` to load (default: a new one, created).
    #[arg(long)]
    pub topic: Option<String>,
    /// A real Customer.io-compatible API instead of the embedded `sluice mock-api`
    /// (never taken from `--config`, so a production config cannot send test events to
    /// production by accident).
    #[arg(long)]
    pub api_url: Option<String>,
    /// A worker configuration to run instead of the defaults (its brokers, batch,
    /// limits and workspaces; its API only with `--api-url`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Requests/s per workspace the embedded API accepts (0: unlimited; `throughput`
    /// forces 0).
    #[arg(long, default_value_t = 100)]
    pub limit_per_s: u32,
    /// Latency the embedded API adds per request (`fixed:MS`, `uniform:MIN-MAX`,
    /// `exp:MEAN`).
    #[arg(long, default_value = "uniform:5-15")]
    pub api_latency: Latency,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// `stress`: the rate of the last step, events/s.
    #[arg(long, default_value_t = 60_000.0)]
    pub max_rate: f64,
    /// `stress`: how many equal steps lead to `--max-rate`.
    #[arg(long, default_value_t = 20)]
    pub steps: u32,
    /// `stress`: how long the staircase takes to reach `--max-rate` (each step is held
    /// this ÷ `--steps`, at least 3 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100s")]
    pub ramp: Duration,
    /// How long to wait, after the load ends, for the backlog to drain.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub drain_timeout: Duration,
    /// Seed of the event generator.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the worker under test serves /metrics, /healthz and /readyz while it runs
    /// (port 0: a free one; the address is logged), e.g. for `sluice capacity review`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// What the events look like (as `sluice loadgen`).
    #[command(flatten)]
    pub shape: ShapeArgs,
}

impl RunArgs {
    /// The profile the report names: `--profile`, or `stages` when `--stage` was given.
    pub(super) fn profile_name(&self) -> String {
        if self.stages.is_empty() {
            self.profile.clone()
        } else {
            "stages".into()
        }
    }
}
