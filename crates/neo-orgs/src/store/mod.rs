//! Where organizations are kept: the [`OrganizationStore`] trait the service writes and reads
//! through, with [`PgOrganizationStore`] (the default) and [`InMemoryOrganizationStore`] (for
//! users' unit tests), which pass the same contract tests.

mod domain_claim;
mod invitation;
mod members_rls;
mod membership;
mod memory;
mod offboard;
mod postgres;
mod read_row;
mod tenant_mode;
mod verification;

pub(crate) use domain_claim::ClaimStatement;
pub use domain_claim::DomainClaim;
pub(crate) use invitation::{
    Change as InvitationChange, NewInvitation, Stored as StoredInvitation,
};
pub use invitation::{Invitation, InvitationStatus};
pub use membership::{Member, UserOrganization};
pub use memory::InMemoryOrganizationStore;
pub use offboard::OrganizationTenantData;
pub use postgres::PgOrganizationStore;
pub(crate) use verification::{Move, OrganizationChange};
pub use verification::{
    OrgVerification, VerificationDocument, VerificationRecord, VerificationStatus,
};

use crate::{OrgError, Organization};
use chrono::{DateTime, Utc};
use neo_core::{OrganizationId, Slug, TenantId, UserId};
use neo_db::MigrationReport;
use neo_events::DomainEvent;
use std::future::Future;
use std::pin::Pin;

/// What a store method returns: a boxed future, so the trait is usable as `dyn`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, OrgError>> + Send + 'a>>;

/// One audit record: who did what, with the organization before and after.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Who.
    pub actor: String,
    /// What (`create`, `update`, `delete`, `restore`, `verify` by a verified
    /// [`OrgVerification`]).
    pub action: String,
    /// The stored organization before, as JSON (`None` for a creation). The PostgreSQL store
    /// keeps only `after` in each record and reads `before` from the previous record of the
    /// same organization, which halves the audit's size and write cost.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
}

impl AuditEntry {
    /// An audit record (for stores other than the built-in ones).
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
        at: DateTime<Utc>,
    ) -> Self {
        AuditEntry {
            actor: actor.into(),
            action: action.into(),
            before,
            after,
            at,
        }
    }
}

/// An organization with the sizes of its related sets, read in one query.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OrganizationSummary {
    /// The organization.
    pub organization: Organization,
    /// How many domains it claims.
    pub domains: i64,
    /// How many members it has.
    pub members: i64,
}

impl OrganizationSummary {
    /// A summary (for stores other than the built-in ones).
    pub fn new(organization: Organization, domains: i64, members: i64) -> Self {
        OrganizationSummary {
            organization,
            domains,
            members,
        }
    }
}

/// One change for [`OrganizationStore::update`]: the organization as changed by its methods,
/// still carrying the version it was read at, and what to audit and publish with it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Write<'a> {
    /// Who.
    pub actor: &'a str,
    /// The audit action (`update`, `delete`, `restore`).
    pub action: &'a str,
    /// The organization; `version()` is the version the caller read.
    pub organization: &'a Organization,
    /// Its domain events, published only if the write happens.
    pub events: &'a [DomainEvent],
}

impl<'a> Write<'a> {
    /// A write (the service builds these; a custom store only reads them).
    pub fn new(
        actor: &'a str,
        action: &'a str,
        organization: &'a Organization,
        events: &'a [DomainEvent],
    ) -> Self {
        Write {
            actor,
            action,
            organization,
            events,
        }
    }

    /// Whether the domains changed, so the store must rewrite them.
    pub fn domains_changed(&self) -> bool {
        self.organization.changed.domains
    }
}

/// A search: organizations not deleted whose name or slug contains `text` (any case), or that
/// claim the domain `text`, by name then id, after a key, skipping `offset`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SearchQuery {
    /// Matched literally (no wildcards); `None` matches every organization.
    pub text: Option<String>,
    /// Only those after this `(name, id)`.
    pub after: Option<(String, OrganizationId)>,
    /// Most rows to return.
    pub limit: u32,
    /// Rows to skip first (offset pages; 0 for keyset pages).
    pub offset: u64,
}

impl SearchQuery {
    /// A query (the service builds these; a custom store only reads them).
    pub fn new(text: Option<String>, after: Option<(String, OrganizationId)>, limit: u32) -> Self {
        SearchQuery {
            text,
            after,
            limit,
            offset: 0,
        }
    }

