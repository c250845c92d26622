//! Invitations in PostgreSQL (migration 12; under row-level security, migration 13): each
//! write one transaction that locks the invitation, lets the caller check it, changes it
//! (accepting also adds the member, within `max_members`) and publishes its event through
//! the outbox; a refused check changes nothing.

use super::postgres::{PgOrganizationStore, db, not_deleted};
use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{EmailAddress, OrganizationId, UserId};
use neo_db::{Schema, TableName};
use neo_events::DomainEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The columns an invitation is read with, and the database's clock.
const COLUMNS: &str = "i.id, i.organization_id, i.email, i.role, i.invited_by, i.created_at, \
     i.expires_at, i.accepted_at, i.accepted_by, i.revoked_at, i.token_hash, now() AS db_now";

/// The statements of one schema.
#[derive(Debug)]
pub(crate) struct InvitationSql {
    insert: String,
    by_id: String,
    lock: String,
    accept: String,
    revoke: String,
    resend: String,
}

impl InvitationSql {
    pub(super) fn new(schema: &Schema) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, invitations) = (table("organizations")?, table("organization_invitations")?);
        let select = format!(
            "SELECT {COLUMNS} FROM {invitations} i JOIN {orgs} o \
             ON o.id = i.organization_id AND {live} WHERE i.id = $1",
            live = not_deleted("o")
        );
        let returning = format!("RETURNING {}", COLUMNS.replace("i.", ""));
        Ok(InvitationSql {
            insert: format!(
                "INSERT INTO {invitations} AS i (id, organization_id, email, role, token_hash, \
                 invited_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) {returning}"
            ),
            lock: format!("{select} FOR UPDATE OF i"),
            by_id: select,
            accept: format!(
                "UPDATE {invitations} SET accepted_at = now(), accepted_by = $2 WHERE id = $1 \
                 {returning}"
            ),
            revoke: format!(
                "UPDATE {invitations} SET revoked_at = now() WHERE id = $1 {returning}"
            ),
            resend: format!(
                "UPDATE {invitations} SET token_hash = $2, \
                 expires_at = now() + make_interval(secs => $3) WHERE id = $1 {returning}"
            ),
        })
    }
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvitationStatus {
    /// Waiting for its invitee.
    Pending,
    /// Accepted: its invitee is a member.
    Accepted,
    /// Revoked before it was accepted.
    Revoked,
    /// Not accepted in time.
    Expired,
}

/// An invitation to join an organization with a role. Its token is never stored (only its
/// SHA-256) nor part of this value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Invitation {
    /// Its id (the first part of its token).
    pub id: Uuid,
    /// The organization invited to.
    pub organization: OrganizationId,
    /// Who is invited.
    pub email: EmailAddress,
    /// The role they get on accepting.
    pub role: String,
    /// Who invited them.
    pub invited_by: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being acceptable (moved on each resend).
    pub expires_at: DateTime<Utc>,
    /// Where it stands.
    pub status: InvitationStatus,
    /// Who accepted it.
    pub accepted_by: Option<UserId>,
    /// When.
    pub accepted_at: Option<DateTime<Utc>>,
}

/// An invitation as stored, with its token's hash.
pub(crate) struct Stored {
    pub(crate) invitation: Invitation,
    pub(crate) token_hash: Vec<u8>,
}

/// What to do to a locked invitation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// Mark it accepted by `user` and add them with its role, within `max_members`.
    Accept { user: UserId, max_members: u32 },
    /// Mark it revoked.
    Revoke,
    /// Replace its token's hash and move its expiry `ttl_secs` from now.
    Resend { token_hash: &'a [u8], ttl_secs: f64 },
}

/// A new invitation's row.
pub(crate) struct NewInvitation<'a> {
    pub(crate) id: Uuid,
    pub(crate) organization: OrganizationId,
    pub(crate) email: &'a EmailAddress,
    pub(crate) role: &'a str,
    pub(crate) token_hash: &'a [u8],
    pub(crate) invited_by: &'a str,
    pub(crate) ttl_secs: f64,
}

