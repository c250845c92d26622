//! The organization service on PostgreSQL, with the tiered cache, the outbox and the audit
//! trail.

use crate::model::{Branding, Legal, OrgDomain, OrgStatus, Organization, Verification, now};
use crate::{NewOrganization, OrgError};
use chrono::{DateTime, Utc};
use neo_cache::{Cache, HybridCache};
use neo_core::{Metadata, OrganizationId, Slug};
use neo_db::{Db, MigrationReport, MigrationSet, Schema, TableName};
use neo_events::Outbox;
use serde::Deserialize;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Service settings. Load with `neo_core::config::from_env("NEO_ORGS_")`. The cache's TTL
/// and key prefix are the [`HybridCache`]'s own settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct OrgConfig {
    /// Schema of the organization tables.
    pub schema: String,
    /// Limits on `metadata`.
    pub metadata_limits: neo_core::MetadataLimits,
    /// Most results of one search page.
    pub max_page: u32,
    /// How the tax id check is called (timeout, breaker).
    pub tax_id_check: neo_resilience::ResilienceConfig,
}

impl Default for OrgConfig {
    fn default() -> Self {
        OrgConfig {
            schema: "neo_orgs".to_owned(),
            metadata_limits: neo_core::MetadataLimits::default(),
            max_page: 100,
            tax_id_check: neo_resilience::ResilienceConfig {
                timeout: Some(std::time::Duration::from_secs(2)),
                breaker: Some(neo_resilience::BreakerConfig::default()),
                ..neo_resilience::ResilienceConfig::named("tax-id-check")
            },
        }
    }
}

/// One audit record: who did what, with the organization before and after.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Who.
    pub actor: String,
    /// What (`create`, `update`, `delete`, `restore`).
    pub action: String,
    /// The stored organization before, as JSON.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
}

/// An organization with the sizes of its related sets, read in one query.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OrganizationSummary {
    /// The organization.
    pub organization: Organization,
    /// How many domains it claims.
    pub domains: i64,
    /// How many members it has.
    pub members: i64,
}

/// One page of search results, with the cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchPage {
    /// The organizations, by name then id.
    pub items: Vec<Organization>,
    /// Pass back to get the next page; `None` on the last.
    pub next_cursor: Option<String>,
    /// The number of matches, when asked for.
    pub total: Option<i64>,
}

#[derive(Debug, Clone)]
struct Sql {
    insert: String,
    by_id: String,
    by_ids: String,
    by_slug: String,
    update: String,
    delete_domains: String,
    insert_domains: String,
    audit_list: String,
    search_text: String,
    search_all: String,
    count_text: String,
    count_all: String,
    summaries: String,
    add_member: String,
}

const COLUMNS: &str = "id, name, slug, display_name, description, status, suspension_reason, verification, \
     primary_contact, legal, branding, website, metadata, created_at, updated_at, deleted_at, version";

