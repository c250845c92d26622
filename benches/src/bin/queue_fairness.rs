//! Prints the queue's noisy-neighbour rows: tenant A holds a backlog, tenant B enqueues one
//! job every 10 ms; B's enqueue → start p99 against an idle queue, and the rate of jobs run
//! with fair claims against claims that ignore tenants.
//!
//! `cargo run --release -p neo-benches --bin queue-fairness [-- BACKLOG]` (default 1,000,000)
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let backlog: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(neo_benches::fair::FULL_BACKLOG);
    let rows = neo_benches::report::fair_rows(&neo_benches::db::bench_database_url(), backlog);
    print!("{}", neo_benches::report::text(&rows));
}
