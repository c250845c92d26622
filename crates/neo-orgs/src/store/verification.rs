//! Organization verifications in PostgreSQL (migration 16; under row-level security, 17):
//! each submission and each status move one transaction with its audit record and its event
//! through the outbox; a refused move changes nothing.

use super::Write;
use super::postgres::{PgOrganizationStore, db, not_deleted, results_of};
use crate::{OrgError, Organization};
use chrono::{DateTime, Utc};
use neo_core::OrganizationId;
use neo_db::{Schema, TableName};
use neo_events::DomainEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

const COLUMNS: &str =
    "id, organization_id, status, documents, submitted_by, reason, created_at, updated_at";

/// The statements of one schema.
#[derive(Debug)]
pub(crate) struct VerificationSql {
    insert: String,
    get: String,
    lock: String,
    update: String,
    audit: String,
    history: String,
}

impl VerificationSql {
    pub(super) fn new(schema: &Schema) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, verifications, audit) = (
            table("organizations")?,
            table("organization_verifications")?,
            table("organization_verification_audit")?,
        );
        let live = format!(
            "EXISTS (SELECT 1 FROM {orgs} o WHERE o.id = organization_id AND {})",
            not_deleted("o")
        );
        Ok(VerificationSql {
            insert: format!(
                "INSERT INTO {verifications} (id, organization_id, status, documents, submitted_by) \
                 VALUES ($1, $2, 'submitted', $3, $4) RETURNING {COLUMNS}"
            ),
            get: format!("SELECT {COLUMNS} FROM {verifications} WHERE id = $1 AND {live}"),
            lock: format!(
                "SELECT {COLUMNS} FROM {verifications} WHERE id = $1 AND {live} FOR UPDATE"
            ),
            update: format!(
                "UPDATE {verifications} SET status = $2, reason = $3, updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            audit: format!(
                "INSERT INTO {audit} (verification_id, actor, from_status, to_status, reason) \
                 VALUES ($1, $2, $3, $4, $5)"
            ),
            history: format!(
                "SELECT actor, from_status, to_status, reason, at FROM {audit} \
                 WHERE verification_id = $1 ORDER BY id"
            ),
        })
    }
}

/// Where a verification stands: `submitted` → `in_review` → `verified` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum VerificationStatus {
    /// Submitted with its documents, waiting for review.
    Submitted,
    /// Being reviewed.
    InReview,
    /// Verified (final).
    Verified,
    /// Rejected, with a reason (final).
    Rejected,
}

impl VerificationStatus {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationStatus::Submitted => "submitted",
            VerificationStatus::InReview => "in_review",
            VerificationStatus::Verified => "verified",
            VerificationStatus::Rejected => "rejected",
        }
    }

    /// Whether a verification may move from this status to `to`.
    pub fn can_become(self, to: VerificationStatus) -> bool {
        matches!(
            (self, to),
            (VerificationStatus::Submitted, VerificationStatus::InReview)
                | (
                    VerificationStatus::InReview,
                    VerificationStatus::Verified | VerificationStatus::Rejected
                )
        )
    }

    fn parse(text: &str) -> Result<Self, OrgError> {
        match text {
            "submitted" => Ok(VerificationStatus::Submitted),
            "in_review" => Ok(VerificationStatus::InReview),
            "verified" => Ok(VerificationStatus::Verified),
            "rejected" => Ok(VerificationStatus::Rejected),
            other => Err(OrgError::invalid(
                "verification status",
                format!("{other:?} is not submitted, in_review, verified or rejected"),
            )),
        }
    }
}

/// A document the host stores (a registry extract, an ID scan): its id there and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerificationDocument {
    /// Its id in the host's document store.
    pub id: String,
    /// What it is (`registry_extract`, `id_card`, ...).
    pub kind: String,
}

impl VerificationDocument {
    /// A document reference.
    pub fn new(id: impl Into<String>, kind: impl Into<String>) -> Self {
        VerificationDocument {
            id: id.into(),
            kind: kind.into(),
        }
    }
}

/// A verification of an organization with its documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrgVerification {
    /// Its id.
    pub id: Uuid,
    /// The organization verified.
    pub organization: OrganizationId,
    /// Where it stands.
    pub status: VerificationStatus,
    /// The documents submitted.
    pub documents: Vec<VerificationDocument>,
    /// Who submitted it.
    pub submitted_by: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When its status last moved.
    pub updated_at: DateTime<Utc>,
}

/// One audit record of a verification: a status move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerificationRecord {
    /// Who moved it.
    pub actor: String,
    /// From (`None` for the submission).
    pub from: Option<VerificationStatus>,
    /// To.
    pub to: VerificationStatus,
    /// The reason given.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

