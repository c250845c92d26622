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
            return Ok(aligned(ids, self.inner.store.find_many(ids).await?));
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

/// `found` (in any order) aligned with `ids`: `None` where none was found, and for an id
/// repeated in `ids` after its first place. Looked up in a sorted index of `found` (its ids
/// and places): no hashing of 2,000 ids and no moving of organizations into a map and out
/// again for a 1,000-id read.
fn aligned(ids: &[OrganizationId], found: Vec<Organization>) -> Vec<Option<Organization>> {
    // Already in place (the ids asked in id order, as an `= ANY` index scan returns them, all
    // found): wrapped where they are, without moving each organization out and in again.
    if found.len() == ids.len() && found.iter().zip(ids).all(|(org, id)| org.id == *id) {
        return found.into_iter().map(Some).collect();
    }
    let mut index: Vec<(OrganizationId, usize)> = found
        .iter()
        .enumerate()
        .map(|(place, org)| (org.id, place))
        .collect();
    index.sort_unstable();
    let mut found: Vec<Option<Organization>> = found.into_iter().map(Some).collect();
    ids.iter()
        .map(|id| {
            let at = index.binary_search_by_key(id, |(id, _)| *id).ok()?;
            found.get_mut(index.get(at)?.1)?.take()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::aligned;
    use crate::{NewOrganization, Organization};
    use neo_core::{OrganizationId, Slug};

    fn org(name: &str) -> Organization {
        Organization::create(NewOrganization::new(name, Slug::slugify(name).unwrap())).unwrap()
    }

    #[test]
    fn aligned_places_each_found_one_once_and_none_for_the_rest() {
        let (a, b, c) = (org("Alpha"), org("Beta"), org("Gamma"));
        let missing = OrganizationId::new();
        let ids = [c.id(), missing, a.id(), c.id(), b.id()];
        // Found in another order than asked; `b` not found.
        let got = aligned(&ids, vec![a.clone(), c.clone()]);
        assert_eq!(got, [Some(c.clone()), None, Some(a.clone()), None, None]);
        assert!(aligned(&ids, Vec::new()).iter().all(Option::is_none));
        assert!(aligned(&[], vec![b.clone()]).is_empty());
        // All found, in the order asked (kept where they are) and in another one.
        let all = vec![a.clone(), b.clone(), c.clone()];
        let got = aligned(&[a.id(), b.id(), c.id()], all.clone());
        assert_eq!(got, [Some(a.clone()), Some(b.clone()), Some(c.clone())]);
        let got = aligned(&[b.id(), c.id(), a.id()], all);
        assert_eq!(got, [Some(b), Some(c), Some(a)]);
    }
}
