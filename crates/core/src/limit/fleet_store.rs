//! The fleet's one budget per workspace, held in Redis (`limits.mode = "redis"`).
//!
//! One hash per API workspace (`{prefix}:{site_id}`) holds the GCRA's theoretical
//! arrival time on Redis' clock and what the fleet has learned from 429s. A Lua script
//! hands out *leases*: up to a few consecutive slots on the fleet's ideal timeline,
//! never more than a short horizon ahead, so most requests need no round trip and two
//! pods never get the same slot. A pod sends on each slot it holds, or drops it when it
//! woke too late for it ([`LATE_LIMIT`]): a slot used late could put one request too
//! many in the API's window. A send that leaves late after its slot (waiting for the
//! core) would do the same beside another pod's punctual one, so every lease reports
//! this pod's recent worst wait and the script spaces all slots by the fleet's largest
//! ([`Spacing`]).
//!
//! What is learned from a 429 is written back by a compare-and-set script, so a
//! congestion event seen by several pods cuts the fleet's rate once. governor's state
//! cannot be shared this way (its clock is process-relative): the timeline here is
//! Redis' `TIME`.
//!
//! Any Redis error or a call slower than [`CALL_TIMEOUT`] marks the fleet budget
//! unavailable: the limiter falls back to partition-share at once, and a probe brings
//! it back when Redis answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use tokio::time::Instant;

use super::adaptive::Learned;
use crate::metrics::Metrics;

/// Longest a Redis call may take before the limiter falls back.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How late after its slot a leased send may still go.
pub(crate) const LATE_LIMIT: Duration = Duration::from_millis(4);
/// Share of the pacer's timeline the fleet uses: the local window log guards one pod's
/// sends exactly, but across pods only the timeline does, so it leaves 1% more room for
/// the jitter between pods' sends and the API's clock.
pub(crate) const FLEET_HEADROOM: f64 = 0.99;
/// How long the fleet remembers a pod's margin: one to two of these periods, as the pod
/// remembers the waits it came from ([`super::lateness::MEMORY`]).
pub(crate) const MARGIN_MEMORY: Duration = super::lateness::MEMORY;
/// Most slots one lease asks for.
pub(crate) const LEASE_SLOTS: u32 = 4;
/// How often an unavailable Redis is tried again.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Longest a lease reaches ahead.
pub(crate) const MAX_HORIZON: Duration = Duration::from_millis(250);
/// After Redis is lost, how long a pod waits before pacing on its own: the API's
/// window plus the longest lease, so the fleet's last leased sends have left every
/// window its partition-share sends fall in.
pub(crate) const FALLBACK_AFTER: Duration = Duration::from_millis(1_250);
/// After Redis is back, how long a pod keeps its partition-share pace *as well*: the
/// API's window plus one probe period, by when every pod has seen Redis back and its
/// partition-share-only sends have left the window.
pub const RETURN_OVERLAP: Duration = Duration::from_millis(1_500);

/// Reserves up to ARGV[2] slots apart by `ARGV[1]` µs plus the fleet's margin over
/// ARGV[6] slots, starting at the TAT (or now), no further ahead than ARGV[3] µs;
/// counts ARGV[4] accepted requests into a per-second tally. The fleet's margin is the
/// largest ARGV[5] (µs) any pod reported in this period of ARGV[7] µs or the last one
/// (so each report counts for one to two periods). Returns granted
/// count, first slot and Redis' now (µs), the learned fields, the fleet's accepted
/// requests over the last second, and the spacing used (µs).
const LEASE: &str = include_str!("fleet_store/lease.lua");

/// Extends the pause to ARGV[6]; if the fleet's last cut is still ARGV[1] (this pod's
/// view), writes the new learned rate. Returns 1 if it did.
const CUT: &str = include_str!("fleet_store/cut.lua");

/// A fleet-wide budget could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum FleetStoreError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer within [`CALL_TIMEOUT`].
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The script's answer was not what this version writes.
    #[error("redis: unexpected answer from the lease script: {0}")]
    Answer(String),
}

/// How a pod asks the fleet to space the slots of one workspace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing {
    /// The interval between two slots on the ideal timeline (the limit, with the
    /// fleet's headroom).
    pub interval: Duration,
    /// How late after their slot this pod's sends left lately (their token to their
    /// bytes leaving, [`super::departure`]). The fleet spaces every pod's slots by
    /// the largest margin any pod reported lately: the API's window sees one pod's
    /// late request and another pod's punctual one a window of slots later, so the
    /// slots must be a window *plus that lateness* apart.
    pub margin: Duration,
    /// Slots in one window (the limit as a count): the margin is spread over them.
    pub per_window: u32,
}

