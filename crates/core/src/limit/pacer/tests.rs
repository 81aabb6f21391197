//! Unit tests of [`super`].

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
    // A window later `a` and `b` have left the log: `a`'s late report changes nothing.
    pacer.try_take(p, ms(2_000)).unwrap();
    pacer.departed(a, ms(3_000));
    assert_eq!(pacer.sent, [ms(2_000)], "out of the log: ignored");
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