fn verification_of(row: &PgRow) -> Result<OrgVerification, OrgError> {
    let status: String = row.try_get("status").map_err(db)?;
    let Json(documents) = row.try_get("documents").map_err(db)?;
    Ok(OrgVerification {
        id: row.try_get("id").map_err(db)?,
        organization: OrganizationId::from_uuid(row.try_get("organization_id").map_err(db)?)?,
        status: VerificationStatus::parse(&status)?,
        documents,
        submitted_by: row.try_get("submitted_by").map_err(db)?,
        reason: row.try_get("reason").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

/// What a move to `verified` does to the organization, in the move's transaction: changes
/// it (`Organization::verify`) and returns the events to publish with it.
pub(crate) type OrganizationChange<'a> = dyn Fn(&mut Organization, &OrgVerification) -> Result<Vec<DomainEvent>, OrgError>
    + Send
    + Sync
    + 'a;

/// A status move for [`PgOrganizationStore::move_verification`].
pub(crate) struct Move<'a> {
    pub(crate) actor: &'a str,
    pub(crate) to: VerificationStatus,
    pub(crate) reason: Option<&'a str>,
    /// The organization's own change, saved (row, audit record, events) with the move.
    pub(crate) organization: Option<&'a OrganizationChange<'a>>,
}

impl PgOrganizationStore {
    /// Inserts a submitted verification of a live organization with its audit record and
    /// the event `event` makes of it, in one transaction.
    pub(crate) async fn insert_verification(
        &self,
        organization: OrganizationId,
        documents: &[VerificationDocument],
        actor: &str,
        event: impl FnOnce(
            &OrgVerification,
            Option<VerificationStatus>,
        ) -> Result<DomainEvent, OrgError>,
    ) -> Result<OrgVerification, OrgError> {
        let (mut tx, scope) = self.begin_scoped().await?;
        let named = self.inner.db.pooler().named_statements();
        let live = sqlx::query(AssertSqlSafe(scope.sql.lock_org.clone()))
            .persistent(named)
            .bind(Uuid::from(organization))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?;
        if live.is_none() {
            return Err(OrgError::not_found("organization", organization));
        }
        let sql = &scope.sql.verifications;
        let row = sqlx::query(AssertSqlSafe(sql.insert.clone()))
            .persistent(named)
            .bind(Uuid::new_v4())
            .bind(Uuid::from(organization))
            .bind(Json(documents))
            .bind(actor)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        let verification = verification_of(&row)?;
        sqlx::query(AssertSqlSafe(sql.audit.clone()))
            .persistent(named)
            .bind(verification.id)
            .bind(actor)
            .bind(None::<&str>)
            .bind(verification.status.as_str())
            .bind(None::<&str>)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        self.inner
            .outbox
            .publish(&mut **tx, &event(&verification, None)?)
            .await?;
        tx.commit().await?;
        Ok(verification)
    }

    /// Locks verification `id`, refuses a move its status does not allow
    /// ([`OrgError::VerificationTransition`]), moves it with its audit record and its event,
    /// and, with `change.organization`, locks the organization, changes it and saves it
    /// (row, audit record `verify`, events), in one transaction; nothing changes when
    /// anything fails ([`OrgError::NotFound`] for an organization deleted meanwhile, the
    /// change's own error, e.g. [`OrgError::Transition`] for a suspended one).
    pub(crate) async fn move_verification(
        &self,
        id: Uuid,
        change: Move<'_>,
        event: impl FnOnce(
            &OrgVerification,
            Option<VerificationStatus>,
        ) -> Result<DomainEvent, OrgError>,
    ) -> Result<OrgVerification, OrgError> {
        let (mut tx, scope) = self.begin_scoped().await?;
        let named = self.inner.db.pooler().named_statements();
        let sql = &scope.sql.verifications;
        let row = sqlx::query(AssertSqlSafe(sql.lock.clone()))
            .persistent(named)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
            .ok_or_else(|| OrgError::not_found("verification", id))?;
        let from = verification_of(&row)?.status;
        if !from.can_become(change.to) {
            return Err(OrgError::VerificationTransition {
                id: id.to_string(),
                from: from.as_str(),
                to: change.to.as_str(),
            });
        }
        let row = sqlx::query(AssertSqlSafe(sql.update.clone()))
            .persistent(named)
            .bind(id)
            .bind(change.to.as_str())
            .bind(change.reason)
            .fetch_one(&mut **tx)
            .await
            .map_err(db)?;
        let verification = verification_of(&row)?;
        sqlx::query(AssertSqlSafe(sql.audit.clone()))
            .persistent(named)
            .bind(id)
            .bind(change.actor)
            .bind(from.as_str())
            .bind(change.to.as_str())
            .bind(change.reason)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
        if let Some(organization_change) = change.organization {
            let id = verification.organization;
            let mut org = self
                .lock_organization(&mut tx, &scope, id)
                .await?
                .ok_or_else(|| OrgError::not_found("organization", id))?;
            let events = organization_change(&mut org, &verification)?;
            let write = [Write::new(change.actor, "verify", &org, &events)];
            let rows = self.update_in(&mut tx, &scope, &write).await?;
            for outcome in results_of(&write, rows) {
                outcome?;
            }
        }
        self.inner
            .outbox
            .publish(&mut **tx, &event(&verification, Some(from))?)
            .await?;
        tx.commit().await?;
        Ok(verification)
    }

    /// A verification of a live organization.
    pub(crate) async fn verification(&self, id: Uuid) -> Result<Option<OrgVerification>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let row = sqlx::query(AssertSqlSafe(scope.sql.verifications.get.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        row.as_ref().map(verification_of).transpose()
    }

    /// The audit records of a verification, oldest first.
    pub(crate) async fn verification_history(
        &self,
        id: Uuid,
    ) -> Result<Vec<VerificationRecord>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let rows = sqlx::query(AssertSqlSafe(scope.sql.verifications.history.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        rows.iter()
            .map(|row| {
                let from: Option<String> = row.try_get("from_status").map_err(db)?;
                let to: String = row.try_get("to_status").map_err(db)?;
                Ok(VerificationRecord {
                    actor: row.try_get("actor").map_err(db)?,
                    from: from.as_deref().map(VerificationStatus::parse).transpose()?,
                    to: VerificationStatus::parse(&to)?,
                    reason: row.try_get("reason").map_err(db)?,
                    at: row.try_get("at").map_err(db)?,
                })
            })
            .collect()
    }
}
