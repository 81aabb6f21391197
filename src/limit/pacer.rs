//! When the next request of one workspace may go: GCRA against the ideal timeline,
//! plus a log of the sends of the last window. Pure state: callers pass the time in.
//!
//! Two rules, both needed:
//! - **Theoretical arrival time.** While requests keep coming, each send moves the TAT
//!   one interval on from where it *was*, not from "now": lateness of the timer that
//!   woke a waiter (up to the catch-up, two intervals but 5–20 ms) is won back, so
//!   nothing is lost to timer granularity. A request after a quiet spell starts from
//!   now (plus the burst tolerance), as plain GCRA does.
//! - **Window log.** Winning lateness back can put two sends closer than one interval.
//!   The log of the last `L` send instants guarantees that no window of `W / headroom`
//!   holds more than `L` sends, where `L` per `W` is the limit (100 per 1 s at 100/s;
//!   1 per 2 s at 0.5/s). So a strict sliding-window limiter on the API's side never
//!   sees one request too many, whatever the burst or the lateness.
//!
//! A send is logged when its token is handed out, then re-dated when its bytes leave
//! ([`Pacer::departed`]): the API counts arrivals, and between the token and the write
//! the request waits for the scheduler (milliseconds on a starved core). The window is
//! checked against the later of the two, so that wait cannot squeeze two sends closer
//! at the API than they were allowed to go.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Bounds of the lateness won back: two intervals, but at least the first and at
/// most the second.
pub const CATCH_UP: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(20));

/// The pace one workspace is held to right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Requests per second allowed (this pod's part of the workspace's limit). Zero
    /// means none may go.
    pub per_second: f64,
    /// Requests that may go back to back after a quiet spell.
    pub burst: u32,
    /// Share of the limit used (0 < headroom ≤ 1): the window the log checks is
    /// `W / headroom`, a guard against jitter between our clock and the API's.
    pub headroom: f64,
    /// Added to that window: how late this process has been running lately
    /// ([`super::lateness`]), so sends whose tokens were a window apart still arrive a
    /// window apart when the scheduler delays one of them by up to this much.
    pub jitter: Duration,
}

impl Pace {
    /// The limit as a count per window: `(L, W)`, e.g. (100, 1 s) or (1, 2 s).
    pub fn window(&self) -> (usize, Duration) {
        if self.per_second >= 1.0 {
            // A strict window admits whole requests only: 37.5/s allows 37 per second.
            (
                (self.per_second + 1e-9).floor() as usize,
                Duration::from_secs(1),
            )
        } else {
            // A rate so low its window overflows a Duration (or any clock) waits
            // the longest window instead: never a panic in the delivery path.
            let window = Duration::try_from_secs_f64(1.0 / self.per_second).unwrap_or(MAX_WINDOW);
            (1, window.min(MAX_WINDOW))
        }
    }

    /// The interval between two sends on the ideal timeline.
    pub fn interval(&self) -> Duration {
        self.timeline().2
    }

    /// The guarded window and the interval between two sends on the ideal timeline.
    fn timeline(&self) -> (usize, Duration, Duration) {
        let (count, window) = self.window();
        let guarded = window.div_f64(self.headroom.clamp(1e-3, 1.0)) + self.jitter;
        (count, guarded, guarded / count as u32)
    }
}

/// The longest a pace ever waits between two sends (a rate below one an hour,
/// e.g. a fleet share of an already tiny limit, waits this long).
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// One workspace's pacing state.
#[derive(Debug, Default, Clone)]
pub struct Pacer {
    /// Theoretical arrival time of the next request on the ideal timeline.
    tat: Option<Instant>,
    /// Send instants of (at least) the last guarded window, oldest first: when the
    /// token went, or later when the request's bytes left. Never decreasing.
    sent: VecDeque<Instant>,
    /// The [`Ticket`] of `sent`'s first entry.
    first: u64,
}

/// Names one logged send, to re-date it when its bytes leave.
pub type Ticket = u64;

impl Pacer {
    /// A pacer with no history.
    pub fn new() -> Self {
        Pacer::default()
    }

