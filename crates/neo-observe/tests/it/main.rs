//! neo-observe: the catalogue against the sources and docs, the sampler against a real
//! PostgreSQL (neo-testkit), the Prometheus exposition, and the alert rules and dashboard.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod catalogue;
mod deploy;
#[cfg(feature = "prometheus")]
mod prometheus;
mod sampler;
