//! What schema-per-tenant costs at scale, against the same data in shared tables: tenants
//! provisioned per second (schema + neo-orgs' migrations through neo-db's `TenantMigrator`),
//! the time to migrate every tenant to a new script and to resume a finished run, the catalog
//! (`pg_class`, `pg_attribute` rows), `pg_database_size`, and the memory of a backend that
//! has read every tenant's organizations (`pg_backend_memory_contexts`).
//!
//! Shared mode here is the layout only (one `organizations` table with a `tenant_id` column
//! and an index on it, every tenant's rows in it); the row-level-security policies that guard
//! it cost no catalog rows worth counting and no per-tenant memory.

use crate::check;
use neo_core::TenantId;
use neo_db::{
    Db, DbConfig, MigrationSet, TenantMigrationConfig, TenantMigrator, schema_per_tenant,
};
use neo_orgs::PgOrganizationStore;
use sqlx::{AssertSqlSafe, Connection};
use std::time::{Duration, Instant};

/// Tenants in the full run (the figure).
pub const FULL_TENANTS: usize = 10_000;
/// Tenants in the short run the test suite makes.
pub const SHORT_TENANTS: usize = 200;

/// The size of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Rows of `pg_class` (tables, indexes, sequences, types' relations, ...).
    pub pg_class: i64,
    /// Rows of `pg_attribute`.
    pub pg_attribute: i64,
    /// `pg_database_size`, bytes.
    pub database_bytes: i64,
    /// Memory of a fresh backend after reading every tenant's organizations once, bytes
    /// (sum of `pg_backend_memory_contexts.total_bytes`).
    pub backend_bytes: i64,
    /// The same backend's memory before it read anything, bytes.
    pub idle_backend_bytes: i64,
    /// How long that backend took to read every tenant once.
    pub touch_all: Duration,
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Tenants.
    pub tenants: usize,
    /// Migration parallelism used.
    pub parallelism: usize,
    /// Provisioning every tenant (schema + 4 migrations of neo-orgs) from nothing.
    pub provision: Duration,
    /// Migrating every tenant to one new script (`ALTER TABLE ... ADD COLUMN`).
    pub migrate_all: Duration,
    /// A second run once every tenant is current (what a resumed run costs per done tenant).
    pub rerun: Duration,
    /// Schema per tenant.
    pub schema_mode: Footprint,
    /// Shared tables.
    pub shared_mode: Footprint,
}

impl Figures {
    /// Tenants provisioned per second.
    pub fn provision_rate(&self) -> f64 {
        self.tenants as f64 / self.provision.as_secs_f64()
    }
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(start);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let query = path.find('?').map_or("", |i| &path[i..]);
    format!("{head}{authority}/{database}{query}")
}

async fn fresh_database(server_url: &str, name: &str) -> String {
    let mut admin = check(sqlx::PgConnection::connect(server_url).await);
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        check(
            sqlx::raw_sql(AssertSqlSafe(statement))
                .execute(&mut admin)
                .await,
        );
    }
    check(admin.close().await);
    with_database(server_url, name)
}

fn one_more_script() -> MigrationSet {
    check(PgOrganizationStore::migrations()).with(
        1_000,
        "bench: a column for everyone",
        "ALTER TABLE organizations ADD COLUMN bench_note text",
    )
}

async fn footprint(url: &str, touch: &[String]) -> Footprint {
    let mut conn = check(sqlx::PgConnection::connect(url).await);
    let memory = "SELECT sum(total_bytes)::int8 FROM pg_backend_memory_contexts";
    let idle_backend_bytes: i64 = check(sqlx::query_scalar(memory).fetch_one(&mut conn).await);
    let started = Instant::now();
    for statement in touch {
        check(
            sqlx::raw_sql(AssertSqlSafe(statement.as_str()))
                .execute(&mut conn)
                .await,
        );
    }
    let touch_all = started.elapsed();
    let backend_bytes: i64 = check(sqlx::query_scalar(memory).fetch_one(&mut conn).await);
    let (pg_class, pg_attribute, database_bytes): (i64, i64, i64) = check(
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_attribute), \
             pg_database_size(current_database())",
        )
        .fetch_one(&mut conn)
        .await,
    );
    check(conn.close().await);
    Footprint {
        pg_class,
        pg_attribute,
        database_bytes,
        backend_bytes,
        idle_backend_bytes,
        touch_all,
    }
}

