//! Prints the enqueue → handler-start latency of neo-queue with LISTEN/NOTIFY (p50, p99).
//!
//! `cargo run --release -p neo-benches --bin queue-latency [-- SAMPLES]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let samples: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let latencies =
        neo_benches::queue::start_latencies(&neo_benches::db::bench_database_url(), samples);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "queue enqueue→start over {} jobs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p50 < 10 ms)",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}
