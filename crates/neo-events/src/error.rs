//! The crate's error.

/// Everything that can go wrong with events and the outbox (signatures have
/// [`SignatureError`](crate::SignatureError)).
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
    /// Strict mode ([`require_sealed`](crate::WebhookConfig::require_sealed)): endpoints still
    /// hold plain-text secrets or header values. Re-seal them
    /// ([`Webhooks::reseal`](crate::Webhooks::reseal)) before starting.
    #[cfg(feature = "webhooks")]
    #[error(
        "{rows} webhook endpoint(s) still hold plain-text secrets or header values; \
         re-seal them (Webhooks::reseal) before starting with require_sealed"
    )]
    PlainTextAtRest {
        /// Endpoints with at least one plain-text value.
        rows: u64,
    },
    /// An event's payload does not match the JSON Schema registered for its type and version
    /// ([`Webhooks::register_event_schema`](crate::Webhooks::register_event_schema)), or its
    /// type has schemas but none for its version: nothing was recorded.
    #[cfg(feature = "webhooks")]
    #[error("{event_type} version {version}: payload at {path:?} {message}")]
    SchemaViolation {
        /// The event type.
        event_type: String,
        /// The event's schema version.
        version: i32,
        /// The JSON Pointer of the offending value in the payload (`""` for the payload).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The job queue failed.
    #[cfg(feature = "webhooks")]
    #[error(transparent)]
    Queue(#[from] neo_queue::Error),
    /// A tenant-scoped call under row-level security had no tenant (neither given nor in
    /// the task's scope, [`neo_tenant::scope`]): refused before any query.
    #[error(transparent)]
    Tenant(#[from] neo_tenant::Error),
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
            #[cfg(feature = "webhooks")]
            EventError::PlainTextAtRest { .. } => neo_core::ErrorKind::Configuration,
            #[cfg(feature = "webhooks")]
            EventError::SchemaViolation { .. } => neo_core::ErrorKind::Validation,
            #[cfg(feature = "webhooks")]
            EventError::Queue(e) => e.kind(),
            EventError::Tenant(e) => e.kind(),
            EventError::Db(e) => e.kind(),
        }
    }
}
