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
//! - [`Webhooks`]: event types, endpoints (per tenant, rate limit, headers, secret rotation)
//!   and subscriptions in PostgreSQL; [`Webhooks::fan_out`] turns dispatched events into
//!   deliveries and neo-queue jobs in one transaction; [`Webhooks::handle`] registers the
//!   delivery handler on a neo-queue worker: signed POSTs over a pooled reqwest client (no
//!   redirects, capped answers, SSRF guard), a Svix-like retry schedule that honours
//!   `Retry-After`, `410 Gone` disabling the endpoint, per-endpoint circuit breaker and rate
//!   limit, dead letters with replay, and [`OperationalEvent`]s.
//!
//! [Standard Webhooks v1]: https://www.standardwebhooks.com/

mod event;
mod outbox;
mod signature;
mod ssrf;
mod webhook;

pub use event::{DomainEvent, MAX_TYPE_LEN};
pub use outbox::{EventBus, Outbox, OutboxConfig};
pub use ssrf::AddressPolicy;
pub use webhook::{
    Delivery, DeliveryStatus, Endpoint, EventTypeInfo, NewEndpoint, OperationalEvent,
    WebhookConfig, Webhooks,
};

pub use signature::{
    DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureError,
    SignedHeaders, Verifier, WebhookSecret, sign,
};

/// Everything that can go wrong with events and the outbox (signatures have
/// [`SignatureError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// An event, name or setting was rejected before anything was written.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A dispatch handler failed; its events stay pending.
    #[error("event handler failed: {0}")]
    Handler(String),
    /// Nothing with this id exists.
    #[error("{what} {id} does not exist")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The job queue failed.
    #[error(transparent)]
    Queue(#[from] neo_queue::Error),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] neo_db::Error),
}

impl neo_core::HasErrorKind for EventError {
    fn kind(&self) -> neo_core::ErrorKind {
        match self {
            EventError::Invalid { .. } => neo_core::ErrorKind::Validation,
            EventError::Handler(_) => neo_core::ErrorKind::Internal,
            EventError::NotFound { .. } => neo_core::ErrorKind::NotFound,
            EventError::Queue(e) => e.kind(),
            EventError::Db(e) => e.kind(),
        }
    }
}
