//! Organizations for neo-commons: the entity with its business rules, and a service on
//! PostgreSQL that writes every change with its audit record and domain events (through the
//! neo-events outbox) in one transaction, caches reads in neo-cache, reads many without N+1
//! and searches with a trigram index and keyset pages.
//!
//! - [`Organization`]: validated fields (slug, domains, country, URLs, colors, metadata within
//!   limits), a status lifecycle (`pending_verification` → `active` ⇄ `suspended` →
//!   `archived`), domain claims verified by token; every change records a [`DomainEvent`].
//! - [`OrganizationService`]: create and batch create, get (cache first), get by slug,
//!   `get_many` (cache, then one query for the misses), save and batch save with an
//!   optimistic version (concurrent saves share one statement), soft delete and restore,
//!   search with keyset or offset pages, summaries with domain and member counts in one
//!   query, the audit trail.
//! - Parts a host can replace, each with a real default: the [`OrganizationStore`]
//!   ([`PgOrganizationStore`]: one schema, or one store for every tenant isolated by a schema
//!   per tenant or by row-level security, [`PgOrganizationStore::tenant_isolated`];
//!   [`InMemoryOrganizationStore`] for unit tests, passing the same contract tests), the cache, the [`SettingsResolver`]
//!   ([`ConfiguredSettings`]), the [`Notifier`] ([`WebhookNotifier`]) and the
//!   [`TaxIdValidator`] ([`TaxIdFormat`], called through a breaker and a timeout).
//! - [`Memberships`]: users (ids the host owns) in organizations with a role, roles mapped to
//!   permissions ([`MembershipConfig`]), `can()` answered from the cache, members and a
//!   user's organizations in keyset pages, `max_members` enforced; invitations by e-mail with
//!   hashed single-use tokens ([`InvitationToken`], refusals in [`InvitationRefusal`]).
//! - [`DomainVerification`]: domains claimed with a TXT record value, checked by a neo-queue
//!   job through a [`DomainResolver`] ([`HickoryResolver`] by default, feature `dns`) with
//!   retries and an expiry; verified domains can let users with matching e-mail addresses
//!   join (opt-in).
//! - [`OrgVerifications`]: verification with documents as a neo-queue job, `submitted` →
//!   `in_review` → `verified` / `rejected` through a [`DocumentReviewer`] or a person, each
//!   move checked, audited and published.
//! - [`http::router`] (feature `http`): the service as JSON endpoints with problem-details
//!   errors; [`http::members_router`] the memberships and invitations.
//!
//! [`DomainEvent`]: neo_events::DomainEvent
//!
//! # Features
//! | feature | what it adds |
//! |---|---|
//! | `http` | the axum router (`neo_orgs::http::router`) |
//! | `dns` (default) | [`HickoryResolver`], the default [`DomainResolver`] on hickory-resolver |

#![recursion_limit = "256"]

mod dns;
mod domain_verification;
mod error;
#[cfg(feature = "http")]
pub mod http;
mod invitations;
mod members;
mod model;
mod notify;
mod service;
mod settings;
pub mod store;
mod validate;
mod verifications;

#[cfg(feature = "dns")]
pub use dns::HickoryResolver;
pub use dns::{DnsConfig, DomainResolver, TxtFuture};
pub use domain_verification::{
    DOMAIN_VERIFICATION_JOB, DomainVerification, DomainVerificationConfig, IssuedClaim,
};
pub use error::{DomainRefusal, InvitationRefusal, OrgError};
pub use invitations::InvitationToken;
pub use members::{ALL_PERMISSIONS, MembershipConfig, Memberships};
pub use model::{
    Branding, Color, Legal, MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, NewOrganization, OrgDomain,
    OrgStatus, Organization, Verification,
};
pub use notify::{Notifier, WebhookNotifier};
pub use service::{OrgConfig, OrganizationService, SaveConfig, SearchPage};
pub use settings::{
    ConfiguredSettings, MAX_DOMAINS, OrgSettings, SettingsFuture, SettingsResolver,
};
pub use store::{
    AuditEntry, DomainClaim, InMemoryOrganizationStore, Invitation, InvitationStatus, Member,
    OrgVerification, OrganizationStore, OrganizationSummary, OrganizationTenantData,
    PgOrganizationStore, UserOrganization, VerificationDocument, VerificationRecord,
    VerificationStatus,
};
pub use validate::{TaxIdFormat, TaxIdFuture, TaxIdValidator};
pub use verifications::{
    DocumentReviewer, MAX_VERIFICATION_DOCUMENTS, ManualReview, OrgVerifications, ReviewFuture,
    VERIFICATION_REVIEW_JOB, Verdict,
};
