//! Domain verification by DNS: claiming a domain issues a TXT record value (the
//! organization's random token for it, stored with its domains) and a claim that expires;
//! a neo-queue job ([`DomainVerification::register`] on the host's worker) reads the domain's
//! TXT records through a [`DomainResolver`] and marks the domain verified (its event and
//! audit record through the organization's save), retried with the queue's backoff until the
//! claim expires. A verified domain may let users with e-mail addresses at it join its
//! organization (opt-in per domain, with the configured role).

use crate::dns::DomainResolver;
use crate::members::{Memberships, within};
use crate::store::{ClaimStatement, DomainClaim};
use crate::{DomainRefusal, OrgError, OrganizationStore};
use neo_core::{DomainName, EmailAddress, HasErrorKind, OrganizationId, TenantId, UserId};
use neo_queue::{Job, JobError, NewJob, OnDuplicate, Queue, Worker};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The job kind of a domain's check.
pub const DOMAIN_VERIFICATION_JOB: &str = "neo_orgs.verify_domain";

/// The actor of the saves the verification job makes.
const ACTOR: &str = "neo_orgs:dns";

/// Settings of domain verification. Load with the rest of the host's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DomainVerificationConfig {
    /// How long a claim may be verified; past it, checks are refused
    /// ([`DomainRefusal::Expired`]) and the domain must be claimed again.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// Most checks of one claim by its job (the queue's backoff spaces them).
    pub max_attempts: i32,
    /// The role users get when they join through a verified domain.
    pub auto_join_role: String,
    /// Most organizations one user joins through one e-mail domain.
    pub max_auto_joins: u32,
}

impl Default for DomainVerificationConfig {
    fn default() -> Self {
        DomainVerificationConfig {
            claim_ttl: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 48,
            auto_join_role: "member".to_owned(),
            max_auto_joins: 20,
        }
    }
}

/// A claimed domain and the value to publish as its TXT record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IssuedClaim {
    /// The claim.
    pub claim: DomainClaim,
    /// The TXT record value to publish at the domain.
    pub txt_record: String,
}

/// What a verification job carries.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    organization: OrganizationId,
    domain: DomainName,
    tenant: Option<TenantId>,
}

/// Domain verification by DNS for the organizations of a [`Memberships`]. Cheap to clone.
#[derive(Clone)]
pub struct DomainVerification {
    inner: Arc<Inner>,
}

struct Inner {
    members: Memberships,
    queue: Queue,
    resolver: Arc<dyn DomainResolver>,
    config: DomainVerificationConfig,
}

