//! Where a capacity review's scrapes come from: each pod's `/metrics` taken live over
//! an interval, saved files, or a Prometheus range ([`super::prometheus_api`]).

use std::time::Duration;

use super::review_args::ReviewArgs;
use super::scrapes::{PodScrapes, Scrape};

/// Takes the scrapes `args` names: live ones over `--interval`, saved files, or a
/// Prometheus range.
pub async fn collect(args: &ReviewArgs) -> anyhow::Result<Vec<PodScrapes>> {
    if !args.scrapes.is_empty() {
        let gap = args.interval.as_secs_f64() / (args.scrapes.len() - 1) as f64;
        let scrapes = args
            .scrapes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Scrape::parse(&text, i as f64 * gap)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok(vec![PodScrapes {
            name: args.scrapes[0].display().to_string(),
            scrapes,
        }]);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    if let Some(url) = &args.prometheus {
        return super::prometheus_api::collect(&client, url, args).await;
    }
    scrape_live(&client, args).await
}

/// Scrapes each `--metrics` endpoint every `--every` (default a tenth of
/// `--interval`, at least 1 s) from the start of `--interval` to its end.
async fn scrape_live(
    client: &reqwest::Client,
    args: &ReviewArgs,
) -> anyhow::Result<Vec<PodScrapes>> {
    let every = args
        .every
        .unwrap_or(args.interval / 10)
        .max(Duration::from_secs(1))
        .min(args.interval);
    let started = tokio::time::Instant::now();
    let mut pods: Vec<PodScrapes> = args
        .metrics
        .iter()
        .map(|m| PodScrapes {
            name: m.clone(),
            scrapes: Vec::new(),
        })
        .collect();
    let mut next = started;
    loop {
        for pod in &mut pods {
            let at_s = started.elapsed().as_secs_f64();
            let text = client
                .get(&pod.name)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| anyhow::anyhow!("scraping {}: {e}", pod.name))?
                .text()
                .await?;
            pod.scrapes.push(Scrape::parse(&text, at_s)?);
        }
        if next >= started + args.interval {
            break;
        }
        next = (next + every).min(started + args.interval);
        tokio::time::sleep_until(next).await;
    }
    Ok(pods)
}
