//! Cross-crate scenarios: neo-commons crates together against real servers.
#![allow(clippy::unwrap_used, reason = "a failing unwrap is how a test reports")]
#![allow(clippy::print_stdout, reason = "each scenario prints what it saw")]

mod cache_failover;
mod core_on_postgres;
mod flaky_receiver;
mod metrics_endpoint;
mod minimal_example;
mod one_tenant;
mod primary_failover;
mod sentinel_failover;
mod service_under_faults;
mod soak;
mod worker_example;
