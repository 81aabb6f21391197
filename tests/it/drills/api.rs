//! The API away, then faulty; and the worker starved of CPU: the limit holds as the
//! API counts it.

use super::*;

/// The API away for 60 s (connection refused), then back with 20% of requests meeting
/// a fault (5xx, a hang past the client's timeout, a reset): nothing lost or dead-
/// lettered, the backlog drained at the limit (never over it), the pod ready all along,
/// and the log one line per condition per interval, not one per failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: real broker and release binary, ~2 min, run alone: scripts/test.sh"]
async fn drill_api_outage_then_faults() {
    const LIMIT: u64 = 20;
    let bin = release_bin();
    let broker = Broker::real();
    let topic = unique("drill-api");
    broker.create_topic(&topic, 4).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let port = free_port();
    let mut setup = Setup::new(
        &broker.brokers(),
        &topic,
        &format!("http://127.0.0.1:{port}"),
        &["local"],
    );
    // 20 requests/s × 10 events: 200 events/s at most, twice the offered 100/s.
    setup.batch = "max_events = 10\nlinger_ms = 50\n".into();
    setup.limits = format!("default_rate_limit_per_s = {LIMIT}\ndefault_burst = 1\n");
    setup.destination = "request_timeout_ms = 1000\n".into();
    setup.retry = String::new();
    let dir = tempfile::tempdir().unwrap();
    let mut pod = Pod::start_binary(&bin, &setup.toml(), dir.path(), "pod");
    let ready = |pod: &Pod| {
        let url = format!("{}/readyz", pod.url);
        async move {
            reqwest::get(url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    let joined = Instant::now();
    while !ready(&pod).await {
        assert!(joined.elapsed() < Duration::from_secs(60), "{}", pod.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load = loadgen(&bin, &broker.brokers(), &topic, 100, "90s", 7);
    // 60 s with nothing listening on the API's port.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(60) {
        assert!(ready(&pod).await, "ready while the API is away");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log_during_outage = pod.log();
    let api = Api::start_on(
        &bin,
        port,
        &[
            "--limit-per-s",
            &LIMIT.to_string(),
            "--fault-rate",
            "0.2",
            "--hang-ms",
            "1500",
        ],
    )
    .await;
    let back = Instant::now();
    let sent = tokio::task::spawn_blocking(move || loadgen_sent(load))
        .await
        .unwrap();
    // ~6 000 events held for 60 s, then 3 000 more: at 200 events/s, under 20% faults.
    let s = wait_delivered(&api, sent, Duration::from_secs(150), &pod).await;
    let drained = back.elapsed().as_secs_f64();
    assert!(ready(&pod).await, "ready after the outage");
    let metrics = pod.metrics().await.unwrap_or_default();
    let log = pod.log();
    pod.stop();
    let dead =
        crate::common::fleet::value(&metrics, "sluice_events_dead_lettered_total", &[]).abs();
    let api_lines = log_during_outage
        .lines()
        .filter(|l| l.contains("api unreachable") || l.contains("still unreachable"))
        .count();
    let retry_lines = log
        .lines()
        .filter(|l| l.contains("request failed, retrying"))
        .count();
    // The outage starts and ends once: faults after it (5xx, hangs, resets from an API
    // that answers) are retry lines, not outages flapping on and off.
    let outage_lines = log
        .lines()
        .filter(|l| l.contains("api unreachable") || l.contains("api reachable again"))
        .count();
    println!(
        "API outage drill: sent {sent}, delivered {} (unique), dead-lettered {dead}, \
         re-delivered {}, order violations {}, drained {drained:.0} s after the API came \
         back, most requests in a second {} (limit {LIMIT}); log during the 60 s outage: \
         {api_lines} lines about the API, {} lines in all; over the whole run: \
         {outage_lines} outage lines, {retry_lines} retry lines",
        s.unique(),
        s.redelivered,
        s.order_violations,
        s.max_per_second,
        log_during_outage.lines().count(),
    );
    assert_eq!(s.unique(), sent, "every event delivered");
    assert_eq!(dead, 0.0, "an outage is no reason to dead-letter");
    assert_eq!(s.order_violations, 0);
    assert!(
        s.max_per_second <= LIMIT,
        "{} requests in a second",
        s.max_per_second
    );
    // Started, a reminder every 30 s: ≤ 3 lines for the outage.
    assert!(
        (1..=4).contains(&api_lines),
        "{api_lines} lines:\n{log_during_outage}"
    );
    assert!(outage_lines <= 4, "{outage_lines} outage lines:\n{log}");
    // One line per reason (5xx kinds, timeout, network) per 30 s, over ~2 minutes.
    assert!(retry_lines <= 40, "{retry_lines} retry lines:\n{log}");
}

/// The worker confined to one core with a busy loop beside it: a starved scheduler
/// must still never send more than the limit in any one-second window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: real broker and release binary, ~1 min, run alone: scripts/test.sh"]
async fn drill_cpu_starvation_keeps_the_limit() {
    const LIMIT: u64 = 50;
    const WORKER_CORE: &str = "0";
    const API_CORE: &str = "1";
    if std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_err()
    {
        panic!("taskset (util-linux) is needed for the CPU starvation drill");
    }
    let bin = release_bin();
    let broker = Broker::real();
    let topic = unique("drill-cpu");
    broker.create_topic(&topic, 4).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    // The API enforces the limit over a sliding second and counts the worst second. It
    // runs on the other core, as a real API runs on another machine: on the starved
    // core its own clock readings would be late, and it would count its starvation.
    let api = Api::start_with(
        api_command(&["taskset", "-c", API_CORE], &bin),
        free_port(),
        &["--limit-per-s", &LIMIT.to_string()],
    )
    .await;
    let mut setup = Setup::new(&broker.brokers(), &topic, &api.url, &["local"]);
    setup.batch = "max_events = 5\nlinger_ms = 5\n".into();
    setup.limits = format!("default_rate_limit_per_s = {LIMIT}\n");
    setup.lanes = "max_in_flight = 16\n".into();
    // 2 000 events/s offered against 250 events/s allowed: the limiter is always busy.
    let load = loadgen(&bin, &broker.brokers(), &topic, 2_000, "20s", 11);
    let sent = tokio::task::spawn_blocking(move || loadgen_sent(load))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = setup.toml();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        toml.replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port())),
    )
    .unwrap();
    let core = WORKER_CORE;
    let busy = Proc(Some(
        Command::new("taskset")
            .args(["-c", core, "sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("busy loop starts"),
    ));
    let worker = Proc(Some(
        Command::new("taskset")
            .args(["-c", core, &bin, "run", "--config"])
            .arg(&config)
            .env(crate::common::API_KEY_ENV, crate::common::API_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker starts"),
    ));
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(45) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.push(api.stats().await);
    }
    drop(worker);
    drop(busy);
    let s = *seen.last().unwrap();
    let rate = |a: &Stats, b: &Stats| b.accepted.saturating_sub(a.accepted);
    let per_second: Vec<u64> = seen.windows(2).map(|w| rate(&w[0], &w[1])).collect();
    println!(
        "CPU starvation drill: worker and a busy loop on core {core}; {} events delivered of \
         {sent} in 45 s (allowed: {} events/s), most requests in any sliding second {} \
         (limit {LIMIT}), events per second median {}",
        s.unique(),
        LIMIT * 5,
        s.max_per_second,
        median(&mut per_second.iter().map(|&v| v as f64).collect::<Vec<_>>()),
    );
    assert!(s.unique() > 0, "the starved worker delivered");
    assert!(
        s.max_per_second <= LIMIT,
        "{} requests in one second (limit {LIMIT})",
        s.max_per_second
    );
}
