//! neo-events against real PostgreSQL, and its signatures against the reference implementation.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod outbox;
mod signatures;
#[cfg(feature = "webhooks")]
mod webhook_faults;
#[cfg(feature = "webhooks")]
mod webhooks;
