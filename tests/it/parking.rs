//! Tenant isolation: a workspace that cannot deliver (refused, limited below its inflow,
//! its API away) is parked — its events go to the parking topic — and the others keep
//! their pace; the source's commits keep moving; the parked events come back, in
//! per-user order, once the workspace can take them.
//!
//! Over 400 lines by design: 5 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use std::time::{Duration, Instant};

use rdkafka::mocking::{MockCluster, MockCoordinator};
use sluice_mock_api::{MockApi, MockApiConfig};

use crate::common::fleet::PROCESSES;
use crate::common::{
    produce, tracks, unique, wait_until, Broker, Record, Setup, TestEnv, Worker, API_KEY,
};

/// `ok` and `blocked` interleaved, `n` events each over 200 users apiece.
pub(crate) fn two_workspaces(n: usize) -> Vec<Record> {
    let ok = tracks("ok", "u", 200, 0..n);
    let blocked = tracks("blocked", "v", 200, 0..n);
    ok.into_iter()
        .zip(blocked)
        .flat_map(|(a, b)| [a, b])
        .collect()
}

fn accepted(api: &MockApi, site: &str) -> u64 {
    api.stats()
        .workspaces
        .get(site)
        .map_or(0, |w| w.events_accepted)
}

/// Events/s `ok` reaches from its first accepted event until it has all `n`.
async fn ok_rate(api: &MockApi, n: u64) -> f64 {
    wait_until("ok's first event", Duration::from_secs(60), || {
        accepted(api, "site-ok") > 0
    })
    .await;
    let (start, first) = (Instant::now(), accepted(api, "site-ok"));
    wait_until("every ok event", Duration::from_secs(120), || {
        accepted(api, "site-ok") >= n
    })
    .await;
    (n - first) as f64 / start.elapsed().as_secs_f64()
}

fn setup(broker: &Broker, topic: &str, api: &MockApi, workspaces: &[&str]) -> Setup {
    let mut setup = Setup::new(&broker.brokers(), topic, &api.base_url(), workspaces);
    setup.parking(&format!("{topic}.park"), 2000, 1000);
    // ok: 50 requests/s of 20 events, 1 000 events/s: its rate is its limit's, alone
    // or not, so "unaffected" can be measured on a noisy machine.
    setup.limit(50.0);
    setup
}