const INSERT_ORG: &str = "INSERT INTO organizations (id, name, slug, status, created_at, updated_at, version{extra}) \
     VALUES (gen_random_uuid(), 'Org', 'org-' || md5(random()::text), 'active', now(), now(), 1{value})";

/// Provisions `tenants` tenants with one organization each in schema mode and in shared
/// mode, each in a fresh database of the server at `server_url`, and measures both.
pub async fn measure(server_url: &str, tenants: usize, parallelism: usize) -> Figures {
    let ids: Vec<TenantId> = (0..tenants).map(|_| TenantId::new()).collect();
    let schema_url = fresh_database(server_url, "neo_bench_tenancy_schemas").await;
    let shared_url = fresh_database(server_url, "neo_bench_tenancy_shared").await;

    // Schema per tenant.
    let db = check(
        Db::connect(&DbConfig {
            max_connections: (parallelism + 2) as u32,
            ..DbConfig::with_url(&schema_url)
        })
        .await,
    );
    let config = TenantMigrationConfig {
        parallelism,
        ..TenantMigrationConfig::default()
    };
    let schema_for = check(schema_per_tenant("t_"));
    let migrator = |sets| {
        check(TenantMigrator::new(
            &db,
            sets,
            schema_for.clone(),
            config.clone(),
        ))
    };
    // One timed run of `sets` over every tenant.
    let timed_run = async |sets| {
        let started = Instant::now();
        let report = check(migrator(sets).migrate_all(ids.clone(), None).await);
        (report, started.elapsed())
    };
    let (report, provision) = timed_run(vec![check(PgOrganizationStore::migrations())]).await;
    assert!(
        report.is_complete(),
        "provisioning failed: {:?}",
        report.failed
    );
    let (report, migrate_all) = timed_run(vec![one_more_script()]).await;
    assert!(
        report.is_complete(),
        "migration failed: {:?}",
        report.failed
    );
    let (report, rerun) = timed_run(vec![one_more_script()]).await;
    assert!(report.migrated.iter().all(|m| m.skipped));
    let mut inserts = String::new();
    for tenant in &ids {
        let schema = check(schema_for(*tenant));
        inserts.push_str(&format!("SET search_path = {schema}, public; "));
        inserts.push_str(&INSERT_ORG.replace("{extra}", "").replace("{value}", ""));
        inserts.push_str(";\n");
    }
    check(
        sqlx::raw_sql(AssertSqlSafe(inserts))
            .execute(db.pool())
            .await,
    );
    db.close().await;
    let touch: Vec<String> = ids
        .iter()
        .map(|t| {
            format!(
                "SELECT count(*) FROM {}.organizations WHERE deleted_at IS NULL",
                check(schema_for(*t))
            )
        })
        .collect();
    let schema_mode = footprint(&schema_url, &touch).await;

    // Shared tables.
    let db = check(Db::connect(&DbConfig::with_url(&shared_url)).await);
    let shared = check(neo_db::Schema::new("shared"));
    check(
        check(PgOrganizationStore::migrations())
            .run_in_schema(&db, &shared)
            .await,
    );
    check(
        sqlx::raw_sql(
            "ALTER TABLE shared.organizations ADD COLUMN tenant_id uuid; \
             ALTER TABLE shared.organizations ADD COLUMN bench_note text; \
             DROP INDEX shared.organizations_slug; \
             CREATE UNIQUE INDEX organizations_slug ON shared.organizations (tenant_id, slug); \
             CREATE INDEX organizations_tenant ON shared.organizations (tenant_id)",
        )
        .execute(db.pool())
        .await,
    );
    let mut inserts = String::from("SET search_path = shared, public;\n");
    for tenant in &ids {
        inserts.push_str(
            &INSERT_ORG
                .replace("{extra}", ", tenant_id")
                .replace("{value}", &format!(", '{}'", tenant.as_uuid())),
        );
        inserts.push_str(";\n");
    }
    check(
        sqlx::raw_sql(AssertSqlSafe(inserts))
            .execute(db.pool())
            .await,
    );
    check(
        sqlx::raw_sql("ANALYZE shared.organizations")
            .execute(db.pool())
            .await,
    );
    db.close().await;
    let touch: Vec<String> = ids
        .iter()
        .map(|t| {
            format!(
                "SELECT count(*) FROM shared.organizations WHERE tenant_id = '{}' AND deleted_at IS NULL",
                t.as_uuid()
            )
        })
        .collect();
    let shared_mode = footprint(&shared_url, &touch).await;

    Figures {
        tenants,
        parallelism,
        provision,
        migrate_all,
        rerun,
        schema_mode,
        shared_mode,
    }
}

