//! Invitations: invite by e-mail with a role, a single-use token (stored as its SHA-256,
//! compared in constant time) with an expiry, accept / revoke / resend, each with its event
//! through the outbox in the same transaction. Accepting adds the member in that transaction
//! too. Forged, expired, used and revoked tokens are refused with their own
//! [`InvitationRefusal`], changing nothing.

use crate::members::Memberships;
use crate::store::{InvitationChange, NewInvitation, StoredInvitation};
use crate::{Invitation, InvitationRefusal, InvitationStatus, OrgError, OrganizationStore};
use base64::Engine;
use neo_core::{EmailAddress, OrganizationId, TenantId, UserId};
use neo_events::DomainEvent;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The secret part of a token, in bytes.
const SECRET_BYTES: usize = 32;
/// The longest token accepted for parsing (a real one is 76 characters).
const MAX_TOKEN_CHARS: usize = 128;

/// An invitation's token, handed out once (to e-mail to the invitee) and never stored: the
/// invitation's id and a 256-bit random secret. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken(String);

impl InvitationToken {
    /// The token's text, to send.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh token for invitation `id`, and the hash to store.
    fn issue(id: Uuid) -> (Self, Vec<u8>) {
        let mut secret = [0_u8; SECRET_BYTES];
        // Two version-4 UUIDs: 244 bits from the operating system's generator.
        secret[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(Uuid::new_v4().as_bytes());
        let text = format!(
            "{}.{}",
            id.simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        (InvitationToken(text), hash(&secret))
    }
}

impl std::fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationToken(..)")
    }
}

fn hash(secret: &[u8]) -> Vec<u8> {
    Sha256::digest(secret).to_vec()
}

/// The invitation id and the secret's hash of a token's text; `None` when it is not shaped
/// like a token.
fn parse(token: &str) -> Option<(Uuid, Vec<u8>)> {
    if token.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let (id, secret) = token.split_once('.')?;
    let id = Uuid::try_parse(id).ok()?;
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .ok()?;
    (secret.len() == SECRET_BYTES).then(|| (id, hash(&secret)))
}

const FORGED: OrgError = OrgError::Invitation(InvitationRefusal::Forged);

impl Memberships {
    /// Invites `email` to `organization` with `role`, for
    /// [`MembershipConfig::invitation_ttl`](crate::MembershipConfig::invitation_ttl), and
    /// publishes `organization.invitation_created` (without the token). Returns the
    /// invitation and its token, which is not kept: send it now.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a role that is not configured; [`OrgError::NotFound`] for
    /// an organization that does not exist; a database error.
    pub async fn invite(
        &self,
        actor: &str,
        organization: OrganizationId,
        email: &EmailAddress,
        role: &str,
    ) -> Result<(Invitation, InvitationToken), OrgError> {
        self.check_role(role)?;
        let id = Uuid::new_v4();
        let (token, token_hash) = InvitationToken::issue(id);
        let tenant = self.inner.store.tenant()?;
        let invitation = self
            .inner
            .store
            .insert_invitation(
                &NewInvitation {
                    id,
                    organization,
                    email,
                    role,
                    token_hash: &token_hash,
                    invited_by: actor,
                    ttl_secs: self.inner.config.invitation_ttl.as_secs_f64(),
                },
                |invitation| event("organization.invitation_created", invitation, tenant),
            )
            .await?;
        Ok((invitation, token))
    }

    /// An invitation by id (of an organization not deleted).
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; a database error.
    pub async fn invitation(&self, id: Uuid) -> Result<Invitation, OrgError> {
        self.inner
            .store
            .invitation(id)
            .await?
            .ok_or_else(|| OrgError::not_found("invitation", id))
    }

    /// Accepts an invitation as `user`: in one transaction the invitation is marked used,
    /// `user` becomes a member with its role (within `max_members`) and
    /// `organization.invitation_accepted` is published.
    ///
    /// # Errors
    /// [`OrgError::Invitation`] with [`InvitationRefusal::Forged`] (not a token of this
    /// service, or replaced by a resend), [`Expired`](InvitationRefusal::Expired),
    /// [`Used`](InvitationRefusal::Used) or [`Revoked`](InvitationRefusal::Revoked);
    /// [`OrgError::Invalid`] for a full organization; a database error. Nothing changes
    /// when it fails.
    pub async fn accept(&self, token: &str, user: UserId) -> Result<Invitation, OrgError> {
        let (id, presented) = parse(token).ok_or(FORGED)?;
        let tenant = self.inner.store.tenant()?;
        // The organization's settings, before the transaction (the resolver may call out).
        let organization = self
            .inner
            .store
            .invitation(id)
            .await?
            .ok_or(FORGED)?
            .organization;
        let max_members = self.inner.orgs.max_members_of(organization).await?;
        let accepted = self
            .inner
            .store
            .change_invitation(
                id,
                InvitationChange::Accept { user, max_members },
                |stored| {
                    let stored = stored.ok_or(FORGED)?;
                    if !bool::from(stored.token_hash.ct_eq(&presented)) {
                        return Err(FORGED);
                    }
                    pending(stored)
                },
                |invitation| event("organization.invitation_accepted", invitation, tenant),
            )
            .await?;
        self.changed(accepted.organization, user).await;
        Ok(accepted)
    }

