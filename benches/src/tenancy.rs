//! Tenant isolation: what row-level security costs a batch write against a schema per tenant.
//!
//! Both sides write 100 rows through neo-db's batch repository as an application role that
//! is neither the tables' owner nor `BYPASSRLS` (the owner role creates them): row-level
//! security through `save_batch_for`, what a store acting for a tenant calls — one
//! autocommit statement that sets the tenant with `set_config(..., true)` in a materialized
//! CTE joined into the rows it writes into a shared table under a forced policy; schema per
//! tenant through `save_batch` on the repository of the tenant's own table, named with its
//! schema, in one autocommit statement.

use crate::db::Item;
use crate::{Pair, check};
use neo_core::TenantId;
use neo_db::{
    BatchRepository, Db, DbConfig, Ident, OnConflict, Schema, TableName, TenantIsolation,
};
use std::hint::black_box;
use std::rc::Rc;

/// The owner and application roles the bench creates (password `neo_bench`).
const OWNER: &str = "neo_bench_owner";
const APP: &str = "neo_bench_app";

/// `url` logging in as `role`.
fn as_role(url: &str, role: &str) -> String {
    let mut url = check(url::Url::parse(url));
    check(url.set_username(role).map_err(|()| "cannot set the user"));
    check(
        url.set_password(Some("neo_bench"))
            .map_err(|()| "cannot set the password"),
    );
    url.into()
}

async fn run(db: &Db, sql: String) {
    check(
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(db.pool())
            .await,
    );
}

/// The pairs of this module on the server at `url` (a superuser's URL: it creates the roles;
/// the schemas are dropped and re-created).
pub fn pairs_on(url: &str) -> Vec<Pair> {
    let rt = Rc::new(crate::runtime());
    let tenant = TenantId::new();
    let rls = TenantIsolation::row_level_security();
    let schemas = check(TenantIsolation::schema_per_tenant("bench_tenant_"));
    let tenant_schema = check(schemas.schema_of(tenant)).unwrap_or_else(|| unreachable!());
    let shared = check(Schema::new("bench_rls"));
    let app = rt.block_on(async {
        let admin = check(Db::connect(&DbConfig::with_url(url)).await);
        let mut roles = String::new();
        for (role, extra) in [(OWNER, ""), (APP, " NOBYPASSRLS NOINHERIT")] {
            roles.push_str(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 CREATE ROLE {role} LOGIN PASSWORD 'neo_bench'{extra}; END IF; END $$;\n"
            ));
        }
        run(&admin, roles).await;
        // Earlier runs' schemas (one per tenant, new tenant each run) and the shared one.
        let stale: Vec<String> = check(
            sqlx::query_scalar(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bench\\_tenant\\_%' OR nspname = 'bench_rls'",
            )
            .fetch_all(admin.pool())
            .await,
        );
        for schema in stale {
            let schema = check(Schema::new(&schema));
            run(&admin, format!("DROP SCHEMA {schema} CASCADE")).await;
        }
        for schema in [&shared, &tenant_schema] {
            run(&admin, format!("CREATE SCHEMA {schema} AUTHORIZATION {OWNER}")).await;
        }
        admin.close().await;

        let owner = check(Db::connect(&DbConfig::with_url(as_role(url, OWNER))).await);
        let columns = "id uuid NOT NULL, name text NOT NULL, qty int8 NOT NULL, data jsonb NOT NULL, \
                       version int8 NOT NULL DEFAULT 1";
        let setting = neo_db::RlsSetting::default();
        let rls_table = check(TableName::new("items")).in_schema(&shared);
        run(
            &owner,
            format!(
                "CREATE TABLE {rls_table} (tenant_id uuid NOT NULL DEFAULT {tenant_sql}, {columns}, \
                 PRIMARY KEY (tenant_id, id));\n{policy}",
                tenant_sql = setting.current_tenant_sql(),
                policy = setting.policy_sql(&rls_table, &check(Ident::new("tenant_id"))),
            ),
        )
        .await;
        let schema_table = check(TableName::new("items")).in_schema(&tenant_schema);
        run(
            &owner,
            format!("CREATE TABLE {schema_table} ({columns}, PRIMARY KEY (id))"),
        )
        .await;
        for schema in [&shared, &tenant_schema] {
            check(neo_db::tenancy::grant_app_role(&owner, schema, APP).await);
        }
        owner.close().await;
        check(Db::connect(&DbConfig::with_url(as_role(url, APP))).await)
    });
    let rls_repo = check(check(BatchRepository::<Item>::new(&app, "items")).in_schema(&shared));
    let schema_repo =
        check(check(BatchRepository::<Item>::new(&app, "items")).in_schema(&tenant_schema));
    let (rt2, app2) = (Rc::clone(&rt), app.clone());
    vec![Pair {
        name: "db/save_batch_rls",
        target: Some(1.15),
        per_iteration: Some(100),
        raw_per_iteration: None,
        ours: Box::new(move || {
            let rows = crate::db::items(100);
            black_box(check(rt.block_on(rls_repo.save_batch_for(
                &app,
                &rls,
                tenant,
                &rows,
                OnConflict::Error,
            ))));
        }),
        raw: Box::new(move || {
            let rows = crate::db::items(100);
            black_box(check(rt2.block_on(schema_repo.save_batch(
                &app2,
                &rows,
                OnConflict::Error,
            ))));
        }),
    }]
}

/// The pairs of this module, on `NEO_BENCH_DATABASE_URL` or a durable throwaway server.
pub fn pairs() -> Vec<Pair> {
    pairs_on(&crate::db::bench_database_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both sides write their rows, as the application role, and the policy holds: the
    /// shared table shows the tenant's rows only to that tenant.
    #[test]
    fn tenancy_pairs_write_under_row_level_security() {
        let rt = crate::runtime();
        let test_db = rt.block_on(neo_testkit::PgRoute::Direct.database());
        let mut pairs = pairs_on(test_db.direct_url());
        crate::run_each_once(pairs.drain(..));
        let counts: (i64, i64) = rt.block_on(async {
            let admin = check(Db::connect(&DbConfig::with_url(test_db.direct_url())).await);
            let app =
                check(Db::connect(&DbConfig::with_url(as_role(test_db.direct_url(), APP))).await);
            let all = check(
                sqlx::query_scalar("SELECT count(*) FROM bench_rls.items")
                    .fetch_one(admin.pool())
                    .await,
            );
            let unscoped = check(
                sqlx::query_scalar("SELECT count(*) FROM bench_rls.items")
                    .fetch_one(app.pool())
                    .await,
            );
            (all, unscoped)
        });
        assert_eq!(
            counts,
            (100, 0),
            "written, and invisible without the tenant"
        );
    }
}
