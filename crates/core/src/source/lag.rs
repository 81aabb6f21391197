//! Every few seconds, how many events wait for this pod — for each assigned partition
//! the high watermark minus the next offset to read, plus the events buffered in process
//! (read, not yet delivered or dead-lettered) — and the autoscaling signal: how long the
//! unread part takes at the pod's current rate.
//!
//! The signal is in seconds, not events, because events in process at a steady rate are
//! rate × (linger + round trip): a pod carrying 2 000 events/s with nothing waiting holds
//! a few hundred, and a count target would add pods to a healthy fleet. Seconds of
//! backlog are near 0 there, whatever the rate, and grow only when reading falls behind.
//!
//! Watermarks come from a ListOffsets query on a separate client, so the figure stays
//! true while the partitions are paused for back-pressure (a paused consumer's own
//! fetch statistics go stale exactly then).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::kafka_log::KafkaLog;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::Buffered;
use super::{OffsetTracker, TopicPartition};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::Health;

/// The rate a pod gets through events is measured over this long: requests finish
/// in bursts, and one refresh's window may see none.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How long one watermark query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The partitions this pod owns right now, kept by the rebalance hooks.
pub type Assigned = Arc<Mutex<BTreeSet<TopicPartition>>>;

/// Measures lag for the assigned partitions.
pub struct LagMonitor {
    client: BaseConsumer<KafkaLog>,
    assigned: Assigned,
    tracker: OffsetTracker,
    buffered: Arc<Buffered>,
    metrics: Metrics,
    health: Health,
    interval: Duration,
    /// Partitions reported last time, to drop the gauges of revoked ones.
    reported: BTreeSet<TopicPartition>,
    /// Limit-bound and total lane seconds at the last measurement, and the share then.
    limit_time: (f64, f64),
    bound: f64,
    /// Events finished in all, and when, at the measurements of the last
    /// [`RATE_WINDOW`]: the current rate.
    finished: std::collections::VecDeque<(u64, std::time::Instant)>,
}

