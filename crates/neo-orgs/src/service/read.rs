//! Reads: one organization (cache first), by slug, many without N+1, summaries with counts
//! and the audit trail.

use super::OrganizationService;
use crate::store::{AuditEntry, OrganizationSummary};
use crate::{OrgError, Organization};
use neo_cache::Cache;
use neo_core::{OrganizationId, Slug};
use std::collections::HashMap;
use std::sync::Arc;

impl OrganizationService {
    /// An organization by id, from the cache when it holds it.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] (also for a deleted one); a database error.
    pub async fn get(&self, id: OrganizationId) -> Result<Organization, OrgError> {
        let Some(cache) = &self.inner.cache else {
            return self
                .inner
                .store
                .find(id, false)
                .await?
                .ok_or_else(|| OrgError::not_found("organization", id));
        };
        let tenant = self.inner.store.tenant()?;
        let store = Arc::clone(&self.inner.store);
        cache
            .get_or_load(&Self::cache_key(tenant, id), move || async move {
                super::within(tenant, async { store.find_to_cache(id).await }).await
            })
            .await?
            .ok_or_else(|| OrgError::not_found("organization", id))
    }

    /// An organization by slug.
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; a database error.
    pub async fn get_by_slug(&self, slug: &Slug) -> Result<Organization, OrgError> {
        self.inner
            .store
            .find_by_slug(slug)
            .await?
            .ok_or_else(|| OrgError::not_found("organization", slug.as_str()))
    }

    /// Organizations by id, aligned with `ids` (`None` for a missing or deleted one): the
    /// cache first, then one query for the misses.
    ///
    /// # Errors
    /// A database error.
    pub async fn get_many(
        &self,
        ids: &[OrganizationId],
    ) -> Result<Vec<Option<Organization>>, OrgError> {
        let Some(cache) = &self.inner.cache else {
            let mut found: HashMap<OrganizationId, Organization> = self
                .inner
                .store
                .find_many(ids)
                .await?
                .into_iter()
                .map(|org| (org.id, org))
                .collect();
            return Ok(ids.iter().map(|id| found.remove(id)).collect());
        };
        let tenant = self.inner.store.tenant()?;
        let keys: Vec<String> = ids.iter().map(|id| Self::cache_key(tenant, *id)).collect();
        let store = Arc::clone(&self.inner.store);
        let by_key: HashMap<String, OrganizationId> =
            keys.iter().cloned().zip(ids.iter().copied()).collect();
        let results = cache
            .get_or_load_many(&keys, move |missing: Vec<String>| async move {
                let ids: Vec<OrganizationId> = missing
                    .iter()
                    .filter_map(|k| by_key.get(k).copied())
                    .collect();
                let found =
                    super::within(tenant, async { store.find_many_to_cache(&ids).await }).await?;
                Ok::<_, OrgError>(
                    found
                        .into_iter()
                        .map(|org| (Self::cache_key(tenant, org.id), org))
                        .collect::<HashMap<_, _>>(),
                )
            })
            .await;
        results
            .into_iter()
            .map(|r| r.map_err(OrgError::from))
            .collect()
    }

    /// Organizations with the number of their domains and members, in one query.
    ///
    /// # Errors
    /// A database error.
    pub async fn summaries(
        &self,
        ids: &[OrganizationId],
    ) -> Result<Vec<OrganizationSummary>, OrgError> {
        self.inner.store.summaries(ids).await
    }

    /// The audit trail of an organization, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn audit_trail(&self, id: OrganizationId) -> Result<Vec<AuditEntry>, OrgError> {
        self.inner.store.audit_trail(id).await
    }
}
