//! Prints one line per bench pair: `name  ours  raw  ratio  target  result`.
//!
//! `cargo run --release -p neo-benches --bin compare [-- --quick] [FILTER]`
#![allow(clippy::print_stdout, reason = "a report prints")]

use neo_benches::{Settings, compare, groups};

fn main() {
    let mut settings = Settings::default();
    let mut filter = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => settings = Settings::quick(),
            other => filter = Some(other.to_owned()),
        }
    }
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>8}  {:<6} {:>14}",
        "name", "ours", "raw", "ratio", "target", "result", "ours rows/s"
    );
    let mut failed = 0;
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let pairs = groups()
        .into_iter()
        // Build a group (and start its servers) only when one of its pairs can match.
        .filter(|g| {
            filter
                .as_deref()
                .is_none_or(|f| f.starts_with(g.name) || g.name.starts_with(f) || !f.contains('/'))
        })
        .flat_map(|g| (g.build)());
    for mut pair in pairs {
        if !wanted(pair.name) {
            continue;
        }
        let m = compare(&mut pair, settings);
        let (target, result) = match (m.target, m.passed()) {
            (Some(t), Some(true)) => (format!("{t:.3}"), "pass"),
            (Some(t), _) => {
                failed += 1;
                (format!("{t:.3}"), "FAIL")
            }
            (None, _) => ("-".to_owned(), "-"),
        };
        let throughput = match (m.per_item, pair.per_iteration) {
            (true, _) => format!("{:.0}", 1e9 / m.ours_ns),
            (false, Some(n)) => format!("{:.0}", n as f64 / (m.ours_ns / 1e9)),
            (false, None) => "-".to_owned(),
        };
        println!(
            "{:<34} {:>12} {:>12} {:>8.3} {:>8}  {result:<6} {throughput:>14}",
            m.name,
            human(m.ours_ns),
            human(m.raw_ns),
            m.ratio(),
            target
        );
    }
    if failed > 0 {
        println!("\n{failed} pair(s) missed their target");
        std::process::exit(1);
    }
}

fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
