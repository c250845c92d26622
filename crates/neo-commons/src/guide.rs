//! The guide (`docs/guide/`), chapter by chapter, so that `cargo test --doc -p neo-commons`
//! compiles every Rust snippet in it (and runs those that need no server). Only built while
//! collecting doctests; the `full` feature is on then through the crate's dev-dependency on
//! itself.

/// Introduction.
#[doc = include_str!("../../../docs/guide/src/introduction.md")]
pub struct Introduction;

/// Getting started.
#[doc = include_str!("../../../docs/guide/src/getting-started.md")]
pub struct GettingStarted;

/// Tenants and schemas.
#[doc = include_str!("../../../docs/guide/src/tenants.md")]
pub struct Tenants;

/// Batch writes.
#[doc = include_str!("../../../docs/guide/src/batch-writes.md")]
pub struct BatchWrites;

/// Caching.
#[doc = include_str!("../../../docs/guide/src/caching.md")]
pub struct Caching;

/// The job queue.
#[doc = include_str!("../../../docs/guide/src/queue.md")]
pub struct Queue;

/// Outbox and webhooks.
#[doc = include_str!("../../../docs/guide/src/outbox-webhooks.md")]
pub struct OutboxWebhooks;

/// Organizations.
#[doc = include_str!("../../../docs/guide/src/organizations.md")]
pub struct Organizations;

/// Production topology.
#[doc = include_str!("../../../docs/guide/src/production.md")]
pub struct Production;

/// Operations.
#[doc = include_str!("../../../docs/guide/src/operations.md")]
pub struct Operations;
