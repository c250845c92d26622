//! Prints neo-queue beside graphile_worker and apalis-postgres on the bench PostgreSQL: drain
//! rate, enqueue rate and idle enqueue → start latency (see `neo_benches::queue_peers`).
//!
//! `cargo run --release -p neo-benches --bin queue-peers [-- --quick]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let url = neo_benches::db::bench_database_url();
    let rows = neo_benches::queue_peers::rows(&url, quick);
    print!("{}", neo_benches::report::text(&rows));
}
