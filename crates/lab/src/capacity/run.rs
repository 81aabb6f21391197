//! `sluice capacity run`: one process runs a scenario through the real worker pipeline
//! and judges it. By default everything is embedded — librdkafka's mock cluster, `sluice
//! mock-api`, the load generator — so it needs nothing installed; `--brokers`,
//! `--api-url` and `--config` swap in a real broker, a real API and a real worker
//! configuration.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::bench::{embedded_config, Bench};
use super::report::Report;
use super::run_args::RunArgs;
use super::sample::{self, Sample};
use super::stairs::{Break, Stairs};
use crate::loadgen::schedule::{Pace, Schedule, Stage};
use crate::loadgen::shape::Shape;
use crate::loadgen::{self, Headroom, Plan, Target};
use sluice_core::config::{Config, DestinationKind};
use sluice_core::metrics::Metrics;
use sluice_mock_api::{MockApi, MockApiConfig};

/// Bytes of undelivered events one partition of the embedded broker may hold.
/// librdkafka's mock cluster keeps the last 5 MiB of a partition (rdkafka_mock.c,
/// `max_size`), read or not; 3 MiB leaves room for what the headroom's estimate misses
/// (batch framing, partitions read unevenly between pauses).
const MOCK_PARTITION_BUDGET_BYTES: u64 = 3 * 1024 * 1024;

/// The load generator's `linger.ms` on the embedded broker.
const EMBEDDED_LINGER_MS: u32 = 20;

/// A finished run: its report and where it was written.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report.
    pub report: Report,
    /// The folder holding report.json/md/svg.
    pub dir: PathBuf,
}

/// The worker's config: `--config` (with its API keys when `--api-url` names a real
/// API), else the embedded one.
fn worker_config(args: &RunArgs, api_limit: u32) -> anyhow::Result<Config> {
    Ok(match &args.config {
        Some(path) if args.api_url.is_some() => Config::load(path)?,
        Some(path) => Config::load_without_secrets(path)?,
        None => embedded_config(api_limit)?,
    })
}

/// The generator's schedule: the stress staircase unless `--stage`s are given, else
/// the profile's or the stages' pace.
fn schedule(args: &RunArgs, stairs: Option<&Stairs>, throughput: bool) -> anyhow::Result<Schedule> {
    let pace = match stairs {
        Some(stairs) if args.stages.is_empty() => stairs.pace(),
        _ => pace(args, throughput)?,
    };
    Ok(Schedule::new(
        &pace,
        args.events.or(throughput.then_some(200_000)),
        None,
    )?)
}

/// Events the worker holds in the normal course of delivery: a full batch for each
/// request each workspace may have in flight.
fn working_set(config: &Config) -> f64 {
    (config.batch.max_events * config.lanes.max_in_flight * config.workspaces.len().max(1)) as f64
}

/// Runs the scenario `args` describes until it ends, breaks (`stress`) or `stop`.
pub async fn run(args: RunArgs, stop: CancellationToken) -> anyhow::Result<RunOutcome> {
    let run_id = ulid::Ulid::new().to_string();
    let throughput = args.profile == "throughput";
    let stress = args.profile == "stress";
    let api_limit = if throughput { 0 } else { args.limit_per_s };
    let mut config = worker_config(&args, api_limit)?;
    let bench = Bench::set_up(&args, &run_id, &mut config).await?;
    let api = start_api(&args, api_limit, &mut config).await?;
    let stairs = stress
        .then(|| Stairs::new(args.max_rate * args.scale, args.steps, args.ramp))
        .transpose()?
        .map(|stairs| stairs.with_slack(working_set(&config)));
    let schedule = schedule(&args, stairs.as_ref(), throughput)?;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));

    // The worker, then the load once it owns partitions.
    let metrics = Metrics::new();
    let worker_stop = CancellationToken::new();
    let worker = start_worker(args.listen, &config, &metrics, &worker_stop).await?;
    wait_for_assignment(&metrics, &stop).await?;
    if !bench.fresh_topic {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let load = Load::start(&args, &bench, &config, &metrics, &schedule, seed, &run_id)?;
    let watched = watch(&args, &metrics, &load, &schedule, stairs.as_ref(), &stop).await;
    let generated = load.task.await??;
    worker_stop.cancel();
    let worker_result = worker.await?;
    let api_stats = stop_api(api).await;
    worker_result?;
    let report = Report::build(super::report::Inputs {
        run_id,
        profile: args.profile_name(),
        seed,
        environment: bench.environment(&args, &config, api_limit, load.max_partition_backlog_bytes),
        metrics: &metrics,
        samples: watched.samples,
        generated,
        api: api_stats,
        broke: watched.broke,
        stress,
        thresholds: &args.thresholds,
        stopped: stop.is_cancelled(),
        gate_waits: load
            .gate_waits
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::Relaxed)),
    });
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| super::report::default_dir(&report.profile));
    report.write(&dir)?;
    Ok(RunOutcome { report, dir })
}

