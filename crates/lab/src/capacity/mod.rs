//! `sluice capacity run`: run a scenario through the real pipeline and judge it — the
//! load generator against an embedded (or real) broker and API, one-second samples
//! from the worker's own metrics, thresholds, the breaking point and what bounds it —
//! and write `report.json`, `report.md` and `report.svg`; and `sluice capacity review`:
//! the same judgement from a running fleet's exported metrics.

mod bench;
mod chart;
pub(crate) mod cpu_model;
pub mod gather;
pub mod prometheus_api;
pub mod report;
pub mod review;
mod review_args;
mod run;
mod run_args;
pub mod sample;
pub mod scrapes;
pub(crate) mod stairs;
pub(crate) mod threshold;

pub use report::Report;
pub use review::Review;
pub use review_args::ReviewArgs;
pub use run::{run, RunOutcome};
pub use run_args::RunArgs;

/// Exit code of a run whose thresholds failed (k6's).
pub const EXIT_THRESHOLDS: u8 = 99;
