//! Criterion benches for neo-batch: each pair as `ours` and `raw` in one group.
#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]

use criterion::{Criterion, criterion_group, criterion_main};

fn bench_pairs(c: &mut Criterion) {
    for mut pair in neo_benches::batch::pairs() {
        let mut group = c.benchmark_group(pair.name);
        group.bench_function("ours", |b| b.iter(|| (pair.ours)()));
        group.bench_function("raw", |b| b.iter(|| (pair.raw)()));
        group.finish();
    }
}

criterion_group!(benches, bench_pairs);
criterion_main!(benches);
