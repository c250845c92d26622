//! Domain claims in PostgreSQL (migration 14; under row-level security, migration 15): when
//! an organization claimed a domain for verification by DNS, until when the claim stands,
//! when it was verified and whether its verified domain lets users with matching e-mail
//! addresses join. The domain and its token are the organization's (`organization_domains`).

use super::postgres::{PgOrganizationStore, db, not_deleted};
use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{DomainName, OrganizationId};
use neo_db::{Schema, TableName};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

const COLUMNS: &str = "organization_id, domain, claimed_at, expires_at, verified_at, auto_join, \
     now() AS db_now";

/// The statements of one schema.
#[derive(Debug)]
pub(crate) struct ClaimSql {
    upsert: String,
    get: String,
    verified: String,
    delete: String,
    auto_join: String,
    joinable: String,
}

impl ClaimSql {
    pub(super) fn new(schema: &Schema) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, claims) = (
            table("organizations")?,
            table("organization_domain_claims")?,
        );
        let key = "organization_id = $1 AND domain = $2";
        Ok(ClaimSql {
            upsert: format!(
                "INSERT INTO {claims} (organization_id, domain, expires_at) \
                 VALUES ($1, $2, now() + make_interval(secs => $3)) \
                 ON CONFLICT (organization_id, domain) DO UPDATE SET claimed_at = now(), \
                 expires_at = EXCLUDED.expires_at, verified_at = NULL RETURNING {COLUMNS}"
            ),
            get: format!("SELECT {COLUMNS} FROM {claims} WHERE {key}"),
            verified: format!(
                "UPDATE {claims} SET verified_at = COALESCE(verified_at, now()) WHERE {key} \
                 RETURNING {COLUMNS}"
            ),
            delete: format!("DELETE FROM {claims} WHERE {key}"),
            auto_join: format!(
                "UPDATE {claims} SET auto_join = $3 WHERE {key} AND verified_at IS NOT NULL \
                 RETURNING {COLUMNS}"
            ),
            joinable: format!(
                "SELECT c.organization_id FROM {claims} c JOIN {orgs} o \
                 ON o.id = c.organization_id AND {live} \
                 WHERE c.domain = $1 AND c.auto_join AND c.verified_at IS NOT NULL \
                 ORDER BY c.organization_id LIMIT $2",
                live = not_deleted("o")
            ),
        })
    }
}

/// A domain an organization claimed for verification by DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DomainClaim {
    /// The organization.
    pub organization: OrganizationId,
    /// The domain.
    pub domain: DomainName,
    /// When it was (last) claimed.
    pub claimed_at: DateTime<Utc>,
    /// Until when its verification may succeed.
    pub expires_at: DateTime<Utc>,
    /// When its token was seen in the domain's TXT records.
    pub verified_at: Option<DateTime<Utc>>,
    /// Whether users whose e-mail address is at this (verified) domain may join.
    pub auto_join: bool,
    /// Whether it was past its expiry when read (by the database's clock).
    pub expired: bool,
}

fn claim_of(row: &PgRow) -> Result<DomainClaim, OrgError> {
    let expires_at: DateTime<Utc> = row.try_get("expires_at").map_err(db)?;
    let now: DateTime<Utc> = row.try_get("db_now").map_err(db)?;
    let domain: String = row.try_get("domain").map_err(db)?;
    Ok(DomainClaim {
        organization: OrganizationId::from_uuid(row.try_get("organization_id").map_err(db)?)?,
        domain: DomainName::parse(&domain)?,
        claimed_at: row.try_get("claimed_at").map_err(db)?,
        expires_at,
        verified_at: row.try_get("verified_at").map_err(db)?,
        auto_join: row.try_get("auto_join").map_err(db)?,
        expired: expires_at <= now,
    })
}

/// Which claim statement to run with the key `(organization, domain)`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClaimStatement {
    /// Claims (again): a fresh expiry `ttl_secs` from now, not verified.
    Upsert { ttl_secs: f64 },
    /// Reads it.
    Get,
    /// Marks it verified (keeps the first time).
    Verified,
    /// Sets its auto-join (only a verified claim).
    AutoJoin(bool),
}

impl PgOrganizationStore {
    /// Runs one claim statement on `(organization, domain)`; the claim after it, `None` when
    /// there is none (or, for `AutoJoin`, none verified).
    pub(crate) async fn domain_claim(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
        statement: ClaimStatement,
    ) -> Result<Option<DomainClaim>, OrgError> {
        let scope = self.scope()?;
        let sql = &scope.sql.domain_claims;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let query = match statement {
            ClaimStatement::Upsert { .. } => sqlx::query(AssertSqlSafe(sql.upsert.clone())),
            ClaimStatement::Get => sqlx::query(AssertSqlSafe(sql.get.clone())),
            ClaimStatement::Verified => sqlx::query(AssertSqlSafe(sql.verified.clone())),
            ClaimStatement::AutoJoin(_) => sqlx::query(AssertSqlSafe(sql.auto_join.clone())),
        }
        .persistent(self.inner.db.pooler().named_statements())
        .bind(Uuid::from(organization))
        .bind(domain.as_str());
        let query = match statement {
            ClaimStatement::Upsert { ttl_secs } => query.bind(ttl_secs),
            ClaimStatement::AutoJoin(on) => query.bind(on),
            ClaimStatement::Get | ClaimStatement::Verified => query,
        };
        let row = query.fetch_optional(&mut *conn).await.map_err(db)?;
        conn.finish().await?;
        row.as_ref().map(claim_of).transpose()
    }

    /// Forgets a claim (after the organization refused the domain).
    pub(crate) async fn delete_domain_claim(
        &self,
        organization: OrganizationId,
        domain: &DomainName,
    ) -> Result<(), OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        sqlx::query(AssertSqlSafe(scope.sql.domain_claims.delete.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(Uuid::from(organization))
            .bind(domain.as_str())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        Ok(())
    }

    /// The live organizations (at most `limit`) whose verified claim of `domain` lets users
    /// join, by id.
    pub(crate) async fn auto_join_organizations(
        &self,
        domain: &str,
        limit: u32,
    ) -> Result<Vec<OrganizationId>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let ids: Vec<Uuid> =
            sqlx::query_scalar(AssertSqlSafe(scope.sql.domain_claims.joinable.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(domain)
                .bind(i64::from(limit))
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
        conn.finish().await?;
        Ok(ids
            .into_iter()
            .map(OrganizationId::from_uuid)
            .collect::<Result<_, _>>()?)
    }
}
