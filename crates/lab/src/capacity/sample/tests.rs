//! Unit tests of [`super`].

use super::*;

use super::test_sample as s;

#[test]
fn the_most_sustained_is_the_best_window_not_the_best_second() {
    let delivered = [1000.0, 5000.0, 5000.0, 5000.0, 9000.0, 1000.0, 1000.0];
    let samples: Vec<_> = delivered
        .iter()
        .enumerate()
        .map(|(i, d)| s(i as f64, 6000.0, *d, 0.0))
        .collect();
    assert!((max_sustained(&samples) - 19_000.0 / 3.0).abs() < 1e-9);
}

#[test]
fn the_bound_is_the_resource_nearest_its_ceiling() {
    let mut a = s(1.0, 1.0, 1.0, 0.0);
    a.limiter_wait_share = 0.95;
    a.cpu_cores = 0.2;
    assert_eq!(
        diagnose(&[a.clone()], 4.0, 0.0, false).bound,
        Bound::ApiLimit
    );
    a.limiter_wait_share = 0.0;
    a.in_flight = 4.0;
    assert_eq!(
        diagnose(&[a.clone()], 4.0, 0.0, false).bound,
        Bound::InFlight
    );
    // Nothing in the worker full: it carried what it was offered — unless it broke,
    // when it was waiting for events the broker did not give it.
    a.in_flight = 0.5;
    assert_eq!(
        diagnose(&[a.clone()], 4.0, 0.0, false).bound,
        Bound::OfferedLoad
    );
    assert_eq!(diagnose(&[a], 4.0, 0.0, true).bound, Bound::Broker);
}

/// A soak's leak check: memory after the warm-up minute against the end, not the
/// start-up climb (the first minute fills buffers and pools).
#[test]
fn memory_growth_is_counted_from_the_first_minute_to_the_end() {
    let at = |t: f64, rss_mb: f64| Sample {
        rss_mb,
        ..s(t, 1_000.0, 1_000.0, 0.0)
    };
    let flat: Vec<Sample> = [
        (1.0, 20.0),
        (30.0, 80.0),
        (60.0, 94.0),
        (150.0, 93.0),
        (300.0, 98.7),
    ]
    .into_iter()
    .map(|(t, m)| at(t, m))
    .collect();
    let growth = rss_growth(&flat).unwrap();
    assert!((growth - 0.05).abs() < 1e-9, "{growth}");
    assert_eq!(rss_growth(&flat[..3]), None, "shorter than two minutes");
    let leaking = [at(60.0, 100.0), at(570.0, 777.0)];
    assert!(rss_growth(&leaking).unwrap() > 6.0);
}
