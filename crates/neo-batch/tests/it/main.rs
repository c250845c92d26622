//! neo-batch, with tokio's paused clock where timing matters.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod chunks;
mod loader;
mod writer;

pub(crate) use neo_testkit::Failure;
