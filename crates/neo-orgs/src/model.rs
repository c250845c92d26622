//! The organization entity and its business rules.

use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{
    CountryCode, DomainName, HttpsUrl, Metadata, MetadataLimits, OrganizationId, Slug, UserId,
};
use neo_events::DomainEvent;
use serde::{Deserialize, Serialize};

/// Longest name, display name and suspension reason, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// Where an organization stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgStatus {
    /// Created, waiting for its verification.
    PendingVerification,
    /// In good standing.
    Active,
    /// Blocked for a reason; can be reactivated.
    Suspended,
    /// Retired; read-only.
    Archived,
}

impl OrgStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrgStatus::PendingVerification => "pending_verification",
            OrgStatus::Active => "active",
            OrgStatus::Suspended => "suspended",
            OrgStatus::Archived => "archived",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for an unknown status.
    pub fn parse(text: &str) -> Result<Self, OrgError> {
        match text {
            "pending_verification" => Ok(OrgStatus::PendingVerification),
            "active" => Ok(OrgStatus::Active),
            "suspended" => Ok(OrgStatus::Suspended),
            "archived" => Ok(OrgStatus::Archived),
            other => Err(OrgError::invalid(
                "status",
                format!("{other:?} is not pending_verification, active, suspended or archived"),
            )),
        }
    }
}

/// Verification documents and when the organization was verified.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Verification {
    /// References to the documents checked (file ids, URLs).
    pub documents: Vec<String>,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
}

/// Legal identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Legal {
    /// Tax id as given.
    pub tax_id: Option<String>,
    /// Country of registration.
    pub country: Option<CountryCode>,
}

/// A `#rrggbb` color.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Color(String);

impl Color {
    /// Parses `#rrggbb` (case-insensitive; stored lowercase).
    ///
    /// # Errors
    /// [`OrgError::Invalid`] otherwise.
    pub fn parse(text: &str) -> Result<Self, OrgError> {
        let ok = text.len() == 7
            && text.starts_with('#')
            && text[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Color(text.to_ascii_lowercase()))
        } else {
            Err(OrgError::invalid(
                "color",
                format!("{:?} is not #rrggbb", truncate(text, 32)),
            ))
        }
    }

    /// `#rrggbb`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Color {
    type Error = OrgError;
    fn try_from(text: String) -> Result<Self, OrgError> {
        Color::parse(&text)
    }
}

impl From<Color> for String {
    fn from(color: Color) -> String {
        color.0
    }
}

/// Logo and colors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Branding {
    /// Logo image.
    pub logo_url: Option<HttpsUrl>,
    /// Main color.
    pub primary_color: Option<Color>,
    /// Accent color.
    pub secondary_color: Option<Color>,
}

/// A domain the organization claims, verified by publishing its token (DNS TXT record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgDomain {
    /// The domain.
    pub domain: DomainName,
    /// The token to publish.
    pub verification_token: String,
    /// When the token was seen.
    pub verified_at: Option<DateTime<Utc>>,
}

/// What an organization is created from; every field is already a valid value.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrganization {
    /// Its name.
    pub name: String,
    /// Its unique slug.
    pub slug: Slug,
    /// Shown instead of the name when set.
    pub display_name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The user to contact.
    pub primary_contact: Option<UserId>,
    /// Legal identity.
    pub legal: Legal,
    /// Website.
    pub website: Option<HttpsUrl>,
    /// Metadata.
    pub metadata: Metadata,
}

