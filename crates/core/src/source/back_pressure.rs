//! When the consumer stops reading because too much is buffered, and how.
//!
//! There are two ways to stop. *Holding* stops polling: librdkafka's prefetch (bounded by
//! `queued.max.messages.kbytes`) keeps what the broker sent and fetches no more, and the
//! next poll reads on at once. *Pausing* the partitions purges that prefetch, and its
//! resume is seen by librdkafka's broker thread only when that thread next wakes, up to a
//! second later (its `rd_kafka_max_block_ms`): a buffer that drains faster than that
//! leaves the lanes idle. Pausing after every fill capped `sluice capacity run --profile
//! throughput` at `max_buffered_events` per second (one fill per second, whatever the
//! API took).
//!
//! But a consumer that stops polling also stops serving rebalances (and is evicted after
//! `max.poll.interval.ms`). So a hold that lasts [`HOLD_BEFORE_PAUSE`] (or half of
//! `max.poll.interval.ms`, if that is shorter) becomes a pause, and the consumer polls
//! again; a buffer that took that long to drain to its resume mark
//! takes about as long again to empty, which covers the resume's second.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::KafkaConfig;

/// How long the consumer may go without polling before it pauses its partitions instead
/// (a rebalance waits at most this long for it): twice librdkafka's resume delay.
pub(super) const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(2);

/// The longest hold for a consumer evicted after `max_poll_interval` without a poll.
fn hold_for(max_poll_interval: Option<Duration>) -> Duration {
    max_poll_interval.map_or(HOLD_BEFORE_PAUSE, |m| HOLD_BEFORE_PAUSE.min(m / 2))
}

/// Where the source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// Not polling since then.
    Holding(Instant),
    /// Partitions paused in librdkafka; polling for rebalances only.
    Paused,
}

/// What the consumer must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Stop polling.
    Hold,
    /// Poll again (nothing was paused).
    Read,
    /// Pause the assigned partitions, and poll again.
    Pause,
    /// Resume the paused partitions.
    Resume,
}

/// The back-pressure decision over the buffered count: full at either bound, drained
/// below both resume marks.
#[derive(Debug)]
pub(super) struct BackPressure {
    /// Stop at either: events, bytes.
    max: (usize, usize),
    /// Go on below both: events, bytes.
    resume: (usize, usize),
    /// How long a hold lasts before it becomes a pause.
    hold: Duration,
    state: State,
}

impl BackPressure {
    /// The source's bounds from `[kafka]`: its buffer, its resume marks, and a hold
    /// that fits its `max.poll.interval.ms`.
    pub(super) fn for_kafka(k: &KafkaConfig) -> Self {
        let max_poll_interval = k
            .options
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis);
        BackPressure::new(
            (k.max_buffered_events, k.max_buffered_bytes),
            (k.resume_buffered(), k.max_buffered_bytes / 2),
            hold_for(max_poll_interval),
        )
    }

    /// Reading, with these bounds (events, bytes), holding at most `hold`.
    pub(super) fn new(max: (usize, usize), resume: (usize, usize), hold: Duration) -> Self {
        BackPressure {
            max,
            resume,
            hold,
            state: State::Reading,
        }
    }

    /// Whether the consumer should poll (reading, or paused and serving rebalances).
    pub(super) fn polling(&self) -> bool {
        !matches!(self.state, State::Holding(_))
    }

    /// Whether back-pressure holds the source (held or paused).
    pub(super) fn held_back(&self) -> bool {
        self.state != State::Reading
    }

    /// When a hold turns into a pause, while holding.
    pub(super) fn pause_at(&self) -> Option<Instant> {
        match self.state {
            State::Holding(since) => Some(since + self.hold),
            _ => None,
        }
    }

    /// The change, if any, that `buffered` (events, bytes) calls for at `now()` (read
    /// only when a hold starts or may end: this runs once per message).
    pub(super) fn step(
        &mut self,
        buffered: (usize, usize),
        now: impl FnOnce() -> Instant,
    ) -> Option<Change> {
        let (events, bytes) = buffered;
        let full = events >= self.max.0 || bytes >= self.max.1;
        let drained = events <= self.resume.0 && bytes <= self.resume.1;
        let (state, change) = match self.state {
            State::Reading if full => (State::Holding(now()), Change::Hold),
            State::Holding(_) if drained => (State::Reading, Change::Read),
            State::Holding(since) if now() >= since + self.hold => (State::Paused, Change::Pause),
            State::Paused if drained => (State::Reading, Change::Resume),
            _ => return None,
        };
        self.state = state;
        Some(change)
    }

    /// librdkafka refused `change`. A refused pause polls anyway (reading past the
    /// bound, as a consumer that never held would) rather than go unpolled until it is
    /// evicted; a refused resume stays paused, so the next step asks again.
    pub(super) fn failed(&mut self, change: Change) {
        match change {
            Change::Pause | Change::Resume => self.state = State::Paused,
            Change::Hold | Change::Read => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pressure() -> BackPressure {
        BackPressure::new((100, 10_000), (50, 5_000), HOLD_BEFORE_PAUSE)
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_hold_reads_on_without_pausing() {
        let mut bp = pressure();
        assert_eq!(bp.step((99, 0), Instant::now), None);
        assert_eq!(bp.step((100, 0), Instant::now), Some(Change::Hold));
        assert!(!bp.polling() && bp.held_back());
        tokio::time::advance(Duration::from_millis(500)).await;
        // Above the resume mark: still holding.
        assert_eq!(bp.step((51, 0), Instant::now), None);
        assert_eq!(bp.step((50, 0), Instant::now), Some(Change::Read));
        assert!(bp.polling() && !bp.held_back());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_hold_pauses_and_polls_until_drained() {
        let mut bp = pressure();
        bp.step((0, 10_000), Instant::now);
        let due = bp.pause_at().expect("holding");
        tokio::time::advance(HOLD_BEFORE_PAUSE - Duration::from_millis(1)).await;
        assert_eq!(bp.step((80, 0), Instant::now), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(Instant::now(), due);
        assert_eq!(bp.step((80, 0), Instant::now), Some(Change::Pause));
        assert!(bp.polling() && bp.held_back() && bp.pause_at().is_none());
        // Both marks must be met to resume.
        assert_eq!(bp.step((10, 6_000), Instant::now), None);
        assert_eq!(bp.step((10, 10), Instant::now), Some(Change::Resume));
        assert!(!bp.held_back());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_pause_still_polls_and_a_refused_resume_is_asked_again() {
        let mut bp = pressure();
        bp.step((100, 0), Instant::now);
        tokio::time::advance(HOLD_BEFORE_PAUSE).await;
        assert_eq!(bp.step((100, 0), Instant::now), Some(Change::Pause));
        bp.failed(Change::Pause);
        assert!(bp.polling() && bp.held_back());
        assert_eq!(bp.step((0, 0), Instant::now), Some(Change::Resume));
        bp.failed(Change::Resume);
        assert_eq!(bp.step((0, 0), Instant::now), Some(Change::Resume));
        assert!(!bp.held_back());
    }

    #[test]
    fn a_short_poll_interval_shortens_the_hold() {
        assert_eq!(hold_for(None), HOLD_BEFORE_PAUSE);
        assert_eq!(hold_for(Some(Duration::from_secs(300))), HOLD_BEFORE_PAUSE);
        assert_eq!(
            hold_for(Some(Duration::from_secs(3))),
            Duration::from_millis(1_500)
        );
    }
}