    /// Skips `offset` rows first.
    #[must_use]
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }
}

/// Storage of organizations, with their audit trail and their events written atomically
/// with each change. [`OrganizationService`](crate::OrganizationService) adds validation,
/// caching, settings and notification on top; implement this to keep organizations
/// elsewhere, and run your store through the same contract tests as the built-in ones.
///
/// Every write is all-or-nothing for one organization: its row, its audit record and its
/// events together. A duplicate slug or domain is an error of kind `AlreadyExists`.
pub trait OrganizationStore: Send + Sync + 'static {
    /// Creates or upgrades the storage (tables, indexes).
    fn migrate(&self) -> StoreFuture<'_, MigrationReport>;

    /// Inserts new organizations (version 1) with a `create` audit record each, and `events`:
    /// all or nothing.
    fn insert<'a>(
        &'a self,
        actor: &'a str,
        organizations: &'a [Organization],
        events: &'a [DomainEvent],
    ) -> StoreFuture<'a, ()>;

    /// Applies each write whose organization's version is still the stored one, bumping it,
    /// with its audit record and its events; returns, per write, the new version,
    /// [`OrgError::Conflict`] for a stale version or [`OrgError::NotFound`]. An error of the
    /// whole call (a duplicate domain, the database) means nothing was written. The ids of one
    /// call are distinct.
    fn update<'a>(&'a self, writes: &'a [Write<'a>])
    -> StoreFuture<'a, Vec<Result<i64, OrgError>>>;

    /// An organization by id; a deleted one only when `include_deleted`.
    fn find(
        &self,
        id: OrganizationId,
        include_deleted: bool,
    ) -> StoreFuture<'_, Option<Organization>>;

    /// An organization (not deleted) by slug.
    fn find_by_slug<'a>(&'a self, slug: &'a Slug) -> StoreFuture<'a, Option<Organization>>;

    /// The organizations (not deleted) among `ids`, in any order, in one read.
    fn find_many<'a>(&'a self, ids: &'a [OrganizationId]) -> StoreFuture<'a, Vec<Organization>>;

    /// One page of a search.
    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Vec<Organization>>;

    /// How many organizations a search with this `text` matches, over all pages.
    fn count<'a>(&'a self, text: Option<&'a str>) -> StoreFuture<'a, i64>;

    /// The organizations (not deleted) among `ids`, with their domain and member counts.
    fn summaries<'a>(
        &'a self,
        ids: &'a [OrganizationId],
    ) -> StoreFuture<'a, Vec<OrganizationSummary>>;

    /// Adds a member or changes their role; refuses a new member beyond `max_members`
    /// ([`OrgError::Invalid`]); [`OrgError::NotFound`] for an unknown organization.
    fn add_member<'a>(
        &'a self,
        organization: OrganizationId,
        user: UserId,
        role: &'a str,
        max_members: u32,
    ) -> StoreFuture<'a, ()>;

    /// The audit trail of an organization, oldest first.
    fn audit_trail(&self, id: OrganizationId) -> StoreFuture<'_, Vec<AuditEntry>>;

    /// The tenant this store's next call on this task acts for: `None` for a store that
    /// is not tenant-isolated (the default). The service namespaces its cache keys with it
    /// and carries it to the tasks that write grouped saves.
    ///
    /// # Errors
    /// [`OrgError::Tenant`] when the store is tenant-isolated and the call has no tenant.
    fn tenant(&self) -> Result<Option<TenantId>, OrgError> {
        Ok(None)
    }

    /// Called by the service on the caller's task once a write through this store has
    /// returned: a store that reads from replicas records the write's position, so the
    /// caller's next reads see it (read-your-writes). The default does nothing.
    fn wrote(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// [`find`](Self::find) (not deleted) for filling the shared cache: a store that reads
    /// from replicas reads where every write made through it is visible, so no caller's
    /// write is hidden behind a stale cached copy. The default is `find`.
    fn find_to_cache(&self, id: OrganizationId) -> StoreFuture<'_, Option<Organization>> {
        self.find(id, false)
    }

    /// [`find_many`](Self::find_many) for filling the shared cache (see
    /// [`find_to_cache`](Self::find_to_cache)). The default is `find_many`.
    fn find_many_to_cache<'a>(
        &'a self,
        ids: &'a [OrganizationId],
    ) -> StoreFuture<'a, Vec<Organization>> {
        self.find_many(ids)
    }
}
