//! Criterion benches: every registered pair as `ours` and `raw` in one group.
//!
//! `NEO_BENCH_GROUPS=core,cache` limits which groups are built (the `db`, `cache` and `batch`
//! groups start servers); criterion's own filter then picks pairs by name.
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use criterion::{Criterion, criterion_group, criterion_main};

fn bench_pairs(c: &mut Criterion) {
    let wanted = std::env::var("NEO_BENCH_GROUPS").ok();
    for group in neo_benches::groups() {
        if wanted
            .as_deref()
            .is_some_and(|w| !w.split(',').any(|g| g.trim() == group.name))
        {
            continue;
        }
        for mut pair in (group.build)() {
            let mut bench = c.benchmark_group(pair.name);
            bench.bench_function("ours", |b| b.iter(|| (pair.ours)()));
            bench.bench_function("raw", |b| b.iter(|| (pair.raw)()));
            bench.finish();
        }
    }
}

criterion_group!(benches, bench_pairs);
criterion_main!(benches);
