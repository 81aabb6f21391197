//! `sluice capacity run`: one process runs a scenario through the real worker pipeline
//! and judges it. By default everything is embedded — librdkafka's mock cluster, `sluice
//! mock-api`, the load generator — so it needs nothing installed; `--brokers`,
//! `--api-url` and `--config` swap in a real broker, a real API and a real worker
//! configuration.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_util::sync::CancellationToken;

use super::report::{Environment, Report};
use super::sample::{self, Break, Sample};
use super::threshold::Threshold;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tools::loadgen::schedule::{Pace, Schedule, Stage};
use crate::tools::loadgen::shape::{Shape, ShapeArgs};
use crate::tools::loadgen::{self, Gate, Plan, Target};
use crate::tools::mock_api::{Latency, MockApi, MockApiConfig};

/// Events of the embedded broker's backlog per partition: librdkafka's mock cluster
/// keeps about 5 MB a partition, ~15 000 loadgen events of the default shape.
const MOCK_BACKLOG_PER_PARTITION: u64 = 15_000;

/// The API key the embedded worker sends (the embedded API accepts any).
const EMBEDDED_KEY: (&str, &str) = ("SLUICE_CAPACITY_API_KEY", "capacity-key");

/// `sluice capacity run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// What load: a loadgen profile (smoke, load, stress, spike, soak, or a file),
    /// `throughput` (as fast as the pipeline goes, against an unlimited API) or
    /// `stress` (ramp until delivery stops following, then report the breaking point).
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
    /// `stress`: the rate the ramp reaches, events/s.
    #[arg(long, default_value_t = 60_000.0)]
    pub max_rate: f64,
    /// `stress`: how long the ramp takes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub ramp: Duration,
    /// How long to wait, after the load ends, for the backlog to drain.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub drain_timeout: Duration,
    /// Seed of the event generator.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the worker under test serves /metrics, /healthz and /readyz while it runs
    /// (port 0: a free one; the address is logged), e.g. for `sluice capacity report`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// What the events look like (as `sluice loadgen`).
    #[command(flatten)]
    pub shape: ShapeArgs,
}

/// A finished run: its report and where it was written.
#[derive(Debug)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// The folder holding report.json/md/svg.
    pub dir: PathBuf,
}

/// The broker of a run.
enum Broker {
    Embedded(MockCluster<'static, DefaultProducerContext>),
    Real(String),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::Embedded(c) => c.bootstrap_servers(),
            Broker::Real(b) => b.clone(),
        }
    }
}

