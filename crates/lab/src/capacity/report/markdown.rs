//! `report.md`, in the seeds' benchmark-report shape.

use super::Report;

impl Report {
    /// `report.md`.
    pub fn markdown(&self) -> String {
        let e = &self.environment;
        let mut md = format!(
            "## sluice capacity review\n\n**Date:** {}  \n**Profile:** {}  \n**Version:** {}{}  \n**Run:** {} (seed {})\n\n",
            self.finished_at,
            self.profile,
            self.version,
            self.git.as_ref().map_or(String::new(), |g| format!(" ({g})")),
            self.run_id,
            self.seed
        );
        md.push_str("### Test configuration\n\n");
        md.push_str(&format!(
            "- Broker: {}; topic `{}`, {} partitions\n",
            e.brokers, e.topic, e.partitions
        ));
        md.push_str(&format!("- API: {}\n", e.api));
        md.push_str(&format!(
            "- Worker: batch {} events, linger {} ms, {} in flight per workspace; workspaces: {}\n",
            e.batch_max_events,
            e.linger_ms,
            e.max_in_flight,
            e.workspaces.join(", ")
        ));
        md.push_str(&format!("- Duration: {:.0} s\n\n", self.duration_s));
        md.push_str("### Results\n\n| Metric | Value |\n|---|---|\n");
        for (k, v) in self.result_rows() {
            md.push_str(&format!("| {k} | {v} |\n"));
        }
        self.thresholds_and_observations(&mut md);
        md
    }

    /// The results table's rows: what, and its figure.
    fn result_rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            ("Events sent", self.sent.to_string()),
            ("Events delivered", self.delivered.to_string()),
            (
                "Dead-lettered",
                format!(
                    "{} ({} deliberately invalid)",
                    self.dead_lettered, self.invalid_sent
                ),
            ),
            ("Success rate", format!("{:.2}%", self.success_rate * 100.0)),
            ("P50 latency", format!("{:.1} ms", self.latency_ms.p50)),
            ("P95 latency", format!("{:.1} ms", self.latency_ms.p95)),
            ("P99 latency", format!("{:.1} ms", self.latency_ms.p99)),
            (
                "P99.9 / max latency",
                format!(
                    "{:.1} / {:.1} ms",
                    self.latency_ms.p99_9, self.latency_ms.max
                ),
            ),
        ];
        rows.extend(self.throughput_rows());
        rows
    }

    /// The results rows on rates, limits and the generator.
    fn throughput_rows(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "Delivered events/s (mean / max 1 s)",
                format!(
                    "{:.0} / {:.0}",
                    self.delivered_per_s, self.max_delivered_per_s
                ),
            ),
            (
                "Requests/s (mean / max 1 s)",
                format!(
                    "{:.1} / {:.0}",
                    self.requests_per_s, self.max_requests_per_s
                ),
            ),
            (
                "Max sustainable events/s",
                format!("{:.0}", self.max_sustainable_per_s),
            ),
            (
                "Breaking point",
                self.breaking_point_per_s
                    .map_or("—".into(), |b| format!("{b:.0} events/s offered")),
            ),
            ("Bound", self.bound.as_str().to_string()),
            (
                "429s",
                format!(
                    "{} ({:.2}% of requests)",
                    self.throttled,
                    self.throttled_rate * 100.0
                ),
            ),
            (
                "Limiter wait",
                format!("{:.0}% of lane time", self.limiter_wait_share * 100.0),
            ),
            (
                "Generator lateness p99 / late sends",
                format!(
                    "{:.1} ms / {}",
                    self.loadgen.send_lateness_ms.p99, self.loadgen.late
                ),
            ),
        ]
    }

    /// The thresholds checked, if any, and the observations.
    fn thresholds_and_observations(&self, md: &mut String) {
        if !self.thresholds.is_empty() {
            md.push_str("\n### Thresholds\n\n| Threshold | Actual | Result |\n|---|---|---|\n");
            for c in &self.thresholds {
                md.push_str(&format!(
                    "| `{}` | {:.3} | {} |\n",
                    c.threshold.text,
                    c.actual,
                    if c.passed { "pass" } else { "**FAIL**" }
                ));
            }
        }
        md.push_str("\n### Observations\n\n");
        for o in &self.observations {
            md.push_str(&format!("- {o}\n"));
        }
    }
}
