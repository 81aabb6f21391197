//! Unit tests of [`super`].

use super::*;

fn stages(spec: &[&str]) -> Vec<Stage> {
    spec.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn rates_that_do_not_divide_evenly_still_offer_every_event() {
    for rate in [3.0, 7.0, 9.0, 30.0, 300.0, 333.3] {
        let s = Schedule::new(&Pace::Constant(rate), Some(1000), None).unwrap();
        assert_eq!(s.total(), Some(1000), "{rate}/s");
        assert!(s.due(999).is_some());
    }
    let one = Schedule::new(&Pace::Constant(3.0), Some(1), None).unwrap();
    assert_eq!(one.total(), Some(1));
    let stages = Schedule::new(
        &Pace::Stages {
            start: 0.0,
            stages: vec!["3s:7".parse().unwrap(), "7s:7".parse().unwrap()],
        },
        None,
        None,
    )
    .unwrap();
    assert_eq!(stages.total(), Some(59), "10.5 + 49 offered");
    assert_eq!(stages.stage_at(Duration::from_millis(2_900)), 0);
    assert_eq!(stages.stage_at(Duration::from_millis(3_100)), 1);
    assert_eq!(stages.stage_at(Duration::from_secs(60)), 1);
    assert!(Schedule::new(&Pace::Constant(1e-20), Some(10), None).is_err());
}

#[test]
fn a_constant_rate_spaces_events_evenly() {
    let s = Schedule::new(&Pace::Constant(100.0), Some(1000), None).unwrap();
    assert_eq!(s.total(), Some(1000));
    assert_eq!(s.due(0), Some((Duration::ZERO, 0)));
    assert_eq!(s.due(250).unwrap().0, Duration::from_millis(2500));
    assert_eq!(s.due(1000), None);
    let d = Schedule::new(&Pace::Constant(50.0), None, Some(Duration::from_secs(4))).unwrap();
    assert_eq!(d.total(), Some(200));
}

#[test]
fn a_ramp_offers_the_area_under_it_and_speeds_up() {
    // 0 → 1000/s over 10 s offers 5 000 events, then 1000/s for 10 s offers 10 000.
    let s = Schedule::new(
        &Pace::Stages {
            start: 0.0,
            stages: stages(&["10s:1000", "10s:1000", "5s:0"]),
        },
        None,
        None,
    )
    .unwrap();
    assert_eq!(s.total(), Some(17_500));
    // Half the ramp's events are offered at t = 10·√½ s.
    let (t, stage) = s.due(2_500).unwrap();
    assert!(
        (t.as_secs_f64() - 10.0 * 0.5f64.sqrt()).abs() < 1e-6,
        "{t:?}"
    );
    assert_eq!(stage, 0);
    assert_eq!(s.due(5_000).unwrap(), (Duration::from_secs(10), 1));
    assert_eq!(s.due(10_000).unwrap().0, Duration::from_secs(15));
    // Due times never go backwards.
    let mut last = Duration::ZERO;
    for i in (0..17_500).step_by(7) {
        let (t, _) = s.due(i).unwrap();
        assert!(t >= last, "event {i}");
        last = t;
    }
    assert!(last <= Duration::from_secs(25));
    let windows = s.stages();
    assert_eq!(
        windows.iter().map(|w| w.events.unwrap()).sum::<u64>(),
        17_500
    );
}

#[test]
fn duration_and_events_cut_the_stages() {
    let pace = Pace::Stages {
        start: 0.0,
        stages: stages(&["10s:1000", "10s:1000"]),
    };
    let cut = Schedule::new(&pace, None, Some(Duration::from_secs(5))).unwrap();
    // 0 → 500/s over 5 s.
    assert_eq!(cut.total(), Some(1_250));
    let few = Schedule::new(&pace, Some(100), None).unwrap();
    assert_eq!(few.total(), Some(100));
}

#[test]
fn bad_stages_and_unbounded_runs_are_refused() {
    assert!("30s".parse::<Stage>().is_err());
    assert!("30x:5".parse::<Stage>().is_err());
    assert!("30s:-5".parse::<Stage>().is_err());
    assert_eq!(
        "1m30s:250".parse::<Stage>().unwrap().duration,
        Duration::from_secs(90)
    );
    assert_eq!(
        Schedule::new(&Pace::Max, None, None).unwrap_err(),
        ScheduleError::Unbounded
    );
    assert_eq!(
        Schedule::new(&Pace::Constant(10.0), None, None).unwrap_err(),
        ScheduleError::Unbounded
    );
    assert_eq!(
        Schedule::new(
            &Pace::Stages {
                start: 0.0,
                stages: stages(&["5s:0"])
            },
            None,
            None
        )
        .unwrap_err(),
        ScheduleError::Empty
    );
}
