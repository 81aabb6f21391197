//! `report.svg`: offered vs delivered rate, backlog, and p99 latency over the run, the
//! breaking point marked.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::sample::Sample;

/// The timeline as an SVG document, the breaking point (seconds into the run) marked.
pub(super) fn svg(t: &[Sample], break_at: Option<f64>) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((3, 1));
        let t_max = t.last().map_or(1.0, |s| s.t_s).max(1.0);
        for (area, (title, lines)) in panels.iter().zip(series(t)) {
            panel(area, title, lines, t_max, break_at)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The three panels' titles and lines.
fn series(t: &[Sample]) -> [(&'static str, Vec<Line>); 3] {
    let line = |name, color, f: fn(&Sample) -> f64| -> Line {
        (name, color, t.iter().map(|s| (s.t_s, f(s))).collect())
    };
    [
        (
            "events/s",
            vec![
                line("offered", BLUE, |s| s.offered_per_s),
                line("delivered", GREEN, |s| s.delivered_per_s),
            ],
        ),
        (
            "backlog (events)",
            vec![line("backlog", RED, |s| s.backlog)],
        ),
        ("p99 latency (ms)", vec![line("p99", MAGENTA, |s| s.p99_ms)]),
    ]
}

/// One panel: its lines over `0..t_max` seconds, the breaking point as a vertical line.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    lines: Vec<Line>,
    t_max: f64,
    break_at: Option<f64>,
) -> anyhow::Result<()> {
    let y_max = lines
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(err)?;
    for (name, color, pts) in lines {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    if let Some(at) = break_at {
        chart
            .draw_series(LineSeries::new(
                vec![(at, 0.0), (at, y_max)],
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label("breaking point")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// One line of a panel: its name, colour and points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing report.svg: {e}")
}
