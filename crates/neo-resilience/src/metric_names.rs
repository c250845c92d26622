//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Retries of a policy.
pub const RETRIES_TOTAL: &str = "neo_resilience_retries_total";
/// Breaker state changes, by breaker and new state.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "neo_resilience_breaker_transitions_total";
/// Calls an open breaker refused.
pub const BREAKER_REJECTIONS_TOTAL: &str = "neo_resilience_breaker_rejections_total";
/// Calls the rate limiter refused.
pub const RATE_LIMITED_TOTAL: &str = "neo_resilience_rate_limited_total";
/// Calls a full bulkhead refused.
pub const BULKHEAD_REJECTIONS_TOTAL: &str = "neo_resilience_bulkhead_rejections_total";

/// Every metric of neo-resilience; `breaker` and `bulkhead` are the names given in code (a
/// bounded set: a breaker per endpoint is named for its kind, not its id).
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        RETRIES_TOTAL,
        "total",
        &[],
        "Retries of a resilience policy.",
    ),
    MetricDef::counter(
        BREAKER_TRANSITIONS_TOTAL,
        "total",
        &["breaker", "to"],
        "Circuit breaker state changes, by breaker and new state.",
    ),
    MetricDef::counter(
        BREAKER_REJECTIONS_TOTAL,
        "total",
        &["breaker"],
        "Calls an open breaker refused.",
    ),
    MetricDef::counter(
        RATE_LIMITED_TOTAL,
        "total",
        &[],
        "Calls the rate limiter refused.",
    ),
    MetricDef::counter(
        BULKHEAD_REJECTIONS_TOTAL,
        "total",
        &["bulkhead"],
        "Calls a full bulkhead refused.",
    ),
];
