//! Prints webhook delivery latency (commit → arrival at a local receiver; p50, p99) and the
//! sustained delivery rate, through the whole pipeline: outbox, fan-out, neo-queue, signed POST.
//!
//! `cargo run --release -p neo-benches --bin webhook-latency [-- SAMPLES [EVENTS]]`
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let mut args = std::env::args().skip(1);
    let samples: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let figures = neo_benches::events::measure_delivery(
        &neo_benches::db::bench_database_url(),
        samples,
        events,
    );
    let latencies = &figures.latencies;
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "webhook commit→delivered over {} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (goal p50 < 10 ms, p99 < 50 ms)",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    println!(
        "webhook sustained: {} deliveries in {:.2} s = {:.0} deliveries/s (goal ≥ 5,000/s)",
        figures.sustained_events,
        figures.sustained.as_secs_f64(),
        figures.sustained_events as f64 / figures.sustained.as_secs_f64()
    );
}
