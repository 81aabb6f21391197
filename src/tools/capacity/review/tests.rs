//! Unit tests of [`super`].

use super::*;

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
            Snapshot::parse(&text(delivered.0, requests.0), 0.0).unwrap(),
            Snapshot::parse(&text(delivered.1, requests.1), 10.0).unwrap(),
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