/// Starts the embedded `sluice mock-api` unless `--api-url` names a real one, and
/// points `config` at whichever it is.
async fn start_api(
    args: &RunArgs,
    limit_per_s: u32,
    config: &mut Config,
) -> anyhow::Result<Option<MockApi>> {
    let api = match &args.api_url {
        Some(url) => {
            point_at(config, url);
            return Ok(None);
        }
        None => {
            MockApi::start(MockApiConfig {
                limit_per_s,
                latency: args.api_latency,
                ..MockApiConfig::default()
            })
            .await?
        }
    };
    point_at(config, &api.base_url());
    Ok(Some(api))
}

/// Points every destination of `config` at the API at `base`: `base_url` for the
/// Customer.io and Segment kinds; for kind = "http", the URL's path under the
/// emulator's `/json/` (its host replaced) and the token endpoint at `/auth/token`.
fn point_at(config: &mut Config, base: &str) {
    let base = base.trim_end_matches('/');
    for d in std::iter::once(&mut config.destination).chain(config.destinations.values_mut()) {
        if d.kind != DestinationKind::Http {
            d.base_url = Some(base.to_string());
            continue;
        }
        if let Some(url) = &mut d.url {
            let origin = sluice_core::config::http_origin(url)
                .unwrap_or_default()
                .len();
            *url = format!("{base}/json{}", &url[origin..]);
        }
        if d.token_url.is_some() {
            d.token_url = Some(format!("{base}/auth/token"));
        }
    }
}

/// Stops the embedded API, if any, with what it counted.
async fn stop_api(api: Option<MockApi>) -> Option<sluice_mock_api::Snapshot> {
    let api = api?;
    let stats = api.stats();
    api.stop().await;
    Some(stats)
}

/// The worker under test: the real pipeline on `listen`, until `stop`.
async fn start_worker(
    listen: std::net::SocketAddr,
    config: &Config,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), sluice_core::pipeline::WorkerError>>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(
        "worker under test serves http://{}/metrics",
        listener.local_addr()?
    );
    Ok(tokio::spawn(sluice_core::pipeline::run_on(
        listener,
        config.clone(),
        metrics.clone(),
        stop.clone(),
    )))
}

/// The load generator of a run, on a blocking thread.
struct Load {
    task: tokio::task::JoinHandle<anyhow::Result<loadgen::Summary>>,
    /// Events it has sent so far.
    sent: Arc<AtomicU64>,
    /// Ends it early (a break, a stop).
    stop: CancellationToken,
    /// On the mock cluster, the most events it lets wait in the topic.
    max_partition_backlog_bytes: Option<u64>,
    /// How often that bound held it back.
    gate_waits: Option<Arc<AtomicU64>>,
}

impl Load {
    fn start(
        args: &RunArgs,
        bench: &Bench,
        config: &Config,
        metrics: &Metrics,
        schedule: &Schedule,
        seed: u64,
        run_id: &str,
    ) -> anyhow::Result<Load> {
        let shape = Shape::new(
            args.shape.clone(),
            config.workspaces.iter().map(|w| w.id.clone()).collect(),
        )?;
        let sent = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let headroom = Self::headroom(bench, metrics);
        let max_partition_backlog_bytes = headroom.as_ref().map(|g| g.max_partition_bytes);
        let gate_waits = headroom.as_ref().map(|g| g.waited.clone());
        let plan = Plan {
            max_pending: schedule
                .peak()
                .map_or(100_000, |p| (p as usize).clamp(1_000, 100_000)),
            schedule: schedule.clone(),
            shape,
            seed,
            run_id: run_id.to_string(),
            target: Target::Kafka {
                client: Self::producer_config(bench, config),
                topic: bench.topic.clone(),
                create: None,
            },
            late_after: Duration::from_millis(20),
            max_late_share: 0.01,
            progress_interval: None,
            sent: sent.clone(),
            headroom,
        };
        let task = tokio::task::spawn_blocking({
            let stop = stop.clone();
            move || loadgen::run(plan, &stop)
        });
        Ok(Load {
            task,
            sent,
            stop,
            max_partition_backlog_bytes,
            gate_waits,
        })
    }

