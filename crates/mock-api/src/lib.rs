//! `sluice mock-api`: an emulator of Customer.io's Track API (v1 and v2) and Segment's
//! HTTP API (`/v1/batch`, `/v1/identify`, `/v1/track`) for tests, local runs and capacity
//! work.
//!
//! It checks Basic auth and the documented size limits (400/413), answers 207 for
//! invalid batch items, enforces a per-workspace request limit over a sliding one-second
//! window (429 with `Retry-After`, or — `--silent-throttle` — Customer.io's way: a 200
//! that drops the events), injects latency and faults (5xx, hangs past the client's
//! timeout, connection resets), and reports what it saw on `GET /stats`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod controls;
mod gate;
mod routes;
mod stats;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use controls::Controls;
pub use controls::{Arrival, Received};
use stats::Stats;
pub use stats::{Snapshot, WorkspaceSnapshot};

/// Customer.io's and Segment's limit on a batch request body, in bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 500_000;
/// Segment's limit on events per `/v1/batch`.
pub(crate) const MAX_SEGMENT_BATCH_EVENTS: usize = 2_500;

/// How the emulator behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct MockApiConfig {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests per second each workspace may send, over a sliding one-second window;
    /// 0 means unlimited.
    #[arg(long, default_value_t = 100)]
    pub limit_per_s: u32,
    /// Over the limit, answer 200 and drop the events (Customer.io documents no 429)
    /// instead of 429 with Retry-After.
    #[arg(long)]
    pub silent_throttle: bool,
    /// Seconds named in Retry-After (and X-RateLimit-Reset) on a 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// Added latency per request: `fixed:MS`, `uniform:MIN-MAX` or `exp:MEAN` (ms).
    #[arg(long, default_value = "fixed:0")]
    pub latency: Latency,
    /// Share of requests (0..1) that meet a fault instead of an answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Which faults to inject: any of 5xx, timeout, reset.
    #[arg(long, value_delimiter = ',', default_value = "5xx,timeout,reset")]
    pub faults: Vec<Fault>,
    /// How long a `timeout` fault holds the request before answering 504, in ms (set it
    /// above the client's timeout).
    #[arg(long, default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Largest accepted batch body, in bytes (larger ones get 413).
    #[arg(long, default_value_t = MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// Accepted credentials as `USER:PASSWORD` (site id and API key, or a Segment write
    /// key with an empty password; `*:PASSWORD`: any user with that password);
    /// repeatable. None given: any non-empty user passes.
    #[arg(long = "key")]
    pub keys: Vec<String>,
    /// Lifetime of the access tokens `POST /auth/token` issues, in seconds (a request
    /// with an expired one gets 401).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_s: u64,
    /// Keep every accepted item and every request's arrival, for
    /// [`MockApi::received`] and [`MockApi::arrivals`] (in-process use: it grows with
    /// the run, so the command never sets it).
    #[arg(skip)]
    pub record: bool,
}

impl Default for MockApiConfig {
    fn default() -> Self {
        MockApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limit_per_s: 0,
            silent_throttle: false,
            retry_after_s: 1,
            latency: Latency::Fixed(0),
            fault_rate: 0.0,
            faults: vec![Fault::ServerError, Fault::Timeout, Fault::Reset],
            hang_ms: 30_000,
            max_batch_bytes: MAX_BATCH_BYTES,
            keys: Vec::new(),
            token_ttl_s: 3600,
            record: false,
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(u64),
    /// Uniform between the two.
    Uniform(u64, u64),
    /// Exponential with this mean (capped at ten times the mean).
    Exponential(u64),
}

impl Latency {
    fn sample(&self) -> Duration {
        let ms = match *self {
            Latency::Fixed(ms) => ms,
            Latency::Uniform(lo, hi) => fastrand::u64(lo..=hi.max(lo)),
            Latency::Exponential(mean) => {
                let u = fastrand::f64().max(f64::MIN_POSITIVE);
                ((-u.ln()) * mean as f64).min(mean as f64 * 10.0) as u64
            }
        };
        Duration::from_millis(ms)
    }
}

impl FromStr for Latency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("latency {s:?}: expected fixed:MS, uniform:MIN-MAX or exp:MEAN");
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let num = |v: &str| v.trim().parse::<u64>().map_err(|_| bad());
        match kind {
            "fixed" => Ok(Latency::Fixed(num(value)?)),
            "exp" => Ok(Latency::Exponential(num(value)?)),
            "uniform" => {
                let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(bad());
                }
                Ok(Latency::Uniform(lo, hi))
            }
            _ => Err(bad()),
        }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// 500, 502 or 503.
    #[value(name = "5xx")]
    ServerError,
    /// Hold the request past the client's timeout.
    Timeout,
    /// Start answering, then break the connection.
    Reset,
}

