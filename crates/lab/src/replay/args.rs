//! `sluice replay`'s command line: what to read, where to write, how fast, and which
//! timestamps the copies carry.

use super::*;

/// `sluice replay` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["source_topic", "from_file"])))]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["to_topic", "to_file"])))]
pub struct ReplayArgs {
    /// Where to connect: `--brokers`, `--config` (whose `kafka.topics` are refused as a
    /// destination without `--force`).
    #[command(flatten)]
    pub kafka: crate::broker::KafkaArgs,
    /// Read this topic.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Only these partitions of the source topic.
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// An offset range `PARTITION:START-END` (END exclusive, empty for the end;
    /// repeatable, one per partition); only the partitions named are read.
    #[arg(long, conflicts_with = "partitions")]
    pub offsets: Vec<OffsetRange>,
    /// Only records at or after this time (RFC 3339 or unix ms).
    #[arg(long)]
    pub from: Option<Time>,
    /// Only records before this time (RFC 3339 or unix ms).
    #[arg(long)]
    pub to: Option<Time>,
    /// Read a record file (`--to-file` of replay or loadgen) instead of a topic.
    #[arg(long, conflicts_with_all = ["partitions", "offsets"])]
    pub from_file: Option<PathBuf>,
    /// Write into this topic.
    #[arg(long)]
    pub to_topic: Option<String>,
    /// Write a record file (lossless, JSON lines) instead.
    #[arg(long)]
    pub to_file: Option<PathBuf>,
    /// Keep the original gaps between records (from their timestamps), divided by this
    /// factor: 1 is real time, 10 ten times faster.
    #[arg(long, conflicts_with = "rate")]
    pub speed: Option<f64>,
    /// A fixed rate in records/s instead.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Let the producer pick partitions by key instead of keeping each record's.
    #[arg(long)]
    pub repartition: bool,
    /// Timestamps written: `keep` the originals, `now` (the broker's time), or `shift`
    /// them so the first is now and the gaps are kept.
    #[arg(long, value_enum, default_value = "keep")]
    pub timestamps: Timestamps,
    /// Write even into the topic being read or one the worker config (`--config`)
    /// consumes.
    #[arg(long)]
    pub force: bool,
    /// Interval between progress lines when stderr is not a terminal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub progress_interval: Duration,
    /// The run id in each `sluice.replay` header (default: a new ULID).
    #[arg(long)]
    pub run_id: Option<String>,
}

/// Which timestamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timestamps {
    /// The originals.
    Keep,
    /// None (the producer's clock).
    Now,
    /// The originals moved so the first is the replay's start.
    Shift,
}

impl Timestamps {
    /// The timestamp to write for a record stamped `ts`, the first's having been
    /// `base` and the replay having started at `start_ms` (unix ms).
    pub(super) fn apply(self, ts: Option<i64>, base: i64, start_ms: i64) -> Option<i64> {
        match self {
            Timestamps::Keep => ts,
            Timestamps::Now => None,
            Timestamps::Shift => ts.map(|t| t - base + start_ms),
        }
    }
}
