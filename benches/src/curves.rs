//! Cost curves (issue 29, item 1): how the cost of one unit of work grows as the data behind
//! it grows, each curve measured at several sizes in one run (10k, 100k and 1M rows by
//! default) on data the run generates itself with COPY.
//!
//! The curves: queue claim+ack per job with that many jobs pending ([`storage`]), outbox
//! dispatch per event with that backlog, orgs search p95 and `get_many(1000)` over that many
//! organizations, an L1 hit with that many entries against 1,000, and the bytes one cached
//! entry takes ([`cache`]), webhook deliveries per second with size/100 endpoints against 10
//! ([`webhooks`]). Each is printed as a table (name, size, cost, ratio to the smallest size,
//! target, pass/miss), written as markdown with `--markdown`, and drawn into one SVG chart
//! ([`chart`]) whose series are the ratios to each curve's smallest size.
//!
//! Every run names its hardware and PostgreSQL settings ([`Environment`]): absolute figures
//! are context, the ratios are the targets.

pub mod cache;
pub mod chart;
pub mod storage;
pub mod webhooks;

use crate::check;
use std::fmt::Write as _;

/// The sizes of a full run.
pub const FULL_SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];
/// The sizes of `--quick` (a CI-friendly run).
pub const QUICK_SIZES: [u64; 3] = [1_000, 10_000, 100_000];

/// What a curve's target bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No target: reported.
    None,
    /// The cost at every size is at most this many times the cost at the smallest.
    RatioAtMost(f64),
    /// The rate at every size is at least this many times the rate at the smallest.
    RatioAtLeast(f64),
    /// The cost at every size is below this absolute value (in the curve's unit).
    Below(f64),
}

impl Target {
    /// Whether a point with this `value` and `ratio` meets the target; `None` without one.
    pub fn passed(self, value: f64, ratio: f64) -> Option<bool> {
        match self {
            Target::None => None,
            Target::RatioAtMost(t) => Some(ratio <= t),
            Target::RatioAtLeast(t) => Some(ratio >= t),
            Target::Below(t) => Some(value < t),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::None => "—".to_owned(),
            Target::RatioAtMost(t) => format!("≤ {t}×"),
            Target::RatioAtLeast(t) => format!("≥ {t}×"),
            Target::Below(t) => format!("< {t} {unit}"),
        }
    }
}

/// One measured size of a curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Rows, entries or endpoints.
    pub size: u64,
    /// The cost (or rate) at that size, in the curve's unit.
    pub value: f64,
}

/// One cost curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// `area/what`.
    pub name: &'static str,
    /// What a size counts (`pending jobs`, `endpoints`).
    pub size_of: &'static str,
    /// The unit of [`Point::value`].
    pub unit: &'static str,
    /// The target.
    pub target: Target,
    /// The points, smallest size first.
    pub points: Vec<Point>,
}

impl Curve {
    /// `value / value at the smallest size` for each point.
    pub fn ratios(&self) -> Vec<f64> {
        let base = self.points.first().map_or(1.0, |p| p.value);
        self.points
            .iter()
            .map(|p| p.value / base.max(f64::MIN_POSITIVE))
            .collect()
    }

    /// Whether every point meets the target; `None` without one.
    pub fn passed(&self) -> Option<bool> {
        let ratios = self.ratios();
        self.points
            .iter()
            .zip(ratios)
            .map(|(p, r)| self.target.passed(p.value, r))
            .try_fold(true, |all, one| one.map(|ok| all && ok))
    }
}

/// The machine and the PostgreSQL server a run measured on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs, from /proc/cpuinfo.
    pub cpus: usize,
    /// Load averages when the run ended, from /proc/loadavg.
    pub load: String,
    /// `SELECT version()`.
    pub postgres_version: String,
    /// `SHOW` of the settings that move these figures, `name = value`.
    pub postgres_settings: Vec<(String, String)>,
}

/// The settings [`Environment`] reads from the server.
const SETTINGS: [&str; 6] = [
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "max_wal_size",
    "work_mem",
    "effective_io_concurrency",
];

impl Environment {
    /// Reads the CPU from /proc and the settings from the server at `url`.
    pub async fn read(url: &str) -> Environment {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let db = crate::db::connect(url, 1).await;
        let show = |sql: String| {
            let db = db.clone();
            async move {
                let row: (String,) = check(
                    sqlx::query_as(sqlx::AssertSqlSafe(sql))
                        .fetch_one(db.pool())
                        .await,
                );
                row.0
            }
        };
        let postgres_version = show("SELECT version()".to_owned()).await;
        let mut postgres_settings = Vec::new();
        for name in SETTINGS {
            postgres_settings.push((name.to_owned(), show(format!("SHOW {name}")).await));
        }
        db.close().await;
        Environment {
            cpu_model,
            cpus,
            load: load_average(),
            postgres_version,
            postgres_settings,
        }
    }

    /// One paragraph naming the hardware and the server.
    pub fn describe(&self) -> String {
        let settings: Vec<String> = self
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        format!(
            "{} × {} (load average {} at the end of the run); {}; {}",
            self.cpus,
            self.cpu_model,
            self.load,
            self.postgres_version,
            settings.join(", ")
        )
    }
}

/// The three load averages of /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The sizes, ascending.
    pub sizes: Vec<u64>,
    /// Webhook deliveries per measured run (at least two per endpoint are sent).
    pub deliveries: usize,
    /// Jobs (queue) or events (outbox) claimed per measured point, at most half the size.
    pub claimed: usize,
    /// Searches per orgs point (p95 over them).
    pub searches: usize,
    /// L1 lookups per cache point.
    pub lookups: usize,
    /// Only curves whose name contains this.
    pub filter: Option<String>,
}

