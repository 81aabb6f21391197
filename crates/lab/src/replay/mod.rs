//! `sluice replay`: re-run real traffic. Reads a topic range (partitions, offsets, or a
//! time range) or a record file, and writes it to a topic or a file — key, value,
//! headers, partition and timestamp kept byte for byte — at the original pace scaled by
//! `--speed`, at a fixed `--rate`, or as fast as possible.
//!
//! Safety: it refuses to write into the topic it reads, or into a topic a given worker
//! config consumes, without `--force`; every message it writes to a topic carries a
//! `sluice.replay` header (`RUN:TOPIC:PARTITION:OFFSET`) so dead letters and redrives
//! can tell replayed traffic from fresh.

mod args;
mod range;
mod selection;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::dump::DumpedRecord;
use crate::latency::{micros, Percentiles};
pub use args::{ReplayArgs, Timestamps};
pub use range::{OffsetRange, Selection, Span, Time, TopicReader};
use sink::Sink;
use sluice_core::config::Config;
use source::Source;

/// The header every message replayed into a topic carries.
pub const REPLAY_HEADER: &str = sluice_core::record::headers::REPLAY;

/// Why a replay is refused before it starts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// Writing into the topic being read would loop.
    #[error("refusing to write into {0}: it is the topic being read (the replay would read its own writes); add --force to do it anyway")]
    SourceTopic(String),
    /// Writing into a topic the worker consumes.
    #[error("refusing to write into {0}: the worker config consumes it (kafka.topics), so replayed events would be delivered again; add --force to do it anyway")]
    WorkerTopic(String),
    /// The destination has fewer partitions than the records name.
    #[error("{topic} has {partitions} partitions but the records use partition {highest}: add --repartition to pick partitions by key")]
    Partitions {
        /// Destination.
        topic: String,
        /// Its partitions.
        partitions: usize,
        /// The highest partition read.
        highest: i32,
    },
}

/// The JSON summary (the last line on stdout).
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// Run id (in every `sluice.replay` header).
    pub run_id: String,
    /// What was read.
    pub source: String,
    /// What was written.
    pub destination: String,
    /// Records read.
    pub read: u64,
    /// Records written (acknowledged by the broker, or written to the file).
    pub written: u64,
    /// Records read but outside `--from`/`--to`.
    pub skipped: u64,
    /// Records that could not be written.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Seconds.
    pub duration_s: f64,
    /// `written` ÷ `duration_s`.
    pub rate_per_s: f64,
    /// `speed`, `rate` or `max`.
    pub pacing: String,
    /// The speed factor or rate, if any.
    pub pacing_value: Option<f64>,
    /// How late each write was against its due time, ms (paced runs).
    pub pacing_error_ms: Percentiles,
    /// Timestamp of the first and last record read, unix ms.
    pub first_timestamp: Option<i64>,
    /// See `first_timestamp`.
    pub last_timestamp: Option<i64>,
    /// Written per source partition.
    pub by_partition: BTreeMap<String, u64>,
    /// Stopped early by a signal.
    pub stopped: bool,
    /// What ended the replay early, if anything did (a bad file line, a broker
    /// error); everything before it was written.
    pub error: Option<String>,
}

/// Runs a replay until its source ends or `stop` is cancelled.
pub fn run(args: ReplayArgs, stop: &CancellationToken) -> anyhow::Result<ReplaySummary> {
    let config = args.kafka.load_config()?;
    check(&args, config.as_ref())?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let client = || client_config(&args, config.as_ref());
    let selection = Selection {
        partitions: args.partitions.clone(),
        offsets: args.offsets.clone(),
        from: args.from,
        to: args.to,
    };
    let opened = Source::open(&args, &selection, client)?;
    let (mut source, source_name) = (opened.source, opened.name);
    let (mut sink, destination) = Sink::open(&args, opened.highest_partition, client)?;
    // The first record is read before the clock starts, and the retention check (a
    // broker round trip, slow where unsupported) made on it, so pacing starts clean.
    let first = source.next()?;
    warn_if_past_retention(&args, first.as_ref(), client)?;
    let start = Instant::now();
    let mut tally = copy(
        &args,
        &run_id,
        &source_name,
        first,
        &mut source,
        &mut sink,
        stop,
    );
    let (written, failed) = sink.finish(stop, tally.refused, &mut tally.failures)?;
    let duration = start.elapsed().as_secs_f64();
    let (pacing, pacing_value, pacing_error_ms) = pacing(&args, &tally.lateness);
    Ok(ReplaySummary {
        run_id,
        source: source_name,
        destination,
        read: tally.read,
        written,
        skipped: source.skipped(),
        failed,
        failures: tally.failures,
        duration_s: duration,
        rate_per_s: written as f64 / duration.max(1e-9),
        pacing: pacing.into(),
        pacing_value,
        pacing_error_ms,
        first_timestamp: tally.first_ts,
        last_timestamp: tally.last_ts,
        by_partition: tally.by_partition,
        stopped: tally.stopped,
        error: tally.error,
    })
}

/// Warns when the copies keep timestamps older than the destination topic's
/// retention (the broker would delete them at once), judged on the first record.
fn warn_if_past_retention(
    args: &ReplayArgs,
    first: Option<&DumpedRecord>,
    client: impl Fn() -> anyhow::Result<ClientConfig>,
) -> anyhow::Result<()> {
    if let (Some(topic), Some(t), Timestamps::Keep) = (
        &args.to_topic,
        first.and_then(|r| r.timestamp),
        args.timestamps,
    ) {
        sink::warn_if_older_than_retention(&client()?, topic, t);
    }
    Ok(())
}

