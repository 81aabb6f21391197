//! The limiter the delivery code calls: per workspace, the pause a 429 asked for, then
//! a global in-flight slot, then a token — from the fleet's Redis budget when that is
//! configured and reachable, else from this pod's pacer at its share of the limit.
//!
//! The slot is taken *before* the token and the request goes as soon as it has the
//! token, so a token is never held while other requests wait for slots: tokens cannot
//! pile up behind a saturated in-flight cap and go out together on top of a refilled
//! bucket. Waiting out a pause, and for the pacer to be ready, happens before the slot
//! is taken, so a throttled workspace holds no slot another one could use.
//!
//! Everything runs on tokio's clock, so a paused test clock drives it exactly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::adaptive::Learned;
use super::departure::{Departure, SendLog};
use super::fleet_store::{Fleet, FLEET_HEADROOM};
use super::lateness::Lateness;
use super::pacer::{Pace, Pacer, Ticket};
use super::share::Share;

/// How often a workspace whose share is zero looks again.
const ZERO_SHARE_RECHECK: Duration = Duration::from_millis(100);

/// One workspace's configured limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// The API workspace this limit belongs to (the fleet budget's key).
    pub site: String,
    /// Requests per second the API allows.
    pub per_second: f64,
    /// Requests that may go back to back after a quiet spell.
    pub burst: u32,
}

/// Held for the duration of one HTTP attempt: a slot under the global in-flight cap,
/// and the send's [`Departure`] (reported when the permit goes, if not before).
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    departure: Option<Departure>,
}

impl Permit {
    /// What the request body reports when the connection first reads it (`None` for
    /// a workspace without a limit).
    pub(crate) fn departure(&self) -> Option<Departure> {
        self.departure.clone()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(d) = &self.departure {
            d.now();
        }
    }
}

#[derive(Debug)]
struct State {
    pacer: Pacer,
    learned: Learned,
    /// Answers accepted over the last second (pod-local).
    accepted: VecDeque<Instant>,
    /// Accepted requests not yet reported to the fleet budget.
    unreported: u64,
    /// The fleet's accepted rate as of the last lease.
    fleet_accepted: f64,
    /// The fleet's last cut as this pod saw it (the compare-and-set token).
    fleet_cut: Option<u64>,
    /// How long sends waited between their token and their bytes leaving, lately.
    departures: Lateness,
}

#[derive(Debug)]
struct Workspace {
    rate: Rate,
    state: Arc<Mutex<State>>,
    /// Fleet slots leased and not yet used, in order.
    leased: tokio::sync::Mutex<VecDeque<Instant>>,
}

/// The limits of every workspace.
#[derive(Debug)]
pub struct Limiter {
    workspaces: HashMap<String, Workspace>,
    in_flight: Arc<Semaphore>,
    share: Arc<Share>,
    headroom: f64,
    fleet: Option<Arc<Fleet>>,
    origin: Instant,
    /// How late this process's timers fire lately (the pacer's jitter margin).
    lateness: Lateness,
}

/// What a workspace waits for before it may take a slot.
enum Wait {
    /// Nothing: go.
    Ready,
    /// Until then (a pause, or the pacer's next slot).
    Until(Instant),
}

impl Limiter {
    /// Limits for `workspaces` (id and limit), a global in-flight cap and the share of
    /// each limit used (`headroom`). Every pod has the whole limit until
    /// [`with_share`](Self::with_share) or [`with_fleet`](Self::with_fleet) says
    /// otherwise.
    pub fn new(
        workspaces: impl IntoIterator<Item = (String, Rate)>,
        max_in_flight: usize,
        headroom: f64,
    ) -> Self {
        let workspaces = workspaces
            .into_iter()
            .map(|(id, rate)| {
                let state = State {
                    pacer: Pacer::new(),
                    learned: Learned::new(rate.per_second),
                    accepted: VecDeque::new(),
                    unreported: 0,
                    fleet_accepted: 0.0,
                    fleet_cut: None,
                    departures: Lateness::new(Instant::now()),
                };
                let ws = Workspace {
                    rate,
                    state: Arc::new(Mutex::new(state)),
                    leased: tokio::sync::Mutex::new(VecDeque::new()),
                };
                (id, ws)
            })
            .collect();
        Limiter {
            workspaces,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            share: Arc::new(Share::fixed(1.0)),
            headroom,
            fleet: None,
            origin: Instant::now(),
            lateness: Lateness::new(Instant::now()),
        }
    }

