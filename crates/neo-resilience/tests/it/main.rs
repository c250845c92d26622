//! neo-resilience, with tokio's paused clock wherever timing matters.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod breaker;
mod limits;
mod policy;
mod retry;

pub(crate) use neo_testkit::Failure;
