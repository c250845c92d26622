//! neo-orgs against real PostgreSQL and Redis.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[cfg(feature = "http")]
mod fuzz;
#[cfg(feature = "http")]
mod http;
mod isolation;
mod members;
mod offboard;
mod replica;
mod service;
