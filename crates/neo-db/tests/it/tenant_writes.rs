//! `BatchRepository::save_batch_for`: a tenant's batch write in one statement, as the
//! application role (neither the tables' owner nor `BYPASSRLS`), directly and through a
//! PgBouncer in transaction mode that logs in as that role.

use neo_core::TenantId;
use neo_core::{ErrorKind, HasErrorKind as _};
use neo_db::{
    BatchRepository, Column, ColumnBinder, Db, DbConfig, Ident, OnConflict, Record, RlsSetting,
    Schema, TableName, TenantIsolation,
};
use neo_testkit::{PgRoute, SplitRoles, TestDatabase};
use sqlx::Connection as _;
use uuid::Uuid;

/// A row of the shared tables; the tenant column is not one of its columns: the table's
/// default fills it in from the setting.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct Note {
    id: Uuid,
    body: String,
    version: i64,
}

impl Record for Note {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("id"),
        Column::new("body"),
        Column::new("version"),
    ];
    const VERSION_COLUMN: Option<&'static str> = Some("version");

    fn id(&self) -> &Uuid {
        &self.id
    }

    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |n| n.id)?;
        b.column("body", |n| n.body.as_str())?;
        b.column("version", |n| n.version)
    }
}

/// A row that names its tenant itself (so a test can name another tenant's).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct OwnedNote {
    tenant_id: Uuid,
    id: Uuid,
    body: String,
}

impl Record for OwnedNote {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("tenant_id"),
        Column::new("id"),
        Column::new("body"),
    ];

    fn id(&self) -> &Uuid {
        &self.id
    }

    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("tenant_id", |n| n.tenant_id)?;
        b.column("id", |n| n.id)?;
        b.column("body", |n| n.body.as_str())
    }
}

fn notes(n: usize, body: &str) -> Vec<Note> {
    (0..n)
        .map(|i| Note {
            id: Uuid::now_v7(),
            body: format!("{body} {i}"),
            version: 1,
        })
        .collect()
}

/// The owner's migration: `app.notes` (primary key tenant and id, the policy reading the
/// setting once per statement, `RlsSetting::policy_sql`) and `app.claims` (one id across
/// tenants, the policy reading the setting per row, no init plan).
fn migration() -> String {
    let setting = RlsSetting::default();
    let tenant = setting.current_tenant_sql();
    let notes = TableName::new("notes").unwrap().in_schema(&app_schema());
    let column = Ident::new("tenant_id").unwrap();
    format!(
        "CREATE TABLE {notes} (tenant_id uuid NOT NULL DEFAULT {tenant}, id uuid NOT NULL, \
         body text NOT NULL, version int8 NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));\n\
         {policy}\
         CREATE TABLE app.claims (tenant_id uuid NOT NULL DEFAULT {tenant}, id uuid PRIMARY KEY, \
         body text NOT NULL, version int8 NOT NULL DEFAULT 1);\n\
         ALTER TABLE app.claims ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE app.claims FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY per_row ON app.claims USING (tenant_id = {tenant}) WITH CHECK (tenant_id = {tenant});\n",
        policy = setting.policy_sql(&notes, &column),
    )
}

fn app_schema() -> Schema {
    Schema::new("app").unwrap()
}

struct Setup {
    test_db: TestDatabase,
    /// Holds the PgBouncer of the application role, when there is one.
    _roles: SplitRoles,
    /// The application role's `Db` (through PgBouncer when the route is pooled).
    app: Db,
}

