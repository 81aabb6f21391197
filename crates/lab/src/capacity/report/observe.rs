//! The report's observations: sentences written from its figures.

use super::super::sample;
use super::Report;

impl Report {
    /// Sentences from the figures.
    pub(super) fn observe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let lost = self
            .sent
            .saturating_sub(self.delivered + self.dead_lettered);
        if lost == 0 {
            out.push(format!(
                "Every event sent was delivered ({}) or dead-lettered ({}).",
                self.delivered, self.dead_lettered
            ));
        } else {
            out.push(format!(
                "{lost} events were still undelivered when the run ended (drain timeout or stop): they stay in the topic, uncommitted."
            ));
        }
        if let Some(accepted) = self.api_accepted {
            if accepted != self.delivered {
                out.push(format!("The API counted {accepted} events accepted against {} delivered by the worker's count.", self.delivered));
            }
        }
        if let Some(v) = self.order_violations.filter(|v| *v > 0) {
            out.push(format!("The API saw {v} events out of per-user order."));
        }
        out.push(self.bound_sentence());
        if let (Some(bp), Some(b)) = (self.breaking_point_per_s, &self.broke) {
            out.push(format!(
                "Broke at {bp:.0} events/s offered ({} at {:.0} s); the most it sustained was {:.0} events/s.",
                b.reason.replace('_', " "),
                b.at_s,
                self.max_sustainable_per_s
            ));
        }
        if let Some(memory) = self.memory_sentence() {
            out.push(memory);
        }
        if !self.valid {
            out.push(format!(
                "Not a valid measurement: {}.",
                self.loadgen.invalid_reasons.join("; ")
            ));
        }
        if let Some(max) = self.environment.max_partition_backlog_bytes {
            if self.gate_waits > 0 {
                out.push(format!(
                    "The embedded broker keeps only the last 5 MiB of a partition, so the generator let none hold more than {:.1} MiB undelivered: it held {} sends back until the worker caught up, and those sends count as late. Use --brokers for a deeper backlog.",
                    max as f64 / (1024.0 * 1024.0),
                    self.gate_waits
                ));
            }
        }
        out
    }

    /// Resident memory over the run — after the first minute (warm-up) and at 10, 30
    /// and 60 minutes when it ran that long, and at the end — with its growth since
    /// the first minute: flat over a soak, or something keeps what it should not.
    fn memory_sentence(&self) -> Option<String> {
        let growth = self.rss_growth()?;
        let at = |minute: f64| {
            self.timeline
                .iter()
                .find(|s| s.t_s >= minute * 60.0 && s.rss_mb > 0.0)
                .map(|s| format!("{:.0} MB at {minute:.0} min", s.rss_mb))
        };
        let mut points: Vec<String> = [1.0, 10.0, 30.0, 60.0].into_iter().filter_map(at).collect();
        let end = self.timeline.iter().rev().find(|s| s.rss_mb > 0.0)?;
        points.push(format!(
            "{:.0} MB at the end ({:.0} s)",
            end.rss_mb, end.t_s
        ));
        Some(format!(
            "Resident memory: {}; {:+.1}% since the first minute.",
            points.join(", "),
            growth * 100.0
        ))
    }

    /// What bound the run, with the figures that show it.
    fn bound_sentence(&self) -> String {
        let d = &self.diagnosis;
        match self.bound {
            sample::Bound::ApiLimit => format!(
                "Bound by the API's limit: lanes waited on it {:.0}% of the time, at {:.0} requests/s × {:.0} events a request. More pods or CPU add nothing; bigger batches or a higher limit do.",
                d.limiter_wait_share * 100.0,
                self.max_requests_per_s,
                self.delivered_per_s / self.requests_per_s.max(1e-9)
            ),
            sample::Bound::Cpu if d.cpu_share < 0.85 => format!(
                "No resource was full; the nearest its ceiling was CPU: the process used {:.0}% of the machine's cores (worker, embedded broker and API share them; the in-flight window was {:.0}% used).",
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
            sample::Bound::Cpu => format!(
                "Bound by CPU: the process used {:.0}% of the machine's cores (worker, embedded broker and API share them). More cores or pods raise it.",
                d.cpu_share * 100.0
            ),
            sample::Bound::InFlight => format!(
                "Bound by the in-flight window: {:.0}% of {} requests in flight; throughput ≈ window × batch ÷ API latency. Raise batch.max_in_flight or batch.max_events.",
                d.in_flight_share * 100.0,
                self.environment.in_flight_window
            ),
            sample::Bound::Broker if d.broker_late_share >= 0.05 => format!(
                "Bound by the broker: {:.1}% of the generator's sends were late (the producer's queue stayed full).",
                d.broker_late_share * 100.0
            ),
            sample::Bound::Broker => format!(
                "Bound by the broker: delivery fell behind while nothing in the worker was full (limiter wait {:.0}%, CPU {:.0}% of the cores, in-flight window {:.0}% used, held back {:.0}% of the time): it waited for events its fetches did not bring.",
                d.limiter_wait_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0,
                d.paused_share * 100.0
            ),
            sample::Bound::Partitions => "Bound by partitions.".to_string(),
            sample::Bound::Lanes => format!(
                "Bound by the lanes: the consumer's buffer stayed full (held back in {:.0}% of the samples), so events waited on the lanes' own work (batching, encoding, requests) while the API's limit, the CPU ({:.0}%) and the in-flight window ({:.0}%) were not full. More pods spread that work.",
                d.paused_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
            sample::Bound::OfferedLoad => format!(
                "Nothing bound it: the pipeline carried all it was offered (limiter wait {:.0}%, CPU {:.0}% of the cores, in-flight window {:.0}% used).",
                d.limiter_wait_share * 100.0,
                d.cpu_share * 100.0,
                d.in_flight_share * 100.0
            ),
        }
    }
}