    /// Paces each workspace at `share` of its limit (partition-share).
    pub(crate) fn with_share(mut self, share: Arc<Share>) -> Self {
        self.share = share;
        self
    }

    /// Takes tokens from the fleet's budget in Redis while it answers; the share is the
    /// fallback.
    pub(crate) fn with_fleet(mut self, fleet: Arc<Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The share the pacer uses (what the consumer's rebalance hooks update).
    pub fn share(&self) -> Arc<Share> {
        self.share.clone()
    }

    /// Waits until `workspace` may send one request: past any 429 pause, then its token
    /// with a global slot (never a slot held while waiting for the token). Returns how long it waited on the workspace's limit (pause
    /// and token, not the slot) and the permit to hold while the request runs.
    pub async fn acquire(&self, workspace: &str) -> (Duration, Permit) {
        let Some(ws) = self.workspaces.get(workspace) else {
            return (Duration::ZERO, self.slot(None).await);
        };
        let mut waited = Duration::ZERO;
        loop {
            // Before the slot: pauses and the pacer's next slot.
            let before = Instant::now();
            while let Wait::Until(at) = self.wait_before_slot(ws, Instant::now()) {
                self.sleep_until(at).await;
            }
            waited += before.elapsed();
            let token = Instant::now();
            let fleet = self.fleet.as_ref().filter(|f| f.is_up());
            // The global slot is taken only once the token is due (inside each): a
            // workspace waiting for its limit holds no slot another could use.
            let taken = match fleet {
                // Just back: pods still on partition-share may be sending, so this one
                // keeps within its share too until they cannot be.
                Some(fleet) if fleet.returning(Instant::now()) => match self.take_local(ws).await {
                    Some((_, _, slot)) => {
                        drop(slot);
                        self.take_from_fleet(ws, fleet).await
                    }
                    None => None,
                },
                Some(fleet) => self.take_from_fleet(ws, fleet).await,
                None => self.take_local(ws).await,
            };
            waited += token.elapsed();
            if let Some((ticket, due, slot)) = taken {
                let log: Arc<dyn SendLog> = ws.state.clone();
                let departure = Some(Departure::new(log, ticket, due));
                return (
                    waited,
                    Permit {
                        _slot: slot,
                        departure,
                    },
                );
            }
            // A 429 arrived meanwhile, or the fleet budget went away: start again.
        }
    }

    async fn slot(&self, departure: Option<Departure>) -> Permit {
        Permit {
            _slot: self.in_flight_slot().await,
            departure,
        }
    }

    async fn in_flight_slot(&self) -> OwnedSemaphorePermit {
        self.in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    fn wait_before_slot(&self, ws: &Workspace, now: Instant) -> Wait {
        let st = lock(&ws.state);
        let since = now - self.origin;
        if let Some(until) = st.learned.paused(since) {
            return Wait::Until(self.origin + until);
        }
        match &self.fleet {
            Some(f) if f.is_up() => return Wait::Ready,
            // Redis just went away: the fleet's last sends must leave the window first.
            Some(f) => {
                if let Some(from) = f.fallback_from().filter(|from| *from > now) {
                    return Wait::Until(from);
                }
            }
            None => {}
        }
        match st.pacer.ready_at(self.pace(ws, &st, now), now) {
            Some(at) if at > now => Wait::Until(at),
            Some(_) => Wait::Ready,
            None => Wait::Until(now + ZERO_SHARE_RECHECK),
        }
    }

    /// This pod's pace for `ws` at `now`: the learned rate times the share. A pod
    /// holding only a share keeps the fleet's 1% cross-pod margin too: each pod's pacer
    /// holds its own one-second windows, but the API's window sees several pods through
    /// different clocks and request latencies (a loaded CI run on Tansu once saw 101 in
    /// one second after a pod was killed).
    fn pace(&self, ws: &Workspace, st: &State, now: Instant) -> Pace {
        let share = self.share.get(now);
        Pace {
            per_second: st.learned.rate(now - self.origin) * share,
            burst: ws.rate.burst,
            headroom: if share < 1.0 {
                self.headroom * FLEET_HEADROOM
            } else {
                self.headroom
            },
            jitter: self.lateness.margin(now),
        }
    }

    /// Sleeps until `at`, noting how late the wake came.
    async fn sleep_until(&self, at: Instant) {
        tokio::time::sleep_until(at).await;
        self.lateness.woke(at, Instant::now());
    }

    /// A token from this pod's pacer, with a global in-flight slot. `None` if a pause
    /// began meanwhile.
    async fn take_local(&self, ws: &Workspace) -> Option<(Ticket, Instant, OwnedSemaphorePermit)> {
        loop {
            // The slot first, then the token at once, or neither while waiting for it.
            let slot = self.in_flight_slot().await;
            let at = {
                let mut st = lock(&ws.state);
                // Dated under the lock: the pacer's log stays in send order even when
                // a thread is preempted between reading the clock and taking the lock.
                let now = Instant::now();
                if st.learned.paused(now - self.origin).is_some() {
                    return None;
                }
                let pace = self.pace(ws, &st, now);
                match st.pacer.try_take(pace, now) {
                    Ok(ticket) => return Some((ticket, now, slot)),
                    Err(Some(at)) => at,
                    Err(None) => now + ZERO_SHARE_RECHECK,
                }
            };
            drop(slot);
            self.sleep_until(at).await;
        }
    }

    /// The API throttled a request of `workspace` sent at `sent_at` (429, or 503 with
    /// `Retry-After`): pause it, and learn from it once per congestion event — fleet-wide
    /// when the fleet budget is in use.
    pub async fn throttled(
        &self,
        workspace: &str,
        retry_after: Option<Duration>,
        sent_at: Instant,
    ) {
        let Some(ws) = self.workspaces.get(workspace) else {
            return;
        };
        let now = Instant::now();
        let fleet = self.fleet.as_ref().filter(|f| f.is_up());
        let (learned, seen) = {
            let mut st = lock(&ws.state);
            prune(&mut st.accepted, now);
            let accepted = match fleet {
                Some(_) => st.fleet_accepted + st.unreported as f64,
                // This pod accepts its share of what the fleet does.
                None => st.accepted.len() as f64 / self.share.get(now).max(0.05),
            };
            st.learned.throttled(
                now - self.origin,
                sent_at.saturating_duration_since(self.origin),
                retry_after,
                accepted,
            );
            (st.learned.clone(), st.fleet_cut)
        };
        if let Some(fleet) = fleet {
            let view = fleet.to_fleet(&learned, self.origin);
            if let Ok(true) = fleet.cut(&ws.rate.site, seen, &view).await {
                lock(&ws.state).fleet_cut = view.cut_at;
            }
        }
    }

    /// A request of `workspace` was accepted.
    pub fn succeeded(&self, workspace: &str) {
        if let Some(ws) = self.workspaces.get(workspace) {
            let now = Instant::now();
            let mut st = lock(&ws.state);
            prune(&mut st.accepted, now);
            st.accepted.push_back(now);
            st.unreported += 1;
        }
    }

    /// The workspace's learned rate (fleet-wide), requests per second.
    pub fn effective_rate(&self, workspace: &str) -> Option<f64> {
        let ws = self.workspaces.get(workspace)?;
        let since = Instant::now() - self.origin;
        Some(lock(&ws.state).learned.rate(since))
    }

    /// The share of each workspace's limit this pod uses right now: 1 while it takes
    /// tokens from the fleet's budget (which is exact), else its partition share.
    pub(crate) fn current_share(&self) -> f64 {
        if self.fleet.as_ref().is_some_and(|f| f.is_up()) {
            1.0
        } else {
            self.share.get(Instant::now())
        }
    }

    /// The workspaces' ids.
    pub fn workspaces(&self) -> impl Iterator<Item = &str> {
        self.workspaces.keys().map(String::as_str)
    }
}

fn prune(accepted: &mut VecDeque<Instant>, now: Instant) {
    while accepted
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
    {
        accepted.pop_front();
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SendLog for Mutex<State> {
    fn departed(&self, ticket: Ticket, due: Instant, at: Instant) {
        let mut st = lock(self);
        st.pacer.departed(ticket, at);
        st.departures.woke(due, at);
    }
}

mod fleet;

#[cfg(test)]
mod tests;
