//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Jobs enqueued.
pub const ENQUEUED_TOTAL: &str = "neo_queue_enqueued_total";
/// Jobs claimed.
pub const CLAIMED_TOTAL: &str = "neo_queue_claimed_total";
/// Jobs acked.
pub const ACKED_TOTAL: &str = "neo_queue_acked_total";
/// Jobs nacked.
pub const NACKED_TOTAL: &str = "neo_queue_nacked_total";
/// Nacked jobs scheduled again.
pub const RETRIES_TOTAL: &str = "neo_queue_retries_total";
/// Jobs moved to the dead letters.
pub const DEAD_LETTERED_TOTAL: &str = "neo_queue_dead_lettered_total";
/// Jobs whose lease expired, put back.
pub const RESCUED_TOTAL: &str = "neo_queue_rescued_total";
/// Jobs per queue and state (`available`, `running`, `dead`).
pub const DEPTH_JOBS: &str = "neo_queue_depth_jobs";
/// Age of the oldest due job not yet claimed, per queue.
pub const OLDEST_PENDING_SECONDS: &str = "neo_queue_oldest_pending_seconds";
/// Time from claim to ack or nack.
pub const CLAIM_TO_COMPLETE_SECONDS: &str = "neo_queue_claim_to_complete_seconds";

/// Every metric of neo-queue; `queue` is the queue's schema.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(ENQUEUED_TOTAL, "total", &[], "Jobs enqueued."),
    MetricDef::counter(CLAIMED_TOTAL, "total", &[], "Jobs claimed."),
    MetricDef::counter(ACKED_TOTAL, "total", &[], "Jobs acked."),
    MetricDef::counter(NACKED_TOTAL, "total", &[], "Jobs nacked."),
    MetricDef::counter(RETRIES_TOTAL, "total", &[], "Nacked jobs scheduled again."),
    MetricDef::counter(
        DEAD_LETTERED_TOTAL,
        "total",
        &[],
        "Jobs moved to the dead letters.",
    ),
    MetricDef::counter(
        RESCUED_TOTAL,
        "total",
        &[],
        "Jobs whose lease expired, put back.",
    ),
    MetricDef::gauge(
        DEPTH_JOBS,
        "jobs",
        &["queue", "state"],
        "Jobs per queue and state (available, running, dead); counts stop at the sampler's count cap.",
    ),
    MetricDef::gauge(
        OLDEST_PENDING_SECONDS,
        "seconds",
        &["queue"],
        "Age of the oldest due job not yet claimed (0 when none).",
    ),
    MetricDef::histogram(
        CLAIM_TO_COMPLETE_SECONDS,
        "seconds",
        &[],
        "Time from claim to ack or nack.",
    ),
];
