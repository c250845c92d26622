//! Search: organizations by name, slug or domain, in keyset (cursor) or offset pages.

use super::OrganizationService;
use crate::store::SearchQuery;
use crate::{OrgError, Organization};
use neo_core::{OrganizationId, TenantId};
use uuid::Uuid;

/// One page of search results, with the cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchPage {
    /// The organizations, by name then id.
    pub items: Vec<Organization>,
    /// Pass back to get the next page; `None` on the last (and for offset pages).
    pub next_cursor: Option<String>,
    /// The offset of the next page, for offset pages; `None` on the last.
    pub next_offset: Option<u64>,
    /// The number of matches, when asked for.
    pub total: Option<i64>,
}

impl OrganizationService {
    /// Organizations whose name or slug contains `text` (trigram index), or that claim the
    /// domain `text`; by name, `limit` per page, after `cursor`. Counts the matches only when
    /// `count` is set.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a cursor this service did not make, a zero limit or a text
    /// over 200 characters; a database error.
    pub async fn search(
        &self,
        text: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
        count: bool,
    ) -> Result<SearchPage, OrgError> {
        let tenant = self.inner.store.tenant()?;
        let after = cursor.map(|c| decode_cursor(c, tenant)).transpose()?;
        self.search_page(text, limit, Paging::After(after), count)
            .await
    }

    /// [`search`](Self::search) by offset: skips `offset` matches. Keyset pages (cursors)
    /// stay fast however deep they go; an offset page reads the rows it skips, so prefer
    /// cursors for deep pages.
    ///
    /// # Errors
    /// As [`search`](Self::search).
    pub async fn search_offset(
        &self,
        text: Option<&str>,
        offset: u64,
        limit: u32,
        count: bool,
    ) -> Result<SearchPage, OrgError> {
        self.search_page(text, limit, Paging::Offset(offset), count)
            .await
    }

    async fn search_page(
        &self,
        text: Option<&str>,
        limit: u32,
        paging: Paging,
        count: bool,
    ) -> Result<SearchPage, OrgError> {
        if limit == 0 {
            return Err(OrgError::invalid("limit", "must be at least 1"));
        }
        let limit = limit.min(self.inner.config.max_page);
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = text
            && t.chars().count() > 200
        {
            return Err(OrgError::invalid(
                "search text",
                "longer than 200 characters",
            ));
        }
        let (after, offset, keyset) = match paging {
            Paging::After(after) => (after, 0, true),
            Paging::Offset(offset) => (None, offset, false),
        };
        let tenant = self.inner.store.tenant()?;
        let query = SearchQuery::new(text.map(str::to_owned), after, limit + 1).with_offset(offset);
        let mut items = self.inner.store.search(&query).await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = more
            .then(|| items.last().map(|o| encode_cursor(&o.name, o.id, tenant)))
            .flatten()
            .filter(|_| keyset);
        let next_offset = (more && !keyset).then(|| offset + u64::from(limit));
        let total = if count {
            Some(self.inner.store.count(text).await?)
        } else {
            None
        };
        Ok(SearchPage {
            items,
            next_cursor,
            next_offset,
            total,
        })
    }
}

/// Where a search page starts.
enum Paging {
    /// After this `(name, id)` key (keyset), or at the start.
    After(Option<(String, OrganizationId)>),
    /// After skipping this many matches.
    Offset(u64),
}

/// A keyset cursor: the last `(name, id)` of a page, and in a tenant-isolated service the
/// tenant it was made for.
fn encode_cursor(name: &str, id: OrganizationId, tenant: Option<TenantId>) -> String {
    use base64::Engine;
    let key = match tenant {
        Some(tenant) => serde_json::json!([name, id, tenant]),
        None => serde_json::json!([name, id]),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_string())
}

/// The key of a cursor made for `tenant`; a cursor made for another tenant (or for none in a
/// tenant-isolated service) is [`OrgError::NotFound`]: it names nothing this tenant has.
fn decode_cursor(
    cursor: &str,
    tenant: Option<TenantId>,
) -> Result<(String, OrganizationId), OrgError> {
    use base64::Engine;
    let bad = || OrgError::invalid("cursor", "not a cursor from this service's search");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let (name, id, made_for): (String, Uuid, Option<Uuid>) =
        match serde_json::from_slice::<(String, Uuid, Uuid)>(&bytes) {
            Ok((name, id, made_for)) => (name, id, Some(made_for)),
            Err(_) => {
                let (name, id): (String, Uuid) =
                    serde_json::from_slice(&bytes).map_err(|_| bad())?;
                (name, id, None)
            }
        };
    if made_for != tenant.map(TenantId::into_uuid) {
        return Err(OrgError::not_found("cursor", cursor));
    }
    Ok((name, OrganizationId::from_uuid(id).map_err(|_| bad())?))
}