    /// The mock cluster keeps only so much per partition: on it the generator waits
    /// for the worker rather than outgrow it.
    fn headroom(bench: &Bench, metrics: &Metrics) -> Option<Headroom> {
        bench.embedded().then(|| {
            let m = metrics.clone();
            Headroom::new(
                Arc::new(move || m.delivered_count() + m.dead_lettered_total()),
                MOCK_PARTITION_BUDGET_BYTES,
                bench.partitions.max(1) as usize,
            )
        })
    }

    /// The generator's producer: the worker's Kafka settings, on the bench's broker.
    fn producer_config(bench: &Bench, config: &Config) -> rdkafka::ClientConfig {
        let mut client = sluice_core::kafka::producer_config(&config.kafka);
        client.set("bootstrap.servers", bench.broker.bootstrap());
        if bench.embedded() {
            // The mock cluster finds a fetch's offset by walking every message set it
            // keeps (up to 5 MB a partition): at the loadgen's 5 ms linger that walk
            // took a third of a one-core run's CPU at 9 000 events/s (perf). Sets four
            // times larger cost a quarter of it; the 20 ms is in the measured latency,
            // as a real producer's linger would be.
            client.set("linger.ms", EMBEDDED_LINGER_MS.to_string());
        }
        client
    }
}

/// What watching a run saw.
struct Watched {
    samples: Vec<Sample>,
    broke: Option<Break>,
}

/// One sample a second until the load is done and delivered (or the drain timeout
/// passes), the run breaks (`stress`: the load is stopped there) or `stop`.
async fn watch(
    args: &RunArgs,
    metrics: &Metrics,
    load: &Load,
    schedule: &Schedule,
    stairs: Option<&Stairs>,
    stop: &CancellationToken,
) -> Watched {
    let start = Instant::now();
    let mut progress =
        crate::progress::Progress::new("capacity", schedule.total(), Duration::from_secs(5));
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = sample::read(metrics, &load.sent, start);
    let mut broke: Option<Break> = None;
    let mut load_done_at: Option<Instant> = None;
    let mut n = 0;
    loop {
        n += 1;
        tokio::select! {
            _ = sample::tick(start, n) => {}
            _ = stop.cancelled() => { load.stop.cancel(); break; }
        }
        let now = sample::read(metrics, &load.sent, start);
        let p99 = crate::latency::Percentiles::of_us(&metrics.take_latency_interval()).p99;
        let s = sample::between(&last, &now, metrics, p99);
        last = now;
        progress.update(now.sent as u64, || {
            format!(
                "{:.0}s offered {:.0}/s delivered {:.0}/s backlog {:.0} p99 {:.0} ms",
                s.t_s, s.offered_per_s, s.delivered_per_s, s.backlog, s.p99_ms
            )
        });
        samples.push(s);
        if let (Some(stairs), None) = (stairs, &broke) {
            if let Some(b) = stairs.broke(&samples) {
                broke = Some(b);
                load.stop.cancel();
            }
        }
        if load_done_at.is_none() && load.task.is_finished() {
            load_done_at = Some(Instant::now());
        }
        if let Some(at) = load_done_at {
            let backlog = samples.last().map_or(0.0, |s| s.backlog);
            if backlog <= 0.0 || at.elapsed() > args.drain_timeout {
                break;
            }
        }
    }
    progress.finish();
    Watched { samples, broke }
}

/// The offered-load curve of the run.
fn pace(args: &RunArgs, throughput: bool) -> anyhow::Result<Pace> {
    if !args.stages.is_empty() {
        let stages = args
            .stages
            .iter()
            .map(|s| Stage {
                target: s.target * args.scale,
                ..*s
            })
            .collect();
        return Ok(Pace::Stages { start: 0.0, stages });
    }
    if throughput {
        return Ok(Pace::Max);
    }
    loadgen::profile::Profile::load(&args.profile)?
        .pace(args.scale)
        .map_err(anyhow::Error::msg)
}

/// Waits until the worker owns partitions (its first assignment).
async fn wait_for_assignment(metrics: &Metrics, stop: &CancellationToken) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while metrics.rebalance_count("assign") == 0 {
        anyhow::ensure!(
            Instant::now() < until,
            "the worker got no partitions within 60 s (is the broker up?)"
        );
        if stop.is_cancelled() {
            anyhow::bail!("stopped before the run began");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