impl std::fmt::Debug for DomainVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainVerification")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl DomainVerification {
    /// Verification of `members`' organizations' domains, enqueueing checks on `queue` and
    /// reading DNS through `resolver`.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a zero TTL or attempts, or an auto-join role that is not
    /// configured in the memberships.
    pub fn new(
        members: Memberships,
        queue: Queue,
        resolver: impl DomainResolver,
        config: DomainVerificationConfig,
    ) -> Result<Self, OrgError> {
        if config.claim_ttl.is_zero() || config.max_attempts < 1 {
            return Err(OrgError::invalid(
                "domain verification config",
                "claim_ttl and max_attempts must be above zero",
            ));
        }
        members.check_role(&config.auto_join_role)?;
        Ok(DomainVerification {
            inner: Arc::new(Inner {
                members,
                queue,
                resolver: Arc::new(resolver),
                config,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DomainVerificationConfig {
        &self.inner.config
    }

    /// Claims `domain` for `organization` (or claims it again, with a fresh expiry) and
    /// enqueues its check. Publish the returned TXT record value at the domain.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] for an organization that does not exist; [`OrgError::Invalid`]
    /// for too many domains; [`OrgError::AlreadyExists`] for a domain another organization
    /// claims or this one already verified; a database or queue error.
    pub async fn claim(
        &self,
        actor: &str,
        organization: OrganizationId,
        domain: DomainName,
    ) -> Result<IssuedClaim, OrgError> {
        let orgs = &self.inner.members.inner.orgs;
        let store = &self.inner.members.inner.store;
        let mut org = orgs.get(organization).await?;
        let held = org.domains().iter().find(|d| d.domain == domain).cloned();
        if held.as_ref().is_some_and(|d| d.verified_at.is_some()) {
            return Err(OrgError::already_exists("verified domain", domain.as_str()));
        }
        let ttl_secs = self.inner.config.claim_ttl.as_secs_f64();
        let claim = store
            .domain_claim(organization, &domain, ClaimStatement::Upsert { ttl_secs })
            .await?
            .ok_or_else(|| OrgError::not_found("organization", organization))?;
        let txt_record = match held {
            Some(held) => held.verification_token,
            None => {
                let added = org.add_domain(domain.clone()).map(|token| (token, org));
                let saved = match added {
                    Ok((token, org)) => orgs.save(actor, org).await.map(|_| token),
                    Err(e) => Err(e),
                };
                match saved {
                    Ok(token) => token,
                    Err(e) => {
                        if let Err(error) = store.delete_domain_claim(organization, &domain).await {
                            tracing::warn!(%error, "could not forget a refused domain claim");
                        }
                        return Err(e);
                    }
                }
            }
        };
        self.enqueue(organization, &domain).await?;
        Ok(IssuedClaim { claim, txt_record })
    }

    /// The claim of `domain` by `organization`.
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; a database error.
    pub async fn claim_of(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
    ) -> Result<DomainClaim, OrgError> {
        self.inner
            .members
            .inner
            .store
            .domain_claim(organization, domain, ClaimStatement::Get)
            .await?
            .ok_or_else(|| OrgError::not_found("domain claim", domain.as_str()))
    }

    /// Checks `domain`'s TXT records for its token now and, when one holds it, marks the
    /// domain verified (the organization's `organization.domain_verified` event and audit
    /// record, written with it). What the verification job runs; a verified claim is
    /// returned as it is.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] without a claim; [`OrgError::Domain`] with
    /// [`DomainRefusal::Expired`], [`TokenAbsent`](DomainRefusal::TokenAbsent) or the
    /// resolver's refusal (timeout, too large, lookup); a database error. Nothing is
    /// changed when it fails.
    pub async fn check(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
    ) -> Result<DomainClaim, OrgError> {
        let store = &self.inner.members.inner.store;
        let orgs = &self.inner.members.inner.orgs;
        let claim = self.claim_of(organization, domain).await?;
        if claim.verified_at.is_some() {
            return Ok(claim);
        }
        if claim.expired {
            return Err(OrgError::Domain(DomainRefusal::Expired));
        }
        let mut org = orgs.get(organization).await?;
        let held = org
            .domains()
            .iter()
            .find(|d| &d.domain == domain)
            .cloned()
            .ok_or_else(|| OrgError::not_found("domain", domain.as_str()))?;
        if held.verified_at.is_none() {
            let records = self.inner.resolver.txt_records(domain).await?;
            let token = held.verification_token.as_str();
            if !records.iter().any(|record| record.trim() == token) {
                return Err(OrgError::Domain(DomainRefusal::TokenAbsent));
            }
            org.verify_domain(domain, token)?;
            orgs.save(ACTOR, org).await?;
        }
        store
            .domain_claim(organization, domain, ClaimStatement::Verified)
            .await?
            .ok_or_else(|| OrgError::not_found("domain claim", domain.as_str()))
    }

    /// Lets users whose e-mail address is at `domain` (verified for `organization`) join it
    /// through [`join_by_email`](Self::join_by_email), or stops it.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] for a claim that does not exist or is not verified; a
    /// database error.
    pub async fn set_auto_join(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
        enabled: bool,
    ) -> Result<DomainClaim, OrgError> {
        self.inner
            .members
            .inner
            .store
            .domain_claim(organization, domain, ClaimStatement::AutoJoin(enabled))
            .await?
            .ok_or_else(|| OrgError::not_found("verified domain claim", domain.as_str()))
    }

    /// Adds `user` (whose verified e-mail address is `email`) with the configured role to
    /// every organization that verified the address's domain and opted in to auto-join;
    /// organizations they already belong to keep their role. Returns the organizations
    /// joined.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a full organization (those before it are joined); a
    /// database error.
    pub async fn join_by_email(
        &self,
        user: UserId,
        email: &EmailAddress,
    ) -> Result<Vec<OrganizationId>, OrgError> {
        let domain = email
            .as_str()
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .unwrap_or_default();
        let members = &self.inner.members;
        let found = members
            .inner
            .store
            .auto_join_organizations(&domain, self.inner.config.max_auto_joins)
            .await?;
        let mut joined = Vec::new();
        for organization in found {
            if members
                .inner
                .store
                .role_of(organization, user)
                .await?
                .is_some()
            {
                continue;
            }
            members
                .add(organization, user, &self.inner.config.auto_join_role)
                .await?;
            joined.push(organization);
        }
        Ok(joined)
    }

    /// `worker` with the handler of the verification jobs.
    #[must_use]
    pub fn register(&self, worker: Worker) -> Worker {
        let this = self.clone();
        worker.handle(DOMAIN_VERIFICATION_JOB, move |job| {
            let this = this.clone();
            // Boxed: the check's future is too deep for the compiler to prove `Send` inline.
            let run: std::pin::Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> =
                Box::pin(async move { this.run_job(job).await });
            run
        })
    }

    /// Runs one verification job: retried (with the queue's backoff) while the token is not
    /// published yet or DNS fails; an expired or vanished claim ends it.
    async fn run_job(&self, job: Job) -> Result<(), JobError> {
        let payload: Payload = serde_json::from_value(job.payload).map_err(JobError::permanent)?;
        let outcome = within(
            payload.tenant,
            self.check(payload.organization, &payload.domain),
        )
        .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(OrgError::Domain(refusal)) if refusal.is_retryable() => {
                Err(JobError::retry(refusal))
            }
            Err(e @ (OrgError::Domain(_) | OrgError::NotFound { .. } | OrgError::Core(_))) => {
                Err(JobError::permanent(e))
            }
            Err(e) if e.kind() == neo_core::ErrorKind::Validation => Err(JobError::permanent(e)),
            Err(e) => Err(JobError::retry(e)),
        }
    }

    async fn enqueue(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
    ) -> Result<(), OrgError> {
        let tenant = self.inner.members.inner.store.tenant()?;
        let payload = Payload {
            organization,
            domain: domain.clone(),
            tenant,
        };
        let mut job = NewJob::new(DOMAIN_VERIFICATION_JOB, &payload)
            .map_err(queue_error)?
            .max_attempts(self.inner.config.max_attempts);
        if let Some(tenant) = tenant {
            job = job.tenant_id(tenant);
        }
        let queue = &self.inner.queue;
        queue
            .enqueue(queue.db().pool(), job, OnDuplicate::Skip)
            .await
            .map_err(queue_error)?;
        Ok(())
    }
}

/// A queue failure, as the crate's error.
#[allow(
    clippy::needless_pass_by_value,
    reason = "called as `map_err(queue_error)`"
)]
pub(crate) fn queue_error(error: neo_queue::Error) -> OrgError {
    OrgError::Unavailable(format!("job queue: {error}"))
}
