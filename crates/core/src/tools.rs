//! The operator commands that read the worker's own wire format (dead-letter headers,
//! parking records): `sluice dlq` and `sluice park`. They ship in every image.

pub mod dlq_cli;
pub mod park_cli;