impl Sql {
    fn new(schema: &Schema, outbox: &Outbox) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, domains, members, audit) = (
            table("organizations")?,
            table("organization_domains")?,
            table("organization_members")?,
            table("organization_audit")?,
        );
        // Every read brings the domains along in the same query (no N+1).
        let select = format!(
            "SELECT o.id, o.name, o.slug, o.display_name, o.description, o.status, o.suspension_reason, \
             o.verification, o.primary_contact, o.legal, o.branding, o.website, o.metadata, o.created_at, \
             o.updated_at, o.deleted_at, o.version, \
             COALESCE((SELECT jsonb_agg(jsonb_build_object('domain', d.domain, 'verification_token', \
                 d.verification_token, 'verified_at', d.verified_at) ORDER BY d.domain) \
                 FROM {domains} d WHERE d.organization_id = o.id), '[]') AS domains \
             FROM {orgs} o"
        );
        Ok(Sql {
            // One statement (one round trip, atomic without BEGIN): the rows, their audit
            // records and their events.
            insert: format!(
                "WITH ins AS (INSERT INTO {orgs} ({COLUMNS}) SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::uuid[], $10::jsonb[], \
                 $11::jsonb[], $12::text[], $13::jsonb[], $14::timestamptz[], $15::timestamptz[], \
                 $16::timestamptz[], $17::int8[]) RETURNING *), \
                 audited AS (INSERT INTO {audit} (organization_id, actor, action, before, after) \
                   SELECT ins.id, $18, 'create', NULL, to_jsonb(ins) FROM ins), \
                 {published} SELECT count(*) FROM ins",
                published = outbox.publish_cte(19)
            ),
            by_id: format!("{select} WHERE o.id = $1 AND (o.deleted_at IS NULL OR $2)"),
            by_ids: format!("{select} WHERE o.id = ANY($1) AND o.deleted_at IS NULL"),
            by_slug: format!("{select} WHERE o.slug = $1 AND o.deleted_at IS NULL"),
            // One statement: lock the row, update it if the caller's version is current, audit
            // the change (rows before and after) and publish its events, all only if it updated.
            // Returns the stored version and the new one (NULL when the version was stale).
            update: format!(
                "WITH prior AS (SELECT o.* FROM {orgs} o WHERE o.id = $1 FOR UPDATE), \
                 updated AS (UPDATE {orgs} o SET name = $2, display_name = $3, description = $4, status = $5, \
                   suspension_reason = $6, verification = $7, primary_contact = $8, legal = $9, branding = $10, \
                   website = $11, metadata = $12, updated_at = $13, deleted_at = $14, version = o.version + 1 \
                   FROM prior p WHERE o.id = p.id AND p.version = $15 RETURNING o.*), \
                 audited AS (INSERT INTO {audit} (organization_id, actor, action, before, after) \
                   SELECT u.id, $16, $17, to_jsonb(p), to_jsonb(u) FROM updated u CROSS JOIN prior p), \
                 {published} SELECT p.version, (SELECT u.version FROM updated u) FROM prior p",
                published = outbox.publish_cte_when(18, "EXISTS (SELECT 1 FROM updated)")
            ),
            delete_domains: format!("DELETE FROM {domains} WHERE organization_id = $1"),
            insert_domains: format!(
                "INSERT INTO {domains} (organization_id, domain, verification_token, verified_at) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[])"
            ),
            audit_list: format!(
                "SELECT actor, action, before, after, at FROM {audit} WHERE organization_id = $1 ORDER BY id"
            ),
            // Trigram match on name and slug (GIN index), or an exact claimed domain; keyset
            // on (name, id).
            // Matches come from two indexed lookups (trigram on name and slug, the unique
            // domain), never an OR the planner cannot split; keyset on (name, id) from ('', nil)
            // for the first page.
            search_text: format!(
                "{select} WHERE o.deleted_at IS NULL AND o.id IN ( \
                   SELECT m.id FROM {orgs} m WHERE m.deleted_at IS NULL AND (m.name || ' ' || m.slug) ILIKE '%' || $1 || '%' \
                   UNION SELECT d.organization_id FROM {domains} d WHERE d.domain = lower($1)) \
                 AND (o.name, o.id) > ($2, $3::uuid) ORDER BY o.name, o.id LIMIT $4"
            ),
            search_all: format!(
                "{select} WHERE o.deleted_at IS NULL AND (o.name, o.id) > ($2, $3::uuid) \
                 AND $1::text IS NULL ORDER BY o.name, o.id LIMIT $4"
            ),
            count_text: format!(
                "SELECT count(*) FROM ( \
                   SELECT m.id FROM {orgs} m WHERE m.deleted_at IS NULL AND (m.name || ' ' || m.slug) ILIKE '%' || $1 || '%' \
                   UNION SELECT d.organization_id FROM {domains} d JOIN {orgs} o ON o.id = d.organization_id \
                     WHERE d.domain = lower($1) AND o.deleted_at IS NULL) matches"
            ),
            count_all: format!(
                "SELECT count(*) FROM {orgs} o WHERE o.deleted_at IS NULL AND $1::text IS NULL"
            ),
            summaries: format!(
                "SELECT s.*, \
                 (SELECT count(*) FROM {domains} d WHERE d.organization_id = s.id) AS domain_count, \
                 (SELECT count(*) FROM {members} m WHERE m.organization_id = s.id) AS member_count \
                 FROM ({select} WHERE o.id = ANY($1) AND o.deleted_at IS NULL) s"
            ),
            add_member: format!(
                "INSERT INTO {members} (organization_id, user_id, role) VALUES ($1, $2, $3) \
                 ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role"
            ),
        })
    }
}

