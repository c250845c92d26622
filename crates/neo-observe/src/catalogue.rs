//! The whole catalogue: every crate's [`MetricDef`]s in one list, and their descriptions
//! handed to the installed recorder (Prometheus' `# HELP` lines).

use neo_core::{MetricDef, MetricKind};

/// Every metric the neo-commons crates emit, crate by crate (the order of `docs/METRICS.md`).
pub fn all() -> Vec<MetricDef> {
    [
        neo_db::metric_names::CATALOGUE,
        neo_cache::metric_names::CATALOGUE,
        neo_resilience::metric_names::CATALOGUE,
        neo_batch::metric_names::CATALOGUE,
        neo_queue::metric_names::CATALOGUE,
        neo_coord::metric_names::CATALOGUE,
        neo_events::metric_names::CATALOGUE,
        crate::metric_names::CATALOGUE,
    ]
    .concat()
}

/// The entry named `name`.
pub fn find(name: &str) -> Option<MetricDef> {
    all().into_iter().find(|def| def.name == name)
}

/// Describes every catalogued metric to the installed recorder (help text and unit). Call
/// once after installing the recorder.
pub fn describe_all() {
    for def in all() {
        let unit = unit(def.unit);
        match (def.kind, unit) {
            (MetricKind::Counter, Some(u)) => metrics::describe_counter!(def.name, u, def.help),
            (MetricKind::Counter, None) => metrics::describe_counter!(def.name, def.help),
            (MetricKind::Gauge, Some(u)) => metrics::describe_gauge!(def.name, u, def.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(def.name, def.help),
            (MetricKind::Histogram, Some(u)) => {
                metrics::describe_histogram!(def.name, u, def.help);
            }
            (MetricKind::Histogram, None) => metrics::describe_histogram!(def.name, def.help),
        }
    }
}

fn unit(unit: &str) -> Option<metrics::Unit> {
    match unit {
        "seconds" => Some(metrics::Unit::Seconds),
        "total" => Some(metrics::Unit::Count),
        _ => None,
    }
}
