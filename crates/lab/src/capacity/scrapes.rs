//! The scrapes a capacity review reads: each pod's `/metrics` text parsed into series
//! (gathered by [`super::gather`]), and the counter arithmetic over them.

use std::collections::{BTreeMap, BTreeSet};

/// One series' value in a scrape.
#[derive(Debug, Clone)]
pub struct SeriesValue {
    /// Metric name.
    pub metric: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value (counters and gauges; histograms as their `_bucket`/`_sum`/`_count`
    /// series, or not at all).
    pub value: f64,
}

/// One scrape of one pod (the default: one that found nothing).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// When it was taken, seconds (any origin; only differences count).
    pub at_s: f64,
    /// Its series.
    pub samples: Vec<SeriesValue>,
}

impl Scrape {
    /// Parses one scrape's text (the Prometheus exposition format), taken at `at_s`.
    pub fn parse(text: &str, at_s: f64) -> anyhow::Result<Scrape> {
        use prometheus_parse::Value;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        let samples = scrape
            .samples
            .into_iter()
            .filter_map(|s| {
                let value = match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    _ => return None,
                };
                let labels = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Some(SeriesValue {
                    metric: s.metric,
                    labels,
                    value,
                })
            })
            .collect();
        Ok(Scrape { at_s, samples })
    }

    /// Sum of a metric's samples whose labels include every `(name, value)` of `filter`.
    pub fn sum(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    pub(super) fn label_values(&self, metric: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// One pod's scrapes, oldest first (at least two).
#[derive(Debug, Clone)]
pub struct PodScrapes {
    /// Pod name (its URL, file or Prometheus `instance`).
    pub name: String,
    /// Its scrapes.
    pub scrapes: Vec<Scrape>,
}

impl PodScrapes {
    pub(super) fn first(&self) -> &Scrape {
        &self.scrapes[0]
    }

    pub(super) fn last(&self) -> &Scrape {
        &self.scrapes[self.scrapes.len() - 1]
    }

    pub(super) fn seconds(&self) -> f64 {
        (self.last().at_s - self.first().at_s).max(1e-3)
    }

    /// A counter's increase per second from the first scrape to the last (a pod that
    /// restarted in between counts from zero again, as Prometheus's `increase` does).
    pub(super) fn rate(&self, metric: &str, filter: &[(&str, &str)]) -> f64 {
        let total: f64 = self
            .scrapes
            .windows(2)
            .map(|w| increase(&w[0], &w[1], metric, filter))
            .sum();
        total / self.seconds()
    }
}

/// How much a counter grew from `a` to `b` (from zero if it was reset in between).
pub(super) fn increase(a: &Scrape, b: &Scrape, metric: &str, filter: &[(&str, &str)]) -> f64 {
    let (before, after) = (a.sum(metric, filter), b.sum(metric, filter));
    if after >= before {
        after - before
    } else {
        after
    }
}
