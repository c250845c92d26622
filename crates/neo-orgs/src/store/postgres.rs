//! The PostgreSQL store: one schema (per tenant if you like), every write one statement with
//! its audit rows and its outbox events.
//!
//! Why neo-db's `BatchRepository` and `CopyWriter` are not used here: every write is one
//! statement that also writes its audit rows and its outbox events (`WITH ins AS (INSERT ...
//! FROM UNNEST(...)), audited AS (INSERT ...), published AS (...)`), atomic in one round
//! trip without `BEGIN`. `BatchRepository::save_batch`/`update_batch` send a plain `INSERT`
//! or `UPDATE` of one table, so the audit and the events would need statements of their own
//! in a transaction (three round trips and `BEGIN`/`COMMIT` instead of one); the update here
//! also keeps the JSON documents a save did not change (`COALESCE`) and answers each row
//! with its stored and saved versions (a stale one is a conflict naming both), which
//! `update_batch` does not; and `load_batch` reads `SELECT *` of one table, while every read
//! here brings the organization's domains along in the same query (`get_many`: one query
//! for a thousand). `COPY` cannot sit in a CTE nor feed the audit and the outbox in its own
//! statement. What fits is used: `Schema`/`TableName`, migration sets and the repository's
//! shape (one array parameter per column, expanded by `UNNEST`).

use super::read_row::{ReadColumns, from_row, from_rows};
use super::tenant_mode::{Mode, Scoped};
use super::{AuditEntry, OrganizationSummary, SearchQuery, StoreFuture, Write};
use crate::model::{Changed, OrgDomain, Organization};
use crate::{OrgError, OrganizationStore};
use neo_core::TenantId;
use neo_core::{OrganizationId, Slug, UserId};
use neo_db::{
    Db, MigrationReport, MigrationSet, ReadSession, RlsSetting, Schema, TableName, TenantIsolation,
};
use neo_events::{DomainEvent, Outbox};
use sqlx::Arguments;
use sqlx::PgPool;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

/// The table's columns in order; also the attributes of `organization_image` (migration 4),
/// which audit records build from them by position.
const COLUMNS: &str = "id, name, slug, display_name, description, status, suspension_reason, verification, \
     primary_contact, legal, branding, website, metadata, created_at, updated_at, deleted_at, version";

/// [`COLUMNS`] as the update statement reads them: the version is the one the caller read.
const COLUMNS_AS_READ: &str = "id, name, slug, display_name, description, status, suspension_reason, \
     verification, primary_contact, legal, branding, website, metadata, created_at, updated_at, \
     deleted_at, expected";

/// The test that organization `alias` is not deleted, for the statements that take
/// organizations by id. Written so that it does not imply the predicate of the partial
/// indexes (`deleted_at IS NULL`), which leaves the primary key as the only index the
/// statement can use. Written `deleted_at IS NULL`, a plan made while the statistics saw no
/// live organization (a new tenant's schema, a table analysed while empty) read the ids out
/// of `organizations_name_id`, where `id` is the last column: 2.80 ms per `lock_org` and
/// 26.8 ms per `summaries` at 20,000 organizations (docs/PERFORMANCE.md).
pub(super) fn not_deleted(alias: &str) -> String {
    format!("num_nulls({alias}.deleted_at) = 1")
}

/// `UNNEST` of the 17 organization arrays that [`organization_arguments`] binds as `$1` to
/// `$17`, then `more` (the statement's own arrays, from `$18`).
fn unnest_organizations(more: &str) -> String {
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(", {more}")
    };
    format!(
        "UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::jsonb[], $9::uuid[], $10::jsonb[], $11::jsonb[], $12::text[], $13::jsonb[], \
         $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::int8[]{more})"
    )
}

/// Adds one argument (an encoding failure is the organization's: a value sqlx cannot send).
fn add<'q, T>(args: &mut PgArguments, value: T) -> Result<(), OrgError>
where
    T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    args.add(value)
        .map_err(|e| OrgError::invalid("organization", e.to_string()))
}

/// Which of an organization's JSON documents a statement sends.
#[derive(Clone, Copy)]
enum Documents {
    /// Every one (an insert).
    All,
    /// Those changed since it was read; NULL for the rest, which the update keeps.
    Changed,
}

