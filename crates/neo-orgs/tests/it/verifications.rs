//! Background verification of organizations against PostgreSQL and a real job queue: the
//! review job moves a submission through `in_review` to the reviewer's verdict (or leaves it
//! for a person), each move with its event and audit record; moves the status does not
//! allow and bad input are refused with typed errors and change nothing. A verified decision
//! verifies the organization in the same transaction (a rejection does not); one that cannot
//! (the organization suspended or deleted meanwhile) writes nothing at all.

use crate::domains::queue;
use crate::service::Setup;
use neo_core::{ErrorKind, HasErrorKind, OrganizationId, Slug};
use neo_orgs::{
    DocumentReviewer, MembershipConfig, NewOrganization, OrgConfig, OrgError, OrgStatus,
    OrgVerification, OrgVerifications, ReviewFuture, Verdict, VerificationDocument,
    VerificationStatus,
};
use neo_queue::{Worker, WorkerConfig};
use std::time::Duration;

pg_contract_modes!(
    the_review_job_moves_submissions_to_a_verdict_with_events_and_audit,
    moves_the_status_does_not_allow_and_bad_input_change_nothing,
    a_verified_decision_verifies_the_organization_and_a_rejection_does_not,
    a_verified_decision_on_an_organization_suspended_or_deleted_meanwhile_writes_nothing,
);

/// Verifies a submission with a registry extract, rejects one without, leaves one with a
/// `manual` document to a person.
struct Rules;

impl DocumentReviewer for Rules {
    fn review<'a>(&'a self, verification: &'a OrgVerification) -> ReviewFuture<'a> {
        let kinds: Vec<&str> = verification
            .documents
            .iter()
            .map(|d| d.kind.as_str())
            .collect();
        Box::pin(async move {
            Ok(if kinds.contains(&"manual") {
                None
            } else if kinds.contains(&"registry_extract") {
                Some(Verdict::Verified)
            } else {
                Some(Verdict::Rejected {
                    reason: "no registry extract".to_owned(),
                })
            })
        })
    }
}

fn documents(kinds: &[&str]) -> Vec<VerificationDocument> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| VerificationDocument::new(format!("doc-{i}"), *kind))
        .collect()
}

async fn verifications(s: &Setup) -> OrgVerifications {
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    OrgVerifications::new(members, queue(s).await, Rules)
}

async fn org(s: &Setup, slug: &str) -> OrganizationId {
    s.orgs
        .create(
            "seed",
            NewOrganization::new(slug, Slug::parse(slug).unwrap()),
        )
        .await
        .unwrap()
        .id()
}

/// The statuses of a verification's audit records, as (from, to).
async fn moves(
    v: &OrgVerifications,
    id: uuid::Uuid,
) -> Vec<(Option<VerificationStatus>, VerificationStatus)> {
    v.history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.from, r.to))
        .collect()
}

