//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Hits, by cache and tier (`l1`, `l2`).
pub const HITS_TOTAL: &str = "neo_cache_hits_total";
/// Misses, by cache and tier.
pub const MISSES_TOTAL: &str = "neo_cache_misses_total";
/// Stale values served while a reload failed or was slow.
pub const STALE_SERVED_TOTAL: &str = "neo_cache_stale_served_total";
/// Lookups that waited for another caller's load of the same key.
pub const COALESCED_TOTAL: &str = "neo_cache_coalesced_total";
/// Loads, by outcome (`ok`, `error`).
pub const LOADS_TOTAL: &str = "neo_cache_loads_total";
/// Load durations.
pub const LOAD_SECONDS: &str = "neo_cache_load_seconds";
/// Redis errors put aside.
pub const L2_ERRORS_TOTAL: &str = "neo_cache_l2_errors_total";
/// L1 entries evicted for size, counted as writes of new keys while L1 is full (approximate:
/// see `docs/METRICS.md`).
pub const EVICTIONS_TOTAL: &str = "neo_cache_evictions_total";
/// Invalidations, by origin (`local`, `remote`).
pub const INVALIDATIONS_TOTAL: &str = "neo_cache_invalidations_total";

/// Entries in L1 (sampled per instance).
pub const L1_ENTRIES: &str = "neo_cache_l1_entries";
/// Share of lookups answered by L1 or L2 since the cache was built (sampled per instance).
pub const HIT_RATIO: &str = "neo_cache_hit_ratio";

/// Every metric of neo-cache; `cache` is the name the cache was built with.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        HITS_TOTAL,
        "total",
        &["cache", "tier"],
        "Cache hits, by cache and tier (l1, l2).",
    ),
    MetricDef::counter(
        MISSES_TOTAL,
        "total",
        &["cache", "tier"],
        "Cache misses, by cache and tier (l1, l2).",
    ),
    MetricDef::counter(
        STALE_SERVED_TOTAL,
        "total",
        &["cache"],
        "Stale values served while a reload failed or was slow.",
    ),
    MetricDef::counter(
        COALESCED_TOTAL,
        "total",
        &["cache"],
        "Lookups that waited for another caller's load.",
    ),
    MetricDef::counter(
        LOADS_TOTAL,
        "total",
        &["cache", "outcome"],
        "Loads, by outcome (ok, error).",
    ),
    MetricDef::histogram(LOAD_SECONDS, "seconds", &["cache"], "Load durations."),
    MetricDef::counter(
        L2_ERRORS_TOTAL,
        "total",
        &["cache"],
        "Redis errors the cache put aside.",
    ),
    MetricDef::counter(
        EVICTIONS_TOTAL,
        "total",
        &["cache"],
        "L1 entries evicted for size, counted as writes of new keys while L1 is full (approximate; see below).",
    ),
    MetricDef::counter(
        INVALIDATIONS_TOTAL,
        "total",
        &["cache", "origin"],
        "Invalidations, by origin (local, remote).",
    ),
    MetricDef::gauge(
        L1_ENTRIES,
        "entries",
        &["cache"],
        "Entries in L1, sampled per instance.",
    ),
    MetricDef::gauge(
        HIT_RATIO,
        "ratio",
        &["cache"],
        "Hits (L1 or L2) over lookups since the cache was built, sampled per instance.",
    ),
];
