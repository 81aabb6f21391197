//! Which records of a topic a replay reads (partitions, offset ranges, a time range via
//! offsets-for-times), and reading them back in timestamp order across partitions
//! (each partition's own order always kept), one queue per partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::selection::OPEN;
pub use super::selection::{OffsetRange, Selection, Span, Time};
use crate::dump::DumpedRecord;
use sluice_core::tools::dlq_cli::QuietEof;

/// How long one call to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);
/// A partition with records still to read that yields nothing for this long is an error.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Reads a selection of a topic, merged in timestamp order.
pub struct TopicReader {
    consumer: Arc<BaseConsumer<QuietEof>>,
    parts: Vec<Part>,
    from: Option<i64>,
    to: Option<i64>,
    /// Records read but outside `[from, to)`.
    pub skipped: u64,
    topic: String,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("topic", &self.topic)
            .finish()
    }
}

struct Part {
    span: Span,
    /// Records fetched before the queue was split off, which arrived on the
    /// consumer's main queue: they come first.
    early: std::collections::VecDeque<OwnedMessage>,
    /// The main queue reported this partition's end after `early`.
    early_eof: bool,
    queue: PartitionQueue<QuietEof>,
    head: Option<OwnedMessage>,
    done: bool,
    last_progress: Instant,
}

