//! Checks the outbox runs on events before recording them
//! ([`Outbox::with_check`]), such as the webhooks' event type schemas.

use super::Outbox;
use crate::{DomainEvent, EventError};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// Something that accepts or refuses events before [`Outbox::publish`],
/// [`Outbox::publish_many`] and [`Outbox::publish_idempotent`] record them: a refused event
/// records nothing of its batch. `Webhooks` (feature `webhooks`) is one: it checks payloads
/// against their event type's JSON Schema.
pub trait PublishCheck: Send + Sync + std::fmt::Debug {
    /// Accepts `events`, or refuses them with the error the publish call returns.
    fn check<'a>(&'a self, events: &'a [DomainEvent]) -> BoxFuture<'a, Result<(), EventError>>;
}

impl Outbox {
    /// This outbox with `check` run on every event `publish`, `publish_many` and
    /// `publish_idempotent` are given, before their statement. The publish CTEs
    /// ([`publish_cte`](Self::publish_cte)) build SQL only: check their events yourself.
    /// Without a check (the default), publishing runs nothing more.
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(outbox: neo_events::Outbox, webhooks: neo_events::Webhooks) {
    /// // Payloads must match their event type's schema (Webhooks::register_event_schema).
    /// let outbox = outbox.with_check(std::sync::Arc::new(webhooks));
    /// # let _ = outbox; }
    /// ```
    #[must_use]
    pub fn with_check(mut self, check: Arc<dyn PublishCheck>) -> Self {
        self.check = Some(check);
        self
    }

    /// Runs the check, if there is one.
    pub(super) async fn check_before_publish(
        &self,
        events: &[DomainEvent],
    ) -> Result<(), EventError> {
        match &self.check {
            Some(check) => check.check(events).await,
            None => Ok(()),
        }
    }
}
