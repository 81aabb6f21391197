//! `sluice loadgen`: realistic identify/track events into a topic at a rate you can
//! trust.
//!
//! Open loop: event `i` is due at its scheduled time ([`schedule`]) whatever the broker
//! does. The producer's queue is bounded (`--max-pending`), so a broker that stalls
//! fills it and the next sends wait: they are sent late, counted, and their lateness
//! recorded, and a run where more than `--max-late-share` of the sends were late is
//! marked invalid (exit code [`EXIT_INVALID`]). The rate achieved is reported per stage
//! by send time and by acknowledgement time, next to the target, so a stall can never
//! pass for a run on target.
//!
//! Every message carries the run id (`sluice.run`) and its scheduled send time
//! (`sluice.due`, unix microseconds), and its Kafka timestamp is that scheduled time,
//! so end-to-end latency can be measured from when the event was *meant* to exist
//! (no coordinated omission), and `sluice replay --speed 1` reproduces the curve.

mod args;
mod headroom;
mod output;
pub mod profile;
pub(crate) mod schedule;
pub mod shape;
mod summary;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

pub use args::{LoadgenArgs, Rate};
pub use headroom::{Headroom, PartitionBytes};
use schedule::{Pace, Schedule, Stage};
use shape::{Generator, Shape, ShapeArgs};
use sluice_core::config::Config;
pub use summary::{StageSummary, Summary};

/// Exit code of a run that is not a valid measurement: too many sends were late (the
/// generator or the broker fell behind the schedule) or some failed.
pub const EXIT_INVALID: u8 = 3;

/// Header naming the run an event belongs to.
pub(crate) const RUN_HEADER: &str = "sluice.run";
/// Header holding an event's scheduled send time, unix microseconds.
pub(crate) const DUE_HEADER: &str = sluice_core::record::headers::DUE;

/// Where the events go.
#[derive(Debug)]
pub enum Target {
    /// Produced to this topic with these client properties.
    Kafka {
        /// librdkafka properties (brokers included).
        client: rdkafka::ClientConfig,
        /// The topic.
        topic: String,
        /// Partitions to create it with, unless it exists.
        create: Option<i32>,
    },
    /// Written to this file.
    File(PathBuf),
}

/// Everything one run needs, resolved from the options.
#[derive(Debug)]
pub struct Plan {
    /// When events are due.
    pub schedule: Schedule,
    /// What they look like.
    pub shape: Shape,
    /// Generator seed.
    pub seed: u64,
    /// Run id.
    pub run_id: String,
    /// Where they go.
    pub target: Target,
    /// Late threshold.
    pub late_after: Duration,
    /// Highest acceptable late share.
    pub max_late_share: f64,
    /// Producer queue bound.
    pub max_pending: usize,
    /// Progress interval (plain lines); `None`: no progress output (a caller that
    /// shows its own).
    pub progress_interval: Option<Duration>,
    /// Counts events sent, for a caller watching the run.
    pub sent: Arc<AtomicU64>,
    /// Holds sends back while a partition would hold too much undelivered (see [`Headroom`]).
    pub headroom: Option<Headroom>,
}

/// Microseconds since the Unix epoch of `at` (0 before it).
fn unix_us(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Creates the topic `plan` writes to, if asked (before the schedule's clock starts:
/// the admin round trip is no part of the load).
fn create_topic(plan: &Plan) -> anyhow::Result<()> {
    if let Target::Kafka {
        client,
        topic,
        create: Some(partitions),
    } = &plan.target
    {
        futures::executor::block_on(crate::broker::create_topics(client, topic, *partitions))?;
    }
    Ok(())
}

/// The sink `plan` writes to, and its name.
fn open_output(plan: &Plan, start: Instant) -> anyhow::Result<(output::Output, String)> {
    Ok(match &plan.target {
        Target::Kafka { client, topic, .. } => (
            output::Output::kafka(
                client,
                topic,
                plan.max_pending,
                start,
                &plan.schedule,
                plan.headroom.as_ref().map(|g| g.acked.clone()),
            )?,
            topic.clone(),
        ),
        Target::File(path) => (output::Output::file(path)?, path.display().to_string()),
    })
}

/// A Kafka target from `--brokers`/`--topic`/`--producer-option`, else `config`.
fn kafka_target(args: &LoadgenArgs, config: Option<&Config>) -> anyhow::Result<Target> {
    let mut client = args.kafka.client(config)?;
    args.kafka.set_producer_options(&mut client);
    let topic = args
        .topic
        .clone()
        .or_else(|| config.and_then(|c| c.kafka.topics.first().cloned()))
        .ok_or_else(|| anyhow::anyhow!("give --topic (or --config)"))?;
    Ok(Target::Kafka {
        client,
        topic,
        create: args.partitions,
    })
}

impl Plan {
    /// The progress line `--progress-interval` asks for, or none.
    fn progress(&self) -> super::progress::Progress {
        match self.progress_interval {
            Some(every) => super::progress::Progress::new("loadgen", self.schedule.total(), every),
            None => super::progress::Progress::Hidden,
        }
    }

    /// Resolves `args` (reading `--config` if given).
    pub fn new(args: LoadgenArgs) -> anyhow::Result<Plan> {
        let config = args.kafka.load_config()?;
        let schedule = Schedule::new(&args.pace()?, args.events, args.duration)?;
        let workspaces = config
            .as_ref()
            .map(|c| c.workspaces.iter().map(|w| w.id.clone()).collect())
            .unwrap_or_default();
        let shape = Shape::new(args.shape.clone(), workspaces)?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&args.max_late_share),
            "--max-late-share must be between 0 and 1"
        );
        let target = match &args.to_file {
            Some(path) => Target::File(path.clone()),
            None => kafka_target(&args, config.as_ref())?,
        };
        let max_pending = args.max_pending.unwrap_or_else(|| {
            schedule
                .peak()
                .map_or(100_000, |peak| (peak as usize).clamp(1_000, 100_000))
        });
        anyhow::ensure!(max_pending > 0, "--max-pending must be at least 1");
        Ok(Plan {
            schedule,
            shape,
            seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
            run_id: args
                .run_id
                .clone()
                .unwrap_or_else(|| ulid::Ulid::new().to_string()),
            target,
            late_after: args.late_after,
            max_late_share: args.max_late_share,
            max_pending,
            progress_interval: Some(args.progress_interval),
            sent: Arc::new(AtomicU64::new(0)),
            headroom: None,
        })
    }
}