impl TopicReader {
    /// Resolves `selection` on `topic` and starts reading it.
    pub fn open(
        client: &ClientConfig,
        topic: &str,
        selection: &Selection,
    ) -> anyhow::Result<TopicReader> {
        let consumer: BaseConsumer<QuietEof> = client
            .clone()
            .set("group.id", "sluice-replay")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .create_with_context(QuietEof)?;
        let spans = spans(&consumer, topic, selection)?;
        let mut tpl = TopicPartitionList::new();
        for s in &spans {
            tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.start))?;
        }
        consumer.assign(&tpl)?;
        let consumer = Arc::new(consumer);
        let mut parts = Vec::with_capacity(spans.len());
        for span in spans {
            let queue = consumer
                .split_partition_queue(topic, span.partition)
                .ok_or_else(|| {
                    anyhow::anyhow!("cannot read {topic} partition {}", span.partition)
                })?;
            parts.push(Part {
                span,
                early: std::collections::VecDeque::new(),
                early_eof: false,
                queue,
                head: None,
                done: span.start >= span.end,
                last_progress: Instant::now(),
            });
        }
        Ok(TopicReader {
            consumer,
            parts,
            from: selection.from.map(|t| t.0),
            to: selection.to.map(|t| t.0),
            skipped: 0,
            topic: topic.to_string(),
        })
    }

    /// The spans being read.
    pub(crate) fn spans(&self) -> Vec<Span> {
        self.parts.iter().map(|p| p.span).collect()
    }

    /// Records the selection holds (before the time filter).
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| (p.span.end.min(p.span.high) - p.span.start).max(0) as u64)
            .sum()
    }

    /// The next record: the earliest-timestamped head of the partitions (each waited
    /// for), or `None` at the end.
    pub(crate) fn next_record(&mut self) -> anyhow::Result<Option<DumpedRecord>> {
        loop {
            self.keep_early_records()?;
            if self.wait_for_a_head()? {
                continue;
            }
            let Some(part) = self
                .parts
                .iter_mut()
                .filter(|p| p.head.is_some())
                .min_by_key(|p| {
                    let m = p.head.as_ref().expect("filtered");
                    (m.timestamp().to_millis().unwrap_or(i64::MIN), m.partition())
                })
            else {
                return Ok(None);
            };
            let m = part.head.take().expect("filtered");
            if m.offset() + 1 >= part.span.end {
                part.done = true;
            }
            let ts = m.timestamp().to_millis();
            if let (Some((offset, time)), Some(t)) = (part.span.until, ts) {
                if m.offset() >= offset && t >= time {
                    part.done = true;
                    part.head = None;
                    continue;
                }
            }
            let inside = ts.is_none_or(|t| {
                self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|to| t < to)
            });
            if !inside {
                self.skipped += 1;
                continue;
            }
            return Ok(Some(DumpedRecord::of_message(&self.topic, &m)));
        }
    }

    /// Anything fetched before the split lands on the main queue: keeps it, in order,
    /// ahead of the partition's own queue (dropping it would skip records).
    fn keep_early_records(&mut self) -> anyhow::Result<()> {
        while let Some(event) = self.consumer.poll(Duration::ZERO) {
            match event {
                Ok(m) => {
                    let m = m.detach();
                    if let Some(part) = self
                        .parts
                        .iter_mut()
                        .find(|p| p.span.partition == m.partition())
                    {
                        part.early.push_back(m);
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(part) = self.parts.iter_mut().find(|x| x.span.partition == p) {
                        part.early_eof = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Fills each partition's head; if one has none yet, waits a little for the first
    /// such and returns `true` (ask again), failing once it has stalled too long.
    fn wait_for_a_head(&mut self) -> anyhow::Result<bool> {
        let mut waiting = None;
        for (i, part) in self.parts.iter_mut().enumerate() {
            if part.head.is_none() && !part.done {
                part.fill(Duration::ZERO)?;
                if part.head.is_none() && !part.done {
                    waiting.get_or_insert(i);
                }
            }
        }
        if let Some(i) = waiting {
            let part = &mut self.parts[i];
            part.fill(Duration::from_millis(20))?;
            if part.head.is_none() && !part.done && part.last_progress.elapsed() > STALL_LIMIT {
                anyhow::bail!(
                    "{} partition {} gave nothing for {}s (offsets {}..{} wanted)",
                    self.topic,
                    part.span.partition,
                    STALL_LIMIT.as_secs(),
                    part.span.start,
                    part.span.end
                );
            }
            return Ok(true);
        }
        Ok(false)
    }
}

impl Part {
    fn fill(&mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(m) = self.early.pop_front() {
            self.take(m);
            return Ok(());
        }
        if self.early_eof {
            self.done = true;
            return Ok(());
        }
        match self.queue.poll(timeout) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => self.done = true,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => self.take(m.detach()),
        }
        Ok(())
    }

    fn take(&mut self, m: OwnedMessage) {
        self.last_progress = Instant::now();
        if m.offset() >= self.span.end {
            self.done = true;
        } else if m.offset() >= self.span.start {
            self.head = Some(m);
        }
    }
}

/// The spans `selection` names on `topic`, cut to what the partitions hold.
fn spans(
    consumer: &BaseConsumer<QuietEof>,
    topic: &str,
    selection: &Selection,
) -> anyhow::Result<Vec<Span>> {
    let all = sluice_core::tools::dlq_cli::partitions_of(consumer, topic)?;
    anyhow::ensure!(
        !all.is_empty(),
        "topic {topic} does not exist (or has no partitions)"
    );
    let chosen: Vec<i32> = if !selection.offsets.is_empty() {
        selection.offsets.iter().map(|o| o.partition).collect()
    } else if !selection.partitions.is_empty() {
        selection.partitions.clone()
    } else {
        all.clone()
    };
    let mut spans = Vec::with_capacity(chosen.len());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for (i, p) in chosen.iter().copied().enumerate() {
        anyhow::ensure!(
            !chosen[..i].contains(&p),
            "partition {p} is named twice (one --offsets range per partition)"
        );
        anyhow::ensure!(
            all.contains(&p),
            "{topic} has no partition {p} (it has {})",
            all.len()
        );
        let (low, high) = consumer.fetch_watermarks(topic, p, BROKER_TIMEOUT)?;
        let (mut start, mut end) = (low, OPEN);
        if let Some(o) = selection.offsets.iter().find(|o| o.partition == p) {
            start = o.start.max(low);
            end = o.end.unwrap_or(OPEN);
        }
        spans.push(Span {
            partition: p,
            start,
            end: end.max(start),
            high,
            until: (end == OPEN).then_some((high, now_ms)),
        });
    }
    cut_by_time(consumer, topic, &mut spans, selection)?;
    Ok(spans)
}

/// Narrows `spans` to `--from` (the first record at or after it) and `--to` (read up
/// to the first record at or after it).
fn cut_by_time(
    consumer: &BaseConsumer<QuietEof>,
    topic: &str,
    spans: &mut [Span],
    selection: &Selection,
) -> anyhow::Result<()> {
    for (time, is_start) in [(selection.from, true), (selection.to, false)] {
        let Some(Time(ms)) = time else { continue };
        let mut tpl = TopicPartitionList::new();
        for s in spans.iter() {
            tpl.add_partition_offset(topic, s.partition, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(tpl, BROKER_TIMEOUT)?;
        for s in spans.iter_mut() {
            let at = found
                .find_partition(topic, s.partition)
                .map(|e| e.offset())
                .unwrap_or(Offset::End);
            let at = match at {
                Offset::Offset(n) => n,
                // No record at or after that time.
                _ => s.end,
            };
            if is_start {
                s.start = s.start.max(at).min(s.end);
            } else if at < s.end {
                s.until = Some((at, ms));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
