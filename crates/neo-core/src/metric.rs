//! What a metric is: the catalogue entry each crate keeps beside the names it emits.
//!
//! Every crate that emits metrics has a `metric_names` module: one `const` per name (the code
//! emits through it) and a `CATALOGUE` of [`MetricDef`]s. `docs/METRICS.md` lists the union,
//! and neo-observe's catalogue test checks that the three agree.

/// The kind of a metric, as the `metrics` facade and Prometheus name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up (`counter!`); the name ends in `_total`.
    Counter,
    /// A value that is set (`gauge!`).
    Gauge,
    /// A distribution of observations (`histogram!`).
    Histogram,
}

impl MetricKind {
    /// `counter`, `gauge` or `histogram`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One catalogue entry: a stable name `neo_<crate>_<what>_<unit>`, its kind, unit and labels.
/// Labels have bounded values only (a queue, an endpoint among a bounded set, a cache name,
/// an outcome), never a tenant id or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricDef {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit (`seconds`, `connections`, `jobs`, ...; `total` counts events).
    pub unit: &'static str,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// One line saying what it measures.
    pub help: &'static str,
}

impl MetricDef {
    /// A counter.
    pub const fn counter(
        name: &'static str,
        unit: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        MetricDef {
            name,
            kind: MetricKind::Counter,
            unit,
            labels,
            help,
        }
    }

    /// A gauge.
    pub const fn gauge(
        name: &'static str,
        unit: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        MetricDef {
            name,
            kind: MetricKind::Gauge,
            unit,
            labels,
            help,
        }
    }

    /// A histogram.
    pub const fn histogram(
        name: &'static str,
        unit: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        MetricDef {
            name,
            kind: MetricKind::Histogram,
            unit,
            labels,
            help,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_the_kind() {
        assert_eq!(
            MetricDef::counter("a_total", "total", &[], "")
                .kind
                .as_str(),
            "counter"
        );
        assert_eq!(
            MetricDef::gauge("a", "jobs", &["queue"], "").kind,
            MetricKind::Gauge
        );
        assert_eq!(
            MetricDef::histogram("a", "seconds", &[], "").kind.as_str(),
            "histogram"
        );
    }
}
