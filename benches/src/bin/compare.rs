//! Prints one line per bench pair: `name  ours  raw  ratio  target  result`.
//!
//! `cargo run --release -p neo-benches --bin compare [-- --quick] [FILTER]`
#![allow(clippy::print_stdout, reason = "a report prints")]

use neo_benches::{Settings, all_pairs, compare};

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
        "{:<28} {:>12} {:>12} {:>8} {:>8}  result",
        "name", "ours", "raw", "ratio", "target"
    );
    let mut failed = 0;
    for mut pair in all_pairs() {
        if filter.as_deref().is_some_and(|f| !pair.name.contains(f)) {
            continue;
        }
        let m = compare(&mut pair, settings);
        let (target, result) = match (m.target, m.passed()) {
            (Some(t), Some(true)) => (format!("{t:.2}"), "pass"),
            (Some(t), _) => {
                failed += 1;
                (format!("{t:.2}"), "FAIL")
            }
            (None, _) => ("-".to_owned(), "-"),
        };
        println!(
            "{:<28} {:>12} {:>12} {:>8.2} {:>8}  {result}",
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