    /// Takes a send slot at `now` under `pace`, or says when to ask again (`None`:
    /// the pace allows nothing at all).
    pub fn try_take(&mut self, pace: Pace, now: Instant) -> Result<Ticket, Option<Instant>> {
        let earliest = self.ready_at(pace, now).ok_or(None)?;
        if earliest > now {
            return Err(Some(earliest));
        }
        let (count, window, interval) = pace.timeline();
        let catch_up = (interval * 2).clamp(CATCH_UP.0, CATCH_UP.1);
        // Busy if the last send was about one interval ago: then the timeline goes on
        // from the TAT (late wakes won back); after a quiet spell, from now.
        let busy = self
            .sent
            .back()
            .is_some_and(|last| now.saturating_duration_since(*last) <= interval + catch_up);
        while self.sent.len() >= count
            || self
                .sent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.pop();
        }
        let from = if busy { now - catch_up } else { now };
        let base = self.tat.map_or(from, |tat| tat.max(from));
        self.tat = Some(base + interval);
        Ok(self.push(now))
    }

    /// The earliest instant (`now` or later) a send may go under `pace`, without
    /// taking it; `None` while the pace allows nothing.
    pub fn ready_at(&self, pace: Pace, now: Instant) -> Option<Instant> {
        if !(pace.per_second > 0.0 && pace.per_second.is_finite()) {
            return None;
        }
        let (count, window, interval) = pace.timeline();
        let tolerance = interval * pace.burst.saturating_sub(1);
        let mut earliest = now;
        if let Some(tat) = self.tat {
            earliest = earliest.max(tat.checked_sub(tolerance).unwrap_or(tat));
        }
        if self.sent.len() >= count {
            earliest = earliest.max(self.sent[self.sent.len() - count] + window);
        }
        Some(earliest)
    }

    /// Records a send made on a slot granted elsewhere (the shared limiter), so the
    /// local window stays true if this pod falls back to pacing alone.
    pub fn record(&mut self, now: Instant) -> Ticket {
        if self.sent.len() >= 100_000 {
            self.pop();
        }
        self.push(now)
    }

    /// The send `ticket` left at `at`: its entry, and any later one dated before
    /// `at`, move to `at` (later entries only ever move later, so the log stays in
    /// order and no window is judged emptier than it was). A ticket already out of
    /// the log is ignored.
    pub fn departed(&mut self, ticket: Ticket, at: Instant) {
        let Some(from) = ticket.checked_sub(self.first) else {
            return;
        };
        for sent in self.sent.iter_mut().skip(from as usize) {
            if *sent >= at {
                break;
            }
            *sent = at;
        }
    }

    fn push(&mut self, now: Instant) -> Ticket {
        // In order even if `now` is older than a re-dated entry.
        let at = self.sent.back().map_or(now, |last| now.max(*last));
        self.sent.push_back(at);
        self.first + self.sent.len() as u64 - 1
    }

    fn pop(&mut self) {
        if self.sent.pop_front().is_some() {
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(per_second: f64, burst: u32) -> Pace {
        Pace {
            per_second,
            burst,
            headroom: 0.995,
            jitter: Duration::ZERO,
        }
    }

    #[test]
    fn a_vanishing_rate_waits_the_longest_window_instead_of_panicking() {
        let now = Instant::now();
        for rate in [1e-300, f64::MIN_POSITIVE, 1e-9] {
            let mut pacer = Pacer::new();
            assert_eq!(pace(rate, 1).window(), (1, MAX_WINDOW));
            assert!(
                pacer.try_take(pace(rate, 1), now).is_ok(),
                "the first send goes"
            );
            let next = pacer.ready_at(pace(rate, 1), now).unwrap();
            assert!(next > now + MAX_WINDOW / 2 && next <= now + MAX_WINDOW * 2);
        }
    }

    /// Greedy senders that always want to send, woken by a timer that fires
    /// `late(i)` after the due time. Returns the send instants (µs from start).
    fn drive(pace: Pace, seconds: u64, late: impl Fn(usize) -> Duration) -> Vec<u64> {
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let mut pacer = Pacer::new();
        let mut now = start;
        let mut sends = Vec::new();
        let mut wakes = 0;
        while now < end {
            match pacer.try_take(pace, now) {
                Ok(_) => sends.push((now - start).as_micros() as u64),
                Err(Some(at)) => {
                    wakes += 1;
                    now = at + late(wakes);
                }
                Err(None) => unreachable!("a positive rate"),
            }
        }
        sends
    }

    fn busiest_window(sends: &[u64], window_us: u64) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..sends.len() {
            while sends[hi] - sends[lo] >= window_us {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn late_timers_are_won_back_and_no_one_second_window_goes_over() {
        for rate in [10.0, 100.0, 1000.0] {
            for burst in [1, 2] {
                // Timers fire 0–3 ms late, in a repeating pattern.
                let sends = drive(pace(rate, burst), 30, |i| {
                    Duration::from_micros((i as u64 * 1_237) % 3_000)
                });
                let limit = rate as usize;
                assert!(
                    busiest_window(&sends, 1_000_000) <= limit,
                    "{rate}/s burst {burst}: {} in one second",
                    busiest_window(&sends, 1_000_000)
                );
                let used = sends.len() as f64 / (rate * 30.0);
                assert!(
                    used >= 0.99,
                    "{rate}/s burst {burst}: used {:.2}%",
                    used * 100.0
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timers_late_by_two_milliseconds_cost_nothing() {
        // Plain GCRA (next = max(TAT, now) + interval) would send one request every
        // 12 ms here: 830 in 10 s.
        let won = drive(pace(100.0, 1), 10, |_| Duration::from_millis(2));
        assert!(won.len() >= 990, "{}", won.len());
        assert!(busiest_window(&won, 1_000_000) <= 100);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_delayed_by_up_to_the_jitter_still_arrive_within_the_limit() {
        // Each request reaches the API 0–15 ms after its token (scheduler delay on a
        // starved core), in a sawtooth that delays the first of every 51 sends most
        // and the last least: the worst case for a strict window of 50.
        for burst in [1, 3] {
            let jitter = Duration::from_millis(15);
            let delay = |i: usize| 15_000 - (i % 51) as u64 * 300;
            let arrivals = |p: Pace| {
                let mut a: Vec<u64> =
                    drive(p, 20, |i| Duration::from_micros((i as u64 * 1_237) % 3_000))
                        .iter()
                        .enumerate()
                        .map(|(i, t)| t + delay(i))
                        .collect();
                a.sort_unstable();
                a
            };
            let without = arrivals(pace(50.0, burst));
            assert!(
                busiest_window(&without, 1_000_000) > 50,
                "the delays are enough to break a limit paced without the margin"
            );
            let with = arrivals(Pace {
                jitter,
                ..pace(50.0, burst)
            });
            assert!(
                busiest_window(&with, 1_000_000) <= 50,
                "burst {burst}: {} arrivals in one second",
                busiest_window(&with, 1_000_000)
            );
            // The margin costs its share of the window and no more.
            assert!(with.len() as f64 >= 50.0 * 20.0 * 0.97, "{}", with.len());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sends_re_dated_when_their_bytes_leave_arrive_within_the_limit() {
        // As above, each request leaves 0–15 ms after its token, the worst sawtooth, but
        // no jitter margin: each departure is reported when it happens instead.
        let delay = |i: usize| Duration::from_micros(15_000 - (i % 51) as u64 * 300);
        let run = |report: bool| {
            let p = pace(50.0, 3);
            let start = Instant::now();
            let mut pacer = Pacer::new();
            let mut leaving: Vec<(Instant, Ticket)> = Vec::new();
            let mut arrivals = Vec::new();
            let mut now = start;
            while now < start + Duration::from_secs(20) {
                leaving.retain(|&(at, ticket)| {
                    if at <= now && report {
                        pacer.departed(ticket, at);
                    }
                    at > now
                });
                match pacer.try_take(p, now) {
                    Ok(ticket) => {
                        let at = now + delay(arrivals.len());
                        arrivals.push((at - start).as_micros() as u64);
                        leaving.push((at, ticket));
                    }
                    Err(Some(at)) => {
                        let next_departure = leaving.iter().map(|l| l.0).min();
                        now = next_departure.map_or(at, |d| d.min(at)).max(now);
                        if now < at && next_departure.is_none() {
                            now = at;
                        }
                    }
                    Err(None) => unreachable!("a positive rate"),
                }
            }
            arrivals.sort_unstable();
            arrivals
        };
        let unreported = run(false);
        assert!(
            busiest_window(&unreported, 1_000_000) > 50,
            "the delays are enough to break a limit dated at the token"
        );
        let reported = run(true);
        assert!(
            busiest_window(&reported, 1_000_000) <= 50,
            "{} arrivals in one second",
            busiest_window(&reported, 1_000_000)
        );
        assert!(
            reported.len() as f64 >= 50.0 * 20.0 * 0.97,
            "{}",
            reported.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_departure_moves_later_sends_with_it_and_an_old_ticket_is_ignored() {
        let mut pacer = Pacer::new();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let p = pace(2.0, 3);
        let a = pacer.try_take(p, t0).unwrap();
        let b = pacer.try_take(p, ms(1)).unwrap();
        // `a` left at 5 ms, after `b`'s token: both count from 5 ms on.
        pacer.departed(a, ms(5));
        assert_eq!(pacer.sent, [ms(5), ms(5)]);
        pacer.departed(b, ms(4));
        assert_eq!(pacer.sent, [ms(5), ms(5)], "never earlier");
        // The window of 2 per second counts from the departures.
        let ready = pacer.ready_at(p, ms(6)).unwrap();
        assert!(ready >= ms(5) + Duration::from_secs(1), "{:?}", ready - t0);
        for _ in 0..3 {
            pacer.record(ms(2_000));
        }
        pacer.departed(a, ms(3_000));
        assert!(pacer.sent.iter().all(|&t| t <= ms(3_000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_spell_allows_the_burst_and_no_more() {
        let mut pacer = Pacer::new();
        let now = Instant::now();
        let p = pace(100.0, 3);
        for _ in 0..3 {
            assert!(pacer.try_take(p, now).is_ok());
        }
        assert!(matches!(pacer.try_take(p, now), Err(Some(_))));
        // Long after, the burst is back, not the whole idle time's worth.
        let later = now + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(pacer.try_take(p, later).is_ok());
        }
        assert!(matches!(pacer.try_take(p, later), Err(Some(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_rates_and_a_zero_rate() {
        let mut pacer = Pacer::new();
        let now = Instant::now();
        let half = pace(0.5, 2);
        assert_eq!(half.window(), (1, Duration::from_secs(2)));
        assert!(pacer.try_take(half, now).is_ok());
        // Burst 2 cannot put two requests in one 2-second window of a 0.5/s limit.
        let Err(Some(at)) = pacer.try_take(half, now) else {
            panic!("must wait")
        };
        assert!(at - now >= Duration::from_secs(2));
        assert_eq!(pacer.try_take(pace(0.0, 1), now), Err(None));
        assert_eq!(pace(37.5, 1).window(), (37, Duration::from_secs(1)));
    }
}