/// The organizations as the 17 column arrays of [`unnest_organizations`], in [`COLUMNS`]
/// order; statements add their own arguments after them.
fn organization_arguments(
    orgs: &[&Organization],
    documents: Documents,
) -> Result<PgArguments, OrgError> {
    let sent = |changed: fn(&Changed) -> bool| {
        move |o: &Organization| matches!(documents, Documents::All) || changed(&o.changed)
    };
    let mut args = PgArguments::default();
    add(&mut args, column(orgs, |o| Uuid::from(o.id)))?;
    add(&mut args, column(orgs, |o| o.name.clone()))?;
    add(&mut args, column(orgs, |o| o.slug.as_str().to_owned()))?;
    add(&mut args, column(orgs, |o| o.display_name.clone()))?;
    add(&mut args, column(orgs, |o| o.description.clone()))?;
    add(&mut args, column(orgs, |o| o.status.as_str()))?;
    add(&mut args, column(orgs, |o| o.suspension_reason.clone()))?;
    add(
        &mut args,
        json_column(orgs, sent(|c| c.verification), |o| &o.verification),
    )?;
    add(
        &mut args,
        column(orgs, |o| o.primary_contact.map(Uuid::from)),
    )?;
    add(
        &mut args,
        json_column(orgs, sent(|c| c.legal), |o| &o.legal),
    )?;
    add(
        &mut args,
        json_column(orgs, sent(|c| c.branding), |o| &o.branding),
    )?;
    add(
        &mut args,
        column(orgs, |o| o.website.as_ref().map(|w| w.as_str().to_owned())),
    )?;
    add(
        &mut args,
        json_column(orgs, sent(|c| c.metadata), |o| &o.metadata),
    )?;
    add(&mut args, column(orgs, |o| o.created_at))?;
    add(&mut args, column(orgs, |o| o.updated_at))?;
    add(&mut args, column(orgs, |o| o.deleted_at))?;
    add(&mut args, column(orgs, |o| o.version))?;
    Ok(args)
}

#[derive(Debug)]
pub(super) struct Sql {
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
    pub(super) lock_org: String,
    pub(super) add_member: String,
    /// The statements of memberships and invitations ([`super::membership`]).
    pub(super) members: super::membership::MemberSql,
    /// The statements of invitations ([`super::invitation`]).
    pub(super) invitations: super::invitation::InvitationSql,
    /// The statements of domain claims ([`super::domain_claim`]).
    pub(super) domain_claims: super::domain_claim::ClaimSql,
    /// The statements of verifications ([`super::verification`]).
    pub(super) verifications: super::verification::VerificationSql,
}

