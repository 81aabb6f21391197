//! The stress profile: a staircase of offered rates, each step held long enough to
//! tell whether the pipeline carries it, and the breaking point it finds.
//!
//! A linear ramp cannot tell: the pipeline's buffers (the consumer's, the lanes', the
//! requests in flight) soak up a surplus for seconds and give it back in bursts, so a
//! ramp's "last second that kept up" lands well past what the pipeline sustains. On
//! this machine, by hand on one core before this module, a 60 s ramp read 51 500
//! events/s where 40 000 held for 12 s delivered 33 300 a second with the backlog
//! growing. A held step is judged on its whole
//! length after its first second (the step change itself): it broke when its backlog
//! grew by more than [`SURPLUS`] of what it offered and at least half of its seconds
//! fell short (one stall, a second of a pause, is not a break). Overloaded, a pipeline delivers
//! what it can, so the breaking point is what the first broken step delivered,
//! between that step's rate and the one below it.

use std::time::Duration;

use serde::Serialize;

use super::sample::{Sample, WINDOW};
use crate::loadgen::schedule::{Pace, Stage};

/// A step broke when its backlog grew by more than this share of the events it
/// offered (delivery below 97% of the offered rate over the step).
pub(crate) const SURPLUS: f64 = 0.03;

/// How long the change from one step to the next takes, and is left unjudged.
const SETTLE_S: f64 = 1.0;

/// The staircase: `steps` equal steps up to `top` events/s, each held `hold`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stairs {
    /// Events/s of the last step.
    pub top: f64,
    /// How many steps.
    pub steps: u32,
    /// How long each step is held.
    pub hold: Duration,
    /// Events the pipeline holds in the normal course of delivery (a full batch per
    /// request in flight): a backlog that grew by less was carried. At low rates a
    /// step's surplus is smaller than one batch, and batches leave in whole numbers.
    pub slack: f64,
}

/// Where a stress run broke.
#[derive(Debug, Clone, Serialize)]
pub struct Break {
    /// When the broken step began, seconds from the start.
    pub at_s: f64,
    /// The breaking point, events/s: what the pipeline delivered on the first step it
    /// could not hold, between that step's rate and the one below.
    pub offered_per_s: f64,
    /// The rate of the step that broke.
    pub step_per_s: f64,
    /// The rate of the last step held (0 when the first step broke).
    pub held_per_s: f64,
    /// Why: `delivery_fell_behind`, `error_rate` or `backlog_grew`.
    pub reason: &'static str,
}

impl Stairs {
    /// `steps` steps to `top` events/s in `ramp` in all.
    pub(crate) fn new(top: f64, steps: u32, ramp: Duration) -> anyhow::Result<Stairs> {
        anyhow::ensure!(top.is_finite() && top > 0.0, "--max-rate must be above 0");
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        let hold = ramp / steps;
        anyhow::ensure!(
            hold.as_secs_f64() >= 2.0 * SETTLE_S + 1.0,
            "--ramp {ramp:?} over {steps} steps holds each for {hold:?}; a step needs at least 3 s to be judged"
        );
        Ok(Stairs {
            top,
            steps,
            hold,
            slack: 0.0,
        })
    }

    /// The same staircase, with `events` of [`Stairs::slack`].
    pub(crate) fn with_slack(self, events: f64) -> Stairs {
        Stairs {
            slack: events.max(0.0),
            ..self
        }
    }

    /// Events/s of step `k` (from 0).
    pub(crate) fn rate(&self, k: u32) -> f64 {
        self.top * f64::from(k + 1) / f64::from(self.steps)
    }

    /// The load generator's schedule: a quick change to each step's rate, then the
    /// rate held.
    pub(crate) fn pace(&self) -> Pace {
        let change = Duration::from_millis(100);
        let stages = (0..self.steps)
            .flat_map(|k| {
                let target = self.rate(k);
                [
                    Stage {
                        duration: change,
                        target,
                    },
                    Stage {
                        duration: self.hold - change,
                        target,
                    },
                ]
            })
            .collect();
        Pace::Stages { start: 0.0, stages }
    }

