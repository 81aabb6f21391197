//! Unit tests of [`super`].

use std::time::Duration;

use super::*;
use crate::capacity::sample::test_sample as s;
use crate::loadgen::schedule::Schedule;

/// Five steps of 2 000 events/s to 10 000, each held 5 s.
fn stairs() -> Stairs {
    Stairs::new(10_000.0, 5, Duration::from_secs(25)).unwrap()
}

/// One sample a second of a pipeline that carries `capacity` events/s: it follows each
/// step after a second's change (0.2 s of traffic held in batches), and above its
/// capacity delivers `capacity` while the backlog grows by the rest.
fn run(stairs: &Stairs, capacity: f64, seconds: u32) -> Vec<Sample> {
    let hold = stairs.hold.as_secs_f64();
    let mut backlog = 0.0;
    (1..=seconds)
        .map(|n| {
            let t = f64::from(n) + 0.002;
            let offered = stairs.rate(((f64::from(n) - 0.5) / hold) as u32);
            let delivered = offered.min(capacity);
            backlog += offered - delivered;
            s(t, offered, delivered, backlog + 0.2 * offered)
        })
        .collect()
}

/// As a run judges: after each new sample, the first break.
fn first_break(stairs: &Stairs, samples: &[Sample]) -> Option<(usize, Break)> {
    (1..=samples.len()).find_map(|n| stairs.broke(&samples[..n]).map(|b| (n, b)))
}

#[test]
fn a_pipeline_that_carries_every_step_never_breaks() {
    let stairs = stairs();
    assert!(first_break(&stairs, &run(&stairs, 20_000.0, 25)).is_none());
}

#[test]
fn the_first_step_not_carried_breaks_at_what_it_delivered() {
    let stairs = stairs();
    let (n, b) = first_break(&stairs, &run(&stairs, 6_500.0, 25)).unwrap();
    assert_eq!(b.reason, "delivery_fell_behind");
    assert_eq!(n, 20, "judged when the 8 000/s step (15–20 s) ends");
    assert_eq!((b.held_per_s, b.step_per_s), (6_000.0, 8_000.0));
    assert!((b.offered_per_s - 6_500.0).abs() < 1e-6, "{b:?}");
    assert_eq!(b.at_s, 15.0);
}

/// What a ramp got wrong: buffers give a surplus back in bursts. A step whose
/// backlog ends where it began was carried, however bursty; one whose backlog grew
/// over the step was not, even if one burst caught up in the middle of it.
#[test]
fn bursts_do_not_hide_a_backlog_that_grew_over_the_step() {
    let stairs = stairs();
    // The third step, 6 000/s from 10 s, delivered in bursts.
    let step = |delivered: [f64; 5]| {
        let mut samples = run(&stairs, 20_000.0, 10);
        let mut backlog = samples[9].backlog;
        for (i, d) in delivered.iter().enumerate() {
            backlog += 6_000.0 - d;
            samples.push(s(11.002 + i as f64, 6_000.0, *d, backlog));
        }
        first_break(&stairs, &samples)
    };
    assert!(
        step([6_000.0, 2_000.0, 2_000.0, 14_000.0, 6_000.0]).is_none(),
        "carried: the burst caught up"
    );
    let (_, b) = step([6_000.0, 2_000.0, 10_000.0, 2_000.0, 4_000.0]).unwrap();
    assert_eq!(b.step_per_s, 6_000.0);
    assert_eq!(
        b.offered_per_s, 4_500.0,
        "what the judged seconds delivered"
    );
    // One stall in the step's last second leaves a backlog but is not a break: the
    // next step shows whether there was capacity to catch up.
    assert!(
        step([6_000.0, 6_000.0, 6_000.0, 6_000.0, 2_000.0]).is_none(),
        "one stall"
    );
}

#[test]
fn a_pipeline_that_falls_below_the_last_step_held_breaks_there() {
    let stairs = stairs();
    let mut samples = run(&stairs, 20_000.0, 15);
    let mut backlog = samples[14].backlog;
    for n in 16..=20 {
        backlog += 8_000.0 - 3_000.0;
        samples.push(s(f64::from(n) + 0.002, 8_000.0, 3_000.0, backlog));
    }
    let (_, b) = first_break(&stairs, &samples).unwrap();
    assert_eq!(b.offered_per_s, 6_000.0, "{b:?}");
}

#[test]
fn nothing_through_or_everything_refused_breaks_at_once() {
    let stairs = Stairs::new(10_000.0, 5, Duration::from_secs(100)).unwrap();
    let stuck: Vec<_> = (1..=12)
        .map(|n| s(f64::from(n), 2_000.0, 0.0, 2_000.0 * f64::from(n)))
        .collect();
    let (n, b) = first_break(&stairs, &stuck).unwrap();
    assert_eq!((b.reason, b.offered_per_s), ("backlog_grew", 0.0));
    assert!(n < 12, "before the step's end: {n}");
    let refused: Vec<_> = (1..=5)
        .map(|n| Sample {
            dead_lettered_per_s: 2_000.0,
            ..s(f64::from(n), 2_000.0, 0.0, 0.0)
        })
        .collect();
    let (_, b) = first_break(&stairs, &refused).unwrap();
    assert_eq!((b.reason, b.offered_per_s), ("error_rate", 2_000.0));
}

#[test]
fn the_staircase_offers_each_rate_for_its_hold() {
    let stairs = stairs();
    let schedule = Schedule::new(&stairs.pace(), None, None).unwrap();
    let total = schedule.total().unwrap() as f64;
    // Five steps of 5 s at 2 000 … 10 000 /s, less a tenth of a second's change each.
    let expected = 5.0 * (2_000.0 + 4_000.0 + 6_000.0 + 8_000.0 + 10_000.0);
    assert!(
        (total / expected - 1.0).abs() < 0.02,
        "{total} vs {expected}"
    );
    let too_short = Stairs::new(10_000.0, 50, Duration::from_secs(25));
    assert!(too_short.unwrap_err().to_string().contains("at least 3 s"));
}

/// At a low rate a step's surplus is less than one batch: batches of 500 leave in
/// whole numbers, so a carried step's seconds deliver 2 500 or 3 500 of its 3 000
/// and its backlog ends a batch above where it began. Within the pipeline's working
/// set that is carried; a backlog that grows past it is not.
#[test]
fn a_backlog_within_the_working_set_is_carried() {
    let stairs = Stairs::new(3_000.0, 1, Duration::from_secs(5)).unwrap();
    let sawtooth = |extra: f64| {
        let mut backlog = 60.0;
        let mut samples = vec![s(1.002, 3_000.0, 3_000.0, backlog)];
        for (i, d) in [2_500.0, 3_500.0, 2_500.0, 3_000.0 - extra]
            .iter()
            .enumerate()
        {
            backlog += 3_000.0 - d;
            samples.push(s(2.002 + i as f64, 3_000.0, *d, backlog));
        }
        samples
    };
    assert!(
        first_break(&stairs, &sawtooth(0.0)).is_some(),
        "without slack, one batch over 3% of the step breaks it"
    );
    let stairs = stairs.with_slack(2_000.0);
    assert!(
        first_break(&stairs, &sawtooth(0.0)).is_none(),
        "one batch behind"
    );
    let (_, b) = first_break(&stairs, &sawtooth(2_000.0)).unwrap();
    assert_eq!(b.reason, "delivery_fell_behind");
}