impl Sql {
    /// Builds the statements of a schema's tables, publishing through `outbox`.
    fn builder(
        outbox: &Outbox,
    ) -> impl Fn(&Schema) -> Result<Self, OrgError> + Send + Sync + 'static {
        let outbox = outbox.clone();
        move |schema| Sql::new(schema, &outbox)
    }

    pub(super) fn new(schema: &Schema, outbox: &Outbox) -> Result<Self, OrgError> {
        let table = |name: &str| -> Result<String, OrgError> {
            Ok(TableName::new(name)?.in_schema(schema).to_string())
        };
        let (orgs, domains, members, audit) = (
            table("organizations")?,
            table("organization_domains")?,
            table("organization_members")?,
            table("organization_audit")?,
        );
        // The composite type audit records keep rows as (migration 4), and a row of it.
        let image_type = table("organization_image")?;
        let image = |row: &str| -> String {
            let fields: Vec<String> = COLUMNS
                .split(", ")
                .map(|column| format!("{row}.{column}"))
                .collect();
            format!("ROW({})::{image_type}", fields.join(", "))
        };
        // Every read brings the domains along in the same query (no N+1).
        let columns = "o.id, o.name, o.slug, o.display_name, o.description, o.status, \
             o.suspension_reason, o.verification, o.primary_contact, o.legal, o.branding, o.website, \
             o.metadata, o.created_at, o.updated_at, o.deleted_at, o.version";
        let domains_json = "jsonb_agg(jsonb_build_object('domain', d.domain, 'verification_token', \
             d.verification_token, 'verified_at', d.verified_at) ORDER BY d.domain COLLATE \"C\")";
        let select = format!(
            "SELECT {columns}, COALESCE((SELECT {domains_json} FROM {domains} d \
             WHERE d.organization_id = o.id), '[]') AS domains FROM {orgs} o"
        );
        // Many by id (`$1`): the domains of all of them in one grouped scan, joined in, instead
        // of a subquery per row (15-20 % of a 1,000-id read's server time in a probe).
        let select_ids = format!(
            "SELECT {columns}, COALESCE(g.domains, '[]') AS domains FROM {orgs} o \
             LEFT JOIN (SELECT d.organization_id, {domains_json} AS domains FROM {domains} d \
               WHERE d.organization_id = ANY($1) GROUP BY d.organization_id) g \
             ON g.organization_id = o.id"
        );
        // Trigram match on name and slug (GIN index), or an exact claimed domain: two indexed
        // lookups, never an OR the planner cannot split.
        //
        // The index is asked twice: first for the rarest of the terms in `terms` (the text's
        // words and the whole text, from `search_terms`), then for the whole text. GIN reads
        // every trigram of one condition for each row holding its rarest trigram, so a frequent
        // word beside a rare one ("works 871234") made it read "wor", "ork" and "rks" for
        // thousands of rows: 16.5 ms against 0.9 ms at 1,000,000 organizations. The rarest term
        // is the one found least often in the planner's own sample of names and slugs
        // (`pg_stats`, the histogram and common values ANALYZE keeps); with no sample (a new
        // table, or row-level security hiding it) it is the longest word. A text of one term
        // (one word) skips the sample.
        let matching = |terms: &str| {
            format!(
                "SELECT m.id FROM {orgs} m WHERE m.deleted_at IS NULL \
                   AND (m.name || ' ' || m.slug) ILIKE (CASE WHEN cardinality({terms}::text[]) = 1 \
                     THEN '%' || $1 || '%' ELSE ({rarest}) END) \
                   AND (m.name || ' ' || m.slug) ILIKE '%' || $1 || '%' \
                 UNION SELECT d.organization_id FROM {domains} d JOIN {orgs} x ON x.id = d.organization_id \
                   WHERE d.domain = lower($1) AND x.deleted_at IS NULL",
                rarest = format_args!(
                    "WITH sample AS MATERIALIZED (\
                       SELECT lower(coalesce(string_agg(v, ' '), '')) AS text FROM pg_stats s, \
                         unnest(coalesce(s.histogram_bounds::text::text[], '{{}}') \
                           || coalesce(s.most_common_vals::text::text[], '{{}}')) v \
                       WHERE s.attname IN ('name', 'slug') AND (s.schemaname, s.tablename) = \
                         (SELECT n.nspname, c.relname FROM pg_class c \
                           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = '{orgs}'::regclass)) \
                     SELECT '%' || t.term || '%' FROM sample, unnest({terms}::text[]) WITH ORDINALITY t(term, n) \
                     ORDER BY (length(sample.text) - length(replace(sample.text, lower(t.term), ''))) \
                       / greatest(length(t.term), 1), t.n LIMIT 1"
                ),
            )
        };
        Ok(Sql {
            // One statement (one round trip, atomic without BEGIN): the rows, their audit
            // records and their events.
            insert: format!(
                "WITH ins AS (INSERT INTO {orgs} ({COLUMNS}) SELECT * FROM {unnest} RETURNING *), \
                 audited AS (INSERT INTO {audit} (organization_id, actor, action, image) \
                   SELECT ins.id, $18, 'create', {created} FROM ins), \
                 {published} SELECT count(*) FROM ins",
                unnest = unnest_organizations(""),
                created = image("ins"),
                published = outbox.publish_cte(19)
            ),
            by_id: format!("{select} WHERE o.id = $1 AND (o.deleted_at IS NULL OR $2)"),
            // Deleted ones are dropped while decoding (`find_many`), not here: with
            // `deleted_at IS NULL` and no statistics yet (a new table, a new tenant's schema),
            // the planner scanned the partial keyset index (`organizations_name_id`) and,
            // in its generic plan, checked every row of it against the whole id array:
            // 1,000 x 1,000 comparisons for a 1,000-id read, 2.6 ms of server time against
            // 1.1 ms by the primary key (medians of 25 `EXPLAIN ANALYZE`, 1,000 rows).
            by_ids: format!("{select_ids} WHERE o.id = ANY($1)"),
            by_slug: format!("{select} WHERE o.slug = $1 AND o.deleted_at IS NULL"),
            // One statement for any number of writes: lock the rows (in id order, so batches
            // never deadlock), update those whose version is the caller's, audit each change
            // (rows before and after) and publish the events of the updated ones only.
            // Returns, per input, the stored version (NULL: missing) and the new one (NULL:
            // stale).
            update: format!(
                "WITH input AS (SELECT * FROM {unnest} \
                   AS i({COLUMNS_AS_READ}, actor, action)), \
                 prior AS (SELECT o.id, o.version FROM {orgs} o WHERE o.id = ANY($1) ORDER BY o.id FOR UPDATE), \
                 updated AS (UPDATE {orgs} o SET name = i.name, display_name = i.display_name, \
                   description = i.description, status = i.status, suspension_reason = i.suspension_reason, \
                   verification = COALESCE(i.verification, o.verification), primary_contact = i.primary_contact, \
                   legal = COALESCE(i.legal, o.legal), branding = COALESCE(i.branding, o.branding), \
                   website = i.website, metadata = COALESCE(i.metadata, o.metadata), \
                   updated_at = i.updated_at, deleted_at = i.deleted_at, version = o.version + 1 \
                   FROM input i, prior p WHERE o.id = i.id AND p.id = i.id AND p.version = i.expected \
                   RETURNING o.*), \
                 audited AS (INSERT INTO {audit} (organization_id, actor, action, image) \
                   SELECT u.id, i.actor, i.action, {updated} \
                   FROM updated u JOIN input i ON i.id = u.id), \
                 {published} \
                 SELECT i.id, p.version AS stored, u.version AS saved FROM input i \
                   LEFT JOIN prior p ON p.id = i.id LEFT JOIN updated u ON u.id = i.id",
                unnest = unnest_organizations("$18::text[], $19::text[]"),
                updated = image("u"),
                published = outbox
                    .publish_cte_matching(20, "e.aggregate_id IN (SELECT id::text FROM updated)")
            ),
            delete_domains: format!("DELETE FROM {domains} WHERE organization_id = ANY($1)"),
            insert_domains: format!(
                "INSERT INTO {domains} (organization_id, domain, verification_token, verified_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])"
            ),
            // Each record's `before` is the previous record's `after`; records written before
            // migration 4 keep their JSON in `after`.
            audit_list: format!(
                "SELECT actor, action, COALESCE(before, lag(after) OVER (ORDER BY id)) AS before, after, at \
                 FROM (SELECT id, actor, action, before, COALESCE(row_to_json(image), after) AS after, at \
                   FROM {audit} WHERE organization_id = $1) records ORDER BY id"
            ),
            // Keyset on (name, id) from ('', nil) for the first page.
            search_text: format!(
                "{select} WHERE o.deleted_at IS NULL AND o.id IN ({matching}) \
                 AND (o.name, o.id) > ($2, $3::uuid) ORDER BY o.name, o.id LIMIT $4 OFFSET $5",
                matching = matching("$6")
            ),
            search_all: format!(
                "{select} WHERE o.deleted_at IS NULL AND (o.name, o.id) > ($2, $3::uuid) \
                 AND $1::text IS NULL ORDER BY o.name, o.id LIMIT $4 OFFSET $5"
            ),
            count_text: format!("SELECT count(*) FROM ({}) matches", matching("$2")),
            count_all: format!(
                "SELECT count(*) FROM {orgs} o WHERE o.deleted_at IS NULL AND $1::text IS NULL"
            ),
            summaries: format!(
                "SELECT s.*, \
                 (SELECT count(*) FROM {domains} d WHERE d.organization_id = s.id) AS domain_count, \
                 (SELECT count(*) FROM {members} m WHERE m.organization_id = s.id) AS member_count \
                 FROM ({select_ids} WHERE o.id = ANY($1) AND {live}) s",
                live = not_deleted("o")
            ),
            lock_org: format!(
                "SELECT o.id FROM {orgs} o WHERE o.id = $1 AND {live} FOR UPDATE",
                live = not_deleted("o")
            ),
            // Run after `lock_org`, so concurrent adds to one organization count each other.
            add_member: format!(
                "INSERT INTO {members} (organization_id, user_id, role) SELECT $1, $2, $3 \
                 WHERE EXISTS (SELECT 1 FROM {members} WHERE organization_id = $1 AND user_id = $2) \
                    OR (SELECT count(*) FROM {members} WHERE organization_id = $1) < $4 \
                 ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role"
            ),
            members: super::membership::MemberSql::new(schema)?,
            invitations: super::invitation::InvitationSql::new(schema)?,
            domain_claims: super::domain_claim::ClaimSql::new(schema)?,
            verifications: super::verification::VerificationSql::new(schema)?,
        })
    }
}

