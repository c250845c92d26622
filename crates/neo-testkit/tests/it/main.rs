//! neo-testkit integration tests: real servers, real clients.
#![allow(clippy::unwrap_used, reason = "a failing unwrap is how a test reports")]

mod faults;
mod pgbouncer;
mod postgres;
mod receiver;
mod redis;
mod replica;
mod setup;
