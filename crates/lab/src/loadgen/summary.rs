//! What a run did, counted as it goes, and the JSON summary printed at its end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::output::{Delivery, Outcome};
use super::schedule::StageWindow;
use super::shape::Generated;
use super::Plan;
use crate::latency::{micros, Percentiles};

/// The JSON summary (the last line on stdout). Field names are stable.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The run id every event carries in `sluice.run`.
    pub run_id: String,
    /// Generator seed (pass it as `--seed` to make the same events).
    pub seed: u64,
    /// Topic or file written.
    pub destination: String,
    /// Events the schedule offers (absent for an open-ended `--rate max` run).
    pub target_events: Option<u64>,
    /// Events handed to the producer (or written).
    pub sent: u64,
    /// Events the broker acknowledged (or written).
    pub acknowledged: u64,
    /// Events refused or never acknowledged.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Deliberately invalid events, by kind.
    pub invalid_events: BTreeMap<String, u64>,
    /// Events by workspace.
    pub by_workspace: BTreeMap<String, u64>,
    /// Seconds from the first send to the last acknowledgement.
    pub duration_s: f64,
    /// Acknowledged events per second over the run.
    pub acknowledged_per_s: f64,
    /// Per stage: target and achieved rates.
    pub stages: Vec<StageSummary>,
    /// How late sends were against their schedule, ms (paced runs).
    pub send_lateness_ms: Percentiles,
    /// Sends more than `late_after_ms` behind schedule.
    pub late: u64,
    /// `late` ÷ sends.
    pub late_share: f64,
    /// The late threshold, ms.
    pub late_after_ms: f64,
    /// Send → broker acknowledgement, ms.
    pub ack_latency_ms: Percentiles,
    /// Whether the run measured what it meant to: few enough late sends, none failed.
    pub valid: bool,
    /// Why not, when it is not.
    pub invalid_reasons: Vec<String>,
    /// Stopped early by a signal.
    pub stopped: bool,
}

/// One stage of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    /// 0-based.
    pub stage: usize,
    /// Start, seconds from the start of the run.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// Target at its start and end, events/s (absent when unpaced).
    pub from_per_s: Option<f64>,
    /// See `from_per_s`.
    pub to_per_s: Option<f64>,
    /// Mean target rate over the stage.
    pub target_per_s: Option<f64>,
    /// Events scheduled in it.
    pub scheduled: u64,
    /// Events sent while it ran.
    pub sent: u64,
    /// Events acknowledged while it ran.
    pub acknowledged: u64,
    /// `sent` ÷ its length.
    pub sent_per_s: f64,
    /// `acknowledged` ÷ its length.
    pub acknowledged_per_s: f64,
    /// Events scheduled in it that were sent late.
    pub late: u64,
}

/// Counts kept during the run.
pub(super) struct Tally {
    run_id: String,
    seed: u64,
    target_events: Option<u64>,
    late_after: Duration,
    max_late_share: f64,
    sent: u64,
    refused: u64,
    refusals: BTreeMap<String, u64>,
    invalid: BTreeMap<String, u64>,
    by_workspace: Vec<u64>,
    scheduled_by_stage: Vec<u64>,
    sent_by_stage: Vec<u64>,
    late_by_stage: Vec<u64>,
    lateness_us: Histogram<u64>,
    late: u64,
}

/// What the end of the run adds.
pub(super) struct Finish {
    /// Topic or file.
    pub destination: String,
    /// Workspace ids by index.
    pub workspaces: Vec<String>,
    /// The stages as run.
    pub stages: Vec<StageWindow>,
    /// Whole run.
    pub elapsed: Duration,
    /// Acknowledgements.
    pub delivery: Delivery,
    /// Stopped by a signal.
    pub stopped: bool,
}

impl Tally {
    /// Empty counts for `plan`.
    pub(super) fn new(plan: &Plan, stages: usize, workspaces: usize) -> Tally {
        Tally {
            run_id: plan.run_id.clone(),
            seed: plan.seed,
            target_events: plan.schedule.total(),
            late_after: plan.late_after,
            max_late_share: plan.max_late_share,
            sent: 0,
            refused: 0,
            refusals: BTreeMap::new(),
            invalid: BTreeMap::new(),
            by_workspace: vec![0; workspaces],
            scheduled_by_stage: vec![0; stages],
            sent_by_stage: vec![0; stages],
            late_by_stage: vec![0; stages],
            lateness_us: micros(),
            late: 0,
        }
    }

