//! Unit tests of [`super`].

use super::*;
use crate::capacity::scrapes::Scrape;

fn pod(name: &str, delivered: (f64, f64), requests: (f64, f64)) -> PodScrapes {
    let text = |d: f64, r: f64| {
        format!(
            "sluice_events_delivered_total{{workspace=\"a\"}} {d}\n\
             sluice_http_requests_total{{workspace=\"a\",status_class=\"2xx\"}} {r}\n\
             sluice_limiter_effective_rate{{workspace=\"a\"}} 100\n"
        )
    };
    PodScrapes {
        name: name.into(),
        scrapes: vec![
            Scrape::parse(&text(delivered.0, requests.0), 0.0).unwrap(),
            Scrape::parse(&text(delivered.1, requests.1), 10.0).unwrap(),
        ],
    }
}

#[test]
fn two_pods_share_one_fleet_limit() {
    // Two pods, 50 requests/s each of 100 events: the fleet uses its whole limit.
    let pods = [
        pod("a", (0.0, 50_000.0), (0.0, 500.0)),
        pod("b", (0.0, 50_000.0), (0.0, 500.0)),
    ];
    let r = review(&pods, 1.0);
    let ws = &r.workspaces["a"];
    assert_eq!(ws.limit_per_s, 100.0, "fleet-wide, not summed per pod");
    assert!((ws.budget_used - 1.0).abs() < 1e-9);
    assert!((r.api_ceiling_per_s - 10_000.0).abs() < 1e-6);
    assert_eq!(r.bound, "api_limit");
    assert_eq!(r.headroom_band, "scale now");
}

/// At the limit events wait for tokens, so batches fill: a review taken at 100 events a
/// request, of pods whose batches hold 500, puts the ceiling at 500 a request — or
/// fewer when the byte bound fills first at today's event size.
#[test]
fn at_the_limit_batches_fill_to_their_bounds() {
    let with_bounds = |event_bytes: f64| {
        let text = |d: f64, r: f64| {
            format!(
                "sluice_events_delivered_total{{workspace=\"a\"}} {d}\n\
                 sluice_http_requests_total{{workspace=\"a\",status_class=\"2xx\"}} {r}\n\
                 sluice_limiter_effective_rate{{workspace=\"a\"}} 100\n\
                 sluice_batch_event_bytes_total{{workspace=\"a\"}} {}\n\
                 sluice_batch_max_events 500\n\
                 sluice_batch_max_bytes 500000\n",
                d * event_bytes
            )
        };
        let pods = [PodScrapes {
            name: "a".into(),
            scrapes: vec![
                Scrape::parse(&text(0.0, 0.0), 0.0).unwrap(),
                Scrape::parse(&text(10_000.0, 100.0), 10.0).unwrap(),
            ],
        }];
        review(&pods, 1.0).workspaces["a"].clone()
    };
    let small = with_bounds(300.0);
    assert_eq!((small.mean_batch, small.full_batch), (100.0, 500.0));
    assert!((small.api_ceiling_per_s - 50_000.0).abs() < 1e-6);
    // 4 KB events: 500 000 bytes hold 124 of them.
    let large = with_bounds(4_000.0);
    assert_eq!(large.full_batch, 124.0);
    // Pods that do not export their bounds: the batch seen.
    let r = review(&[pod("a", (0.0, 10_000.0), (0.0, 100.0))], 1.0);
    assert_eq!(r.workspaces["a"].full_batch, 100.0);
}
