//! neo-queue against a real PostgreSQL started by neo-testkit (or `NEO_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

/// Each test, once per mode (fixed schema, schema per tenant, row-level security), each
/// directly and through PgBouncer; a test is `async fn(Mode, PgRoute)`.
macro_rules! over_modes {
    ($($test:ident),* $(,)?) => {
        over_modes!(@mode direct, Fixed, Direct, $($test),*);
        over_modes!(@mode pgbouncer, Fixed, PgBouncer, $($test),*);
        over_modes!(@mode schema_per_tenant, Schemas, Direct, $($test),*);
        over_modes!(@mode schema_per_tenant_pgbouncer, Schemas, PgBouncer, $($test),*);
        over_modes!(@mode rls, Rls, Direct, $($test),*);
        over_modes!(@mode rls_pgbouncer, Rls, PgBouncer, $($test),*);
    };
    (@mode $module:ident, $mode:ident, $route:ident, $($test:ident),*) => {
        mod $module {
            $(#[tokio::test]
            async fn $test() {
                super::$test(crate::Mode::$mode, neo_testkit::PgRoute::$route).await;
            })*
        }
    };
}

mod cancel;
mod fair;
mod isolation;
mod limit;
mod pause;
mod periodic;
mod progress;
mod queue;
mod rate;
mod reschedule;
mod retention;
mod ride;
mod spans;
mod trace;
mod worker;
mod workflow;

use neo_core::TenantId;
use neo_db::{Db, DbConfig, Schema, TenantIsolation};
use neo_queue::{Queue, QueueConfig};
use neo_testkit::{PgRoute, SplitRoles, TestDatabase};
use std::time::Duration;

/// The queue's migrations, as a fresh database applies them.
pub(crate) const APPLIED: &[i64] = &[1, 2, 3, 5, 10, 11, 12, 14, 15, 16, 30, 31, 40, 41];
/// The same under row-level security (with migration 4, the policy).
pub(crate) const APPLIED_RLS: &[i64] = &[
    1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 30, 31, 40, 41,
];

/// How the queue under test keeps tenants apart. The contract tests run in each
/// ([`over_modes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One schema, no tenant isolation (`Queue::new`).
    Fixed,
    /// A `jobs` table per tenant schema (`tenant_<id>`).
    Schemas,
    /// One shared table under row-level security, used by an application role that is
    /// neither its owner nor `BYPASSRLS`; claims on a `BYPASSRLS` system role.
    Rls,
}

impl Mode {
    pub(crate) fn isolation(self) -> Option<TenantIsolation> {
        match self {
            Mode::Fixed => None,
            Mode::Schemas => Some(TenantIsolation::schema_per_tenant("tenant_").unwrap()),
            Mode::Rls => Some(TenantIsolation::row_level_security()),
        }
    }
}

/// The servers of one test: the database, and for a tenant-isolated queue its roles (with
/// the PgBouncer logging in as the application role, when asked for) and the owner's pool.
pub(crate) struct Servers {
    test_db: TestDatabase,
    pub(crate) roles: Option<(SplitRoles, Db)>,
}

impl std::ops::Deref for Servers {
    type Target = TestDatabase;

    fn deref(&self) -> &TestDatabase {
        &self.test_db
    }
}

impl Servers {
    pub(crate) fn roles(&self) -> &SplitRoles {
        &self.roles.as_ref().expect("a tenant-isolated setup").0
    }
}

fn config(configure: impl FnOnce(QueueConfig) -> QueueConfig) -> QueueConfig {
    configure(QueueConfig {
        retry_initial: Duration::from_millis(200),
        ..QueueConfig::default()
    })
}

/// A fresh database reached by `route` (`pooler = "transaction"` through PgBouncer, with
/// the direct URL for LISTEN), a `Db` and a migrated queue on it.
pub(crate) async fn setup(
    route: PgRoute,
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
) -> (Servers, Db, Queue) {
    let test_db = route.database().await;
    let db = Db::connect(
        &(if route.is_pooled() {
            DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
        } else {
            DbConfig::with_url(test_db.url())
        }),
    )
    .await
    .unwrap();
    let queue = Queue::new(&db, config(configure)).unwrap();
    assert_eq!(queue.migrate().await.unwrap().applied, APPLIED.to_vec());
    let servers = Servers {
        test_db,
        roles: None,
    };
    (servers, db, queue)
}

