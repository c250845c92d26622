//! The in-memory store, for users' unit tests: the same rules as PostgreSQL (unique slugs and
//! domains, optimistic versions, all-or-nothing writes, audit records, events), no server.

use super::{AuditEntry, OrganizationSummary, SearchQuery, StoreFuture, Write};
use crate::{OrgError, Organization, OrganizationStore};
use neo_core::{OrganizationId, Slug, TenantId, UserId};
use neo_db::MigrationReport;
use neo_events::DomainEvent;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Organizations in process memory, for unit tests of code that uses
/// [`OrganizationService`](crate::OrganizationService): it passes the same contract tests as
/// [`PgOrganizationStore`](crate::PgOrganizationStore), and keeps the events it would have
/// written to the outbox for tests to read. Search sorts names by their bytes (PostgreSQL
/// uses the database's collation). Cheap to clone; clones share the data.
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), neo_orgs::OrgError> {
/// use neo_orgs::{InMemoryOrganizationStore, NewOrganization, OrgConfig, OrganizationService};
/// let store = InMemoryOrganizationStore::new();
/// let orgs = OrganizationService::with_store(store.clone(), None, OrgConfig::default())?;
/// let acme = orgs.create("alice", NewOrganization::new("Acme", neo_core::Slug::parse("acme")?)).await?;
/// assert_eq!(orgs.get(acme.id()).await?.name(), "Acme");
/// assert_eq!(store.events()[0].event_type(), "organization.created");
/// # Ok(()) }
/// ```
///
/// [`tenant_isolated`](Self::tenant_isolated) keeps each tenant's organizations apart, as the
/// PostgreSQL store does in either isolation mode: every call acts for the bound tenant
/// ([`for_tenant`](Self::for_tenant)) or the task's (`neo_tenant::scope`), and fails closed
/// without one.
#[derive(Debug, Clone, Default)]
pub struct InMemoryOrganizationStore {
    state: Arc<Mutex<Shards>>,
    /// Whether calls act for a tenant.
    isolated: bool,
    /// The tenant every call acts for, else the task's.
    tenant: Option<TenantId>,
}

/// The data of a store: one [`State`] without tenants, or one per tenant.
#[derive(Debug, Default)]
struct Shards {
    shared: State,
    tenants: HashMap<TenantId, State>,
}

/// The locked data of the acting tenant (or the only data, without tenants).
struct StateGuard<'a> {
    shards: MutexGuard<'a, Shards>,
    tenant: Option<TenantId>,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        match self.tenant.and_then(|t| self.shards.tenants.get(&t)) {
            Some(state) => state,
            None => &self.shards.shared,
        }
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        let shards = &mut *self.shards;
        match self.tenant {
            Some(tenant) => shards.tenants.entry(tenant).or_default(),
            None => &mut shards.shared,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    organizations: HashMap<OrganizationId, Organization>,
    members: HashMap<OrganizationId, HashMap<UserId, String>>,
    audit: Vec<(OrganizationId, AuditEntry)>,
    events: Vec<DomainEvent>,
}

impl State {
    fn slug_taken(&self, slug: &Slug, except: Option<OrganizationId>) -> bool {
        self.organizations
            .values()
            .any(|o| &o.slug == slug && Some(o.id) != except)
    }

    fn audit(
        &mut self,
        actor: &str,
        action: &str,
        before: Option<&Organization>,
        after: &Organization,
    ) {
        let json = |o: &Organization| serde_json::to_value(o).ok();
        self.audit.push((
            after.id,
            AuditEntry::new(
                actor,
                action,
                before.and_then(json),
                json(after),
                crate::model::now(),
            ),
        ));
    }
}

fn visible(org: &Organization) -> bool {
    org.deleted_at.is_none()
}

impl InMemoryOrganizationStore {
    /// An empty store.
    pub fn new() -> Self {
        InMemoryOrganizationStore::default()
    }

    /// An empty store that keeps each tenant's organizations apart.
    pub fn tenant_isolated() -> Self {
        InMemoryOrganizationStore {
            isolated: true,
            ..InMemoryOrganizationStore::default()
        }
    }

    /// This store acting for `tenant` on every call (a store that is not tenant-isolated
    /// ignores it). Shares the data with `self`.
    #[must_use]
    pub fn for_tenant(&self, tenant: TenantId) -> Self {
        InMemoryOrganizationStore {
            tenant: Some(tenant),
            ..self.clone()
        }
    }

    fn acting_tenant(&self) -> Result<Option<TenantId>, OrgError> {
        if !self.isolated {
            return Ok(None);
        }
        match self.tenant {
            Some(tenant) => Ok(Some(tenant)),
            None => Ok(Some(neo_tenant::require()?)),
        }
    }

    /// The acting tenant's data, locked; fails closed without a tenant.
    fn state(&self) -> Result<StateGuard<'_>, OrgError> {
        let tenant = self.acting_tenant()?;
        // A panicking test thread must not hide the data from the others.
        Ok(StateGuard {
            shards: neo_core::sync::lock(&self.state),
            tenant,
        })
    }

    /// The events written so far by every tenant (what the shared outbox would hold),
    /// oldest first within each tenant.
    pub fn events(&self) -> Vec<DomainEvent> {
        let shards = neo_core::sync::lock(&self.state);
        let mut events = shards.shared.events.clone();
        events.extend(
            shards
                .tenants
                .values()
                .flat_map(|s| s.events.iter().cloned()),
        );
        events
    }

    /// The events written since the last call, as a dispatcher would take them.
    pub fn take_events(&self) -> Vec<DomainEvent> {
        let mut shards = neo_core::sync::lock(&self.state);
        let mut events = std::mem::take(&mut shards.shared.events);
        for state in shards.tenants.values_mut() {
            events.append(&mut state.events);
        }
        events
    }

    fn insert_now(
        &self,
        actor: &str,
        organizations: &[Organization],
        events: &[DomainEvent],
    ) -> Result<(), OrgError> {
        let mut state = self.state()?;
        for (n, org) in organizations.iter().enumerate() {
            let repeated = organizations[..n].iter().any(|o| o.slug == org.slug);
            if repeated || state.slug_taken(&org.slug, None) {
                return Err(OrgError::already_exists("slug", org.slug.as_str()));
            }
            if state.organizations.contains_key(&org.id) {
                return Err(OrgError::already_exists("organization", org.id));
            }
        }
        for org in organizations {
            let mut stored = org.clone();
            stored.events.clear();
            stored.clear_changes();
            state.audit(actor, "create", None, &stored);
            state.organizations.insert(stored.id, stored);
        }
        state.events.extend_from_slice(events);
        Ok(())
    }

    fn update_now(&self, writes: &[Write<'_>]) -> Result<Vec<Result<i64, OrgError>>, OrgError> {
        let mut state = self.state()?;
        let outcomes: Vec<Result<i64, OrgError>> = writes
            .iter()
            .map(|w| {
                let org = w.organization;
                match state.organizations.get(&org.id) {
                    None => Err(OrgError::not_found("organization", org.id)),
                    Some(stored) if stored.version != org.version => Err(OrgError::Conflict {
                        id: org.id.to_string(),
                        expected: org.version,
                        actual: stored.version,
                    }),
                    Some(stored) => Ok(stored.version + 1),
                }
            })
            .collect();
        // Domains are unique across organizations (as PostgreSQL's unique index has them):
        // the claims as they will stand after this call, checked before anything is written.
        {
            let rewritten: HashSet<OrganizationId> = writes
                .iter()
                .zip(&outcomes)
                .filter(|(w, o)| o.is_ok() && w.domains_changed())
                .map(|(w, _)| w.organization.id)
                .collect();
            let mut owners: HashMap<&str, OrganizationId> = state
                .organizations
                .values()
                .filter(|o| !rewritten.contains(&o.id))
                .flat_map(|o| o.domains.iter().map(move |d| (d.domain.as_str(), o.id)))
                .collect();
            for write in writes
                .iter()
                .filter(|w| rewritten.contains(&w.organization.id))
            {
                let id = write.organization.id;
                for claim in &write.organization.domains {
                    if owners
                        .insert(claim.domain.as_str(), id)
                        .is_some_and(|owner| owner != id)
                    {
                        return Err(OrgError::already_exists("domain", claim.domain.as_str()));
                    }
                }
            }
        }
        for (write, outcome) in writes.iter().zip(&outcomes) {
            let Ok(version) = outcome else { continue };
            let before = state.organizations.get(&write.organization.id).cloned();
            let mut stored = write.organization.clone();
            stored.version = *version;
            stored.events.clear();
            stored.clear_changes();
            if !write.domains_changed()
                && let Some(before) = &before
            {
                stored.domains.clone_from(&before.domains);
            }
            state.audit(write.actor, write.action, before.as_ref(), &stored);
            state.events.extend_from_slice(write.events);
            state.organizations.insert(stored.id, stored);
        }
        Ok(outcomes)
    }

    fn search_now(&self, query: &SearchQuery) -> Result<Vec<Organization>, OrgError> {
        let state = self.state()?;
        let text = query.text.as_deref().map(str::to_lowercase);
        let mut found: Vec<&Organization> = state
            .organizations
            .values()
            .filter(|o| visible(o) && matches(o, text.as_deref()))
            .filter(|o| {
                query.after.as_ref().is_none_or(|(name, id)| {
                    (o.name.as_str(), uuid::Uuid::from(o.id))
                        > (name.as_str(), uuid::Uuid::from(*id))
                })
            })
            .collect();
        found.sort_by(|a, b| {
            (&a.name, uuid::Uuid::from(a.id)).cmp(&(&b.name, uuid::Uuid::from(b.id)))
        });
        Ok(found
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(query.limit as usize)
            .cloned()
            .collect())
    }
}

/// The search rule: name or slug containing the (lowercased) text, or a claimed domain equal
/// to it.
fn matches(org: &Organization, text: Option<&str>) -> bool {
    text.is_none_or(|text| {
        format!("{} {}", org.name, org.slug.as_str())
            .to_lowercase()
            .contains(text)
            || org.domains.iter().any(|d| d.domain.as_str() == text)
    })
}

fn ready<'a, T: Send + 'a>(result: Result<T, OrgError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl OrganizationStore for InMemoryOrganizationStore {
    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        ready(Ok(MigrationReport::default()))
    }

    fn insert<'a>(
        &'a self,
        actor: &'a str,
        organizations: &'a [Organization],
        events: &'a [DomainEvent],
    ) -> StoreFuture<'a, ()> {
        ready(self.insert_now(actor, organizations, events))
    }

    fn update<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> StoreFuture<'a, Vec<Result<i64, OrgError>>> {
        ready(self.update_now(writes))
    }

    fn find(
        &self,
        id: OrganizationId,
        include_deleted: bool,
    ) -> StoreFuture<'_, Option<Organization>> {
        ready(self.state().map(|state| {
            state
                .organizations
                .get(&id)
                .filter(|o| include_deleted || visible(o))
                .cloned()
        }))
    }

    fn find_by_slug<'a>(&'a self, slug: &'a Slug) -> StoreFuture<'a, Option<Organization>> {
        ready(self.state().map(|state| {
            state
                .organizations
                .values()
                .find(|o| &o.slug == slug && visible(o))
                .cloned()
        }))
    }

    fn find_many<'a>(&'a self, ids: &'a [OrganizationId]) -> StoreFuture<'a, Vec<Organization>> {
        ready(self.state().map(|state| {
            ids.iter()
                .filter_map(|id| state.organizations.get(id))
                .filter(|o| visible(o))
                .cloned()
                .collect()
        }))
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Vec<Organization>> {
        ready(self.search_now(query))
    }

    fn count<'a>(&'a self, text: Option<&'a str>) -> StoreFuture<'a, i64> {
        let text = text.map(str::to_lowercase);
        ready(self.state().map(|state| {
            let count = state
                .organizations
                .values()
                .filter(|o| visible(o) && matches(o, text.as_deref()))
                .count();
            i64::try_from(count).unwrap_or(i64::MAX)
        }))
    }

    fn summaries<'a>(
        &'a self,
        ids: &'a [OrganizationId],
    ) -> StoreFuture<'a, Vec<OrganizationSummary>> {
        let state = match self.state() {
            Ok(state) => state,
            Err(error) => return ready(Err(error)),
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let found = ids
            .iter()
            .filter_map(|id| state.organizations.get(id))
            .filter(|o| visible(o))
            .map(|o| {
                let members = state.members.get(&o.id).map_or(0, HashMap::len);
                OrganizationSummary::new(o.clone(), count(o.domains.len()), count(members))
            })
            .collect();
        ready(Ok(found))
    }

    fn add_member<'a>(
        &'a self,
        organization: OrganizationId,
        user: UserId,
        role: &'a str,
        max_members: u32,
    ) -> StoreFuture<'a, ()> {
        let mut state = match self.state() {
            Ok(state) => state,
            Err(error) => return ready(Err(error)),
        };
        if !state.organizations.get(&organization).is_some_and(visible) {
            return ready(Err(OrgError::not_found("organization", organization)));
        }
        let members = state.members.entry(organization).or_default();
        if !members.contains_key(&user) && members.len() >= max_members as usize {
            return ready(Err(OrgError::invalid(
                "member",
                format!("the organization already has its {max_members} members"),
            )));
        }
        members.insert(user, role.to_owned());
        ready(Ok(()))
    }

    fn audit_trail(&self, id: OrganizationId) -> StoreFuture<'_, Vec<AuditEntry>> {
        ready(self.state().map(|state| {
            state
                .audit
                .iter()
                .filter(|(org, _)| *org == id)
                .map(|(_, entry)| entry.clone())
                .collect()
        }))
    }

    fn tenant(&self) -> Result<Option<TenantId>, OrgError> {
        self.acting_tenant()
    }
}
