//! `sluice replay`: re-run real traffic. Reads a topic range (partitions, offsets, or a
//! time range) or a record file, and writes it to a topic or a file — key, value,
//! headers, partition and timestamp kept byte for byte — at the original pace scaled by
//! `--speed`, at a fixed `--rate`, or as fast as possible.
//!
//! Safety: it refuses to write into the topic it reads, or into a topic a given worker
//! config consumes, without `--force`; every message it writes to a topic carries a
//! `sluice.replay` header (`RUN:TOPIC:PARTITION:OFFSET`) so dead letters and redrives
//! can tell replayed traffic from fresh.

mod range;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::tools::dump::{self, Raw};
use crate::tools::latency::{micros, Percentiles};
pub use range::{OffsetRange, Selection, Span, Time, TopicReader};

/// The header every message replayed into a topic carries.
pub const REPLAY_HEADER: &str = crate::dlq::headers::REPLAY;

/// `sluice replay` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["source_topic", "from_file"])))]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["to_topic", "to_file"])))]
pub struct ReplayArgs {
    /// Bootstrap brokers, `HOST:PORT,…` (default: `--config`'s `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// A worker configuration file: its `[kafka]` brokers and options are used, and its
    /// `kafka.topics` are refused as a destination without `--force`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
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
    /// Write even into the topic being read or one the worker config consumes.
    #[arg(long)]
    pub force: bool,
    /// A librdkafka producer property, `KEY=VALUE` (repeatable).
    #[arg(long = "producer-option", value_parser = crate::tools::shared::parse_key_value)]
    pub producer_options: Vec<(String, String)>,
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

/// Why a replay is refused before it starts.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
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
pub struct Summary {
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

enum Source {
    Topic(Box<TopicReader>),
    File(
        Box<dyn Iterator<Item = Result<Raw, dump::DumpError>>>,
        Selection,
    ),
}

impl Source {
    fn next(&mut self) -> anyhow::Result<Option<Raw>> {
        match self {
            Source::Topic(reader) => reader.next_record(),
            Source::File(lines, selection) => loop {
                let Some(raw) = lines.next().transpose()? else {
                    return Ok(None);
                };
                let inside = raw.timestamp.is_none_or(|t| {
                    selection.from.is_none_or(|f| t >= f.0)
                        && selection.to.is_none_or(|to| t < to.0)
                });
                if inside {
                    return Ok(Some(raw));
                }
            },
        }
    }
}

enum Sink {
    Topic {
        producer: ThreadedProducer<Written>,
        topic: String,
        repartition: bool,
    },
    File(BufWriter<File>, u64),
}

/// Runs a replay until its source ends or `stop` is cancelled.
pub fn run(args: ReplayArgs, stop: &CancellationToken) -> anyhow::Result<Summary> {
    let config = args
        .config
        .as_deref()
        .map(Config::load_without_secrets)
        .transpose()?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    if let Some(to) = &args.to_topic {
        if !args.force {
            if args.source_topic.as_deref() == Some(to.as_str()) {
                return Err(Refused::SourceTopic(to.clone()).into());
            }
            if config.as_ref().is_some_and(|c| c.kafka.topics.contains(to)) {
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
    let client = || -> anyhow::Result<ClientConfig> {
        let mut client = match &config {
            Some(c) => crate::source::client_config(&c.kafka),
            None => ClientConfig::new(),
        };
        let brokers = args
            .brokers
            .clone()
            .or_else(|| config.as_ref().map(|c| c.kafka.brokers.clone()))
            .ok_or_else(|| anyhow::anyhow!("give --brokers (or --config)"))?;
        client.set("bootstrap.servers", brokers);
        Ok(client)
    };
    let selection = Selection {
        partitions: args.partitions.clone(),
        offsets: args.offsets.clone(),
        from: args.from,
        to: args.to,
    };
    let (mut source, source_name, highest_partition) = match (&args.source_topic, &args.from_file) {
        (Some(topic), _) => {
            let reader = TopicReader::open(&client()?, topic, &selection)?;
            let highest = reader.spans().iter().map(|s| s.partition).max();
            (Source::Topic(Box::new(reader)), topic.clone(), highest)
        }
        (None, Some(path)) => {
            let file = File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let highest = if args.repartition || args.to_topic.is_none() {
                None
            } else {
                dump::read(BufReader::new(File::open(path)?))
                    .filter_map(Result::ok)
                    .filter_map(|r| r.partition)
                    .max()
            };
            (
                Source::File(
                    Box::new(dump::read(BufReader::new(file))),
                    selection.clone(),
                ),
                path.display().to_string(),
                highest,
            )
        }
        (None, None) => anyhow::bail!("give --source-topic or --from-file"),
    };
    let (mut sink, destination) = match (&args.to_topic, &args.to_file) {
        (Some(topic), _) => {
            let mut client = client()?;
            client.set("queue.buffering.max.messages", "20000");
            // Retries must not reorder a partition; a mistyped topic is not created.
            client.set("enable.idempotence", "true");
            client.set("allow.auto.create.topics", "false");
            for (k, v) in &args.producer_options {
                client.set(k, v);
            }
            let producer: ThreadedProducer<Written> =
                client.create_with_context(Written::default())?;
            let partitions = crate::tools::shared::partition_count(producer.client(), topic)?;
            anyhow::ensure!(
                partitions > 0,
                "the destination topic {topic} does not exist"
            );
            if let (false, Some(highest)) = (args.repartition, highest_partition) {
                if highest as usize >= partitions {
                    return Err(Refused::Partitions {
                        topic: topic.clone(),
                        partitions,
                        highest,
                    }
                    .into());
                }
            }
            (
                Sink::Topic {
                    producer,
                    topic: topic.clone(),
                    repartition: args.repartition,
                },
                topic.clone(),
            )
        }
        (None, Some(path)) => {
            let file = File::create(path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            (
                Sink::File(BufWriter::new(file), 0),
                path.display().to_string(),
            )
        }
        (None, None) => anyhow::bail!("give --to-topic or --to-file"),
    };
    let total = match &source {
        Source::Topic(r) => Some(r.total()),
        Source::File(..) => None,
    };
    // The first record is read before the clock starts, and the retention check (a
    // broker round trip, slow where unsupported) made on it, so pacing starts clean.
    let mut first = source.next()?;
    if let (Some(topic), Some(t), Timestamps::Keep) = (
        &args.to_topic,
        first.as_ref().and_then(|r| r.timestamp),
        args.timestamps,
    ) {
        warn_if_older_than_retention(&client()?, topic, t);
    }
    let mut progress = super::progress::Progress::new("replay", total, args.progress_interval);
    let start = Instant::now();
    let wall_start_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut lateness = micros();
    let (mut read, mut refused) = (0u64, 0u64);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_partition: BTreeMap<String, u64> = BTreeMap::new();
    let (mut first_ts, mut last_ts) = (None::<i64>, None::<i64>);
    let mut stopped = false;
    let mut error = None;
    loop {
        if stop.is_cancelled() {
            stopped = true;
            break;
        }
        let next = match first.take() {
            Some(raw) => Some(raw),
            // A bad line or a broken broker ends the replay, but what was written is
            // still flushed and counted, so the summary says where it stopped.
            None => match source.next() {
                Ok(next) => next,
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break;
                }
            },
        };
        let Some(mut raw) = next else { break };
        let ts = raw.timestamp;
        let base = *first_ts.get_or_insert(ts.unwrap_or(wall_start_ms));
        last_ts = ts.or(last_ts);
        let due = match (args.speed, args.rate) {
            (Some(speed), _) => {
                ts.map(|t| Duration::from_secs_f64(((t - base).max(0) as f64 / 1000.0) / speed))
            }
            (_, Some(rate)) => Some(Duration::from_secs_f64(read as f64 / rate)),
            _ => None,
        };
        read += 1;
        if let Some(due) = due {
            if !super::pace::wait_until(start, due, stop) {
                stopped = true;
                break;
            }
        }
        raw.timestamp = match args.timestamps {
            Timestamps::Keep => ts,
            Timestamps::Now => None,
            Timestamps::Shift => ts.map(|t| t - base + wall_start_ms),
        };
        let source_partition = raw.partition;
        let outcome = write(&mut sink, &mut raw, &run_id, &source_name, stop);
        if let Some(due) = due {
            lateness.saturating_record(start.elapsed().saturating_sub(due).as_micros() as u64);
        }
        match outcome {
            Ok(()) => {
                *by_partition
                    .entry(source_partition.map_or("-".into(), |p| p.to_string()))
                    .or_default() += 1;
            }
            Err(reason) => {
                refused += 1;
                *failures.entry(reason).or_default() += 1;
            }
        }
        progress.update(read, || {
            format!(
                "{:.1}s read {read} failed {refused}",
                start.elapsed().as_secs_f64()
            )
        });
    }
    progress.finish();
    let skipped = match &source {
        Source::Topic(r) => r.skipped,
        Source::File(..) => 0,
    };
    let (written, failed) = match sink {
        Sink::Topic { producer, .. } => {
            // A stopped replay still waits a little for what is in flight.
            let limit = Duration::from_secs(if stop.is_cancelled() { 10 } else { 60 });
            let until = Instant::now() + limit;
            while producer.in_flight_count() > 0 && Instant::now() < until {
                let _ = producer.flush(Duration::from_millis(200));
            }
            let pending = producer.in_flight_count().max(0) as u64;
            let ctx = producer.context();
            for (reason, n) in ctx.failures.lock().expect("not poisoned").iter() {
                *failures.entry(reason.clone()).or_default() += n;
            }
            if pending > 0 {
                *failures
                    .entry("not acknowledged by the end of the replay".into())
                    .or_default() += pending;
            }
            let failed = refused + ctx.failed.load(Ordering::Relaxed) + pending;
            (ctx.acked.load(Ordering::Relaxed), failed)
        }
        Sink::File(mut out, written) => {
            out.flush()?;
            (written, refused)
        }
    };
    let duration = start.elapsed().as_secs_f64();
    let (pacing, pacing_value) = match (args.speed, args.rate) {
        (Some(s), _) => ("speed", Some(s)),
        (_, Some(r)) => ("rate", Some(r)),
        _ => ("max", None),
    };
    Ok(Summary {
        run_id,
        source: source_name,
        destination,
        read,
        written,
        skipped,
        failed,
        failures,
        duration_s: duration,
        rate_per_s: written as f64 / duration.max(1e-9),
        pacing: pacing.into(),
        pacing_value,
        pacing_error_ms: if pacing == "max" {
            Percentiles::default()
        } else {
            Percentiles::of_us(&lateness)
        },
        first_timestamp: first_ts,
        last_timestamp: last_ts,
        by_partition,
        stopped,
        error,
    })
}

/// Writes one record; an `Err` names why it could not be.
fn write(
    sink: &mut Sink,
    raw: &mut Raw,
    run_id: &str,
    source: &str,
    stop: &CancellationToken,
) -> Result<(), String> {
    match sink {
        Sink::File(out, written) => {
            raw.write_line(out).map_err(|e| e.to_string())?;
            *written += 1;
            Ok(())
        }
        Sink::Topic {
            producer,
            topic,
            repartition,
        } => {
            let origin = format!(
                "{run_id}:{}:{}:{}",
                raw.topic.as_deref().unwrap_or(source),
                raw.partition.map_or("-".into(), |p| p.to_string()),
                raw.offset.map_or("-".into(), |o| o.to_string()),
            );
            let mut headers = OwnedHeaders::new_with_capacity(raw.headers.len() + 1);
            for (name, value) in raw.headers.iter().filter(|(n, _)| n != REPLAY_HEADER) {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            headers = headers.insert(Header {
                key: REPLAY_HEADER,
                value: Some(&origin),
            });
            let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic).headers(headers);
            if let Some(key) = &raw.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &raw.value {
                record = record.payload(value.as_slice());
            }
            if let Some(ts) = raw.timestamp {
                record = record.timestamp(ts);
            }
            if let (false, Some(p)) = (*repartition, raw.partition) {
                record = record.partition(p);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => return Ok(()),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if !stop.is_cancelled() =>
                    {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
        }
    }
}

/// One warning line when kept timestamps are older than the destination's retention
/// (the broker may delete them at once). Best effort: brokers that do not describe
/// configs are not asked twice.
fn warn_if_older_than_retention(client: &ClientConfig, topic: &str, ts_ms: i64) {
    let Some(retention_ms) = topic_retention_ms(client, topic) else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if retention_ms >= 0 && ts_ms < now_ms - retention_ms {
        eprintln!(
            "warning: the first record's timestamp is {}s old, beyond {topic}'s retention ({}s): \
             the broker may delete replayed records at once; use --timestamps now or shift",
            (now_ms - ts_ms) / 1000,
            retention_ms / 1000
        );
    }
}

fn topic_retention_ms(client: &ClientConfig, topic: &str) -> Option<i64> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client.create().ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let results = runtime
        .block_on(admin.describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(2))),
        ))
        .ok()?;
    let config = results.into_iter().next()?.ok()?;
    config.get("retention.ms")?.value.as_deref()?.parse().ok()
}

/// The destination producer's context: counts acknowledgements and failures.
#[derive(Debug, Default)]
pub struct Written {
    acked: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl ClientContext for Written {}

impl ProducerContext for Written {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = self.failures.lock().expect("not poisoned");
                if failures.len() < 20 || failures.contains_key(&e.to_string()) {
                    *failures.entry(e.to_string()).or_default() += 1;
                }
            }
        }
    }
}
