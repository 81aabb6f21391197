//! The tools sluice ships to prove its own capacity and to operate it: the mock API
//! and the dead-letter and parking-topic commands.

pub mod dlq_cli;
pub mod mock_api;
pub mod park_cli;