/// What every route shares.
struct AppState {
    config: MockApiConfig,
    keys: HashMap<String, String>,
    /// Access tokens issued by `POST /auth/token`: the client id, and until when.
    tokens: dashmap::DashMap<String, (String, std::time::Instant)>,
    stats: Stats,
    controls: Controls,
}

/// A running emulator.
#[derive(Debug)]
pub struct MockApi {
    addr: SocketAddr,
    state: Arc<AppStateHandle>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps the state's Debug impl out of the public type.
struct AppStateHandle(Arc<AppState>);

impl std::fmt::Debug for AppStateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockApiState")
    }
}

impl MockApi {
    /// Binds `config.listen` and serves in the background.
    pub async fn start(config: MockApiConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            keys: config
                .keys
                .iter()
                .filter_map(|k| k.split_once(':'))
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            controls: Controls::new(config.record),
            tokens: dashmap::DashMap::new(),
            config,
            stats: Stats::default(),
        });
        let stop = CancellationToken::new();
        let app = routes::router(state.clone());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!("mock API failed: {e}");
                }
            }
        });
        Ok(MockApi {
            addr,
            state: Arc::new(AppStateHandle(state)),
            stop,
            task,
        })
    }

    /// Expires every access token issued so far: the next request with one gets 401.
    pub fn expire_tokens(&self) {
        self.state.0.tokens.clear();
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for `destination.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it saw so far.
    pub fn stats(&self) -> Snapshot {
        self.state.0.stats.snapshot()
    }

    /// Answers every request of `site_id` with `status`, its body echoing the
    /// caller's credentials as a careless API would (so a test can check they never
    /// reach a log or a dead letter); `None`: back to normal.
    pub fn refuse_site(&self, site_id: &str, status: Option<u16>) {
        self.state.0.controls.set_refuse(site_id, status);
    }

    /// Answers the next `count` requests of `site_id` 429 with `Retry-After`.
    pub fn throttle_site(&self, site_id: &str, count: usize, retry_after_s: u64) {
        self.state
            .0
            .controls
            .set_throttle(site_id, count, retry_after_s);
    }

    /// Adds `latency` to every request of `site_id` (on top of `--latency`).
    pub fn slow_site(&self, site_id: &str, latency: Duration) {
        self.state.0.controls.set_slow(site_id, latency);
    }

    /// Every request's latency from now on, instead of `--latency`.
    pub fn set_latency(&self, latency: Latency) {
        self.state.0.controls.set_latency(latency);
    }

    /// While stalled, requests are held unanswered.
    pub fn stall(&self, stalled: bool) {
        self.state.0.controls.set_stalled(stalled);
    }

    /// Every item accepted so far, in order (empty unless `record`).
    pub fn received(&self) -> Vec<Received> {
        self.state.0.controls.received()
    }

    /// Every request of `site_id` so far, in arrival order (empty unless `record`).
    pub fn arrivals(&self, site_id: &str) -> Vec<Arrival> {
        self.state.0.controls.arrivals(site_id)
    }

    /// Requests that arrived, answered or not, authenticated or not.
    pub fn started(&self) -> usize {
        self.state.0.controls.started_count()
    }

    /// The most requests held (latency, stall) at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.0.controls.max_in_flight()
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        // Hung `timeout` faults would hold a graceful shutdown: do not wait for them.
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Runs the emulator until `shutdown` is cancelled (the `sluice mock-api` command).
pub async fn run(config: MockApiConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let api = MockApi::start(config).await?;
    tracing::info!(addr = %api.addr(), "mock API listening; GET /stats for what it saw");
    shutdown.cancelled().await;
    api.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_specs_parse() {
        assert_eq!("fixed:20".parse(), Ok(Latency::Fixed(20)));
        assert_eq!("uniform:5-50".parse(), Ok(Latency::Uniform(5, 50)));
        assert_eq!("exp:30".parse(), Ok(Latency::Exponential(30)));
        assert!("uniform:50-5".parse::<Latency>().is_err());
        assert!("gauss:3".parse::<Latency>().is_err());
    }
}
