//! Assembles the stages — source, lanes, destination — and runs them until shutdown,
//! then drains: stop fetching, flush every lane, let in-flight requests finish within
//! the deadline, commit, leave the group.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::LimitMode;
use crate::deliver::{CustomerIo, Destination};
use crate::dlq::DeadLetters;
use crate::event::Decoder;
use crate::intake::Intake;
use crate::lane::{LaneShared, Router};
use crate::limit::{Fleet, Limiter, Share};
use crate::metrics::Metrics;
use crate::park::table::ParkedMarks;
use crate::park::ParkingSetup;
use crate::server::{self, Health};
use crate::source::{Assigned, Buffered, LagMonitor, OffsetTracker, Source, SourceError};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The Redis URL of the fleet limit is not usable.
    #[error("limits.redis_url: {0}")]
    Redis(#[from] crate::limit::shared::SharedError),
    /// The metrics/health listener could not bind.
    #[error("server: cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the worker until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| WorkerError::Listen {
            addr: config.server.listen,
            source,
        })?;
    run_on(listener, config, metrics, shutdown).await
}

/// Like [`run`], serving `/metrics` and the health endpoints on `listener` instead of
/// binding `server.listen` (tests bind port 0 and keep the address).
pub async fn run_on(
    listener: tokio::net::TcpListener,
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    // A broker contact stays fresh for three lag measurements (at least 15 s).
    let grace = Duration::from_millis(config.kafka.lag_refresh_ms * 3).max(Duration::from_secs(15));
    let health = Health::new(grace);
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        health.clone(),
        server_stop.clone(),
    ));

    let limiter = Arc::new(build_limiter(&config, &metrics)?);
    let share = limiter.share();
    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(report_limits(
        limiter.clone(),
        metrics.clone(),
        reporter_stop.clone(),
    ));
    let destination: Arc<dyn Destination> =
        Arc::new(CustomerIo::new(&config, limiter, metrics.clone())?);
    let dead_letters =
        Arc::new(DeadLetters::new(&config, metrics.clone()).map_err(SourceError::Kafka)?);
    let hard_stop = CancellationToken::new();
    let shared = Arc::new(LaneShared::from_config(
        &config,
        destination,
        dead_letters,
        OffsetTracker::new(),
        metrics.clone(),
        Arc::new(Buffered::new(metrics)),
        hard_stop.clone(),
    ));
    let dead_letter_tasks = TaskTracker::new();
    let intake = Arc::new(Intake::new(
        Decoder::for_config(&config),
        shared.clone(),
        dead_letter_tasks.clone(),
    ));
    let marks = ParkedMarks::default();
    let parking = ParkingSetup::new(
        &config,
        intake.clone(),
        marks.clone(),
        dead_letter_tasks.clone(),
        &shared.metrics,
    )
    .map_err(SourceError::Kafka)?;
    let mut lanes = JoinSet::new();
    let router = Router::start(
        config.workspaces.iter().map(|w| w.id.clone()),
        shared.clone(),
        parking,
        &mut lanes,
    );
    let assigned = Assigned::default();
    let lag = LagMonitor::new(
        &config,
        assigned.clone(),
        shared.tracker.clone(),
        shared.buffered.clone(),
        shared.metrics.clone(),
        health.clone(),
    )
    .map_err(SourceError::Kafka)?;
    let lag_stop = CancellationToken::new();
    let lag_task = tokio::spawn(lag.run(lag_stop.clone()));
    let mut source = Source::new(
        &config,
        &shared,
        intake,
        assigned,
        health.clone(),
        share,
        marks,
    )?;
    tracing::info!(
        topics = ?config.kafka.topics, group = %config.kafka.group_id,
        workspaces = config.workspaces.len(), "sluice is running"
    );
    health.set_running(true);

    source.run(&router, &shutdown).await;

    health.set_running(false);
    let deadline = Duration::from_millis(config.shutdown.drain_deadline_ms);
    tracing::info!(?deadline, "shutting down: draining lanes");
    drop(router);
    dead_letter_tasks.close();
    let drain = async {
        while lanes.join_next().await.is_some() {}
        dead_letter_tasks.wait().await;
    };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        hard_stop.cancel();
        while lanes.join_next().await.is_some() {}
        dead_letter_tasks.wait().await;
    }
    // The final commit and group leave block on the broker.
    tokio::task::block_in_place(|| source.close());
    lag_stop.cancel();
    let _ = lag_task.await;
    reporter_stop.cancel();
    let _ = reporter.await;
    server_stop.cancel();
    let _ = server.await;
    tracing::info!("sluice stopped");
    Ok(())
}

/// The limiter `limits.mode` asks for: every pod the whole limit (`local`), its share
/// of the partitions (`partition-share`), or the fleet's budget in Redis with the
/// share as fallback (`redis`).
fn build_limiter(config: &Config, metrics: &Metrics) -> Result<Limiter, WorkerError> {
    let l = &config.limits;
    let share = match l.mode {
        LimitMode::Local => Share::fixed(1.0),
        LimitMode::PartitionShare | LimitMode::Redis => Share::of_partitions(),
    };
    let limiter = Limiter::new(config.workspace_rates(), l.max_in_flight_total, l.headroom)
        .with_share(Arc::new(share));
    match (&l.mode, &l.redis_url) {
        (LimitMode::Redis, Some(url)) => {
            let fleet = Fleet::connect(url, &l.redis_prefix, metrics.clone())?;
            metrics.set_fleet_up(true);
            tracing::info!(prefix = %l.redis_prefix, "rate limits shared by the fleet through Redis");
            Ok(limiter.with_fleet(fleet))
        }
        _ => Ok(limiter),
    }
}

/// Every second, each workspace's learned rate and this pod's share of it.
async fn report_limits(limiter: Arc<Limiter>, metrics: Metrics, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let share = limiter.current_share();
        for ws in limiter.workspaces() {
            if let Some(rate) = limiter.effective_rate(ws) {
                metrics.set_effective_rate(ws, rate);
            }
            metrics.set_share(ws, share);
        }
    }
}
