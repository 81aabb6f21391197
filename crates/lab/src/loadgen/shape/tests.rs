//! Unit tests of [`super`].

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    shape: ShapeArgs,
}

fn shape(args: &[&str]) -> Shape {
    let cmd = Cmd::parse_from(std::iter::once("t").chain(args.iter().copied()));
    Shape::new(cmd.shape, vec![]).unwrap()
}

#[test]
fn the_same_seed_makes_the_same_events_and_another_seed_others() {
    let run = |seed| {
        let mut g = Generator::new(shape(&["--invalid", "0.1"]), seed);
        (0..500).map(|_| g.next_event()).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn seq_counts_each_users_valid_events_from_one() {
    let mut g = Generator::new(shape(&["--users", "20", "--invalid", "0.2"]), 1);
    let mut last: HashMap<String, u64> = HashMap::new();
    for _ in 0..2_000 {
        let e = g.next_event();
        if e.invalid.is_some() {
            continue;
        }
        let v: Value = serde_json::from_slice(&e.value).unwrap();
        let fields = if v["type"] == "identify" {
            &v["traits"]
        } else {
            &v["properties"]
        };
        let seq = fields["seq"].as_u64().unwrap();
        let prev = last.insert(e.key.clone(), seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "{}", e.key);
        assert_eq!(v["userId"], e.key.as_str());
    }
}

#[test]
fn valid_events_decode_and_invalid_ones_fail_for_their_reason() {
    let mut g = Generator::new(shape(&["--invalid", "0.5", "--workspaces", "a:3,b:1"]), 3);
    let decoder = sluice_core::event::Decoder::new(["a".to_string(), "b".into()], None, 32_000);
    let mut reasons = HashMap::new();
    for _ in 0..1_000 {
        let e = g.next_event();
        let decoded = decoder.decode(&e.value, None);
        match e.invalid {
            None => {
                decoded.unwrap();
            }
            Some(kind) => {
                let reason = decoded.unwrap_err().reason();
                reasons.insert(kind, reason);
            }
        }
    }
    assert_eq!(reasons[&InvalidKind::Malformed], "malformed_json");
    assert_eq!(reasons[&InvalidKind::MissingUser], "missing_user_id");
    assert_eq!(reasons[&InvalidKind::UnknownType], "unknown_type");
    assert_eq!(reasons[&InvalidKind::Oversized], "too_large");
}

fn counts(args: &[&str], n: usize) -> (HashMap<String, u64>, u64) {
    let mut g = Generator::new(shape(args), 11);
    let mut by_user = HashMap::new();
    let mut invalid = 0;
    for _ in 0..n {
        let e = g.next_event();
        invalid += u64::from(e.invalid.is_some());
        *by_user.entry(e.key).or_default() += 1;
    }
    (by_user, invalid)
}

#[test]
fn uniform_users_pass_a_chi_square_test() {
    let (by_user, _) = counts(&["--users", "100"], 50_000);
    assert_eq!(by_user.len(), 100);
    let expected = 500.0;
    let chi2: f64 = by_user
        .values()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    // 99 degrees of freedom: P(χ² > 148.2) = 0.001.
    assert!(chi2 < 148.2, "χ² = {chi2}");
}

#[test]
fn zipf_users_follow_the_power_law() {
    let users = 1000u64;
    let s = 1.2;
    let (by_user, _) = counts(&["--users", "1000", "--zipf", "1.2"], 100_000);
    let h: f64 = (1..=users).map(|k| (k as f64).powf(-s)).sum();
    // The top ranks carry enough events to check each within 5%.
    for rank in 1..=5u64 {
        let expected = 100_000.0 * (rank as f64).powf(-s) / h;
        let observed = by_user.get(&format!("u{}", rank - 1)).copied().unwrap_or(0) as f64;
        assert!(
            (observed - expected).abs() / expected < 0.05,
            "rank {rank}: {observed} vs {expected:.0}"
        );
    }
    // And the shape of the tail: ranks 10..100 together.
    let expected: f64 = (10..=100u64)
        .map(|k| 100_000.0 * (k as f64).powf(-s) / h)
        .sum();
    let observed: f64 = (9..100)
        .map(|u| by_user.get(&format!("u{u}")).copied().unwrap_or(0) as f64)
        .sum();
    assert!(
        (observed - expected).abs() / expected < 0.05,
        "{observed} vs {expected:.0}"
    );
}

#[test]
fn the_invalid_share_is_what_was_asked() {
    for share in [0.01, 0.1, 0.3] {
        let (_, invalid) = counts(&["--invalid", &share.to_string()], 20_000);
        let got = invalid as f64 / 20_000.0;
        assert!((got - share).abs() < 0.01, "{share}: {got}");
    }
}

#[test]
fn bad_shapes_are_refused() {
    let cmd = Cmd::parse_from(["t", "--invalid", "1.5"]);
    assert_eq!(
        Shape::new(cmd.shape, vec![]).unwrap_err(),
        ShapeError::Share("invalid")
    );
    let cmd = Cmd::parse_from(["t", "--users", "0"]);
    assert_eq!(
        Shape::new(cmd.shape, vec![]).unwrap_err(),
        ShapeError::NoUsers
    );
    assert!(Cmd::try_parse_from(["t", "--workspaces", "a:0"]).is_err());
}
