//! The `sluice` binary: parse the command line, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use sluice::cli::{
    CapacityCommand, Cli, Command, ConfigCommand, DlqCommand, LogFormat, ParkCommand,
};
use sluice::config::Config;
use sluice::tools::{capacity, dlq_cli, loadgen, park_cli, replay};
use tokio_util::sync::CancellationToken;

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
        Command::Loadgen(args) => return loadgen_command(*args),
        Command::Capacity { command } => return capacity_command(command),
        Command::Replay(args) => return replay_command(*args),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = Config::load(&config)?;
            print!("{}", config.to_masked_toml());
            eprintln!("config OK");
        }
        Command::MockApi(config) => runtime()?.block_on(async {
            let shutdown = CancellationToken::new();
            tokio::spawn(sluice::shutdown::on_signal(shutdown.clone()));
            sluice::tools::mock_api::run(config, shutdown).await
        })?,
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
                tokio::spawn(sluice::shutdown::on_signal(shutdown.clone()));
                sluice::pipeline::run(config, sluice::metrics::Metrics::new(), shutdown).await
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice loadgen`: the summary on stdout; exit 3 for an invalid run.
fn loadgen_command(args: loadgen::LoadgenArgs) -> anyhow::Result<ExitCode> {
    let plan = loadgen::Plan::new(args)?;
    let summary = with_signals(|stop| loadgen::run(plan, &stop))??;
    println!("{}", serde_json::to_string(&summary)?);
    if !summary.valid {
        for reason in &summary.invalid_reasons {
            eprintln!("invalid run: {reason}");
        }
        return Ok(ExitCode::from(loadgen::EXIT_INVALID));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice replay`: the summary on stdout; exit 2 when it stopped on an error, 3 when
/// records could not be written.
fn replay_command(args: replay::ReplayArgs) -> anyhow::Result<ExitCode> {
    let summary = with_signals(|stop| replay::run(args, &stop))??;
    println!("{}", serde_json::to_string(&summary)?);
    if let Some(error) = &summary.error {
        anyhow::bail!("replay stopped after {} records: {error}", summary.written);
    }
    if summary.failed > 0 {
        eprintln!("{} records could not be written", summary.failed);
        return Ok(ExitCode::from(loadgen::EXIT_INVALID));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice capacity run|report`: the Markdown on stdout and where the files went;
/// exit 99 for a failed threshold, 3 for an invalid run.
fn capacity_command(command: CapacityCommand) -> anyhow::Result<ExitCode> {
    match command {
        CapacityCommand::Run(args) => {
            let outcome = runtime()?.block_on(async {
                let stop = CancellationToken::new();
                tokio::spawn(sluice::shutdown::on_signal(stop.clone()));
                capacity::run(*args, stop).await
            })?;
            println!("{}", outcome.report.markdown());
            println!("report: {}", outcome.dir.join("report.md").display());
            if !outcome.report.passed {
                eprintln!("thresholds failed");
                return Ok(ExitCode::from(capacity::EXIT_THRESHOLDS));
            }
            if !outcome.report.valid {
                let reasons = outcome.report.loadgen.invalid_reasons.join("; ");
                eprintln!("invalid run: {reasons}");
                return Ok(ExitCode::from(loadgen::EXIT_INVALID));
            }
        }
        CapacityCommand::Report(args) => {
            let review = runtime()?.block_on(async {
                let pods = capacity::gather::collect(&args).await?;
                anyhow::Ok(capacity::review::review(&pods, args.cores_per_pod))
            })?;
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| capacity::report::default_dir("review"));
            review.write(&dir)?;
            println!("{}", review.markdown());
            println!("report: {}", dir.join("report.md").display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a blocking tool with a token that SIGTERM/SIGINT cancels.
fn with_signals<T>(tool: impl FnOnce(CancellationToken) -> T) -> anyhow::Result<T> {
    let runtime = runtime()?;
    let stop = CancellationToken::new();
    runtime.spawn(sluice::shutdown::on_signal(stop.clone()));
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
