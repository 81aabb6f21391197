//! When each generated event is due. An open-loop schedule: event `i` is due at the
//! moment the offered-load curve has offered `i` events, whatever the broker does, so a
//! stall shows up as lateness instead of as a quietly lower rate.
//!
//! The curve is k6's `ramping-arrival-rate`: stages, each a linear ramp from the previous
//! target to its own over its duration (`--stage 30s:1000`). A constant `--rate` is one
//! flat stage; `--rate max` has no curve (every event is due at once).

use std::str::FromStr;
use std::time::Duration;

/// One k6-style stage: ramp linearly to `target` events/s over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the ramp lasts.
    pub duration: Duration,
    /// Events per second at its end.
    pub target: f64,
}

impl FromStr for Stage {
    type Err = String;

    /// `DURATION:TARGET`, e.g. `30s:1000`, `2m:5000`, `1m30s:0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            format!("stage {s:?}: {why} (expected DURATION:EVENTS_PER_S, e.g. 30s:1000)")
        };
        let (duration, target) = s.split_once(':').ok_or_else(|| bad("no ':'".into()))?;
        let duration =
            humantime::parse_duration(duration.trim()).map_err(|e| bad(e.to_string()))?;
        let target: f64 = target
            .trim()
            .parse()
            .map_err(|_| bad(format!("{target:?} is not a number")))?;
        if !target.is_finite() || target < 0.0 {
            return Err(bad("the target must be 0 or more events/s".into()));
        }
        Ok(Stage { duration, target })
    }
}

/// The offered load of one run.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<Segment>,
    /// Events in the run (`None`: until stopped or `limit_time`).
    total: Option<u64>,
    /// For an unpaced run: stop after this long.
    limit_time: Option<Duration>,
}

/// One stage with its place in the run.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Seconds from the start of the run.
    start: f64,
    /// Seconds.
    duration: f64,
    /// Rate at its start, events/s.
    from: f64,
    /// Rate at its end, events/s.
    to: f64,
    /// Events offered before it.
    before: f64,
}

impl Segment {
    fn events(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.duration
    }

    /// Seconds into the segment at which `k` of its events have been offered.
    fn time_of(&self, k: f64) -> f64 {
        let slope = (self.to - self.from) / self.duration;
        if slope.abs() <= 1e-12 * self.from.max(self.to).max(1.0) {
            return k / self.from;
        }
        // from·τ + slope·τ²/2 = k
        let disc = (self.from * self.from + 2.0 * slope * k).max(0.0);
        ((disc.sqrt() - self.from) / slope).clamp(0.0, self.duration)
    }
}

/// The stages of a run and what bounds it, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Pace {
    /// As fast as the broker takes them.
    Max,
    /// Stages from a starting rate.
    Stages {
        /// Events/s at time 0.
        start: f64,
        /// The ramps.
        stages: Vec<Stage>,
    },
    /// One constant rate.
    Constant(f64),
}

/// Why a schedule cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Nothing says when the run ends.
    #[error("the run has no end: give --events, --duration, --stage or --profile")]
    Unbounded,
    /// A constant rate of zero (or below one event in 1 000 s).
    #[error("--rate must be at least 0.001 events/s (or `max`)")]
    ZeroRate,
    /// The stages offer no events.
    #[error("the stages offer no events (every target is 0)")]
    Empty,
}

/// The stages as segments from `start` events/s, and the events they offer in all.
fn segments(start: f64, stages: &[Stage]) -> (Vec<Segment>, f64) {
    let mut segments = Vec::with_capacity(stages.len());
    let (mut at, mut before, mut from) = (0.0, 0.0, start);
    for stage in stages {
        let seg = Segment {
            start: at,
            duration: stage.duration.as_secs_f64(),
            from,
            to: stage.target,
            before,
        };
        at += seg.duration;
        if seg.duration > 0.0 {
            before += seg.events();
            segments.push(seg);
        }
        from = stage.target;
    }
    (segments, before)
}

