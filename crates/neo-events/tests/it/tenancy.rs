//! Databases for the row-level-security mode: the owner role migrates and grants, the
//! application role (not owner, not superuser, not `BYPASSRLS`) makes the tenant-scoped
//! calls, the system role (`BYPASSRLS`, not owner) runs the cross-tenant work.

use neo_db::{Db, DbConfig, Schema};
use neo_testkit::{PgRoute, SplitRoles, TestDatabase};

/// The three `Db`s of one test database under row-level security.
pub(crate) struct SplitDbs {
    pub(crate) roles: SplitRoles,
    pub(crate) owner: Db,
    pub(crate) app: Db,
    pub(crate) system: Db,
    pub(crate) _test_db: TestDatabase,
}

/// A fresh database with split roles. Through PgBouncer (`route`), the application role is
/// reached through a PgBouncer in transaction mode that logs in as it; the system role is
/// reached directly but with statements unnamed, since jobs it enqueues may be written in a
/// transaction of the application `Db`.
pub(crate) async fn split_dbs(route: PgRoute) -> SplitDbs {
    let test_db = PgRoute::Direct.database().await;
    let roles = test_db.split_roles(route.is_pooled()).await.unwrap();
    let owner = Db::connect(&DbConfig::with_url(roles.owner_url()))
        .await
        .unwrap();
    let (app, system) = if route.is_pooled() {
        (
            DbConfig::behind_transaction_pooler(roles.app_url(), roles.system_url()),
            DbConfig::behind_transaction_pooler(roles.system_url(), roles.system_url()),
        )
    } else {
        (
            DbConfig::with_url(roles.app_url()),
            DbConfig::with_url(roles.system_url()),
        )
    };
    SplitDbs {
        owner,
        app: Db::connect(&app).await.unwrap(),
        system: Db::connect(&system).await.unwrap(),
        roles,
        _test_db: test_db,
    }
}

impl SplitDbs {
    /// Grants the application and system roles the tables now in `schemas`.
    pub(crate) async fn grant(&self, schemas: &[&str]) {
        for schema in schemas {
            let schema = Schema::new(schema).unwrap();
            for role in [self.roles.app(), self.roles.system()] {
                neo_db::tenancy::grant_app_role(&self.owner, &schema, role)
                    .await
                    .unwrap();
            }
        }
    }
}

/// What `db`'s role is about `table` (neo-testkit's [`neo_testkit::RoleFacts`]).
pub(crate) async fn role_facts(db: &Db, table: &str) -> neo_testkit::RoleFacts {
    let mut conn = db.statement_connection().await.unwrap();
    let facts = neo_testkit::RoleFacts::read(&mut conn, table)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    facts
}
