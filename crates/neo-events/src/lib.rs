//! Domain events, the transactional outbox and webhook delivery for neo-commons.
//!
//! - [`DomainEvent`]: id (UUIDv7), validated event and aggregate types, tenant, payload,
//!   metadata, correlation and causation ids, schema version.
//! - [`Outbox`]: `publish` / `publish_many` in the caller's transaction (the event exists if
//!   and only if the business write committed); [`Outbox::dispatch_once`] / [`Outbox::run`]
//!   hand committed events to a handler with `FOR UPDATE SKIP LOCKED` (several dispatchers in
//!   parallel) and mark them processed in the same transaction, waking on LISTEN/NOTIFY;
//!   [`Outbox::archive`] moves old processed events in bounded batches; [`EventBus`] for
//!   in-process subscribers.
//! - [Standard Webhooks v1] signatures ([`sign`], [`WebhookSecret`] with `whsec_` secrets
//!   and rotation) and the receiver's [`Verifier`] (±5 minutes by default), checked against
//!   the reference `standardwebhooks` crate and published test vectors in the tests.
//!
//! - [`Webhooks`] (feature `webhooks`): event types, endpoints (per tenant, rate limit, headers, secret rotation)
//!   and subscriptions in PostgreSQL; [`Webhooks::fan_out`] turns dispatched events into
//!   deliveries and neo-queue jobs in one transaction; [`Webhooks::handle`] registers the
//!   delivery handler on a neo-queue worker: signed POSTs over a pooled reqwest client (no
//!   redirects, capped answers, SSRF guard), a Svix-like retry schedule that honours
//!   `Retry-After`, `410 Gone` disabling the endpoint, per-endpoint circuit breaker and rate
//!   limit, dead letters with replay, and [`OperationalEvent`]s.
//!
//! # Features
//! - `webhooks` (on by default): [`Webhooks`] and its settings, the SSRF guard
//!   ([`AddressPolicy`]), and the dependencies they need (reqwest, neo-queue, neo-batch,
//!   neo-resilience). Without it the crate is events, the outbox and signatures only:
//!   `neo-events = { version = "…", default-features = false }`.
//!
//! [Standard Webhooks v1]: https://www.standardwebhooks.com/

mod error;
mod event;
pub mod metric_names;
mod outbox;
pub mod partition;
mod signature;
#[cfg(feature = "webhooks")]
mod ssrf;
mod tenancy;
mod tenant_rows;
#[cfg(feature = "webhooks")]
mod webhook;

pub use error::EventError;
pub use event::{DomainEvent, MAX_TYPE_LEN};
pub use outbox::{
    EventBus, MAX_IDEMPOTENCY_KEY_LEN, Outbox, OutboxConfig, PublishCheck, Published,
};
#[cfg(feature = "archive")]
pub use partition::ZstdJsonLines;
pub use partition::{
    Partition, PartitionArchive, PartitionConfig, PartitionReport, PartitionWriter,
};
#[cfg(feature = "webhooks")]
pub use ssrf::AddressPolicy;
#[cfg(feature = "webhooks")]
pub use webhook::{
    AtRest, Delivery, DeliveryAttempt, DeliveryStatus, Endpoint, EndpointStats, EndpointSummary,
    EventTypeInfo, FannedOut, MAX_REGION_LEN, NewEndpoint, OperationalEvent, ResealConfig,
    ResealProgress, VERIFICATION_EVENT_TYPE, Verification, WebhookConfig, Webhooks,
    verification_answer,
};

pub use signature::{
    DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureError,
    SignedHeaders, Verifier, WebhookSecret, sign,
};