impl std::fmt::Debug for LagMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagMonitor")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl LagMonitor {
    /// A monitor on the same brokers and group as the source (it never joins the group;
    /// it only reads watermarks and committed offsets).
    pub fn new(
        config: &Config,
        assigned: Assigned,
        tracker: OffsetTracker,
        buffered: Arc<Buffered>,
        metrics: Metrics,
        health: Health,
    ) -> KafkaResult<Self> {
        let k = &config.kafka;
        let mut client = super::client_config(k);
        client
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "false");
        Ok(LagMonitor {
            client: client.create_with_context(KafkaLog::new(metrics.clone()))?,
            assigned,
            tracker,
            finished: [(buffered.finished(), std::time::Instant::now())].into(),
            buffered,
            health,
            interval: k.lag_refresh_ms.duration(),
            reported: BTreeSet::new(),
            limit_time: (0.0, 0.0),
            bound: 0.0,
            metrics,
        })
    }

    /// Measures every `interval` until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // Watermark queries block on the network: keep them off the runtime.
            let (back, result) = tokio::task::spawn_blocking(move || {
                let result = self.measure();
                (self, result)
            })
            .await
            .expect("the lag measurement does not panic");
            self = back;
            match result {
                Ok(()) => {
                    self.health.broker_reachable();
                    // On an idle topic this is the sign the brokers are back (with
                    // nothing assigned nothing was asked, so it says nothing).
                    let asked = !self
                        .assigned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_empty();
                    if asked {
                        self.metrics.kafka_ok();
                    }
                }
                // Counted and logged as one outage, not a line every refresh.
                Err(e) => self.metrics.kafka_failed(&format!("lag measurement: {e}")),
            }
        }
    }

    fn measure(&mut self) -> KafkaResult<()> {
        // Its queued errors, to the log (it is never assigned: no messages).
        crate::kafka::serve_queued(&self.client);
        let assigned: Vec<TopicPartition> = self
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut next: BTreeMap<TopicPartition, i64> = assigned
            .iter()
            .filter_map(|tp| Some((tp.clone(), self.tracker.next_offset(tp)?)))
            .collect();
        // Partitions not read from yet start at the group's committed offset.
        let unread: Vec<&TopicPartition> = assigned
            .iter()
            .filter(|tp| !next.contains_key(*tp))
            .collect();
        if !unread.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for tp in &unread {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            let committed = self.client.committed_offsets(tpl, QUERY_TIMEOUT)?;
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    next.insert(TopicPartition::new(e.topic(), e.partition()), o);
                }
            }
        }
        let mut lags = Vec::with_capacity(assigned.len());
        for tp in &assigned {
            let (low, high) =
                self.client
                    .fetch_watermarks(&tp.topic, tp.partition, QUERY_TIMEOUT)?;
            let from = next.get(tp).copied().unwrap_or(low).max(low);
            lags.push((tp, (high - from).max(0)));
        }
        let total: i64 = lags.iter().map(|(_, l)| l).sum();
        let depth = total as u64 + self.buffered.events() as u64;
        let current: BTreeSet<TopicPartition> = assigned.iter().cloned().collect();
        let gone: Vec<(&str, i32)> = self
            .reported
            .difference(&current)
            .map(|tp| (&*tp.topic, tp.partition))
            .collect();
        let shown: Vec<(&str, i32, i64)> = lags
            .iter()
            .map(|(tp, lag)| (&*tp.topic, tp.partition, *lag))
            .collect();
        self.metrics.set_queue_depth(depth, &shown, &gone);
        self.reported = current;
        self.set_scaling_signal(depth, !assigned.is_empty());
        Ok(())
    }

    /// `sluice_lag_seconds`: the queue depth over the rate events finished over the last
    /// [`RATE_WINDOW`] (at least one a second: a stopped pod's backlog still counts).
    /// `sluice_scaling_lag_seconds`: that times the share of lane time *not* spent
    /// waiting on workspace limits. A backlog that only the API's limit holds back is
    /// not a reason to add pods: they would share the same limit. (Parked workspaces'
    /// backlog is in the parking topic, not in the lag.)
    fn set_scaling_signal(&mut self, depth: u64, owns_partitions: bool) {
        let (wait, busy) = self.metrics.limit_time();
        let (d_wait, d_busy) = (wait - self.limit_time.0, busy - self.limit_time.1);
        self.limit_time = (wait, busy);
        if d_busy > 0.0 {
            self.bound = (d_wait / d_busy).clamp(0.0, 1.0);
        }
        let (finished, now) = (self.buffered.finished(), std::time::Instant::now());
        if !owns_partitions {
            // The rate is measured from the first assignment on, not diluted by a wait
            // for one.
            self.finished.clear();
        }
        self.finished.push_back((finished, now));
        // Keep the newest measurement at least a window old as the window's start.
        while self
            .finished
            .get(1)
            .is_some_and(|(_, at)| now.duration_since(*at) >= RATE_WINDOW)
        {
            self.finished.pop_front();
        }
        let (then, at) = self.finished[0];
        let rate = (finished - then) as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
        let lag = lag_seconds(depth, rate);
        self.metrics
            .set_scaling(lag, self.bound, scaling_seconds(lag, rate, self.bound));
    }
}

/// Seconds to get through `depth` events at `rate` events a second (at least one).
fn lag_seconds(depth: u64, rate: f64) -> f64 {
    depth as f64 / rate.max(1.0)
}

/// The part of `lag` more pods would drain faster: none of what waits on the API's
/// limit (`bound`, the limit-bound share of lane time), and nothing while no event
/// finishes at all — the API down or refusing every request, the brokers away: more
/// pods would wait the same (the alerts on `sluice_lag_seconds` still see it).
fn scaling_seconds(lag: f64, rate: f64, bound: f64) -> f64 {
    if rate < 1.0 {
        return 0.0;
    }
    lag * (1.0 - bound)
}

#[cfg(test)]
mod tests {
    use super::{lag_seconds, scaling_seconds};

    #[test]
    fn a_backlog_scales_only_while_events_flow_and_not_for_the_limits_share() {
        assert_eq!(scaling_seconds(50.0, 40.0, 0.0), 50.0);
        assert!((scaling_seconds(100.0, 20.0, 0.99) - 1.0).abs() < 1e-9);
        assert_eq!(
            scaling_seconds(300.0, 0.0, 0.0),
            0.0,
            "nothing finishes: an outage"
        );
    }

    #[test]
    fn the_same_few_events_waiting_are_no_backlog_at_a_high_rate_and_a_long_one_at_a_stop() {
        assert!(lag_seconds(300, 2_000.0) < 0.2);
        assert_eq!(lag_seconds(0, 0.0), 0.0);
        assert_eq!(
            lag_seconds(300, 0.0),
            300.0,
            "a stopped pod's backlog still counts"
        );
    }
}
