//! Counters of one named cache, mirrored to the `metrics` facade. Redis exchanges run in
//! `cache.l2` spans (field `cache.op`) and loads in `cache.load` spans (`cache.name`,
//! `cache.key`); the L1 hit path has no span, to stay within a few nanoseconds of moka.
//!
//! Metric names: `neo_cache_hits_total{cache,tier}`, `neo_cache_misses_total{cache,tier}`,
//! `neo_cache_stale_served_total{cache}`, `neo_cache_coalesced_total{cache}`,
//! `neo_cache_loads_total{cache,outcome}`, `neo_cache_load_seconds{cache}`,
//! `neo_cache_l2_errors_total{cache}`, `neo_cache_evictions_total{cache}`,
//! `neo_cache_invalidations_total{cache,origin}`.

use crate::metric_names::{
    COALESCED_TOTAL, EVICTIONS_TOTAL, HITS_TOTAL, INVALIDATIONS_TOTAL, L2_ERRORS_TOTAL,
    LOAD_SECONDS, LOADS_TOTAL, MISSES_TOTAL, STALE_SERVED_TOTAL,
};
use metrics::{Counter, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of one cache's counters since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Fresh values found in process.
    pub l1_hits: u64,
    /// Lookups that found nothing fresh in process.
    pub l1_misses: u64,
    /// Fresh values found in Redis.
    pub l2_hits: u64,
    /// Lookups that found nothing fresh in Redis.
    pub l2_misses: u64,
    /// Redis calls that failed or timed out.
    pub l2_errors: u64,
    /// Expired values served because loading or Redis failed.
    pub stale_served: u64,
    /// Callers that waited on another caller's load of the same key instead of loading.
    pub coalesced: u64,
    /// Loader calls (a batch loader call counts once).
    pub loads: u64,
    /// Loader calls that failed or timed out.
    pub load_errors: u64,
    /// Total time spent in loaders.
    pub load_time: Duration,
    /// Entries evicted from L1 for capacity: writes of keys L1 did not hold while it was full
    /// (approximate: moka's entry count trails the writes by at most 64).
    pub evictions: u64,
    /// Invalidations applied (removes, tags, patterns, clears), local and from the backplane.
    pub invalidations: u64,
    /// Of those, received from other instances.
    pub remote_invalidations: u64,
    /// Bytes before compression of values written to Redis.
    pub bytes_encoded: u64,
    /// Bytes actually written (framed, compressed).
    pub bytes_stored: u64,
}

impl CacheStats {
    /// `bytes_stored / bytes_encoded`: below 1.0 when compression pays.
    pub fn compression_ratio(&self) -> f64 {
        if self.bytes_encoded == 0 {
            1.0
        } else {
            self.bytes_stored as f64 / self.bytes_encoded as f64
        }
    }
}

/// Metric handles, registered once per cache so recording never allocates. Install the
/// `metrics` recorder before building caches.
#[derive(Debug)]
struct Exported {
    l1_hits: Counter,
    l1_misses: Counter,
    l2_hits: Counter,
    l2_misses: Counter,
    l2_errors: Counter,
    stale_served: Counter,
    coalesced: Counter,
    loads_ok: Counter,
    loads_failed: Counter,
    load_seconds: Histogram,
    evictions: Counter,
    invalidations_local: Counter,
    invalidations_remote: Counter,
}

#[derive(Debug)]
pub(crate) struct Stats {
    l1_hits: PerThreadCounter,
    l1_misses: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_errors: AtomicU64,
    stale_served: AtomicU64,
    coalesced: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    load_nanos: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    remote_invalidations: AtomicU64,
    bytes_encoded: AtomicU64,
    bytes_stored: AtomicU64,
    exported: Exported,
}

/// A counter for the L1 hit path: each thread increments its own slot with a plain load and
/// store (no locked instruction, no cache line shared between threads); reading sums the
/// slots. Exact, since only the owning thread writes a slot.
#[derive(Debug, Default)]
struct PerThreadCounter(thread_local::ThreadLocal<AtomicU64>);