/// A pool of one connection to `test_db`, so that the statements a test reads back from
/// `pg_prepared_statements` are the ones its calls used.
pub(crate) async fn one_connection(test_db: &TestDatabase) -> Db {
    Db::connect(&DbConfig {
        max_connections: 1,
        ..DbConfig::with_url(test_db.url())
    })
    .await
    .unwrap()
}

/// `ANALYZE`s `queue`'s jobs table, so its statistics see the table as it is now.
pub(crate) async fn analyze_jobs(queue: &Queue, db: &Db) {
    let table = neo_db::TableName::new("jobs")
        .unwrap()
        .in_schema(&Schema::new(&queue.config().schema).unwrap());
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(db.pool())
        .await
        .unwrap();
}

/// Enqueues `jobs` (duplicates are an error) and returns their ids.
pub(crate) async fn enqueue_all(
    queue: &Queue,
    db: &Db,
    jobs: Vec<neo_queue::NewJob>,
) -> Vec<neo_core::JobId> {
    queue
        .enqueue_many(db, jobs, neo_queue::OnDuplicate::Error)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// [`setup`] in `mode`: for a tenant-isolated queue, the queue acts for a fresh tenant
/// ([`Queue::for_tenant`]), so the contract tests run unchanged in every mode.
pub(crate) async fn setup_in(
    mode: Mode,
    route: PgRoute,
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
) -> (Servers, Db, Queue) {
    if mode == Mode::Fixed {
        return setup(route, configure).await;
    }
    let tenant = TenantId::new();
    let (servers, db, queue) = isolated(mode, route, configure, &[tenant]).await;
    (servers, db, queue.for_tenant(tenant))
}

/// A tenant-isolated queue reached by `route`: the owner role migrates (each of `tenants`'
/// schemas, or the shared table once) and grants; the application role (through PgBouncer
/// when `route` says so) runs the tenant-scoped calls and the system role (`BYPASSRLS`,
/// direct) the claims. The queue is bound to no tenant.
pub(crate) async fn isolated(
    mode: Mode,
    route: PgRoute,
    configure: impl FnOnce(QueueConfig) -> QueueConfig,
    tenants: &[TenantId],
) -> (Servers, Db, Queue) {
    let isolation = mode.isolation().expect("a tenant-isolated mode");
    let test_db = PgRoute::Direct.database().await;
    let roles = test_db.split_roles(route.is_pooled()).await.unwrap();
    let config = config(configure);
    let owner = Db::connect(&DbConfig::with_url(roles.owner_url()))
        .await
        .unwrap();
    let owner_queue =
        Queue::tenant_isolated(&owner, &owner, config.clone(), isolation.clone()).unwrap();
    let mut schemas = Vec::new();
    match mode {
        Mode::Schemas => {
            for tenant in tenants {
                let report = owner_queue.for_tenant(*tenant).migrate().await.unwrap();
                assert_eq!(report.applied, APPLIED.to_vec());
                schemas.push(isolation.schema_of(*tenant).unwrap().unwrap());
            }
        }
        Mode::Rls => {
            assert_eq!(
                owner_queue.migrate().await.unwrap().applied,
                APPLIED_RLS.to_vec()
            );
            schemas.push(Schema::new(&config.schema).unwrap());
        }
        Mode::Fixed => unreachable!("not tenant-isolated"),
    }
    for schema in &schemas {
        for role in [roles.app(), roles.system()] {
            neo_db::tenancy::grant_app_role(&owner, schema, role)
                .await
                .unwrap();
        }
    }
    let db = Db::connect(
        &(if route.is_pooled() {
            DbConfig::behind_transaction_pooler(roles.app_url(), test_db.direct_url())
        } else {
            DbConfig::with_url(roles.app_url())
        }),
    )
    .await
    .unwrap();
    let system = Db::connect(&DbConfig::with_url(roles.system_url()))
        .await
        .unwrap();
    let queue = Queue::tenant_isolated(&db, &system, config, isolation).unwrap();
    let servers = Servers {
        test_db,
        roles: Some((roles, owner)),
    };
    (servers, db, queue)
}