/// Organizations in PostgreSQL tables in one schema (`OrgConfig::schema`; one per tenant if
/// you like), with their events written through the neo-events [`Outbox`] in the same
/// statement. The default store of
/// [`OrganizationService::new`](crate::OrganizationService::new). Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgOrganizationStore {
    pub(super) inner: std::sync::Arc<Inner>,
    /// The tenant every call acts for ([`for_tenant`](Self::for_tenant)); else the task's
    /// (`neo_tenant::current()`), in a tenant-isolated store.
    pub(super) tenant: Option<TenantId>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) db: Db,
    pub(super) outbox: Outbox,
    pub(super) mode: Mode,
}

pub(super) fn db(error: sqlx::Error) -> OrgError {
    OrgError::Db(neo_db::Error::from(error))
}

/// One column of many organizations, for `UNNEST`.
fn column<T>(orgs: &[&Organization], field: impl Fn(&Organization) -> T) -> Vec<T> {
    orgs.iter().map(|o| field(o)).collect()
}

/// One JSON document of many organizations, encoded straight from the values (no
/// intermediate `serde_json::Value`); NULL where `sent` says no.
fn json_column<'o, T: serde::Serialize>(
    orgs: &[&'o Organization],
    sent: impl Fn(&Organization) -> bool,
    field: impl Fn(&'o Organization) -> &'o T,
) -> Vec<Option<Json<&'o T>>> {
    orgs.iter()
        .map(|o| sent(o).then(|| Json(field(o))))
        .collect()
}

impl PgOrganizationStore {
    /// A store in `schema` on `db`, publishing through `outbox`.
    ///
    /// # Errors
    /// [`OrgError::Core`] for a bad schema name.
    pub fn new(db: &Db, outbox: Outbox, schema: &str) -> Result<Self, OrgError> {
        let mode = Mode::fixed(Schema::new(schema)?, Sql::builder(&outbox))?;
        Ok(PgOrganizationStore {
            inner: std::sync::Arc::new(Inner {
                db: db.clone(),
                outbox,
                mode,
            }),
            tenant: None,
        })
    }