/// Organizations in PostgreSQL: every change writes the row, its audit record and its domain
/// events (through the [`Outbox`]) in one transaction, and keeps the cache current. Cheap to
/// clone.
///
/// # Example
/// ```no_run
/// # async fn demo(db: neo_db::Db, outbox: neo_events::Outbox) -> Result<(), neo_orgs::OrgError> {
/// use neo_core::Slug;
/// use neo_orgs::{NewOrganization, OrgConfig, OrganizationService};
/// let orgs = OrganizationService::new(&db, outbox, None, OrgConfig::default())?;
/// orgs.migrate().await?;
/// let acme = orgs.create("admin@example.com", NewOrganization::new("Acme", Slug::parse("acme")?)).await?;
/// let mut loaded = orgs.get(acme.id()).await?;
/// loaded.verify(vec!["kyc-1".into()])?;
/// let saved = orgs.save("admin@example.com", loaded).await?; // optimistic: fails on a stale version
/// assert_eq!(saved.version(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OrganizationService {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    tax_ids: Arc<dyn crate::TaxIdValidator>,
    tax_id_policy: neo_resilience::Policy,
    db: Db,
    outbox: Outbox,
    cache: Option<HybridCache<Organization>>,
    config: OrgConfig,
    schema: Schema,
    sql: Sql,
}

impl std::fmt::Debug for OrganizationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganizationService")
            .field("config", &self.inner.config)
            .field("cached", &self.inner.cache.is_some())
            .finish_non_exhaustive()
    }
}

fn db(error: sqlx::Error) -> OrgError {
    OrgError::Db(neo_db::Error::from(error))
}

fn json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, OrgError> {
    serde_json::to_value(value).map_err(|e| OrgError::invalid("organization", e.to_string()))
}

impl OrganizationService {
    /// A service on `db`, publishing through `outbox`, caching in `cache` when given.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a bad schema name.
    pub fn new(
        db: &Db,
        outbox: Outbox,
        cache: Option<HybridCache<Organization>>,
        config: OrgConfig,
    ) -> Result<Self, OrgError> {
        let schema = Schema::new(&config.schema)?;
        let sql = Sql::new(&schema, &outbox)?;
        let tax_id_policy = neo_resilience::Policy::new(&config.tax_id_check)
            .map_err(|e| OrgError::invalid("tax_id_check configuration", e.to_string()))?;
        Ok(OrganizationService {
            inner: Arc::new(Inner {
                tax_ids: Arc::new(crate::TaxIdFormat),
                tax_id_policy,
                db: db.clone(),
                outbox,
                cache,
                config,
                schema,
                sql,
            }),
        })
    }

