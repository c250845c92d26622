//! Background verification of organizations with documents: a submission (document ids
//! and kinds; the host keeps the documents) runs as a neo-queue job that moves it from
//! `submitted` to `in_review` and asks the host's [`DocumentReviewer`]; its verdict, or a
//! person's through [`OrgVerifications::decide`], ends it `verified` or `rejected`. Every
//! move is checked ([`OrgError::VerificationTransition`] otherwise), audited and published
//! (`organization.verification_<status>`) in one transaction. A move to `verified` verifies
//! the organization too ([`Organization::verify`] with the documents' ids: its row, its
//! audit record `verify` and its `organization.verified` event) in that same transaction;
//! `rejected` leaves the organization as it is.

use crate::members::{Memberships, within};
use crate::model::now;
use crate::store::{
    Move, OrgVerification, OrganizationChange, VerificationDocument, VerificationRecord,
    VerificationStatus,
};
use crate::{OrgError, Organization, OrganizationStore};
use neo_core::{OrganizationId, TenantId};
use neo_events::DomainEvent;
use neo_queue::{Job, JobError, NewJob, OnDuplicate, Queue, Worker};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use uuid::Uuid;

/// The job kind of a verification's review.
pub const VERIFICATION_REVIEW_JOB: &str = "neo_orgs.review_verification";

/// The actor of the moves the review job makes.
const ACTOR: &str = "neo_orgs:review";

/// Most documents of one submission.
pub const MAX_VERIFICATION_DOCUMENTS: usize = 50;

/// What a reviewer decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// The organization is verified.
    Verified,
    /// Refused, with the reason to show.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// What [`DocumentReviewer::review`] returns: a verdict, or `None` to leave the
/// verification in review for a person ([`OrgVerifications::decide`]).
pub type ReviewFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Verdict>, OrgError>> + Send + 'a>>;

/// Reviews a verification's documents (a KYB provider, an internal check). An error is
/// retried by the job with the queue's backoff.
pub trait DocumentReviewer: Send + Sync + 'static {
    /// The verdict on `verification`, or `None` for a manual review.
    fn review<'a>(&'a self, verification: &'a OrgVerification) -> ReviewFuture<'a>;
}

/// The reviewer that leaves every verification to a person.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManualReview;

impl DocumentReviewer for ManualReview {
    fn review<'a>(&'a self, _verification: &'a OrgVerification) -> ReviewFuture<'a> {
        Box::pin(async { Ok(None) })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    verification: Uuid,
    tenant: Option<TenantId>,
}

/// Verifications of the organizations of a [`Memberships`]. Cheap to clone.
#[derive(Clone)]
pub struct OrgVerifications {
    inner: Arc<Inner>,
}

struct Inner {
    members: Memberships,
    queue: Queue,
    reviewer: Arc<dyn DocumentReviewer>,
}

impl std::fmt::Debug for OrgVerifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrgVerifications").finish_non_exhaustive()
    }
}

impl OrgVerifications {
    /// Verifications of `members`' organizations, reviewed by jobs on `queue` through
    /// `reviewer`.
    pub fn new(members: Memberships, queue: Queue, reviewer: impl DocumentReviewer) -> Self {
        OrgVerifications {
            inner: Arc::new(Inner {
                members,
                queue,
                reviewer: Arc::new(reviewer),
            }),
        }
    }

    /// Submits `organization` for verification with `documents` (`submitted`, its event and
    /// audit record) and enqueues its review.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for no documents, more than [`MAX_VERIFICATION_DOCUMENTS`], or
    /// an id or kind that is empty or over 200 characters; [`OrgError::NotFound`] for an
    /// organization that does not exist; a database or queue error.
    pub async fn submit(
        &self,
        actor: &str,
        organization: OrganizationId,
        documents: Vec<VerificationDocument>,
    ) -> Result<OrgVerification, OrgError> {
        check_documents(&documents)?;
        let store = &self.inner.members.inner.store;
        let tenant = store.tenant()?;
        let verification = store
            .insert_verification(organization, &documents, actor, |v, from| {
                event(v, from, tenant)
            })
            .await?;
        let mut job = NewJob::new(
            VERIFICATION_REVIEW_JOB,
            &Payload {
                verification: verification.id,
                tenant,
            },
        )
        .map_err(crate::domain_verification::queue_error)?;
        if let Some(tenant) = tenant {
            job = job.tenant_id(tenant);
        }
        let queue = &self.inner.queue;
        queue
            .enqueue(queue.db().pool(), job, OnDuplicate::Skip)
            .await
            .map_err(crate::domain_verification::queue_error)?;
        Ok(verification)
    }

    /// A verification by id (of an organization not deleted).
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; a database error.
    pub async fn get(&self, id: Uuid) -> Result<OrgVerification, OrgError> {
        self.inner
            .members
            .inner
            .store
            .verification(id)
            .await?
            .ok_or_else(|| OrgError::not_found("verification", id))
    }

