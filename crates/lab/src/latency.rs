//! Latency percentiles from HDR histograms of microseconds, shared by the load tools.

use hdrhistogram::Histogram;
use serde::Serialize;

/// An empty histogram of microseconds, up to an hour (longer values count as an
/// hour), three significant digits.
pub(crate) fn micros() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Percentiles of a latency, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Of a microsecond histogram.
    pub(crate) fn of_us(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_keep_long_latencies() {
        // An auto-resizing histogram saturates at its initial range (2 ms) with
        // saturating_record: a stall must show as seconds, not as 2 ms.
        let mut h = micros();
        for us in [500, 1_000, 5_000_000] {
            h.saturating_record(us);
        }
        let p = Percentiles::of_us(&h);
        assert!((p.max - 5_000.0).abs() < 5.0, "{p:?}");
        assert!((p.p50 - 1.0).abs() < 0.01, "{p:?}");
    }
}
