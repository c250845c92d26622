//! Memberships and roles: users (ids the host owns) belong to organizations with a role,
//! roles map to permissions ([`MembershipConfig`]), and [`Memberships::can`] answers from
//! the cache, which every membership change invalidates. An organization's members and a
//! user's organizations are one query each, in keyset pages ([`CursorPage`]) with signed
//! cursors.

use crate::store::{Member, UserOrganization};
use crate::{OrgError, OrganizationService, OrganizationStore, PgOrganizationStore};
use neo_cache::{Cache, HybridCache};
use neo_core::pagination::CursorPage;
use neo_core::{CursorCodec, OrganizationId, TenantId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// The permission that grants every other one.
pub const ALL_PERMISSIONS: &str = "*";

/// Roles and their permissions, and the page size of member lists. Load with the rest of
/// the host's settings, e.g. `NEO_ORGS_MEMBERS__MAX_PAGE=200`.
///
/// # Example
/// ```
/// use neo_orgs::MembershipConfig;
/// let config: MembershipConfig = serde_json::from_str(
///     r#"{"roles": {"owner": ["*"], "billing": ["invoices:read"]}}"#,
/// )?;
/// assert!(config.roles["billing"].contains("invoices:read"));
/// assert_eq!(config.max_page, MembershipConfig::default().max_page);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembershipConfig {
    /// The permissions of each role; a role holding [`ALL_PERMISSIONS`] may do anything.
    /// Members get only roles named here.
    pub roles: BTreeMap<String, BTreeSet<String>>,
    /// Most rows of one page of members or organizations.
    pub max_page: u32,
    /// How long an invitation stays acceptable.
    #[serde(with = "humantime_serde")]
    pub invitation_ttl: std::time::Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        let set = |permissions: &[&str]| permissions.iter().map(|p| (*p).to_owned()).collect();
        MembershipConfig {
            roles: BTreeMap::from([
                ("owner".to_owned(), set(&[ALL_PERMISSIONS])),
                (
                    "admin".to_owned(),
                    set(&[
                        "organization:read",
                        "organization:update",
                        "members:read",
                        "members:invite",
                        "members:remove",
                        "domains:manage",
                    ]),
                ),
                (
                    "member".to_owned(),
                    set(&["organization:read", "members:read"]),
                ),
            ]),
            max_page: 100,
            invitation_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Memberships of the organizations of an [`OrganizationService`], kept by its
/// [`PgOrganizationStore`] (the same tables, the same tenant isolation). Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, outbox: neo_events::Outbox) -> Result<(), neo_orgs::OrgError> {
/// use neo_core::{CursorCodec, UserId};
/// use neo_orgs::{MembershipConfig, Memberships, OrgConfig, OrganizationService, PgOrganizationStore};
/// let config = OrgConfig::default();
/// let store = PgOrganizationStore::new(&db, outbox, &config.schema)?;
/// let orgs = OrganizationService::with_store(store.clone(), None, config)?;
/// let cursors = CursorCodec::new(b"a key of at least thirty-two bytes!!".to_vec())?;
/// let members = Memberships::new(orgs, store, None, MembershipConfig::default(), cursors)?;
/// # let (org, user) = (neo_core::OrganizationId::new(), UserId::new());
/// members.add(org, user, "admin").await?;
/// assert!(members.can(user, org, "members:invite").await?);
/// let page = members.members(org, None, 50).await?;
/// assert_eq!(page.items[0].user, user);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Memberships {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) orgs: OrganizationService,
    pub(crate) store: PgOrganizationStore,
    cache: Option<HybridCache<String>>,
    roles: HashMap<String, HashSet<String>>,
    pub(crate) config: MembershipConfig,
    cursors: CursorCodec,
}

impl std::fmt::Debug for Memberships {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memberships")
            .field("config", &self.inner.config)
            .field("cached", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

/// What a page cursor holds: whose list it pages (an organization or a user), the last
/// key, and the tenant it was made for.
#[derive(Serialize, Deserialize)]
struct Position {
    of: Uuid,
    after: Uuid,
    tenant: Option<Uuid>,
}

impl Memberships {
    /// Memberships of `orgs`' organizations in `store` (the store `orgs` runs on),
    /// caching roles in `cache` when given, signing page cursors with `cursors`.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a zero `max_page` or a role name that is empty or longer
    /// than 64 characters.
    pub fn new(
        orgs: OrganizationService,
        store: PgOrganizationStore,
        cache: Option<HybridCache<String>>,
        config: MembershipConfig,
        cursors: CursorCodec,
    ) -> Result<Self, OrgError> {
        if config.max_page == 0 {
            return Err(OrgError::invalid("max_page", "must be at least 1"));
        }
        if let Some(bad) = config.roles.keys().find(|r| !role_name_ok(r)) {
            return Err(OrgError::invalid(
                "role",
                format!("{bad:?}: a role is 1 to 64 characters without surrounding spaces"),
            ));
        }
        let roles = config
            .roles
            .iter()
            .map(|(role, permissions)| (role.clone(), permissions.iter().cloned().collect()))
            .collect();
        Ok(Memberships {
            inner: Arc::new(Inner {
                orgs,
                store,
                cache,
                roles,
                config,
                cursors,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &MembershipConfig {
        &self.inner.config
    }

    /// The role cache, when there is one.
    pub fn cache(&self) -> Option<&HybridCache<String>> {
        self.inner.cache.as_ref()
    }

    /// Whether `role` grants `permission` (by the configured roles; an unknown role grants
    /// nothing).
    pub fn role_allows(&self, role: &str, permission: &str) -> bool {
        self.inner.roles.get(role).is_some_and(|granted| {
            granted.contains(permission) || granted.contains(ALL_PERMISSIONS)
        })
    }

    /// Whether `user` may do `permission` in `organization`: their role, from the cache
    /// when it holds it (a non-member is remembered too, for the cache's negative TTL), and
    /// the configured permissions of that role.
    ///
    /// # Errors
    /// [`OrgError::Tenant`] without a tenant in a tenant-isolated store; a database or
    /// cache error.
    pub async fn can(
        &self,
        user: UserId,
        organization: OrganizationId,
        permission: &str,
    ) -> Result<bool, OrgError> {
        Ok(self
            .role(organization, user)
            .await?
            .is_some_and(|role| self.role_allows(&role, permission)))
    }

    /// The role of `user` in `organization`, `None` for a non-member (cache first).
    ///
    /// # Errors
    /// As [`can`](Self::can).
    pub async fn role(
        &self,
        organization: OrganizationId,
        user: UserId,
    ) -> Result<Option<String>, OrgError> {
        let Some(cache) = &self.inner.cache else {
            return self.inner.store.role_of(organization, user).await;
        };
        let tenant = self.inner.store.tenant()?;
        let store = self.inner.store.clone();
        Ok(cache
            .get_or_load(&cache_key(tenant, organization, user), move || {
                within(
                    tenant,
                    async move { store.role_of(organization, user).await },
                )
            })
            .await?)
    }

    /// Adds `user` to `organization` with `role`, or changes their role, within the
    /// organization's `max_members` (its settings), and forgets the cached role.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a role that is not configured or a full organization;
    /// [`OrgError::NotFound`] for an organization that does not exist (or is deleted); a
    /// database error.
    pub async fn add(
        &self,
        organization: OrganizationId,
        user: UserId,
        role: &str,
    ) -> Result<(), OrgError> {
        self.check_role(role)?;
        let max_members = self.inner.orgs.max_members_of(organization).await?;
        self.inner
            .store
            .add_member(organization, user, role, max_members)
            .await?;
        self.changed(organization, user).await;
        Ok(())
    }

    /// Removes `user` from `organization` and forgets the cached role.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] when they are not a member; a database error.
    pub async fn remove(&self, organization: OrganizationId, user: UserId) -> Result<(), OrgError> {
        if !self.inner.store.remove_member(organization, user).await? {
            return Err(OrgError::not_found(
                "member",
                format!("{user} of {organization}"),
            ));
        }
        self.changed(organization, user).await;
        Ok(())
    }

    /// One page of `organization`'s members, by user id: the first with `cursor` `None`,
    /// then each page's `next_cursor`. One query per page.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a zero limit or a cursor this service did not make (or made
    /// for another list); [`OrgError::NotFound`] for a cursor made for another tenant; a
    /// database error. An organization that does not exist has no members.
    pub async fn members(
        &self,
        organization: OrganizationId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<CursorPage<Member>, OrgError> {
        let limit = self.limit(limit)?;
        let tenant = self.inner.store.tenant()?;
        let of = Uuid::from(organization);
        let after = self
            .position(cursor, of, tenant)?
            .map(UserId::from_uuid)
            .transpose()?;
        let mut items = self
            .inner
            .store
            .members_page(organization, after, limit + 1)
            .await?;
        let next_cursor = self.next(&mut items, limit, of, tenant, |m| m.user.into())?;
        Ok(CursorPage { items, next_cursor })
    }

    /// One page of `user`'s organizations (not deleted), by organization id, with their
    /// name, slug and the user's role. One query per page.
    ///
    /// # Errors
    /// As [`members`](Self::members).
    pub async fn organizations_of(
        &self,
        user: UserId,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<CursorPage<UserOrganization>, OrgError> {
        let limit = self.limit(limit)?;
        let tenant = self.inner.store.tenant()?;
        let of = Uuid::from(user);
        let after = self
            .position(cursor, of, tenant)?
            .map(OrganizationId::from_uuid)
            .transpose()?;
        let mut items = self
            .inner
            .store
            .organizations_page(user, after, limit + 1)
            .await?;
        let next_cursor = self.next(&mut items, limit, of, tenant, |o| o.organization.into())?;
        Ok(CursorPage { items, next_cursor })
    }

    /// Refuses a role that is not configured.
    pub(crate) fn check_role(&self, role: &str) -> Result<(), OrgError> {
        if self.inner.roles.contains_key(role) {
            return Ok(());
        }
        Err(OrgError::invalid(
            "role",
            format!(
                "{:?} is not a configured role; configured: {}",
                role.chars().take(64).collect::<String>(),
                self.inner
                    .config
                    .roles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// After a membership changed: forget the cached role (here and, through the cache's
    /// backplane, in other instances) and record the write for read-your-writes. The change
    /// has happened; a failure here is logged.
    pub(crate) async fn changed(&self, organization: OrganizationId, user: UserId) {
        if let Err(error) = self.inner.store.wrote().await {
            tracing::warn!(%error, "could not record a write's position for read-your-writes");
        }
        let Some(cache) = &self.inner.cache else {
            return;
        };
        match self.inner.store.tenant() {
            Ok(tenant) => {
                if let Err(error) = cache.remove(&cache_key(tenant, organization, user)).await {
                    tracing::warn!(%error, "could not evict a cached role");
                }
            }
            Err(error) => tracing::warn!(%error, "could not evict a cached role"),
        }
    }

    fn limit(&self, limit: u32) -> Result<u32, OrgError> {
        if limit == 0 {
            return Err(OrgError::invalid("limit", "must be at least 1"));
        }
        Ok(limit.min(self.inner.config.max_page))
    }

    /// The key a page continues after, from a cursor made for the list of `of` in `tenant`.
    fn position(
        &self,
        cursor: Option<&str>,
        of: Uuid,
        tenant: Option<TenantId>,
    ) -> Result<Option<Uuid>, OrgError> {
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        let position: Position = self
            .inner
            .cursors
            .decode(cursor)
            .map_err(|_| OrgError::invalid("cursor", "not a cursor of this service's lists"))?;
        if position.tenant != tenant.map(TenantId::into_uuid) {
            return Err(OrgError::not_found("cursor", cursor));
        }
        if position.of != of {
            return Err(OrgError::invalid("cursor", "made for another list"));
        }
        Ok(Some(position.after))
    }

    /// Cuts `items` (fetched `limit + 1`) to the page and makes the next page's cursor.
    fn next<T>(
        &self,
        items: &mut Vec<T>,
        limit: u32,
        of: Uuid,
        tenant: Option<TenantId>,
        key: impl Fn(&T) -> Uuid,
    ) -> Result<Option<String>, OrgError> {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        match items.last().filter(|_| more) {
            None => Ok(None),
            Some(last) => Ok(Some(self.inner.cursors.encode(&Position {
                of,
                after: key(last),
                tenant: tenant.map(TenantId::into_uuid),
            })?)),
        }
    }
}

fn role_name_ok(role: &str) -> bool {
    !role.is_empty() && role.chars().count() <= 64 && role.trim() == role
}

/// The cache key of a role: namespaced by the tenant in a tenant-isolated store.
fn cache_key(tenant: Option<TenantId>, organization: OrganizationId, user: UserId) -> String {
    match tenant {
        Some(tenant) => format!("member:{tenant}:{organization}:{user}"),
        None => format!("member:{organization}:{user}"),
    }
}

/// Runs `work` in `tenant`'s scope when there is one (a cache fill on another task).
pub(crate) async fn within<F: std::future::Future>(tenant: Option<TenantId>, work: F) -> F::Output {
    match tenant {
        Some(tenant) => neo_tenant::scope(tenant, work).await,
        None => work.await,
    }
}
