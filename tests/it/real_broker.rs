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
async fn real_broker_replay_selects_exactly_a_time_range() {
    crate::load::replay_selects_exactly_a_time_range(Broker::real()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real broker in SLUICE_TEST_BROKERS (scripts/test.sh starts Tansu)"]
async fn real_broker_a_destination_that_is_down_parks_only_its_workspaces() {
    crate::destinations::destination_down_parks_only_its_workspaces(Broker::real()).await;
}
