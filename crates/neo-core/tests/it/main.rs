//! neo-core integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, reason = "a failing unwrap is how a test reports")]

mod clock;
mod config;
mod cursor;
mod errors;
mod ids;
mod pagination;
mod properties;
mod trace;
mod values;
