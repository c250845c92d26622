//! An organization's status lifecycle (`pending_verification` → `active` ⇄ `suspended` →
//! `archived`) and its soft deletion.

use super::{MAX_NAME_CHARS, OrgStatus, Organization, check_text, now};
use crate::OrgError;

impl Organization {
    pub(super) fn writable(&self) -> Result<(), OrgError> {
        if self.deleted_at.is_some() {
            return Err(OrgError::transition(
                self.status,
                "change a deleted organization",
            ));
        }
        if self.status == OrgStatus::Archived {
            return Err(OrgError::transition(
                self.status,
                "change an archived organization",
            ));
        }
        Ok(())
    }

    /// Marks it verified (from pending verification, or again to add documents) and active.
    ///
    /// # Errors
    /// [`OrgError::Transition`] from suspended, archived or deleted.
    pub fn verify(&mut self, documents: Vec<String>) -> Result<(), OrgError> {
        self.writable()?;
        if self.status == OrgStatus::Suspended {
            return Err(OrgError::transition(self.status, "verify"));
        }
        for doc in &documents {
            check_text("verification document", doc, MAX_NAME_CHARS, true)?;
        }
        self.verification.documents.extend(documents);
        self.verification.verified_at = Some(now());
        self.changed.verification = true;
        self.status = OrgStatus::Active;
        self.record(
            "organization.verified",
            &serde_json::json!({ "documents": self.verification.documents.len() }),
        )
    }

    /// Activates a suspended or verified organization.
    ///
    /// # Errors
    /// [`OrgError::Transition`] when not verified, archived or deleted.
    pub fn activate(&mut self) -> Result<(), OrgError> {
        self.writable()?;
        if self.verification.verified_at.is_none() {
            return Err(OrgError::transition(
                self.status,
                "activate before verification",
            ));
        }
        if self.status == OrgStatus::Active {
            return Ok(());
        }
        self.status = OrgStatus::Active;
        self.suspension_reason = None;
        self.record("organization.activated", &serde_json::json!({}))
    }

    /// Suspends it with a reason.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for an empty reason; [`OrgError::Transition`] when archived,
    /// deleted or already suspended.
    pub fn suspend(&mut self, reason: &str) -> Result<(), OrgError> {
        self.writable()?;
        check_text("suspension reason", reason, MAX_NAME_CHARS, true)?;
        if self.status == OrgStatus::Suspended {
            return Err(OrgError::transition(self.status, "suspend"));
        }
        self.status = OrgStatus::Suspended;
        self.suspension_reason = Some(reason.trim().to_owned());
        self.record(
            "organization.suspended",
            &serde_json::json!({ "reason": reason.trim() }),
        )
    }

    /// Archives it; nothing changes it afterwards.
    ///
    /// # Errors
    /// [`OrgError::Transition`] when already archived or deleted.
    pub fn archive(&mut self) -> Result<(), OrgError> {
        self.writable()?;
        self.status = OrgStatus::Archived;
        self.record("organization.archived", &serde_json::json!({}))
    }

    pub(crate) fn mark_deleted(&mut self) -> Result<(), OrgError> {
        if self.deleted_at.is_some() {
            return Err(OrgError::transition(
                self.status,
                "delete a deleted organization",
            ));
        }
        self.deleted_at = Some(now());
        self.record("organization.deleted", &serde_json::json!({}))
    }

    pub(crate) fn mark_restored(&mut self) -> Result<(), OrgError> {
        if self.deleted_at.is_none() {
            return Err(OrgError::transition(
                self.status,
                "restore an organization that is not deleted",
            ));
        }
        self.deleted_at = None;
        self.record("organization.restored", &serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewOrganization;
    use neo_core::Slug;

    fn org() -> Organization {
        Organization::create(NewOrganization::new("Acme", Slug::parse("acme").unwrap())).unwrap()
    }

    #[test]
    fn lifecycle_rules_hold() {
        let mut o = org();
        assert!(o.activate().is_err(), "not verified yet");
        o.verify(vec!["kyc".into()]).unwrap();
        assert_eq!(o.status(), OrgStatus::Active);
        assert!(o.suspend("  ").is_err());
        o.suspend("fraud check").unwrap();
        assert!(o.suspend("again").is_err());
        assert!(
            o.verify(vec![]).is_err(),
            "a suspended org is not re-verified"
        );
        o.activate().unwrap();
        o.archive().unwrap();
        assert!(o.rename("New", None).is_err());
        assert!(o.archive().is_err());
        let events = o.take_events();
        let tenant = o.tenant_id();
        assert_eq!(tenant.into_uuid(), o.id().into_uuid());
        assert!(
            events.iter().all(|e| e.tenant_id() == Some(tenant)),
            "every event names the organization as its tenant"
        );
        let types: Vec<String> = events.iter().map(|e| e.event_type().to_owned()).collect();
        assert_eq!(
            types,
            [
                "organization.created",
                "organization.verified",
                "organization.suspended",
                "organization.activated",
                "organization.archived"
            ]
        );
        assert!(o.take_events().is_empty());
    }
}