    /// Checks tax ids with `validator` (a registry lookup) instead of [`TaxIdFormat`](crate::TaxIdFormat).
    #[must_use]
    pub fn with_tax_id_validator(self, validator: impl crate::TaxIdValidator) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.tax_ids = Arc::new(validator);
        OrganizationService {
            inner: Arc::new(inner),
        }
    }

    /// The organization tables' migrations.
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet, OrgError> {
        Ok(MigrationSet::new("neo_orgs")?.with(
            1,
            "organizations",
            include_str!("../migrations/1_organizations.sql"),
        ))
    }

    /// Creates or upgrades the tables in `config.schema` (and the outbox's own).
    ///
    /// # Errors
    /// A migration error.
    pub async fn migrate(&self) -> Result<MigrationReport, OrgError> {
        self.inner.outbox.migrate().await?;
        Ok(Self::migrations()?
            .run_in_schema(&self.inner.db, &self.inner.schema)
            .await?)
    }

    fn cache_key(id: OrganizationId) -> String {
        format!("org:{id}")
    }

    /// Creates an organization; a taken slug is an error of kind `AlreadyExists`.
    ///
    /// # Errors
    /// Validation, duplicate slug, or a database error; nothing is written then.
    pub async fn create(
        &self,
        actor: &str,
        new: NewOrganization,
    ) -> Result<Organization, OrgError> {
        let mut created = self.batch_create(actor, vec![new]).await?;
        created
            .pop()
            .ok_or_else(|| OrgError::invalid("organization", "nothing created"))
    }

    /// Creates many organizations in one transaction (one statement for the rows, one for
    /// the audit, one for the events): all or nothing.
    ///
    /// # Errors
    /// As [`create`](Self::create), for the first bad one; nothing is written then.
    pub async fn batch_create(
        &self,
        actor: &str,
        news: Vec<NewOrganization>,
    ) -> Result<Vec<Organization>, OrgError> {
        let limits = self.inner.config.metadata_limits;
        let mut orgs = Vec::with_capacity(news.len());
        for new in news {
            // Metadata is checked against this service's limits, not only the defaults.
            Metadata::new(new.metadata.clone().into_value(), &limits)?;
            if let Some(tax_id) = &new.legal.tax_id {
                crate::validate::check_tax_id(
                    self.inner.tax_ids.as_ref(),
                    &self.inner.tax_id_policy,
                    new.legal.country.as_ref(),
                    tax_id,
                )
                .await?;
            }
            orgs.push(Organization::create(new)?);
        }
        let mut events = Vec::new();
        for org in &mut orgs {
            events.extend(org.take_events());
        }
        self.insert_rows(&orgs, actor, &events).await?;
        Ok(orgs)
    }

    async fn insert_rows(
        &self,
        orgs: &[Organization],
        actor: &str,
        events: &[neo_events::DomainEvent],
    ) -> Result<(), OrgError> {
        let (events, channel) = self.inner.outbox.publish_params(events);
        let col = |f: fn(&Organization) -> Result<serde_json::Value, OrgError>| {
            orgs.iter().map(f).collect::<Result<Vec<_>, _>>()
        };
        sqlx::query(AssertSqlSafe(self.inner.sql.insert.clone()))
            .bind(orgs.iter().map(|o| Uuid::from(o.id)).collect::<Vec<_>>())
            .bind(orgs.iter().map(|o| o.name.clone()).collect::<Vec<_>>())
            .bind(
                orgs.iter()
                    .map(|o| o.slug.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                orgs.iter()
                    .map(|o| o.display_name.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                orgs.iter()
                    .map(|o| o.description.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(orgs.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
            .bind(
                orgs.iter()
                    .map(|o| o.suspension_reason.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(col(|o| json(&o.verification))?)
            .bind(
                orgs.iter()
                    .map(|o| o.primary_contact.map(Uuid::from))
                    .collect::<Vec<_>>(),
            )
            .bind(col(|o| json(&o.legal))?)
            .bind(col(|o| json(&o.branding))?)
            .bind(
                orgs.iter()
                    .map(|o| o.website.as_ref().map(|w| w.as_str().to_owned()))
                    .collect::<Vec<_>>(),
            )
            .bind(col(|o| json(&o.metadata))?)
            .bind(orgs.iter().map(|o| o.created_at).collect::<Vec<_>>())
            .bind(orgs.iter().map(|o| o.updated_at).collect::<Vec<_>>())
            .bind(orgs.iter().map(|o| o.deleted_at).collect::<Vec<_>>())
            .bind(orgs.iter().map(|o| o.version).collect::<Vec<_>>())
            .bind(actor)
            .bind(events)
            .bind(channel)
            .execute(self.inner.db.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// An organization by id, from the cache when it holds it.
    ///
    /// # Errors
    /// [`OrgError::NotFound`] (also for a deleted one); a database error.
    pub async fn get(&self, id: OrganizationId) -> Result<Organization, OrgError> {
        let Some(cache) = &self.inner.cache else {
            return self
                .load(id, false)
                .await?
                .ok_or_else(|| OrgError::not_found("organization", id));
        };
        let service = self.clone();
        cache
            .get_or_load(&Self::cache_key(id), move || async move {
                service.load(id, false).await
            })
            .await?
            .ok_or_else(|| OrgError::not_found("organization", id))
    }

    async fn load(
        &self,
        id: OrganizationId,
        deleted_too: bool,
    ) -> Result<Option<Organization>, OrgError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.by_id.clone()))
            .bind(Uuid::from(id))
            .bind(deleted_too)
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db)?;
        row.as_ref().map(from_row).transpose()
    }

    /// An organization by slug.
    ///
    /// # Errors
    /// [`OrgError::NotFound`]; a database error.
    pub async fn get_by_slug(&self, slug: &Slug) -> Result<Organization, OrgError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.by_slug.clone()))
            .bind(slug.as_str())
            .fetch_optional(self.inner.db.pool())
            .await
            .map_err(db)?;
        row.as_ref()
            .map(from_row)
            .transpose()?
            .ok_or_else(|| OrgError::not_found("organization", slug.as_str()))
    }

    /// Organizations by id, aligned with `ids` (`None` for a missing or deleted one): the
    /// cache first, then one query for the misses.
    ///
    /// # Errors
    /// A database error.
    pub async fn get_many(
        &self,
        ids: &[OrganizationId],
    ) -> Result<Vec<Option<Organization>>, OrgError> {
        let Some(cache) = &self.inner.cache else {
            let mut found = self.load_many(ids.to_vec()).await?;
            return Ok(ids
                .iter()
                .map(|id| found.remove(&Self::cache_key(*id)))
                .collect());
        };
        let keys: Vec<String> = ids.iter().map(|id| Self::cache_key(*id)).collect();
        let service = self.clone();
        let by_key: HashMap<String, OrganizationId> =
            keys.iter().cloned().zip(ids.iter().copied()).collect();
        let results = cache
            .get_or_load_many(&keys, move |missing: Vec<String>| async move {
                let ids = missing
                    .iter()
                    .filter_map(|k| by_key.get(k).copied())
                    .collect();
                service.load_many(ids).await
            })
            .await;
        results
            .into_iter()
            .map(|r| r.map_err(OrgError::from))
            .collect()
    }

    async fn load_many(
        &self,
        ids: Vec<OrganizationId>,
    ) -> Result<HashMap<String, Organization>, OrgError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.by_ids.clone()))
            .bind(ids.into_iter().map(Uuid::from).collect::<Vec<_>>())
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| from_row(row).map(|org| (Self::cache_key(org.id), org)))
            .collect()
    }

    /// Saves an organization changed through its methods, if nobody saved it since it was
    /// read (its version); writes the audit record and its events in the same transaction.
    /// Returns it with its new version.
    ///
    /// # Errors
    /// [`OrgError::Conflict`] for a stale version; [`OrgError::NotFound`]; a duplicate domain
    /// is an error of kind `AlreadyExists`; a database error. Nothing is written then.
    pub async fn save(&self, actor: &str, org: Organization) -> Result<Organization, OrgError> {
        self.write(actor, org, "update").await
    }

    /// The row, its audit record and its events in one statement; the domains, when they
    /// changed, in the same transaction.
    async fn write(
        &self,
        actor: &str,
        mut org: Organization,
        action: &str,
    ) -> Result<Organization, OrgError> {
        let events = org.take_events();
        org.updated_at = now();
        let (events, channel) = self.inner.outbox.publish_params(&events);
        let statement =
            sqlx::query_as::<_, (i64, Option<i64>)>(AssertSqlSafe(self.inner.sql.update.clone()))
                .bind(Uuid::from(org.id))
                .bind(&org.name)
                .bind(&org.display_name)
                .bind(&org.description)
                .bind(org.status.as_str())
                .bind(&org.suspension_reason)
                .bind(json(&org.verification)?)
                .bind(org.primary_contact.map(Uuid::from))
                .bind(json(&org.legal)?)
                .bind(json(&org.branding)?)
                .bind(org.website.as_ref().map(|w| w.as_str().to_owned()))
                .bind(json(&org.metadata)?)
                .bind(org.updated_at)
                .bind(org.deleted_at)
                .bind(org.version)
                .bind(actor)
                .bind(action)
                .bind(events)
                .bind(channel);
        let (outcome, tx) = if org.domains_changed {
            let mut tx = self.inner.db.begin().await?;
            let outcome = statement.fetch_optional(&mut **tx).await.map_err(db)?;
            (outcome, Some(tx))
        } else {
            let outcome = statement
                .fetch_optional(self.inner.db.pool())
                .await
                .map_err(db)?;
            (outcome, None)
        };
        let (stored, new_version) =
            outcome.ok_or_else(|| OrgError::not_found("organization", org.id))?;
        let new_version = new_version.ok_or_else(|| OrgError::Conflict {
            id: org.id.to_string(),
            expected: org.version,
            actual: stored,
        })?;
        if let Some(mut tx) = tx {
            self.replace_domains(&mut tx, &org).await?;
            tx.commit().await?;
        }
        org.version = new_version;
        org.domains_changed = false;
        self.forget(org.id).await;
        Ok(org)
    }

    async fn replace_domains(
        &self,
        tx: &mut neo_db::UnitOfWork,
        org: &Organization,
    ) -> Result<(), OrgError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.delete_domains.clone()))
            .bind(Uuid::from(org.id))
            .execute(&mut ***tx)
            .await
            .map_err(db)?;
        let domains = &org.domains;
        sqlx::query(AssertSqlSafe(self.inner.sql.insert_domains.clone()))
            .bind(Uuid::from(org.id))
            .bind(
                domains
                    .iter()
                    .map(|d| d.domain.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                domains
                    .iter()
                    .map(|d| d.verification_token.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(domains.iter().map(|d| d.verified_at).collect::<Vec<_>>())
            .execute(&mut ***tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn forget(&self, id: OrganizationId) {
        if let Some(cache) = &self.inner.cache
            && let Err(error) = cache.remove(&Self::cache_key(id)).await
        {
            tracing::warn!(%id, %error, "could not evict the organization from the cache");
        }
    }

    /// Soft-deletes an organization (its slug stays reserved).
    ///
    /// # Errors
    /// As [`save`](Self::save); [`OrgError::Transition`] when already deleted.
    pub async fn delete(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
    ) -> Result<Organization, OrgError> {
        self.lifecycle(actor, id, version, "delete", Organization::mark_deleted)
            .await
    }

    /// Restores a soft-deleted organization.
    ///
    /// # Errors
    /// As [`save`](Self::save); [`OrgError::Transition`] when not deleted.
    pub async fn restore(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
    ) -> Result<Organization, OrgError> {
        self.lifecycle(actor, id, version, "restore", Organization::mark_restored)
            .await
    }

    /// Loads an organization (deleted too), applies `change` at the caller's `version` and
    /// writes it.
    async fn lifecycle(
        &self,
        actor: &str,
        id: OrganizationId,
        version: i64,
        action: &str,
        change: fn(&mut Organization) -> Result<(), OrgError>,
    ) -> Result<Organization, OrgError> {
        let mut org = self
            .load(id, true)
            .await?
            .ok_or_else(|| OrgError::not_found("organization", id))?;
        org.version = version;
        change(&mut org)?;
        self.write(actor, org, action).await
    }

    /// Organizations whose name or slug contains `text` (trigram index), or that claim the
    /// domain `text`; by name, `limit` per page, after `cursor`. Counts the matches only when
    /// `count` is set.
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for a cursor this service did not make or a zero limit; a
    /// database error.
    pub async fn search(
        &self,
        text: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
        count: bool,
    ) -> Result<SearchPage, OrgError> {
        if limit == 0 {
            return Err(OrgError::invalid("limit", "must be at least 1"));
        }
        let limit = limit.min(self.inner.config.max_page);
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = text
            && t.chars().count() > 200
        {
            return Err(OrgError::invalid(
                "search text",
                "longer than 200 characters",
            ));
        }
        // ILIKE wildcards in the text are matched literally.
        let pattern = text.map(|t| {
            t.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        });
        let after = cursor.map(decode_cursor).transpose()?;
        let sql = &self.inner.sql;
        let (search, count_sql) = match pattern {
            Some(_) => (&sql.search_text, &sql.count_text),
            None => (&sql.search_all, &sql.count_all),
        };
        let (after_name, after_id) = after.unwrap_or((String::new(), Uuid::nil()));
        let rows = sqlx::query(AssertSqlSafe(search.clone()))
            .bind(&pattern)
            .bind(after_name)
            .bind(after_id)
            .bind(i64::from(limit) + 1)
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db)?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|o| encode_cursor(&o.name, o.id))
        } else {
            None
        };
        let total = if count {
            Some(
                sqlx::query_scalar(AssertSqlSafe(count_sql.clone()))
                    .bind(&pattern)
                    .fetch_one(self.inner.db.pool())
                    .await
                    .map_err(db)?,
            )
        } else {
            None
        };
        Ok(SearchPage {
            items,
            next_cursor,
            total,
        })
    }

    /// Organizations with the number of their domains and members, in one query.
    ///
    /// # Errors
    /// A database error.
    pub async fn summaries(
        &self,
        ids: &[OrganizationId],
    ) -> Result<Vec<OrganizationSummary>, OrgError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.summaries.clone()))
            .bind(ids.iter().map(|id| Uuid::from(*id)).collect::<Vec<_>>())
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(OrganizationSummary {
                    organization: from_row(row)?,
                    domains: row.try_get("domain_count").map_err(db)?,
                    members: row.try_get("member_count").map_err(db)?,
                })
            })
            .collect()
    }

    /// Adds a member (or changes their role).
    ///
    /// # Errors
    /// [`OrgError::Invalid`] for an empty role; [`OrgError::NotFound`]; a database error.
    pub async fn add_member(
        &self,
        org: OrganizationId,
        user: neo_core::UserId,
        role: &str,
    ) -> Result<(), OrgError> {
        if role.trim().is_empty() || role.len() > 64 {
            return Err(OrgError::invalid("role", "1 to 64 characters"));
        }
        sqlx::query(AssertSqlSafe(self.inner.sql.add_member.clone()))
            .bind(Uuid::from(org))
            .bind(Uuid::from(user))
            .bind(role.trim())
            .execute(self.inner.db.pool())
            .await
            .map_err(|e| match neo_db::Error::from(e) {
                error
                    if neo_core::HasErrorKind::kind(&error) == neo_core::ErrorKind::Validation =>
                {
                    OrgError::not_found("organization", org)
                }
                error => OrgError::Db(error),
            })?;
        Ok(())
    }

    /// The audit trail of an organization, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn audit_trail(&self, id: OrganizationId) -> Result<Vec<AuditEntry>, OrgError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.audit_list.clone()))
            .bind(Uuid::from(id))
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    actor: r.try_get(0)?,
                    action: r.try_get(1)?,
                    before: r.try_get(2)?,
                    after: r.try_get(3)?,
                    at: r.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    /// The settings.
    pub fn config(&self) -> &OrgConfig {
        &self.inner.config
    }

    /// The cache, when the service has one.
    pub fn cache(&self) -> Option<&HybridCache<Organization>> {
        self.inner.cache.as_ref()
    }
}