impl PerThreadCounter {
    #[inline]
    fn bump(&self) {
        let slot = self.0.get_or_default();
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|slot| slot.load(Ordering::Relaxed)).sum()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        let cache = name.to_owned();
        let hits = |tier: &'static str| metrics::counter!(HITS_TOTAL, "cache" => cache.clone(), "tier" => tier);
        let misses = |tier: &'static str| metrics::counter!(MISSES_TOTAL, "cache" => cache.clone(), "tier" => tier);
        let outcome = |outcome: &'static str| metrics::counter!(LOADS_TOTAL, "cache" => cache.clone(), "outcome" => outcome);
        let origin = |origin: &'static str| metrics::counter!(INVALIDATIONS_TOTAL, "cache" => cache.clone(), "origin" => origin);
        let exported = Exported {
            l1_hits: hits("l1"),
            l1_misses: misses("l1"),
            l2_hits: hits("l2"),
            l2_misses: misses("l2"),
            l2_errors: metrics::counter!(L2_ERRORS_TOTAL, "cache" => cache.clone()),
            stale_served: metrics::counter!(STALE_SERVED_TOTAL, "cache" => cache.clone()),
            coalesced: metrics::counter!(COALESCED_TOTAL, "cache" => cache.clone()),
            loads_ok: outcome("ok"),
            loads_failed: outcome("error"),
            load_seconds: metrics::histogram!(LOAD_SECONDS, "cache" => cache.clone()),
            evictions: metrics::counter!(EVICTIONS_TOTAL, "cache" => cache.clone()),
            invalidations_local: origin("local"),
            invalidations_remote: origin("remote"),
        };
        Stats {
            l1_hits: PerThreadCounter::default(),
            l1_misses: AtomicU64::new(0),
            l2_hits: AtomicU64::new(0),
            l2_misses: AtomicU64::new(0),
            l2_errors: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            load_errors: AtomicU64::new(0),
            load_nanos: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            remote_invalidations: AtomicU64::new(0),
            bytes_encoded: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            exported,
        }
    }

    #[inline]
    pub(crate) fn l1(&self, hit: bool) {
        if hit {
            self.l1_hits.bump();
            self.exported.l1_hits.increment(1);
        } else {
            bump(&self.l1_misses);
            self.exported.l1_misses.increment(1);
        }
    }

    pub(crate) fn l2(&self, hit: bool) {
        if hit {
            bump(&self.l2_hits);
            self.exported.l2_hits.increment(1);
        } else {
            bump(&self.l2_misses);
            self.exported.l2_misses.increment(1);
        }
    }

    /// A batch read's L2 hits and misses, counted once.
    pub(crate) fn l2_counts(&self, hits: u64, misses: u64) {
        self.l2_hits.fetch_add(hits, Ordering::Relaxed);
        self.exported.l2_hits.increment(hits);
        self.l2_misses.fetch_add(misses, Ordering::Relaxed);
        self.exported.l2_misses.increment(misses);
    }

    pub(crate) fn l2_error(&self) {
        bump(&self.l2_errors);
        self.exported.l2_errors.increment(1);
    }

    pub(crate) fn stale_served(&self) {
        bump(&self.stale_served);
        self.exported.stale_served.increment(1);
    }

    pub(crate) fn coalesced(&self) {
        bump(&self.coalesced);
        self.exported.coalesced.increment(1);
    }

    pub(crate) fn load(&self, took: Duration, ok: bool) {
        bump(&self.loads);
        if ok {
            self.exported.loads_ok.increment(1);
        } else {
            bump(&self.load_errors);
            self.exported.loads_failed.increment(1);
        }
        self.load_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.exported.load_seconds.record(took.as_secs_f64());
    }

    pub(crate) fn eviction(&self) {
        bump(&self.evictions);
        self.exported.evictions.increment(1);
    }

    pub(crate) fn invalidation(&self, remote: bool) {
        bump(&self.invalidations);
        if remote {
            bump(&self.remote_invalidations);
            self.exported.invalidations_remote.increment(1);
        } else {
            self.exported.invalidations_local.increment(1);
        }
    }

    pub(crate) fn stored(&self, encoded: usize, stored: usize) {
        self.bytes_encoded
            .fetch_add(encoded as u64, Ordering::Relaxed);
        self.bytes_stored
            .fetch_add(stored as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            l1_hits: self.l1_hits.total(),
            l1_misses: get(&self.l1_misses),
            l2_hits: get(&self.l2_hits),
            l2_misses: get(&self.l2_misses),
            l2_errors: get(&self.l2_errors),
            stale_served: get(&self.stale_served),
            coalesced: get(&self.coalesced),
            loads: get(&self.loads),
            load_errors: get(&self.load_errors),
            load_time: Duration::from_nanos(get(&self.load_nanos)),
            evictions: get(&self.evictions),
            invalidations: get(&self.invalidations),
            remote_invalidations: get(&self.remote_invalidations),
            bytes_encoded: get(&self.bytes_encoded),
            bytes_stored: get(&self.bytes_stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_counts_add_up_across_threads() {
        let counter = PerThreadCounter::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..10_000).for_each(|_| counter.bump()));
            }
        });
        counter.bump();
        assert_eq!(counter.total(), 40_001);
    }

    #[test]
    fn l1_hits_and_misses_reach_the_snapshot() {
        let stats = Stats::new("unit");
        std::thread::scope(|scope| {
            scope.spawn(|| stats.l1(true));
            scope.spawn(|| stats.l1(true));
        });
        stats.l1(false);
        let snapshot = stats.snapshot();
        assert_eq!((snapshot.l1_hits, snapshot.l1_misses), (2, 1));
    }
}
