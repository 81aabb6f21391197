//! Unit tests of [`super`].

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate {
        site: "site".into(),
        per_second,
        burst,
    }
}

/// Drives `tasks` concurrent senders for `seconds` of paused time, each sending at
/// once and holding its permit for `hold`; returns the send instants (ms since
/// start).
async fn send_times(
    limiter: Arc<Limiter>,
    ws: &'static str,
    tasks: usize,
    seconds: u64,
    hold: Duration,
) -> Vec<u64> {
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (limiter, times) = (limiter.clone(), times.clone());
        set.spawn(async move {
            loop {
                let (_, permit) = limiter.acquire(ws).await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                // The body is read at once: the request leaves with its token.
                if let Some(d) = permit.departure() {
                    d.now();
                }
                times.lock().unwrap().push((now - start).as_millis() as u64);
                tokio::time::sleep(hold).await;
                drop(permit);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let mut t = times.lock().unwrap().clone();
    t.sort();
    t
}

fn max_in_any_second(times: &[u64]) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= 1000 {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn a_100_per_second_limit_is_used_fully_and_never_exceeded() {
    for burst in [1, 2] {
        let limiter = Arc::new(Limiter::new(
            [("acme".to_string(), rate(100.0, burst))],
            64,
            0.995,
        ));
        let times = send_times(limiter, "acme", 8, 20, Duration::from_millis(5)).await;
        assert!(
            max_in_any_second(&times) <= 100,
            "{}",
            max_in_any_second(&times)
        );
        assert!(times.len() >= 1980, "used {} of 2000", times.len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_send_counts_from_when_its_bytes_left_or_else_from_when_it_ended() {
    let limiter = Limiter::new([("acme".to_string(), rate(1.0, 1))], 4, 1.0);
    let start = Instant::now();
    // The connection reads the body 40 ms after the token: the next send may go a
    // second after that, not after the token.
    let (_, permit) = limiter.acquire("acme").await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    permit.departure().expect("a limited workspace").now();
    drop(permit);
    let (_, permit) = limiter.acquire("acme").await;
    let second = Instant::now();
    assert!(
        second - start >= Duration::from_millis(1_040),
        "{:?}",
        second - start
    );
    // Never read (refused connection, early answer): dated when it ended.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(permit);
    let _ = limiter.acquire("acme").await;
    assert!(
        Instant::now() - second >= Duration::from_millis(1_300),
        "{:?}",
        Instant::now() - second
    );
}

#[tokio::test(start_paused = true)]
async fn a_saturated_in_flight_cap_never_releases_a_burst_of_old_tokens() {
    // Two global slots held 300 ms each; a 100/s workspace with burst 1. Under the
    // old order (token, then slot) the tokens waited behind the slots and went out
    // in pairs on top of fresh ones.
    let limiter = Arc::new(Limiter::new([("acme".to_string(), rate(100.0, 1))], 2, 1.0));
    let times = send_times(limiter, "acme", 8, 5, Duration::from_millis(300)).await;
    let mut closest = u64::MAX;
    for pair in times.windows(2) {
        closest = closest.min(pair[1] - pair[0]);
    }
    assert!(
        closest >= 9,
        "two requests {closest} ms apart under a 100/s limit: {times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_workspace_waits_and_others_do_not() {
    let limiter = Arc::new(Limiter::new(
        [
            ("slow".to_string(), rate(10.0, 1)),
            ("free".to_string(), rate(10.0, 1)),
        ],
        64,
        1.0,
    ));
    let start = Instant::now();
    limiter
        .throttled("slow", Some(Duration::from_secs(2)), start)
        .await;
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (limiter, done) = (limiter.clone(), done.clone());
        tokio::spawn(async move {
            limiter.acquire("slow").await;
            done.store(true, Ordering::SeqCst);
            Instant::now()
        })
    };
    let (waited, _) = limiter.acquire("free").await;
    assert_eq!(waited, Duration::ZERO, "the other workspace is not held up");
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert!(
        !done.load(Ordering::SeqCst),
        "no request within Retry-After"
    );
    let went = waiter.await.unwrap();
    assert!(went - start >= Duration::from_secs(2));
    assert_eq!(
        limiter.effective_rate("slow"),
        Some(5.0),
        "nothing accepted: halved"
    );
    assert_eq!(limiter.effective_rate("free"), Some(10.0));
}

#[tokio::test(start_paused = true)]
async fn the_global_cap_bounds_requests_in_flight() {
    let limiter = Limiter::new([("a".to_string(), rate(1000.0, 10))], 2, 1.0);
    let (_, p1) = limiter.acquire("a").await;
    let (_, _p2) = limiter.acquire("a").await;
    let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire("a")).await;
    assert!(third.is_err(), "a third request waits for a slot");
    drop(p1);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), limiter.acquire("a"))
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn the_pace_follows_the_partition_share() {
    let share = Arc::new(Share::of_partitions());
    let limiter = Arc::new(
        Limiter::new([("acme".to_string(), rate(100.0, 1))], 64, 1.0).with_share(share.clone()),
    );
    share.assigned(3, 8, Instant::now());
    let times = send_times(limiter.clone(), "acme", 4, 11, Duration::from_millis(1)).await;
    // Nothing in the first second (the share grows a window after the assignment),
    // then 3/8 of 100/s: 37 a second.
    assert!(times.iter().all(|t| *t >= 1000), "{:?}", &times[..3]);
    assert!(
        max_in_any_second(&times) <= 37,
        "{}",
        max_in_any_second(&times)
    );
    assert!(times.len() >= 365, "{}", times.len());
    assert_eq!(limiter.current_share(), 3.0 / 8.0);
}

#[tokio::test(start_paused = true)]
async fn the_fleet_margin_is_the_wait_from_token_to_wire_not_the_gap_between_sends() {
    // Two sends queued behind each other: the second's token at 0, its bytes gone at
    // 30 ms (after the first's at 25 ms). Its wait is 30 ms, not the 5 ms between the
    // two departures.
    let limiter = Limiter::new([("acme".to_string(), rate(100.0, 2))], 4, 1.0);
    let (_, first) = limiter.acquire("acme").await;
    let (_, second) = limiter.acquire("acme").await;
    tokio::time::sleep(Duration::from_millis(25)).await;
    first.departure().expect("a limited workspace").now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    second.departure().expect("a limited workspace").now();
    let ws = &limiter.workspaces["acme"];
    let st = lock(&ws.state);
    let spacing = limiter.fleet_spacing(&st, Instant::now());
    assert!(
        spacing.margin >= Duration::from_millis(30),
        "{:?}",
        spacing.margin
    );
    assert_eq!(spacing.per_window, 100, "the limit as a count per window");
}

/// The global in-flight slots bound requests in flight, not requests waiting for their
/// workspace's token: a workspace held to 1 request/s must not keep a slot while it
/// waits, or a few rate-bound workspaces hold every slot and the others queue behind.
#[tokio::test(start_paused = true)]
async fn a_workspace_waiting_for_its_token_holds_no_in_flight_slot() {
    let limiter = Arc::new(Limiter::new(
        [
            ("slow".to_string(), rate(1.0, 1)),
            ("fast".to_string(), rate(1000.0, 10)),
        ],
        1,
        1.0,
    ));
    // The one slot is busy with a request of fast.
    let (_, busy) = limiter.acquire("fast").await;
    // Two requests of slow, its token ready: both wait for the slot.
    let acquire = |ws: &'static str| {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire(ws).await })
    };
    let first = acquire("slow");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let second = acquire("slow");
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(busy);
    // The first takes the slot and slow's token, sends and is done.
    let (_, sent) = first.await.unwrap();
    drop(sent);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The second now waits about a second for slow's next token. Meanwhile fast needs
    // the slot, which is free unless the waiting request holds it.
    let start = Instant::now();
    let got = tokio::time::timeout(Duration::from_millis(500), limiter.acquire("fast")).await;
    assert!(
        got.is_ok(),
        "fast queued {:?} behind slow's wait for a token",
        start.elapsed()
    );
    drop(got);
    second.abort();
}
