//! Edits of an organization's profile: its name, branding, legal details and metadata.

use super::{Branding, Legal, MAX_NAME_CHARS, Organization, check_text};
use crate::OrgError;
use neo_core::MetadataLimits;

impl Organization {
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
}
