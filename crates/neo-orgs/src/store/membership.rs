//! Memberships in PostgreSQL: a member's role, an organization's members and a user's
//! organizations (one indexed query each, keyset-paged), removing a member and adding one
//! within `max_members` inside a caller's transaction (an accepted invitation). Every call
//! acts for the store's tenant, as the organization calls do.

use super::postgres::{PgOrganizationStore, db, not_deleted};
use super::tenant_mode::Scoped;
use crate::OrgError;
use chrono::{DateTime, Utc};
use neo_core::{OrganizationId, Slug, UserId};
use neo_db::{Schema, TableName, UnitOfWork};
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The statements of one schema.
#[derive(Debug)]
pub(crate) struct MemberSql {
    role_of: String,
    members: String,
    organizations_of: String,
    remove: String,
}

impl MemberSql {
    pub(super) fn new(schema: &Schema) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, members) = (table("organizations")?, table("organization_members")?);
        Ok(MemberSql {
            // Organizations are read by their primary key (`not_deleted`, as in every
            // statement here that takes organizations by id).
            role_of: format!(
                "SELECT m.role FROM {members} m JOIN {orgs} o ON o.id = m.organization_id \
                 WHERE m.organization_id = $1 AND m.user_id = $2 AND {live}",
                live = not_deleted("o")
            ),
            // The primary key's range; the organization checked once (an init plan).
            members: format!(
                "SELECT m.user_id, m.role, m.created_at FROM {members} m \
                 WHERE m.organization_id = $1 AND m.user_id > $2 \
                   AND EXISTS (SELECT 1 FROM {orgs} o WHERE o.id = $1 AND {live}) \
                 ORDER BY m.user_id LIMIT $3",
                live = not_deleted("o")
            ),
            // The `organization_members_user` range (migration 10), each organization
            // joined by its primary key.
            organizations_of: format!(
                "SELECT o.id, o.name, o.slug, m.role, m.created_at FROM {members} m \
                 JOIN {orgs} o ON o.id = m.organization_id \
                 WHERE m.user_id = $1 AND m.organization_id > $2 AND {live} \
                 ORDER BY m.organization_id LIMIT $3",
                live = not_deleted("o")
            ),
            remove: format!(
                "DELETE FROM {members} m USING {orgs} o \
                 WHERE m.organization_id = $1 AND m.user_id = $2 \
                   AND o.id = m.organization_id AND {live}",
                live = not_deleted("o")
            ),
        })
    }
}

/// One member of an organization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Member {
    /// The user (an id the host owns).
    pub user: UserId,
    /// Their role.
    pub role: String,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

/// One organization of a user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct UserOrganization {
    /// The organization.
    pub organization: OrganizationId,
    /// Its name.
    pub name: String,
    /// Its slug.
    pub slug: Slug,
    /// The user's role in it.
    pub role: String,
    /// When the user joined.
    pub joined_at: DateTime<Utc>,
}

impl PgOrganizationStore {
    /// The role of `user` in `organization` (not deleted); `None` when not a member. Read on
    /// the primary: it fills the permission cache.
    pub(crate) async fn role_of(
        &self,
        organization: OrganizationId,
        user: UserId,
    ) -> Result<Option<String>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let row = sqlx::query(AssertSqlSafe(scope.sql.members.role_of.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(Uuid::from(organization))
            .bind(Uuid::from(user))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        row.map(|row| row.try_get::<String, _>(0).map_err(db))
            .transpose()
    }

    /// Up to `limit` members of `organization` after the user `after`, by user id.
    pub(crate) async fn members_page(
        &self,
        organization: OrganizationId,
        after: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<Member>, OrgError> {
        let rows = self
            .page(
                |sql| &sql.members,
                Uuid::from(organization),
                after.map(Uuid::from),
                limit,
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Member {
                    user: UserId::from_uuid(row.try_get(0).map_err(db)?)?,
                    role: row.try_get(1).map_err(db)?,
                    joined_at: row.try_get(2).map_err(db)?,
                })
            })
            .collect()
    }

    /// Up to `limit` organizations (not deleted) of `user` after the organization `after`,
    /// by organization id.
    pub(crate) async fn organizations_page(
        &self,
        user: UserId,
        after: Option<OrganizationId>,
        limit: u32,
    ) -> Result<Vec<UserOrganization>, OrgError> {
        let rows = self
            .page(
                |sql| &sql.organizations_of,
                Uuid::from(user),
                after.map(Uuid::from),
                limit,
            )
            .await?;
        rows.iter()
            .map(|row| {
                let slug: String = row.try_get(2).map_err(db)?;
                Ok(UserOrganization {
                    organization: OrganizationId::from_uuid(row.try_get(0).map_err(db)?)?,
                    name: row.try_get(1).map_err(db)?,
                    slug: Slug::parse(&slug)?,
                    role: row.try_get(3).map_err(db)?,
                    joined_at: row.try_get(4).map_err(db)?,
                })
            })
            .collect()
    }

    /// One keyset page of `statement` (of the store's schema) on a read connection acting
    /// for the store's tenant: rows of `key` after `after` (from the start when `None`).
    async fn page(
        &self,
        statement: impl FnOnce(&MemberSql) -> &String,
        key: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<sqlx::postgres::PgRow>, OrgError> {
        let scope = self.scope()?;
        let mut conn = self
            .connection_on(self.inner.db.read_pool(), &scope)
            .await?;
        let rows = sqlx::query(AssertSqlSafe(statement(&scope.sql.members).clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(key)
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        Ok(rows)
    }

    /// Removes `user` from `organization`; whether they were a member.
    pub(crate) async fn remove_member(
        &self,
        organization: OrganizationId,
        user: UserId,
    ) -> Result<bool, OrgError> {
        let scope = self.scope()?;
        let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
        let done = sqlx::query(AssertSqlSafe(scope.sql.members.remove.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(Uuid::from(organization))
            .bind(Uuid::from(user))
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish().await?;
        Ok(done.rows_affected() > 0)
    }

    /// A transaction with the store's tenant in force, and the statements of its schema,
    /// for work that adds a member with other writes (an accepted invitation).
    pub(super) async fn begin_scoped(&self) -> Result<(UnitOfWork, Scoped), OrgError> {
        let scope = self.scope()?;
        let tx = self.begin(&scope).await?;
        Ok((tx, scope))
    }

    /// Adds `user` to `organization` with `role` (or changes their role) in `tx`, refusing a
    /// new member beyond `max_members`: the organization's row is locked first, so
    /// concurrent adds count each other.
    pub(super) async fn add_member_in(
        &self,
        tx: &mut UnitOfWork,
        scope: &Scoped,
        organization: OrganizationId,
        user: UserId,
        role: &str,
        max_members: u32,
    ) -> Result<(), OrgError> {
        let exists = sqlx::query(AssertSqlSafe(scope.sql.lock_org.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(Uuid::from(organization))
            .fetch_optional(&mut ***tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(OrgError::not_found("organization", organization));
        }
        let added = sqlx::query(AssertSqlSafe(scope.sql.add_member.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(Uuid::from(organization))
            .bind(Uuid::from(user))
            .bind(role)
            .bind(i64::from(max_members))
            .execute(&mut ***tx)
            .await
            .map_err(db)?;
        if added.rows_affected() == 0 {
            return Err(OrgError::invalid(
                "member",
                format!("the organization already has its {max_members} members"),
            ));
        }
        Ok(())
    }
}