    /// One store for every tenant, isolated by `isolation`: a schema per tenant (its
    /// resolver names it; `schema` is not used), or shared tables in `schema` under
    /// row-level security. Each call acts for the tenant of [`for_tenant`](Self::for_tenant)
    /// or, without one, the task's (`neo_tenant::scope`); a call with neither fails with
    /// [`OrgError::Tenant`] before any query (fail closed). [`migrate`](OrganizationStore::migrate)
    /// creates the tenant's schema and tables (schema per tenant, so it needs a tenant), or
    /// the shared tables with their policies (row-level security; run it as the tables'
    /// owner, and the calls as an application role that is neither the owner nor
    /// `BYPASSRLS`, see [`neo_db::tenancy`]).
    ///
    /// # Errors
    /// [`OrgError::Db`] for a bad schema name.
    pub fn tenant_isolated(
        db: &Db,
        outbox: Outbox,
        schema: &str,
        isolation: TenantIsolation,
    ) -> Result<Self, OrgError> {
        let mode = Mode::isolated(Schema::new(schema)?, isolation, Sql::builder(&outbox))?;
        Ok(PgOrganizationStore {
            inner: std::sync::Arc::new(Inner {
                db: db.clone(),
                outbox,
                mode,
            }),
            tenant: None,
        })
    }

    /// This store acting for `tenant` on every call, whatever the task's tenant (a store
    /// that is not tenant-isolated ignores it). Cheap: shares everything with `self`.
    #[must_use]
    pub fn for_tenant(&self, tenant: TenantId) -> Self {
        PgOrganizationStore {
            inner: std::sync::Arc::clone(&self.inner),
            tenant: Some(tenant),
        }
    }

    /// The migrations of the shared tables under row-level security on `setting`:
    /// [`migrations`](Self::migrations) and one more that adds a `tenant_id` column to each
    /// table (filled from the setting), makes slugs and domains unique per tenant, and
    /// enables and forces the policies.
    ///
    /// # Errors
    /// Never; fallible for symmetry with [`migrations`](Self::migrations).
    pub fn rls_migrations(setting: &RlsSetting) -> Result<MigrationSet, OrgError> {
        super::members_rls::with_rls_migrations(
            Self::migrations()?.with_sql(
                5,
                "tenant row-level security",
                super::tenant_mode::rls_migration(setting)?,
            ),
            setting,
        )
    }

    /// The organization tables' migrations.
    ///
    /// # Errors
    /// Never; fallible for symmetry with other crates' sets.
    pub fn migrations() -> Result<MigrationSet, OrgError> {
        Ok(MigrationSet::new("neo_orgs")?
            .with(
                1,
                "organizations",
                include_str!("../../migrations/1_organizations.sql"),
            )
            .with(
                2,
                "audit as json",
                include_str!("../../migrations/2_audit_as_json.sql"),
            )
            .with(
                3,
                "organizations fillfactor",
                include_str!("../../migrations/3_organizations_fillfactor.sql"),
            )
            .with(
                4,
                "audit images",
                include_str!("../../migrations/4_audit_images.sql"),
            )
            .with(
                10,
                "memberships by user",
                include_str!("../../migrations/10_memberships_by_user.sql"),
            )
            .with(
                12,
                "invitations",
                include_str!("../../migrations/12_invitations.sql"),
            )
            .with(
                14,
                "domain claims",
                include_str!("../../migrations/14_domain_claims.sql"),
            )
            .with(
                16,
                "verifications",
                include_str!("../../migrations/16_verifications.sql"),
            ))
    }

