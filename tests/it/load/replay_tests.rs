//! `sluice replay`: order, bytes and pace kept, topic ↔ file round trips, the
//! refusals, time ranges, replayed events that fail, and a bad file line.

use super::*;

/// Produces records with the given timestamps round-robin over `partitions`, with a
/// binary key, a value and two headers (one without a value).
async fn produce_stamped(brokers: &str, topic: &str, partitions: i32, stamps: &[i64]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .create()
        .unwrap();
    let sends = stamps.iter().enumerate().map(|(i, ts)| {
        let key = [b'k', 0xff, i as u8];
        let value = format!("{{\"i\":{i}}}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "workspace",
                value: Some("acme"),
            })
            .insert(Header::<&[u8]> {
                key: "flag",
                value: None,
            });
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::to(topic)
                        .partition(i as i32 % partitions)
                        .key(&key[..])
                        .payload(&value)
                        .timestamp(*ts)
                        .headers(headers),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

/// Records a lossy format would get wrong: a null key, an empty key, an empty value, a
/// tombstone, a binary value and a binary header value.
async fn produce_odd_records(brokers: &str, topic: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let bin: &[u8] = &[0, 0xc3, 0x28, 0xff, b'\n'];
    let records: Vec<FutureRecord<'_, [u8], [u8]>> = vec![
        FutureRecord::to(topic).partition(0).payload(&b"no key"[..]),
        FutureRecord::to(topic)
            .partition(0)
            .key(&b""[..])
            .payload(&b"empty key"[..]),
        FutureRecord::to(topic)
            .partition(1)
            .key(&b"empty value"[..])
            .payload(&b""[..]),
        FutureRecord::to(topic).partition(1).key(&b"tombstone"[..]),
        FutureRecord::to(topic)
            .partition(0)
            .key(bin)
            .payload(bin)
            .headers(OwnedHeaders::new().insert(Header {
                key: "bin",
                value: Some(bin),
            })),
    ];
    for record in records {
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

fn without_replay_header(mut r: Raw) -> Raw {
    r.headers.retain(|(n, _)| n != replay::REPLAY_HEADER);
    r.topic = None;
    r.offset = None;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_at_10x_keeps_order_bytes_and_pace() {
    let broker = Broker::mock();
    let (source, target) = (unique("src"), unique("dst"));
    broker.create_topic(&source, 3).await;
    broker.create_topic(&target, 3).await;
    // 600 records 40 ms apart over 3 partitions: 24 s of traffic; the first 120 cut,
    // 19.2 s left: 1.9 s at 10x.
    let t0 = 1_764_000_000_000i64;
    let stamps: Vec<i64> = (0..600).map(|i| t0 + i * 40).collect();
    produce_stamped(&broker.brokers(), &source, 3, &stamps).await;
    let summary = run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--source-topic",
        &source,
        "--to-topic",
        &target,
        "--offsets",
        "0:40-",
        "--offsets",
        "1:40-",
        "--offsets",
        "2:40-",
        "--speed",
        "10",
        "--run-id",
        "r1",
    ])
    .await;
    println!("{}", serde_json::to_string(&summary).unwrap());
    assert_eq!(
        (summary.read, summary.written, summary.failed),
        (480, 480, 0)
    );
    let span_s =
        (summary.last_timestamp.unwrap() - summary.first_timestamp.unwrap()) as f64 / 1000.0;
    assert!(
        (summary.duration_s / (span_s / 10.0) - 1.0).abs() < 0.10,
        "{} s for {span_s} s at 10x",
        summary.duration_s
    );
    assert!(
        summary.pacing_error_ms.p99 < span_s * 1000.0 / 10.0 * 0.05,
        "{:?}",
        summary.pacing_error_ms
    );
    let src = read_all(&broker.brokers(), &source);
    let dst = read_all(&broker.brokers(), &target);
    for (p, records) in dst {
        let expected: Vec<Raw> = src[&p]
            .iter()
            .filter(|r| r.offset >= Some(40))
            .cloned()
            .collect();
        for (got, want) in records.iter().zip(&expected) {
            let origin = format!("r1:{source}:{p}:{}", want.offset.unwrap());
            assert_eq!(header(got, replay::REPLAY_HEADER), Some(origin.as_bytes()));
        }
        let got: Vec<Raw> = records.into_iter().map(without_replay_header).collect();
        let want: Vec<Raw> = expected.into_iter().map(without_replay_header).collect();
        assert_eq!(
            got, want,
            "partition {p}: same records, same order, same bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_file_topic_round_trip_keeps_every_byte() {
    let broker = Broker::mock();
    let (source, target) = (unique("src"), unique("dst"));
    broker.create_topic(&source, 2).await;
    broker.create_topic(&target, 2).await;
    let stamps: Vec<i64> = (0..100).map(|i| 1_764_000_000_000 + i).collect();
    produce_stamped(&broker.brokers(), &source, 2, &stamps).await;
    produce_odd_records(&broker.brokers(), &source).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.jsonl");
    let dump = run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--source-topic",
        &source,
        "--to-file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(dump.written, 105);
    println!("dump {}", serde_json::to_string(&dump).unwrap());
    let back = run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--from-file",
        file.to_str().unwrap(),
        "--to-topic",
        &target,
    ])
    .await;
    assert_eq!((back.read, back.written), (105, 105));
    let src = read_all(&broker.brokers(), &source);
    let dst = read_all(&broker.brokers(), &target);
    let tombstone = src[&1]
        .iter()
        .find(|r| r.key.as_deref() == Some(&b"tombstone"[..]))
        .unwrap();
    assert_eq!(tombstone.value, None, "the source holds a real tombstone");
    for (p, records) in src {
        let want: Vec<Raw> = records.into_iter().map(without_replay_header).collect();
        let got: Vec<Raw> = dst[&p].iter().cloned().map(without_replay_header).collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_to_write_into_what_it_reads_or_the_worker_consumes() {
    let broker = Broker::mock();
    let topic = unique("src");
    broker.create_topic(&topic, 1).await;
    let brokers = broker.brokers();
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || {
            run_binary(&[
                "replay",
                "--brokers",
                &brokers,
                "--source-topic",
                &topic,
                "--to-topic",
                &topic,
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("topic being read") && stderr.contains("--force"),
        "{stderr}"
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        crate::common::Setup::new(&brokers, "events", "http://127.0.0.1:9", &["acme"]).toml(),
    )
    .unwrap();
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let path = config.path().to_str().unwrap().to_string();
        move || {
            run_binary(&[
                "replay",
                "--config",
                &path,
                "--source-topic",
                &topic,
                "--to-topic",
                "events",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("kafka.topics") && stderr.contains("--force"),
        "{stderr}"
    );
}

/// Tansu: the mock cluster cannot look offsets up by time.
pub async fn replay_selects_exactly_a_time_range(broker: Broker) {
    let source = unique("src");
    broker.create_topic(&source, 2).await;
    let t0 = 1_764_000_000_000i64;
    let stamps: Vec<i64> = (0..100).map(|i| t0 + i * 1000).collect();
    produce_stamped(&broker.brokers(), &source, 2, &stamps).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("range.jsonl");
    let (from, to) = ((t0 + 20_000).to_string(), (t0 + 60_000).to_string());
    let summary = run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--source-topic",
        &source,
        "--from",
        &from,
        "--to",
        &to,
        "--to-file",
        file.to_str().unwrap(),
    ])
    .await;
    let got: Vec<i64> =
        sluice::tools::dump::read(std::io::BufReader::new(std::fs::File::open(&file).unwrap()))
            .map(|r| r.unwrap().timestamp.unwrap())
            .collect();
    let mut sorted = got.clone();
    sorted.sort();
    let want: Vec<i64> = stamps
        .into_iter()
        .filter(|t| *t >= t0 + 20_000 && *t < t0 + 60_000)
        .collect();
    assert_eq!(sorted, want, "exactly the records in [from, to)");
    assert_eq!(summary.written, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_that_fail_are_dead_lettered_as_replayed() {
    use crate::common::{Setup, Worker};
    use sluice::tools::mock_api::{MockApi, MockApiConfig};
    let broker = Broker::mock();
    let topic = unique("events");
    broker.create_topic(&topic, 1).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let made = run_loadgen(&[
        "--events",
        "20",
        "--invalid",
        "1",
        "--invalid-kinds",
        "malformed,unknown-type",
        "--to-file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(made.sent, 20);
    run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--from-file",
        file.to_str().unwrap(),
        "--to-topic",
        &topic,
        "--run-id",
        "drill-1",
    ])
    .await;
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    let setup = Setup::new(&broker.brokers(), &topic, &api.base_url(), &["local"]);
    let worker = Worker::start(setup.config());
    let letters = tokio::task::spawn_blocking({
        let (brokers, dlq) = (broker.brokers(), format!("{topic}.dlq"));
        move || crate::common::read_topic(&brokers, &dlq, 20)
    })
    .await
    .unwrap();
    worker.stop().await;
    api.stop().await;
    assert_eq!(letters.len(), 20);
    for l in &letters {
        assert!(
            l.headers["sluice.replay"].starts_with("drill-1:"),
            "{:?}",
            l.headers
        );
    }
    let config = setup.config();
    let report = tokio::task::spawn_blocking(move || {
        let letters = sluice::tools::dlq_cli::read(&config.kafka, &Default::default()).unwrap();
        sluice::tools::dlq_cli::report(&letters, 0)
    })
    .await
    .unwrap();
    assert!(
        report.contains("20 of them are replayed traffic"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_stops_a_file_replay_after_writing_what_came_before() {
    let broker = Broker::mock();
    let target = unique("dst");
    broker.create_topic(&target, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"value\":\"2\"}\nnot a record\n{\"key\":\"c\"}\n").unwrap();
    let summary = run_replay(&[
        "--brokers",
        &broker.brokers(),
        "--from-file",
        file.to_str().unwrap(),
        "--to-topic",
        &target,
    ])
    .await;
    assert_eq!(summary.written, 2);
    assert!(
        summary.error.as_deref().unwrap().contains("line 3"),
        "{:?}",
        summary.error
    );
    let keys: Vec<_> = read_all(&broker.brokers(), &target)
        .into_values()
        .flatten()
        .map(|r| r.key.unwrap())
        .collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
}