/// What one lease call brought back, on this pod's clock.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The slots granted, in order (possibly none: the fleet's timeline is full).
    pub slots: Vec<Instant>,
    /// When to ask again if none were granted.
    pub retry_at: Instant,
    /// The fleet's learned state.
    pub learned: FleetLearned,
    /// Requests the fleet had accepted over the last second.
    pub accepted_per_s: f64,
    /// The spacing of the slots granted: the interval asked for plus the fleet's
    /// margin spread over a window.
    pub interval: Duration,
}

/// The learned state as the fleet shares it, in Redis' time (µs since the epoch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetLearned {
    /// Rate set by the last cut.
    pub base: Option<f64>,
    /// When, as Redis wrote it (the compare-and-set token).
    pub cut_at: Option<u64>,
    /// Hold before probing, µs.
    pub hold: Option<u64>,
    /// Accepted rate measured at the last cut.
    pub ceiling: Option<f64>,
    /// Pause end, µs.
    pub paused_until: Option<u64>,
}

/// A pod's link to the fleet's budgets.
pub struct Fleet {
    conn: ConnectionManager,
    prefix: String,
    lease: Script,
    cut: Script,
    up: AtomicBool,
    metrics: Metrics,
    /// Redis' clock minus this pod's (tokio's), µs, from the last call.
    offset_us: std::sync::atomic::AtomicI64,
    origin: Instant,
    /// When Redis was last lost, and last came back.
    changed: std::sync::Mutex<(Option<Instant>, Option<Instant>)>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects lazily to `url` (a worker starts while Redis is away, on the fallback)
    /// and starts the probe that notices Redis coming back.
    pub fn connect(
        url: &str,
        prefix: &str,
        metrics: Metrics,
    ) -> Result<Arc<Self>, FleetStoreError> {
        Self::connect_trusting(url, None, prefix, metrics)
    }

