//! Prints what schema-per-tenant costs against shared tables (docs/PERFORMANCE.md, "Tenants").
//!
//! `cargo run --release -p neo-benches --bin tenant-scale [-- TENANTS [PARALLELISM]]`
//! (default 10,000 tenants, parallelism 4; a server from `NEO_BENCH_DATABASE_URL` or one
//! started for the run).
#![allow(clippy::print_stdout, reason = "a report prints")]

fn main() {
    let mut args = std::env::args().skip(1);
    let tenants: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(neo_benches::tenant_scale::FULL_TENANTS);
    let parallelism: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let rt = neo_benches::check(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    );
    let figures = rt.block_on(neo_benches::tenant_scale::measure(
        &neo_benches::db::bench_database_url(),
        tenants,
        parallelism,
    ));
    print!("{}", neo_benches::tenant_scale::markdown(&figures));
}
