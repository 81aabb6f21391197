//! What one event costs a pod in CPU, from operating points (events/s, cores used):
//! a fixed part (polling, timers, metrics — paid at any rate) plus a part per event,
//! fitted by least squares when the points spread over enough of the rate range;
//! otherwise all of the CPU is charged to the events (the seeds' rate ÷ CPU share),
//! which under-states the ceiling by the fixed part.

use serde::Serialize;

/// Points must span at least this share of the highest rate for a fitted line.
const MIN_SPREAD: f64 = 0.3;

/// A pod's CPU as a function of its event rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuModel {
    /// `fixed_plus_per_event` (fitted) or `proportional` (CPU ÷ rate).
    pub kind: &'static str,
    /// Cores used at no load.
    pub fixed_cores: f64,
    /// CPU microseconds per event.
    pub per_event_us: f64,
    /// Operating points it was fitted to.
    pub points: usize,
}

impl CpuModel {
    /// The model for `points` of (events/s, cores used); `None` without any load.
    pub(crate) fn fit(points: &[(f64, f64)]) -> Option<CpuModel> {
        let points: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(r, c)| *r > 0.0 && *c >= 0.0 && r.is_finite() && c.is_finite())
            .collect();
        let n = points.len() as f64;
        let (rates, cpu): (f64, f64) = points
            .iter()
            .fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        if rates <= 0.0 || cpu <= 0.0 {
            return None;
        }
        let proportional = CpuModel {
            kind: "proportional",
            fixed_cores: 0.0,
            per_event_us: cpu / rates * 1e6,
            points: points.len(),
        };
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, 0.0f64), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        if points.len() < 3 || (hi - lo) < MIN_SPREAD * hi {
            return Some(proportional);
        }
        let (mr, mc) = (rates / n, cpu / n);
        let sxx: f64 = points.iter().map(|p| (p.0 - mr).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mr) * (p.1 - mc)).sum();
        let slope = sxy / sxx;
        let fixed = mc - slope * mr;
        // A line through negative fixed CPU or falling with load is noise, not a model.
        if !(slope > 0.0 && fixed >= 0.0) {
            return Some(proportional);
        }
        Some(CpuModel {
            kind: "fixed_plus_per_event",
            fixed_cores: fixed,
            per_event_us: slope * 1e6,
            points: points.len(),
        })
    }

    /// Events/s a pod carries on `cores`.
    pub fn ceiling(&self, cores: f64) -> f64 {
        ((cores - self.fixed_cores).max(0.0)) / (self.per_event_us / 1e6).max(1e-12)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_part_is_not_charged_to_the_events() {
        // 0.1 core at rest, 50 µs an event: one core carries 18 000/s.
        let points: Vec<(f64, f64)> = [2000.0, 3000.0, 4000.0, 6000.0]
            .iter()
            .map(|r| (*r, 0.1 + r * 50e-6))
            .collect();
        let m = CpuModel::fit(&points).unwrap();
        assert_eq!(m.kind, "fixed_plus_per_event");
        assert!((m.fixed_cores - 0.1).abs() < 1e-9, "{m:?}");
        assert!((m.ceiling(1.0) - 18_000.0).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn one_rate_is_charged_in_proportion() {
        let m = CpuModel::fit(&[(3000.0, 0.3), (3050.0, 0.31), (2990.0, 0.3)]).unwrap();
        assert_eq!(m.kind, "proportional");
        assert!((m.ceiling(1.0) / 10_000.0 - 1.0).abs() < 0.02, "{m:?}");
        assert_eq!(CpuModel::fit(&[(0.0, 0.1)]), None);
    }

    #[test]
    fn a_line_through_negative_fixed_cpu_falls_back() {
        let m = CpuModel::fit(&[(1000.0, 0.0), (2000.0, 0.3), (4000.0, 0.9)]).unwrap();
        assert_eq!(m.kind, "proportional", "{m:?}");
    }
}