impl Setup {
    async fn new(route: PgRoute) -> Setup {
        let test_db = PgRoute::Direct.database().await;
        let roles = test_db.split_roles(route.is_pooled()).await.unwrap();
        let owner = Db::connect(&DbConfig::with_url(roles.owner_url()))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA app;\n{}",
            migration()
        )))
        .execute(owner.pool())
        .await
        .unwrap();
        neo_db::tenancy::grant_app_role(&owner, &app_schema(), roles.app())
            .await
            .unwrap();
        owner.close().await;
        let app = Db::connect(&if route.is_pooled() {
            DbConfig::behind_transaction_pooler(roles.app_url(), test_db.direct_url())
        } else {
            DbConfig::with_url(roles.app_url())
        })
        .await
        .unwrap();
        let mut tx = app.begin().await.unwrap();
        let facts = neo_testkit::RoleFacts::read(&mut tx, "app.notes")
            .await
            .unwrap();
        assert!(facts.bound_by_policies(), "{facts:?}");
        assert_eq!(facts.role, roles.app());
        tx.rollback().await.unwrap();
        Setup {
            test_db,
            _roles: roles,
            app,
        }
    }

    /// Every row of `table` as the superuser (past the policies): tenant, id, body, version.
    async fn all(&self, table: &str) -> Vec<(Uuid, Uuid, String, i64)> {
        let mut conn = sqlx::PgConnection::connect(self.test_db.direct_url())
            .await
            .unwrap();
        let mut rows: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT tenant_id, id, body, version FROM {table}"),
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        rows.sort_by(|x, y| x.2.cmp(&y.2));
        rows
    }

    /// The bodies of `table` the application role sees acting for `tenant`.
    async fn seen_by(&self, tenant: TenantId, table: &str) -> Vec<String> {
        let mut tx = TenantIsolation::row_level_security()
            .begin(&self.app, tenant)
            .await
            .unwrap();
        let mut seen: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT body FROM {table}")))
                .persistent(false)
                .fetch_all(&mut **tx)
                .await
                .unwrap();
        tx.rollback().await.unwrap();
        seen.sort();
        seen
    }

    /// What the application role sees of `table` without a tenant, and the setting then.
    async fn unscoped(&self, table: &str) -> (i64, Option<String>) {
        let mut conn = self.app.statement_connection().await.unwrap();
        let seen = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), NULLIF(current_setting('neo.tenant_id', true), '') FROM {table}"
        )))
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        conn.finish().await.unwrap();
        seen
    }
}

fn repo(db: &Db, table: &str) -> BatchRepository<Note> {
    BatchRepository::<Note>::new(db, table).unwrap()
}

fn bodies(rows: &[(Uuid, Uuid, String, i64)], tenant: TenantId) -> Vec<String> {
    rows.iter()
        .filter(|r| r.0 == *tenant.as_uuid())
        .map(|r| r.2.clone())
        .collect()
}

fn sorted(notes: &[Note]) -> Vec<String> {
    let mut bodies: Vec<String> = notes.iter().map(|n| n.body.clone()).collect();
    bodies.sort();
    bodies
}

