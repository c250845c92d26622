use crate::{config_for, count, setup};
use neo_core::{ErrorKind, TenantId};
use neo_db::{
    Db, MigrationSet, TenantMigrationConfig, TenantMigrator, TenantProgress, schema_per_tenant,
};
use neo_testkit::PgRoute;
use tokio::sync::watch;

fn sets() -> Vec<MigrationSet> {
    vec![
        MigrationSet::new("billing")
            .unwrap()
            .with(
                1,
                "invoices",
                "CREATE TABLE invoices (id int8 PRIMARY KEY, total int8 NOT NULL)",
            )
            .with(2, "due date", "ALTER TABLE invoices ADD COLUMN due date"),
        MigrationSet::new("audit").unwrap().with(
            1,
            "log",
            "CREATE TABLE audit_log (id int8 PRIMARY KEY)",
        ),
    ]
}

fn migrator(db: &Db, sets: Vec<MigrationSet>, parallelism: usize) -> TenantMigrator {
    let config = TenantMigrationConfig {
        parallelism,
        ..TenantMigrationConfig::default()
    };
    TenantMigrator::new(db, sets, schema_per_tenant("t_").unwrap(), config).unwrap()
}

async fn exists(db: &Db, table: &str) -> bool {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .persistent(false)
        .bind(table)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    found.is_some()
}

async fn provisioning_is_idempotent(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let migrator = migrator(&db, sets(), 2);
    let tenant = TenantId::new();
    let schema = migrator.schema_of(tenant).unwrap();
    let first = migrator.provision(tenant).await.unwrap();
    assert_eq!(first.schema, schema.as_str());
    assert_eq!(
        first.applied,
        vec![
            ("_neo_migrations_billing:2".to_owned(), vec![1, 2]),
            ("_neo_migrations_audit:1".to_owned(), vec![1])
        ]
    );
    let again = migrator.provision(tenant).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(count(&db, &format!("{schema}.invoices")).await, 0);
    assert_eq!(count(&db, &format!("{schema}.audit_log")).await, 0);
    assert_eq!(count(&db, "public.neo_tenant_migrations").await, 1);

    // Dropping the schema removes it and its record; provisioning again starts afresh.
    assert!(migrator.drop_schema(tenant).await.unwrap());
    assert!(!exists(&db, &format!("{schema}.invoices")).await);
    assert_eq!(count(&db, "public.neo_tenant_migrations").await, 0);
    assert!(!migrator.drop_schema(tenant).await.unwrap());
    assert_eq!(migrator.provision(tenant).await.unwrap().applied.len(), 2);
}

async fn a_failing_tenant_is_reported_and_the_others_are_migrated(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let tenants: Vec<TenantId> = (0..8).map(|_| TenantId::new()).collect();
    let bad = tenants[3];
    let bad_schema = schema_per_tenant("t_").unwrap()(bad).unwrap();
    // A script that fails in one schema only, the way a data-dependent migration does.
    let script: &'static str = Box::leak(
        format!(
            "CREATE TABLE notes (id int8 PRIMARY KEY); \
             DO $$ BEGIN IF current_schema() = '{}' THEN \
             RAISE EXCEPTION 'duplicate note ids in this tenant'; END IF; END $$",
            bad_schema.as_str()
        )
        .into_boxed_str(),
    );
    let mut with_notes = sets();
    with_notes.push(MigrationSet::new("notes").unwrap().with(1, "notes", script));
    let migrator = migrator(&db, with_notes, 3);
    let (progress, watch) = watch::channel(TenantProgress::default());
    let report = migrator
        .migrate_all(tenants.clone(), Some(&progress))
        .await
        .unwrap();
    assert!(!report.is_complete());
    assert_eq!(report.migrated.len(), 7);
    assert_eq!(report.failed.len(), 1);
    let failure = &report.failed[0];
    assert_eq!(failure.tenant, bad);
    assert_eq!(failure.schema.as_deref(), Some(bad_schema.as_str()));
    assert!(
        failure.error.contains("duplicate note ids in this tenant"),
        "{failure:?}"
    );
    assert_eq!(failure.kind, ErrorKind::Internal, "a script's own failure");
    let last = *watch.borrow();
    assert_eq!(
        (last.total, last.done, last.failed, last.skipped),
        (8, 8, 1, 0)
    );
    for tenant in &tenants {
        let schema = migrator.schema_of(*tenant).unwrap();
        assert_eq!(
            exists(&db, &format!("{schema}.notes")).await,
            *tenant != bad,
            "{schema}"
        );
        // The sets before the failing one are applied in the failing tenant too.
        assert!(exists(&db, &format!("{schema}.audit_log")).await);
    }
    // The failure is recorded with its reason; a second run tries that tenant again only.
    let recorded: String =
        sqlx::query_scalar("SELECT error FROM public.neo_tenant_migrations WHERE tenant = $1")
            .persistent(false)
            .bind(bad.as_uuid())
            .fetch_one(&mut *db.statement_connection().await.unwrap())
            .await
            .unwrap();
    assert!(recorded.contains("duplicate note ids"), "{recorded}");
    let second = migrator.migrate_all(tenants, None).await.unwrap();
    assert_eq!(second.migrated.iter().filter(|m| m.skipped).count(), 7);
    assert_eq!(second.failed.len(), 1);
}

