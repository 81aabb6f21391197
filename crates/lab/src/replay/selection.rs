//! What a replay is asked to read: partitions, offset ranges and a time range as given
//! on the command line, and the per-partition spans they resolve to.

use std::str::FromStr;

/// `--offsets P:A-B`: offsets A (inclusive) to B (exclusive) of partition P; `P:A-` runs
/// to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    /// Partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// First offset not read (`None`: the end as the replay starts).
    pub end: Option<i64>,
}

impl FromStr for OffsetRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("offsets {s:?}: expected PARTITION:START-END (END exclusive, may be empty)");
        let (p, range) = s.split_once(':').ok_or_else(bad)?;
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let partition = p.trim().parse().map_err(|_| bad())?;
        let start: i64 = a.trim().parse().map_err(|_| bad())?;
        let end = match b.trim() {
            "" => None,
            b => Some(b.parse::<i64>().map_err(|_| bad())?),
        };
        if start < 0 || end.is_some_and(|e| e < start) {
            return Err(bad());
        }
        Ok(OffsetRange {
            partition,
            start,
            end,
        })
    }
}

/// A time given as RFC 3339 or unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl FromStr for Time {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Time(ms));
        }
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Time(t.timestamp_millis()))
            .map_err(|_| format!("time {s:?}: expected RFC 3339 (2026-12-01T10:00:00Z) or unix ms"))
    }
}

/// The offsets of one partition to read: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// First offset not read; [`OPEN`]: read until the partition's end is reached
    /// (the broker's end-of-partition signal, not its high watermark, which some
    /// brokers — Tansu 0.6 — report short of the last batch).
    pub end: i64,
    /// The high watermark when the replay started (for progress only).
    pub high: i64,
    /// Where an open span ends: (offset, time). The partition ends at the first record
    /// at or past that offset whose timestamp is at or after that time. With `--to`:
    /// the broker's offset for `--to`, and `--to` — at once on a broker that answers
    /// exactly (Kafka), a little later on one that answers with the start of the batch
    /// holding it (Tansu 0.6), never early. Otherwise: the high watermark and the
    /// replay's start, so a replay of a topic still being written ends where the topic
    /// ended when it started instead of following it for ever.
    pub until: Option<(i64, i64)>,
}

/// The end of a span that runs to the end of its partition.
pub(super) const OPEN: i64 = i64::MAX;

/// What to read from a topic.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these partitions (empty: all, or those of `offsets`).
    pub partitions: Vec<i32>,
    /// Offset ranges.
    pub offsets: Vec<OffsetRange>,
    /// Records at or after this time.
    pub from: Option<Time>,
    /// Records before this time.
    pub to: Option<Time>,
}
