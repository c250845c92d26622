//! The membership and invitation reads and writes in the cross-tenant suite: tenant A never
//! sees B's members, roles (cached or not), a user's organizations or invitations in B,
//! changes none of them (B's invitation token is forged for A), and B's cursors are NotFound
//! for A; without a tenant every call fails closed.

use super::{Setup, new_org, seed_victim};
use neo_core::{EmailAddress, ErrorKind, HasErrorKind, TenantId, UserId};
use neo_orgs::{InvitationRefusal, MembershipConfig, OrgConfig, OrgError};
use neo_tenant::scope;

pub(crate) async fn tenant_a_never_reads_or_changes_tenant_bs_memberships(
    s: Setup,
    a: TenantId,
    b: TenantId,
) {
    let victim = seed_victim(&s, b).await;
    let members = s.memberships(MembershipConfig::default(), OrgConfig::default());
    let (b_org, b_other) = (victim.live[0].id(), victim.live[2].id());
    let b_user = UserId::new();
    // B's member, in two organizations, with B's role cached and B's cursors.
    let (b_invitation, b_token) = scope(b, async {
        members
            .invite(
                "bob",
                b_org,
                &EmailAddress::parse("new@b.example").unwrap(),
                "member",
            )
            .await
            .unwrap()
    })
    .await;
    let (b_members_cursor, b_orgs_cursor, b_view) = scope(b, async {
        members.add(b_org, b_user, "owner").await.unwrap();
        members.add(b_org, UserId::new(), "member").await.unwrap();
        members.add(b_other, b_user, "admin").await.unwrap();
        assert!(members.can(b_user, b_org, "members:remove").await.unwrap());
        let list = members.members(b_org, None, 1).await.unwrap();
        let orgs = members.organizations_of(b_user, None, 1).await.unwrap();
        let view = (
            members.members(b_org, None, 50).await.unwrap().items,
            members
                .organizations_of(b_user, None, 50)
                .await
                .unwrap()
                .items,
        );
        (list.next_cursor.unwrap(), orgs.next_cursor.unwrap(), view)
    })
    .await;
    scope(a, async {
        let own = s
            .orgs
            .create("alice", new_org("Alpha", "alpha"))
            .await
            .unwrap();
        members.add(own.id(), b_user, "member").await.unwrap();
        // Reads: nothing of B's, cached or not.
        assert!(
            !members
                .can(b_user, b_org, "organization:read")
                .await
                .unwrap()
        );
        assert_eq!(members.role(b_org, b_user).await.unwrap(), None);
        assert!(
            members
                .members(b_org, None, 50)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let mine = members.organizations_of(b_user, None, 50).await.unwrap();
        assert_eq!(mine.items.len(), 1, "only A's organization of that user");
        assert_eq!(mine.items[0].organization, own.id());
        // B's cursors name nothing A has.
        for refused in [
            members
                .members(b_org, Some(&b_members_cursor), 10)
                .await
                .err(),
            members
                .organizations_of(b_user, Some(&b_orgs_cursor), 10)
                .await
                .err(),
        ] {
            assert_eq!(refused.unwrap().kind(), ErrorKind::NotFound);
        }
        // Writes to B's organizations: none happens.
        assert_eq!(
            members
                .add(b_org, UserId::new(), "owner")
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            members.remove(b_org, b_user).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // B's invitation: not found, not acceptable, not revocable nor resendable by A.
        for refused in [
            members.invitation(b_invitation.id).await.err(),
            members.revoke(b_invitation.id).await.err(),
            members.resend(b_invitation.id).await.err(),
            members
                .invite(
                    "alice",
                    b_org,
                    &EmailAddress::parse("a@a.example").unwrap(),
                    "owner",
                )
                .await
                .err(),
        ] {
            assert_eq!(refused.unwrap().kind(), ErrorKind::NotFound);
        }
        let forged = members.accept(b_token.expose(), UserId::new()).await;
        assert!(
            matches!(forged, Err(OrgError::Invitation(InvitationRefusal::Forged))),
            "{forged:?}"
        );
    })
    .await;
    // Without a tenant: refused before any query.
    let fail_closed = |e: OrgError| assert!(matches!(e, OrgError::Tenant(_)), "{e:?}");
    fail_closed(
        members
            .can(b_user, b_org, "members:read")
            .await
            .unwrap_err(),
    );
    fail_closed(members.members(b_org, None, 10).await.unwrap_err());
    fail_closed(
        members
            .organizations_of(b_user, None, 10)
            .await
            .unwrap_err(),
    );
    fail_closed(
        members
            .add(b_org, UserId::new(), "member")
            .await
            .unwrap_err(),
    );
    fail_closed(members.remove(b_org, b_user).await.unwrap_err());
    fail_closed(members.invitation(b_invitation.id).await.unwrap_err());
    fail_closed(members.accept(b_token.expose(), b_user).await.unwrap_err());
    // B's memberships are as they were.
    scope(b, async {
        assert!(members.can(b_user, b_org, "members:remove").await.unwrap());
        assert_eq!(
            (
                members.members(b_org, None, 50).await.unwrap().items,
                members
                    .organizations_of(b_user, None, 50)
                    .await
                    .unwrap()
                    .items,
            ),
            b_view
        );
        assert_eq!(
            members.invitation(b_invitation.id).await.unwrap(),
            b_invitation
        );
    })
    .await;
}
