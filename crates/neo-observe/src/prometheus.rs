//! Prometheus export (feature `prometheus`): a recorder for the `metrics` facade and a
//! `/metrics` route for the user's axum router.

use crate::{Error, Result};
use axum::Router;
use axum::http::header;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;
use serde::Deserialize;
use std::time::Duration;

pub use metrics_exporter_prometheus::PrometheusHandle as Handle;

/// How the recorder is built. Load with `neo_core::config::from_env("NEO_OBSERVE_PROMETHEUS_")`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    /// A gauge not set for this long is dropped from the exposition: an endpoint that left the
    /// sampler's worst-N keeps no stale series. Use a few sampler intervals.
    #[serde(with = "humantime_serde")]
    pub gauge_idle_timeout: Duration,
    /// Bucket bounds (seconds) of every `_seconds` histogram.
    pub seconds_buckets: Vec<f64>,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            gauge_idle_timeout: Duration::from_secs(120),
            seconds_buckets: vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        }
    }
}

/// A recorder built from `config`, not installed (for a test's local recorder, or to combine
/// with other recorders). [`install`] is the usual way.
///
/// # Errors
/// [`Error::Recorder`] for empty or invalid buckets.
pub fn recorder(config: &PrometheusConfig) -> Result<PrometheusRecorder> {
    Ok(builder(config)?.build_recorder())
}

/// Builds the recorder, installs it as the process' global recorder, describes every
/// catalogued metric, and returns the handle that renders the exposition.
///
/// # Errors
/// [`Error::Recorder`] when a global recorder is already installed or the buckets are invalid.
pub fn install(config: &PrometheusConfig) -> Result<PrometheusHandle> {
    let handle = builder(config)?
        .install_recorder()
        .map_err(|e| Error::Recorder(e.to_string()))?;
    crate::catalogue::describe_all();
    Ok(handle)
}

fn builder(config: &PrometheusConfig) -> Result<PrometheusBuilder> {
    PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(config.gauge_idle_timeout))
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &config.seconds_buckets,
        )
        .map_err(|e| Error::Recorder(e.to_string()))
}

/// A router serving `GET /metrics` from `handle` (text exposition format 0.0.4).
pub fn routes<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    )
}

/// `router` with `GET /metrics` added.
pub fn mount<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    handle: PrometheusHandle,
) -> Router<S> {
    router.merge(routes(handle))
}