    /// The update statement of `writes` (see `Sql::update`).
    fn update_arguments(&self, writes: &[Write<'_>]) -> Result<PgArguments, OrgError> {
        let orgs: Vec<&Organization> = writes.iter().map(|w| w.organization).collect();
        let (events, channel) = self
            .inner
            .outbox
            .publish_params(writes.iter().flat_map(|w| w.events));
        let mut args = organization_arguments(&orgs, Documents::Changed)?;
        add(
            &mut args,
            writes.iter().map(|w| w.actor).collect::<Vec<_>>(),
        )?;
        add(
            &mut args,
            writes.iter().map(|w| w.action).collect::<Vec<_>>(),
        )?;
        add(&mut args, events)?;
        add(&mut args, channel)?;
        Ok(args)
    }

    async fn update_rows(
        &self,
        writes: &[Write<'_>],
    ) -> Result<Vec<Result<i64, OrgError>>, OrgError> {
        let scope = self.scope()?;
        let rows = if writes.iter().any(Write::domains_changed) {
            // The rows and the domains they now claim, in one transaction.
            let mut tx = self.begin(&scope).await?;
            let rows = self.update_in(&mut tx, &scope, writes).await?;
            tx.commit().await?;
            rows
        } else {
            let statement = sqlx::query_with(
                AssertSqlSafe(scope.sql.update.clone()),
                self.update_arguments(writes)?,
            )
            .persistent(self.inner.db.pooler().named_statements());
            let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
            let rows = statement.fetch_all(&mut *conn).await.map_err(db)?;
            conn.finish().await?;
            outcomes_of(&rows)?
        };
        Ok(results_of(writes, rows))
    }

    /// Runs the update of `writes` (rows, audit records, events, and the domains of those
    /// whose domains changed) in `tx`; the outcomes per row, for [`results_of`].
    pub(super) async fn update_in(
        &self,
        tx: &mut neo_db::UnitOfWork,
        scope: &Scoped,
        writes: &[Write<'_>],
    ) -> Result<Vec<Outcome>, OrgError> {
        let statement = sqlx::query_with(
            AssertSqlSafe(scope.sql.update.clone()),
            self.update_arguments(writes)?,
        )
        .persistent(self.inner.db.pooler().named_statements());
        let rows = outcomes_of(&statement.fetch_all(&mut ***tx).await.map_err(db)?)?;
        let updated: std::collections::HashSet<Uuid> = rows
            .iter()
            .filter_map(|(id, _, new)| new.map(|_| *id))
            .collect();
        let rewritten: Vec<&Organization> = writes
            .iter()
            .map(|w| w.organization)
            .filter(|o| o.changed.domains && updated.contains(&Uuid::from(o.id)))
            .collect();
        if !rewritten.is_empty() {
            self.replace_domains(tx, scope, &rewritten).await?;
        }
        Ok(rows)
    }

    /// The live organization `id`, locked in `tx` until it ends; `None` when there is none
    /// (or it is deleted).
    pub(super) async fn lock_organization(
        &self,
        tx: &mut neo_db::UnitOfWork,
        scope: &Scoped,
        id: OrganizationId,
    ) -> Result<Option<Organization>, OrgError> {
        let named = self.inner.db.pooler().named_statements();
        let locked = sqlx::query(AssertSqlSafe(scope.sql.lock_org.clone()))
            .persistent(named)
            .bind(Uuid::from(id))
            .fetch_optional(&mut ***tx)
            .await
            .map_err(db)?;
        if locked.is_none() {
            return Ok(None);
        }
        let row = sqlx::query(AssertSqlSafe(scope.sql.by_id.clone()))
            .persistent(named)
            .bind(Uuid::from(id))
            .bind(false)
            .fetch_optional(&mut ***tx)
            .await
            .map_err(db)?;
        row.as_ref()
            .map(|row| from_row(row, &ReadColumns::of(row)?))
            .transpose()
    }

    async fn replace_domains(
        &self,
        tx: &mut neo_db::UnitOfWork,
        scope: &Scoped,
        orgs: &[&Organization],
    ) -> Result<(), OrgError> {
        sqlx::query(AssertSqlSafe(scope.sql.delete_domains.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(column(orgs, |o| Uuid::from(o.id)))
            .execute(&mut ***tx)
            .await
            .map_err(db)?;
        let claims: Vec<(Uuid, &OrgDomain)> = orgs
            .iter()
            .flat_map(|o| o.domains.iter().map(|d| (Uuid::from(o.id), d)))
            .collect();
        sqlx::query(AssertSqlSafe(scope.sql.insert_domains.clone()))
            .persistent(self.inner.db.pooler().named_statements())
            .bind(claims.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(
                claims
                    .iter()
                    .map(|(_, d)| d.domain.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                claims
                    .iter()
                    .map(|(_, d)| d.verification_token.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                claims
                    .iter()
                    .map(|(_, d)| d.verified_at)
                    .collect::<Vec<_>>(),
            )
            .execute(&mut ***tx)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The pool for a read that tolerates replica lag: a replica that has replayed the
    /// caller's last write ([`ReadSession`]), else the primary; the primary without replicas.
    fn reader(&self) -> &PgPool {
        self.inner.db.read_pool()
    }

    /// Runs a cache fill where every write made through this `Db` (and the caller's own,
    /// if it came through another process) is visible.
    async fn filling<T>(&self, read: StoreFuture<'_, T>) -> Result<T, OrgError> {
        if !self.inner.db.has_replicas() {
            return read.await;
        }
        let fill = ReadSession::new();
        if let Some(lsn) = self.inner.db.last_write() {
            fill.observe(lsn);
        }
        if let Some(lsn) = ReadSession::current().and_then(|s| s.last_write()) {
            fill.observe(lsn);
        }
        fill.scope(read).await
    }

    async fn fetch_all(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        scope: &Scoped,
    ) -> Result<Vec<Organization>, OrgError> {
        self.fetch_all_but(query, scope, false).await
    }

    /// The organizations the query reads; without the deleted ones when `skip_deleted`
    /// (decoded no further than their `deleted_at`).
    async fn fetch_all_but(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        scope: &Scoped,
        skip_deleted: bool,
    ) -> Result<Vec<Organization>, OrgError> {
        let mut conn = self.connection_on(self.reader(), scope).await?;
        let rows = query.fetch_all(&mut *conn).await.map_err(db)?;
        conn.finish().await?;
        from_rows(&rows, skip_deleted)
    }

    async fn fetch_optional(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        pool: &PgPool,
        scope: &Scoped,
    ) -> Result<Option<Organization>, OrgError> {
        let mut conn = self.connection_on(pool, scope).await?;
        let row = query.fetch_optional(&mut *conn).await.map_err(db)?;
        conn.finish().await?;
        row.as_ref()
            .map(|row| from_row(row, &ReadColumns::of(row)?))
            .transpose()
    }

    async fn add_member_locked(
        &self,
        organization: OrganizationId,
        user: UserId,
        role: &str,
        max_members: u32,
    ) -> Result<(), OrgError> {
        let (mut tx, scope) = self.begin_scoped().await?;
        self.add_member_in(&mut tx, &scope, organization, user, role, max_members)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// ILIKE wildcards in search text are matched literally.
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The terms a text search weighs to pick the one the trigram index is asked for first: the
/// text's words of three or more letters or digits (a shorter word has no trigram of its own
/// in a `%...%` pattern), longest first, then the whole text with ILIKE's wildcards escaped.
/// A tie in the sample's counts goes to the earlier term.
fn search_terms(text: &str) -> Vec<String> {
    let mut words: Vec<&str> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.chars().nth(2).is_some() && !words.contains(&word) {
            words.push(word);
        }
    }
    words.sort_by_key(|word| std::cmp::Reverse(word.chars().count()));
    let whole = like_literal(text);
    let mut terms: Vec<String> = words.into_iter().map(str::to_owned).collect();
    if !terms.contains(&whole) {
        terms.push(whole);
    }
    terms
}

impl OrganizationStore for PgOrganizationStore {
    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        Box::pin(async move {
            let (set, schema) = self.migrations_here()?;
            self.inner.outbox.migrate().await?;
            Ok(set.run_in_schema(&self.inner.db, &schema).await?)
        })
    }

    fn insert<'a>(
        &'a self,
        actor: &'a str,
        organizations: &'a [Organization],
        events: &'a [DomainEvent],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let scope = self.scope()?;
            let orgs: Vec<&Organization> = organizations.iter().collect();
            let (events, channel) = self.inner.outbox.publish_params(events);
            let mut args = organization_arguments(&orgs, Documents::All)?;
            add(&mut args, actor)?;
            add(&mut args, events)?;
            add(&mut args, channel)?;
            let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
            sqlx::query_with(AssertSqlSafe(scope.sql.insert.clone()), args)
                .persistent(self.inner.db.pooler().named_statements())
                .execute(&mut *conn)
                .await
                .map_err(db)?;
            conn.finish().await?;
            Ok(())
        })
    }

    fn update<'a>(
        &'a self,
        writes: &'a [Write<'a>],
    ) -> StoreFuture<'a, Vec<Result<i64, OrgError>>> {
        Box::pin(self.update_rows(writes))
    }

    fn find(
        &self,
        id: OrganizationId,
        include_deleted: bool,
    ) -> StoreFuture<'_, Option<Organization>> {
        Box::pin(async move {
            let scope = self.scope()?;
            // A deleted one is asked for by delete and restore, which write what they read:
            // from the primary.
            let pool = if include_deleted {
                self.inner.db.pool()
            } else {
                self.reader()
            };
            self.fetch_optional(
                sqlx::query(AssertSqlSafe(scope.sql.by_id.clone()))
                    .persistent(self.inner.db.pooler().named_statements())
                    .bind(Uuid::from(id))
                    .bind(include_deleted),
                pool,
                &scope,
            )
            .await
        })
    }

    fn find_by_slug<'a>(&'a self, slug: &'a Slug) -> StoreFuture<'a, Option<Organization>> {
        Box::pin(async move {
            let scope = self.scope()?;
            self.fetch_optional(
                sqlx::query(AssertSqlSafe(scope.sql.by_slug.clone()))
                    .persistent(self.inner.db.pooler().named_statements())
                    .bind(slug.as_str()),
                self.reader(),
                &scope,
            )
            .await
        })
    }

    fn find_many<'a>(&'a self, ids: &'a [OrganizationId]) -> StoreFuture<'a, Vec<Organization>> {
        Box::pin(async move {
            let scope = self.scope()?;
            self.fetch_all_but(
                sqlx::query(AssertSqlSafe(scope.sql.by_ids.clone()))
                    .persistent(self.inner.db.pooler().named_statements())
                    .bind(ids.iter().map(|id| Uuid::from(*id)).collect::<Vec<_>>()),
                &scope,
                true,
            )
            .await
        })
    }

    fn search<'a>(&'a self, query: &'a SearchQuery) -> StoreFuture<'a, Vec<Organization>> {
        Box::pin(async move {
            let scope = self.scope()?;
            let sql = match query.text {
                Some(_) => &scope.sql.search_text,
                None => &scope.sql.search_all,
            };
            let (after_name, after_id) = query
                .after
                .as_ref()
                .map_or((String::new(), Uuid::nil()), |(name, id)| {
                    (name.clone(), Uuid::from(*id))
                });
            let mut statement =
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .persistent(self.inner.db.pooler().named_statements())
                    .bind(query.text.as_deref().map(like_literal))
                    .bind(after_name)
                    .bind(after_id)
                    .bind(i64::from(query.limit))
                    .bind(i64::try_from(query.offset).map_err(|_| {
                        OrgError::invalid("offset", "larger than 9223372036854775807")
                    })?);
            if let Some(text) = &query.text {
                statement = statement.bind(search_terms(text));
            }
            self.fetch_all(statement, &scope).await
        })
    }

    fn count<'a>(&'a self, text: Option<&'a str>) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let scope = self.scope()?;
            let sql = match text {
                Some(_) => &scope.sql.count_text,
                None => &scope.sql.count_all,
            };
            let mut conn = self.connection_on(self.reader(), &scope).await?;
            let mut statement = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(text.map(like_literal));
            if let Some(text) = text {
                statement = statement.bind(search_terms(text));
            }
            let count = statement.fetch_one(&mut *conn).await.map_err(db)?;
            conn.finish().await?;
            Ok(count)
        })
    }

    fn summaries<'a>(
        &'a self,
        ids: &'a [OrganizationId],
    ) -> StoreFuture<'a, Vec<OrganizationSummary>> {
        Box::pin(async move {
            let scope = self.scope()?;
            let mut conn = self.connection_on(self.reader(), &scope).await?;
            let rows = sqlx::query(AssertSqlSafe(scope.sql.summaries.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(ids.iter().map(|id| Uuid::from(*id)).collect::<Vec<_>>())
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
            conn.finish().await?;
            let Some(first) = rows.first() else {
                return Ok(Vec::new());
            };
            let at = ReadColumns::of(first)?;
            rows.iter()
                .map(|row| {
                    Ok(OrganizationSummary::new(
                        from_row(row, &at)?,
                        row.try_get("domain_count").map_err(db)?,
                        row.try_get("member_count").map_err(db)?,
                    ))
                })
                .collect()
        })
    }

    fn add_member<'a>(
        &'a self,
        organization: OrganizationId,
        user: UserId,
        role: &'a str,
        max_members: u32,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.add_member_locked(organization, user, role, max_members))
    }

    fn tenant(&self) -> Result<Option<TenantId>, OrgError> {
        self.acting_tenant()
    }

    fn wrote(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.inner.db.wrote().await?;
            Ok(())
        })
    }

    fn find_to_cache(&self, id: OrganizationId) -> StoreFuture<'_, Option<Organization>> {
        Box::pin(self.filling(self.find(id, false)))
    }

    fn find_many_to_cache<'a>(
        &'a self,
        ids: &'a [OrganizationId],
    ) -> StoreFuture<'a, Vec<Organization>> {
        Box::pin(self.filling(self.find_many(ids)))
    }

    fn audit_trail(&self, id: OrganizationId) -> StoreFuture<'_, Vec<AuditEntry>> {
        Box::pin(async move {
            let scope = self.scope()?;
            let mut conn = self.connection_on(self.inner.db.pool(), &scope).await?;
            let rows = sqlx::query(AssertSqlSafe(scope.sql.audit_list.clone()))
                .persistent(self.inner.db.pooler().named_statements())
                .bind(Uuid::from(id))
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
            conn.finish().await?;
            rows.iter()
                .map(|r| {
                    Ok(AuditEntry::new(
                        r.try_get::<String, _>("actor")?,
                        r.try_get::<String, _>("action")?,
                        r.try_get("before")?,
                        r.try_get("after")?,
                        r.try_get("at")?,
                    ))
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(db)
        })
    }
}