    /// As [`connect`](Self::connect); a `rediss://` server's certificate is checked
    /// against `ca` (PEM) instead of the system's roots when given.
    pub fn connect_trusting(
        url: &str,
        ca: Option<Vec<u8>>,
        prefix: &str,
        metrics: Metrics,
    ) -> Result<Arc<Self>, FleetStoreError> {
        let client = match ca {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let fleet = Arc::new(Fleet {
            conn,
            prefix: prefix.to_string(),
            lease: Script::new(LEASE),
            cut: Script::new(CUT),
            up: AtomicBool::new(true),
            metrics,
            offset_us: std::sync::atomic::AtomicI64::new(0),
            origin: Instant::now(),
            changed: std::sync::Mutex::new((None, None)),
        });
        tokio::spawn(probe(Arc::downgrade(&fleet)));
        Ok(fleet)
    }

    /// Whether the fleet budget is in use (Redis answered last time).
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// While Redis is away: when this pod may start pacing on its own.
    pub(crate) fn fallback_from(&self) -> Option<Instant> {
        let (down, _) = *self.changed.lock().unwrap_or_else(|e| e.into_inner());
        down.map(|d| d + FALLBACK_AFTER)
    }

    /// Whether Redis came back so recently that pods still on partition-share may be
    /// sending: then a send needs a token from both.
    pub fn returning(&self, now: Instant) -> bool {
        let (_, back) = *self.changed.lock().unwrap_or_else(|e| e.into_inner());
        back.is_some_and(|b| now < b + RETURN_OVERLAP)
    }

    fn set_up(&self, up: bool) -> bool {
        let was = self.up.swap(up, Ordering::AcqRel);
        if was != up {
            let mut changed = self.changed.lock().unwrap_or_else(|e| e.into_inner());
            if up {
                changed.1 = Some(Instant::now());
            } else {
                changed.0 = Some(Instant::now());
            }
        }
        was != up
    }

    /// Asks for up to `want` slots spaced as `spacing` (widened by the fleet's margin),
    /// at most `horizon` ahead, reporting `accepted` requests since the last call.
    pub async fn lease(
        &self,
        site: &str,
        spacing: Spacing,
        want: u32,
        horizon: Duration,
        accepted: u64,
    ) -> Result<Lease, FleetStoreError> {
        let key = format!("{}:{}", self.prefix, site);
        let asked = Instant::now();
        let mut conn = self.conn.clone();
        let call = async {
            self.lease
                .key(&key)
                .arg(spacing.interval.as_micros().max(1) as u64)
                .arg(want.max(1))
                .arg(horizon.as_micros() as u64)
                .arg(accepted)
                .arg(spacing.margin.as_micros() as u64)
                .arg(spacing.per_window.max(1))
                .arg((MARGIN_MEMORY.as_micros()) as u64)
                .invoke_async::<Vec<String>>(&mut conn)
                .await
        };
        let answer = self.timed(call).await?;
        let answered = Instant::now();
        let parse = |i: usize| answer.get(i).and_then(|s| s.parse::<f64>().ok());
        let (Some(n), Some(first), Some(now)) = (parse(0), parse(1), parse(2)) else {
            return Err(FleetStoreError::Answer(format!("{answer:?}")));
        };
        // Redis' clock read halfway through the call.
        let mid = asked + (answered - asked) / 2;
        let local_mid = mid.saturating_duration_since(self.origin).as_micros() as i64;
        self.offset_us
            .store(now as i64 - local_mid, Ordering::Release);
        let first_local = self.local(first as u64);
        let Some(interval) = parse(9) else {
            return Err(FleetStoreError::Answer(format!("{answer:?}")));
        };
        let interval = Duration::from_micros(interval as u64).max(Duration::from_micros(1));
        let slots = (0..n as u32).map(|i| first_local + interval * i).collect();
        let learned = FleetLearned {
            base: parse(3),
            cut_at: parse(4).map(|v| v as u64),
            hold: parse(5).map(|v| v as u64),
            ceiling: parse(6),
            paused_until: parse(7).map(|v| v as u64),
        };
        Ok(Lease {
            slots,
            retry_at: first_local.checked_sub(horizon).unwrap_or(first_local),
            learned,
            accepted_per_s: parse(8).unwrap_or(0.0),
            interval,
        })
    }

    /// Writes what this pod learned from a 429, if the fleet's last cut is still the
    /// one this pod saw (`seen_cut_at`). Returns whether it was written.
    pub async fn cut(
        &self,
        site: &str,
        seen_cut_at: Option<u64>,
        learned: &FleetLearned,
    ) -> Result<bool, FleetStoreError> {
        let key = format!("{}:{}", self.prefix, site);
        let mut conn = self.conn.clone();
        let text = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let call = async {
            self.cut
                .key(&key)
                .arg(text(seen_cut_at))
                .arg(learned.base.unwrap_or_default().to_string())
                .arg(text(learned.cut_at))
                .arg(text(learned.hold))
                .arg(learned.ceiling.unwrap_or_default().to_string())
                .arg(learned.paused_until.unwrap_or_default().to_string())
                .invoke_async::<i64>(&mut conn)
                .await
        };
        Ok(self.timed(call).await? == 1)
    }

    /// Runs one Redis call under [`CALL_TIMEOUT`]; a failure switches to the fallback.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetStoreError> {
        let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => FleetStoreError::Redis(e),
            Err(_) => FleetStoreError::Timeout(CALL_TIMEOUT),
        };
        if self.set_up(false) {
            self.metrics.limiter_fallback(&result);
        }
        Err(result)
    }

    /// A Redis time (µs since the epoch) on this pod's clock.
    pub fn local(&self, redis_us: u64) -> Instant {
        let local = redis_us as i64 - self.offset_us.load(Ordering::Acquire);
        self.origin + Duration::from_micros(local.max(0) as u64)
    }

    /// This pod's instant in Redis time (µs since the epoch).
    pub(crate) fn remote(&self, local: Instant) -> u64 {
        let us = local.saturating_duration_since(self.origin).as_micros() as i64;
        (us + self.offset_us.load(Ordering::Acquire)).max(0) as u64
    }

    /// The fleet's learned state, in this pod's terms.
    pub(crate) fn to_local(
        &self,
        fleet: &FleetLearned,
        configured: f64,
        origin: Instant,
    ) -> Learned {
        let since = |us: u64| self.local(us).saturating_duration_since(origin);
        let mut l = Learned::new(configured);
        if let (Some(base), Some(cut_at)) = (fleet.base, fleet.cut_at) {
            l.base = base.min(configured);
            l.cut_at = Some(since(cut_at));
            l.hold = Duration::from_micros(fleet.hold.unwrap_or_default());
            l.ceiling = fleet.ceiling.unwrap_or(base);
        }
        l.paused_until = fleet.paused_until.filter(|p| *p > 0).map(since);
        l
    }

    /// This pod's learned state in the fleet's terms.
    pub(crate) fn to_fleet(&self, learned: &Learned, origin: Instant) -> FleetLearned {
        let at = |d: Duration| self.remote(origin + d);
        FleetLearned {
            base: learned.cut_at.map(|_| learned.base),
            cut_at: learned.cut_at.map(at),
            hold: learned.cut_at.map(|_| learned.hold.as_micros() as u64),
            ceiling: learned.cut_at.map(|_| learned.ceiling),
            paused_until: learned.paused_until.map(at),
        }
    }
}

/// While Redis is unavailable, pings it every [`PROBE_EVERY`]; marks it back up when it
/// answers. Ends with the fleet.
async fn probe(fleet: std::sync::Weak<Fleet>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(fleet) = fleet.upgrade() else { return };
        if fleet.is_up() {
            continue;
        }
        let mut conn = fleet.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, ping).await {
            if fleet.set_up(true) {
                fleet.metrics.limiter_fleet_back();
            }
        }
    }
}