    /// Revokes a pending invitation and publishes `organization.invitation_revoked`.
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; [`OrgError::Invitation`] for one already used, revoked or
    /// expired; a database error.
    pub async fn revoke(&self, id: Uuid) -> Result<Invitation, OrgError> {
        let tenant = self.inner.store.tenant()?;
        self.inner
            .store
            .change_invitation(
                id,
                InvitationChange::Revoke,
                |stored| match stored {
                    Some(stored) => pending(stored),
                    None => Err(OrgError::not_found("invitation", id)),
                },
                |invitation| event("organization.invitation_revoked", invitation, tenant),
            )
            .await
    }

    /// Issues a pending (or expired, not used nor revoked) invitation a new token and a new
    /// expiry, and publishes `organization.invitation_resent`; the old token is refused from
    /// now on ([`InvitationRefusal::Forged`]).
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; [`OrgError::Invitation`] for one already used or revoked; a
    /// database error.
    pub async fn resend(&self, id: Uuid) -> Result<(Invitation, InvitationToken), OrgError> {
        let tenant = self.inner.store.tenant()?;
        let (token, token_hash) = InvitationToken::issue(id);
        let invitation = self
            .inner
            .store
            .change_invitation(
                id,
                InvitationChange::Resend {
                    token_hash: &token_hash,
                    ttl_secs: self.inner.config.invitation_ttl.as_secs_f64(),
                },
                |stored| match stored.map(|s| s.invitation.status) {
                    None => Err(OrgError::not_found("invitation", id)),
                    Some(InvitationStatus::Accepted) => {
                        Err(OrgError::Invitation(InvitationRefusal::Used))
                    }
                    Some(InvitationStatus::Revoked) => {
                        Err(OrgError::Invitation(InvitationRefusal::Revoked))
                    }
                    Some(_) => Ok(()),
                },
                |invitation| event("organization.invitation_resent", invitation, tenant),
            )
            .await?;
        Ok((invitation, token))
    }
}

/// Refuses an invitation that is not pending.
fn pending(stored: &StoredInvitation) -> Result<(), OrgError> {
    match stored.invitation.status {
        InvitationStatus::Accepted => Err(OrgError::Invitation(InvitationRefusal::Used)),
        InvitationStatus::Revoked => Err(OrgError::Invitation(InvitationRefusal::Revoked)),
        InvitationStatus::Expired => Err(OrgError::Invitation(InvitationRefusal::Expired)),
        InvitationStatus::Pending => Ok(()),
    }
}

/// An invitation's event: on the organization's aggregate, naming the store's tenant (or
/// the organization as its tenant, as organization events do), without the token.
fn event(
    event_type: &str,
    invitation: &Invitation,
    tenant: Option<TenantId>,
) -> Result<DomainEvent, OrgError> {
    let payload = serde_json::json!({
        "invitation_id": invitation.id,
        "organization_id": invitation.organization,
        "email": invitation.email.as_str(),
        "role": invitation.role,
        "status": invitation.status,
        "expires_at": invitation.expires_at,
        "accepted_by": invitation.accepted_by,
    });
    Ok(DomainEvent::new(
        event_type,
        "organization",
        &invitation.organization.to_string(),
        &payload,
    )?
    .tenant(tenant.unwrap_or_else(|| TenantId::from(invitation.organization))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_back_to_their_id_and_hash_and_bad_shapes_do_not() {
        let id = Uuid::new_v4();
        let (token, stored) = InvitationToken::issue(id);
        assert_eq!(parse(token.expose()), Some((id, stored)));
        assert!(!format!("{token:?}").contains(token.expose()));
        for bad in [
            "",
            "no-dot",
            "not-a-uuid.AAAA",
            &format!("{}.short", id.simple()),
            &format!("{}.{}", id.simple(), "A".repeat(200)),
            &format!("{}.!!!", id.simple()),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
