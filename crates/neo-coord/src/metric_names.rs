//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Redis locks acquired.
pub const LOCKS_ACQUIRED_TOTAL: &str = "neo_coord_locks_acquired_total";
/// Leader elections won.
pub const ELECTIONS_TOTAL: &str = "neo_coord_elections_total";
/// Calls the distributed rate limit refused.
pub const RATE_LIMITED_TOTAL: &str = "neo_coord_rate_limited_total";

/// Every metric of neo-coord.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(LOCKS_ACQUIRED_TOTAL, "total", &[], "Redis locks acquired."),
    MetricDef::counter(ELECTIONS_TOTAL, "total", &[], "Leader elections won."),
    MetricDef::counter(
        RATE_LIMITED_TOTAL,
        "total",
        &[],
        "Calls the distributed rate limit refused.",
    ),
];
