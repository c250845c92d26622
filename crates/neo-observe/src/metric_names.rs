//! The names of the sampler's own metrics and their catalogue entries.

use neo_core::MetricDef;

/// Samples taken, by outcome (`ok`, `error`) and scope (`leader`: database-wide gauges;
/// `local`: this instance's pool, caches and breakers).
pub const SAMPLES_TOTAL: &str = "neo_observe_samples_total";
/// Time one sample took, by scope.
pub const SAMPLE_SECONDS: &str = "neo_observe_sample_seconds";
/// 1 while this instance holds the sampling lease, else 0.
pub const LEADER: &str = "neo_observe_leader";

/// Every metric of neo-observe itself.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        SAMPLES_TOTAL,
        "total",
        &["scope", "outcome"],
        "Samples taken, by scope (leader, local) and outcome (ok, error).",
    ),
    MetricDef::histogram(
        SAMPLE_SECONDS,
        "seconds",
        &["scope"],
        "Time one sample took, by scope.",
    ),
    MetricDef::gauge(
        LEADER,
        "boolean",
        &[],
        "1 while this instance holds the sampling lease, else 0.",
    ),
];
