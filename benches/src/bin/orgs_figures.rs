//! Prints the organization service's figures next to the goals of its issue: cached and
//! uncached get, create, search p95 over many organizations, `get_many` of 1,000 cold,
//! `batch_create` and `batch_save` of 1,000, and concurrent optimistic updates per second.
//!
//! `cargo run --release -p neo-benches --bin orgs-figures [-- SEARCH_ROWS]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let f = neo_benches::orgs::measure(&neo_benches::db::bench_database_url(), rows);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let line = |what: &str, value: String, goal: &str, ok: bool| {
        println!(
            "{what:<44} {value:>14}  goal {goal:<12} {}",
            if ok { "pass" } else { "MISS" }
        );
    };
    line(
        "get_by_id, cached (L1), median",
        format!("{:.1} µs", f.cached_get.as_secs_f64() * 1e6),
        "< 10 µs",
        f.cached_get.as_micros() < 10,
    );
    line(
        "get_by_id, uncached, median",
        format!("{:.2} ms", ms(f.uncached_get)),
        "< 1 ms",
        ms(f.uncached_get) < 1.0,
    );
    line(
        "create (row + audit + event), median",
        format!("{:.2} ms", ms(f.create)),
        "< 5 ms",
        ms(f.create) < 5.0,
    );
    line(
        &format!("search over {} organizations, p95", f.search_rows),
        format!("{:.2} ms", ms(f.search_p95)),
        "< 10 ms",
        ms(f.search_p95) < 10.0,
    );
    line(
        "get_many of 1,000 ids, cold",
        format!("{:.2} ms", ms(f.get_many_cold)),
        "< 20 ms",
        ms(f.get_many_cold) < 20.0,
    );
    line(
        "get_many of 1,000 ids, service without cache",
        format!("{:.2} ms", ms(f.get_many_uncached)),
        "(reference)",
        true,
    );
    line(
        "batch_create of 1,000",
        format!("{:.2} ms", ms(f.batch_1000)),
        "< 50 ms",
        ms(f.batch_1000) < 50.0,
    );
    line(
        "batch_save of 1,000",
        format!("{:.2} ms", ms(f.batch_save_1000)),
        "< 50 ms",
        ms(f.batch_save_1000) < 50.0,
    );
    line(
        "optimistic updates on distinct orgs",
        format!("{:.0} /s", f.updates_per_second),
        "≥ 10,000/s",
        f.updates_per_second >= 10_000.0,
    );
    line(
        "  the same, each read first (get + save)",
        format!("{:.0} /s", f.read_updates_per_second),
        "(reference)",
        true,
    );
}
