//! sluice's lab: the tools that prove its capacity — the load generator and topic
//! replay, the record file they share, `capacity run` (the real pipeline against the
//! emulator, judged) and `capacity review` (a review from a fleet's metrics).
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub(crate) mod broker;
pub mod capacity;
pub mod dump;
pub(crate) mod latency;
pub mod loadgen;
pub(crate) mod pace;
pub(crate) mod progress;
pub mod replay;