/// The least share of its rate alone a healthy workspace keeps beside a refused one
/// in any single run of the mock-cluster isolation tests (the target, 90%, is
/// their median: single runs on this shared 2-core machine vary by several points).
const SINGLE_RUN_SHARE: f64 = 0.85;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_refused_401_is_parked_the_other_keeps_its_rate_and_all_arrive_once_fixed() {
    let _alone = PROCESSES.lock().await;
    // ~10 s of ok's events in each run: a one-second hiccup of this shared machine
    // moves the ratio by a tenth, not a sixth (6 000 read 84% once in CI, 97-100%
    // alone and in sequence).
    const N: usize = 10_000;
    let broker = Broker::mock();
    // The rate ok reaches alone.
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    let alone_topic = unique("alone");
    broker.create_topic(&alone_topic, 4).await;
    produce(
        &broker.brokers(),
        &alone_topic,
        &tracks("ok", "u", 200, 0..N),
    )
    .await;
    let worker = Worker::start(setup(&broker, &alone_topic, &api, &["ok"]).config());
    let alone = ok_rate(&api, N as u64).await;
    println!("ok alone: {alone:.0} events/s");
    worker.stop().await;
    api.stop().await;

    // Beside it, a workspace whose API refuses its key.
    let api = MockApi::start(MockApiConfig {
        keys: vec![format!("site-ok:{API_KEY}")],
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let topic = broker.fresh_topic("events", 4).await;
    let positions = produce(&broker.brokers(), &topic, &two_workspaces(N)).await;
    let s = setup(&broker, &topic, &api, &["ok", "blocked"]);
    let worker = Worker::start(s.config());
    let beside = ok_rate(&api, N as u64).await;
    // Every source offset commits: blocked's events are in the parking topic.
    s.wait_committed(&positions, 4).await;
    let parked = worker.metrics.parked_count("blocked", "written");
    println!(
        "isolation: ok alone {alone:.0} events/s, beside a refused workspace {beside:.0} \
         events/s ({:.0}%); source committed to the end; {parked} of blocked's {N} events \
         parked, {} refused requests",
        beside / alone * 100.0,
        api.stats()
            .requests_by_status
            .get(&401)
            .copied()
            .unwrap_or(0)
    );
    // One run on this shared 2-core machine (broker, API and worker in one process)
    // varies by several points: 97-100% alone, 84-89% in some CI runs. The 90%
    // is the median, reported in its note; a single run must keep 85%.
    assert!(
        beside >= SINGLE_RUN_SHARE * alone,
        "{beside} vs {alone} events/s"
    );
    assert!(parked >= N as u64, "{parked} parked");
    assert_eq!(accepted(&api, "site-blocked"), 0);
    worker.stop().await;
    api.stop().await;
    // `sluice park inspect` shows them waiting.
    let inspected = sluice_core::tools::park_cli::inspect(&s.config(), 2).unwrap();
    print!("{}", sluice_core::tools::park_cli::report(&inspected));
    assert_eq!(inspected["blocked"].waiting, N, "{inspected:?}");
    assert_eq!(inspected.get("ok").map_or(0, |p| p.waiting), 0);
    // The parking ledger's floors (offsets only, no commit metadata) stand at or below
    // blocked's parked events, so the next owner finds them.
    let floors = crate::common::committed(
        &broker.brokers(),
        &format!("{}.park", s.group()),
        &format!("{topic}.park"),
        4,
    );
    assert!(floors.values().all(|f| *f == Some(0)), "{floors:?}");

    // Its key fixed (an API that accepts it), a restart: every parked event arrives,
    // in per-user order.
    let fixed = MockApi::start(MockApiConfig::default()).await.unwrap();
    let mut s2 = s.clone();
    s2.worker.destination.base_url = Some(fixed.base_url());
    let worker = Worker::start(s2.config());
    let deadline = Instant::now() + Duration::from_secs(120);
    while accepted(&fixed, "site-blocked") < N as u64 {
        assert!(
            Instant::now() < deadline,
            "blocked: {} of {N} after the fix; {}",
            accepted(&fixed, "site-blocked"),
            worker
                .metrics
                .render()
                .lines()
                .filter(|l| l.contains("parked")
                    || l.contains("buffered")
                    || l.contains("delivered"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until("back on the direct path", Duration::from_secs(30), || {
        worker
            .metrics
            .render()
            .contains("sluice_workspace_parked{workspace=\"blocked\"} 0")
    })
    .await;
    let metrics = worker.stop().await;
    let stats = fixed.stats();
    let blocked = &stats.workspaces["site-blocked"];
    println!(
        "after the fix: {} blocked events accepted ({} duplicates), {} order violations, {} drained from the parking topic",
        blocked.events_accepted,
        blocked.duplicate_event_ids,
        stats.order_violations,
        metrics.parked_count("blocked", "drained")
    );
    assert_eq!(stats.order_violations, 0);
    assert!(
        blocked.duplicate_event_ids <= 2_000,
        "{}",
        blocked.duplicate_event_ids
    );
    assert_eq!(
        accepted(&fixed, "site-ok"),
        0,
        "ok's events were all committed before"
    );
    fixed.stop().await;
}

/// Isolation with the minimal configuration a new user writes (no parking settings,
/// no parking topic: the worker derives `<topic>.park` and creates it) on `broker`:
/// `ok` alone (only its events), then beside `blocked`, which the API refuses (401)
/// for good. `ok` keeps
/// at least `min_share` of its rate alone, every source offset commits, nothing of
/// `blocked` is lost (all parked) — and once its key is fixed, every one of its events
/// arrives in per-user order.
async fn minimal_config_isolates_a_refused_workspace(broker: Broker, min_share: f64) {
    // Over the default per-workspace share (25 000 buffered ÷ 2 workspaces): without
    // isolation, ok stalls once blocked's lane holds 12 500.
    const N: usize = 20_000;
    let minimal = |topic: &str, api: &MockApi, workspaces: &[&str]| {
        let mut s = Setup::new(&broker.brokers(), topic, &api.base_url(), workspaces);
        // ok: 100 requests/s of 20 events, 2 000 events/s: its rate is its limit's,
        // alone or not, so "unaffected" can be measured on a noisy machine.
        s.limit(100.0);
        assert!(
            s.worker.kafka.park_topic.is_none() && s.worker.kafka.max_buffered_events == 25_000
        );
        s
    };
    // Alone: the same configuration (both workspaces, so the same shares: ok, bound
    // by its limit, is parked in both runs), only ok's events.
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    let alone_topic = broker.fresh_topic("alone", 4).await;
    produce(
        &broker.brokers(),
        &alone_topic,
        &tracks("ok", "u", 200, 0..N),
    )
    .await;
    let worker = Worker::start(minimal(&alone_topic, &api, &["ok", "blocked"]).config());
    let alone = ok_rate(&api, N as u64).await;
    let alone_parked = worker.stop().await.parked_count("ok", "written");
    let alone_requests = api.stats().workspaces["site-ok"].requests;
    api.stop().await;

    let api = MockApi::start(MockApiConfig {
        keys: vec![format!("site-ok:{API_KEY}")],
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let topic = broker.fresh_topic("events", 4).await;
    let positions = produce(&broker.brokers(), &topic, &two_workspaces(N)).await;
    let s = minimal(&topic, &api, &["ok", "blocked"]);
    let worker = Worker::start(s.config());
    let beside = ok_rate(&api, N as u64).await;
    s.wait_committed(&positions, 4).await;
    let metrics = worker.stop().await;
    let parked = metrics.parked_count("blocked", "written");
    let beside_requests = api.stats().workspaces["site-ok"].requests;
    println!(
        "minimal config: ok alone {alone:.0} events/s ({alone_requests} requests), beside a \
         refused workspace {beside:.0} events/s ({:.0}%, {beside_requests} requests); source \
         committed to the end; {parked} of blocked's {N} parked; ok parked {alone_parked} \
         alone, {} beside",
        beside / alone * 100.0,
        metrics.parked_count("ok", "written")
    );
    assert!(beside >= min_share * alone, "{beside} vs {alone} events/s");
    assert!(parked > 0, "blocked was parked");
    assert_eq!(accepted(&api, "site-blocked"), 0);
    api.stop().await;

    // Its key fixed: every blocked event arrives, in per-user order.
    let fixed = MockApi::start(MockApiConfig::default()).await.unwrap();
    let mut s2 = s.clone();
    s2.worker.destination.base_url = Some(fixed.base_url());
    let worker = Worker::start(s2.config());
    wait_until(
        "every blocked event after the fix",
        Duration::from_secs(180),
        || accepted(&fixed, "site-blocked") >= N as u64,
    )
    .await;
    worker.stop().await;
    let stats = fixed.stats();
    println!(
        "after the fix: {} blocked events accepted ({} duplicates), {} order violations",
        stats.workspaces["site-blocked"].events_accepted,
        stats.workspaces["site-blocked"].duplicate_event_ids,
        stats.order_violations
    );
    assert_eq!(stats.order_violations, 0);
    assert_eq!(
        accepted(&fixed, "site-ok"),
        0,
        "ok's events were all committed"
    );
    fixed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_config_isolates_a_refused_workspace_on_the_mock_cluster() {
    let _alone = PROCESSES.lock().await;
    // The worker runs here in this debug test binary, where writing and reading back
    // 20 000 parked events takes the process's CPU for a second or two (ok read 79-97%
    // of its rate alone in single runs): the floor only tells isolation from a stall
    // (without it ok stopped at 62%). The rates a user sees are measured on the
    // release binary, on the mock cluster and on Tansu: `isolation::drill_*`.
    minimal_config_isolates_a_refused_workspace(Broker::mock(), 0.75).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_limited_far_below_its_inflow_drains_through_the_parking_topic() {
    let _alone = PROCESSES.lock().await;
    let (broker, api, topic, mut s) = TestEnv::build(4, &["slow", "fast"])
        .api(MockApiConfig::default())
        .parking()
        .start()
        .await
        .into_parts();
    // slow: 10 requests/s of 5 events; fast: unlimited. 50× slow's pace arrives.
    let mut records = tracks("slow", "s", 100, 0..1_500);
    records.extend(tracks("fast", "f", 100, 0..10_000));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    s.worker.kafka.max_buffered_events = 1000;
    s.worker.kafka.resume_buffered_events = Some(500);
    s.batch(5, 20);
    s.limit(1000.0);
    let slow = s.workspace("slow");
    slow.rate_limit_per_s = Some(10.0);
    slow.burst = Some(1);
    let config = s.config();
    let started = Instant::now();
    let worker = Worker::start(config);
    wait_until("every fast event", Duration::from_secs(60), || {
        accepted(&api, "site-fast") >= 10_000
    })
    .await;
    let fast_done = started.elapsed();
    s.wait_committed(&positions, 4).await;
    let committed = started.elapsed();
    let slow_then = accepted(&api, "site-slow");
    let slow_requests_then = api.stats().workspaces["site-slow"].requests;
    wait_until("every slow event", Duration::from_secs(120), || {
        accepted(&api, "site-slow") >= 1_500
    })
    .await;
    let slow_done = started.elapsed();
    let drain_rate = (api.stats().workspaces["site-slow"].requests - slow_requests_then) as f64
        / (slow_done - committed).as_secs_f64();
    let metrics = worker.stop().await;
    let stats = api.stats();
    println!(
        "limited: fast's 10 000 events in {fast_done:?}; source committed to the end after \
         {committed:?} with slow at {slow_then} of 1 500; slow done after {slow_done:?} \
         ({} parked) at {drain_rate:.1} requests/s, busiest slow second {} requests, {} order \
         violations",
        metrics.parked_count("slow", "written"),
        stats.workspaces["site-slow"].max_requests_per_second,
        stats.order_violations
    );
    assert!(slow_then < 1_500, "the source did not wait for slow");
    assert!(metrics.parked_count("slow", "written") > 0);
    // It drained at its limit (the strict per-window check is the limiter's own tests').
    assert!(drain_rate <= 10.2, "{drain_rate} requests/s");
    assert!(drain_rate >= 8.0, "{drain_rate} requests/s");
    assert_eq!(stats.order_violations, 0);
    api.stop().await;
}

/// The mock API, knowing only `ok`'s key: `blocked` is refused with 401.
async fn ok_only_api() -> MockApi {
    MockApi::start(MockApiConfig {
        keys: vec![format!("site-ok:{API_KEY}")],
        ..MockApiConfig::default()
    })
    .await
    .unwrap()
}

/// A mock cluster of two brokers: the source, the DLQ and every group on broker 1, the
/// parking topic (2 partitions) on broker 2, which is down once `records` are produced.
/// Returns the cluster, the setup (share 300 of 600 buffered) and the produced positions.
async fn parking_broker_down(
    api: &MockApi,
    records: &[Record],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Setup,
    Vec<(i32, i64)>,
) {
    let cluster = MockCluster::new(2).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("events");
    let park = format!("{topic}.park");
    cluster.create_topic(&topic, 2, 1).unwrap();
    cluster.create_topic(&park, 2, 1).unwrap();
    cluster.create_topic(&format!("{topic}.dlq"), 1, 1).unwrap();
    for p in 0..2 {
        cluster.partition_leader(&topic, p, Some(1)).unwrap();
        cluster.partition_leader(&park, p, Some(2)).unwrap();
    }
    let mut s = Setup::new(&brokers, &topic, &api.base_url(), &["ok", "blocked"]);
    // Only the parking topic's partitions are away: every group (the source's, the
    // parking readers', the ledger's) is coordinated by broker 1.
    for group in ["", ".park", ".park.ledger", ".park.ok", ".park.blocked"] {
        cluster
            .coordinator(MockCoordinator::Group(format!("{}{group}", s.group())), 1)
            .unwrap();
    }
    s.parking(&park, 600, 300);
    let positions = produce(&brokers, &topic, records).await;
    cluster.broker_down(2).unwrap();
    (cluster, s, positions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_parking_topic_pauses_as_before_and_loses_nothing() {
    let _alone = PROCESSES.lock().await;
    let api = ok_only_api().await;
    let (cluster, s, positions) = parking_broker_down(&api, &two_workspaces(2_000)).await;
    let worker = Worker::start(s.config());
    wait_until("the consumer pauses", Duration::from_secs(60), || {
        worker.metrics.paused()
    })
    .await;
    let held = worker.metrics.buffered();
    assert!(held <= 800, "{held} buffered");
    assert!(
        accepted(&api, "site-ok") < 2_000,
        "paused before ok finished"
    );
    cluster.broker_up(2).unwrap();
    s.wait_committed(&positions, 2).await;
    wait_until("every ok event", Duration::from_secs(60), || {
        accepted(&api, "site-ok") >= 2_000
    })
    .await;
    let metrics = worker.stop().await;
    println!(
        "parking topic down: paused at {held} buffered; back: committed to the end, {} parked",
        metrics.parked_count("blocked", "written")
    );
    assert!(metrics.parked_count("blocked", "written") >= 1_500);
    api.stop().await;
}

/// A workspace that could not be parked while the parking topic was away, and whose
/// events then filled the whole buffer (the source paused: no new event comes), is
/// parked once the topic is back: the lane tries again on its own, not only when an
/// event arrives (it failed every time before that). And a return whose fence the
/// reader cannot meet — its lane full of refused events — does not hold what arrived
/// meanwhile for ever: about one run in five ended with a partition's last ~200 events
/// held, uncommitted, until returns were given up after a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_that_filled_the_buffer_while_parking_was_away_is_parked_once_it_is_back() {
    let _alone = PROCESSES.lock().await;
    let api = ok_only_api().await;
    // Only the refused workspace's events: nothing else will wake its lane.
    let records = tracks("blocked", "v", 200, 0..2_000);
    let (cluster, s, positions) = parking_broker_down(&api, &records).await;
    let worker = Worker::start(s.config());
    wait_until("the consumer pauses", Duration::from_secs(60), || {
        worker.metrics.paused()
    })
    .await;
    cluster.broker_up(2).unwrap();
    s.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;
    assert_eq!(metrics.parked_count("blocked", "written"), 2_000);
    api.stop().await;
}

/// A workspace over its share that cannot be parked on some partitions (the parking
/// topic has fewer partitions than the source, and cannot grow) keeps those events in
/// its lane: it does not take back everything it holds — aborting its requests in flight
/// and sending them again — at every new event. The others keep going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_that_cannot_be_parked_keeps_its_events_without_resending_them() {
    let _alone = PROCESSES.lock().await;
    // librdkafka's mock cluster cannot add partitions: the parking topic stays at 2.
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let topic = unique("events");
    cluster.create_topic(&topic, 4, 1).unwrap();
    cluster
        .create_topic(&format!("{topic}.park"), 2, 1)
        .unwrap();
    cluster.create_topic(&format!("{topic}.dlq"), 1, 1).unwrap();
    let api = MockApi::start(MockApiConfig {
        keys: vec![format!("site-ok:{API_KEY}")],
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let mut s = Setup::new(&brokers, &topic, &api.base_url(), &["ok", "blocked"]);
    s.worker.kafka.max_buffered_events_per_workspace = Some(300);
    produce(&brokers, &topic, &two_workspaces(1_500)).await;
    let worker = Worker::start(s.config());
    wait_until("every ok event", Duration::from_secs(90), || {
        accepted(&api, "site-ok") >= 1_500
    })
    .await;
    // blocked's events of partitions 2 and 3 wait in its lane, retried at the longest
    // backoff: a few requests, not one burst per event it read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = api
        .stats()
        .requests_by_status
        .get(&401)
        .copied()
        .unwrap_or(0);
    let metrics = worker.stop().await;
    let parked = metrics.parked_count("blocked", "written");
    println!("cannot park 2 of 4 partitions: {parked} parked, {refused} refused requests");
    assert!(parked > 0, "partitions 0 and 1 were parked");
    // 45-66 measured: retries of the events it keeps and of those its reader hands
    // back (more since the reader no longer stalls on its lag measures). The fault
    // this guards against sent a burst at every one of the 1 500 events it read.
    assert!(
        refused <= 100,
        "{refused} requests refused: sent again and again"
    );
    api.stop().await;
}

/// A pod reads back at most `kafka.park_readers` parked workspaces at once. With one
/// reader, taken by a workspace the API refuses for good, a workspace parked after it
/// and then fixed still gets a turn — the first hands its reader on after its turn —
/// and every one of its events arrives, in per-user order; the refused one's stay
/// parked, and every source offset commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_reader_a_workspace_refused_for_good_hands_it_on_and_a_fixed_one_returns() {
    let _alone = PROCESSES.lock().await;
    const N: usize = 1_500;
    let broker = Broker::mock();
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    api.refuse_site("site-stuck", Some(401));
    api.refuse_site("site-late", Some(401));
    let topic = broker.fresh_topic("events", 2).await;
    let mut s = setup(&broker, &topic, &api, &["stuck", "late"]);
    s.worker.kafka.park_readers = 1;
    let worker = Worker::start(s.config());
    // stuck is parked first and takes the one reader.
    let stuck = produce(&broker.brokers(), &topic, &tracks("stuck", "s", 100, 0..N)).await;
    s.wait_committed(&stuck, 2).await;
    assert!(worker.metrics.parked_count("stuck", "written") > 0);
    // late is parked after it, waits for the reader, and is fixed.
    let late = produce(&broker.brokers(), &topic, &tracks("late", "l", 100, 0..N)).await;
    s.wait_committed(&late, 2).await;
    assert!(worker.metrics.parked_count("late", "written") > 0);
    api.refuse_site("site-late", None);
    let fixed_at = Instant::now();
    wait_until("every late event", Duration::from_secs(90), || {
        accepted(&api, "site-late") >= N as u64
    })
    .await;
    let took = fixed_at.elapsed();
    let rendered = worker.metrics.render();
    let handed_on = rendered
        .lines()
        .find(|l| l.starts_with("sluice_park_reader_handed_on_total{workspace=\"stuck\"}"))
        .unwrap_or("none");
    let metrics = worker.stop().await;
    let stats = api.stats();
    println!(
        "one reader: late's {N} events delivered {:.1} s after its fix ({} duplicates, {} \
         order violations); stuck: {handed_on}, {} parked, {} delivered",
        took.as_secs_f64(),
        stats.workspaces["site-late"].duplicate_event_ids,
        stats.order_violations,
        metrics.parked_count("stuck", "written"),
        accepted(&api, "site-stuck"),
    );
    assert_eq!(stats.order_violations, 0);
    assert_eq!(fresh_reorders(&api.received()), 0);
    assert_eq!(accepted(&api, "site-stuck"), 0);
    assert!(handed_on != "none", "stuck never handed its reader on");
    api.stop().await;
}

/// Thousands of workspaces parked at once on one pod (the API refusing every one):
/// each is parked, the source commits to its end, and the pod runs at most
/// `kafka.park_readers` readers (not one Kafka consumer per parked workspace); once the
/// API takes them again, every event arrives, in per-user order, the workspaces taking
/// their turns at the readers. `SLUICE_DRILL_PARKED=N` workspaces (CI: 300; the
/// issue's 10 000 by hand), six events each; the release binary when
/// `SLUICE_TEST_RELEASE_BIN` is set, Tansu when `SLUICE_TEST_BROKERS` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: many workspaces, one pod, ~1.5 min at 300: scripts/test.sh"]
async fn drill_thousands_of_workspaces_parked_at_once_share_the_readers_and_all_return() {
    use crate::common::fleet::{value, Pod};
    use crate::common::scrape;
    const EACH: usize = 6;
    let n: usize = std::env::var("SLUICE_DRILL_PARKED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let names: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let broker = match std::env::var("SLUICE_TEST_BROKERS") {
        Ok(_) => Broker::real(),
        Err(_) => Broker::mock(),
    };
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    for w in &names {
        api.refuse_site(&format!("site-{w}"), Some(401));
    }
    let topic = broker.fresh_topic("many", 4).await;
    let mut s = Setup::new(&broker.brokers(), &topic, &api.base_url(), &refs);
    // What the shipped 25 000-event buffer gives each of 10 000 workspaces.
    s.worker.kafka.max_buffered_events_per_workspace = Some(2);
    // Every workspace's events spread over the whole run, two users each.
    let records: Vec<Record> = (0..EACH)
        .flat_map(|i| names.iter().flat_map(move |w| tracks(w, "u", 2, i..i + 1)))
        .collect();
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let dir = tempfile::tempdir().unwrap();
    let mut pod = match std::env::var("SLUICE_TEST_RELEASE_BIN") {
        Ok(bin) => Pod::start_binary(&bin, &s.toml(), dir.path(), "many"),
        Err(_) => Pod::start(&s.toml(), dir.path(), "many"),
    };
    let started = Instant::now();
    s.wait_committed(&positions, 4).await;
    let committed = started.elapsed();
    let parked_metrics = scrape(&pod.url).await;
    let parked = value(&parked_metrics, "sluice_workspace_parked", &[]);
    let threads = value(&parked_metrics, "process_threads", &[]);
    let clients = pod.kafka_clients();
    let readers = s.worker.kafka.park_readers;
    println!(
        "{n} workspaces: source committed to its end in {:.1} s, {parked} parked at once, \
         {threads} threads, {clients} Kafka clients, {} waiting for one of {readers} \
         readers, peak RSS {:.0} MB",
        committed.as_secs_f64(),
        value(&parked_metrics, "sluice_park_readers_waiting", &[]),
        value(&parked_metrics, "process_resident_memory_max_bytes", &[]) / 1e6
    );
    assert_eq!(parked as usize, n, "every workspace parked");
    assert_eq!(api.stats().events_accepted, 0);
    // Each reader is a Kafka client (a librdkafka consumer with threads of its own);
    // besides them the pod runs seven: the source, its producers, the ledger, admin.
    assert!(clients <= readers + 8, "{clients} Kafka clients");

    for w in &names {
        api.refuse_site(&format!("site-{w}"), None);
    }
    let fixed = Instant::now();
    let total = (n * EACH) as u64;
    let unique = |api: &MockApi| {
        let st = api.stats();
        st.events_accepted - st.duplicate_event_ids
    };
    let deadline = Duration::from_secs(120.max(n as u64 / 2));
    let mut last_said = Instant::now();
    while unique(&api) < total {
        assert!(
            fixed.elapsed() < deadline,
            "{} of {total} after {deadline:?}",
            unique(&api)
        );
        if last_said.elapsed() > Duration::from_secs(30) {
            println!(
                "  {} of {total} after {:.0} s",
                unique(&api),
                fixed.elapsed().as_secs_f64()
            );
            last_said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = fixed.elapsed();
    let after = scrape(&pod.url).await;
    pod.stop();
    let stats = api.stats();
    println!(
        "after the fix: {total} events of {n} workspaces delivered in {:.1} s ({} duplicates, \
         {} order violations), {} hand-ons, {} threads at the end",
        took.as_secs_f64(),
        stats.duplicate_event_ids,
        stats.order_violations,
        value(&after, "sluice_park_reader_handed_on_total", &[]) as u64,
        value(&after, "process_threads", &[]) as u64,
    );
    assert_eq!(stats.order_violations, 0);
    assert_eq!(fresh_reorders(&api.received()), 0);
    assert!(!pod.log().contains("panicked"));
    api.stop().await;
}

/// For each (site, user): whether some event arrived for the first time after a later
/// one of the same user had (a fresh reorder; duplicates are allowed).
fn fresh_reorders(received: &[sluice_mock_api::Received]) -> usize {
    use std::collections::{HashMap, HashSet};
    let mut seen: HashSet<(String, String, u64)> = HashSet::new();
    let mut highest: HashMap<(String, String), u64> = HashMap::new();
    let mut reorders = 0;
    for r in received {
        let attrs = &r.item["attributes"];
        let (Some(user), Some(seq)) = (attrs["user"].as_str(), attrs["seq"].as_u64()) else {
            continue;
        };
        let key = (r.site_id.clone(), user.to_string());
        if !seen.insert((key.0.clone(), key.1.clone(), seq)) {
            continue;
        }
        let top = highest.entry(key).or_insert(seq);
        if seq < *top {
            reorders += 1;
        }
        *top = (*top).max(seq);
    }
    reorders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_parking_and_while_returning_loses_nothing_and_keeps_order() {
    use crate::common::fleet::{value, Pod};
    let _alone = PROCESSES.lock().await;
    const N: usize = 3_000;
    let (broker, api, topic, mut s) = TestEnv::build(4, &["ok", "blocked"])
        .parking()
        .dlq()
        .start()
        .await
        .into_parts();
    api.refuse_site("site-blocked", Some(401));
    let positions = produce(&broker.brokers(), &topic, &two_workspaces(N)).await;
    s.worker.kafka.max_buffered_events = 1000;
    s.worker.kafka.resume_buffered_events = Some(500);
    s.limit(100.0);
    let dir = tempfile::tempdir().unwrap();
    let metric =
        |pod: &Pod, name: &'static str, labels: &'static [(&'static str, &'static str)]| {
            let url = pod.url.clone();
            async move {
                let m = crate::common::scrape(&url).await;
                value(&m, name, labels)
            }
        };
    const PARKED_GAUGE: &[(&str, &str)] = &[("workspace", "blocked")];
    const WRITTEN: &[(&str, &str)] = &[("workspace", "blocked"), ("kind", "written")];

    // 1. Killed while parking: blocked's events are being written to the parking topic.
    let mut pod = Pod::start(&s.toml(), dir.path(), "first");
    let start = Instant::now();
    loop {
        if pod.metrics().await.is_some()
            && metric(&pod, "sluice_parked_events_total", WRITTEN).await > 200.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never parked: {}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pod.kill();
    println!("killed while parking ({} s in)", start.elapsed().as_secs());

    // 2. Restarted, the key fixed, killed while returning: parked events flow back.
    let mut pod = Pod::start(&s.toml(), dir.path(), "second");
    let start = Instant::now();
    loop {
        if pod.metrics().await.is_some()
            && metric(&pod, "sluice_workspace_parked", PARKED_GAUGE).await == 1.0
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not parked after restart: {}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.refuse_site("site-blocked", None);
    let delivered_before = api
        .received()
        .iter()
        .filter(|r| r.site_id == "site-blocked")
        .count();
    loop {
        let now = api
            .received()
            .iter()
            .filter(|r| r.site_id == "site-blocked")
            .count();
        if now > delivered_before + 300 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "nothing returned: {}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pod.kill();
    println!("killed while returning");

    // 3. A last start: everything arrives, the source commits to the end.
    let mut pod = Pod::start(&s.toml(), dir.path(), "third");
    let unique_of = |site: &str| {
        let mut ids: Vec<String> = api
            .received()
            .iter()
            .filter(|r| r.site_id == site)
            .map(|r| {
                r.item["attributes"]["seq"].to_string() + &r.item["attributes"]["user"].to_string()
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while unique_of("site-blocked") < N || unique_of("site-ok") < N {
        assert!(
            Instant::now() < deadline,
            "blocked {} ok {} of {N}: {}",
            unique_of("site-blocked"),
            unique_of("site-ok"),
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.wait_committed(&positions, 4).await;
    pod.stop();
    let received = api.received();
    let total = received.len();
    let reorders = fresh_reorders(&received);
    println!(
        "crash drill: {} of {} events arrived ({} duplicates), {reorders} fresh per-user reorders",
        unique_of("site-blocked") + unique_of("site-ok"),
        2 * N,
        total - 2 * N
    );
    assert_eq!(reorders, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_of_large_events_is_parked_on_bytes_before_the_buffer_pauses_everyone() {
    // blocked's API refuses it and its events are 8 KB: its lane reaches its share of
    // the byte bound long before its share of events. It must be parked on bytes, not
    // left to fill the whole byte bound and pause ok's partitions with it.
    let _alone = PROCESSES.lock().await;
    const N: usize = 1_000;
    let (broker, api, topic, mut s) = TestEnv::build(4, &["ok", "blocked"])
        .api(MockApiConfig {
            keys: vec![format!("site-ok:{API_KEY}")],
            ..MockApiConfig::default()
        })
        .parking()
        .start()
        .await
        .into_parts();
    let filler = "x".repeat(8_000);
    let records: Vec<Record> = two_workspaces(N)
        .into_iter()
        .map(|mut r| {
            let mut event: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            if event["workspace"] == "blocked" {
                event["properties"]["filler"] = serde_json::json!(filler);
                r.payload = serde_json::to_vec(&event).unwrap();
            }
            r
        })
        .collect();
    let positions = produce(&broker.brokers(), &topic, &records).await;
    // 2 MiB for both: blocked's share (1 MiB) is ~60 of its events, its share of the
    // event bound 2 000, twice its events, so only the bytes can park it. (With a share
    // of exactly its 1 000 events, ok's whole backlog, fetched at once, reached it too.)
    s.worker.kafka.max_buffered_events = 4000;
    s.worker.kafka.resume_buffered_events = Some(2000);
    s.worker.kafka.max_buffered_bytes = 2 << 20;
    s.limit(50.0);
    let worker = Worker::start(s.config());
    s.wait_committed(&positions, 4).await;
    let parked = worker.metrics.parked_count("blocked", "written");
    let ok_parked = worker.metrics.parked_count("ok", "written");
    worker.stop().await;
    println!(
        "{parked} of blocked's {N} large events parked; ok delivered {}, parked {ok_parked}",
        accepted(&api, "site-ok")
    );
    assert!(parked >= N as u64, "{parked} parked");
    assert_eq!(ok_parked, 0, "ok kept flowing, never parked");
    assert_eq!(accepted(&api, "site-ok"), N as u64);
    api.stop().await;
}
