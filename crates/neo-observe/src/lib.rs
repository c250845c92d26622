//! Observability for neo-commons services: the metric catalogue, one leader-elected sampler
//! of the gauges only the engines know, and (feature `prometheus`) a `/metrics` route.
//!
//! - [`catalogue`]: every metric the crates emit ([`neo_core::MetricDef`]: name, kind, unit,
//!   bounded labels), gathered from each crate's `metric_names` module; `docs/METRICS.md`
//!   lists the same, and a test keeps code, catalogue and document in step.
//! - [`Sampler`]: every `interval`, the instance holding a lease row (a plain
//!   `INSERT … ON CONFLICT` with an expiry, so it works behind a transaction pooler) reads
//!   queue depth per queue and state, the oldest pending job, outbox lag, webhook endpoint
//!   health (the worst `max_endpoint_series` endpoints, the rest as `other`), disabled
//!   endpoints, dead deliveries and lock waits; every instance sets its own pool, cache and
//!   endpoint-breaker gauges. Counts are capped and each sample runs under a
//!   `statement_timeout`.
//! - `prometheus` (feature): [`prometheus::install`] and [`prometheus::mount`].
//!
//! Alert rules and a Grafana dashboard on these names are in `deploy/`.
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `prometheus` | `/metrics` on an axum router (`prometheus::install`, `prometheus::mount`) |
//! | `env` | `ObserveConfig` from `NEO_OBSERVE_*` |

mod config;
mod error;
mod lease;
pub mod metric_names;
mod queries;
mod readings;
mod sampler;

pub mod catalogue;
#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use config::ObserveConfig;
pub use error::{Error, Result};
pub use queries::{EndpointReading, LockReading, OutboxReading, QueueReading, WebhookReading};
pub use readings::Readings;
pub use sampler::{CacheReading, Sample, Sampler, SamplerHandle};
