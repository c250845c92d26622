//! Prints the enqueue → handler-start latency of neo-queue with LISTEN/NOTIFY (p50, p99).
//!
//! `cargo run --release -p neo-benches --bin queue-latency [-- SAMPLES]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let rows = neo_benches::report::queue_rows(&neo_benches::db::bench_database_url(), samples);
    print!("{}", neo_benches::report::text(&rows));
}
