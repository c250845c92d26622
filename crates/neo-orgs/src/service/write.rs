//! Writes: create and batch create, save and batch save (through the save queue), soft
//! delete and restore, members.

use super::OrganizationService;
use super::save_queue::write_in_parts;
use crate::model::now;
use crate::store::Write;
use crate::{NewOrganization, OrgError, Organization};
use neo_core::OrganizationId;
use std::collections::HashSet;

impl OrganizationService {
    /// Creates an organization; a taken slug is an error of kind `AlreadyExists`.
    ///
    /// # Errors
    /// Validation, duplicate slug, or a database error; nothing is written then.
    pub async fn create(
        &self,
        actor: &str,
        new: NewOrganization,
    ) -> Result<Organization, OrgError> {
        let mut created = self.batch_create(actor, vec![new]).await?;
        created
            .pop()
            .ok_or_else(|| OrgError::invalid("organization", "nothing created"))
    }

    /// Creates many organizations in one statement (rows, audit records and events): all or
    /// nothing.
    ///
    /// # Errors
    /// As [`create`](Self::create), for the first bad one; nothing is written then.
    pub async fn batch_create(
        &self,
        actor: &str,
        news: Vec<NewOrganization>,
    ) -> Result<Vec<Organization>, OrgError> {
        let mut orgs = Vec::with_capacity(news.len());
        for new in news {
            let org = Organization::create(new)?;
            self.check(&org, true).await?;
            orgs.push(org);
        }
        let mut events = Vec::new();
        for org in &mut orgs {
            events.extend(self.notifications(org));
        }
        self.inner.store.insert(actor, &orgs, &events).await?;
        self.wrote().await;
        Ok(orgs)
    }

    /// Saves an organization changed through its methods, if nobody saved it since it was
    /// read (its version); writes the audit record and its events in the same transaction.
    /// Returns it with its new version. Saves running at the same time share one statement
    /// ([`SaveConfig`](crate::SaveConfig)); the first save starts the workers that write them, on the current
    /// tokio runtime. A save whose caller stops waiting is still written.
    ///
    /// # Errors
    /// [`OrgError::Conflict`] for a stale version; [`OrgError::NotFound`]; a duplicate domain
    /// is an error of kind `AlreadyExists`; a domain count over the organization's settings,
    /// a bad tax id or metadata over the limits is [`OrgError::Invalid`]; a database error.
    /// Nothing is written then.
    pub async fn save(&self, actor: &str, org: Organization) -> Result<Organization, OrgError> {
        self.write(actor, org, "update").await
    }

    /// Saves many organizations, each against its own version, in one statement per
    /// [`SaveConfig::batch_rows`](crate::SaveConfig::batch_rows) (larger batches run as several statements at once): returns,
    /// aligned with `orgs`, each saved with its new version or why it was not (a stale
    /// version, a failed check, an id given twice). Each organization is saved or not on its
    /// own; only the JSON documents its methods changed are sent.
    ///
    /// # Errors
    /// Per organization, as [`save`](Self::save).
    pub async fn batch_save(
        &self,
        actor: &str,
        orgs: Vec<Organization>,
    ) -> Vec<Result<Organization, OrgError>> {
        let mut results: Vec<Option<Result<Organization, OrgError>>> = Vec::new();
        let mut ready = Vec::with_capacity(orgs.len());
        let mut seen = HashSet::with_capacity(orgs.len());
        for mut org in orgs {
            let checked = if seen.insert(org.id) {
                self.check(&org, false).await
            } else {
                Err(OrgError::invalid(
                    "organizations",
                    format!("{} is given more than once", org.id),
                ))
            };
            match checked {
                Ok(()) => {
                    let events = self.notifications(&mut org);
                    org.updated_at = now();
                    ready.push((results.len(), org, events));
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let writes: Vec<Write<'_>> = ready
            .iter()
            .map(|(_, org, events)| Write::new(actor, "update", org, events))
            .collect();
        let outcomes = write_in_parts(
            self.inner.store.as_ref(),
            &writes,
            self.inner.config.saves.batch_rows,
            self.inner.config.saves.concurrency,
        )
        .await;
        drop(writes);
        let mut saved_ids = Vec::new();
        for ((slot, org, _), outcome) in ready.into_iter().zip(outcomes) {
            results[slot] = Some(outcome.map(|version| {
                saved_ids.push(org.id);
                saved(org, version)
            }));
        }
        self.forget(&saved_ids).await;
        if !saved_ids.is_empty() {
            self.wrote().await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(OrgError::invalid("organization", "not saved"))))
            .collect()
    }

    /// Soft-deletes an organization (its slug stays reserved).
    ///
    /// # Errors
    /// As [`save`](Self::save); [`OrgError::Transition`] when already deleted.
    pub async fn delete(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
    ) -> Result<Organization, OrgError> {
        self.lifecycle(actor, id, version, "delete", Organization::mark_deleted)
            .await
    }

    /// Restores a soft-deleted organization.
    ///
    /// # Errors
    /// As [`save`](Self::save); [`OrgError::Transition`] when not deleted.
    pub async fn restore(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
    ) -> Result<Organization, OrgError> {
        self.lifecycle(actor, id, version, "restore", Organization::mark_restored)
            .await
    }

    /// Loads an organization (deleted too), applies `change` at the caller's `version` and
    /// writes it.
    async fn lifecycle(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
        action: &'static str,
        change: fn(&mut Organization) -> Result<(), OrgError>,
    ) -> Result<Organization, OrgError> {
        let mut org = self
            .inner
            .store
            .find(id, true)
            .await?
            .ok_or_else(|| OrgError::not_found("organization", id))?;
        org.version = version;
        change(&mut org)?;
        self.write(actor, org, action).await
    }

    /// Adds a member (or changes their role), within the organization's `max_members`.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for an empty role or a full organization;
    /// [`OrgError::NotFound`]; a database error.
    pub async fn add_member(
        &self,
        org: OrganizationId,
        user: neo_core::UserId,
        role: &str,
    ) -> Result<(), OrgError> {
        if role.trim().is_empty() || role.len() > 64 {
            return Err(OrgError::invalid("role", "1 to 64 characters"));
        }
        let organization = self
            .inner
            .store
            .find(org, false)
            .await?
            .ok_or_else(|| OrgError::not_found("organization", org))?;
        let settings = self.settings_of(&organization).await?;
        self.inner
            .store
            .add_member(org, user, role.trim(), settings.max_members)
            .await?;
        self.wrote().await;
        Ok(())
    }

    /// Lets the store record a write's position for the caller's read-your-writes. The
    /// write has happened: a failure here only costs the caller that guarantee until the
    /// replica catches up, so it is logged, not returned.
    pub(crate) async fn wrote(&self) {
        if let Err(error) = self.inner.store.wrote().await {
            tracing::warn!(%error, "could not record a write's position for read-your-writes");
        }
    }
}

/// `org` as written at `version`: nothing left to rewrite on its next save.
pub(super) fn saved(mut org: Organization, version: i64) -> Organization {
    org.version = version;
    org.clear_changes();
    org
}
