//! The one integration-test binary (one link step): a module per area, helpers in
//! `common/`. Kafka is librdkafka's mock cluster unless a test says otherwise; the
//! `real_broker` tests need `SLUICE_TEST_BROKERS` (scripts/test.sh starts Tansu).

mod capacity;
mod cli;
mod common;
mod delivery;
mod destinations;
mod drills;
mod fleet;
mod isolation;
mod limits;
mod load;
mod mock_api;
mod operations;
mod parking;
mod real_broker;
