//! How long delivered events took: from entering Kafka to the API accepting them (a
//! Prometheus histogram and the exact HDR ones `sluice capacity run` reads), and from
//! their own timestamps.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::Registry;

use super::register::unlabelled_histogram;
use super::Metrics;

/// Delivery latency histograms in µs: since start, and since the last interval read.
type Hdr = (hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>);

/// How long delivered events took: from Kafka, and from their own timestamps.
#[derive(Clone, Debug)]
pub(super) struct LatencyMetrics {
    delivery_seconds: prometheus::Histogram,
    /// Delivery latency in µs: since start, and since the last interval read.
    delivery_hdr: Arc<std::sync::Mutex<Hdr>>,
    end_to_end_seconds: prometheus::Histogram,
}

impl LatencyMetrics {
    /// The HDR histograms: since start, and since the last interval read.
    fn hdr(&self) -> std::sync::MutexGuard<'_, Hdr> {
        self.delivery_hdr.lock().expect("not poisoned")
    }

    pub(super) fn new(r: &Registry) -> Self {
        LatencyMetrics {
            delivery_seconds: unlabelled_histogram(
                r,
                "sluice_delivery_latency_seconds",
                "From the event entering Kafka (its record timestamp, or loadgen's \
                         scheduled send time) to the API accepting it.",
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            ),
            delivery_hdr: {
                let micros = || {
                    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
                        .expect("valid bounds")
                };
                Arc::new(std::sync::Mutex::new((micros(), micros())))
            },
            end_to_end_seconds: unlabelled_histogram(
                r,
                "sluice_end_to_end_latency_seconds",
                "From the event's own timestamp to the API accepting it.",
                vec![
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                ],
            ),
        }
    }
}

impl Metrics {
    /// Events that entered Kafka at `entered_us` (unix µs) were accepted by the API at
    /// `now`: the Prometheus histogram, and the exact HDR ones `sluice capacity run`
    /// reads. One clock reading and one lock per batch, not per event.
    pub(crate) fn delivery_latency(
        &self,
        entered_us: impl IntoIterator<Item = i64>,
        now: SystemTime,
    ) {
        let now_us = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut hdr = self.delivery.latency.hdr();
        for entered in entered_us {
            let us = (now_us - entered).max(0) as u64;
            self.delivery
                .latency
                .delivery_seconds
                .observe(us as f64 / 1e6);
            hdr.0.saturating_record(us);
            hdr.1.saturating_record(us);
        }
    }

    /// Delivery latency (µs) since the last call, and reset.
    pub fn take_latency_interval(&self) -> hdrhistogram::Histogram<u64> {
        let mut hdr = self.delivery.latency.hdr();
        let interval = hdr.1.clone();
        hdr.1.reset();
        interval
    }

    /// Delivery latency (µs) since start.
    pub fn latency_total(&self) -> hdrhistogram::Histogram<u64> {
        self.delivery.latency.hdr().0.clone()
    }

    /// Events with these timestamps (unix seconds) were accepted by the API at `now`.
    pub(crate) fn end_to_end(&self, event_times: impl IntoIterator<Item = i64>, now: SystemTime) {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for event_time in event_times {
            let age = now - event_time as f64;
            if age >= 0.0 {
                self.delivery.latency.end_to_end_seconds.observe(age);
            }
        }
    }
}
