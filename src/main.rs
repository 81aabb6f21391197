//! The `sluice` binary: parse the command line, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use sluice::cli::{Cli, Command, ConfigCommand, DlqCommand, LogFormat, ParkCommand};
use sluice_core::config::Config;
use sluice_core::tools::{dlq_cli, park_cli};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "lab")]
mod lab;

/// mimalloc instead of glibc's malloc: buffered events are freed on other threads
/// than the ones that allocated them, which glibc's per-thread arenas keep as
/// fragmented, resident memory. Built without transparent huge pages (`no_thp`): with
/// them each purged page came back as a 2 MiB page to zero, which cost resident
/// memory (~20 MB at the shipped defaults) and CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    init_tracing(cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "lab")]
        Command::Loadgen(args) => return lab::loadgen(*args),
        #[cfg(feature = "lab")]
        Command::Capacity { command } => return lab::capacity(command),
        #[cfg(feature = "lab")]
        Command::Replay(args) => return lab::replay(*args),
        #[cfg(feature = "lab")]
        Command::MockApi(config) => lab::mock_api(config)?,
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = Config::load(&config)?;
            print!("{}", config.to_masked_toml());
            eprintln!("config OK");
        }
        Command::Park {
            command: ParkCommand::Inspect { config, samples },
        } => {
            let config = Config::load_without_secrets(&config)?;
            print!(
                "{}",
                park_cli::report(&park_cli::inspect(&config, samples)?)
            );
        }
        Command::Dlq { command } => dlq_command(command)?,
        Command::Healthcheck { url } => runtime()?.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()?;
            let status = client.get(&url).send().await?.status();
            anyhow::ensure!(status.is_success(), "{url} answered {status}");
            anyhow::Ok(())
        })?,
        Command::Run { config } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(sluice_core::shutdown::on_signal(shutdown.clone()));
                sluice_core::pipeline::run(config, sluice_core::metrics::Metrics::new(), shutdown)
                    .await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a blocking tool with a token that SIGTERM/SIGINT cancels.
#[cfg(feature = "lab")]
fn with_signals<T>(tool: impl FnOnce(CancellationToken) -> T) -> anyhow::Result<T> {
    let runtime = runtime()?;
    let stop = CancellationToken::new();
    runtime.spawn(sluice_core::shutdown::on_signal(stop.clone()));
    Ok(tool(stop))
}

/// `sluice dlq inspect` and `sluice dlq redrive`.
fn dlq_command(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Inspect {
            config,
            filter,
            samples,
        } => {
            let config = Config::load_without_secrets(&config)?;
            let letters = dlq_cli::read(&config.kafka, &filter)?;
            print!("{}", dlq_cli::report(&letters, samples));
        }
        DlqCommand::Redrive {
            config,
            filter,
            to,
            execute,
        } => {
            let config = Config::load_without_secrets(&config)?;
            let letters = dlq_cli::read(&config.kafka, &filter)?;
            print!("{}", dlq_cli::report(&letters, 0));
            if execute {
                let done = runtime()?.block_on(dlq_cli::redrive(
                    &config.kafka,
                    &letters,
                    to.as_deref(),
                ))?;
                println!("redrove {} dead letters", done.sent);
                if !done.without_payload.is_empty() {
                    println!(
                        "{} not redriven: their payload was omitted (too large for the DLQ \
                         topic); the originals are at {}",
                        done.without_payload.len(),
                        done.without_payload.join(", ")
                    );
                }
            } else {
                println!(
                    "dry run: {} dead letters would be redriven (add --execute)",
                    letters.len()
                );
            }
        }
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
