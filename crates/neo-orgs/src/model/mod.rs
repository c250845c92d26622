//! The organization entity and its business rules: the entity and what it is read from
//! (here), the values it is made of ([`values`]), its status lifecycle ([`lifecycle`]), its
//! profile edits ([`profile`]), its domain claims ([`domains`]) and the events every change
//! records ([`events`]).

mod domains;
mod events;
mod lifecycle;
mod profile;
mod values;

pub use values::{
    Branding, Color, Legal, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, NewOrganization, OrgDomain,
    OrgStatus, Verification,
};

use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{HttpsUrl, Metadata, MetadataLimits, OrganizationId, Slug, UserId};
use neo_events::DomainEvent;
use serde::{Deserialize, Serialize};

/// An organization. Fields change only through its methods, which check their rules and
/// record the domain events the service writes through the outbox with the change.
///
/// # Example
/// ```
/// use neo_core::Slug;
/// use neo_orgs::{NewOrganization, Organization, OrgStatus};
/// let mut org = Organization::create(NewOrganization::new("Acme", Slug::parse("acme")?))?;
/// assert_eq!(org.status(), OrgStatus::PendingVerification);
/// org.verify(vec!["kyc-123".into()])?;
/// org.suspend("unpaid invoices")?;
/// assert!(org.activate().is_ok());
/// assert_eq!(org.take_events().len(), 4); // created, verified, suspended, activated
/// # Ok::<(), neo_orgs::OrgError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub(crate) id: OrganizationId,
    pub(crate) name: String,
    pub(crate) slug: Slug,
    pub(crate) display_name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) status: OrgStatus,
    pub(crate) suspension_reason: Option<String>,
    pub(crate) verification: Verification,
    pub(crate) primary_contact: Option<UserId>,
    pub(crate) legal: Legal,
    pub(crate) branding: Branding,
    pub(crate) website: Option<HttpsUrl>,
    pub(crate) domains: Vec<OrgDomain>,
    #[serde(deserialize_with = "stored_metadata")]
    pub(crate) metadata: Metadata,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    pub(crate) version: i64,
    #[serde(skip)]
    pub(crate) events: Vec<DomainEvent>,
    /// What changed since it was read.
    #[serde(skip)]
    pub(crate) changed: Changed,
}

/// What of an [`Organization`] changed since it was read: saving rewrites its domains when
/// `domains` is set, sends only the JSON documents marked here (the stored ones stay for the
/// rest) and checks the tax id when `legal` changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) domains: bool,
    pub(crate) verification: bool,
    pub(crate) legal: bool,
    pub(crate) branding: bool,
    pub(crate) metadata: bool,
}

/// Limits for metadata read back from storage or a cache: it was checked against the
/// service's configured limits when written, which may exceed the defaults that `Metadata`'s
/// own `Deserialize` applies; only the nesting stays bounded (serde_json's own recursion
/// limit is 128).
const STORED_METADATA: MetadataLimits = MetadataLimits {
    max_bytes: usize::MAX,
    max_depth: 128,
    max_keys: usize::MAX,
    max_key_len: usize::MAX,
};

/// Metadata from storage, as written (see [`STORED_METADATA`]).
pub(crate) fn metadata_from_storage(value: serde_json::Value) -> Result<Metadata, OrgError> {
    Ok(Metadata::new(value, &STORED_METADATA)?)
}

fn stored_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Metadata::new(value, &STORED_METADATA).map_err(serde::de::Error::custom)
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