    /// The step a sample taken at `t_s` seconds closes, if it is the first sample at or
    /// past that step's end.
    fn closed_by(&self, previous_t: f64, t: f64) -> Option<u32> {
        let hold = self.hold.as_secs_f64();
        let k = (t / hold).floor() as u32;
        (k >= 1 && previous_t < f64::from(k) * hold && k <= self.steps).then(|| k - 1)
    }

    /// Whether the samples so far (one a second, the newest last) show the pipeline
    /// broken: the step the newest sample closes was not held; or, at any moment,
    /// more than 5% of what was done over the last [`WINDOW`] samples dead-lettered
    /// (`error_rate`), or a backlog past five seconds of traffic and growing
    /// (`backlog_grew`: nothing gets through).
    pub(crate) fn broke(&self, samples: &[Sample]) -> Option<Break> {
        self.sudden(samples).or_else(|| self.step_not_held(samples))
    }

    /// Dead letters past 5%, or nothing getting through, over the last [`WINDOW`].
    fn sudden(&self, samples: &[Sample]) -> Option<Break> {
        let last = samples.last()?;
        let before = samples.len().checked_sub(WINDOW + 1).map(|i| &samples[i])?;
        let w = &samples[samples.len() - WINDOW..];
        let step = ((last.t_s - 1e-6).max(0.0) / self.hold.as_secs_f64()).floor() as u32;
        let step = step.min(self.steps - 1);
        let sum = |f: fn(&Sample) -> f64| w.iter().map(f).sum::<f64>();
        let (offered, done, dead) = (
            sum(|s| s.offered_per_s) / WINDOW as f64,
            sum(Sample::done_per_s),
            sum(|s| s.dead_lettered_per_s),
        );
        if done > 0.0 && dead / done > 0.05 {
            return Some(self.broken(step, self.rate(step), "error_rate"));
        }
        (offered >= 1.0 && last.backlog > 5.0 * offered && last.backlog > before.backlog)
            .then(|| self.broken(step, done / WINDOW as f64, "backlog_grew"))
    }

    /// The step the newest sample closes, if its backlog grew by more than
    /// [`SURPLUS`] of what it offered (and more than the slack) and most of its seconds
    /// fell short.
    fn step_not_held(&self, samples: &[Sample]) -> Option<Break> {
        let last = samples.last()?;
        let previous_t = samples.len().checked_sub(2).map_or(0.0, |i| samples[i].t_s);
        let k = self.closed_by(previous_t, last.t_s)?;
        let hold = self.hold.as_secs_f64();
        // Each sample covers the second before its time; a quarter second of slack for
        // the sampler's own lateness.
        let (from, to) = (f64::from(k) * hold + SETTLE_S, f64::from(k + 1) * hold);
        let judged: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t_s - 1.0 >= from - 0.25 && s.t_s <= to + 0.25)
            .collect();
        let base = samples.iter().rev().find(|s| s.t_s <= from + 0.25)?;
        let end = judged.last()?;
        let offered: f64 = judged.iter().map(|s| s.offered_per_s).sum();
        let done: f64 = judged.iter().map(|s| s.done_per_s()).sum();
        let grew = end.backlog - base.backlog;
        // And it stayed behind: most of its seconds fell short, not one stall (a
        // step that recovers from one with time to spare is carried; one that had no
        // time left hands its backlog to the next step).
        let short = judged
            .iter()
            .filter(|s| s.done_per_s() < (1.0 - SURPLUS) * s.offered_per_s)
            .count();
        (offered > 0.0 && grew > (SURPLUS * offered).max(self.slack) && 2 * short >= judged.len())
            .then(|| self.broken(k, done / judged.len() as f64, "delivery_fell_behind"))
    }

    /// A break on step `k` where the pipeline did `done` events/s.
    fn broken(&self, k: u32, done: f64, reason: &'static str) -> Break {
        let held = if k == 0 { 0.0 } else { self.rate(k - 1) };
        let step = self.rate(k);
        Break {
            at_s: f64::from(k) * self.hold.as_secs_f64(),
            offered_per_s: done.clamp(held, step),
            step_per_s: step,
            held_per_s: held,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
