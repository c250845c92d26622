//! Background verification of organizations against PostgreSQL and a real job queue: the
//! review job moves a submission through `in_review` to the reviewer's verdict (or leaves it
//! for a person), each move with its event and audit record; moves the status does not
//! allow and bad input are refused with typed errors and change nothing.

use crate::domains::queue;
use crate::service::Setup;
use neo_core::{ErrorKind, HasErrorKind, OrganizationId, Slug};
use neo_orgs::{
    DocumentReviewer, MembershipConfig, NewOrganization, OrgConfig, OrgError, OrgVerification,
    OrgVerifications, ReviewFuture, Verdict, VerificationDocument, VerificationStatus,
};
use neo_queue::{Worker, WorkerConfig};
use std::time::Duration;

pg_contract_modes!(
    the_review_job_moves_submissions_to_a_verdict_with_events_and_audit,
    moves_the_status_does_not_allow_and_bad_input_change_nothing,
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
    assert_eq!(
        published.len(),
        2,
        "in_review and verified only: {published:?}"
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
