//! Cross-crate scenarios: neo-commons crates together against real servers.
#![allow(clippy::unwrap_used, reason = "a failing unwrap is how a test reports")]

mod core_on_postgres;