/// The figures as a Markdown table.
pub fn markdown(f: &Figures) -> String {
    let mib = |b: i64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let (s, r) = (&f.schema_mode, &f.shared_mode);
    let mut out = format!(
        "{} tenants, one organization each, migration parallelism {}\n\n\
         | | schema per tenant | shared tables |\n|---|---|---|\n",
        f.tenants, f.parallelism
    );
    out.push_str(&format!(
        "| provision all (schema + 4 migrations) | {:.1} s ({:.0} tenants/s) | one DDL run, then rows only |\n",
        f.provision.as_secs_f64(),
        f.provision_rate()
    ));
    out.push_str(&format!(
        "| migrate all to one new script | {:.1} s | one ALTER |\n",
        f.migrate_all.as_secs_f64()
    ));
    out.push_str(&format!(
        "| run again when all are current (resume) | {:.2} s | - |\n",
        f.rerun.as_secs_f64()
    ));
    out.push_str(&format!(
        "| pg_class rows | {} | {} |\n| pg_attribute rows | {} | {} |\n",
        s.pg_class, r.pg_class, s.pg_attribute, r.pg_attribute
    ));
    out.push_str(&format!(
        "| pg_database_size | {} | {} |\n",
        mib(s.database_bytes),
        mib(r.database_bytes)
    ));
    out.push_str(&format!(
        "| backend memory after reading every tenant once (idle: {} / {}) | {} | {} |\n",
        mib(s.idle_backend_bytes),
        mib(r.idle_backend_bytes),
        mib(s.backend_bytes),
        mib(r.backend_bytes)
    ));
    out.push_str(&format!(
        "| time for that backend to read every tenant once | {:.2} s | {:.2} s |\n",
        s.touch_all.as_secs_f64(),
        r.touch_all.as_secs_f64()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_their_database_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }

    /// The short form: every tenant provisioned and migrated, and schema mode's catalog and
    /// backend memory grow with the tenants while shared mode's do not.
    #[test]
    fn schema_mode_costs_grow_with_tenants_and_shared_mode_does_not() {
        let rt = check(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        );
        let f = rt.block_on(measure(&crate::db::bench_database_url(), SHORT_TENANTS, 4));
        // Each tenant brings at least its four tables with their indexes.
        assert!(
            f.schema_mode.pg_class >= f.shared_mode.pg_class + 4 * SHORT_TENANTS as i64,
            "{f:?}"
        );
        assert!(
            f.schema_mode.pg_attribute > f.shared_mode.pg_attribute,
            "{f:?}"
        );
        assert!(
            f.schema_mode.backend_bytes - f.schema_mode.idle_backend_bytes
                > f.shared_mode.backend_bytes - f.shared_mode.idle_backend_bytes,
            "{f:?}"
        );
        assert!(f.provision_rate() > 0.0 && f.rerun < f.provision, "{f:?}");
        assert!(markdown(&f).contains("tenants/s"));
    }
}
