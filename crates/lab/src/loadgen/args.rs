//! `sluice loadgen`'s command line: what to send, how fast, where, and when a run
//! stops counting as a measurement.

use super::*;

/// `sluice loadgen` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Where to connect: `--brokers`, `--config` (whose topics and workspaces are also
    /// the defaults here).
    #[command(flatten)]
    pub kafka: crate::broker::KafkaArgs,
    /// Topic to produce into (default: the first of `--config`'s `kafka.topics`).
    #[arg(long)]
    pub topic: Option<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub events: Option<u64>,
    /// Stop after this long (`90s`, `2m`, `1h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// A constant rate in events/s, or `max` (as fast as the broker takes them; the
    /// default when no rate, stage or profile is given).
    #[arg(long, conflicts_with_all = ["stages", "profile"])]
    pub rate: Option<Rate>,
    /// A k6-style stage, `DURATION:EVENTS_PER_S`: a linear ramp to that rate
    /// (repeatable: `--stage 30s:1000 --stage 2m:5000 --stage 30s:0`).
    #[arg(long = "stage", conflicts_with = "profile")]
    pub stages: Vec<Stage>,
    /// Rate at the start of the first stage, events/s.
    #[arg(long, default_value_t = 0.0)]
    pub start_rate: f64,
    /// A named profile (see below) or a profile file's path.
    #[arg(long)]
    pub profile: Option<String>,
    /// Multiplies every rate of `--profile` and `--stage`.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seed of the event generator: the same seed gives the same keys and payloads
    /// (default: a random one, printed in the summary).
    #[arg(long)]
    pub seed: Option<u64>,
    /// What the events look like.
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Write the events as JSON lines to this file (`sluice replay --from-file` reads
    /// it; k6 scripts can too) instead of producing them. Not paced: timestamps hold
    /// the schedule.
    #[arg(long)]
    pub to_file: Option<PathBuf>,
    /// A send this far behind its scheduled time counts as late.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    pub late_after: Duration,
    /// Above this share of late sends the run is invalid (exit code 3).
    #[arg(long, default_value_t = 0.01)]
    pub max_late_share: f64,
    /// Most events waiting in the producer for the broker's acknowledgement; when it
    /// is full, sends wait (and are late). Default: one second at the peak rate,
    /// between 1 000 and 100 000.
    #[arg(long)]
    pub max_pending: Option<usize>,
    /// Interval between progress lines when stderr is not a terminal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub progress_interval: Duration,
    /// The run id carried in every event's `sluice.run` header (default: a new ULID).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Create the topic with this many partitions (and `TOPIC.dlq` with one) first,
    /// unless it exists.
    #[arg(long)]
    pub partitions: Option<i32>,
}

/// `--rate`: events/s or `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as possible.
    Max,
    /// Events per second.
    PerSecond(f64),
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!("rate {s:?}: expected events/s above 0, or `max`")),
        }
    }
}

impl LoadgenArgs {
    /// The offered-load curve these options describe.
    pub fn pace(&self) -> anyhow::Result<Pace> {
        if let Some(name) = &self.profile {
            return profile::Profile::load(name)?
                .pace(self.scale)
                .map_err(anyhow::Error::msg);
        }
        if !self.stages.is_empty() {
            let stages = self
                .stages
                .iter()
                .map(|s| Stage {
                    target: s.target * self.scale,
                    ..*s
                })
                .collect();
            return Ok(Pace::Stages {
                start: self.start_rate * self.scale,
                stages,
            });
        }
        Ok(match self.rate {
            None | Some(Rate::Max) => Pace::Max,
            Some(Rate::PerSecond(r)) => Pace::Constant(r),
        })
    }
}
