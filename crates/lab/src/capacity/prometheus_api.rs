//! `sluice capacity review --prometheus URL --range D`: sluice's series read from a
//! Prometheus server's HTTP API (`/api/v1/query_range`), turned into one run of
//! scrapes per pod (`instance`), so a review can be held after the fact over any
//! stretch Prometheus kept.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::review_args::ReviewArgs;
use super::scrapes::{PodScrapes, Scrape, SeriesValue};

/// The series a review reads: sluice's own and the process CPU (histogram buckets
/// left out).
const SERIES: &str = r#"__name__=~"sluice_.+|process_cpu_seconds_total",__name__!~".+_bucket""#;

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Matrix>,
}

#[derive(Deserialize)]
struct Matrix {
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Reads `args.range` up to `args.end` (now by default) every `args.every` (a
/// twentieth of the range by default, at least 1 s) from the Prometheus at `url`.
pub async fn collect(
    client: &reqwest::Client,
    url: &str,
    args: &ReviewArgs,
) -> anyhow::Result<Vec<PodScrapes>> {
    let end = args
        .end
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)?
        .as_secs_f64();
    let start = end - args.range.as_secs_f64();
    let step = args
        .every
        .unwrap_or(args.range / 20)
        .max(Duration::from_secs(1))
        .as_secs_f64();
    let query = match &args.selector {
        Some(s) if !s.trim().is_empty() => format!("{{{SERIES},{s}}}"),
        _ => format!("{{{SERIES}}}"),
    };
    let endpoint = format!("{}/api/v1/query_range", url.trim_end_matches('/'));
    let answer: Answer = client
        .get(&endpoint)
        .query(&[
            ("query", query.as_str()),
            ("start", &start.to_string()),
            ("end", &end.to_string()),
            ("step", &step.to_string()),
        ])
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("querying {endpoint}: {e}"))?
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("reading {endpoint}'s answer: {e}"))?;
    if answer.status != "success" {
        anyhow::bail!(
            "{endpoint}: {}",
            answer.error.unwrap_or_else(|| answer.status.clone())
        );
    }
    let series = answer.data.map(|d| d.result).unwrap_or_default();
    pods(series, &query, url)
}

/// Pivots series × timestamps into each pod's scrapes.
fn pods(series: Vec<Series>, query: &str, url: &str) -> anyhow::Result<Vec<PodScrapes>> {
    // pod → timestamp (ms) → samples.
    let mut by_pod: BTreeMap<String, BTreeMap<i64, Vec<SeriesValue>>> = BTreeMap::new();
    for s in series {
        let mut labels = s.metric;
        let Some(metric) = labels.remove("__name__") else {
            continue;
        };
        let pod = labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| url.to_string());
        let points = by_pod.entry(pod).or_default();
        for (t, v) in s.values {
            let Ok(value) = v.parse::<f64>() else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            points
                .entry((t * 1000.0).round() as i64)
                .or_default()
                .push(SeriesValue {
                    metric: metric.clone(),
                    labels: labels.clone(),
                    value,
                });
        }
    }
    let pods: Vec<PodScrapes> = by_pod
        .into_iter()
        .map(|(name, points)| PodScrapes {
            name,
            scrapes: points
                .into_iter()
                .map(|(t, samples)| Scrape {
                    at_s: t as f64 / 1000.0,
                    samples,
                })
                .collect(),
        })
        .collect();
    anyhow::ensure!(
        !pods.is_empty(),
        "{url} holds no series matching {query} in that range"
    );
    if let Some(p) = pods.iter().find(|p| p.scrapes.len() < 2) {
        anyhow::bail!(
            "{url} holds fewer than two points of {} in that range: widen --range",
            p.name
        );
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_become_each_instances_scrapes_in_time_order() {
        let answer: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
              {"metric":{"__name__":"sluice_events_delivered_total","instance":"a:9464","workspace":"w"},
               "values":[[100,"0"],[110,"1000"]]},
              {"metric":{"__name__":"process_cpu_seconds_total","instance":"a:9464"},
               "values":[[100,"1.5"],[110,"2.5"]]},
              {"metric":{"__name__":"sluice_events_delivered_total","instance":"b:9464","workspace":"w"},
               "values":[[110,"NaN"],[100,"5"],[105,"6"]]}]}}"#,
        )
        .unwrap();
        let pods = pods(answer.data.unwrap().result, "q", "http://p").unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "a:9464");
        assert_eq!(pods[0].scrapes.len(), 2);
        assert_eq!(pods[0].scrapes[1].at_s, 110.0);
        assert_eq!(pods[0].scrapes[1].samples.len(), 2);
        let b: Vec<f64> = pods[1].scrapes.iter().map(|s| s.at_s).collect();
        assert_eq!(b, [100.0, 105.0], "NaN dropped, in time order");
    }

    #[test]
    fn a_pod_with_one_point_asks_for_a_wider_range() {
        let series = vec![Series {
            metric: [(
                "__name__".to_string(),
                "sluice_events_delivered_total".to_string(),
            )]
            .into(),
            values: vec![(1.0, "3".into())],
        }];
        let e = pods(series, "q", "http://p").unwrap_err().to_string();
        assert!(e.contains("widen --range"), "{e}");
    }
}
