//! Waiting for a scheduled moment in the blocking load tools without missing a stop.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Longest single sleep: how late a stop may be noticed.
const SLICE: Duration = Duration::from_millis(100);

/// Sleeps until `start + due` (skipping waits under 200 µs, which cost more than they
/// save at high rates), waking at least every 100 ms to see whether `stop` was
/// cancelled; returns `false` if it was.
pub(crate) fn wait_until(start: Instant, due: Duration, stop: &CancellationToken) -> bool {
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let now = start.elapsed();
        if due <= now + Duration::from_micros(200) {
            return true;
        }
        std::thread::sleep((due - now).min(SLICE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_ends_a_long_wait() {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s.cancel();
        });
        let start = Instant::now();
        assert!(!wait_until(start, Duration::from_secs(3600), &stop));
        assert!(start.elapsed() < Duration::from_secs(1));
        t.join().unwrap();
        assert!(wait_until(
            Instant::now(),
            Duration::ZERO,
            &CancellationToken::new()
        ));
    }
}
