//! Tenant isolation as a user sees it: the release binary in its own process, at the
//! minimal configuration (no parking settings), the API refusing one workspace's key
//! for good. The workspace beside it keeps its rate (measured against its rate alone,
//! interleaved rounds, the median of their ratios), nothing is lost, and once the key
//! is fixed every parked event arrives in per-user order. On Tansu and on the mock
//! cluster; scripts/test.sh runs them with the drills (they compare rates: alone).

use std::time::{Duration, Instant};

use crate::common::fleet::Pod;
use crate::common::{produce, tracks, Broker, Setup, API_KEY};
use crate::drills::{median, release_bin, Api};
use crate::parking::two_workspaces;

/// `ok`'s events (and as many of `blocked`'s beside it) per round: 10 s at ok's limit.
const N: usize = 20_000;

/// The minimal configuration of the in-process isolation test (no parking settings:
/// the worker derives `<topic>.park` and creates it); ok's limit 100 requests/s of 20
/// events, 2 000 events/s, so its rate is its limit's alone or not.
fn minimal(broker: &Broker, topic: &str, api: &Api) -> Setup {
    let mut s = Setup::new(&broker.brokers(), topic, &api.url, &["ok", "blocked"]);
    s.limit(100.0);
    assert!(s.worker.kafka.park_topic.is_none());
    s
}

/// Events/s `ok` reaches from its first accepted event until it has all `n`.
async fn ok_rate(api: &Api, n: u64, pod: &Pod) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first = None;
    loop {
        let accepted = api.accepted_from("site-ok").await;
        if first.is_none() && accepted > 0 {
            first = Some((Instant::now(), accepted));
        }
        if accepted >= n {
            let (start, at_start) = first.unwrap();
            return (n - at_start) as f64 / start.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "ok: {accepted} of {n} events\n{}",
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the API does to the workspace beside ok.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Neighbour {
    /// Refuses its key (401) for good.
    Refused,
    /// Takes it at 5 requests/s (100 events/s), a twentieth of its inflow here.
    Slow,
}

/// ok's rate alone (no neighbour's events at all).
async fn alone(bin: &str, broker: &Broker, dir: &std::path::Path) -> f64 {
    let api = Api::start(bin).await;
    let topic = broker.fresh_topic("alone", 4).await;
    produce(&broker.brokers(), &topic, &tracks("ok", "u", 200, 0..N)).await;
    let mut pod = Pod::start_binary(bin, &minimal(broker, &topic, &api).toml(), dir, "alone");
    let rate = ok_rate(&api, N as u64, &pod).await;
    pod.stop();
    rate
}

/// ok's rate beside `blocked`, `neighbour`, their events interleaved; and the setup
/// (its topic holds blocked's parked events).
async fn beside(
    bin: &str,
    broker: &Broker,
    dir: &std::path::Path,
    neighbour: Neighbour,
) -> (f64, Setup) {
    let keys = format!("site-ok:{API_KEY}");
    let mut args = vec!["--limit-per-s", "0"];
    if neighbour == Neighbour::Refused {
        args.extend(["--key", &keys]);
    }
    let api = Api::start_on(bin, crate::common::fleet::free_port(), &args).await;
    let topic = broker.fresh_topic("events", 4).await;
    let positions = produce(&broker.brokers(), &topic, &two_workspaces(N)).await;
    let mut setup = minimal(broker, &topic, &api);
    if neighbour == Neighbour::Slow {
        setup.workspace("blocked").rate_limit_per_s = Some(5.0);
    }
    let mut pod = Pod::start_binary(bin, &setup.toml(), dir, "beside");
    let rate = ok_rate(&api, N as u64, &pod).await;
    // Every source offset commits: blocked's events are in the parking topic.
    setup.wait_committed(&positions, 4).await;
    let blocked = api.accepted_from("site-blocked").await;
    pod.stop();
    match neighbour {
        Neighbour::Refused => assert_eq!(blocked, 0),
        Neighbour::Slow => assert!(blocked > 0 && blocked < N as u64, "{blocked}"),
    }
    (rate, setup)
}

/// Three rounds on `broker` (ok alone, beside a refused and beside a slow workspace),
/// then the last round's refused workspace fixed.
async fn isolation_at_the_minimal_config(broker: Broker, name: &str) {
    let _alone = crate::common::fleet::PROCESSES.lock().await;
    let bin = release_bin();
    let dir = tempfile::tempdir().unwrap();
    let (mut refused, mut slow) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..3 {
        let alone = alone(&bin, &broker, dir.path()).await;
        let (by_refused, setup) = beside(&bin, &broker, dir.path(), Neighbour::Refused).await;
        let (by_slow, _) = beside(&bin, &broker, dir.path(), Neighbour::Slow).await;
        println!(
            "isolation on {name}: ok alone {alone:.0} events/s, beside a refused workspace \
             {by_refused:.0} ({:.0}%), beside a slow one {by_slow:.0} ({:.0}%)",
            by_refused / alone * 100.0,
            by_slow / alone * 100.0
        );
        refused.push(by_refused / alone);
        slow.push(by_slow / alone);
        last = Some(setup);
    }
    let shares = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (refused_share, slow_share) = (median(&mut refused.clone()), median(&mut slow.clone()));

    // Its key fixed: every blocked event arrives, in per-user order.
    let mut setup = last.unwrap();
    let fixed = Api::start(&bin).await;
    setup.worker.destination.base_url = Some(fixed.url.clone());
    let mut pod = Pod::start_binary(&bin, &setup.toml(), dir.path(), "fixed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while fixed.accepted_from("site-blocked").await < N as u64 {
        assert!(
            Instant::now() < deadline,
            "blocked: {} of {N} after the fix\n{}",
            fixed.accepted_from("site-blocked").await,
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pod.stop();
    let stats = fixed.stats().await;
    println!(
        "isolation on {name}, minimal config, release binary: ok kept a median {:.0}% of \
         its rate alone beside a refused workspace ({}), {:.0}% beside a slow one ({}); \
         after the fix all {N} of the refused one's events arrived, {} re-sent, {} order \
         violations",
        refused_share * 100.0,
        shares(&refused),
        slow_share * 100.0,
        shares(&slow),
        stats.redelivered,
        stats.order_violations
    );
    assert_eq!(stats.order_violations, 0);
    assert_eq!(
        fixed.accepted_from("site-ok").await,
        0,
        "ok's events were all committed"
    );
    // The 90% is the median; without isolation ok stalls at ~60%.
    assert!(refused_share >= 0.9, "refused: median {refused_share:.2}");
    assert!(slow_share >= 0.9, "slow: median {slow_share:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: real broker and release binary, ~5 min, run alone: scripts/test.sh"]
async fn drill_isolation_at_the_minimal_config_on_tansu() {
    isolation_at_the_minimal_config(Broker::real(), "Tansu").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: release binary, ~5 min, run alone: scripts/test.sh"]
async fn drill_isolation_at_the_minimal_config_on_the_mock_cluster() {
    isolation_at_the_minimal_config(Broker::mock(), "the mock cluster").await;
}