    /// Records one send: scheduled in `stage`, sent while `sent_stage` ran, this late
    /// (`None` when unpaced).
    pub(super) fn record(
        &mut self,
        event: &Generated,
        stage: usize,
        sent_stage: usize,
        lateness: Option<Duration>,
        outcome: Outcome,
    ) {
        self.scheduled_by_stage[stage] += 1;
        self.by_workspace[event.workspace] += 1;
        if let Some(kind) = event.invalid {
            *self.invalid.entry(kind.as_str().into()).or_default() += 1;
        }
        if let Some(late) = lateness {
            self.lateness_us.saturating_record(late.as_micros() as u64);
            if late > self.late_after {
                self.late += 1;
                self.late_by_stage[stage] += 1;
            }
        }
        match outcome {
            Outcome::Sent => {
                self.sent += 1;
                self.sent_by_stage[sent_stage] += 1;
            }
            Outcome::Failed(reason) => {
                self.refused += 1;
                *self.refusals.entry(reason).or_default() += 1;
            }
        }
    }

    /// One progress status.
    pub(super) fn status(&self, elapsed: Duration, acked: u64) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        format!(
            "{:.1}s sent {} acked {} ({:.0}/s) late {} failed {}",
            elapsed.as_secs_f64(),
            self.sent,
            acked,
            acked as f64 / secs,
            self.late,
            self.refused
        )
    }

    /// Each stage's figures (a stage without a duration lasts the whole run).
    fn stage_summaries(&self, end: &Finish, elapsed: f64) -> Vec<StageSummary> {
        end.stages
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let duration = w.duration.map_or(elapsed, |d| d.as_secs_f64()).max(1e-9);
                let acked = end.delivery.acked_by_stage.get(i).copied().unwrap_or(
                    // A file run: written is acknowledged.
                    if end.delivery.acked_by_stage.is_empty() {
                        self.sent_by_stage[i]
                    } else {
                        0
                    },
                );
                StageSummary {
                    stage: i,
                    start_s: w.start.as_secs_f64(),
                    duration_s: duration,
                    from_per_s: w.from,
                    to_per_s: w.to,
                    target_per_s: w.from.zip(w.to).map(|(a, b)| (a + b) / 2.0),
                    scheduled: self.scheduled_by_stage[i],
                    sent: self.sent_by_stage[i],
                    acknowledged: acked,
                    sent_per_s: self.sent_by_stage[i] as f64 / duration,
                    acknowledged_per_s: acked as f64 / duration,
                    late: self.late_by_stage[i],
                }
            })
            .collect()
    }

    /// The summary.
    pub(super) fn summary(self, end: Finish) -> Summary {
        let elapsed = end.elapsed.as_secs_f64().max(1e-9);
        let stages = self.stage_summaries(&end, elapsed);
        let attempts = self.sent + self.refused;
        let late_share = if attempts == 0 {
            0.0
        } else {
            self.late as f64 / attempts as f64
        };
        let failed = self.refused + end.delivery.failed;
        let mut failures = self.refusals;
        for (reason, n) in end.delivery.failures {
            *failures.entry(reason).or_default() += n;
        }
        let mut invalid_reasons = Vec::new();
        if late_share > self.max_late_share {
            invalid_reasons.push(format!(
                "{} of {attempts} sends ({:.2}%) were more than {} ms late (limit {:.2}%): \
                 the generator or the broker fell behind the schedule",
                self.late,
                late_share * 100.0,
                self.late_after.as_millis(),
                self.max_late_share * 100.0
            ));
        }
        if failed > 0 {
            invalid_reasons.push(format!("{failed} events failed to produce"));
        }
        Summary {
            run_id: self.run_id,
            seed: self.seed,
            destination: end.destination,
            target_events: self.target_events,
            sent: self.sent,
            acknowledged: end.delivery.acked,
            failed,
            failures,
            invalid_events: self.invalid,
            by_workspace: end.workspaces.into_iter().zip(self.by_workspace).collect(),
            duration_s: elapsed,
            acknowledged_per_s: end.delivery.acked as f64 / elapsed,
            stages,
            send_lateness_ms: Percentiles::of_us(&self.lateness_us),
            late: self.late,
            late_share,
            late_after_ms: self.late_after.as_secs_f64() * 1000.0,
            ack_latency_ms: Percentiles::of_us(&end.delivery.ack_latency_us),
            valid: invalid_reasons.is_empty(),
            invalid_reasons,
            stopped: end.stopped,
        }
    }
}