fn invitation_of(row: &PgRow) -> Result<Stored, OrgError> {
    let email: String = row.try_get("email").map_err(db)?;
    let expires_at: DateTime<Utc> = row.try_get("expires_at").map_err(db)?;
    let accepted_at: Option<DateTime<Utc>> = row.try_get("accepted_at").map_err(db)?;
    let revoked_at: Option<DateTime<Utc>> = row.try_get("revoked_at").map_err(db)?;
    let now: DateTime<Utc> = row.try_get("db_now").map_err(db)?;
    let status = if accepted_at.is_some() {
        InvitationStatus::Accepted
    } else if revoked_at.is_some() {
        InvitationStatus::Revoked
    } else if expires_at <= now {
        InvitationStatus::Expired
    } else {
        InvitationStatus::Pending
    };
    Ok(Stored {
        invitation: Invitation {
            id: row.try_get("id").map_err(db)?,
            organization: OrganizationId::from_uuid(row.try_get("organization_id").map_err(db)?)?,
            email: EmailAddress::parse(&email)?,
            role: row.try_get("role").map_err(db)?,
            invited_by: row.try_get("invited_by").map_err(db)?,
            created_at: row.try_get("created_at").map_err(db)?,
            expires_at,
            status,
            accepted_by: row
                .try_get::<Option<Uuid>, _>("accepted_by")
                .map_err(db)?
                .map(UserId::from_uuid)
                .transpose()?,
            accepted_at,
        },
        token_hash: row.try_get("token_hash").map_err(db)?,
    })
}

impl PgOrganizationStore {
    /// Inserts an invitation to a live organization with the event `event` makes of it, in
    /// one transaction.
    pub(crate) async fn insert_invitation(
        &self,
        new: &NewInvitation<'_>,
        event: impl FnOnce(&Invitation) -> Result<DomainEvent, OrgError>,
    ) -> Result<Invitation, OrgError> {
        let (mut tx, scope) = self.begin_scoped().await?;
        let named = self.inner.db.pooler().named_statements();
        let live = sqlx::query(AssertSqlSafe(scope.sql.lock_org.clone()))
            .persistent(named)
            .bind(Uuid::from(new.organization))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
        if live.is_none() {
            return Err(OrgError::not_found("organization", new.organization));
        }
        let row = sqlx::query(AssertSqlSafe(scope.sql.invitations.insert.clone()))
            .persistent(named)
            .bind(new.id)
            .bind(Uuid::from(new.organization))
            .bind(new.email.as_str())
            .bind(new.role)
            .bind(new.token_hash)
            .bind(new.invited_by)
            .bind(new.ttl_secs)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        let invitation = invitation_of(&row)?.invitation;
        let event = event(&invitation)?;
        self.inner.outbox.publish(&mut **tx, &event).await?;
        tx.commit().await?;
        Ok(invitation)
    }

    /// An invitation of a live organization, by id.
    pub(crate) async fn invitation(&self, id: Uuid) -> Result<Option<Invitation>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let row = sqlx::query(AssertSqlSafe(scope.sql.invitations.by_id.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        row.map(|row| Ok(invitation_of(&row)?.invitation))
            .transpose()
    }

    /// Locks invitation `id` (of a live organization), lets `check` refuse it (it gets
    /// `None` for one that does not exist), applies `change` and publishes `event`'s event,
    /// in one transaction; nothing is changed when anything fails.
    pub(crate) async fn change_invitation(
        &self,
        id: Uuid,
        change: Change<'_>,
        check: impl FnOnce(Option<&Stored>) -> Result<(), OrgError>,
        event: impl FnOnce(&Invitation) -> Result<DomainEvent, OrgError>,
    ) -> Result<Invitation, OrgError> {
        let (mut tx, scope) = self.begin_scoped().await?;
        let named = self.inner.db.pooler().named_statements();
        let sql = &scope.sql.invitations;
        let row = sqlx::query(AssertSqlSafe(sql.lock.clone()))
            .persistent(named)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
        let stored = row.as_ref().map(invitation_of).transpose()?;
        check(stored.as_ref())?;
        let Some(stored) = stored else {
            return Err(OrgError::not_found("invitation", id));
        };
        let query = match change {
            Change::Accept { user, max_members } => {
                let invitation = &stored.invitation;
                self.add_member_in(
                    &mut tx,
                    &scope,
                    invitation.organization,
                    user,
                    &invitation.role,
                    max_members,
                )
                .await?;
                sqlx::query(AssertSqlSafe(sql.accept.clone()))
                    .bind(id)
                    .bind(Uuid::from(user))
            }
            Change::Revoke => sqlx::query(AssertSqlSafe(sql.revoke.clone())).bind(id),
            Change::Resend {
                token_hash,
                ttl_secs,
            } => sqlx::query(AssertSqlSafe(sql.resend.clone()))
                .bind(id)
                .bind(token_hash)
                .bind(ttl_secs),
        };
        let row = query
            .persistent(named)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        let invitation = invitation_of(&row)?.invitation;
        let event = event(&invitation)?;
        self.inner.outbox.publish(&mut **tx, &event).await?;
        tx.commit().await?;
        Ok(invitation)
    }
}
