//! Progress of a long-running tool (loadgen, replay): a progress bar when stderr is a
//! terminal, one plain line per interval otherwise (CI logs, `kubectl logs`). Both go
//! to stderr, so stdout keeps only the JSON summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Debug)]
pub(crate) enum Progress {
    /// An indicatif bar (length known) or spinner, and when its status last changed.
    Bar(ProgressBar, Instant),
    /// Nothing (the caller shows progress its own way).
    Hidden,
    /// A line every `every`.
    Lines {
        /// Tool name at the start of each line.
        tool: &'static str,
        /// Interval between lines.
        every: Duration,
        /// When the last line was written.
        last: Instant,
    },
}

impl Progress {
    /// A bar on a terminal (out of `total` when known), plain lines every `every`
    /// otherwise.
    pub(crate) fn new(tool: &'static str, total: Option<u64>, every: Duration) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                tool,
                every,
                last: Instant::now(),
            };
        }
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("static template"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {spinner} {pos} {msg}")
                    .expect("static template"),
            ),
        };
        bar.set_prefix(tool);
        Progress::Bar(bar, Instant::now())
    }

    /// Reports `done` items and a short status; cheap enough to call on every item
    /// (plain lines are rate-limited, the bar redraws at most 20 times a second).
    pub(crate) fn update(&mut self, done: u64, status: impl FnOnce() -> String) {
        match self {
            Progress::Bar(bar, last) => {
                bar.set_position(done);
                if last.elapsed() >= Duration::from_millis(250) {
                    *last = Instant::now();
                    bar.set_message(status());
                }
            }
            Progress::Lines { tool, every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    eprintln!("{tool}: {}", status());
                }
            }
            Progress::Hidden => {}
        }
    }

    /// Ends the bar (plain lines need nothing).
    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar, _) = self {
            bar.finish_and_clear();
        }
    }
}