async fn the_review_job_moves_submissions_to_a_verdict_with_events_and_audit(s: Setup) {
    use VerificationStatus::{InReview, Rejected, Submitted, Verified};
    let v = verifications(&s).await;
    let (good, bad, manual) = (
        org(&s, "good").await,
        org(&s, "bad").await,
        org(&s, "manual").await,
    );
    s.published().await;
    let good = v
        .submit("alice", good, documents(&["registry_extract", "id_card"]))
        .await
        .unwrap();
    let bad = v
        .submit("alice", bad, documents(&["id_card"]))
        .await
        .unwrap();
    let manual = v
        .submit("alice", manual, documents(&["manual"]))
        .await
        .unwrap();
    assert_eq!(good.status, Submitted);
    assert_eq!(
        good.documents[0],
        VerificationDocument::new("doc-0", "registry_extract")
    );
    let worker = v.register(Worker::new(
        queue(&s).await,
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::default()
        },
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let statuses = (
            v.get(good.id).await.unwrap().status,
            v.get(bad.id).await.unwrap().status,
            v.get(manual.id).await.unwrap().status,
        );
        if statuses == (Verified, Rejected, InReview) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(running.await.unwrap().unwrap().succeeded, 3);
    assert_eq!(
        moves(&v, good.id).await,
        vec![
            (None, Submitted),
            (Some(Submitted), InReview),
            (Some(InReview), Verified)
        ]
    );
    let history = v.history(bad.id).await.unwrap();
    assert_eq!(history[2].reason.as_deref(), Some("no registry extract"));
    assert_eq!(history[2].actor, "neo_orgs:review");
    assert_eq!(
        v.get(bad.id).await.unwrap().reason.as_deref(),
        Some("no registry extract")
    );
    // A person decides the one left in review.
    let decided = v
        .decide(
            "carol",
            manual.id,
            &Verdict::Rejected {
                reason: "blurry scan".to_owned(),
            },
        )
        .await
        .unwrap();
    assert_eq!(decided.status, Rejected);
    assert_eq!(v.history(manual.id).await.unwrap()[2].actor, "carol");
    let events: Vec<(String, String)> = s
        .published()
        .await
        .into_iter()
        .filter(|e| e.event_type().starts_with("organization.verification_"))
        .map(|e| (e.aggregate_id().to_owned(), e.event_type().to_owned()))
        .collect();
    let of = |org: OrganizationId| -> Vec<&str> {
        events
            .iter()
            .filter(|(id, _)| *id == org.to_string())
            .map(|(_, t)| t.as_str())
            .collect()
    };
    assert_eq!(
        of(good.organization),
        [
            "organization.verification_submitted",
            "organization.verification_in_review",
            "organization.verification_verified"
        ]
    );
    assert_eq!(
        of(manual.organization),
        [
            "organization.verification_submitted",
            "organization.verification_in_review",
            "organization.verification_rejected"
        ]
    );
}

async fn moves_the_status_does_not_allow_and_bad_input_change_nothing(s: Setup) {
    use VerificationStatus::{InReview, Submitted, Verified};
    let v = verifications(&s).await;
    let acme = org(&s, "acme").await;
    let submitted = v
        .submit("alice", acme, documents(&["registry_extract"]))
        .await
        .unwrap();
    s.published().await;
    // Straight to a verdict from `submitted`: refused.
    let refused = v
        .decide("carol", submitted.id, &Verdict::Verified)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            OrgError::VerificationTransition {
                from: "submitted",
                to: "verified",
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(refused.kind(), ErrorKind::Conflict);
    assert_eq!(v.get(submitted.id).await.unwrap().status, Submitted);
    v.start_review("carol", submitted.id).await.unwrap();
    let again = v.start_review("carol", submitted.id).await.unwrap_err();
    assert!(matches!(
        again,
        OrgError::VerificationTransition {
            from: "in_review",
            ..
        }
    ));
    let empty_reason = v
        .decide(
            "carol",
            submitted.id,
            &Verdict::Rejected {
                reason: " ".to_owned(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(empty_reason.kind(), ErrorKind::Validation);
    assert_eq!(v.get(submitted.id).await.unwrap().status, InReview);
    v.decide("carol", submitted.id, &Verdict::Verified)
        .await
        .unwrap();
    let after_end = v
        .decide(
            "carol",
            submitted.id,
            &Verdict::Rejected {
                reason: "late".to_owned(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(
        after_end,
        OrgError::VerificationTransition {
            from: "verified",
            ..
        }
    ));
    assert_eq!(v.get(submitted.id).await.unwrap().status, Verified);
    assert_eq!(
        v.history(submitted.id).await.unwrap().len(),
        3,
        "refusals are not audited"
    );
    let published = s.published().await;
    let types: Vec<&str> = published.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            "organization.verification_in_review",
            "organization.verified",
            "organization.verification_verified"
        ],
        "the moves and the organization's verification only"
    );
    // Bad input.
    for bad in [
        vec![],
        documents(&[""]),
        documents(&[" padded "]),
        documents(&["x"; 51]),
    ] {
        let e = v.submit("alice", acme, bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Validation, "{e:?}");
    }
    let unknown = v
        .submit("alice", OrganizationId::new(), documents(&["id_card"]))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    let missing = v
        .start_review("carol", uuid::Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert!(
        s.published().await.is_empty(),
        "nothing published by refusals"
    );
}

/// An in-review verification of a new organization `slug`.
async fn in_review(s: &Setup, v: &OrgVerifications, slug: &str) -> OrgVerification {
    let org = org(s, slug).await;
    let submitted = v
        .submit(
            "alice",
            org,
            documents(&["registry_extract", "articles_of_association"]),
        )
        .await
        .unwrap();
    v.start_review("carol", submitted.id).await.unwrap()
}

/// The organization as stored (read past any cache).
async fn stored(s: &Setup, id: OrganizationId) -> neo_orgs::Organization {
    use neo_orgs::OrganizationStore;
    s.pg_store().find(id, true).await.unwrap().unwrap()
}

async fn a_verified_decision_verifies_the_organization_and_a_rejection_does_not(s: Setup) {
    let v = verifications(&s).await;
    let good = in_review(&s, &v, "good").await;
    let bad = in_review(&s, &v, "bad").await;
    let (good_before, bad_before) = (
        stored(&s, good.organization).await,
        stored(&s, bad.organization).await,
    );
    assert_eq!(good_before.status(), OrgStatus::PendingVerification);
    assert!(good_before.verification().verified_at.is_none());
    s.published().await;

    v.decide("carol", good.id, &Verdict::Verified)
        .await
        .unwrap();
    v.decide(
        "carol",
        bad.id,
        &Verdict::Rejected {
            reason: "expired extract".to_owned(),
        },
    )
    .await
    .unwrap();

    // Verified: active, stamped, the documents' ids kept, one version on, audited as
    // `verify` by the decider.
    let good_after = stored(&s, good.organization).await;
    assert_eq!(good_after.status(), OrgStatus::Active);
    let verification = good_after.verification();
    assert!(verification.verified_at.is_some());
    assert_eq!(verification.documents, ["doc-0", "doc-1"]);
    assert_eq!(good_after.version(), good_before.version() + 1);
    let trail = s.orgs.audit_trail(good.organization).await.unwrap();
    let last = trail.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.action.as_str()),
        ("carol", "verify")
    );
    // Rejected: the organization is as it was.
    assert_eq!(stored(&s, bad.organization).await, bad_before);
    assert_eq!(s.orgs.audit_trail(bad.organization).await.unwrap().len(), 1);
    // The events, in the order of the transaction: the organization's, then the move's.
    let events: Vec<(String, String)> = s
        .published()
        .await
        .into_iter()
        .map(|e| (e.aggregate_id().to_owned(), e.event_type().to_owned()))
        .collect();
    let (good_id, bad_id) = (good.organization.to_string(), bad.organization.to_string());
    assert_eq!(
        events,
        [
            (good_id.clone(), "organization.verified".to_owned()),
            (good_id, "organization.verification_verified".to_owned()),
            (bad_id, "organization.verification_rejected".to_owned()),
        ]
    );
}

async fn a_verified_decision_on_an_organization_suspended_or_deleted_meanwhile_writes_nothing(
    s: Setup,
) {
    let v = verifications(&s).await;
    let suspended = in_review(&s, &v, "suspended").await;
    let deleted = in_review(&s, &v, "deleted").await;
    let mut org = stored(&s, suspended.organization).await;
    org.suspend("unpaid invoices").unwrap();
    s.orgs.save("admin", org).await.unwrap();
    let gone = stored(&s, deleted.organization).await;
    s.orgs
        .delete("admin", gone.id(), gone.version())
        .await
        .unwrap();
    let before = [
        stored(&s, suspended.organization).await,
        stored(&s, deleted.organization).await,
    ];
    s.published().await;

    // Suspended: `Organization::verify` refuses after the move's own writes ran in the
    // transaction; all of it is rolled back.
    let refused = v
        .decide("carol", suspended.id, &Verdict::Verified)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, OrgError::Transition { .. }),
        "{refused:?}"
    );
    // Deleted: not found.
    let missing = v
        .decide("carol", deleted.id, &Verdict::Verified)
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing:?}");

    // Nothing half-written: the organizations, the statuses, the histories, no event.
    let after = [
        stored(&s, suspended.organization).await,
        stored(&s, deleted.organization).await,
    ];
    assert_eq!(after, before);
    assert!(after.iter().all(|o| o.verification().verified_at.is_none()));
    assert_eq!(
        v.get(suspended.id).await.unwrap().status,
        VerificationStatus::InReview
    );
    assert_eq!(v.history(suspended.id).await.unwrap().len(), 2);
    assert!(s.published().await.is_empty(), "nothing published");
    // Restored, the deleted one's verification is where it was, and can be decided.
    s.orgs
        .restore("admin", gone.id(), before[1].version())
        .await
        .unwrap();
    assert_eq!(
        v.get(deleted.id).await.unwrap().status,
        VerificationStatus::InReview
    );
    assert_eq!(v.history(deleted.id).await.unwrap().len(), 2);
    v.decide("carol", deleted.id, &Verdict::Verified)
        .await
        .unwrap();
    assert_eq!(
        stored(&s, deleted.organization).await.status(),
        OrgStatus::Active
    );
}
