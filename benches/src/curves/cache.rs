//! The L1 curves: the cost of a hit with N entries in the cache against 1,000 entries, and
//! the bytes one cached entry takes (the process's resident memory grown by filling the
//! cache, over the entries).

use super::{Curve, Options, Point, Target};
use crate::cache::{Org, org};
use crate::{check, now_or_never};
use neo_cache::{Cache, CacheConfig, EntryOptions, HybridCache, L1Config};
use std::hint::black_box;
use std::time::Instant;

/// The entries of the curve's first point, the comparison for every other (or the run's
/// smallest size when that is smaller).
pub const BASE_ENTRIES: u64 = 1_000;

/// Timed samples per point; the median is reported.
const SAMPLES: usize = 9;

/// The process's resident set, in bytes, from /proc/self/statm.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4_096
}

fn key(n: u64) -> String {
    format!("org:{n}")
}

/// A permutation step: visiting `(i * STEP) % n` touches keys all over the cache, not a few
/// neighbours a CPU cache holds (an odd prime, co-prime with every size used).
const STEP: u64 = 7_919;

/// What one size measured.
struct Measured {
    /// Nanoseconds per hit through neo-cache.
    hit: f64,
    /// Nanoseconds per hit on raw moka with the same entries and keys.
    raw_hit: f64,
    /// Resident bytes grown per entry while filling neo-cache.
    bytes_per_entry: f64,
}

/// Median nanoseconds per call of `get` over `probe`, after a warm-up pass.
fn time_hits(probe: &[String], mut get: impl FnMut(&str) -> bool) -> f64 {
    let mut samples = Vec::with_capacity(SAMPLES);
    for round in 0..=SAMPLES {
        let started = Instant::now();
        for key in probe {
            assert!(get(black_box(key)), "every key is cached");
        }
        if round > 0 {
            samples.push(started.elapsed().as_secs_f64() * 1e9 / probe.len() as f64);
        }
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Hits and bytes per entry with `entries` in a memory cache. The caches and values are
/// handed to `keep` (kept until every size is measured): freed memory the next size reused
/// would not show in the resident set.
fn measure(entries: u64, lookups: usize, keep: &mut Vec<Box<dyn std::any::Any>>) -> Measured {
    let rt = crate::runtime();
    let _guard = rt.enter();
    let values: Vec<(String, Org)> = (0..entries).map(|n| (key(n), org(n))).collect();
    let probe: Vec<String> = (0..lookups as u64)
        .map(|i| key((i * STEP) % entries))
        .collect();
    let before = resident_bytes();
    let cache = check(HybridCache::<Org>::memory(CacheConfig {
        l1: L1Config {
            capacity: entries * 2,
            ..L1Config::default()
        },
        ttl_jitter: 0.0,
        ..CacheConfig::named("curves")
    }));
    for (key, value) in &values {
        check(rt.block_on(cache.set(key, value.clone(), &EntryOptions::default())));
    }
    let after = resident_bytes();
    let raw: moka::sync::Cache<String, Org> = moka::sync::Cache::builder()
        .max_capacity(entries * 2)
        .build();
    for (key, value) in &values {
        raw.insert(key.clone(), value.clone());
    }
    let hit = time_hits(&probe, |key| {
        let value = check(now_or_never(cache.get(key)));
        black_box(value).is_some()
    });
    let raw_hit = time_hits(&probe, |key| black_box(raw.get(key)).is_some());
    keep.push(Box::new((values, cache, raw, rt)));
    Measured {
        hit,
        raw_hit,
        bytes_per_entry: after.saturating_sub(before) as f64 / entries as f64,
    }
}

/// `cache/l1_hit` (nanoseconds per hit, target ≤ 1.3× the hit with 1,000 entries),
/// `cache/l1_hit_raw_moka` (the same hits on raw moka: how much of the growth is the
/// hardware's, caches missed on a larger table, rather than neo-cache's) and
/// `cache/bytes_per_entry` (resident bytes per entry, reported) at 1,000 entries and each of
/// `options.sizes`.
pub fn l1_curves(options: &Options) -> Vec<Curve> {
    // 1,000 entries, or fewer when the run's smallest size is smaller (a test's tiny run).
    let base = options
        .sizes
        .first()
        .map_or(BASE_ENTRIES, |&s| s.min(BASE_ENTRIES));
    let mut sizes = vec![base];
    sizes.extend(options.sizes.iter().copied().filter(|&s| s > base));
    let (mut hits, mut raw_hits, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    let mut keep = Vec::new();
    for size in sizes {
        let measured = measure(size, options.lookups, &mut keep);
        hits.push(Point {
            size,
            value: measured.hit,
        });
        raw_hits.push(Point {
            size,
            value: measured.raw_hit,
        });
        // The resident set grows by whole pages the allocator may already hold: at 1,000
        // entries the delta says little, and can be 0; a floor of one byte keeps the ratio
        // defined.
        bytes.push(Point {
            size,
            value: measured.bytes_per_entry.max(1.0),
        });
    }
    drop(keep);
    vec![
        Curve {
            name: "cache/l1_hit",
            size_of: "entries",
            unit: "ns",
            target: Target::RatioAtMost(1.3),
            points: hits,
        },
        Curve {
            name: "cache/l1_hit_raw_moka",
            size_of: "entries",
            unit: "ns",
            target: Target::None,
            points: raw_hits,
        },
        Curve {
            name: "cache/bytes_per_entry",
            size_of: "entries",
            unit: "B/entry",
            target: Target::None,
            points: bytes,
        },
    ]
}
