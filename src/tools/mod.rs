//! The tools sluice ships to prove its own capacity and to operate it: the mock API,
//! the load generator and topic replay, and the dead-letter and parking-topic commands.

pub mod capacity;
pub mod dlq_cli;
pub mod dump;
pub(crate) mod latency;
pub mod loadgen;
pub mod mock_api;
pub(crate) mod pace;
pub mod park_cli;
pub(crate) mod progress;
pub mod replay;
pub(crate) mod shared;