impl Schedule {
    /// The schedule for `pace`, cut at `events` and at `duration` where given.
    pub fn new(
        pace: &Pace,
        events: Option<u64>,
        duration: Option<Duration>,
    ) -> Result<Schedule, ScheduleError> {
        let (start, mut stages) = match pace {
            Pace::Max => {
                if events.is_none() && duration.is_none() {
                    return Err(ScheduleError::Unbounded);
                }
                return Ok(Schedule {
                    segments: Vec::new(),
                    total: events,
                    limit_time: duration,
                });
            }
            Pace::Constant(rate) if !(rate.is_finite() && *rate >= 0.001) => {
                return Err(ScheduleError::ZeroRate)
            }
            Pace::Constant(rate) => {
                let length = match (duration, events) {
                    (Some(d), _) => d,
                    (None, Some(n)) => Duration::from_secs_f64(n as f64 / rate),
                    (None, None) => return Err(ScheduleError::Unbounded),
                };
                (
                    *rate,
                    vec![Stage {
                        duration: length,
                        target: *rate,
                    }],
                )
            }
            Pace::Stages { start, stages } => (*start, stages.clone()),
        };
        if let Some(limit) = duration {
            stages = cut(start, &stages, limit);
        }
        let (segments, before) = segments(start, &stages);
        // A tolerance for float error: `--rate 3 --events 1000` offers 1000, not 999.
        let offered = (before + 1e-6).floor() as u64;
        if offered == 0 {
            return Err(ScheduleError::Empty);
        }
        Ok(Schedule {
            segments,
            total: Some(events.map_or(offered, |n| n.min(offered))),
            limit_time: None,
        })
    }

    /// Events in the run, when known in advance.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Whether events are paced at all.
    pub(crate) fn paced(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Time limit of an unpaced run.
    pub(crate) fn limit_time(&self) -> Option<Duration> {
        self.limit_time
    }

    /// When event `i` (from 0) is due, from the start of the run, and its stage; `None`
    /// past the end. Unpaced runs: every event is due at 0, in stage 0.
    pub fn due(&self, i: u64) -> Option<(Duration, usize)> {
        if self.total.is_some_and(|n| i >= n) {
            return None;
        }
        if self.segments.is_empty() {
            return Some((Duration::ZERO, 0));
        }
        let k = i as f64;
        let idx = self
            .segments
            .partition_point(|s| s.before + s.events() <= k)
            .min(self.segments.len() - 1);
        let seg = &self.segments[idx];
        let t = seg.start + seg.time_of(k - seg.before);
        Some((Duration::from_secs_f64(t), idx))
    }

    /// The stages as run (zero-length ones dropped; one for an unpaced run).
    pub fn stages(&self) -> Vec<StageWindow> {
        if self.segments.is_empty() {
            return vec![StageWindow {
                start: Duration::ZERO,
                duration: self.limit_time,
                from: None,
                to: None,
                events: self.total,
            }];
        }
        self.segments
            .iter()
            .map(|s| StageWindow {
                start: Duration::from_secs_f64(s.start),
                duration: Some(Duration::from_secs_f64(s.duration)),
                from: Some(s.from),
                to: Some(s.to),
                events: Some(
                    (s.before + s.events() + 1e-6).floor() as u64
                        - (s.before + 1e-6).floor() as u64,
                ),
            })
            .collect()
    }

    /// The stage running at `t` from the start (the last one after the end).
    pub(crate) fn stage_at(&self, t: Duration) -> usize {
        let t = t.as_secs_f64();
        self.segments
            .partition_point(|s| s.start + s.duration <= t)
            .min(self.segments.len().saturating_sub(1))
    }

    /// The highest rate the curve reaches, events/s (`None` when unpaced).
    pub fn peak(&self) -> Option<f64> {
        self.segments
            .iter()
            .map(|s| s.from.max(s.to))
            .reduce(f64::max)
    }
}

/// One stage as run, for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct StageWindow {
    /// When it starts, from the start of the run.
    pub start: Duration,
    /// How long it lasts (`None`: until the run ends).
    pub duration: Option<Duration>,
    /// Target rate at its start.
    pub from: Option<f64>,
    /// Target rate at its end.
    pub to: Option<f64>,
    /// Events it offers.
    pub events: Option<u64>,
}

/// `stages` from `start`, ending at `limit` (the stage running then is cut, keeping the
/// rate its ramp had reached).
fn cut(start: f64, stages: &[Stage], limit: Duration) -> Vec<Stage> {
    let mut out = Vec::new();
    let (mut at, mut from) = (Duration::ZERO, start);
    for stage in stages {
        if at + stage.duration <= limit {
            out.push(*stage);
        } else {
            let keep = limit.saturating_sub(at);
            if !keep.is_zero() {
                let share = keep.as_secs_f64() / stage.duration.as_secs_f64();
                out.push(Stage {
                    duration: keep,
                    target: from + (stage.target - from) * share,
                });
            }
            return out;
        }
        at += stage.duration;
        from = stage.target;
    }
    out
}

#[cfg(test)]
mod tests;
