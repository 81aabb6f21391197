//! Shared test set-up, one file an idea: [`env`] (what most tests start from), [`kafka`]
//! (the broker, producing, reading back, committed offsets), [`events`], [`setup`] (the
//! worker's configuration as values), [`worker`] (a worker in-process, waiting, its
//! metrics) and [`fleet`] (workers as processes, Redis).

pub mod env;
pub mod events;
pub mod fleet;
pub mod kafka;
pub mod setup;
pub mod worker;

pub use env::{recording_api, TestEnv};
pub use events::{identify, track, tracks, Record};
pub use kafka::{
    committed, end_offsets, produce, produced_ends, read_topic, unique, wait_committed_to_end,
    Broker,
};
pub use setup::{shipped_defaults, Setup};
pub use sluice_lab::capacity::scrapes::Scrape;
pub use worker::{scrape, wait_until, Worker};

/// The API key every test workspace uses.
pub const API_KEY: &str = "test-api-key-5f2c";

/// Environment variable name the test configs point at (passed explicitly, never set
/// in the process environment).
pub const API_KEY_ENV: &str = "SLUICE_TEST_API_KEY";
