//! What a caller holding the [`MockApi`](super::MockApi) handle can change while it
//! runs — refuse or throttle one site, slow one site down, stall every request — and
//! what it keeps for inspection: how many requests arrived and were in flight at once,
//! and, when asked to record (in-process only: it grows with the run), each request's
//! arrival and every item it accepted.
//!
//! The command line sets the emulator's behaviour for a whole run; these are the
//! controls a test turns in the middle of one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::Latency;

/// One item the emulator accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The Basic-auth user (the site id).
    pub site_id: String,
    /// The item (a v2 batch item or entity), or `{"v1": "METHOD ID", "body": …}` for a
    /// v1 call, or the Segment message.
    pub item: Value,
}

/// One request as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When.
    pub at: Instant,
    /// The status it was refused with before any work (a refusal or 429), or 0.
    pub refused: u16,
}

#[derive(Debug, Default)]
struct Behaviour {
    /// Every request of a site answered with this status.
    refuse: HashMap<String, u16>,
    /// The next requests of a site answered 429: (how many more, Retry-After seconds).
    throttle: HashMap<String, (usize, u64)>,
    /// Latency added to every request of a site.
    slow: HashMap<String, Duration>,
    /// Every request's latency, instead of `--latency`.
    latency: Option<Latency>,
}

/// The controls and what they keep.
#[derive(Debug)]
pub(super) struct Controls {
    behaviour: Mutex<Behaviour>,
    stalled: watch::Sender<bool>,
    record: bool,
    received: Mutex<Vec<Received>>,
    arrivals: Mutex<Vec<(String, Arrival)>>,
    started: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Controls {
    /// Nothing refused, throttled, slowed or stalled; accepted items kept if `record`.
    pub(super) fn new(record: bool) -> Self {
        Controls {
            behaviour: Mutex::default(),
            stalled: watch::channel(false).0,
            record,
            received: Mutex::default(),
            arrivals: Mutex::default(),
            started: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// A request arrived (before authentication).
    pub(super) fn started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    /// For an authenticated request of `site`: the refusal its controls ask for
    /// (status and Retry-After seconds).
    pub(super) fn refusal(&self, site: &str) -> Option<(u16, Option<u64>)> {
        let mut b = lock(&self.behaviour);
        if let Some(status) = b.refuse.get(site) {
            Some((*status, None))
        } else if let Some((left, seconds)) = b.throttle.get_mut(site).filter(|(n, _)| *n > 0) {
            *left -= 1;
            Some((429, Some(*seconds)))
        } else {
            None
        }
    }

    /// Notes, when recording, that a request of `site` arrived `at` and was refused
    /// with `refused` before any work (0: it went on).
    pub(super) fn arrived(&self, site: &str, at: Instant, refused: u16) {
        if !self.record {
            return;
        }
        lock(&self.arrivals).push((site.to_string(), Arrival { at, refused }));
    }

    /// A request's latency for `site`: the run's (`configured`, unless replaced), plus
    /// what the controls add for the site.
    pub(super) fn delay(&self, site: &str, configured: Latency) -> Duration {
        let b = lock(&self.behaviour);
        let extra = b.slow.get(site).copied().unwrap_or_default();
        b.latency.unwrap_or(configured).sample() + extra
    }

    /// Holds a request for `delay` and while stalled, counted as in flight meanwhile
    /// (until it ends or its client gives up and the handler is dropped).
    pub(super) async fn hold(&self, delay: Duration) {
        struct InFlight<'a>(&'a AtomicUsize);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _counted = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut stalled = self.stalled.subscribe();
        let _ = stalled.wait_for(|s| !*s).await;
    }

    /// Keeps accepted items, when recording.
    pub(super) fn accepted<'a>(&self, site: &str, items: impl IntoIterator<Item = &'a Value>) {
        if self.record {
            lock(&self.received).extend(items.into_iter().map(|item| Received {
                site_id: site.to_string(),
                item: item.clone(),
            }));
        }
    }

    pub(super) fn set_refuse(&self, site: &str, status: Option<u16>) {
        let mut b = lock(&self.behaviour);
        match status {
            Some(s) => b.refuse.insert(site.to_string(), s),
            None => b.refuse.remove(site),
        };
    }

    pub(super) fn set_throttle(&self, site: &str, count: usize, retry_after_s: u64) {
        lock(&self.behaviour)
            .throttle
            .insert(site.to_string(), (count, retry_after_s));
    }

    pub(super) fn set_slow(&self, site: &str, latency: Duration) {
        lock(&self.behaviour).slow.insert(site.to_string(), latency);
    }

    pub(super) fn set_latency(&self, latency: Latency) {
        lock(&self.behaviour).latency = Some(latency);
    }

    pub(super) fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    pub(super) fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    pub(super) fn arrivals(&self, site: &str) -> Vec<Arrival> {
        lock(&self.arrivals)
            .iter()
            .filter(|(s, _)| s == site)
            .map(|(_, a)| *a)
            .collect()
    }

    pub(super) fn started_count(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    pub(super) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
