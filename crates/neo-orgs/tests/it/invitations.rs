//! Invitations against PostgreSQL and Redis: invite, accept (the membership in the same
//! transaction), revoke and resend, each with its event; forged, expired, used and revoked
//! tokens refused with their own error and nothing changed.

use crate::service::{Isolation, Setup};
use neo_core::{EmailAddress, ErrorKind, HasErrorKind, OrganizationId, Slug, UserId};
use neo_orgs::{
    ConfiguredSettings, InvitationRefusal, InvitationStatus, MembershipConfig, Memberships,
    NewOrganization, OrgConfig, OrgError, OrgSettings,
};
use std::time::Duration;

postgres_modes!(
    an_accepted_invitation_makes_a_member_once_with_events,
    forged_expired_used_and_revoked_tokens_are_refused_and_change_nothing,
);

fn email(text: &str) -> EmailAddress {
    EmailAddress::parse(text).unwrap()
}

fn refusal(e: OrgError) -> InvitationRefusal {
    match e {
        OrgError::Invitation(refusal) => refusal,
        other => panic!("an invitation refusal, got {other:?}"),
    }
}

/// The invitation events published since the last call, as (type, invitation status).
async fn invitation_events(s: &Setup) -> Vec<(String, String)> {
    s.published()
        .await
        .into_iter()
        .filter(|e| e.event_type().starts_with("organization.invitation_"))
        .map(|e| {
            assert!(e.payload().get("token").is_none(), "no token in events");
            (
                e.event_type().to_owned(),
                e.payload()["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn an_accepted_invitation_makes_a_member_once_with_events(s: Setup) {
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let org = s
        .orgs
        .create(
            "seed",
            NewOrganization::new("Invites", Slug::parse("invites").unwrap()),
        )
        .await
        .unwrap();
    s.published().await;
    let (invitation, token) = members
        .invite("alice", org.id(), &email("Bob@Example.com"), "admin")
        .await
        .unwrap();
    assert_eq!(invitation.status, InvitationStatus::Pending);
    assert_eq!(invitation.email.as_str(), "Bob@example.com");
    assert!(invitation.expires_at > chrono::Utc::now() + chrono::Duration::days(6));
    assert_eq!(members.invitation(invitation.id).await.unwrap(), invitation);
    let bob = UserId::new();
    assert!(
        !members.can(bob, org.id(), "members:invite").await.unwrap(),
        "cached as a non-member"
    );
    let accepted = members.accept(token.expose(), bob).await.unwrap();
    assert_eq!(accepted.status, InvitationStatus::Accepted);
    assert_eq!(accepted.accepted_by, Some(bob));
    assert!(
        members.can(bob, org.id(), "members:invite").await.unwrap(),
        "the cached answer was invalidated"
    );
    assert_eq!(
        members.role(org.id(), bob).await.unwrap().as_deref(),
        Some("admin")
    );
    assert_eq!(
        invitation_events(&s).await,
        vec![
            (
                "organization.invitation_created".to_owned(),
                "pending".to_owned()
            ),
            (
                "organization.invitation_accepted".to_owned(),
                "accepted".to_owned()
            ),
        ]
    );
    // Single use: a second accept (by anyone) is refused and changes nothing.
    let carol = UserId::new();
    let again = members.accept(token.expose(), carol).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert_eq!(refusal(again), InvitationRefusal::Used);
    assert_eq!(members.role(org.id(), carol).await.unwrap(), None);
    assert_eq!(
        members
            .members(org.id(), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(invitation_events(&s).await.is_empty());

    // Revoke and resend publish their events; a resend replaces the token.
    let (second, old_token) = members
        .invite("alice", org.id(), &email("dan@example.com"), "member")
        .await
        .unwrap();
    let (resent, new_token) = members.resend(second.id).await.unwrap();
    assert!(resent.expires_at >= second.expires_at);
    assert_eq!(
        refusal(members.accept(old_token.expose(), carol).await.unwrap_err()),
        InvitationRefusal::Forged
    );
    let revoked = members.revoke(second.id).await.unwrap();
    assert_eq!(revoked.status, InvitationStatus::Revoked);
    assert_eq!(
        refusal(members.accept(new_token.expose(), carol).await.unwrap_err()),
        InvitationRefusal::Revoked
    );
    assert_eq!(
        refusal(members.resend(second.id).await.unwrap_err()),
        InvitationRefusal::Revoked
    );
    assert_eq!(
        refusal(members.revoke(invitation.id).await.unwrap_err()),
        InvitationRefusal::Used
    );
    assert_eq!(
        invitation_events(&s).await,
        vec![
            (
                "organization.invitation_created".to_owned(),
                "pending".to_owned()
            ),
            (
                "organization.invitation_resent".to_owned(),
                "pending".to_owned()
            ),
            (
                "organization.invitation_revoked".to_owned(),
                "revoked".to_owned()
            ),
        ]
    );
    assert_eq!(members.role(org.id(), carol).await.unwrap(), None);
}

async fn forged_expired_used_and_revoked_tokens_are_refused_and_change_nothing(s: Setup) {
    let org = s
        .orgs
        .create(
            "seed",
            NewOrganization::new("Tight", Slug::parse("tight").unwrap()),
        )
        .await
        .unwrap();
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    // Nothing for an unknown organization or role.
    assert_eq!(
        members
            .invite(
                "alice",
                OrganizationId::new(),
                &email("x@example.com"),
                "member"
            )
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        members
            .invite("alice", org.id(), &email("x@example.com"), "emperor")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Validation
    );
    let (invitation, token) = members
        .invite("alice", org.id(), &email("eve@example.com"), "member")
        .await
        .unwrap();
    s.published().await;
    let user = UserId::new();
    // Forged: not a token, another invitation's id, the right id with a wrong secret.
    let (id, secret) = token.expose().split_once('.').unwrap();
    let mut flipped = secret.as_bytes().to_vec();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let wrong_secret = format!("{id}.{}", String::from_utf8(flipped).unwrap());
    let unknown_id = format!("{}.{secret}", uuid::Uuid::new_v4().simple());
    for forged in [
        "",
        "garbage",
        &wrong_secret,
        &unknown_id,
        &"x".repeat(10_000),
    ] {
        let refused = members.accept(forged, user).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Unauthorized);
        assert_eq!(refusal(refused), InvitationRefusal::Forged, "{forged:.40}");
    }
    assert_eq!(
        members.invitation(invitation.id).await.unwrap().status,
        InvitationStatus::Pending
    );

    // A full organization: refused, the invitation stays pending, nobody added.
    let full = s.memberships(
        MembershipConfig::default(),
        OrgConfig {
            settings: ConfiguredSettings {
                defaults: OrgSettings::new(1, 1),
                ..ConfiguredSettings::default()
            },
            ..OrgConfig::default()
        },
    );
    full.add(org.id(), UserId::new(), "owner").await.unwrap();
    let over = full.accept(token.expose(), user).await.unwrap_err();
    assert_eq!(over.kind(), ErrorKind::Validation, "{over}");
    assert_eq!(
        members.invitation(invitation.id).await.unwrap().status,
        InvitationStatus::Pending
    );
    assert_eq!(members.role(org.id(), user).await.unwrap(), None);

    // Expired: refused; a resend makes it acceptable again with a new token.
    let short: Memberships = s.memberships(
        MembershipConfig {
            invitation_ttl: Duration::from_millis(300),
            ..MembershipConfig::default()
        },
        OrgConfig::default(),
    );
    let (expiring, expiring_token) = short
        .invite("alice", org.id(), &email("late@example.com"), "member")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        short.invitation(expiring.id).await.unwrap().status,
        InvitationStatus::Expired
    );
    let expired = short
        .accept(expiring_token.expose(), user)
        .await
        .unwrap_err();
    assert_eq!(expired.kind(), ErrorKind::Conflict);
    assert_eq!(refusal(expired), InvitationRefusal::Expired);
    assert_eq!(
        refusal(short.revoke(expiring.id).await.unwrap_err()),
        InvitationRefusal::Expired
    );
    assert_eq!(members.role(org.id(), user).await.unwrap(), None);
    let invitation_events: Vec<String> = s
        .published()
        .await
        .into_iter()
        .map(|e| e.event_type().to_owned())
        .filter(|t| {
            t.starts_with("organization.invitation_") && t != "organization.invitation_created"
        })
        .collect();
    assert!(
        invitation_events.is_empty(),
        "refusals publish nothing: {invitation_events:?}"
    );
    let (_, fresh) = members.resend(expiring.id).await.unwrap();
    let accepted = members.accept(fresh.expose(), user).await;
    // The organization is full with `full`'s owner and the default 1,000 limit applies here.
    assert_eq!(accepted.unwrap().status, InvitationStatus::Accepted);
    assert_eq!(
        refusal(members.resend(expiring.id).await.unwrap_err()),
        InvitationRefusal::Used
    );
    assert_eq!(
        members
            .revoke(uuid::Uuid::new_v4())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}
