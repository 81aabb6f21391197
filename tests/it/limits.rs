//! Rate limits, retries and dead letters end to end: the mock API (`sluice mock-api`)
//! (limited, faulty or recording) on one side, librdkafka's mock cluster on the other.
//!
//! Over 400 lines by design: 10 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use sluice_core::config::{LimitsConfig, Millis, RetryConfig};
use std::time::{Duration, Instant};

use rdkafka::mocking::{MockCluster, MockCoordinator};
use serde_json::json;
use sluice_mock_api::{Fault, Latency, MockApiConfig};

use crate::common::{
    committed, end_offsets, produce, read_topic, track, tracks, unique, wait_committed_to_end,
    wait_until, Broker, Record, Setup, TestEnv, Worker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_per_second_limit_is_used_fully_and_never_exceeded() {
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme"])
        .api(MockApiConfig {
            limit_per_s: 100,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    // One event per request, so the backlog is thousands of requests.
    setup.one_event_per_request();
    // The shipped defaults otherwise: burst 2, headroom 0.98.
    setup.limit(100.0);
    setup.in_flight(8);
    produce(&broker.brokers(), &topic, &tracks("acme", "u", 50, 0..3000)).await;

    let worker = Worker::start(setup.config());
    let requests = || {
        api.stats()
            .workspaces
            .get("site-acme")
            .map_or(0, |w| w.requests)
    };
    wait_until("the first request", Duration::from_secs(30), || {
        requests() > 0
    })
    .await;
    let start = requests();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let sent = requests() - start;
    let seconds = began.elapsed().as_secs_f64();
    worker.stop().await;

    let stats = api.stats();
    let acme = &stats.workspaces["site-acme"];
    let utilisation = sent as f64 / (100.0 * seconds);
    println!(
        "limit test: {sent} requests in {seconds:.1} s = {:.1}/s, utilisation {:.1}%, busiest one-second window {}",
        sent as f64 / seconds,
        utilisation * 100.0,
        acme.max_requests_per_second
    );
    assert!(
        acme.max_requests_per_second <= 100,
        "{}",
        acme.max_requests_per_second
    );
    assert_eq!(
        acme.throttled, 0,
        "never refused: the limit was never exceeded"
    );
    assert!(
        utilisation >= 0.95,
        "used {:.1}% of the budget",
        utilisation * 100.0
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_429s_pauses_and_slows_only_that_workspace() {
    let (broker, api, topic, mut setup) = TestEnv::mock(2, &["hot", "calm"]).await.into_parts();
    setup.batch(2, 5);
    setup.worker.limits = LimitsConfig {
        default_rate_limit_per_s: 50.0,
        default_burst: 1,
        headroom: 1.0,
        ..Default::default()
    };
    api.throttle_site("site-hot", 3, 2);
    let mut records = tracks("hot", "u", 10, 0..200);
    records.extend(tracks("calm", "u", 10, 0..200));
    produce(&broker.brokers(), &topic, &records).await;

    let worker = Worker::start(setup.config());
    wait_until("everything arrived", Duration::from_secs(60), || {
        api.received().len() >= 400
    })
    .await;
    let metrics = worker.stop().await;

    let arrivals = |site| -> Vec<_> {
        let arrived = api.arrivals(site).into_iter();
        arrived.map(|a| (a.at, a.refused)).collect()
    };
    let hot = arrivals("site-hot");
    let first_429 = hot
        .iter()
        .find(|(_, s)| *s == 429)
        .expect("a 429 was answered")
        .0;
    let last_429 = hot.iter().rev().find(|(_, s)| *s == 429).unwrap().0;
    // After a 429 with Retry-After: 2, nothing of that workspace arrives for 2 s.
    for (t, _) in hot.iter().filter(|(t, _)| *t > first_429) {
        let since_previous_429 = hot
            .iter()
            .filter(|(u, s)| *s == 429 && u < t)
            .map(|(u, _)| *u)
            .max()
            .unwrap();
        assert!(
            *t - since_previous_429 >= Duration::from_millis(1990),
            "a request {:?} after a 429 asking for 2 s",
            *t - since_previous_429
        );
    }
    // Meanwhile the other workspace kept going.
    let calm = arrivals("site-calm");
    let calm_during_pause = calm
        .iter()
        .filter(|(t, _)| *t > first_429 && *t < first_429 + Duration::from_secs(2))
        .count();
    assert!(
        calm_during_pause > 0,
        "calm sent nothing while hot was paused"
    );
    assert!(last_429 >= first_429);
    assert!(calm.iter().all(|(_, s)| *s == 0), "calm was never refused");
    assert!(metrics.throttled_count("hot") >= 3);
    // The 429s taught hot a lower rate (it probes back up after a hold, see
    // limit::adaptive); calm keeps its configured 50/s.
    let hot_rate = metrics.effective_rate("hot");
    assert!((2.5..50.0).contains(&hot_rate), "{hot_rate}");
    assert_eq!(metrics.effective_rate("calm"), 50.0);
    assert_eq!(api.received().len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_at_20_percent_lose_nothing() {
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme"])
        .api(MockApiConfig {
            fault_rate: 0.2,
            faults: vec![Fault::ServerError, Fault::Timeout, Fault::Reset],
            hang_ms: 1_000,
            latency: Latency::Uniform(0, 5),
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    setup.worker.destination.request_timeout_ms = Millis::new(300);
    setup.worker.retry = RetryConfig {
        max_attempts: 30,
        initial_backoff_ms: Millis::new(10),
        max_backoff_ms: Millis::new(100),
        ..Default::default()
    };
    setup.batch(5, 5);
    let positions = produce(&broker.brokers(), &topic, &tracks("acme", "u", 20, 0..300)).await;

    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    assert_eq!(stats.events_accepted, 300, "{stats:?}");
    assert_eq!(stats.duplicate_event_ids, 0);
    assert_eq!(stats.order_violations, 0, "retries kept each user's order");
    let faults: u64 = [0u16, 500, 502, 503, 504]
        .iter()
        .filter_map(|s| stats.requests_by_status.get(s))
        .sum();
    assert!(faults > 0, "faults were injected: {stats:?}");
    assert!(metrics.retry_count() >= faults, "every fault was retried");
    assert_eq!(metrics.dead_lettered_total(), 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_items_and_requests_are_dead_lettered_with_their_reasons() {
    let (broker, api, topic, setup) = TestEnv::build(1, &["acme", "strict"])
        .api(MockApiConfig::default())
        .dlq()
        .start()
        .await
        .into_parts();
    let mut records = tracks("acme", "u", 5, 0..50);
    for i in 0..3 {
        let mut bad = track("acme", "bad", 100 + i);
        bad["properties"]["mock_reject"] = json!("bad_email");
        records.push(Record::json("bad", &bad));
    }
    // Alone in its workspace, so the request it spoils carries nothing else.
    let mut spoiler = track("strict", "s", 0);
    spoiler["properties"]["mock_reject_request"] = json!(true);
    records.push(Record::json("s", &spoiler));
    let positions = produce(&broker.brokers(), &topic, &records).await;

    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 1).await;
    let metrics = worker.stop().await;

    assert_eq!(api.stats().events_accepted, 50);
    assert_eq!(metrics.dead_lettered_count("invalid_item"), 3);
    assert_eq!(metrics.dead_lettered_count("http_400"), 1);
    let letters = read_topic(&broker.brokers(), &format!("{topic}.dlq"), 4);
    assert_eq!(letters.len(), 4);
    for l in &letters {
        match l.headers["sluice.reason"].as_str() {
            "invalid_item" => {
                assert_eq!(l.headers["sluice.http_status"], "207");
                assert_eq!(l.headers["sluice.workspace"], "acme");
                assert!(
                    l.headers["sluice.response"].contains("bad_email"),
                    "{:?}",
                    l.headers
                );
            }
            "http_400" => {
                assert_eq!(l.headers["sluice.http_status"], "400");
                assert_eq!(l.headers["sluice.workspace"], "strict");
                assert_eq!(l.headers["sluice.attempts"], "1");
            }
            other => panic!("unexpected reason {other}"),
        }
        let original: serde_json::Value =
            serde_json::from_slice(l.payload.as_ref().unwrap()).unwrap();
        assert!(
            original["properties"].get("mock_reject").is_some()
                || original["properties"].get("mock_reject_request").is_some()
        );
        assert!(
            !l.headers
                .values()
                .any(|v| v.contains(crate::common::API_KEY)),
            "no credentials"
        );
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_batch_and_the_halves_arrive() {
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["acme"])
        .api(MockApiConfig {
            max_batch_bytes: 3_000,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    setup.batch(40, 200);
    let positions = produce(&broker.brokers(), &topic, &tracks("acme", "u", 4, 0..120)).await;

    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 1).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    assert!(
        stats.requests_by_status.get(&413).copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    assert_eq!(stats.events_accepted, 120);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.dead_lettered_total(), 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_dlq_holds_commits_until_it_returns() {
    // Two brokers: the source and the group live on 1, the dead-letter topic on 2.
    let cluster = MockCluster::new(2).unwrap();
    let brokers = cluster.bootstrap_servers();
    let api = crate::common::recording_api().await;
    let topic = unique("events");
    let dlq = format!("{topic}.dlq");
    cluster.create_topic(&topic, 1, 1).unwrap();
    cluster.create_topic(&dlq, 1, 1).unwrap();
    cluster.partition_leader(&topic, 0, Some(1)).unwrap();
    cluster.partition_leader(&dlq, 0, Some(2)).unwrap();
    // The parking topic beside the source, where the worker would create it.
    let park = format!("{topic}.park");
    cluster.create_topic(&park, 1, 1).unwrap();
    cluster.partition_leader(&park, 0, Some(1)).unwrap();
    let setup = Setup::new(&brokers, &topic, &api.base_url(), &["acme"]);
    cluster
        .coordinator(MockCoordinator::Group(setup.group().to_string()), 1)
        .unwrap();
    let mut records = tracks("acme", "u", 3, 0..5);
    records.push(Record {
        key: "k".into(),
        payload: b"not json at all".to_vec(),
        workspace_header: None,
    });
    records.extend((5..10).map(|i| {
        let user = format!("u{}", i % 3);
        Record::json(&user, &track("acme", &user, i))
    }));
    produce(&brokers, &topic, &records).await;
    cluster.broker_down(2).unwrap();

    let worker = Worker::start(setup.config());
    wait_until("all valid events arrived", Duration::from_secs(60), || {
        api.received().len() >= 10
    })
    .await;
    wait_until("the DLQ write failed", Duration::from_secs(60), || {
        worker.metrics.dlq_error_count() > 0
    })
    .await;
    // The invalid event is offset 5: nothing at or past it may be committed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = committed(&brokers, setup.group(), &topic, 1)[&0];
    assert!(
        held.unwrap_or(0) <= 5,
        "committed {held:?} past the undead-lettered offset 5"
    );

    let failed_writes = worker.metrics.dlq_error_count();
    cluster.broker_up(2).unwrap();
    let back = std::time::Instant::now();
    let ends = [(0, 11)].into_iter().collect();
    wait_committed_to_end(&brokers, setup.group(), &topic, &ends).await;
    let caught_up = back.elapsed();
    let metrics = worker.stop().await;
    assert_eq!(metrics.dead_lettered_count("malformed_json"), 1);
    let letters = read_topic(&brokers, &dlq, 1);
    assert_eq!(letters[0].payload.as_deref(), Some(&b"not json at all"[..]));
    println!(
        "dead-letter topic down: {} of 10 valid events delivered meanwhile, {failed_writes} \
         failed letter writes, committed held at {held:?} (the bad record is offset 5); \
         back: the letter landed and the source committed to its end {caught_up:.1?} later",
        api.received().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_of_a_reason_sends_those_events_back_and_they_are_delivered() {
    let (broker, api, topic, setup) = TestEnv::build(1, &["acme", "broken"])
        .dlq()
        .start()
        .await
        .into_parts();
    // The API refuses one workspace for a while (say its plan lapsed).
    api.refuse_site("site-broken", Some(400));
    let mut records = tracks("acme", "u", 3, 0..20);
    records.extend(tracks("broken", "u", 3, 0..6));
    let mut bad = Record::json("x", &json!({"type":"track","workspace":"acme"}));
    bad.key = "x".into();
    records.push(bad);
    produce(&broker.brokers(), &topic, &records).await;

    let worker = Worker::start(setup.config());
    wait_until("dead letters written", Duration::from_secs(60), || {
        worker.metrics.dead_lettered_total() >= 7
    })
    .await;
    assert_eq!(api.received().len(), 20);
    api.refuse_site("site-broken", None);

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), setup.toml()).unwrap();
    let sluice = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .arg("--config")
            .arg(config.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report = sluice(&["dlq", "inspect"]);
    assert!(report.contains("7 dead letters"), "{report}");
    assert!(
        report.contains("http_400") && report.contains("missing_user_id"),
        "{report}"
    );

    let dry = sluice(&["dlq", "redrive", "--reason", "http_400"]);
    assert!(dry.contains("6 dead letters would be redriven"), "{dry}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.received().len(), 20, "a dry run sends nothing");

    let done = sluice(&["dlq", "redrive", "--reason", "http_400", "--execute"]);
    assert!(done.contains("redrove 6"), "{done}");
    wait_until(
        "the redriven events arrived",
        Duration::from_secs(60),
        || api.received().len() >= 26,
    )
    .await;
    worker.stop().await;
    let broken = api
        .received()
        .iter()
        .filter(|r| r.site_id == "site-broken")
        .count();
    assert_eq!(broken, 6);
    // The malformed one was not chosen and stays where it is.
    assert_eq!(api.received().len(), 26);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_without_its_payload_is_not_redriven_as_an_empty_event() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = Broker::mock();
    let topic = broker.fresh_topic_with_dlq("events", 1).await;
    let setup = Setup::new(&broker.brokers(), &topic, "http://127.0.0.1:9", &["acme"]);
    // Two letters as the worker writes them: one whole, one whose 3 MB payload the
    // DLQ topic refused, so it carries only its headers.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    let whole = serde_json::to_vec(&track("acme", "u1", 0)).unwrap();
    for (offset, payload, omitted) in [
        (7, Some(whole.as_slice()), None),
        (8, None, Some("3000000")),
    ] {
        let offset = offset.to_string();
        let mut h = OwnedHeaders::new();
        for (key, value) in [
            ("sluice.reason", Some("http_400")),
            ("sluice.topic", Some(topic.as_str())),
            ("sluice.partition", Some("0")),
            ("sluice.offset", Some(offset.as_str())),
            ("sluice.workspace", Some("acme")),
            ("sluice.payload_omitted", omitted),
        ] {
            if let Some(value) = value {
                h = h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
        }
        let dlq = format!("{topic}.dlq");
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&dlq).key("u1").headers(h);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), setup.toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["dlq", "redrive", "--execute", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("redrove 1 dead letters"), "{stdout}");
    assert!(
        stdout.contains("1 not redriven: their payload was omitted")
            && stdout.contains(&format!("{topic}/0@8")),
        "{stdout}"
    );
    let ends = end_offsets(&broker.brokers(), &topic, 1);
    assert_eq!(ends[&0], Some(1), "only the whole letter went back");
    let back = read_topic(&broker.brokers(), &topic, 1);
    assert_eq!(back[0].payload.as_deref(), Some(whole.as_slice()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_silent_throttling_the_limiter_alone_keeps_every_event() {
    // Customer.io documents no 429: over its limit it may just drop. The mock does that
    // with --silent-throttle; sluice must never go over, so nothing is dropped.
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["acme"])
        .api(MockApiConfig {
            limit_per_s: 5,
            silent_throttle: true,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    setup.one_event_per_request();
    setup.limit_with_burst(5.0, 1);
    let positions = produce(&broker.brokers(), &topic, &tracks("acme", "u", 3, 0..30)).await;

    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 1).await;
    worker.stop().await;

    let stats = api.stats();
    assert_eq!(stats.events_dropped, 0, "{stats:?}");
    assert_eq!(stats.events_accepted, 30);
    assert!(stats.workspaces["site-acme"].max_requests_per_second <= 5);
    api.stop().await;
}

fn dlq_config(brokers: &str) -> sluice_core::config::Config {
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
         dlq_topic = \"t.dlq\"\n[destination]\nkind = \"customerio\"\n\
         [[workspaces]]\nid = \"w\"\nsite_id = \"s\"\napi_key_env = \"K\"\n"
    );
    sluice_core::config::Config::from_toml(&text, "test", [("K".to_string(), "k".to_string())])
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatally_failed_dead_letter_producer_is_replaced_and_the_letter_still_lands() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use sluice_core::deliver::Failure;
    use sluice_core::dlq::{DeadLetter, DeadLetters};
    use sluice_core::metrics::Metrics;
    use sluice_core::record::{Origin, Raw, TopicPartition};
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t.dlq", 1, 1).unwrap();
    let letters =
        DeadLetters::new(&dlq_config(&cluster.bootstrap_servers()), Metrics::new()).unwrap();
    let failure =
        Failure::without_request(sluice_core::record::FailureReason::Http(400), "refused");
    let origin = Origin {
        tp: TopicPartition::new("t", 0),
        offset: 7,
    };
    let raw = Raw {
        payload: Some(b"{}".to_vec()),
        ..Raw::default()
    };
    let letter = || DeadLetter {
        origin: &origin,
        raw: &raw,
        workspace: Some("w"),
        failure: &failure,
    };
    letters.send(letter()).await;
    // What an idempotent producer that lost its sequence numbers reports: every
    // send on it fails from now on.
    let first = letters.producer();
    let reason = std::ffi::CString::new("test: out of sequence").unwrap();
    // SAFETY: a live client handle and a NUL-terminated string.
    unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            first.client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        );
    }
    assert!(first.client().fatal_error().is_some());
    tokio::time::timeout(Duration::from_secs(30), letters.send(letter()))
        .await
        .expect("the letter lands on a new producer");
    assert!(!std::sync::Arc::ptr_eq(&first, &letters.producer()));

    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "r")
        .create()
        .unwrap();
    let (_, high) = reader
        .fetch_watermarks("t.dlq", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(high, 2, "both letters are in the topic");
}
