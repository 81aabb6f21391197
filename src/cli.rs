//! The command line (clap derive). `main.rs` only parses and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Delivers customer events from Kafka to rate-limited SaaS APIs.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors; `auto` picks text on a
    /// terminal and JSON otherwise.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "auto")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume, deliver, commit, until SIGTERM/SIGINT.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Work with configuration files.
    Config {
        /// What to do with the file.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `sluice config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration (overrides
    /// applied, secrets masked).
    Check {
        /// The configuration file (TOML).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
}