/// Runs the scenario `args` describes until it ends, breaks (`stress`) or `stop`.
pub async fn run(args: RunArgs, stop: CancellationToken) -> anyhow::Result<Outcome> {
    let run_id = ulid::Ulid::new().to_string();
    let throughput = args.profile == "throughput";
    let stress = args.profile == "stress";
    let mut config = match &args.config {
        Some(path) if args.api_url.is_some() => Config::load(path)?,
        Some(path) => Config::load_without_secrets(path)?,
        None => embedded_config(if throughput { 0 } else { args.limit_per_s })?,
    };
    // The broker.
    let brokers = args
        .brokers
        .clone()
        .or_else(|| args.config.as_ref().map(|_| config.kafka.brokers.clone()));
    let broker = match brokers {
        Some(b) => Broker::Real(b),
        None => Broker::Embedded(MockCluster::new(1)?),
    };
    let fresh_topic = args.topic.is_none();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("sluice-capacity-{}", run_id.to_lowercase()));
    let partitions = match &broker {
        Broker::Embedded(c) => {
            c.create_topic(&topic, args.partitions, 1)?;
            c.create_topic(&format!("{topic}.dlq"), 1, 1)?;
            args.partitions
        }
        Broker::Real(b) if fresh_topic => {
            let mut client = crate::source::client_config(&config.kafka);
            client.set("bootstrap.servers", b);
            crate::tools::shared::create_topics(&client, &topic, args.partitions).await?;
            args.partitions
        }
        Broker::Real(_) => 0,
    };
    config.kafka.brokers = broker.bootstrap();
    if matches!(broker, Broker::Embedded(_)) {
        // The mock cluster answers a fetch only when fetch.wait.max.ms runs out, not
        // when data arrives as a real broker does: keep that wait out of the latency.
        config
            .kafka
            .options
            .insert("fetch.wait.max.ms".into(), "5".into());
    }
    config.kafka.topics = vec![topic.clone()];
    config.kafka.dlq_topic = format!("{topic}.dlq");
    config.kafka.park_topic = None;
    config.kafka.group_id = format!("sluice-capacity-{run_id}");
    if !fresh_topic {
        // An existing topic may hold old events: load only what this run produces.
        config.kafka.auto_offset_reset = crate::config::OffsetReset::Latest;
    }
    // The API.
    let api = match &args.api_url {
        Some(_) => None,
        None => Some(
            MockApi::start(MockApiConfig {
                limit_per_s: if throughput { 0 } else { args.limit_per_s },
                latency: args.api_latency,
                ..MockApiConfig::default()
            })
            .await?,
        ),
    };
    config.destination.base_url = Some(match (&args.api_url, &api) {
        (Some(url), _) => url.clone(),
        (None, Some(api)) => api.base_url(),
        (None, None) => unreachable!("an API is embedded when none is given"),
    });
    // The load.
    let pace = pace(&args, throughput, stress)?;
    let events = args.events.or(throughput.then_some(200_000));
    let schedule = Schedule::new(&pace, events, None)?;
    let shape = Shape::new(
        args.shape.clone(),
        config.workspaces.iter().map(|w| w.id.clone()).collect(),
    )?;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let in_flight_window = (config.lanes.max_in_flight * config.workspaces.len())
        .min(config.limits.max_in_flight_total) as f64;

    // The worker.
    let metrics = Metrics::new();
    let worker_stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(
        "worker under test serves http://{}/metrics",
        listener.local_addr()?
    );
    let worker = tokio::spawn(crate::pipeline::run_on(
        listener,
        config.clone(),
        metrics.clone(),
        worker_stop.clone(),
    ));
    wait_for_assignment(&metrics, &stop).await?;
    if !fresh_topic {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let load_stop = CancellationToken::new();
    let gate = matches!(broker, Broker::Embedded(_)).then(|| {
        let m = metrics.clone();
        Gate {
            done: Arc::new(move || m.delivered_count() + m.dead_lettered_total()),
            max_backlog: MOCK_BACKLOG_PER_PARTITION * partitions.max(1) as u64,
            waited: Arc::new(AtomicU64::new(0)),
        }
    });
    let max_backlog = gate.as_ref().map(|g| g.max_backlog);
    let gate_waits = gate.as_ref().map(|g| g.waited.clone());
    let mut client = crate::source::client_config(&config.kafka);
    client.set("bootstrap.servers", broker.bootstrap());
    let plan = Plan {
        max_pending: schedule
            .peak()
            .map_or(100_000, |p| (p as usize).clamp(1_000, 100_000)),
        schedule: schedule.clone(),
        shape,
        seed,
        run_id: run_id.clone(),
        target: Target::Kafka {
            client,
            topic: topic.clone(),
            create: None,
        },
        late_after: Duration::from_millis(20),
        max_late_share: 0.01,
        progress_interval: None,
        sent: sent.clone(),
        gate,
    };
    let loadgen = tokio::task::spawn_blocking({
        let load_stop = load_stop.clone();
        move || loadgen::run(plan, &load_stop)
    });

    // Watch it, one sample a second.
    let start = Instant::now();
    let mut progress =
        crate::tools::progress::Progress::new("capacity", schedule.total(), Duration::from_secs(5));
    let mut samples: Vec<Sample> = Vec::new();
    let held_s = sample::held_seconds(Duration::from_millis(config.batch.linger_ms));
    let mut last = sample::read(&metrics, &sent, start);
    let mut broke: Option<Break> = None;
    let mut load_done_at: Option<Instant> = None;
    let mut n = 0;
    loop {
        n += 1;
        tokio::select! {
            _ = sample::tick(start, n) => {}
            _ = stop.cancelled() => { load_stop.cancel(); break; }
        }
        let now = sample::read(&metrics, &sent, start);
        let p99 = crate::tools::latency::Percentiles::of_us(&metrics.take_latency_interval()).p99;
        let s = sample::between(&last, &now, &metrics, p99);
        last = now;
        progress.update(now.sent as u64, || {
            format!(
                "{:.0}s offered {:.0}/s delivered {:.0}/s backlog {:.0} p99 {:.0} ms",
                s.t_s, s.offered_per_s, s.delivered_per_s, s.backlog, s.p99_ms
            )
        });
        samples.push(s);
        if stress && broke.is_none() {
            if let Some(b) = sample::broke(&samples, held_s) {
                broke = Some(b);
                load_stop.cancel();
            }
        }
        if load_done_at.is_none() && loadgen.is_finished() {
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
    let generated = loadgen.await??;
    worker_stop.cancel();
    let worker_result = worker.await?;
    let api_stats = match api {
        Some(api) => {
            let stats = api.stats();
            api.stop().await;
            Some(stats)
        }
        None => None,
    };
    worker_result?;
    let environment = Environment {
        embedded_broker: matches!(broker, Broker::Embedded(_)),
        embedded_api: args.api_url.is_none(),
        brokers: if matches!(broker, Broker::Embedded(_)) {
            "embedded (librdkafka mock cluster)".into()
        } else {
            broker.bootstrap()
        },
        api: args.api_url.clone().unwrap_or_else(|| {
            format!(
                "embedded sluice mock-api (limit {} requests/s, latency {:?})",
                if throughput { 0 } else { args.limit_per_s },
                args.api_latency
            )
        }),
        topic,
        partitions,
        max_backlog,
        in_flight_window,
        batch_max_events: config.batch.max_events,
        linger_ms: config.batch.linger_ms,
        max_in_flight: config.lanes.max_in_flight,
        workspaces: config.workspaces.iter().map(|w| w.id.clone()).collect(),
    };
    let report = Report::build(super::report::Inputs {
        run_id,
        profile: if args.stages.is_empty() {
            args.profile.clone()
        } else {
            "stages".into()
        },
        seed,
        environment,
        metrics: &metrics,
        samples,
        generated,
        api: api_stats,
        broke,
        stress,
        thresholds: &args.thresholds,
        stopped: stop.is_cancelled(),
        gate_waits: gate_waits.map_or(0, |w| w.load(std::sync::atomic::Ordering::Relaxed)),
    });
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| super::report::default_dir(&report.profile));
    report.write(&dir)?;
    Ok(Outcome { report, dir })
}

/// The worker configuration of an embedded run: the shipped defaults, one workspace
/// whose limit is the embedded API's (`0`: unlimited, so the worker's own limiter does
/// not stand in for the API's).
fn embedded_config(limit_per_s: u32) -> anyhow::Result<Config> {
    let rate = match limit_per_s {
        0 => "rate_limit_per_s = 1000000\n".to_string(),
        n => format!("rate_limit_per_s = {n}\n"),
    };
    let text = format!(
        r#"[kafka]
brokers = "set-below"
group_id = "set-below"
topics = ["set-below"]
dlq_topic = "set-below.dlq"

[destination]
kind = "customerio"

[[workspaces]]
id = "local"
site_id = "capacity-site"
api_key_env = "{}"
{rate}
[server]
listen = "127.0.0.1:0"
"#,
        EMBEDDED_KEY.0
    );
    Ok(Config::from_toml(
        &text,
        "the embedded capacity config",
        [(EMBEDDED_KEY.0.to_string(), EMBEDDED_KEY.1.to_string())],
    )?)
}

/// The offered-load curve of the run.
fn pace(args: &RunArgs, throughput: bool, stress: bool) -> anyhow::Result<Pace> {
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
    if stress {
        anyhow::ensure!(args.max_rate > 0.0, "--max-rate must be above 0");
        return Ok(Pace::Stages {
            start: 0.0,
            stages: vec![Stage {
                duration: args.ramp,
                target: args.max_rate * args.scale,
            }],
        });
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
