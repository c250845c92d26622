//! The values an organization is made of: its status, legal identity, branding, domain
//! claims and what it is created from.

use super::truncate;
use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{CountryCode, DomainName, HttpsUrl, Metadata, Slug, UserId};
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
