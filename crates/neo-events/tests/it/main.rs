//! neo-events against real PostgreSQL, and its signatures against the reference crate and test vectors.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod outbox;
mod signatures;
mod tenancy;
#[cfg(feature = "webhooks")]
mod webhook_dispatch;
#[cfg(feature = "webhooks")]
mod webhook_fairness;
#[cfg(feature = "webhooks")]
mod webhook_faults;
#[cfg(feature = "webhooks")]
mod webhook_inline;
#[cfg(feature = "webhooks")]
mod webhook_isolation;
#[cfg(all(feature = "webhooks", feature = "archive"))]
mod webhook_partitions;
#[cfg(feature = "webhooks")]
mod webhook_regions;
#[cfg(feature = "webhooks")]
mod webhook_rotation;
#[cfg(feature = "webhooks")]
mod webhook_schemas;
#[cfg(feature = "webhooks")]
mod webhook_sealing;
#[cfg(feature = "webhooks")]
mod webhook_secrecy;
#[cfg(feature = "webhooks")]
mod webhook_spans;
#[cfg(feature = "webhooks")]
mod webhook_stats;
#[cfg(feature = "webhooks")]
mod webhook_trace;
#[cfg(feature = "webhooks")]
mod webhook_verification;
#[cfg(feature = "webhooks")]
mod webhooks;
