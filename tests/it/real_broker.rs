//! The same end-to-end check against a real Kafka-protocol broker (Tansu in CI).
//! Ignored by a plain `cargo test`; `scripts/test.sh` starts Tansu, sets
//! `SLUICE_TEST_BROKERS` and runs these with `--ignored`.

use crate::common::Broker;
use crate::delivery::delivers_everything_and_commits_to_the_end;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker in SLUICE_TEST_BROKERS (scripts/test.sh starts Tansu)"]
async fn real_broker_delivers_every_event_once_and_commits_to_the_end() {
    delivers_everything_and_commits_to_the_end(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker in SLUICE_TEST_BROKERS (scripts/test.sh starts Tansu)"]
async fn real_broker_three_pods_share_one_limit_by_partitions() {
    crate::fleet::partition_share_holds_with_three_pods_and_one_killed(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker in SLUICE_TEST_BROKERS (scripts/test.sh starts Tansu)"]
async fn real_broker_without_commit_metadata_refuses_to_park() {
    // Tansu 0.6 drops offset-commit metadata, where the parking marks live: parking
    // there could orphan parked events after a restart, so sluice turns it off (one
    // error line) and keeps today's behaviour. Nothing is parked, nothing lost.
    use crate::common::{produce, tracks, wait_until, TestEnv, Worker, API_KEY};
    use sluice::tools::mock_api::MockApiConfig;
    use std::time::Duration;
    let (broker, api, topic, mut s) = TestEnv::build(2, &["ok", "blocked"])
        .on(Broker::real())
        .api(MockApiConfig {
            keys: vec![format!("site-ok:{API_KEY}")],
            ..MockApiConfig::default()
        })
        .parking()
        .dlq()
        .start()
        .await
        .into_parts();
    let mut records = tracks("ok", "u", 20, 0..200);
    records.extend(tracks("blocked", "v", 20, 0..200));
    produce(&broker.brokers(), &topic, &records).await;
    s.worker.kafka.max_buffered_events = 300;
    s.worker.kafka.resume_buffered_events = Some(100);
    let worker = Worker::start(s.config());
    wait_until("ok's events", Duration::from_secs(60), || {
        api.stats()
            .workspaces
            .get("site-ok")
            .map_or(0, |w| w.events_accepted)
            >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = worker.stop().await;
    assert_eq!(metrics.parked_count("blocked", "written"), 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker in SLUICE_TEST_BROKERS (scripts/test.sh starts Tansu)"]
async fn real_broker_replay_selects_exactly_a_time_range() {
    crate::load::replay_selects_exactly_a_time_range(Broker::real()).await;
}
