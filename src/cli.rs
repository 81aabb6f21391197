//! The command line (clap derive). `main.rs` only parses and dispatches. The lab's
//! subcommands (`mock-api`, `loadgen`, `replay`, `capacity`) exist with the `lab`
//! feature only.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

impl Cli {
    /// Parses the process's arguments, with help that lists what is only known at run
    /// time (the built-in load profiles); exits on `--help` or a bad argument.
    pub fn parse_args() -> Cli {
        let command = Cli::command();
        #[cfg(feature = "lab")]
        let command = command.mut_subcommand("loadgen", |c| {
            c.after_help(sluice_lab::loadgen::profile::help())
        });
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
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
    #[cfg(feature = "lab")]
    /// Serve an emulator of Customer.io's Track API and Segment's HTTP API, with rate
    /// limits, latency and faults, and a /stats endpoint.
    MockApi(sluice_mock_api::MockApiConfig),
    #[cfg(feature = "lab")]
    /// Produce realistic identify/track events into a topic, open loop, at a rate or
    /// along k6-style stages; the last line on stdout is the JSON summary (exit 3: too
    /// many sends were late or failed, so the run measured less than it offered).
    Loadgen(Box<sluice_lab::loadgen::LoadgenArgs>),
    #[cfg(feature = "lab")]
    /// Re-run real traffic: copy a topic range (offsets or times) or a record file into
    /// a topic or a file, byte for byte, at the original pace × --speed, at --rate, or
    /// as fast as possible; the last line on stdout is the JSON summary.
    Replay(Box<sluice_lab::replay::ReplayArgs>),
    #[cfg(feature = "lab")]
    /// Prove capacity: run a load scenario through the real pipeline (embedded broker
    /// and API by default) and write a report with thresholds, the breaking point and
    /// what bounds it.
    Capacity {
        /// What to do.
        #[command(subcommand)]
        command: CapacityCommand,
    },
    /// Inspect or redrive the dead-letter topic.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Inspect the parking topic (events of workspaces that could not keep up).
    Park {
        /// What to do.
        #[command(subcommand)]
        command: ParkCommand,
    },
    /// Check a running worker's health endpoint (exit 0 when it answers 2xx): the
    /// container image's HEALTHCHECK, with no curl needed.
    Healthcheck {
        /// The endpoint to ask.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
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

/// `sluice capacity …`
#[cfg(feature = "lab")]
#[derive(Debug, Subcommand)]
pub enum CapacityCommand {
    /// Run a scenario and judge it: prints the Markdown report, writes report.json,
    /// report.md and report.svg; exit 99 when a threshold fails, 3 when the run is not
    /// a valid measurement.
    Run(Box<sluice_lab::capacity::RunArgs>),
    /// Review a running worker fleet from its exported metrics (two scrapes of each
    /// pod, or two saved scrape files): rates, budget used, lag, CPU, the most it can
    /// carry and what bounds it; writes review.json and review.md (`report` is an old
    /// name for it).
    #[command(alias = "report")]
    Review(Box<sluice_lab::capacity::ReviewArgs>),
}

/// `sluice dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count dead letters by reason and workspace and show samples.
    Inspect {
        /// The worker's configuration file (its [kafka] section is used).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Which letters.
        #[command(flatten)]
        filter: sluice_core::tools::dlq_cli::Filter,
        /// Samples shown per reason.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Send chosen dead letters back to be delivered again. Dry run unless --execute.
    Redrive {
        /// The worker's configuration file (its [kafka] section is used).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Which letters.
        #[command(flatten)]
        filter: sluice_core::tools::dlq_cli::Filter,
        /// Topic to send them to; default: each letter's original topic.
        #[arg(long)]
        to: Option<String>,
        /// Really send them (without it, only say what would be sent).
        #[arg(long)]
        execute: bool,
    },
}

/// `sluice park …`
#[derive(Debug, clap::Subcommand)]
pub enum ParkCommand {
    /// Per workspace: events parked, not yet read back, fences; samples of the waiting.
    Inspect {
        /// The worker's configuration file (its [kafka] section is used).
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Samples shown per workspace.
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
}