/// The update statement's answer for one input: its id, the stored version (`None`:
/// missing) and the saved one (`None`: stale).
pub(super) type Outcome = (Uuid, Option<i64>, Option<i64>);

/// The update statement's answers, decoded by column name.
/// Per write, its new version, or why it has none: [`OrgError::Conflict`] for a stale
/// version, [`OrgError::NotFound`] for a missing organization.
pub(super) fn results_of(writes: &[Write<'_>], rows: Vec<Outcome>) -> Vec<Result<i64, OrgError>> {
    let outcomes: std::collections::HashMap<Uuid, (Option<i64>, Option<i64>)> = rows
        .into_iter()
        .map(|(id, stored, new)| (id, (stored, new)))
        .collect();
    writes
        .iter()
        .map(|w| {
            let org = w.organization;
            let (stored, new) = outcomes
                .get(&Uuid::from(org.id))
                .copied()
                .unwrap_or((None, None));
            match (stored, new) {
                (_, Some(new)) => Ok(new),
                (Some(stored), None) => Err(OrgError::Conflict {
                    id: org.id.to_string(),
                    expected: org.version,
                    actual: stored,
                }),
                (None, None) => Err(OrgError::not_found("organization", org.id)),
            }
        })
        .collect()
}

fn outcomes_of(rows: &[PgRow]) -> Result<Vec<Outcome>, OrgError> {
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("stored")?,
                row.try_get("saved")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db)
}

#[cfg(test)]
mod tests {
    use super::search_terms;

    #[test]
    fn search_terms_are_the_words_longest_first_then_the_whole_text() {
        assert_eq!(
            search_terms("works 871234"),
            ["871234", "works", "works 871234"]
        );
        // Words of one or two characters have no trigram of their own; a repeated word is
        // weighed once; punctuation separates words.
        assert_eq!(
            search_terms("acme, co of acme-widgets"),
            ["widgets", "acme", "acme, co of acme-widgets"]
        );
        // One word is its own whole text.
        assert_eq!(search_terms("acme"), ["acme"]);
        // Nothing but short words: the whole text alone, its wildcards escaped.
        assert_eq!(search_terms("a_b 5%"), ["a\\_b 5\\%"]);
        // Letters beyond ASCII are letters.
        assert_eq!(search_terms("öl straße"), ["straße", "öl straße"]);
    }
}
