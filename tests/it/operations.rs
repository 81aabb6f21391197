//! What operators rely on: `/metrics` in the Prometheus text format with counters that
//! match what happened and a queue depth that is the real lag, `/readyz` and
//! `/healthz` through a shutdown, a stop with the broker gone, and credentials that
//! never leak.
//!
//! Over 400 lines by design: 8 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use sluice_core::config::Millis;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::common::fleet::value;
use crate::common::{
    committed, produce, produced_ends, read_topic, scrape, track, tracks, unique,
    wait_committed_to_end, wait_until, Broker, Record, Setup, TestEnv, Worker, API_KEY,
    API_KEY_ENV,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_what_happened_and_queue_depth_is_the_real_lag() {
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme", "strict"])
        .dlq()
        .start()
        .await
        .into_parts();
    api.stall(true);
    setup.worker.kafka.max_buffered_events = 50;
    setup.worker.kafka.resume_buffered_events = Some(20);
    // The pause is what is measured here: acme is not parked away from it.
    setup.worker.kafka.park_topic = Some(String::new());
    let n = 300;
    let records: Vec<Record> = tracks("acme", "u", 10, 0..n);
    let mut positions = produce(&broker.brokers(), &topic, &records).await;

    let (worker, url) = Worker::start_serving(setup.config()).await;
    // While the API is stalled nothing is committed: the real lag is everything.
    wait_until("the consumer paused", Duration::from_secs(30), || {
        worker.metrics.paused()
    })
    .await;
    let real_lag = |c: BTreeMap<i32, Option<i64>>, ends: &BTreeMap<i32, i64>| -> i64 {
        ends.iter().map(|(p, e)| e - c[p].unwrap_or(0)).sum()
    };
    let ends = produced_ends(&positions, 2);
    let lag = real_lag(
        committed(&broker.brokers(), setup.group(), &topic, 2),
        &ends,
    );
    assert_eq!(lag, n as i64);
    let mut depth = 0.0;
    for _ in 0..40 {
        depth = value(&scrape(&url).await, "sluice_queue_depth", &[]);
        if depth == lag as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        depth, lag as f64,
        "queue depth is the real lag while stalled"
    );
    let metrics = scrape(&url).await;
    let partition_lag = value(&metrics, "sluice_partition_lag", &[]);
    assert_eq!(
        partition_lag + value(&metrics, "sluice_buffered_events", &[]),
        lag as f64
    );

    api.stall(false);
    wait_committed_to_end(&broker.brokers(), setup.group(), &topic, &ends).await;
    wait_until("queue depth back to 0", Duration::from_secs(10), || {
        worker.metrics.queue_depth() == 0
    })
    .await;

    // Then some that cannot be delivered: two undecodable, one the API refuses.
    api.refuse_site("site-strict", Some(400));
    let mut bad = vec![
        Record::json("x", &json!({"type":"track","workspace":"acme"})),
        Record {
            key: "y".into(),
            payload: b"{oops".to_vec(),
            workspace_header: None,
        },
    ];
    bad.push(Record::json("s", &track("strict", "s", 0)));
    positions.extend(produce(&broker.brokers(), &topic, &bad).await);
    setup.wait_committed(&positions, 2).await;
    // The depth is refreshed every `lag_refresh_ms`, so it reads 0 one refresh after the
    // last commit, not at the same instant.
    wait_until("queue depth back to 0", Duration::from_secs(10), || {
        worker.metrics.queue_depth() == 0
    })
    .await;
    let metrics = scrape(&url).await;
    worker.stop().await;

    assert_eq!(value(&metrics, "sluice_queue_depth", &[]), 0.0);
    assert_eq!(
        value(&metrics, "sluice_events_consumed_total", &[]),
        (n + 3) as f64
    );
    assert_eq!(
        value(&metrics, "sluice_events_delivered_total", &[]),
        n as f64
    );
    assert_eq!(
        value(
            &metrics,
            "sluice_events_delivered_total",
            &[("workspace", "acme")]
        ),
        n as f64
    );
    assert_eq!(value(&metrics, "sluice_events_invalid_total", &[]), 2.0);
    assert_eq!(
        value(&metrics, "sluice_events_dead_lettered_total", &[]),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            "sluice_events_dead_lettered_total",
            &[("workspace", "strict"), ("reason", "http_400")]
        ),
        1.0
    );
    assert_eq!(value(&metrics, "sluice_http_requests_in_flight", &[]), 0.0);
    assert!(value(&metrics, "sluice_batch_size_count", &[]) >= 1.0);
    assert!(value(&metrics, "sluice_commits_total", &[]) >= 1.0);
    assert_eq!(
        value(&metrics, "sluice_end_to_end_latency_seconds_count", &[]),
        n as f64
    );
    assert_eq!(value(&metrics, "sluice_build_info", &[]), 1.0);
    let answered: f64 = value(
        &metrics,
        "sluice_http_requests_total",
        &[("status_class", "2xx")],
    );
    assert!(
        answered >= (n / 20) as f64,
        "batches of at most 20: {answered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_false_when_shutdown_starts_and_healthz_stays_up() {
    let (broker, api, topic, mut setup) = TestEnv::mock(1, &["acme"]).await.into_parts();
    setup.worker.shutdown.drain_deadline_ms = Millis::new(3_000);
    let (worker, url) = Worker::start_serving(setup.config()).await;
    let status = |path: &'static str| {
        let url = format!("{url}{path}");
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/healthz").await, 200);
    let start = std::time::Instant::now();
    while status("/readyz").await != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Something in flight, held by a stalled API, so the drain takes its time.
    api.stall(true);
    produce(
        &broker.brokers(),
        &topic,
        &[Record::json("u", &track("acme", "u", 0))],
    )
    .await;
    wait_until("the request is held", Duration::from_secs(30), || {
        api.started() > 0
    })
    .await;
    worker.signal_stop();
    let start = std::time::Instant::now();
    while status("/readyz").await != 503 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "readyz still 200 after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("/healthz").await, 200, "alive while draining");
    worker.stop().await;
}

/// `(status, body)` of `url`.
async fn probe(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Waits until `url` answers `status`; returns its body.
async fn until_status(url: &str, status: u16, within: Duration) -> String {
    let start = std::time::Instant::now();
    loop {
        let (got, body) = probe(url).await;
        if got == status {
            return body;
        }
        assert!(
            start.elapsed() < within,
            "{url} still {got} ({body}) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ready worker on the mock cluster (a static member named `sluice-0` when
/// `named`), whose coordinator then answers its next heartbeats with `error`; returns
/// the worker and its URL.
async fn heartbeats_answered_with(
    error: rdkafka::types::RDKafkaRespErr,
    named: bool,
) -> (Worker, String, crate::common::Broker) {
    let (broker, _api, _topic, mut setup) = TestEnv::mock(2, &["acme"]).await.into_parts();
    if named {
        setup.worker.kafka.group_instance_id = Some("sluice-0".into());
    }
    let (worker, url) = Worker::start_serving(setup.config()).await;
    until_status(&format!("{url}/readyz"), 200, Duration::from_secs(30)).await;
    let crate::common::Broker::Mock(cluster) = &broker else {
        unreachable!("the mock cluster")
    };
    cluster.request_errors(rdkafka::types::RDKafkaApiKey::Heartbeat, &[error; 3]);
    (worker, url, broker)
}

/// A member the coordinator no longer knows (evicted after its session, or for not
/// polling within `max.poll.interval.ms`) has lost its partitions: `/readyz` says so
/// until the member has rejoined and has them again; `/healthz` stays up (it rejoins by
/// itself, a restart would not help).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_member_is_not_ready_until_it_rejoins_and_stays_alive() {
    use rdkafka::types::RDKafkaRespErr;
    let (worker, url, _broker) =
        heartbeats_answered_with(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID, false).await;
    let why = until_status(&format!("{url}/readyz"), 503, Duration::from_secs(20)).await;
    assert!(why.contains("group"), "{why}");
    assert_eq!(probe(&format!("{url}/healthz")).await.0, 200);
    until_status(&format!("{url}/readyz"), 200, Duration::from_secs(60)).await;
    worker.stop().await;
}

/// A static member fenced by another with its `group.instance.id` can never consume
/// again: `/healthz` fails, so the kubelet restarts the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_fails_healthz() {
    use rdkafka::types::RDKafkaRespErr;
    let (worker, url, _broker) =
        heartbeats_answered_with(RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID, true).await;
    let why = until_status(&format!("{url}/healthz"), 503, Duration::from_secs(20)).await;
    assert!(why.contains("fenced"), "{why}");
    assert_eq!(probe(&format!("{url}/readyz")).await.0, 503);
    worker.signal_stop();
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_appears_nowhere_in_logs_metrics_or_dead_letters() {
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["acme", "strict"])
        .dlq()
        .start()
        .await
        .into_parts();
    api.refuse_site("site-strict", Some(400));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    setup.worker.server.listen = ([127, 0, 0, 1], port).into();
    let config_text = setup.toml();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), config_text).unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();

    let mut records: Vec<Record> = (0..20)
        .map(|i| Record::json("u", &track("acme", "u", i)))
        .collect();
    records.push(Record::json("s", &track("strict", "s", 0)));
    records.push(Record::json(
        "x",
        &json!({"type":"identify","workspace":"acme"}),
    ));
    produce(&broker.brokers(), &topic, &records).await;

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(config.path())
        .env(API_KEY_ENV, API_KEY)
        .env("RUST_LOG", "debug")
        .env("SLUICE_LOG_FORMAT", "json")
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_until("events delivered", Duration::from_secs(60), || {
        api.received().len() >= 20
    })
    .await;
    let letters = {
        let brokers = broker.brokers();
        let dlq = format!("{topic}.dlq");
        tokio::task::spawn_blocking(move || read_topic(&brokers, &dlq, 2))
            .await
            .unwrap()
    };
    assert_eq!(letters.len(), 2);
    let metrics_text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM drains and exits 0: {status:?}");

    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("site-strict:{API_KEY}"));
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logs.contains("dead-lettered"),
        "the logs are real: {}",
        &logs[..logs.len().min(2000)]
    );
    for (what, text) in [
        ("logs", logs.as_str()),
        ("metrics", metrics_text.as_str()),
        (
            "dead-letter headers",
            &format!(
                "{:?}",
                letters.iter().map(|l| &l.headers).collect::<Vec<_>>()
            ),
        ),
    ] {
        assert!(!text.contains(API_KEY), "the API key is in the {what}");
        assert!(!text.contains(&token), "the Basic token is in the {what}");
    }
    let refused = letters
        .iter()
        .find(|l| l.headers["sluice.reason"] == "http_400")
        .unwrap();
    assert!(
        refused.headers["sluice.response"].contains("****"),
        "{:?}",
        refused.headers
    );
}

