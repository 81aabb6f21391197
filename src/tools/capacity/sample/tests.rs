//! Unit tests of [`super`].

use super::*;

fn s(t: f64, offered: f64, delivered: f64, backlog: f64) -> Sample {
    Sample {
        t_s: t,
        offered_per_s: offered,
        delivered_per_s: delivered,
        dead_lettered_per_s: 0.0,
        requests_per_s: 0.0,
        throttled_per_s: 0.0,
        backlog,
        limiter_wait_share: 0.0,
        cpu_cores: 0.0,
        in_flight: 0.0,
        p99_ms: 0.0,
        paused: 0.0,
    }
}

/// The start of a stress ramp at the shipped batching (linger 200 ms): nothing
/// out while the consumer joins and the first batch fills, then delivery a little
/// behind the ramp with 0.7 s of it held in batches. That is batching, not a
/// break; the same backlog held for longer than the pipeline's own holding is.
#[test]
fn a_ramp_start_held_in_batches_is_not_a_break() {
    let ramp: Vec<_> = (1..=8)
        .map(|i| {
            let offered = 333.0 * i as f64;
            let delivered = if i <= 2 { 0.0 } else { 0.89 * offered };
            s(i as f64, offered, delivered, 0.7 * offered)
        })
        .collect();
    let held = held_seconds(Duration::from_millis(200));
    assert!(held > 0.8 && held < 1.0, "{held}");
    assert!(broke(&ramp, held).is_none());
    assert!(
        broke(&ramp, 0.5).is_some(),
        "the same samples with half a second held would have broken"
    );
    // Before anything is delivered, a growing backlog is the pipeline starting.
    assert!(broke(&ramp[..4], 0.5).is_none());
    // But a run where nothing ever gets through breaks once the backlog passes
    // five seconds of traffic, and one where everything is refused at once.
    let stuck: Vec<_> = (1..=10)
        .map(|i| s(i as f64, 1000.0, 0.0, 1000.0 * i as f64))
        .collect();
    assert_eq!(broke(&stuck, held).map(|b| b.reason), Some("backlog_grew"));
    let refused: Vec<_> = (1..=5)
        .map(|i| Sample {
            dead_lettered_per_s: 1000.0,
            ..s(i as f64, 1000.0, 0.0, 0.0)
        })
        .collect();
    assert_eq!(broke(&refused, held).map(|b| b.reason), Some("error_rate"));
}

#[test]
fn a_pipeline_that_keeps_up_has_not_broken() {
    let samples: Vec<_> = (0..10)
        .map(|i| {
            s(
                i as f64,
                1000.0 + 100.0 * i as f64,
                1000.0 + 100.0 * i as f64,
                50.0,
            )
        })
        .collect();
    assert!(broke(&samples, 0.5).is_none());
}

#[test]
fn delivery_falling_behind_with_a_growing_backlog_is_the_break() {
    let mut samples: Vec<_> = (0..5)
        .map(|i| {
            s(
                i as f64,
                1000.0 * (i + 1) as f64,
                1000.0 * (i + 1) as f64,
                100.0,
            )
        })
        .collect();
    for i in 5..9 {
        samples.push(s(
            i as f64,
            1000.0 * (i + 1) as f64,
            5000.0,
            2000.0 * (i - 4) as f64,
        ));
    }
    // As a run sees it: one more sample each second.
    let b = (1..=samples.len())
        .find_map(|n| broke(&samples[..n], 0.5))
        .unwrap();
    assert_eq!(b.reason, "delivery_fell_behind");
    assert_eq!(
        b.offered_per_s, 6000.0,
        "the first sample delivery did not follow"
    );
    assert!((max_sustained(&samples) - 5000.0).abs() < 1e-9);
}

#[test]
fn a_break_noticed_late_is_placed_where_delivery_stopped_following() {
    // Delivery flat at 5 000/s from the sixth second; the backlog shows it only
    // four seconds later, when the window alone would say 8 000.
    let samples: Vec<_> = (0..12)
        .map(|i| {
            let offered = 1000.0 * (i + 1) as f64;
            let backlog = if i < 9 {
                100.0
            } else {
                10_000.0 * (i - 8) as f64
            };
            s(i as f64, offered, offered.min(5000.0), backlog)
        })
        .collect();
    let b = (1..=samples.len())
        .find_map(|n| broke(&samples[..n], 0.5))
        .unwrap();
    assert_eq!(b.offered_per_s, 6000.0, "{b:?}");
    // A burst that catches up on the backlog afterwards is not following again.
    let mut bursty = samples.clone();
    bursty[10].delivered_per_s = bursty[10].offered_per_s;
    let b = (1..=bursty.len())
        .find_map(|n| broke(&bursty[..n], 0.5))
        .unwrap();
    assert_eq!(b.offered_per_s, 6000.0, "{b:?}");
}

#[test]
fn the_bound_is_the_resource_nearest_its_ceiling() {
    let mut a = s(1.0, 1.0, 1.0, 0.0);
    a.limiter_wait_share = 0.95;
    a.cpu_cores = 0.2;
    assert_eq!(diagnose(&[a.clone()], 4.0, 0.0).bound, Bound::ApiLimit);
    a.limiter_wait_share = 0.0;
    a.in_flight = 4.0;
    assert_eq!(diagnose(&[a], 4.0, 0.0).bound, Bound::InFlight);
}
