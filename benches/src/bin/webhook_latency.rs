//! Prints webhook delivery latency (commit → arrival at a local receiver; p50, p99) and the
//! sustained delivery rate, through the whole pipeline: outbox, fan-out, neo-queue, signed POST.
//!
//! `cargo run --release -p neo-benches --bin webhook-latency [-- SAMPLES [EVENTS [LIGHT_EVENTS]]]`
//! The light-load rows (`webhooks/light_load_p50`, `_p99`) publish LIGHT_EVENTS events one per
//! transaction at 100/s.
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let mut args = std::env::args().skip(1);
    let samples: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let events: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let light: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);
    let url = neo_benches::db::bench_database_url();
    let mut rows = neo_benches::report::light_load_rows(&url, light);
    rows.extend(neo_benches::report::webhook_rows(&url, samples, events));
    print!("{}", neo_benches::report::text(&rows));
}
