//! A flood of bad input through the real binary.

use super::*;

/// A flood of bad input: 10 000 events mixing malformed JSON, invalid UTF-8, wrong
/// types, oversized payloads, 10 000-deep nesting, huge numbers and unknown workspaces,
/// with good events between them, through the real binary on the mock cluster: every
/// bad one dead-lettered with its reason, every good one delivered, no panic, memory
/// bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_a_flood_of_bad_input_is_dead_lettered_with_reasons() {
    use crate::common::fleet::value;
    use crate::common::{produce, scrape, wait_until, Record};
    let broker = Broker::mock();
    let topic = unique("flood");
    broker.create_topic(&topic, 8).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let api = sluice::tools::mock_api::MockApi::start(sluice::tools::mock_api::MockApiConfig {
        limit_per_s: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let setup = Setup::new(&broker.brokers(), &topic, &api.base_url(), &["acme"]);
    let deep = format!(
        r#"{{"type":"track","userId":"u","event":"e","workspace":"acme","properties":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let oversized = format!(
        r#"{{"type":"track","userId":"u","event":"e","workspace":"acme","properties":{{"blob":"{}"}}}}"#,
        "x".repeat(40_000)
    );
    // (payload, the reason it must be dead-lettered with; None: delivered)
    let kinds: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"{not json at all".to_vec(), Some("malformed_json")),
        (
            b"{\"type\":\"track\",\"userId\":\"u\xff\xfe\",\"event\":\"e\",\"workspace\":\"acme\"}"
                .to_vec(),
            Some("malformed_json"),
        ),
        (
            br#"{"type":"track","userId":{"nested":true},"event":"e","workspace":"acme"}"#.to_vec(),
            Some("missing_user_id"),
        ),
        (
            br#"{"type":42,"userId":"u","workspace":"acme"}"#.to_vec(),
            Some("malformed_json"),
        ),
        (oversized.into_bytes(), Some("too_large")),
        (deep.into_bytes(), Some("malformed_json")),
        (
            br#"{"type":"track","userId":"u","event":"e","workspace":"acme","timestamp":1e400}"#
                .to_vec(),
            Some("malformed_json"),
        ),
        (
            br#"{"type":"track","userId":"u","event":"e","workspace":"nowhere"}"#.to_vec(),
            Some("unknown_workspace"),
        ),
        (
            br#"{"type":"track","userId":"good","event":"e","workspace":"acme"}"#.to_vec(),
            None,
        ),
    ];
    // The mock cluster keeps ~5 MB a partition: the two big kinds are 1 in 50 each
    // (~11 MB over 8 partitions), the others share the rest.
    let kind = |i: usize| match i % 100 {
        0 => 4,
        50 => 5,
        n => [0, 1, 2, 3, 6, 7, 8][n % 7],
    };
    let records: Vec<Record> = (0..10_000)
        .map(|i| {
            let (payload, _) = &kinds[kind(i)];
            Record {
                key: format!("k{}", i % 97),
                payload: payload.clone(),
                workspace_header: None,
            }
        })
        .collect();
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    let mut good = 0u64;
    for i in 0..10_000 {
        match kinds[kind(i)].1 {
            Some(reason) => *expected.entry(reason).or_default() += 1.0,
            None => good += 1,
        }
    }
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let dir = tempfile::tempdir().unwrap();
    let mut pod = Pod::start(&setup.toml(), dir.path(), "pod");
    setup.wait_committed(&positions, 8).await;
    let metrics = scrape(&pod.url).await;
    wait_until("the good events arrived", Duration::from_secs(30), || {
        api.stats().events_accepted >= good
    })
    .await;
    pod.stop();
    let log = pod.log();
    assert!(!log.contains("panicked"), "{log}");
    for (reason, n) in &expected {
        let label = format!("reason=\"{reason}\"");
        assert_eq!(
            value(&metrics, "sluice_events_dead_lettered_total", &[&label]),
            *n,
            "{reason}"
        );
    }
    let letters: f64 = expected.values().sum();
    let rss = value(&metrics, "process_resident_memory_max_bytes", &[]);
    println!(
        "bad-input flood: 10 000 events, {letters} dead-lettered by reason {expected:?}, {good} \
         delivered, peak RSS {:.0} MB",
        rss / 1e6
    );
    assert_eq!(api.stats().events_accepted, good);
    assert!(rss < 300e6, "peak RSS {rss}");
    api.stop().await;
}
