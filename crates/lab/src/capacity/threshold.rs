//! Pass/fail criteria over a run's figures, written the way k6 writes them:
//! `p99_latency<500ms`, `error_rate<0.01`, `delivered_ratio>=1`.

use std::str::FromStr;

use serde::Serialize;

/// The figures a threshold can name.
pub(crate) const METRICS: [&str; 11] = [
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "p99_9_latency",
    "max_latency",
    "error_rate",
    "delivered_ratio",
    "throttled_rate",
    "delivered_per_s",
    "requests_per_s",
    // Resident memory's growth from the first minute to the end (a soak's leak check).
    "rss_growth",
];

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `==`
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => (left - right).abs() < 1e-9,
        }
    }
}

/// One threshold: `metric op value`, latencies in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// As written.
    pub text: String,
    /// One of [`METRICS`].
    pub metric: String,
    /// The comparison.
    pub op: Op,
    /// The bound (latencies in ms).
    pub value: f64,
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let at = text.find(['<', '>', '=']).ok_or_else(|| {
            format!("threshold {s:?}: expected METRIC<VALUE, e.g. p99_latency<500ms")
        })?;
        let (metric, rest) = text.split_at(at);
        let metric = metric.trim();
        if !METRICS.contains(&metric) {
            return Err(format!(
                "threshold {s:?}: unknown figure {metric:?} (one of {})",
                METRICS.join(", ")
            ));
        }
        let (op, value) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .iter()
        .find_map(|(t, op)| rest.strip_prefix(t).map(|v| (*op, v.trim())))
        .ok_or_else(|| format!("threshold {s:?}: expected one of < <= > >= =="))?;
        let latency = metric.ends_with("_latency");
        let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = value.strip_suffix('s').filter(|_| latency) {
            (n, 1000.0)
        } else {
            (value, 1.0)
        };
        if !latency && (scale != 1.0 || value.ends_with("ms")) {
            return Err(format!("threshold {s:?}: only latencies take a unit"));
        }
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("threshold {s:?}: {value:?} is not a number"))?;
        Ok(Threshold {
            text: text.to_string(),
            metric: metric.to_string(),
            op,
            value: value * scale,
        })
    }
}

/// A threshold checked against a run.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The threshold.
    #[serde(flatten)]
    pub threshold: Threshold,
    /// The run's figure.
    pub actual: f64,
    /// Whether it holds.
    pub passed: bool,
}

impl Threshold {
    /// Checks it against `figure(name)`.
    pub fn check(&self, figure: impl Fn(&str) -> f64) -> Checked {
        let actual = figure(&self.metric);
        Checked {
            threshold: self.clone(),
            actual,
            passed: self.op.holds(actual, self.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k6_style_thresholds_parse_with_units() {
        let t: Threshold = "p99_latency<500ms".parse().unwrap();
        assert_eq!(
            (t.metric.as_str(), t.op, t.value),
            ("p99_latency", Op::Lt, 500.0)
        );
        let t: Threshold = "p95_latency <= 1.5s".parse().unwrap();
        assert_eq!((t.op, t.value), (Op::Le, 1500.0));
        let t: Threshold = "delivered_ratio>=1".parse().unwrap();
        assert_eq!((t.op, t.value), (Op::Ge, 1.0));
        assert!("error_rate<1ms".parse::<Threshold>().is_err());
        assert!("p99<5".parse::<Threshold>().is_err());
        assert!("error_rate~1".parse::<Threshold>().is_err());
    }

    #[test]
    fn a_threshold_passes_or_fails_on_the_figure() {
        let t: Threshold = "error_rate<0.01".parse().unwrap();
        assert!(t.check(|_| 0.001).passed);
        assert!(!t.check(|_| 0.01).passed);
    }
}
