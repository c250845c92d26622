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
    let rows = neo_benches::report::orgs_rows(&neo_benches::db::bench_database_url(), rows);
    print!("{}", neo_benches::report::text(&rows));
}
