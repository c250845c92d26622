//! The chart of a curves run: one SVG, sizes on a log axis, and for each curve one line of its
//! ratios to its smallest size (the figure its target bounds), with the hardware and the
//! PostgreSQL settings written under it. Drawn with plotters' SVG backend, whose text is SVG
//! `<text>` (no font files are read).

use super::{Curve, Environment};
use plotters::prelude::*;

/// Series colours, in curve order (then again).
const PALETTE: [(u8, u8, u8); 8] = [
    (0x1F, 0x77, 0xB4),
    (0xFF, 0x7F, 0x0E),
    (0x2C, 0xA0, 0x2C),
    (0xD6, 0x27, 0x28),
    (0x94, 0x67, 0xBD),
    (0x8C, 0x56, 0x4B),
    (0xE3, 0x77, 0xC2),
    (0x17, 0xBE, 0xCF),
];

fn colour(n: usize) -> RGBColor {
    let (r, g, b) = PALETTE[n % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The stroke of curve `n`'s line, as the SVG writes it (`#1F77B4`).
pub fn colour_hex(n: usize) -> String {
    let (r, g, b) = PALETTE[n % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// Height of the footer that names the machine and the server.
const FOOTER: u32 = 70;

/// Draws `curves` as an SVG document.
///
/// # Panics
/// When plotters fails to draw into a string (it does not: the SVG backend writes to memory).
pub fn svg(curves: &[Curve], environment: &Environment) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        crate::check(root.fill(&WHITE));
        let (plot, footer) = root.split_vertically(HEIGHT - FOOTER);
        draw(&plot, curves);
        let text = environment.describe();
        // About 150 characters a line at this size.
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split(' ') {
            if line.len() + word.len() > 150 {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
        for (n, line) in lines.iter().enumerate() {
            crate::check(footer.draw(&Text::new(
                line.clone(),
                (10, 8 + 16 * n as i32),
                ("sans-serif", 12).into_font().color(&BLACK),
            )));
        }
        crate::check(root.present());
    }
    out
}

fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, curves: &[Curve])
where
    DB::ErrorType: 'static,
{
    let sizes = curves.iter().flat_map(|c| c.points.iter().map(|p| p.size));
    let (min, max) = sizes.fold((u64::MAX, 1), |(lo, hi), s| (lo.min(s), hi.max(s)));
    let (min, max) = (
        min.clamp(1, max) as f64,
        (max as f64).max(min as f64 * 10.0),
    );
    let top = curves
        .iter()
        .flat_map(Curve::ratios)
        .filter(|r| r.is_finite())
        .fold(2.0_f64, f64::max)
        * 1.1;
    let mut chart = crate::check(
        ChartBuilder::on(area)
            .caption(
                "Cost curves: cost (or rate) at each size / at the curve's smallest size",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((min * 0.8..max * 1.25).log_scale(), 0.0..top),
    );
    crate::check(
        chart
            .configure_mesh()
            .x_desc("size (rows, entries, endpoints)")
            .y_desc("ratio to smallest size")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw(),
    );
    for (n, curve) in curves.iter().enumerate() {
        let style = colour(n).stroke_width(2);
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .zip(curve.ratios())
            .map(|(p, r)| (p.size as f64, r))
            .collect();
        let fill = colour(n).filled();
        crate::check(chart.draw_series(LineSeries::new(points, style)))
            .label(curve.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 14, y + 4)], fill));
    }
    crate::check(
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw(),
    );
}
