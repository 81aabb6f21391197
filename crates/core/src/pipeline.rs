//! Assembles the stages — source, lanes, destination — and runs them until shutdown,
//! then drains: stop fetching, flush every lane, let in-flight requests finish within
//! the deadline, commit, leave the group.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::books::{Books, Buffered, OffsetTracker};
use crate::config::Config;
use crate::config::DestinationKind;
use crate::config::LimitMode;
use crate::deliver::{CustomerIo, Destination, JsonApi, JsonApiError, Routes, SegmentBatch};
use crate::dlq::DeadLetters;
use crate::event::Decoder;
use crate::intake::Intake;
use crate::lane::{Router, Services};
use crate::limit::{Fleet, Limiter, Share};
use crate::metrics::Metrics;
use crate::park::table::ParkedMarks;
use crate::park::{LaneParking, ParkingSetup};
use crate::server::{self, Health};
use crate::shutdown::Shutdown;
use crate::source::{Assigned, LagMonitor, Source, SourceError, SourceParking};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// A kind = "http" destination could not be built.
    #[error(transparent)]
    JsonApi(#[from] JsonApiError),
    /// The Redis URL of the fleet limit is not usable.
    #[error("limits.redis_url: {0}")]
    Redis(#[from] crate::limit::fleet_store::FleetStoreError),
    /// The CA certificate for the Redis server could not be read.
    #[error("limits.redis_ca_file: {0}")]
    RedisCa(String),
    /// The parking topic exists but could not be made ready (its parked events must be
    /// read before the worker delivers anything of their partitions).
    #[error("parking: {0}")]
    Parking(String),
    /// A lane stopped while the worker ran (a bug): the worker stopped so that it is
    /// restarted.
    #[error("a lane stopped unexpectedly ({0}); the worker stopped")]
    LaneFailed(String),
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
///
/// Build the stages, run the source until `shutdown`, then drain (see
/// [`Shutdown`]): the lanes flush, the final commit, the services last.
pub async fn run_on(
    listener: tokio::net::TcpListener,
    config: Config,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let stop = Shutdown::new();
    metrics.batch_limits(config.batch.max_events, config.batch.max_bytes);
    // A broker contact stays fresh for three lag measurements (at least 15 s).
    let grace = (config.kafka.lag_refresh_ms.duration() * 3).max(Duration::from_secs(15));
    let health = Health::new(grace);
    stop.spawn_service(|end| server::serve(listener, metrics.clone(), health.clone(), end));
    let built = build_delivery(&config, metrics, &stop)?;
    let (services, intake, share) = (built.services, built.intake, built.share);
    let marks = ParkedMarks::default();
    let parking = ParkingSetup::new(
        &config,
        intake.clone(),
        marks.clone(),
        stop.dead_letter_tasks(),
        &services.metrics,
    )
    .await
    .map_err(|e| WorkerError::Parking(e.to_string()))?;
    let ledger = parking.as_ref().map(|p| p.ledger.clone());
    if let Some(ledger) = &ledger {
        let (ledger, marks) = (ledger.clone(), marks.clone());
        stop.spawn_service(|end| ledger.run(marks, end));
    }
    let mut lanes = JoinSet::new();
    let router = Router::start(
        config.workspaces.iter().map(|w| w.id.clone()),
        services.clone(),
        |workspace, lane| {
            parking
                .as_ref()
                .map(|p| LaneParking::new(p, workspace, lane, &services))
        },
        &mut lanes,
    );
    let assigned = Assigned::default();
    start_lag_monitor(&config, &assigned, &services, &health, &stop)?;
    let mut source = Source::new(
        &config,
        &services,
        intake,
        assigned,
        health.clone(),
        share,
        SourceParking { marks, ledger },
    )?;
    tracing::info!(
        topics = ?config.kafka.topics, group = %config.kafka.group_id,
        workspaces = config.workspaces.len(), "sluice is running"
    );
    health.set_running(true);
    let lane_failed =
        Shutdown::run_watching_lanes(source.run(&router, &shutdown), &mut lanes, &shutdown).await;

    health.set_running(false);
    drop(router);
    let deadline = config.shutdown.drain_deadline_ms.duration();
    stop.drain(&mut lanes, deadline).await;
    // The final commit and group leave block on the broker.
    tokio::task::block_in_place(|| source.close());
    stop.stop_services().await;
    tracing::info!("sluice stopped");
    match lane_failed {
        Some(why) => Err(WorkerError::LaneFailed(why)),
        None => Ok(()),
    }
}

/// Starts measuring the lag of the partitions `assigned` holds (the queue depth the
/// autoscaler follows), as a service that stops last.
fn start_lag_monitor(
    config: &Config,
    assigned: &Assigned,
    services: &Services,
    health: &Health,
    stop: &Shutdown,
) -> Result<(), WorkerError> {
    let lag = LagMonitor::new(
        config,
        assigned.clone(),
        services.books.tracker().clone(),
        services.books.buffered().clone(),
        services.metrics.clone(),
        health.clone(),
    )
    .map_err(SourceError::Kafka)?;
    stop.spawn_service(|end| lag.run(end));
    Ok(())
}

/// The delivery side, built.
pub(crate) struct Delivery {
    /// What the lanes share: the API client (with the limiter), dead letters, offsets.
    pub(crate) services: Arc<Services>,
    /// Judges each record for its lane.
    pub(crate) intake: Arc<Intake>,
    /// The limiter's share of each limit, which the consumer's rebalances update.
    pub(crate) share: Arc<Share>,
}

/// The delivery side: the limiter (its rates reported every second), the API client
/// and the dead-letter producer in what the lanes share, and the intake that feeds
/// the lanes.
pub(crate) fn build_delivery(
    config: &Config,
    metrics: Metrics,
    stop: &Shutdown,
) -> Result<Delivery, WorkerError> {
    let limiter = Arc::new(build_limiter(config, &metrics)?);
    let share = limiter.share();
    stop.spawn_service(|end| report_limits(limiter.clone(), metrics.clone(), end));
    let services = Arc::new(Services::from_config(
        config,
        destination(config, limiter, &metrics)?,
        Arc::new(DeadLetters::new(config, metrics.clone()).map_err(SourceError::Kafka)?),
        Books::new(
            OffsetTracker::new(),
            Arc::new(Buffered::new(metrics.clone())),
        ),
        metrics,
        stop.hard_stop(),
    ));
    let intake = Arc::new(Intake::new(
        Decoder::for_config(config),
        services.clone(),
        stop.dead_letter_tasks(),
    ));
    Ok(Delivery {
        services,
        intake,
        share,
    })
}

/// The API client for `config`'s destination, or one per destination with the
/// workspaces routed to theirs.
fn destination(
    config: &Config,
    limiter: Arc<Limiter>,
    metrics: &Metrics,
) -> Result<Arc<dyn Destination>, WorkerError> {
    if config.destinations.is_empty() {
        return client(&config.for_destination(None), limiter, metrics);
    }
    let default = client(&config.for_destination(None), limiter.clone(), metrics)?;
    let mut by_workspace = std::collections::HashMap::new();
    for name in config.destinations.keys() {
        let view = config.for_destination(Some(name));
        let api = client(&view, limiter.clone(), metrics)?;
        for ws in &view.workspaces {
            by_workspace.insert(ws.id.clone(), api.clone());
        }
    }
    Ok(Arc::new(Routes::new(default, by_workspace)))
}

/// One destination's client, for the kind `config.destination` names.
fn client(
    config: &Config,
    limiter: Arc<Limiter>,
    metrics: &Metrics,
) -> Result<Arc<dyn Destination>, WorkerError> {
    Ok(match config.destination.kind {
        DestinationKind::Customerio => Arc::new(CustomerIo::new(config, limiter, metrics.clone())?),
        DestinationKind::Segment | DestinationKind::CustomerioPipelines => {
            Arc::new(SegmentBatch::new(config, limiter, metrics.clone())?)
        }
        DestinationKind::Http => Arc::new(JsonApi::new(config, limiter, metrics.clone())?),
    })
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
            let ca = match &l.redis_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| WorkerError::RedisCa(format!("{}: {e}", path.display())))?,
                ),
                None => None,
            };
            let fleet =
                Fleet::connect_trusting(url.expose(), ca, &l.redis_prefix, metrics.clone())?;
            metrics.set_fleet_up(true);
            tracing::info!(prefix = %l.redis_prefix, "rate limits services by the fleet through Redis");
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