fn encode_cursor(name: &str, id: OrganizationId) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::json!([name, id]).to_string())
}

fn decode_cursor(cursor: &str) -> Result<(String, Uuid), OrgError> {
    use base64::Engine;
    let bad = || OrgError::invalid("cursor", "not a cursor from this service's search");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let (name, id): (String, Uuid) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((name, id))
}

fn from_row(row: &PgRow) -> Result<Organization, OrgError> {
    let id: Uuid = row.try_get(0).map_err(db)?;
    let slug: String = row.try_get(2).map_err(db)?;
    let status: String = row.try_get(5).map_err(db)?;
    let contact: Option<Uuid> = row.try_get(8).map_err(db)?;
    let website: Option<String> = row.try_get(11).map_err(db)?;
    // jsonb straight into the typed parts, without an intermediate `serde_json::Value`.
    let Json(verification): Json<Verification> = row.try_get(7).map_err(db)?;
    let Json(legal): Json<Legal> = row.try_get(9).map_err(db)?;
    let Json(branding): Json<Branding> = row.try_get(10).map_err(db)?;
    let Json(metadata): Json<Metadata> = row.try_get(12).map_err(db)?;
    let Json(domains): Json<Vec<OrgDomain>> = row.try_get(17).map_err(db)?;
    Ok(Organization {
        id: OrganizationId::from_uuid(id)?,
        name: row.try_get(1).map_err(db)?,
        slug: Slug::parse(&slug)?,
        display_name: row.try_get(3).map_err(db)?,
        description: row.try_get(4).map_err(db)?,
        status: OrgStatus::parse(&status)?,
        suspension_reason: row.try_get(6).map_err(db)?,
        verification,
        primary_contact: contact.map(neo_core::UserId::from_uuid).transpose()?,
        legal,
        branding,
        website: website
            .as_deref()
            .map(neo_core::HttpsUrl::parse)
            .transpose()?,
        domains,
        metadata,
        created_at: row.try_get(13).map_err(db)?,
        updated_at: row.try_get(14).map_err(db)?,
        deleted_at: row.try_get(15).map_err(db)?,
        version: row.try_get(16).map_err(db)?,
        events: Vec::new(),
        domains_changed: false,
    })
}
