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
