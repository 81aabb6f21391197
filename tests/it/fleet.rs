//! One limit for the whole fleet: three `sluice run` processes (the real binary) in one
//! consumer group on the mock cluster, one workspace limited at 100 requests/s by
//! `sluice mock-api --silent-throttle` (over the limit it answers 200 and drops, as
//! Customer.io may), a deep backlog of one-event requests. The API must never see
//! more than 100 requests in any one-second window, nothing may be dropped, and the
//! budget must be used — whatever the mode, a pod dying, or Redis going away.
//!
//! Over 400 lines by design: 6 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use sluice_core::config::{LaneConfig, LimitMode, LimitsConfig};
use std::time::{Duration, Instant};

use sluice_mock_api::{MockApi, MockApiConfig};

use crate::common::fleet::{value, Pod, Redis, PROCESSES};
use crate::common::{produce, tracks, wait_until, Broker, Setup, TestEnv, Worker};

const LIMIT: u64 = 100;

struct Fleet {
    _broker: Broker,
    api: MockApi,
    setup: Setup,
    dir: tempfile::TempDir,
    positions: Vec<(i32, i64)>,
}

/// The broker, a backlog of `events` one-event requests for workspace `acme` over 8
/// partitions, the limited API, and a config in `mode` (on `redis_url`, if given) with
/// the shipped defaults otherwise (burst 2, headroom, 8 requests in flight per workspace).
async fn fleet(
    broker: Broker,
    mode: LimitMode,
    redis_url: Option<String>,
    users: usize,
    events: usize,
) -> Fleet {
    let (broker, api, topic, mut setup) = TestEnv::build(8, &["acme"])
        .on(broker)
        .api(MockApiConfig {
            limit_per_s: LIMIT as u32,
            silent_throttle: true,
            ..MockApiConfig::default()
        })
        .dlq()
        .start()
        .await
        .into_parts();
    let positions = produce(
        &broker.brokers(),
        &topic,
        &tracks("acme", "u", users, 0..events),
    )
    .await;
    setup.one_event_per_request();
    setup.worker.limits = LimitsConfig {
        mode,
        redis_url: redis_url.map(sluice_core::config::SecretUrl::new),
        default_rate_limit_per_s: LIMIT as f64,
        ..Default::default()
    };
    setup.worker.lanes = LaneConfig::default();
    Fleet {
        _broker: broker,
        api,
        setup,
        dir: tempfile::tempdir().unwrap(),
        positions,
    }
}

impl Fleet {
    fn pods(&self, n: usize) -> Vec<Pod> {
        let toml = self.setup.toml();
        (0..n)
            .map(|i| Pod::start(&toml, self.dir.path(), &format!("pod{i}")))
            .collect()
    }

    fn requests(&self) -> u64 {
        self.api
            .stats()
            .workspaces
            .get("site-acme")
            .map_or(0, |w| w.requests)
    }