fn check_text(what: &'static str, text: &str, max: usize, required: bool) -> Result<(), OrgError> {
    let trimmed = text.trim();
    if required && trimmed.is_empty() {
        return Err(OrgError::invalid(what, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(OrgError::invalid(
            what,
            format!("longer than {max} characters"),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(OrgError::invalid(what, "contains control characters"));
    }
    Ok(())
}

impl Organization {
    /// A new organization, pending verification, version 1; records `organization.created`.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for an empty or too long name or description.
    pub fn create(new: NewOrganization) -> Result<Self, OrgError> {
        check_text("name", &new.name, MAX_NAME_CHARS, true)?;
        if let Some(display) = &new.display_name {
            check_text("display name", display, MAX_NAME_CHARS, true)?;
        }
        if let Some(description) = &new.description {
            check_text("description", description, MAX_DESCRIPTION_CHARS, false)?;
        }
        let now = now();
        let mut org = Organization {
            id: OrganizationId::new(),
            name: new.name.trim().to_owned(),
            slug: new.slug,
            display_name: new.display_name,
            description: new.description,
            status: OrgStatus::PendingVerification,
            suspension_reason: None,
            verification: Verification::default(),
            primary_contact: new.primary_contact,
            legal: new.legal,
            branding: Branding::default(),
            website: new.website,
            domains: Vec::new(),
            metadata: new.metadata,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            version: 1,
            events: Vec::new(),
            changed: Changed::default(),
        };
        let payload = serde_json::json!({ "name": org.name, "slug": org.slug });
        org.record("organization.created", &payload)?;
        Ok(org)
    }

    /// Forgets what changed since it was read, once it is stored: its next save rewrites
    /// neither its domains nor any JSON document until its methods change them again.
    pub(crate) fn clear_changes(&mut self) {
        self.changed = Changed::default();
    }

    /// Its id.
    pub fn id(&self) -> OrganizationId {
        self.id
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its slug.
    pub fn slug(&self) -> &Slug {
        &self.slug
    }
    /// Its display name.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }
    /// Its description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// Its status.
    pub fn status(&self) -> OrgStatus {
        self.status
    }
    /// Why it is suspended.
    pub fn suspension_reason(&self) -> Option<&str> {
        self.suspension_reason.as_deref()
    }
    /// Its verification.
    pub fn verification(&self) -> &Verification {
        &self.verification
    }
    /// Its primary contact.
    pub fn primary_contact(&self) -> Option<UserId> {
        self.primary_contact
    }
    /// Its legal identity.
    pub fn legal(&self) -> &Legal {
        &self.legal
    }
    /// Its branding.
    pub fn branding(&self) -> &Branding {
        &self.branding
    }
    /// Its website.
    pub fn website(&self) -> Option<&HttpsUrl> {
        self.website.as_ref()
    }
    /// Its domains, sorted by name.
    pub fn domains(&self) -> &[OrgDomain] {
        &self.domains
    }
    /// Its metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// When it was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// When it last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// When it was soft-deleted.
    pub fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.deleted_at
    }
    /// Its version (optimistic concurrency; bumped by every save).
    pub fn version(&self) -> i64 {
        self.version
    }
}

/// Now, to the microsecond (what PostgreSQL stores), so a value read back compares equal.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused() {
        assert!(
            Organization::create(NewOrganization::new(" ", Slug::parse("a-b").unwrap())).is_err()
        );
        assert!(
            Organization::create(NewOrganization::new(
                "x".repeat(201),
                Slug::parse("a-b").unwrap()
            ))
            .is_err()
        );
        assert!(
            Organization::create(NewOrganization::new(
                "bell\u{7}",
                Slug::parse("a-b").unwrap()
            ))
            .is_err()
        );
        assert!(Color::parse("#12345g").is_err());
        assert_eq!(Color::parse("#AABBCC").unwrap().as_str(), "#aabbcc");
        let mut o =
            Organization::create(NewOrganization::new("Acme", Slug::parse("acme").unwrap()))
                .unwrap();
        let limits = MetadataLimits {
            max_depth: 2,
            ..MetadataLimits::default()
        };
        assert!(
            o.merge_metadata(&serde_json::json!({ "a": { "b": { "c": 1 } } }), &limits)
                .is_err()
        );
        assert!(o.metadata().is_empty(), "unchanged after a refused merge");
    }
}
