//! The worker killed without warning: `kill -9` under load, and a rebalance with one
//! pod killed and one added.

use super::*;

/// `kill -9` the worker at random moments under 2 000 events/s, 20 times, 6–12 s after
/// delivery resumed, restarting it each time: every event delivered, first deliveries in per-user order, the
/// duplicates of each crash bounded by the commit interval, delivery back within the
/// session timeout + 5 s of each restart (the pod restarted under its name:
/// `kafka.group_instance_id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: real broker and release binary, ~4 min, run alone: scripts/test.sh"]
async fn drill_kill_9_under_load() {
    const KILLS: usize = 20;
    const RATE: u32 = 2000;
    const SESSION_TIMEOUT_S: f64 = 6.0;
    let bin = release_bin();
    let (broker, topic, api, mut setup) = at_shipped_defaults(&bin, "drill-kill").await;
    // Restarted in place under its name, as a crashed container is: static membership
    // hands it its partitions back without waiting for its old session to expire.
    setup.kafka.push_str("group_instance_id = \"drill-pod\"\n");
    // The shipped commit interval too.
    let toml = setup.toml().replace("commit_interval_ms = 200\n", "");
    let dir = tempfile::tempdir().unwrap();
    let seed = 20261201;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Long enough for the kills (~21 s each on Tansu, which takes ~12 s to hand a dead
    // pod's partitions to its successor).
    let load = loadgen(&bin, &broker.brokers(), &topic, RATE, "420s", seed);
    let mut pod = Pod::start_binary(&bin, &toml, dir.path(), "pod-0");
    let mut resumes = Vec::new();
    let mut per_crash = Vec::new();
    let mut started = Instant::now();
    for kill in 0..KILLS {
        // Running and delivering, then a random moment later: kill -9.
        let before = api.stats().await.accepted;
        while api.stats().await.accepted == before {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no delivery {:?} after restart {kill}:\n{}",
                started.elapsed(),
                pod.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if kill > 0 {
            resumes.push(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(6000..12000))).await;
        let duplicates_before = api.stats().await.redelivered;
        pod.kill();
        // What this crash re-sends shows up once the next pod has caught up.
        pod = Pod::start_binary(&bin, &toml, dir.path(), &format!("pod-{}", kill + 1));
        started = Instant::now();
        per_crash.push(duplicates_before);
    }
    // The last pod runs on; the load ends and everything must arrive.
    let sent = tokio::task::spawn_blocking(move || loadgen_sent(load))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = api.stats().await;
        if s.unique() >= sent {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {sent} events delivered:\n{}",
            s.unique(),
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = api.stats().await;
    pod.stop();
    // Duplicates between crashes: each crash's re-sends land after its restart.
    per_crash.push(s.redelivered);
    let mut dups: Vec<f64> = per_crash.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    let total_dups = s.redelivered;
    let max_dups = dups.iter().copied().fold(0.0, f64::max);
    let median_dups = median(&mut dups);
    let max_resume = resumes.iter().copied().fold(0.0, f64::max);
    let median_resume = median(&mut resumes);
    println!(
        "kill -9 drill: {KILLS} kills at {RATE} events/s, seed {seed}: sent {sent}, delivered {} \
         (unique), duplicates {total_dups} ({:.1}%; per crash median {median_dups:.0}, max \
         {max_dups:.0}), per-user order violations {}, delivery back after a restart: median \
         {median_resume:.1} s, max {max_resume:.1} s",
        s.unique(),
        total_dups as f64 / sent as f64 * 100.0,
        s.order_violations
    );
    assert_eq!(
        s.unique(),
        sent,
        "every event delivered at least once, none invented"
    );
    assert_eq!(s.order_violations, 0, "first deliveries in per-user order");
    // Commits follow the contiguous offset at most every 100 ms: a crash re-sends what
    // was delivered since the last confirmed commit, plus the requests in flight.
    assert!(
        median_dups <= 1000.0,
        "median {median_dups} duplicates per crash"
    );
    assert!(max_dups <= 2500.0, "max {max_dups} duplicates per crash");
    // Without a name the dead pod's session must expire first, and Tansu 0.6 then takes
    // ~6 s more to finish the rebalance (12.2 s median here); named, no wait for it.
    assert!(
        max_resume <= SESSION_TIMEOUT_S + 5.0,
        "delivery back after {max_resume} s"
    );
}

/// Three workers under 2 000 events/s; one `kill -9`ed, one added later: nothing
/// lost, no per-user order violation among first deliveries, and the duplicates no
/// more than the dead pod's uncommitted deliveries and the moved partitions' in-flight
/// work — the survivors commit only what they delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: real broker and release binary, ~2 min, run alone: scripts/test.sh"]
async fn drill_rebalance_under_load() {
    const RATE: u32 = 2000;
    let bin = release_bin();
    let (broker, topic, api, setup) = at_shipped_defaults(&bin, "drill-rebalance").await;
    let toml = setup.toml();
    let dir = tempfile::tempdir().unwrap();
    let load = loadgen(&bin, &broker.brokers(), &topic, RATE, "75s", 5);
    let mut pods: Vec<Pod> = (0..3)
        .map(|i| Pod::start_binary(&bin, &toml, dir.path(), &format!("pod-{i}")))
        .collect();
    tokio::time::sleep(Duration::from_secs(25)).await;
    let before_kill = api.stats().await;
    pods[1].kill();
    tokio::time::sleep(Duration::from_secs(20)).await;
    pods.push(Pod::start_binary(&bin, &toml, dir.path(), "pod-3"));
    let sent = tokio::task::spawn_blocking(move || loadgen_sent(load))
        .await
        .unwrap();
    let s = wait_delivered(&api, sent, Duration::from_secs(120), &pods[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = api.stats().await.max_with(s);
    let logs: Vec<String> = pods.iter().map(Pod::log).collect();
    for pod in &mut pods {
        pod.stop();
    }
    let count = |what: &dyn Fn(&str) -> bool| {
        logs.iter()
            .map(|l| l.lines().filter(|l| what(l)).count())
            .sum::<usize>()
    };
    let rebalances = count(&|l| l.contains("rebalance"));
    let refused =
        count(&|l| l.contains("commit") && (l.contains("refused") || l.contains("failed")));
    println!(
        "rebalance drill: 3 pods at {RATE} events/s, pod-1 killed at 25 s ({} delivered by \
         then), pod-3 added at 45 s: sent {sent}, delivered {} (unique), re-delivered {} \
         ({:.2}%), per-user order violations {}, rebalance log lines {rebalances}, log \
         lines of refused or failed commits {refused}",
        before_kill.unique(),
        s.unique(),
        s.redelivered,
        s.redelivered as f64 / sent as f64 * 100.0,
        s.order_violations
    );
    assert_eq!(s.unique(), sent, "every event delivered");
    assert_eq!(s.order_violations, 0, "first deliveries in per-user order");
    // A kill re-sends what the dead pod delivered since its last confirmed commit plus
    // its in-flight requests; a hand-over, what the moved partitions delivered since
    // their last confirmed commit — which on Tansu 0.6 can be seconds, as it refuses
    // commits while its (10–20 s) rebalances are in progress. Bounded, not zero.
    assert!(
        s.redelivered <= sent / 10,
        "{} delivered twice",
        s.redelivered
    );
}