    /// Requests per second over the next `seconds`, as a share of the limit.
    async fn use_over(&self, what: &str, seconds: u64) -> f64 {
        let (before, began) = (self.requests(), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let sent = self.requests() - before;
        let share = sent as f64 / (LIMIT as f64 * began.elapsed().as_secs_f64());
        println!(
            "{what}: {sent} requests in {seconds} s: {:.1}% of the budget",
            share * 100.0
        );
        share
    }

    /// Never over the limit in any one-second window, nothing dropped.
    fn assert_limit_held(&self, what: &str) {
        let stats = self.api.stats();
        let acme = &stats.workspaces["site-acme"];
        println!(
            "{what}: busiest one-second window {} requests, {} events dropped by the API",
            acme.max_requests_per_second, stats.events_dropped
        );
        assert!(
            acme.max_requests_per_second as u64 <= LIMIT,
            "{what}: {} requests in one second",
            acme.max_requests_per_second
        );
        assert_eq!(stats.events_dropped, 0, "{what}: the API dropped events");
    }
}

/// Waits until the pods' shares of the limit sum to 1 (every partition owned, every
/// share grown), each pod with some.
async fn wait_for_shares(pods: &[&Pod], limit: Duration) {
    let start = Instant::now();
    loop {
        let mut shares = Vec::new();
        for pod in pods {
            let m = pod.metrics().await.unwrap_or_default();
            shares.push(value(&m, "sluice_limiter_share", &[("workspace", "acme")]));
        }
        let sum: f64 = shares.iter().sum();
        if (sum - 1.0).abs() < 1e-6 && shares.iter().all(|s| *s > 0.0) {
            println!("shares {shares:?} after {:?}", start.elapsed());
            return;
        }
        assert!(start.elapsed() < limit, "shares never settled: {shares:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_share_one_limit_by_partitions_and_a_dying_pod_changes_nothing() {
    partition_share_holds_with_three_pods_and_one_killed(Broker::mock()).await;
}

/// Also run on Tansu by the real-broker suite.
pub async fn partition_share_holds_with_three_pods_and_one_killed(broker: Broker) {
    let _alone = PROCESSES.lock().await;
    let f = fleet(broker, LimitMode::PartitionShare, None, 400, 9_000).await;
    let mut pods = f.pods(3);
    wait_for_shares(&[&pods[0], &pods[1], &pods[2]], Duration::from_secs(90)).await;
    let three = f.use_over("partition-share, 3 pods", 10).await;
    f.assert_limit_held("3 pods");

    pods[2].kill();
    wait_for_shares(&[&pods[0], &pods[1]], Duration::from_secs(60)).await;
    let two = f
        .use_over("partition-share, after one pod was killed", 10)
        .await;
    f.assert_limit_held("after the kill");
    for pod in &mut pods {
        pod.stop();
    }
    assert!(three >= 0.90, "3 pods used {:.1}%", three * 100.0);
    assert!(two >= 0.90, "2 pods used {:.1}%", two * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pods_share_one_redis_budget_through_a_redis_outage_and_lose_nothing() {
    let _alone = PROCESSES.lock().await;
    let mut redis = Redis::start();
    let events = 4_500;
    let f = fleet(
        Broker::mock(),
        LimitMode::Redis,
        Some(redis.url()),
        400,
        events,
    )
    .await;
    let mut pods = f.pods(3);
    // In redis mode every pod reports share 1: wait for the three to own partitions.
    let start = Instant::now();
    loop {
        let mut owned = Vec::new();
        for pod in &pods {
            let m = pod.metrics().await.unwrap_or_default();
            owned.push(
                m.samples
                    .iter()
                    .filter(|s| s.metric == "sluice_partition_lag")
                    .count(),
            );
        }
        if owned.iter().sum::<usize>() == 8 && owned.iter().all(|n| *n > 0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "partitions: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shared = f.use_over("redis, 3 pods", 10).await;
    f.assert_limit_held("redis");

    // Redis dies: every pod falls back to partition-share at once.
    redis.kill();
    let during = f.use_over("redis down (partition-share fallback)", 5).await;
    f.assert_limit_held("redis down");
    for pod in &pods {
        let m = pod.metrics().await.unwrap();
        assert!(
            value(&m, "sluice_limiter_fallback_total", &[]) >= 1.0,
            "{}",
            pod.log()
        );
        assert_eq!(value(&m, "sluice_limiter_fleet_up", &[]), 0.0);
    }
    let port = redis.port;
    let _redis = Redis::start_on(port);
    let back = Instant::now();
    let mut seen_back = [None; 3];
    loop {
        for (i, pod) in pods.iter().enumerate() {
            let m = pod.metrics().await.unwrap();
            if value(&m, "sluice_limiter_fleet_up", &[]) == 1.0 {
                seen_back[i].get_or_insert(back.elapsed());
            }
        }
        if seen_back.iter().all(Option::is_some) {
            println!("redis back: each pod saw it after {seen_back:?}");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "redis mode not resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once every pod has seen it back (and kept its share for the overlap), the
    // fleet budget is exact again.
    tokio::time::sleep(sluice_core::limit::fleet_store::RETURN_OVERLAP + Duration::from_secs(1))
        .await;
    let resumed = f.use_over("redis back", 5).await;
    f.assert_limit_held("redis back");

    // Everything is delivered and committed in the end.
    f.setup.wait_committed(&f.positions, 8).await;
    f.assert_limit_held("redis, whole run");
    let stats = f.api.stats();
    assert!(stats.events_accepted >= events as u64);
    for pod in &mut pods {
        pod.stop();
    }
    assert!(shared >= 0.97, "redis used {:.1}%", shared * 100.0);
    assert!(
        resumed >= 0.97,
        "after Redis came back {:.1}%",
        resumed * 100.0
    );
    assert!(
        during >= 0.5,
        "the fallback kept delivering: {:.1}%",
        during * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_share_blind_spot_a_workspace_on_one_partition_gets_its_owners_share() {
    let _alone = PROCESSES.lock().await;
    // The documented limitation, measured: all of acme's events belong to one user, so
    // they sit on one partition; only its owner sends, at its share of the limit.
    let f = fleet(Broker::mock(), LimitMode::PartitionShare, None, 1, 3_000).await;
    let mut pods = f.pods(3);
    wait_for_shares(&[&pods[0], &pods[1], &pods[2]], Duration::from_secs(90)).await;
    let used = f
        .use_over("partition-share, one partition's traffic", 10)
        .await;
    f.assert_limit_held("one partition");
    let mut owner_share = 0.0;
    for pod in &pods {
        let m = pod.metrics().await.unwrap();
        if value(
            &m,
            "sluice_events_delivered_total",
            &[("workspace", "acme")],
        ) > 0.0
        {
            owner_share = value(&m, "sluice_limiter_share", &[("workspace", "acme")]);
        }
    }
    for pod in &mut pods {
        pod.stop();
    }
    println!(
        "blind spot: the owner's share is {owner_share}; {:.1}% of the budget used",
        used * 100.0
    );
    assert!(owner_share > 0.0 && owner_share < 1.0);
    assert!(
        used <= owner_share + 0.01,
        "used {used} with a share of {owner_share}"
    );
    assert!(
        used >= owner_share * 0.9,
        "used {used} of a share of {owner_share}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_limit_half_the_configured_one_is_learned_within_ten_seconds() {
    let _alone = PROCESSES.lock().await;
    let (broker, api, topic, mut setup) = TestEnv::build(4, &["acme"])
        .api(MockApiConfig {
            limit_per_s: 50,
            retry_after_s: 1,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    produce(
        &broker.brokers(),
        &topic,
        &tracks("acme", "u", 200, 0..3_500),
    )
    .await;
    setup.one_event_per_request();
    setup.limit(100.0);
    setup.worker.lanes = LaneConfig::default();
    let worker = Worker::start(setup.config());
    let counts = || {
        let s = api.stats();
        s.workspaces
            .get("site-acme")
            .map_or((0, 0), |w| (w.requests, w.throttled))
    };
    wait_until("the first 429", Duration::from_secs(30), || counts().1 > 0).await;
    let first = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (mut samples, mut rates) = (vec![counts()], Vec::new());
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(counts());
        rates.push(worker.metrics.effective_rate("acme"));
    }
    worker.stop().await;
    let (r0, t0) = samples[0];
    let (r1, t1) = *samples.last().unwrap();
    let throttled_share = (t1 - t0) as f64 / (r1 - r0) as f64;
    let mut per_second: Vec<u64> = samples
        .windows(2)
        .map(|w| (w[1].0 - w[1].1) - (w[0].0 - w[0].1))
        .collect();
    per_second.sort();
    rates.sort_by(f64::total_cmp);
    let (median_accepted, median_rate) = (per_second[15], rates[15]);
    println!(
        "learning, 10-40 s after the first 429 ({:?} ago): median {median_accepted} \
         accepted/s, median learned rate {median_rate:.1}/s, {} of {} requests throttled \
         ({:.2}%)",
        first.elapsed(),
        t1 - t0,
        r1 - r0,
        throttled_share * 100.0
    );
    assert!(
        (45.0..=51.0).contains(&median_rate),
        "learned {median_rate}/s against a real 50/s"
    );
    assert!(median_accepted >= 45, "{median_accepted} accepted a second");
    assert!(
        throttled_share < 0.01,
        "{:.2}% throttled",
        throttled_share * 100.0
    );
}

/// The shipped HPA's target for `sluice_scaling_lag_seconds` (k8s/base/hpa.yaml).
fn hpa_target_seconds() -> f64 {
    let hpa = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/base/hpa.yaml"))
        .expect("k8s/base/hpa.yaml");
    let after = &hpa[hpa
        .find("name: sluice_scaling_lag_seconds")
        .expect("the HPA scales on it")..];
    let line = after
        .lines()
        .find(|l| l.trim_start().starts_with("averageValue:"))
        .expect("an averageValue target");
    line.split(':')
        .nth(1)
        .unwrap()
        .trim()
        .trim_matches('"')
        .parse()
        .unwrap()
}

/// What the HPA sees, in the three cases that matter: a pod keeping up with a steady
/// 2 000 events/s (hundreds of events in process, nothing waiting) reads below the
/// target; a backlog another pod would drain faster (a slow API: each pod adds its own
/// requests in flight) reads above it; a backlog that only the API's limit holds back
/// (pods added would share the same limit) reads below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaling_signal_is_below_target_when_keeping_up_or_limit_bound_and_above_with_a_backlog(
) {
    use sluice_mock_api::Latency;
    let target = hpa_target_seconds();
    // Steady: 200 events every 100 ms for 15 s into a running worker at shipped batch
    // settings, an unlimited API.
    let (broker, api, topic, setup) = TestEnv::build(2, &["acme"]).start().await.into_parts();
    let worker = Worker::start(setup.config());
    let brokers = broker.brokers();
    let feeding = {
        let (brokers, topic) = (brokers.clone(), topic.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for round in 0..150 {
                tick.tick().await;
                produce(
                    &brokers,
                    &topic,
                    &tracks("acme", "u", 100, round * 200..(round + 1) * 200),
                )
                .await;
            }
        })
    };
    // Past the start (the group's join, the few seconds of events it found waiting).
    wait_until("the worker keeps up", Duration::from_secs(30), || {
        api.stats()
            .workspaces
            .get("site-acme")
            .is_some_and(|w| w.events_accepted >= 10_000)
    })
    .await;
    let (mut steady, mut depth) = (0f64, 0i64);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        steady = steady.max(worker.metrics.scaling_lag_seconds());
        depth = depth.max(worker.metrics.queue_depth());
    }
    feeding.await.unwrap();
    worker.stop().await;
    api.stop().await;
    println!(
        "keeping up with 2 000 events/s: scaling signal at most {steady:.2} s (queue depth \
         up to {depth} events), target {target} s"
    );
    assert!(steady < target, "a pod keeping up reads {steady} s");

    // Backlogs: 2 000 events waiting, one event per request. Held by its API limit
    // (20/s), or by a slow API (200 ms a request, 8 in flight: ~40/s).
    for (what, limit, latency, limit_bound) in [
        ("limit-bound", 20, Latency::Fixed(0), true),
        ("latency-bound", 1000, Latency::Fixed(200), false),
    ] {
        let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme"])
            .api(MockApiConfig {
                latency,
                ..MockApiConfig::default()
            })
            .start()
            .await
            .into_parts();
        produce(
            &broker.brokers(),
            &topic,
            &tracks("acme", "u", 100, 0..2_000),
        )
        .await;
        setup.one_event_per_request();
        setup.limit(limit as f64);
        setup.worker.lanes = LaneConfig::default();
        let worker = Worker::start(setup.config());
        wait_until("a backlog is measured", Duration::from_secs(30), || {
            worker.metrics.queue_depth() > 1_000
        })
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (lag, scaling) = (
            worker.metrics.lag_seconds(),
            worker.metrics.scaling_lag_seconds(),
        );
        worker.stop().await;
        api.stop().await;
        println!("{what}: {lag:.0} s behind, scaling signal {scaling:.1} s, target {target} s");
        assert!(lag > target, "{what}: a backlog of {lag} s");
        if limit_bound {
            assert!(scaling < target, "{what}: {scaling} s would add pods");
        } else {
            assert!(scaling > target, "{what}: {scaling} s would not add pods");
        }
    }
}

/// `limits.mode = "redis"` over `rediss://` to a Redis that speaks only TLS (as
/// managed services do), its certificate signed by a private CA named in
/// `limits.redis_ca_file`: the budget is taken from Redis (no fallback) and every event
/// arrives. Without the CA the certificate is refused — the worker falls back to
/// partition-share, keeps delivering, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_limit_reaches_redis_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, ca) = Redis::start_tls(dir.path());
    let url = format!("rediss://127.0.0.1:{}/", redis.port);
    for trusted in [true, false] {
        let (broker, api, topic, mut setup) = TestEnv::mock(2, &["acme"]).await.into_parts();
        let positions = produce(&broker.brokers(), &topic, &tracks("acme", "u", 50, 0..400)).await;
        setup.one_event_per_request();
        setup.worker.limits = LimitsConfig {
            mode: LimitMode::Redis,
            redis_url: Some(sluice_core::config::SecretUrl::new(url.clone())),
            redis_ca_file: trusted.then(|| ca.clone()),
            default_rate_limit_per_s: 200.0,
            ..Default::default()
        };
        let worker = Worker::start(setup.config());
        setup.wait_committed(&positions, 2).await;
        let text = worker.stop().await.render();
        let m = sluice_lab::capacity::scrapes::Scrape::parse(&text, 0.0).unwrap();
        let fallbacks = value(&m, "sluice_limiter_fallback_total", &[]);
        let accepted = api.stats().workspaces["site-acme"].events_accepted;
        println!(
            "rediss:// with the CA {trusted}: {accepted} events accepted, {fallbacks} fallbacks"
        );
        assert!(accepted >= 400);
        if trusted {
            assert_eq!(fallbacks, 0.0, "the budget came from Redis over TLS");
        } else {
            assert!(fallbacks >= 1.0, "an untrusted certificate was accepted");
        }
        api.stop().await;
    }
    // The budget is in Redis: its key, read over TLS.
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("sluice:limit*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "no budget in Redis");
}

/// The fleet's timeline, one Redis and two pods' links to it: a pod whose sends leave
/// late widens the slots of every pod, since the API's window sees its late request
/// and another pod's punctual one a window of slots later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_pod_widens_every_pods_slots_on_the_fleet_timeline() {
    use sluice_core::limit::fleet_store::{Fleet, Lease, Spacing};
    let redis = Redis::start();
    let connect = || Fleet::connect(&redis.url(), "margin", sluice_core::metrics::Metrics::new());
    let (punctual, late) = (connect().unwrap(), connect().unwrap());
    let gaps =
        |lease: &Lease| -> Vec<Duration> { lease.slots.windows(2).map(|w| w[1] - w[0]).collect() };
    let on_time = Spacing {
        interval: Duration::from_millis(10),
        margin: Duration::ZERO,
        per_window: 100,
    };
    let horizon = Duration::from_millis(250);
    let first = punctual
        .lease("site", on_time, 4, horizon, 0)
        .await
        .unwrap();
    assert_eq!(gaps(&first), vec![Duration::from_millis(10); 3]);

    // 20 ms of lateness over a window of 100 slots: 200 µs more between two slots.
    let widened = Duration::from_micros(10_200);
    let lagging = Spacing {
        margin: Duration::from_millis(20),
        ..on_time
    };
    let second = late.lease("site", lagging, 4, horizon, 0).await.unwrap();
    assert_eq!(gaps(&second), vec![widened; 3]);
    // The punctual pod reports no lateness, but the fleet remembers the late one's.
    let third = punctual
        .lease("site", on_time, 4, horizon, 0)
        .await
        .unwrap();
    assert_eq!(third.interval, widened);
    assert_eq!(gaps(&third), vec![widened; 3]);
}