async fn a_run_killed_mid_way_resumes_with_the_tenants_left(route: PgRoute) {
    let (test_db, db) = setup(route, &[]).await;
    let tenants: Vec<TenantId> = (0..24).map(|_| TenantId::new()).collect();
    // Slow scripts, so that the run is still going when it is killed.
    let slow = || {
        let mut sets = sets();
        sets.push(
            MigrationSet::new("slow")
                .unwrap()
                .with(1, "slow", "SELECT pg_sleep(0.05)"),
        );
        sets
    };
    // The first run has its own pool, closed when the run is killed: its sessions end, as
    // they would when the process dies.
    let doomed = Db::connect(&config_for(route, &test_db)).await.unwrap();
    let first = migrator(&doomed, slow(), 2);
    let (progress, mut watch) = watch::channel(TenantProgress::default());
    let list = tenants.clone();
    let run = tokio::spawn(async move { first.migrate_all(list, Some(&progress)).await });
    while watch.borrow_and_update().done < 6 {
        watch.changed().await.unwrap();
    }
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    doomed.close().await;
    // Behind PgBouncer the killed run's server sessions outlive its client connections until
    // PgBouncer notices and the statement in flight ends; a dead process's sessions are gone
    // too, so wait for them before resuming.
    let settle = std::time::Instant::now();
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'",
        )
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
        if busy == 0 || settle.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let recorded = count(&db, "public.neo_tenant_migrations").await as usize;
    assert!((6..24).contains(&recorded), "{recorded} tenants recorded");

    let resumed = migrator(&db, slow(), 2)
        .migrate_all(tenants.clone(), None)
        .await
        .unwrap();
    assert!(resumed.is_complete(), "{:?}", resumed.failed);
    let skipped = resumed.migrated.iter().filter(|m| m.skipped).count();
    assert_eq!(
        skipped, recorded,
        "the recorded tenants are not migrated again"
    );
    assert_eq!(resumed.migrated.len(), 24);
    for tenant in &tenants {
        let schema = schema_per_tenant("t_").unwrap()(*tenant).unwrap();
        assert_eq!(
            count(&db, &format!("{schema}._neo_migrations_slow")).await,
            1
        );
        assert_eq!(
            count(&db, &format!("{schema}._neo_migrations_billing")).await,
            2
        );
    }
    // Once every tenant is current, a run touches no schema; a new script makes all current
    // tenants due again.
    let idle = migrator(&db, slow(), 2)
        .migrate_all(tenants.clone(), None)
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT schema_name, fingerprint, error FROM public.neo_tenant_migrations")
            .persistent(false)
            .fetch_all(&mut *db.statement_connection().await.unwrap())
            .await
            .unwrap();
    assert_eq!(
        idle.migrated.iter().filter(|m| m.skipped).count(),
        24,
        "{rows:?}"
    );
    let mut grown = slow();
    grown[0] = grown[0]
        .clone()
        .with(3, "paid", "ALTER TABLE invoices ADD COLUMN paid bool");
    let upgraded = migrator(&db, grown, 4)
        .migrate_all(tenants, None)
        .await
        .unwrap();
    assert!(upgraded.migrated.iter().all(
        |m| !m.skipped && m.applied == vec![("_neo_migrations_billing:3".to_owned(), vec![3])]
    ));
}

#[test]
fn bad_configurations_are_refused() {
    assert!(schema_per_tenant("Bad").is_err());
    assert!(schema_per_tenant(&"x".repeat(40)).is_err());
    assert!(schema_per_tenant("pg_").is_err());
}

neo_testkit::over_routes!(
    provisioning_is_idempotent,
    a_failing_tenant_is_reported_and_the_others_are_migrated,
    a_run_killed_mid_way_resumes_with_the_tenants_left,
);
