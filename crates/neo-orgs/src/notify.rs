//! What the outside world hears of a change: a trait that turns an organization's domain
//! events into the notifications written with it, with the webhook outbox as the default.

use crate::Organization;
use neo_events::DomainEvent;

/// Decides which events of a change are published, and in what form, before they are
/// written to the outbox in the change's own transaction (from where
/// `neo_events::webhook::Webhooks::fan_out` delivers them to subscribed endpoints). Runs
/// synchronously inside the save, so it must not do I/O; work that should happen after
/// commit belongs in an outbox handler.
///
/// # Example
/// ```
/// use neo_events::DomainEvent;
/// use neo_orgs::{Notifier, Organization};
/// /// Keeps metadata edits internal.
/// struct PublicOnly;
/// impl Notifier for PublicOnly {
///     fn notifications(&self, _org: &Organization, events: Vec<DomainEvent>) -> Vec<DomainEvent> {
///         events.into_iter().filter(|e| e.event_type() != "organization.metadata_updated").collect()
///     }
/// }
/// ```
pub trait Notifier: Send + Sync + 'static {
    /// The events to publish for a change of `org` that recorded `events`.
    fn notifications(&self, org: &Organization, events: Vec<DomainEvent>) -> Vec<DomainEvent>;
}

/// The default: every domain event is published as recorded, naming the organization as its
/// tenant (webhook endpoints without a tenant receive every organization's events; an
/// endpoint registered for the tenant with an organization's id receives only that
/// organization's).
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookNotifier;

impl Notifier for WebhookNotifier {
    fn notifications(&self, _org: &Organization, events: Vec<DomainEvent>) -> Vec<DomainEvent> {
        events
    }
}