/// Whether the next scheduled event goes out.
enum Turn {
    /// Send it (its time has come, or the run is unpaced).
    Send,
    /// `--duration` is over.
    TimeUp,
    /// `stop` was cancelled.
    Stopped,
}

/// Waits for the event due at `due` after `start`: for the stop, the time limit, the
/// headroom (the embedded broker's backlog) and, paced, its moment.
fn wait_for_turn(
    plan: &Plan,
    start: Instant,
    due: std::time::Duration,
    bytes: u64,
    paced: bool,
    stop: &CancellationToken,
) -> Turn {
    if stop.is_cancelled() {
        return Turn::Stopped;
    }
    if plan
        .schedule
        .limit_time()
        .is_some_and(|l| start.elapsed() >= l)
    {
        return Turn::TimeUp;
    }
    if let Some(headroom) = &plan.headroom {
        headroom.wait(
            plan.sent.load(std::sync::atomic::Ordering::Relaxed),
            bytes,
            stop,
        );
    }
    if paced && !super::pace::wait_until(start, due, stop) {
        return Turn::Stopped;
    }
    Turn::Send
}

/// Runs `plan` until its schedule ends or `stop` is cancelled; returns the summary.
pub fn run(plan: Plan, stop: &CancellationToken) -> anyhow::Result<Summary> {
    let stages = plan.schedule.stages();
    let mut generator = Generator::new(plan.shape.clone(), plan.seed);
    let workspaces: Vec<String> = generator.workspaces().map(str::to_string).collect();
    create_topic(&plan)?;
    let wall_start = SystemTime::now();
    let start = Instant::now();
    let (mut sink, destination) = open_output(&plan, start)?;
    let paced = plan.schedule.paced() && matches!(plan.target, Target::Kafka { .. });
    let mut tally = summary::Tally::new(&plan, stages.len(), workspaces.len());
    let mut progress = plan.progress();
    let mut i = 0u64;
    let mut stopped = false;
    while let Some((due, stage)) = plan.schedule.due(i) {
        // Made before the wait, so that its cost is not in the send's lateness.
        let event = generator.next_event();
        let message = output::Message {
            key: &event.key,
            value: &event.value,
            workspace: &workspaces[event.workspace],
            run_id: &plan.run_id,
            due_us: unix_us(wall_start + due),
        };
        match wait_for_turn(&plan, start, due, message.record_bytes(), paced, stop) {
            Turn::Send => {}
            Turn::TimeUp => break,
            Turn::Stopped => {
                stopped = true;
                break;
            }
        }
        let outcome = sink.send(&message, stop);
        let sent_at = start.elapsed();
        if outcome == output::Outcome::Sent {
            plan.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Unpaced (file) runs: everything is sent "now", so count it by schedule.
        let (sent_stage, late) = match paced {
            true => (
                plan.schedule.stage_at(sent_at),
                Some(sent_at.saturating_sub(due)),
            ),
            false => (stage, None),
        };
        tally.record(&event, stage, sent_stage, late, outcome);
        i += 1;
        progress.update(i, || tally.status(start.elapsed(), sink.acked()));
    }
    progress.finish();
    let delivery = sink.finish(stop)?;
    Ok(tally.summary(summary::Finish {
        destination,
        workspaces,
        stages,
        elapsed: start.elapsed(),
        delivery,
        stopped,
    }))
}