/// Quiet failure: with its broker gone, `sluice run` says so once (what, where, the
/// error), not twice every 50 ms; its log carries no build-machine source paths; the
/// outage is in the metrics and `/readyz` says why it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_away_is_one_line_not_a_flood() {
    use crate::common::fleet::{free_port, Pod};
    let dead = format!("127.0.0.1:{}", free_port());
    let api = sluice_mock_api::MockApi::start(Default::default())
        .await
        .unwrap();
    let setup = Setup::new(&dead, &unique("events"), &api.base_url(), &["local"]);
    let dir = tempfile::tempdir().unwrap();
    let mut pod = Pod::start(&setup.toml(), dir.path(), "pod");
    // Up, then ~8 s of a broker that refuses every connection.
    wait_until("the pod serves", Duration::from_secs(30), || {
        std::net::TcpStream::connect(pod.url.trim_start_matches("http://")).is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let metrics = scrape(&pod.url).await;
    let ready = reqwest::get(format!("{}/readyz", pod.url)).await.unwrap();
    let (status, why) = (ready.status(), ready.text().await.unwrap());
    pod.stop();
    let log = pod.log();
    let kafka_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("kafka") || l.contains("rdkafka"))
        .collect();
    println!(
        "{} log lines, {} about kafka:\n{log}",
        log.lines().count(),
        kafka_lines.len()
    );
    assert!(
        kafka_lines
            .iter()
            .any(|l| l.contains("kafka unreachable") && l.contains(&dead)),
        "one line naming what, where and the error:\n{log}"
    );
    assert!(
        kafka_lines.len() <= 4,
        "{} lines about kafka:\n{log}",
        kafka_lines.len()
    );
    assert!(
        !log.contains(".cargo/registry") && !log.contains("log.file"),
        "{log}"
    );
    assert_eq!(
        value(
            &metrics,
            "sluice_dependency_down",
            &[("dependency", "kafka")]
        ),
        1.0
    );
    assert!(
        value(
            &metrics,
            "sluice_dependency_failures_total",
            &[("dependency", "kafka")]
        ) > 10.0
    );
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(
        why.contains("kafka unreachable") && why.contains("Connection refused"),
        "{why}"
    );
    println!("/readyz: {why}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_broker_down_and_back_the_worker_waits_says_why_and_resumes() {
    // librdkafka's mock cluster takes its one broker down (connections cut, new ones
    // refused) for 25 s, then brings it back on the same address.
    let (broker, api, topic, setup) = TestEnv::mock(2, &["acme"]).await.into_parts();
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    let first = produce(&broker.brokers(), &topic, &tracks("acme", "u", 20, 0..300)).await;
    let (worker, url) = Worker::start_serving(setup.config()).await;
    setup.wait_committed(&first, 2).await;
    let readyz = || {
        let url = format!("{url}/readyz");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().is_success(), r.text().await.unwrap())
        }
    };
    assert!(readyz().await.0, "ready before");

    cluster.broker_down(1).unwrap();
    let commits_then = value(&scrape(&url).await, "sluice_commits_total", &[]);
    let down = std::time::Instant::now();
    let mut why = None;
    while down.elapsed() < Duration::from_secs(25) {
        let (ready, text) = readyz().await;
        if !ready && why.is_none() {
            why = Some((down.elapsed().as_secs_f64(), text));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let commits_away = value(&scrape(&url).await, "sluice_commits_total", &[]) - commits_then;
    cluster.broker_up(1).unwrap();
    let back = std::time::Instant::now();
    let second = produce(
        &broker.brokers(),
        &topic,
        &tracks("acme", "u", 20, 300..600),
    )
    .await;
    setup.wait_committed(&second, 2).await;
    let resumed = back.elapsed().as_secs_f64();
    let mut ready_again = false;
    for _ in 0..120 {
        if readyz().await.0 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    worker.stop().await;
    let (after, text) = why.expect("not ready while the broker was away");
    println!(
        "broker down 25 s: not ready after {after:.1} s ({}), {commits_away} commits while \
         away, everything after its return committed {resumed:.1} s later",
        text.trim()
    );
    assert!(text.contains("kafka"), "/readyz says why: {text}");
    assert_eq!(
        commits_away, 0.0,
        "nothing committed while the broker was away"
    );
    assert!(ready_again, "ready once the broker is back");
    let received: std::collections::HashSet<(String, u64)> = api
        .received()
        .iter()
        .filter_map(|r| {
            let attrs = &r.item["attributes"];
            Some((attrs["user"].as_str()?.to_string(), attrs["seq"].as_u64()?))
        })
        .collect();
    assert_eq!(received.len(), 600, "every event, before and after");
}

/// A pod whose broker goes away, then told to stop, exits within its grace period and
/// says so in a few lines: its final commit cannot reach anyone, so it is given up
/// (what it held is delivered again after the restart); and the outage is one outage
/// in the log, from every Kafka client the pod holds, not a line per librdkafka error
/// (the parking ledger's clients, never polled, kept theirs for exit: 139 identical
/// `AllBrokersDown` lines in a 20 s outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_broker_is_gone_stops_within_its_grace_period_in_a_few_log_lines() {
    let (broker, api, topic, setup) = TestEnv::build(2, &["acme"]).start().await.into_parts();
    // Requests still in flight when the broker goes: their answers complete offsets
    // that can no longer be committed.
    api.slow_site("site-acme", Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let mut pod = crate::common::fleet::Pod::start(&setup.toml(), dir.path(), "gone");
    let records: Vec<Record> = (0..40)
        .map(|i| {
            let user = format!("u{}", i % 4);
            Record::json(&user, &track("acme", &user, i))
        })
        .collect();
    produce(&broker.brokers(), &topic, &records).await;
    wait_until("requests in flight", Duration::from_secs(60), || {
        api.started() > 0
    })
    .await;
    drop(broker);
    wait_until(
        "the in-flight requests answered",
        Duration::from_secs(30),
        || !api.received().is_empty(),
    )
    .await;
    // A while without a broker, as an outage is.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let started = std::time::Instant::now();
    let (exited, log) = tokio::task::spawn_blocking(move || {
        let exited = pod.stop_within(Duration::from_secs(45));
        (exited, pod.log())
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let tail = log.get(log.len().saturating_sub(3000)..).unwrap_or(&log);
    assert!(
        exited,
        "still running {took:?} after SIGTERM with its broker gone (the shipped grace \
         period is 45 s); log tail: {tail}"
    );
    assert!(
        log.contains("sluice stopped"),
        "it stopped as it should: {tail}"
    );
    let lines = log.lines().count();
    eprintln!("stopped {took:?} after SIGTERM; {lines} log lines in all");
    assert!(
        lines <= 25,
        "{lines} log lines for one outage and a stop: {}",
        log.get(..6000).unwrap_or(&log)
    );
    api.stop().await;
}
