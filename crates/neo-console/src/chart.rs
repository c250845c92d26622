//! The throughput chart: inline SVG rendered on the server (the page's policy runs no script
//! and loads nothing), jobs finished and enqueued per second over the sampled window.

use crate::throughput::Rate;
use maud::{Markup, html};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
/// Room for the axis labels.
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// `rates` of `queue` over the last `window` as a chart, with the totals in `data-` attributes.
pub(crate) fn throughput(queue: &str, rates: &[Rate], window: std::time::Duration) -> Markup {
    let now = chrono::Utc::now();
    let span = window.as_secs_f64().max(1.0);
    let shown: Vec<&Rate> = rates
        .iter()
        .filter(|r| (now - r.at).as_seconds_f64() <= span)
        .collect();
    let per_second = |n: i64, r: &Rate| n as f64 / r.seconds;
    let top = shown
        .iter()
        .flat_map(|r| [per_second(r.finished, r), per_second(r.enqueued, r)])
        .fold(0.0_f64, f64::max);
    let scale = if top > 0.0 { top * 1.1 } else { 1.0 };
    let plot_w = WIDTH - LEFT - 4.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let x =
        |r: &Rate| LEFT + plot_w * (1.0 - ((now - r.at).as_seconds_f64() / span).clamp(0.0, 1.0));
    let y = |v: f64| TOP + plot_h * (1.0 - v / scale);
    let line = |pick: fn(&Rate) -> i64| {
        shown
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r), y(per_second(pick(r), r))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let finished: i64 = shown.iter().map(|r| r.finished).sum();
    let enqueued: i64 = shown.iter().map(|r| r.enqueued).sum();
    let minutes = span / 60.0;
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" class="throughput" data-queue=(queue)
                data-finished=(finished) data-enqueued=(enqueued) data-samples=(shown.len())
                width=(WIDTH) height=(HEIGHT) viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                role="img" aria-label=(format!("jobs per second of {queue} over the last {minutes:.0} minutes")) {
                title { "Jobs per second of " (queue) }
                rect x=(LEFT) y=(TOP) width=(plot_w) height=(plot_h) fill="#fff" stroke="#dde1e8" {}
                text x=(LEFT - 6.0) y=(TOP + 10.0) text-anchor="end" font-size="11" fill="#6b7385" { (format!("{scale:.1}/s")) }
                text x=(LEFT - 6.0) y=(TOP + plot_h) text-anchor="end" font-size="11" fill="#6b7385" { "0" }
                text x=(LEFT) y=(HEIGHT - 4.0) font-size="11" fill="#6b7385" { (format!("−{minutes:.0} min")) }
                text x=(WIDTH - 4.0) y=(HEIGHT - 4.0) text-anchor="end" font-size="11" fill="#6b7385" { "now" }
                polyline.enqueued points=(line(|r| r.enqueued)) fill="none" stroke="#7a8cff" stroke-width="1.5" {}
                polyline.finished points=(line(|r| r.finished)) fill="none" stroke="#1e7b34" stroke-width="2" {}
            }
            figcaption.muted {
                span style="color:#1e7b34" { "━ finished" } " " (finished) " · "
                span style="color:#7a8cff" { "━ enqueued" } " " (enqueued)
                " over the last " (format!("{minutes:.0}")) " min"
                @if shown.is_empty() { " (no samples yet)" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_plots_rates_inside_its_box_with_totals() {
        let now = chrono::Utc::now();
        let rates: Vec<Rate> = (0..5)
            .map(|i| Rate {
                at: now - chrono::Duration::seconds(50 - i * 10),
                seconds: 10.0,
                enqueued: 100,
                finished: 10 * i,
            })
            .collect();
        let svg = throughput("jobs <q>", &rates, std::time::Duration::from_secs(60)).into_string();
        assert!(svg.contains("data-finished=\"100\""), "{svg}");
        assert!(svg.contains("data-enqueued=\"500\""), "{svg}");
        assert!(svg.contains("jobs &lt;q&gt;") && !svg.contains("jobs <q>"));
        let points = svg.split("class=\"finished\" points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        for pair in points.split(' ') {
            let (x, y) = pair.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (LEFT..=WIDTH).contains(&x) && (TOP..=HEIGHT - BOTTOM).contains(&y),
                "{pair}"
            );
        }
        let empty = throughput("q", &[], std::time::Duration::from_secs(60)).into_string();
        assert!(empty.contains("no samples yet"));
    }
}