impl NewOrganization {
    /// An organization with a name and a slug and nothing else.
    pub fn new(name: impl Into<String>, slug: Slug) -> Self {
        NewOrganization {
            name: name.into(),
            slug,
            display_name: None,
            description: None,
            primary_contact: None,
            legal: Legal::default(),
            website: None,
            metadata: Metadata::empty(),
        }
    }
}

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

    fn record(&mut self, event_type: &str, payload: &serde_json::Value) -> Result<(), OrgError> {
        let event = DomainEvent::new(event_type, "organization", &self.id.to_string(), payload)?;
        self.events.push(event);
        self.updated_at = now();
        Ok(())
    }

    fn writable(&self) -> Result<(), OrgError> {
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

    /// Renames it.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a bad name; [`OrgError::Transition`] when archived or deleted.
    pub fn rename(&mut self, name: &str, display_name: Option<String>) -> Result<(), OrgError> {
        self.writable()?;
        check_text("name", name, MAX_NAME_CHARS, true)?;
        if let Some(display) = &display_name {
            check_text("display name", display, MAX_NAME_CHARS, true)?;
        }
        self.name = name.trim().to_owned();
        self.display_name = display_name;
        self.record(
            "organization.renamed",
            &serde_json::json!({ "name": self.name }),
        )
    }

    /// Replaces the branding.
    ///
    /// # Errors
    /// [`OrgError::Transition`] when archived or deleted.
    pub fn update_branding(&mut self, branding: Branding) -> Result<(), OrgError> {
        self.writable()?;
        self.branding = branding;
        self.changed.branding = true;
        self.record("organization.branding_updated", &serde_json::json!({}))
    }

    /// Replaces the legal details (country, tax id); saving checks the tax id with the
    /// service's validator.
    ///
    /// # Errors
    /// [`OrgError::Transition`] when archived or deleted.
    pub fn update_legal(&mut self, legal: Legal) -> Result<(), OrgError> {
        self.writable()?;
        self.legal = legal;
        self.changed.legal = true;
        self.record("organization.legal_updated", &serde_json::json!({}))
    }

    /// Merges a JSON patch (RFC 7386) into the metadata, within `limits`.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] when the result breaks the limits; [`OrgError::Transition`] when
    /// archived or deleted.
    pub fn merge_metadata(
        &mut self,
        patch: &serde_json::Value,
        limits: &MetadataLimits,
    ) -> Result<(), OrgError> {
        self.writable()?;
        self.metadata = self.metadata.merge(patch, limits)?;
        self.changed.metadata = true;
        self.record("organization.metadata_updated", &serde_json::json!({}))
    }

    /// Claims a domain; returns the token to publish for its verification.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] when already claimed here or over [`MAX_DOMAINS`](crate::MAX_DOMAINS) domains;
    /// [`OrgError::Transition`] when archived or deleted.
    pub fn add_domain(&mut self, domain: DomainName) -> Result<String, OrgError> {
        self.writable()?;
        if self.domains.iter().any(|d| d.domain == domain) {
            return Err(OrgError::invalid(
                "domain",
                format!(
                    "{} is already claimed by this organization",
                    domain.as_str()
                ),
            ));
        }
        if self.domains.len() >= crate::MAX_DOMAINS as usize {
            return Err(OrgError::invalid(
                "domain",
                format!("at most {} domains per organization", crate::MAX_DOMAINS),
            ));
        }
        let token = format!("neo-verify={}", uuid::Uuid::new_v4().simple());
        let payload = serde_json::json!({ "domain": domain });
        self.domains.push(OrgDomain {
            domain,
            verification_token: token.clone(),
            verified_at: None,
        });
        self.changed.domains = true;
        self.record("organization.domain_added", &payload)?;
        Ok(token)
    }

    /// Marks a claimed domain verified when `seen_token` is its token.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] for an unclaimed domain; [`OrgError::Invalid`] for a wrong
    /// token; [`OrgError::Transition`] when archived or deleted.
    pub fn verify_domain(&mut self, domain: &DomainName, seen_token: &str) -> Result<(), OrgError> {
        self.writable()?;
        let claimed = self
            .domains
            .iter_mut()
            .find(|d| &d.domain == domain)
            .ok_or_else(|| OrgError::not_found("domain", domain.as_str()))?;
        if claimed.verification_token != seen_token {
            return Err(OrgError::invalid(
                "domain token",
                "does not match the token issued for this domain",
            ));
        }
        claimed.verified_at = Some(now());
        self.changed.domains = true;
        self.record(
            "organization.domain_verified",
            &serde_json::json!({ "domain": domain }),
        )
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

    /// Forgets what changed since it was read, once it is stored: its next save rewrites
    /// neither its domains nor any JSON document until its methods change them again.
    pub(crate) fn clear_changes(&mut self) {
        self.changed = Changed::default();
    }

    /// The events recorded since the last call (the service takes them on save).
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.events)
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
    /// Its domains.
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
        let types: Vec<String> = o
            .take_events()
            .iter()
            .map(|e| e.event_type().to_owned())
            .collect();
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
        let mut o = org();
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

    #[test]
    fn domains_are_claimed_then_verified_with_their_token() {
        let mut o = org();
        let domain = DomainName::parse("acme.example").unwrap();
        let token = o.add_domain(domain.clone()).unwrap();
        assert!(o.add_domain(domain.clone()).is_err());
        assert!(o.verify_domain(&domain, "wrong").is_err());
        o.verify_domain(&domain, &token).unwrap();
        assert!(o.domains()[0].verified_at.is_some());
        let other = DomainName::parse("other.example").unwrap();
        assert!(matches!(
            o.verify_domain(&other, &token),
            Err(OrgError::NotFound { .. })
        ));
    }
}
