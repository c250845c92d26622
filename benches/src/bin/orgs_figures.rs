//! Prints the organization service's figures next to the goals of its issue: cached and
//! uncached get, create, search p95 over many organizations, `get_many` of 1,000 cold,
//! `batch_create` and `batch_save` of 1,000, and concurrent optimistic updates per second.
//!
//! With `members`, only the memberships' figures (`can()` cached, the first page of 10,000
//! members, accepting an invitation).
//!
//! `cargo run --release -p neo-benches --bin orgs-figures [-- SEARCH_ROWS | members]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let url = neo_benches::db::bench_database_url();
    if std::env::args().nth(1).as_deref() == Some("members") {
        print!(
            "{}",
            neo_benches::report::text(&neo_benches::orgs_members::rows(&url))
        );
        return;
    }
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let rows = neo_benches::report::orgs_rows(&url, rows);
    print!("{}", neo_benches::report::text(&rows));
}
