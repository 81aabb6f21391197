//! What the mock API saw: requests by status, events accepted, duplicate event ids,
//! the busiest one-second window per workspace, re-deliveries and per-user order
//! violations (by the per-user `seq` that `sluice loadgen` puts in every event).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;

/// Ids kept per generation of [`Workspace::event_ids`] (~70 bytes each).
const IDS_PER_GENERATION: usize = 500_000;

/// Per-workspace bookkeeping.
#[derive(Debug, Default)]
struct Workspace {
    /// Arrival times of requests in the last second.
    window: VecDeque<Instant>,
    max_per_second: usize,
    requests: u64,
    throttled: u64,
    events: u64,
    dropped: u64,
    duplicates: u64,
    order_violations: u64,
    redelivered: u64,
    /// Ids of events without a user and a `seq` (those are told apart by them), in two
    /// generations of at most [`IDS_PER_GENERATION`]: a duplicate is seen within the
    /// last half to one million such events, and a run of any length stays bounded.
    event_ids: [HashSet<String>; 2],
    /// The `attributes.seq` values seen per user.
    seqs: HashMap<String, Seen>,
    /// When the first and the latest accepted events arrived, unix ms.
    first_accepted_ms: Option<u64>,
    last_accepted_ms: Option<u64>,
}

impl Workspace {
    /// Counts a duplicate if `id` was seen in the last two generations.
    fn seen_id(&mut self, id: &str) {
        if self.event_ids.iter().any(|ids| ids.contains(id)) {
            self.duplicates += 1;
            return;
        }
        if self.event_ids[0].len() >= IDS_PER_GENERATION {
            self.event_ids[1] = std::mem::take(&mut self.event_ids[0]);
        }
        self.event_ids[0].insert(id.to_string());
    }
}

/// The `seq` values one user's events arrived with: everything from 1 (where `sluice
/// loadgen` starts) up to `floor`, and the ones in `above` (first deliveries arrive in
/// order, so `above` stays small; a seq of 0 or below is kept there too).
#[derive(Debug, Default)]
struct Seen {
    floor: i64,
    above: BTreeSet<i64>,
    highest: i64,
}

impl Seen {
    /// Records `seq`: `false` if it had been seen before (a re-delivery).
    fn insert(&mut self, seq: i64) -> bool {
        if (1..=self.floor).contains(&seq) || !self.above.insert(seq) {
            return false;
        }
        while self.above.first() == Some(&(self.floor + 1)) {
            self.floor += 1;
            self.above.pop_first();
        }
        self.highest = self.highest.max(seq);
        true
    }
}

/// Everything the mock API counts.
#[derive(Debug, Default)]
pub(super) struct Stats {
    by_status: DashMap<u16, u64>,
    workspaces: DashMap<String, Mutex<Workspace>>,
    tokens_issued: std::sync::atomic::AtomicU64,
    tokens_refused: std::sync::atomic::AtomicU64,
}

/// One accepted event, as far as the statistics care.
#[derive(Debug)]
pub(super) struct Accepted<'a> {
    /// The person's identifier.
    pub user: Option<&'a str>,
    /// The event's dedup id, if it has one.
    pub event_id: Option<&'a str>,
    /// `attributes.seq` (or `properties.seq`), if present: the produced order.
    pub seq: Option<i64>,
}

/// A snapshot for `GET /stats`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Snapshot {
    /// Requests answered, by HTTP status.
    pub requests_by_status: BTreeMap<u16, u64>,
    /// Events accepted, over all workspaces.
    pub events_accepted: u64,
    /// Events answered 200 but thrown away over the limit (`--silent-throttle`).
    pub events_dropped: u64,
    /// Events whose id had been accepted before.
    pub duplicate_event_ids: u64,
    /// First deliveries that arrived with a lower `seq` than an earlier event of the same
    /// user.
    pub order_violations: u64,
    /// Events whose user and `seq` had arrived before (re-deliveries, identifies
    /// included, which carry no event id).
    pub redelivered_events: u64,
    /// When the first accepted event arrived (any workspace), unix ms: with
    /// `last_accepted_unix_ms`, a worker's delivery rate from its first request to its
    /// last.
    #[serde(default)]
    pub first_accepted_unix_ms: Option<u64>,
    /// When the latest accepted event arrived, unix ms.
    #[serde(default)]
    pub last_accepted_unix_ms: Option<u64>,
    /// Access tokens `POST /auth/token` issued.
    #[serde(default)]
    pub tokens_issued: u64,
    /// `POST /auth/token` requests refused (unknown client or wrong secret).
    #[serde(default)]
    pub tokens_refused: u64,
    /// Per workspace.
    pub workspaces: BTreeMap<String, WorkspaceSnapshot>,
}