/// Each tenant's rows land with its id (filled in by the default from the setting the
/// statement set), each sees only its own, and nothing of the setting outlives the statement:
/// the application role without a tenant sees no row and no setting.
async fn writes_land_with_the_tenant(route: PgRoute) {
    let s = Setup::new(route).await;
    let rls = TenantIsolation::row_level_security();
    let notes_repo = repo(&s.app, "app.notes");
    let (a, b) = (TenantId::new(), TenantId::new());
    let (for_a, for_b) = (notes(3, "a"), notes(2, "b"));
    let written = notes_repo
        .save_batch_for(&s.app, &rls, a, &for_a, OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(written, 3);
    assert_eq!(s.unscoped("app.notes").await, (0, None));
    let written = notes_repo
        .save_batch_for(&s.app, &rls, b, &for_b, OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(written, 2);

    let all = s.all("app.notes").await;
    assert_eq!(all.len(), 5);
    assert_eq!(bodies(&all, a), sorted(&for_a));
    assert_eq!(bodies(&all, b), sorted(&for_b));
    assert_eq!(s.seen_by(a, "app.notes").await, sorted(&for_a));
    assert_eq!(s.seen_by(b, "app.notes").await, sorted(&for_b));
    assert_eq!(s.unscoped("app.notes").await, (0, None));

    // Ignore and Update act on the tenant's own rows (the conflict target is the id; the
    // key is the tenant and the id, so B's id under A is A's own new row).
    let mut again = for_a.clone();
    again[0].body = "a 0 changed".into();
    let mut foreign_id = for_b[0].clone();
    foreign_id.body = "a from b's id".into();
    let repo_on_key = notes_repo
        .with_conflict_target(&["tenant_id", "id"])
        .unwrap();
    let skipped = repo_on_key
        .save_batch_for(
            &s.app,
            &rls,
            a,
            &[again[0].clone(), foreign_id.clone()],
            OnConflict::Ignore,
        )
        .await
        .unwrap();
    assert_eq!(skipped, 1, "A's existing row skipped, B's id new for A");
    let updated = repo_on_key
        .save_batch_for(&s.app, &rls, a, &again, OnConflict::Update)
        .await
        .unwrap();
    assert_eq!(updated, 3);
    let all = s.all("app.notes").await;
    assert_eq!(all.len(), 6);
    let mut expected_a = sorted(&again);
    expected_a.push("a from b's id".into());
    expected_a.sort();
    assert_eq!(bodies(&all, a), expected_a);
    assert_eq!(bodies(&all, b), sorted(&for_b), "B's rows untouched");
    let versions: Vec<i64> = all
        .iter()
        .filter(|r| r.0 == *a.as_uuid() && r.2 != "a from b's id")
        .map(|r| r.3)
        .collect();
    assert_eq!(versions, vec![2, 2, 2]);

    // Chunks: several statements in one transaction, each carrying the setting.
    let chunked = notes_repo.with_max_rows_per_statement(2);
    let many = notes(5, "c");
    let written = chunked
        .save_batch_for(&s.app, &rls, b, &many, OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(written, 5);
    let mut expected_b = sorted(&for_b);
    expected_b.extend(sorted(&many));
    expected_b.sort();
    assert_eq!(s.seen_by(b, "app.notes").await, expected_b);
    assert_eq!(s.unscoped("app.notes").await, (0, None));
}

#[tokio::test]
async fn rls_save_batch_for_writes_each_tenants_rows() {
    writes_land_with_the_tenant(PgRoute::Direct).await;
}

#[tokio::test]
async fn rls_save_batch_for_writes_each_tenants_rows_through_pgbouncer() {
    writes_land_with_the_tenant(PgRoute::PgBouncer).await;
}

/// Every way a write could reach another tenant's rows fails with an error and writes
/// nothing: a row naming another tenant (the policy's `WITH CHECK`, read once per
/// statement or per row), an upsert onto another tenant's row (its `USING`), a later chunk
/// naming another tenant (the earlier chunks are rolled back).
async fn writes_fail_closed(route: PgRoute) {
    let s = Setup::new(route).await;
    let rls = TenantIsolation::row_level_security();
    let (a, b) = (TenantId::new(), TenantId::new());
    for table in ["app.notes", "app.claims"] {
        let owned = BatchRepository::<OwnedNote>::new(&s.app, table).unwrap();
        let row = |tenant: TenantId, body: &str| OwnedNote {
            tenant_id: *tenant.as_uuid(),
            id: Uuid::now_v7(),
            body: body.into(),
        };
        let smuggled = owned
            .save_batch_for(
                &s.app,
                &rls,
                a,
                &[row(a, "a"), row(b, "b")],
                OnConflict::Error,
            )
            .await
            .unwrap_err();
        assert!(
            smuggled.to_string().contains("row-level security"),
            "{table}: {smuggled}"
        );
        let late = owned
            .with_max_rows_per_statement(1)
            .save_batch_for(
                &s.app,
                &rls,
                a,
                &[row(a, "a1"), row(a, "a2"), row(b, "b")],
                OnConflict::Error,
            )
            .await
            .unwrap_err();
        assert!(late.to_string().contains("row-level security"), "{late}");
        assert!(s.all(table).await.is_empty(), "{table}: nothing written");
    }

    // `app.claims` keeps one id across tenants: B's write onto A's id never touches A's row.
    let claims = repo(&s.app, "app.claims");
    let mine = notes(1, "a's claim");
    claims
        .save_batch_for(&s.app, &rls, a, &mine, OnConflict::Error)
        .await
        .unwrap();
    let mut theirs = mine.clone();
    theirs[0].body = "taken by b".into();
    let overwrite = claims
        .save_batch_for(&s.app, &rls, b, &theirs, OnConflict::Update)
        .await
        .unwrap_err();
    assert!(
        overwrite.to_string().contains("row-level security"),
        "{overwrite}"
    );
    let duplicate = claims
        .save_batch_for(&s.app, &rls, b, &theirs, OnConflict::Error)
        .await
        .unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::AlreadyExists, "{duplicate}");
    let skipped = claims
        .save_batch_for(&s.app, &rls, b, &theirs, OnConflict::Ignore)
        .await
        .unwrap();
    assert_eq!(skipped, 0);
    let all = s.all("app.claims").await;
    assert_eq!(
        all,
        vec![(*a.as_uuid(), mine[0].id, "a's claim 0".to_owned(), 1)],
        "A's row as A wrote it"
    );
    assert!(s.seen_by(b, "app.claims").await.is_empty());
    assert_eq!(s.unscoped("app.claims").await, (0, None));
}

#[tokio::test]
async fn rls_save_batch_for_fails_closed_with_an_error() {
    writes_fail_closed(PgRoute::Direct).await;
}

#[tokio::test]
async fn rls_save_batch_for_fails_closed_with_an_error_through_pgbouncer() {
    writes_fail_closed(PgRoute::PgBouncer).await;
}

/// Without the setting carried in the statement, the same `INSERT` writes nothing: the
/// default finds no tenant (a NULL `tenant_id`), which the policy refuses — what
/// `save_batch` alone does on the application role's autocommit connection.
#[tokio::test]
async fn rls_plain_save_batch_without_the_tenant_writes_nothing() {
    let s = Setup::new(PgRoute::Direct).await;
    let error = repo(&s.app, "app.notes")
        .save_batch(&s.app, &notes(2, "x"), OnConflict::Error)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("row-level security"), "{error}");
    assert!(s.all("app.notes").await.is_empty());
}

/// Tenants writing at once over few server connections (PgBouncer's pool, or a small
/// direct pool): every row lands with its own tenant, and reads without a tenant in
/// between never see a row — no setting survives on a connection the next user gets.
async fn concurrent_tenants(route: PgRoute) {
    let s = Setup::new(route).await;
    let rls = TenantIsolation::row_level_security();
    let notes_repo = repo(&s.app, "app.notes");
    let tenants: Vec<TenantId> = (0..6).map(|_| TenantId::new()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for round in 0..8 {
            let (db, rls, notes_repo, tenant) =
                (s.app.clone(), rls.clone(), notes_repo.clone(), *tenant);
            tasks.spawn(async move {
                let rows = notes(7, &format!("t{t} r{round}"));
                notes_repo
                    .save_batch_for(&db, &rls, tenant, &rows, OnConflict::Error)
                    .await
                    .unwrap()
            });
        }
    }
    let mut probes = 0;
    while !tasks.is_empty() {
        assert_eq!(s.unscoped("app.notes").await, (0, None));
        probes += 1;
        if let Some(done) = tasks.try_join_next() {
            assert_eq!(done.unwrap(), 7);
        } else {
            tokio::task::yield_now().await;
        }
    }
    assert!(probes > 0);
    let all = s.all("app.notes").await;
    assert_eq!(all.len(), 6 * 8 * 7);
    for (t, tenant) in tenants.iter().enumerate() {
        let mine = bodies(&all, *tenant);
        assert_eq!(mine.len(), 8 * 7);
        assert!(
            mine.iter().all(|b| b.starts_with(&format!("t{t} "))),
            "tenant {t}: {mine:?}"
        );
        assert_eq!(s.seen_by(*tenant, "app.notes").await, mine);
    }
}

#[tokio::test]
async fn rls_save_batch_for_keeps_concurrent_tenants_apart() {
    concurrent_tenants(PgRoute::Direct).await;
}

#[tokio::test]
async fn rls_save_batch_for_keeps_concurrent_tenants_apart_through_pgbouncer() {
    concurrent_tenants(PgRoute::PgBouncer).await;
}

/// Under schema per tenant the same call writes the table in the tenant's schema.
#[tokio::test]
async fn schema_per_tenant_save_batch_for_names_the_tenants_schema() {
    let test_db = PgRoute::Direct.database().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let isolation = TenantIsolation::schema_per_tenant("t_").unwrap();
    let (a, b) = (TenantId::new(), TenantId::new());
    for tenant in [a, b] {
        let schema = isolation.schema_of(tenant).unwrap().unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.notes (id uuid PRIMARY KEY, body text NOT NULL, version int8 NOT NULL DEFAULT 1)"
        )))
        .execute(db.pool())
        .await
        .unwrap();
    }
    let notes_repo = repo(&db, "notes");
    let (for_a, for_b) = (notes(2, "a"), notes(3, "b"));
    for (tenant, rows) in [(a, &for_a), (b, &for_b), (a, &notes(1, "a again"))] {
        let written = notes_repo
            .save_batch_for(&db, &isolation, tenant, rows, OnConflict::Error)
            .await
            .unwrap();
        assert_eq!(written, rows.len() as u64);
    }
    for (tenant, expected) in [(a, 3), (b, 3)] {
        let schema = isolation.schema_of(tenant).unwrap().unwrap();
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {schema}.notes"
        )))
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(n, expected);
    }
    assert_eq!(notes_repo.table().to_string(), "\"notes\"", "unchanged");
}
