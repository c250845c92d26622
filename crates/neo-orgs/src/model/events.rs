//! The domain events an organization records with each change, for the service to write
//! through the outbox in the change's own transaction. Each names the organization as its
//! tenant; the service renames them for the tenant its store acts for, when it acts for one.

use super::{Organization, now};
use crate::OrgError;
use neo_core::TenantId;
use neo_events::DomainEvent;

impl Organization {
    /// The tenant its events belong to: the organization itself (an organization is a
    /// tenant of the services built on neo-commons), so webhook endpoints registered for
    /// this tenant receive its events and no other organization's, and their delivery jobs
    /// name it.
    pub fn tenant_id(&self) -> TenantId {
        TenantId::from(self.id)
    }

    pub(super) fn record(
        &mut self,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<(), OrgError> {
        let event = DomainEvent::new(event_type, "organization", &self.id.to_string(), payload)?
            .tenant(self.tenant_id());
        self.events.push(event);
        self.updated_at = now();
        Ok(())
    }

    /// The events recorded since the last call (the service takes them on save).
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.events)
    }
}
