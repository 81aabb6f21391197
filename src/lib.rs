//! The `sluice` command line: the worker and its operator commands from
//! [`sluice_core`], and with the `lab` feature (on by default) the emulator and the
//! capacity tools from [`sluice_mock_api`] and [`sluice_lab`].
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod cli;