/// How the replay was paced (`speed`, `rate` or `max`), at what, and how late its
/// paced writes were.
fn pacing(
    args: &ReplayArgs,
    lateness: &Histogram<u64>,
) -> (&'static str, Option<f64>, Percentiles) {
    match (args.speed, args.rate) {
        (Some(s), _) => ("speed", Some(s), Percentiles::of_us(lateness)),
        (_, Some(r)) => ("rate", Some(r), Percentiles::of_us(lateness)),
        _ => ("max", None, Percentiles::default()),
    }
}

/// Refuses a destination that would loop or re-deliver (unless `--force`) and pacing
/// that cannot be kept.
fn check(args: &ReplayArgs, config: Option<&Config>) -> anyhow::Result<()> {
    if let Some(to) = &args.to_topic {
        if !args.force {
            if args.source_topic.as_deref() == Some(to.as_str()) {
                return Err(Refused::SourceTopic(to.clone()).into());
            }
            if config.is_some_and(|c| c.kafka.topics.contains(to)) {
                return Err(Refused::WorkerTopic(to.clone()).into());
            }
        }
    }
    for (name, v) in [("speed", args.speed), ("rate", args.rate)] {
        anyhow::ensure!(
            v.is_none_or(|v| v.is_finite() && v > 0.0),
            "--{name} must be above 0"
        );
    }
    Ok(())
}

/// The Kafka client settings: the worker config's `[kafka]` if given, and the brokers.
fn client_config(args: &ReplayArgs, config: Option<&Config>) -> anyhow::Result<ClientConfig> {
    args.kafka.client(config)
}

/// What the copy loop counted.
struct Tally {
    read: u64,
    /// Sends refused at once (not by the broker later).
    refused: u64,
    failures: BTreeMap<String, u64>,
    by_partition: BTreeMap<String, u64>,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    /// How late each paced write was against its due time, µs.
    lateness: Histogram<u64>,
    stopped: bool,
    error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            read: 0,
            refused: 0,
            failures: BTreeMap::new(),
            by_partition: BTreeMap::new(),
            first_ts: None,
            last_ts: None,
            lateness: micros(),
            stopped: false,
            error: None,
        }
    }

    /// The source's next record; `None` at its end, or when it failed: a bad line or
    /// a broken broker ends the replay, but what was written is still flushed and
    /// counted, so the summary says where it stopped.
    fn next_from(&mut self, source: &mut Source) -> Option<DumpedRecord> {
        match source.next() {
            Ok(next) => next,
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                None
            }
        }
    }

    /// One write's outcome, for a record from `partition`.
    fn count(&mut self, outcome: Result<(), String>, partition: Option<i32>) {
        match outcome {
            Ok(()) => {
                *self
                    .by_partition
                    .entry(partition.map_or("-".into(), |p| p.to_string()))
                    .or_default() += 1;
            }
            Err(reason) => {
                self.refused += 1;
                *self.failures.entry(reason).or_default() += 1;
            }
        }
    }
}

/// When the record at position `read` (timestamp `ts`; the first's was `base`) is due
/// after the start: its gap from the first over `--speed`, or its place at `--rate`;
/// `None` as fast as possible.
fn due(args: &ReplayArgs, ts: Option<i64>, base: i64, read: u64) -> Option<Duration> {
    match (args.speed, args.rate) {
        (Some(speed), _) => {
            ts.map(|t| Duration::from_secs_f64(((t - base).max(0) as f64 / 1000.0) / speed))
        }
        (_, Some(rate)) => Some(Duration::from_secs_f64(read as f64 / rate)),
        _ => None,
    }
}

/// Copies records from `source` to `sink` (`first` already read), each at its due time
/// under `--speed` or `--rate`, until the source ends, fails or `stop` is cancelled.
fn copy(
    args: &ReplayArgs,
    run_id: &str,
    source_name: &str,
    mut first: Option<DumpedRecord>,
    source: &mut Source,
    sink: &mut Sink,
    stop: &CancellationToken,
) -> Tally {
    let mut progress =
        super::progress::Progress::new("replay", source.total(), args.progress_interval);
    let start = Instant::now();
    let wall_start_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut t = Tally::new();
    loop {
        if stop.is_cancelled() {
            t.stopped = true;
            break;
        }
        let Some(mut raw) = first.take().or_else(|| t.next_from(source)) else {
            break;
        };
        let ts = raw.timestamp;
        let base = *t.first_ts.get_or_insert(ts.unwrap_or(wall_start_ms));
        t.last_ts = ts.or(t.last_ts);
        let due = due(args, ts, base, t.read);
        t.read += 1;
        if let Some(due) = due {
            if !super::pace::wait_until(start, due, stop) {
                t.stopped = true;
                break;
            }
        }
        raw.timestamp = args.timestamps.apply(ts, base, wall_start_ms);
        let source_partition = raw.partition;
        let outcome = sink.write(&mut raw, run_id, source_name, stop);
        if let Some(due) = due {
            t.lateness
                .saturating_record(start.elapsed().saturating_sub(due).as_micros() as u64);
        }
        t.count(outcome, source_partition);
        progress.update(t.read, || {
            format!(
                "{:.1}s read {} failed {}",
                start.elapsed().as_secs_f64(),
                t.read,
                t.refused
            )
        });
    }
    progress.finish();
    t
}
