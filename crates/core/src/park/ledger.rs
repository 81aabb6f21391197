//! The parking ledger: how the next owner of a source partition learns which
//! workspaces may have parked events of it waiting. It is kept in committed offsets
//! alone, so it holds on every broker (Tansu drops offset-commit metadata; Kafka caps
//! it at `offset.metadata.max.bytes`, 4 KB by default) and for any number of
//! workspaces.
//!
//! For each parking partition p (the one source partition p parks into), the consumer
//! group `{group}.park` commits a *floor*: every parked record below it is finished
//! (delivered through its workspace's reader, or dead-lettered). The pod that owns
//! source partition p keeps it, every second: the lowest `start` of the workspaces
//! marked on p, or — none being marked — the partition's end, read *before* the marks
//! (a workspace parked after that read writes at or above it).
//!
//! On assignment, the new owner reads parking partition p from its floor to its end:
//! every workspace with a parked record of p there is inherited, from its first such
//! offset (its reader then starts from the later of that and its own commit). A floor
//! committed late by a former owner is still a floor: it was at most the end when it
//! was read, and everything parked after that lies above it; a floor lower than need be
//! only makes the next read longer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::table::ParkedMarks;
use super::writer::{FENCE, WORKSPACE};
use crate::config::KafkaConfig;
use crate::dlq::header_map;
use crate::kafka::log::KafkaLog;
use crate::kafka::{client_config, serve_queued};
use crate::metrics::Metrics;
use crate::record::headers;
use crate::record::TopicPartition;

/// How long one broker query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading one parking partition from its floor may take before the new owner
/// assumes the worst (every workspace marked from the floor).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often every floor is committed again, changed or not.
const RECOMMIT_EVERY: Duration = Duration::from_secs(60);

/// The floors of the parking topic's partitions, and the read that finds the marks.
pub(crate) struct Ledger {
    topic: String,
    partitions: usize,
    /// Group `{group}.park`: commits the floors and reads them back. Its lines and
    /// errors go through [`KafkaLog`], served each second by [`keep`](Self::keep).
    keeper: BaseConsumer<KafkaLog>,
    /// Reads a parking partition from its floor (assigned by hand, never commits).
    reader: Mutex<BaseConsumer<KafkaLog>>,
    /// The floor last committed (or read) per parking partition.
    committed: Mutex<HashMap<i32, i64>>,
    /// When every floor was last committed, changed or not.
    recommitted: Mutex<Option<Instant>>,
}

/// A parking partition read that stopped short: `found` before offset `from`.
struct Unread {
    from: i64,
    found: BTreeMap<String, i64>,
    why: String,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// The ledger of parking topic `topic` (of `partitions`), for `kafka.group_id`.
    pub(crate) fn new(
        kafka: &KafkaConfig,
        topic: &str,
        partitions: usize,
        metrics: &Metrics,
    ) -> Result<Self, KafkaError> {
        let consumer = |group: String, eof: bool| -> Result<BaseConsumer<KafkaLog>, KafkaError> {
            client_config(kafka)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", eof.to_string())
                .create_with_context(KafkaLog::new(metrics.clone()))
        };
        Ok(Ledger {
            topic: topic.to_string(),
            partitions,
            keeper: consumer(format!("{}.park", kafka.group_id), false)?,
            reader: Mutex::new(consumer(format!("{}.park.ledger", kafka.group_id), true)?),
            committed: Mutex::new(HashMap::new()),
            recommitted: Mutex::new(None),
        })
    }

    /// Whether source partition `tp` has a parking partition.
    pub(crate) fn covers(&self, tp: &TopicPartition) -> bool {
        tp.partition >= 0 && (tp.partition as usize) < self.partitions
    }

    /// The marks of newly assigned source partitions (blocks on the brokers): for each,
    /// the workspaces with parked records at or above its floor, from the first. Where
    /// the partition cannot be read, every one of `workspaces` is marked from the floor
    /// (duplicates at worst, never a loss or a reorder).
    pub(crate) fn inherit(
        &self,
        assigned: &[TopicPartition],
        workspaces: &[String],
    ) -> Vec<(TopicPartition, BTreeMap<String, i64>)> {
        assigned
            .iter()
            .filter(|tp| self.covers(tp))
            .map(|tp| {
                let marks = match self.read_marks(tp, workspaces) {
                    Ok(marks) => marks,
                    Err(Unread {
                        from,
                        mut found,
                        why,
                    }) => {
                        tracing::error!(
                            partition = tp.partition,
                            "parked events of this partition unreadable past offset {from} \
                             ({why}): every workspace not seen before it returns through the \
                             parking topic from there"
                        );
                        for w in workspaces {
                            found.entry(w.clone()).or_insert(from);
                        }
                        found
                    }
                };
                (tp.clone(), marks)
            })
            .collect()
    }

