//! The domain events an organization records with each change, for the service to write
//! through the outbox in the change's own transaction.

use super::{Organization, now};
use crate::OrgError;
use neo_events::DomainEvent;

impl Organization {
    pub(super) fn record(
        &mut self,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<(), OrgError> {
        let event = DomainEvent::new(event_type, "organization", &self.id.to_string(), payload)?;
        self.events.push(event);
        self.updated_at = now();
        Ok(())
    }

    /// The events recorded since the last call (the service takes them on save).
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.events)
    }
}
