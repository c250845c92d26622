use crate::{count, setup, setup_with};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Error, MigrationSet, Schema};
use neo_testkit::PgRoute;

fn billing() -> MigrationSet {
    MigrationSet::new("billing")
        .unwrap()
        .with(
            1,
            "invoices",
            "CREATE TABLE invoices (id int8 PRIMARY KEY, total int8 NOT NULL)",
        )
        .with(2, "due date", "ALTER TABLE invoices ADD COLUMN due date")
}

async fn sets_apply_once_and_record_what_they_applied(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    assert_eq!(billing().run(&db).await.unwrap().applied, vec![1, 2]);
    assert!(billing().run(&db).await.unwrap().applied.is_empty());
    // Another owner's set has its own record, so version numbers never collide.
    let other = MigrationSet::new("audit").unwrap().with(
        1,
        "log",
        "CREATE TABLE audit_log (id int8 PRIMARY KEY)",
    );
    assert_eq!(other.run(&db).await.unwrap().applied, vec![1]);
    assert_eq!(count(&db, "invoices").await, 0);
    assert_eq!(count(&db, "_neo_migrations_billing").await, 2);

    let grown = billing().with(3, "paid", "ALTER TABLE invoices ADD COLUMN paid bool");
    assert_eq!(grown.run(&db).await.unwrap().applied, vec![3]);
}

async fn tenant_schemas_get_their_own_tables_and_records(route: PgRoute) {
    let (_t, db) = setup_with(route, &[], |c| neo_db::DbConfig {
        max_connections: 1,
        ..c
    })
    .await;
    for tenant in ["tenant_a", "tenant_b"] {
        let schema = Schema::new(tenant).unwrap();
        assert_eq!(
            billing().run_in_schema(&db, &schema).await.unwrap().applied,
            vec![1, 2]
        );
        assert!(
            billing()
                .run_in_schema(&db, &schema)
                .await
                .unwrap()
                .applied
                .is_empty()
        );
        assert_eq!(count(&db, &format!("{tenant}.invoices")).await, 0);
    }
    let public: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.invoices')::text")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(public, None);
    // The pool's only connection is back on the default search_path.
    let path: String = sqlx::query_scalar("SHOW search_path")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(path, "\"$user\", public");
}

async fn a_failing_or_changed_script_is_an_error_and_rolls_back(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let broken = MigrationSet::new("broken")
        .unwrap()
        .with(1, "ok", "CREATE TABLE fine (id int8)")
        .with(
            2,
            "typo",
            "CREATE TABLE half (id int8); CREAT TABLE oops (id int8)",
        );
    let err = broken.run(&db).await.unwrap_err();
    assert!(matches!(err, Error::Migrate(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    let half: Option<String> = sqlx::query_scalar("SELECT to_regclass('half')::text")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(half, None, "script 2 was rolled back");
    assert_eq!(count(&db, "fine").await, 0);

    billing().run(&db).await.unwrap();
    let edited = MigrationSet::new("billing")
        .unwrap()
        .with(1, "invoices", "CREATE TABLE invoices (id int8 PRIMARY KEY)")
        .with(2, "due date", "ALTER TABLE invoices ADD COLUMN due date");
    let err = edited.run(&db).await.unwrap_err();
    assert!(err.to_string().contains('1'), "{err}");
}

async fn scripts_load_from_a_directory(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_first.sql"),
        "CREATE TABLE from_dir (id int8);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("2_second.sql"),
        "INSERT INTO from_dir VALUES (1);",
    )
    .unwrap();
    let set = MigrationSet::from_dir("host", dir.path()).await.unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.run(&db).await.unwrap().applied, vec![1, 2]);
    assert_eq!(count(&db, "from_dir").await, 1);
    assert!(MigrationSet::new("Bad-Name").is_err());
}

neo_testkit::over_routes!(
    sets_apply_once_and_record_what_they_applied,
    tenant_schemas_get_their_own_tables_and_records,
    a_failing_or_changed_script_is_an_error_and_rolls_back,
    scripts_load_from_a_directory,
);