    /// Reads parking partition `tp.partition` from its floor to its end: the configured
    /// `workspaces` with parked records of `tp` there, from the first; on failure, what
    /// was found before the offset it stopped at.
    fn read_marks(
        &self,
        tp: &TopicPartition,
        workspaces: &[String],
    ) -> Result<BTreeMap<String, i64>, Unread> {
        let p = tp.partition;
        let unread =
            |from: i64, found: BTreeMap<String, i64>, why: String| Unread { from, found, why };
        let floor = self.floor(p).map_err(|e| unread(0, BTreeMap::new(), e))?;
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let (low, high) = reader
            .fetch_watermarks(&self.topic, p, QUERY_TIMEOUT)
            .map_err(|e| unread(floor.unwrap_or(0), BTreeMap::new(), e.to_string()))?;
        let from = floor.unwrap_or(low).max(low);
        let mut marks = BTreeMap::new();
        if from >= high {
            return Ok(marks);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(from))
            .map_err(|e| unread(from, BTreeMap::new(), e.to_string()))?;
        reader
            .assign(&tpl)
            .map_err(|e| unread(from, BTreeMap::new(), e.to_string()))?;
        // Past every record read so far: where a failed read leaves off.
        let mut next = from;
        let mut unknown = std::collections::BTreeSet::new();
        let deadline = Instant::now() + READ_TIMEOUT;
        // Tansu reports the end as the start of the last batch + 1: past it, whatever
        // else that batch holds comes in the same fetch, so a short quiet wait ends it.
        let mut reached = false;
        let result = loop {
            if Instant::now() > deadline {
                break Err("timed out".to_string());
            }
            let wait = if reached { 100 } else { 500 };
            match reader.poll(Duration::from_millis(wait)) {
                Some(Ok(m)) if m.partition() == p => {
                    reached |= m.offset() >= high - 1;
                    next = next.max(m.offset() + 1);
                    let hs = header_map(&m);
                    let ours = hs.get(headers::TOPIC).map(String::as_str) == Some(&*tp.topic)
                        && hs.get(headers::PARTITION) == Some(&p.to_string())
                        && !hs.contains_key(FENCE);
                    if let Some(workspace) = hs.get(WORKSPACE).filter(|_| ours) {
                        if workspaces.contains(workspace) {
                            marks.entry(workspace.clone()).or_insert(m.offset());
                        } else if unknown.insert(workspace.clone()) {
                            // No lane would ever read them, and a mark would hold the
                            // floor there for good: said, and left in the topic.
                            tracing::error!(
                                partition = p,
                                offset = m.offset(),
                                "parked events of workspace {} wait in the parking topic, \
                                 and it is no longer configured: they are not delivered",
                                crate::printable::printable(workspace)
                            );
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => tracing::warn!(partition = p, "reading the parking topic: {e}"),
                None if reached => break Ok(()),
                None => {}
            }
        };
        let _ = reader.unassign();
        match result {
            Ok(()) => Ok(marks),
            Err(why) => Err(unread(next, marks, why)),
        }
    }

    /// The floor committed for parking partition `p`, if any.
    fn floor(&self, p: i32) -> Result<Option<i64>, String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        let committed = self
            .keeper
            .committed_offsets(tpl, QUERY_TIMEOUT)
            .map_err(|e| e.to_string())?;
        // Plain data at once: a live list can hold up dropping the consumer.
        let floor = committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        drop(committed);
        if let Some(floor) = floor {
            self.committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p, floor);
        }
        Ok(floor)
    }

    /// One round of keeping the floors of the partitions `marks` holds (this pod's):
    /// computes each and commits those that changed (blocks on the brokers).
    pub(crate) fn keep(&self, marks: &ParkedMarks) {
        // Their errors, to the log (the keeper is never assigned, and the reader is
        // unassigned between reads, which hold its lock).
        serve_queued(&self.keeper);
        if let Ok(reader) = self.reader.try_lock() {
            serve_queued(&reader);
        }
        let owned: Vec<TopicPartition> = {
            let marks = marks.lock().unwrap_or_else(|e| e.into_inner());
            marks.keys().filter(|tp| self.covers(tp)).cloned().collect()
        };
        // The ends first, then the marks: a workspace parked after its end was read
        // writes at or above it.
        let ends: HashMap<i32, i64> = owned
            .iter()
            .filter_map(|tp| {
                let (_, high) = self
                    .keeper
                    .fetch_watermarks(&self.topic, tp.partition, QUERY_TIMEOUT)
                    .ok()?;
                Some((tp.partition, high))
            })
            .collect();
        let floors: Vec<(i32, i64)> = {
            let marks = marks.lock().unwrap_or_else(|e| e.into_inner());
            owned
                .iter()
                .filter_map(|tp| {
                    let lowest = marks.get(tp)?.starts.values().min().copied();
                    let floor = match (lowest, ends.get(&tp.partition)) {
                        (Some(start), Some(end)) => start.min(*end),
                        (Some(start), None) => start,
                        (None, Some(end)) => *end,
                        (None, None) => return None,
                    };
                    Some((tp.partition, floor))
                })
                .collect()
        };
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        // Every floor again now and then: a group without members loses its offsets
        // after `offsets.retention.minutes`, and a former owner's late commit is undone.
        let again = self
            .recommitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= RECOMMIT_EVERY);
        let changed: Vec<(i32, i64)> = floors
            .into_iter()
            .filter(|(p, floor)| again || committed.get(p) != Some(floor))
            .collect();
        if changed.is_empty() {
            return;
        }
        if again {
            *self.recommitted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, floor) in &changed {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*floor));
        }
        match self.keeper.commit(&tpl, CommitMode::Sync) {
            Ok(()) => committed.extend(changed),
            Err(e) => tracing::warn!("parking floors not committed (asked again): {e}"),
        }
    }

    /// Keeps the floors every second until `stop`, and once more at the end.
    pub(crate) async fn run(
        self: std::sync::Arc<Self>,
        marks: ParkedMarks,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let done = tokio::select! {
                _ = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            let (ledger, marks) = (self.clone(), marks.clone());
            let _ = tokio::task::spawn_blocking(move || ledger.keep(&marks)).await;
            if done {
                break;
            }
        }
    }
}