/// One workspace in a [`Snapshot`].
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct WorkspaceSnapshot {
    /// Requests received.
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// The most requests seen in any one-second window.
    pub max_requests_per_second: usize,
    /// Events accepted.
    pub events_accepted: u64,
    /// Events thrown away over the limit (`--silent-throttle`).
    pub events_dropped: u64,
    /// Events whose id had been accepted before.
    pub duplicate_event_ids: u64,
    /// Per-user order violations.
    pub order_violations: u64,
    /// Re-deliveries.
    pub redelivered_events: u64,
}

impl Stats {
    /// Records a request's arrival; returns how many requests (this one included) the
    /// workspace sent in the last second.
    pub(super) fn arrive(&self, workspace: &str, now: Instant) -> usize {
        let entry = self.workspaces.entry(workspace.to_string()).or_default();
        let mut ws = entry.lock().unwrap_or_else(|e| e.into_inner());
        while ws
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            ws.window.pop_front();
        }
        ws.window.push_back(now);
        ws.requests += 1;
        ws.max_per_second = ws.max_per_second.max(ws.window.len());
        ws.window.len()
    }

    /// Counts an answer.
    pub(super) fn answered(&self, workspace: &str, status: u16) {
        *self.by_status.entry(status).or_default() += 1;
        if status == 429 {
            if let Some(ws) = self.workspaces.get(workspace) {
                ws.lock().unwrap_or_else(|e| e.into_inner()).throttled += 1;
            }
        }
    }

    /// Records the events of one request, in order: accepted, or — when `dropped`
    /// (over the limit under `--silent-throttle`) — answered 200 and thrown away.
    pub(super) fn accept<'a>(
        &self,
        workspace: &str,
        dropped: bool,
        events: impl IntoIterator<Item = Accepted<'a>>,
    ) {
        let entry = self.workspaces.entry(workspace.to_string()).or_default();
        let mut ws = entry.lock().unwrap_or_else(|e| e.into_inner());
        if dropped {
            ws.dropped += events.into_iter().count() as u64;
            return;
        }
        let before = ws.events;
        for event in events {
            ws.events += 1;
            // An event with a user and a seq is told apart by them (below); any other
            // by its id.
            if let (Some(id), false) = (event.event_id, event.user.is_some() && event.seq.is_some())
            {
                ws.seen_id(id);
            }
            // Per-user order is judged on first deliveries: a `seq` seen before is a
            // re-delivery (after a crash or a timeout; identifies carry no id, so this
            // is the only way to tell); a new one below the highest is out of order.
            if let (Some(user), Some(seq)) = (event.user, event.seq) {
                let seen = match ws.seqs.get_mut(user) {
                    Some(seen) => seen,
                    None => ws.seqs.entry(user.to_string()).or_default(),
                };
                let highest = seen.highest;
                if !seen.insert(seq) {
                    ws.redelivered += 1;
                    // The same user and seq: the same event, so its id again.
                    if event.event_id.is_some() {
                        ws.duplicates += 1;
                    }
                } else if seq < highest {
                    ws.order_violations += 1;
                }
            }
        }
        if ws.events > before {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            ws.first_accepted_ms.get_or_insert(now);
            ws.last_accepted_ms = Some(now);
        }
    }

    /// A consistent-enough copy for reporting.
    /// `POST /auth/token` issued a token.
    pub(super) fn token_issued(&self) {
        self.tokens_issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// `POST /auth/token` refused a client.
    pub(super) fn token_refused(&self) {
        self.tokens_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            requests_by_status: self
                .by_status
                .iter()
                .map(|e| (*e.key(), *e.value()))
                .collect(),
            tokens_issued: self
                .tokens_issued
                .load(std::sync::atomic::Ordering::Relaxed),
            tokens_refused: self
                .tokens_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Snapshot::default()
        };
        for entry in self.workspaces.iter() {
            let ws = entry.value().lock().unwrap_or_else(|e| e.into_inner());
            snap.events_accepted += ws.events;
            snap.events_dropped += ws.dropped;
            snap.duplicate_event_ids += ws.duplicates;
            snap.order_violations += ws.order_violations;
            snap.redelivered_events += ws.redelivered;
            snap.first_accepted_unix_ms = match (snap.first_accepted_unix_ms, ws.first_accepted_ms)
            {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            snap.last_accepted_unix_ms = snap.last_accepted_unix_ms.max(ws.last_accepted_ms);
            snap.workspaces.insert(
                entry.key().clone(),
                WorkspaceSnapshot {
                    requests: ws.requests,
                    throttled: ws.throttled,
                    max_requests_per_second: ws.max_per_second,
                    events_accepted: ws.events,
                    events_dropped: ws.dropped,
                    duplicate_event_ids: ws.duplicates,
                    order_violations: ws.order_violations,
                    redelivered_events: ws.redelivered,
                },
            );
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_duplicates_and_order_are_counted() {
        let stats = Stats::default();
        let t0 = Instant::now();
        for i in 0..5 {
            stats.arrive("a", t0 + Duration::from_millis(i * 100));
        }
        // At 1.25 s only the arrivals at 0.3 s and 0.4 s are still inside the window.
        assert_eq!(stats.arrive("a", t0 + Duration::from_millis(1250)), 3);
        let ev = |user, id, seq| Accepted {
            user: Some(user),
            event_id: Some(id),
            seq: Some(seq),
        };
        stats.accept(
            "a",
            false,
            [
                ev("u", "1", 1),
                ev("u", "2", 2),
                ev("u", "2", 3),
                ev("u", "3", 1),
                ev("u", "5", 5),
                ev("u", "4", 4),
            ],
        );
        // Over the limit under --silent-throttle: counted as dropped, nothing else.
        stats.accept("a", true, [ev("u", "4", 0)]);
        let snap = stats.snapshot();
        let a = &snap.workspaces["a"];
        assert_eq!(a.events_dropped, 1);
        assert_eq!(a.max_requests_per_second, 5);
        // seq 1 again is a re-delivery, not out of order; 4 after 5 is.
        assert_eq!(
            (
                a.events_accepted,
                a.duplicate_event_ids,
                a.redelivered_events,
                a.order_violations
            ),
            (6, 1, 1, 1)
        );
    }

    #[test]
    fn a_seq_of_zero_is_a_first_delivery_the_first_time() {
        let stats = Stats::default();
        let ev = |seq| Accepted {
            user: Some("u"),
            event_id: None,
            seq: Some(seq),
        };
        stats.accept("a", false, [ev(0), ev(200), ev(0), ev(400)]);
        let a = &stats.snapshot().workspaces["a"];
        assert_eq!((a.redelivered_events, a.order_violations), (1, 0));
    }

    /// A soak runs for hours: the ids of events without a `seq` are kept in two
    /// bounded generations (they grew by ~70 bytes an event, for ever), and a duplicate
    /// within the last generation is still counted.
    #[test]
    fn ids_are_remembered_in_bounded_generations() {
        let stats = Stats::default();
        fn ev(id: &str) -> Accepted<'_> {
            Accepted {
                user: None,
                event_id: Some(id),
                seq: None,
            }
        }
        let ids: Vec<String> = (0..IDS_PER_GENERATION * 2 + 10)
            .map(|i| i.to_string())
            .collect();
        stats.accept("a", false, ids.iter().map(|id| ev(id)));
        stats.accept("a", false, [ev(&ids[ids.len() - 1]), ev("new")]);
        let kept: usize = {
            let ws = stats.workspaces.get("a").unwrap();
            let ws = ws.lock().unwrap();
            ws.event_ids.iter().map(HashSet::len).sum()
        };
        assert!(kept <= 2 * IDS_PER_GENERATION, "{kept} ids kept");
        assert_eq!(stats.snapshot().workspaces["a"].duplicate_event_ids, 1);
    }
}
