//! The lab's commands (the `lab` feature, on by default; the production image is built
//! without it): `sluice loadgen`, `replay`, `capacity run|review` and `mock-api`.

use std::process::ExitCode;

use sluice::cli::CapacityCommand;
use sluice_lab::{capacity, loadgen, replay};
use tokio_util::sync::CancellationToken;

use super::{runtime, with_signals};

/// `sluice mock-api`: the emulator until SIGTERM/SIGINT.
pub(crate) fn mock_api(config: sluice_mock_api::MockApiConfig) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(sluice_core::shutdown::on_signal(shutdown.clone()));
        sluice_mock_api::run(config, shutdown).await
    })?;
    Ok(())
}

/// `sluice loadgen`: the summary on stdout; exit 3 for an invalid run.
pub(crate) fn loadgen(args: loadgen::LoadgenArgs) -> anyhow::Result<ExitCode> {
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
pub(crate) fn replay(args: replay::ReplayArgs) -> anyhow::Result<ExitCode> {
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

/// `sluice capacity run|review`: the Markdown on stdout and where the files went;
/// exit 99 for a failed threshold, 3 for an invalid run.
pub(crate) fn capacity(command: CapacityCommand) -> anyhow::Result<ExitCode> {
    match command {
        CapacityCommand::Run(args) => {
            let outcome = runtime()?.block_on(async {
                let stop = CancellationToken::new();
                tokio::spawn(sluice_core::shutdown::on_signal(stop.clone()));
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
        CapacityCommand::Review(args) => {
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
            println!("review: {}", dir.join("review.md").display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