impl Options {
    /// A full run: 10k, 100k, 1M.
    pub fn full() -> Self {
        Options {
            sizes: FULL_SIZES.to_vec(),
            deliveries: 20_000,
            claimed: 5_000,
            searches: 200,
            lookups: 400_000,
            filter: None,
        }
    }

    /// `--quick`: 1k, 10k, 100k and fewer samples.
    pub fn quick() -> Self {
        Options {
            sizes: QUICK_SIZES.to_vec(),
            deliveries: 4_000,
            claimed: 2_000,
            searches: 100,
            lookups: 200_000,
            filter: None,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }
}

/// Runs every curve `options` asks for on the PostgreSQL at `url`.
pub fn run(url: &str, options: &Options) -> Vec<Curve> {
    let mut curves = Vec::new();
    // First, while the process holds little freed memory: the bytes per entry are its
    // resident set's growth, which memory freed by another curve would hide.
    if options.wants("cache/") {
        curves.extend(cache::l1_curves(options));
    }
    if options.wants("queue/") {
        curves.push(storage::queue_curve(url, options));
    }
    if options.wants("outbox/") {
        curves.push(storage::outbox_curve(url, options));
    }
    if options.wants("orgs/") {
        curves.extend(storage::orgs_curves(url, options));
    }
    if options.wants("webhooks/") {
        curves.push(webhooks::delivery_curve(url, options));
    }
    curves
}

fn pass_mark(passed: Option<bool>) -> &'static str {
    match passed {
        None => "—",
        Some(true) => "pass",
        Some(false) => "MISS",
    }
}

/// A figure with three significant digits or so.
fn figure(value: f64) -> String {
    if value >= 1_000.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The rows of the table: name, size, cost, ratio to the smallest size, target, pass/miss.
fn rows(curves: &[Curve]) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    for curve in curves {
        for (point, ratio) in curve.points.iter().zip(curve.ratios()) {
            rows.push([
                curve.name.to_owned(),
                format!("{} {}", point.size, curve.size_of),
                format!("{} {}", figure(point.value), curve.unit),
                format!("{ratio:.2}×"),
                curve.target.describe(curve.unit),
                pass_mark(curve.target.passed(point.value, ratio)).to_owned(),
            ]);
        }
    }
    rows
}

const HEADER: [&str; 6] = ["name", "size", "cost", "ratio", "target", "pass/miss"];

/// The table as aligned text.
pub fn table(curves: &[Curve]) -> String {
    let rows = rows(curves);
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&HEADER.map(str::to_owned));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// The table as markdown, headed by the environment.
pub fn markdown(curves: &[Curve], environment: &Environment) -> String {
    let mut out = format!("Measured on {}.\n\n", environment.describe());
    out.push_str("| name | size | cost | ratio to smallest | target | pass/miss |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for row in rows(curves) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The curves run at tiny sizes on the test PostgreSQL: every curve comes out with one
    /// point per size and positive figures, the table and markdown carry every row, and the
    /// chart is well-formed SVG with one line per curve.
    #[test]
    fn curves_run_at_tiny_sizes_and_draw_one_line_per_curve() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::postgres());
        let options = Options {
            sizes: vec![100, 1_000],
            deliveries: 200,
            claimed: 40,
            searches: 20,
            lookups: 2_000,
            filter: None,
        };
        let curves = run(test_db.url(), &options);
        let names: Vec<&str> = curves.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "cache/l1_hit",
                "cache/l1_hit_raw_moka",
                "cache/bytes_per_entry",
                "queue/claim_ack_per_job",
                "outbox/dispatch_per_event",
                "orgs/search_p95",
                "orgs/get_many_1000",
                "webhooks/deliveries_per_second",
            ]
        );
        for curve in &curves {
            assert!(curve.points.len() >= 2, "{curve:?}");
            assert!(
                curve
                    .points
                    .iter()
                    .all(|p| p.value > 0.0 && p.value.is_finite()),
                "{curve:?}"
            );
            assert!(curve.points.windows(2).all(|w| w[0].size < w[1].size));
        }
        let queue = &curves[3];
        assert_eq!(
            queue.points.iter().map(|p| p.size).collect::<Vec<_>>(),
            [100, 1_000]
        );
        let hooks = &curves[7];
        assert_eq!(
            hooks.points.iter().map(|p| p.size).collect::<Vec<_>>(),
            [1, 10],
            "webhook endpoints are size / 100"
        );
        let environment = rt.block_on(Environment::read(test_db.url()));
        assert!(environment.cpus > 0);
        assert!(environment.postgres_version.contains("PostgreSQL"));
        assert!(
            environment
                .postgres_settings
                .iter()
                .any(|(k, v)| k == "fsync" && !v.is_empty())
        );
        let points: usize = curves.iter().map(|c| c.points.len()).sum();
        let text = table(&curves);
        assert_eq!(text.lines().count(), points + 1, "{text}");
        let md = markdown(&curves, &environment);
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| ")).count(),
            points + 1
        );
        let svg = chart::svg(&curves, &environment);
        let doc = check(roxmltree::Document::parse(&svg));
        for (n, curve) in curves.iter().enumerate() {
            let colour = chart::colour_hex(n);
            let lines = doc
                .descendants()
                .filter(|e| {
                    e.has_tag_name("polyline")
                        && e.attribute("stroke")
                            .is_some_and(|s| s.eq_ignore_ascii_case(&colour))
                })
                .count();
            assert_eq!(lines, 1, "one line for {}", curve.name);
        }
        assert!(
            doc.descendants()
                .any(|e| e.text().is_some_and(|t| t.contains("PostgreSQL"))),
            "the chart names its server"
        );
    }
}