    /// A verification's audit records (each status move), oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn history(&self, id: Uuid) -> Result<Vec<VerificationRecord>, OrgError> {
        self.inner
            .members
            .inner
            .store
            .verification_history(id)
            .await
    }

    /// Moves a `submitted` verification to `in_review`.
    ///
    /// # Errors
    /// [`OrgError::VerificationTransition`] from another status; [`OrgError::NotFound`]; a
    /// database error.
    pub async fn start_review(&self, actor: &str, id: Uuid) -> Result<OrgVerification, OrgError> {
        self.move_to(actor, id, VerificationStatus::InReview, None)
            .await
    }

    /// Ends a verification `in_review` with `verdict`. [`Verdict::Verified`] verifies the
    /// organization in the same transaction ([`Organization::verify`] with the documents'
    /// ids, audited as `verify`, its events published); a rejection leaves it unverified.
    ///
    /// # Errors
    /// [`OrgError::VerificationTransition`] from another status; [`OrgError::Invalid`] for
    /// a rejection without a reason (or over 1000 characters); [`OrgError::NotFound`] for
    /// the verification, or for its organization deleted meanwhile;
    /// [`OrgError::Transition`] for a verdict `verified` on an organization that cannot be
    /// verified (suspended, archived); a database error. Nothing is written then.
    pub async fn decide(
        &self,
        actor: &str,
        id: Uuid,
        verdict: &Verdict,
    ) -> Result<OrgVerification, OrgError> {
        match verdict {
            Verdict::Verified => {
                self.move_to(actor, id, VerificationStatus::Verified, None)
                    .await
            }
            Verdict::Rejected { reason } => {
                let chars = reason.trim().chars().count();
                if chars == 0 || chars > 1000 {
                    return Err(OrgError::invalid(
                        "rejection reason",
                        "1 to 1000 characters",
                    ));
                }
                self.move_to(actor, id, VerificationStatus::Rejected, Some(reason))
                    .await
            }
        }
    }

    /// `worker` with the handler of the review jobs.
    #[must_use]
    pub fn register(&self, worker: Worker) -> Worker {
        let this = self.clone();
        worker.handle(VERIFICATION_REVIEW_JOB, move |job| {
            let this = this.clone();
            let run: Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>> =
                Box::pin(async move { this.run_job(job).await });
            run
        })
    }

    /// One review job: `submitted` → `in_review` (again after a retry: already there),
    /// then the reviewer's verdict, if it gives one.
    async fn run_job(&self, job: Job) -> Result<(), JobError> {
        let payload: Payload = serde_json::from_value(job.payload).map_err(JobError::permanent)?;
        within(payload.tenant, async {
            let mut verification = self.get(payload.verification).await.map_err(job_error)?;
            if verification.status == VerificationStatus::Submitted {
                verification = self
                    .start_review(ACTOR, verification.id)
                    .await
                    .map_err(job_error)?;
            }
            if verification.status != VerificationStatus::InReview {
                return Ok(());
            }
            let verdict = self
                .inner
                .reviewer
                .review(&verification)
                .await
                .map_err(JobError::retry)?;
            if let Some(verdict) = verdict {
                self.decide(ACTOR, verification.id, &verdict)
                    .await
                    .map_err(job_error)?;
            }
            Ok(())
        })
        .await
    }

    async fn move_to(
        &self,
        actor: &str,
        id: Uuid,
        to: VerificationStatus,
        reason: Option<&str>,
    ) -> Result<OrgVerification, OrgError> {
        let members = &self.inner.members.inner;
        let (store, orgs) = (&members.store, &members.orgs);
        let tenant = store.tenant()?;
        // A verified verification verifies its organization, with its documents, in the
        // move's transaction (the service's events for it, as a save publishes them).
        let verify = |org: &mut Organization, v: &OrgVerification| {
            org.verify(v.documents.iter().map(|d| d.id.clone()).collect())?;
            let events = orgs.notifications(org);
            org.updated_at = now();
            Ok(events)
        };
        let verifies = to == VerificationStatus::Verified;
        let change = Move {
            actor,
            to,
            reason,
            organization: verifies.then_some(&verify as &OrganizationChange<'_>),
        };
        let moved = store
            .move_verification(id, change, |v, from| event(v, from, tenant))
            .await?;
        if verifies {
            orgs.forget(&[moved.organization]).await;
            orgs.wrote().await;
        }
        Ok(moved)
    }
}

/// A job outcome for an error: a refused move or a missing verification ends the job.
fn job_error(error: OrgError) -> JobError {
    match error {
        OrgError::VerificationTransition { .. }
        | OrgError::NotFound { .. }
        | OrgError::Invalid { .. } => JobError::permanent(error),
        other => JobError::retry(other),
    }
}

fn check_documents(documents: &[VerificationDocument]) -> Result<(), OrgError> {
    if documents.is_empty() || documents.len() > MAX_VERIFICATION_DOCUMENTS {
        return Err(OrgError::invalid(
            "documents",
            format!("1 to {MAX_VERIFICATION_DOCUMENTS} documents"),
        ));
    }
    for document in documents {
        for (what, text) in [
            ("document id", &document.id),
            ("document kind", &document.kind),
        ] {
            let chars = text.chars().count();
            if chars == 0 || chars > 200 || text.trim() != text {
                return Err(OrgError::invalid(
                    what,
                    format!(
                        "{:?}: 1 to 200 characters without surrounding spaces",
                        text.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A move's event, on the organization's aggregate, naming the store's tenant (or the
/// organization as its tenant, as organization events do).
fn event(
    verification: &OrgVerification,
    from: Option<VerificationStatus>,
    tenant: Option<TenantId>,
) -> Result<DomainEvent, OrgError> {
    let payload = serde_json::json!({
        "verification_id": verification.id,
        "organization_id": verification.organization,
        "from": from,
        "status": verification.status,
        "reason": verification.reason,
        "documents": verification.documents.len(),
    });
    Ok(DomainEvent::new(
        &format!("organization.verification_{}", verification.status.as_str()),
        "organization",
        &verification.organization.to_string(),
        &payload,
    )?
    .tenant(tenant.unwrap_or_else(|| TenantId::from(verification.organization))))
}
