//! neo-commons: the SDK multi-tenant backend services compose.
//!
//! This facade re-exports each crate under a short module name behind an additive feature,
//! so a service depends on one crate and turns on what it uses:
//!
//! ```toml
//! [dependencies]
//! neo-commons = { version = "0.1", features = ["sqlx", "env"] }
//! ```
//!
//! | feature | module | crate |
//! |---|---|---|
//! | `core` (default) | [`core`] | `neo-core`: ids, value objects, errors, pagination, clock |
//! | `sqlx` | — | Postgres encodings for `neo-core` types |
//! | `env` | [`core::config`] | config from `NEO_*` environment variables |
//! | `db` | [`db`] | `neo-db`: pool, batch repositories, COPY, pagination, migrations |
//! | `cache` | [`cache`] | `neo-cache`: moka L1 + Redis L2, single-flight, fail-safe, tags, backplane |
//! | `redis` | [`redis`] | `neo-redis`: shared multiplexed Redis connections and their config |
//! | `resilience` | [`resilience`] | `neo-resilience`: retry, circuit breaker, rate limits, bulkhead, timeouts |
//! | `batch` | [`batch`] | `neo-batch`: data loader, write batcher, AIMD sizing, chunked streams |
//! | `queue` | [`queue`] | `neo-queue`: durable PostgreSQL job queue and worker pool |
//! | `coord` | [`coord`] | `neo-coord`: Redis locks with fencing, leader election, rate limits |
//! | `events` | [`events`] | `neo-events`: domain events, transactional outbox, webhooks (Standard Webhooks signatures, delivery on neo-queue) |
//! | `orgs` | [`orgs`] | `neo-orgs`: the organization entity and its service (cache, outbox events, audit, search) |
//! | `tenant` | [`tenant`] | `neo-tenant`: the task-local tenant (fail closed), the axum layer resolving it per request |
//! | `observe` | [`observe`] | `neo-observe`: the metric catalogue, the leader-elected gauge sampler |
//! | `prometheus` | [`observe::prometheus`] | `/metrics` for Prometheus on an axum router |
//! | `console` | [`console`] | `neo-console`: the operations console, a mountable axum router (queues, webhooks, outbox, cache, database) |
//! | `full` | all of the above | |
//!
//! ```
//! use neo_commons::core::{OrganizationId, Slug};
//! let id = OrganizationId::new();
//! let slug = Slug::parse("acme")?;
//! # let _ = (id, slug);
//! # Ok::<(), neo_commons::core::Error>(())
//! ```

#[cfg(feature = "core")]
#[doc(inline)]
pub use neo_core as core;

#[cfg(feature = "db")]
#[doc(inline)]
pub use neo_db as db;

#[cfg(feature = "cache")]
#[doc(inline)]
pub use neo_cache as cache;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use neo_redis as redis;

#[cfg(feature = "resilience")]
#[doc(inline)]
pub use neo_resilience as resilience;

#[cfg(feature = "batch")]
#[doc(inline)]
pub use neo_batch as batch;

#[cfg(feature = "queue")]
#[doc(inline)]
pub use neo_queue as queue;

#[cfg(feature = "coord")]
#[doc(inline)]
pub use neo_coord as coord;

#[cfg(feature = "orgs")]
#[doc(inline)]
pub use neo_orgs as orgs;

#[cfg(feature = "events")]
#[doc(inline)]
pub use neo_events as events;

#[cfg(feature = "tenant")]
#[doc(inline)]
pub use neo_tenant as tenant;

#[cfg(feature = "observe")]
#[doc(inline)]
pub use neo_observe as observe;

#[cfg(feature = "console")]
#[doc(inline)]
pub use neo_console as console;

/// The README's example, compiled as a doctest so it cannot drift from the API.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeExample;

/// The guide's chapters (`docs/guide/`), compiled as doctests so its snippets cannot drift
/// from the API.
#[cfg(all(doctest, feature = "full"))]
pub mod guide;
