//! review.md of a capacity review.

use super::Review;

impl Review {
    /// review.md.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "## sluice capacity review\n\n{} pods, {} partitions, {:.0} s between scrapes\n\n| Fleet | Value |\n|---|---|\n",
            self.pods, self.partitions, self.interval_s
        );
        for (k, v) in self.fleet_rows() {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        self.workspace_table(&mut md);
        md
    }

    /// The fleet table's rows: what, and its figure.
    fn fleet_rows(&self) -> [(&'static str, String); 12] {
        let opt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0}"));
        [
            (
                "Events in / delivered per s",
                format!("{:.0} / {:.0}", self.arrival_per_s, self.delivered_per_s),
            ),
            ("Requests/s", format!("{:.1}", self.requests_per_s)),
            ("Dead letters/s", format!("{:.2}", self.dead_lettered_per_s)),
            (
                "Lag / time to drain",
                format!(
                    "{:.0} events / {}",
                    self.lag,
                    self.time_to_drain_s
                        .map_or("never (arrival ≥ delivery)".into(), |t| format!(
                            "{t:.0} s"
                        ))
                ),
            ),
            (
                "Ceiling: API limits, full batches, at today's mix",
                format!("{:.0} events/s", self.api_ceiling_per_s),
            ),
            (
                "CPU per pod",
                self.cpu_model.map_or("—".into(), |m| {
                    format!(
                        "{:.3} cores fixed + {:.1} µs/event ({}, {} points)",
                        m.fixed_cores, m.per_event_us, m.kind, m.points
                    )
                }),
            ),
            ("Ceiling: these pods", opt(self.pods_ceiling_per_s)),
            (
                "Ceiling: one pod per partition",
                opt(self.partitions_ceiling_per_s),
            ),
            (
                "Max sustainable",
                format!(
                    "{:.0} events/s, bound by {}",
                    self.max_sustainable_per_s, self.bound
                ),
            ),
            (
                "Replicas justified",
                self.replicas_justified
                    .map_or("—".into(), |r| r.to_string()),
            ),
            (
                "Headroom",
                format!("{:.0}% ({})", self.headroom * 100.0, self.headroom_band),
            ),
            (
                "Daily volume (now / at max)",
                format!("{:.0} / {:.0}", self.daily_volume, self.daily_volume_at_max),
            ),
        ]
    }

    /// The per-workspace table.
    fn workspace_table(&self, md: &mut String) {
        md.push_str("\n| Workspace | delivered/s | requests/s | limit/s | budget used | 429s/s | retries/s | amplification | events/request (full) | ceiling/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (ws, w) in &self.workspaces {
            md.push_str(&format!(
                "| {ws} | {:.0} | {:.1} | {:.1} | {:.0}% | {:.2} | {:.2} | {:.2} | {:.1} ({:.0}) | {:.0} |\n",
                w.delivered_per_s, w.requests_per_s, w.limit_per_s, w.budget_used * 100.0, w.throttled_per_s, w.retries_per_s, w.amplification, w.mean_batch, w.full_batch, w.api_ceiling_per_s
            ));
        }
    }
}
