//! The names of the metrics this crate emits (the code emits through these constants) and
//! their catalogue entries; `docs/METRICS.md` lists every crate's, and neo-observe's
//! catalogue test checks that code, catalogue and document agree.

use neo_core::MetricDef;

/// Events written to the outbox.
pub const PUBLISHED_TOTAL: &str = "neo_events_published_total";
/// Events the dispatcher handed on.
pub const DISPATCHED_TOTAL: &str = "neo_events_dispatched_total";
/// Age of the oldest event not yet dispatched, per outbox schema.
pub const OUTBOX_LAG_SECONDS: &str = "neo_events_outbox_lag_seconds";
/// Events waiting in the outbox, per outbox schema (counts stop at the sampler's cap).
pub const OUTBOX_PENDING_EVENTS: &str = "neo_events_outbox_pending_events";
/// Webhook attempt durations.
pub const WEBHOOK_ATTEMPT_SECONDS: &str = "neo_events_webhook_attempt_seconds";
/// Webhook deliveries that succeeded.
pub const WEBHOOK_DELIVERED_TOTAL: &str = "neo_events_webhook_delivered_total";
/// Webhook deliveries given up (dead).
pub const WEBHOOK_DEAD_TOTAL: &str = "neo_events_webhook_dead_total";
/// Webhook attempts scheduled again.
pub const WEBHOOK_RETRIES_TOTAL: &str = "neo_events_webhook_retries_total";
/// Operational events recorded, by kind.
pub const WEBHOOK_OPERATIONAL_EVENTS_TOTAL: &str = "neo_events_webhook_operational_events_total";
/// Events the fan-out refused.
pub const WEBHOOK_REFUSED_EVENTS_TOTAL: &str = "neo_events_webhook_refused_events_total";
/// Deliveries the fan-out created.
pub const WEBHOOK_DELIVERIES_CREATED_TOTAL: &str = "neo_events_webhook_deliveries_created_total";
/// Endpoints still to re-seal under the current key.
pub const WEBHOOK_RESEAL_REMAINING_ENDPOINTS: &str =
    "neo_events_webhook_reseal_remaining_endpoints";
/// Share of an endpoint's recent attempts that succeeded (0..1).
pub const WEBHOOK_ENDPOINT_SUCCESS_RATIO: &str = "neo_events_webhook_endpoint_success_ratio";
/// Mean duration of an endpoint's recent attempts.
pub const WEBHOOK_ENDPOINT_LATENCY_SECONDS: &str = "neo_events_webhook_endpoint_latency_seconds";
/// Pending deliveries of an endpoint.
pub const WEBHOOK_ENDPOINT_PENDING_DELIVERIES: &str =
    "neo_events_webhook_endpoint_pending_deliveries";
/// Endpoints disabled.
pub const WEBHOOK_DISABLED_ENDPOINTS: &str = "neo_events_webhook_disabled_endpoints";
/// Dead webhook deliveries (dead letters).
pub const WEBHOOK_DEAD_DELIVERIES: &str = "neo_events_webhook_dead_deliveries";
/// This instance's endpoint breakers by state (`closed`, `open`, `half_open`).
pub const WEBHOOK_BREAKERS: &str = "neo_events_webhook_breakers";

/// Every metric of neo-events. `endpoint` values are bounded by the sampler's
/// `max_endpoint_series` (the worst endpoints; the rest summed under `other`).
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef::counter(
        PUBLISHED_TOTAL,
        "total",
        &[],
        "Events written to the outbox.",
    ),
    MetricDef::counter(
        DISPATCHED_TOTAL,
        "total",
        &[],
        "Events the outbox dispatcher handed on.",
    ),
    MetricDef::gauge(
        OUTBOX_LAG_SECONDS,
        "seconds",
        &["outbox"],
        "Age of the oldest event not yet dispatched (0 when none).",
    ),
    MetricDef::gauge(
        OUTBOX_PENDING_EVENTS,
        "events",
        &["outbox"],
        "Events waiting in the outbox (counts stop at the sampler's cap).",
    ),
    MetricDef::histogram(
        WEBHOOK_ATTEMPT_SECONDS,
        "seconds",
        &[],
        "Webhook attempt durations.",
    ),
    MetricDef::counter(
        WEBHOOK_DELIVERED_TOTAL,
        "total",
        &[],
        "Webhook deliveries that succeeded.",
    ),
    MetricDef::counter(
        WEBHOOK_DEAD_TOTAL,
        "total",
        &[],
        "Webhook deliveries given up.",
    ),
    MetricDef::counter(
        WEBHOOK_RETRIES_TOTAL,
        "total",
        &[],
        "Webhook attempts scheduled again.",
    ),
    MetricDef::counter(
        WEBHOOK_OPERATIONAL_EVENTS_TOTAL,
        "total",
        &["kind"],
        "Webhook operational events recorded, by kind.",
    ),
    MetricDef::counter(
        WEBHOOK_REFUSED_EVENTS_TOTAL,
        "total",
        &[],
        "Events the webhook fan-out refused.",
    ),
    MetricDef::counter(
        WEBHOOK_DELIVERIES_CREATED_TOTAL,
        "total",
        &[],
        "Webhook deliveries the fan-out created.",
    ),
    MetricDef::gauge(
        WEBHOOK_RESEAL_REMAINING_ENDPOINTS,
        "endpoints",
        &[],
        "Webhook endpoints still to re-seal under the current key.",
    ),
    MetricDef::gauge(
        WEBHOOK_ENDPOINT_SUCCESS_RATIO,
        "ratio",
        &["endpoint"],
        "Share of an endpoint's attempts in the health window that succeeded.",
    ),
    MetricDef::gauge(
        WEBHOOK_ENDPOINT_LATENCY_SECONDS,
        "seconds",
        &["endpoint"],
        "Mean duration of an endpoint's attempts in the health window.",
    ),
    MetricDef::gauge(
        WEBHOOK_ENDPOINT_PENDING_DELIVERIES,
        "deliveries",
        &["endpoint"],
        "Pending deliveries of an endpoint.",
    ),
    MetricDef::gauge(
        WEBHOOK_DISABLED_ENDPOINTS,
        "endpoints",
        &[],
        "Webhook endpoints disabled.",
    ),
    MetricDef::gauge(
        WEBHOOK_DEAD_DELIVERIES,
        "deliveries",
        &[],
        "Dead webhook deliveries (dead letters), counts stop at the sampler's cap.",
    ),
    MetricDef::gauge(
        WEBHOOK_BREAKERS,
        "breakers",
        &["state"],
        "This instance's endpoint breakers by state (closed, open, half_open).",
    ),
];
