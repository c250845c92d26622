use crate::{PRODUCTS, Product, count, products, setup};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, Column, ColumnBinder, Error, OnConflict, Record, Schema};
use neo_testkit::PgRoute;
use uuid::Uuid;

async fn repo(
    route: PgRoute,
) -> (
    neo_testkit::TestDatabase,
    neo_db::Db,
    BatchRepository<Product>,
) {
    let (test_db, db) = setup(route, &[PRODUCTS]).await;
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    (test_db, db, repo)
}

async fn save_then_load_aligned_with_missing_and_duplicate_ids(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let items = products(5);
    assert_eq!(
        repo.save_batch(&db, &items, OnConflict::Error)
            .await
            .unwrap(),
        5
    );

    let missing = Uuid::now_v7();
    let ids = vec![items[3].id, missing, items[0].id, items[3].id];
    let loaded = repo.load_batch(&db, &ids).await.unwrap();
    assert_eq!(loaded.len(), 4);
    assert_eq!(loaded[0].as_ref().unwrap().sku, items[3].sku);
    assert!(loaded[1].is_none());
    assert_eq!(loaded[2].as_ref().unwrap().sku, items[0].sku);
    assert_eq!(loaded[3].as_ref().unwrap().id, items[3].id);
    // The database default was read back.
    assert!(loaded[0].as_ref().unwrap().created_at > chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);

    let exists = repo.exists_batch(&db, &ids).await.unwrap();
    assert_eq!(exists, vec![true, false, true, true]);
}

async fn save_returning_gives_stored_rows(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let saved = repo
        .save_batch_returning(&db, &products(3), OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(saved.len(), 3);
    assert!(
        saved
            .iter()
            .all(|p| p.version == 1 && p.created_at.timestamp() > 0)
    );
}

async fn empty_batches_send_nothing_and_return_empty(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    assert_eq!(
        repo.save_batch(&db, &[], OnConflict::Error).await.unwrap(),
        0
    );
    assert!(repo.load_batch(&db, &[]).await.unwrap().is_empty());
    assert!(repo.update_batch(&db, &[]).await.unwrap().is_empty());
    assert!(repo.delete_batch(&db, &[]).await.unwrap().is_empty());
    assert!(repo.exists_batch(&db, &[]).await.unwrap().is_empty());
    assert_eq!(db.stats().slow_queries, 0);
}

async fn conflicts_error_ignore_or_update(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let mut items = products(3);
    repo.save_batch(&db, &items[..2], OnConflict::Error)
        .await
        .unwrap();

    // Plain insert: AlreadyExists, and the new row of the batch is not written either.
    let err = repo
        .save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(err.sqlstate(), Some("23505"));
    assert_eq!(count(&db, "products").await, 2);

    // Ignore: only the new row.
    assert_eq!(
        repo.save_batch(&db, &items, OnConflict::Ignore)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count(&db, "products").await, 3);

    // Update: overwrite and bump the version.
    items[0].name = "renamed".into();
    assert_eq!(
        repo.save_batch(&db, &items[..1], OnConflict::Update)
            .await
            .unwrap(),
        1
    );
    let stored = repo
        .load_batch(&db, &[items[0].id])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!((stored.name.as_str(), stored.version), ("renamed", 2));

    // A conflict target other than the id: upsert by sku.
    let by_sku = repo.with_conflict_target(&["sku"]).unwrap();
    let mut same_sku = products(1);
    same_sku[0].name = "by sku".into();
    by_sku
        .save_batch(&db, &same_sku, OnConflict::Update)
        .await
        .unwrap();
    let stored = repo
        .load_batch(&db, &[items[0].id])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(stored.name, "by sku");
}

async fn validate_batch_reports_every_bad_item_and_writes_nothing(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let mut items = products(6);
    items[1].price_cents = -5;
    items[4].name = " ".into();
    items[5].id = items[2].id;
    let err = repo
        .save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    let Error::InvalidBatch { failures } = &err else {
        panic!("expected InvalidBatch, got {err:?}");
    };
    let indices: Vec<usize> = failures.iter().map(|f| f.index).collect();
    assert_eq!(indices, vec![1, 4, 5], "{err}");
    assert!(failures[0].reason.contains("negative"));
    assert!(failures[2].reason.contains("duplicate id"));
    assert_eq!(count(&db, "products").await, 0);
    // The same check is available before any write.
    assert!(repo.validate_batch(&items[..1]).is_ok());
}

async fn update_with_versions_is_all_or_nothing_and_names_conflicts(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let items = products(4);
    repo.save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap();

    let mut edited = items.clone();
    for p in &mut edited {
        p.price_cents += 1;
    }
    let updated = repo.update_batch(&db, &edited).await.unwrap();
    assert_eq!(updated.len(), 4);
    assert!(updated.iter().all(|p| p.version == 2));

    // Two stale copies (version 1) and one deleted row among fresh ones.
    let mut fresh = updated.clone();
    fresh.sort_by_key(|p| edited.iter().position(|e| e.id == p.id));
    fresh[0].name = "fresh".into();
    let mut stale = edited.clone();
    stale[1].name = "stale".into();
    repo.delete_batch(&db, &[items[3].id]).await.unwrap();
    let batch = vec![
        fresh[0].clone(),
        stale[1].clone(),
        stale[2].clone(),
        fresh[3].clone(),
    ];
    let err = repo.update_batch(&db, &batch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let Error::VersionConflict { indices, ids } = &err else {
        panic!("expected VersionConflict, got {err:?}");
    };
    assert_eq!(indices, &vec![1, 2, 3]);
    assert_eq!(ids[0], items[1].id.to_string());
    // Nothing written: the fresh row keeps its old name and version.
    let stored = repo
        .load_batch(&db, &[items[0].id])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!((stored.name.as_str(), stored.version), ("product 0", 2));
}

async fn delete_returns_the_ids_that_existed(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let items = products(3);
    repo.save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap();
    let gone = Uuid::now_v7();
    let mut deleted = repo
        .delete_batch(&db, &[items[0].id, gone, items[0].id, items[2].id])
        .await
        .unwrap();
    deleted.sort();
    let mut expected = vec![items[0].id, items[2].id];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(count(&db, "products").await, 1);
}

async fn batches_past_the_bind_limit_are_chunked_atomically(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    // 70,000 rows: more than 65,535 rows (and far more than 65,535 scalar parameters would
    // allow); split into statements of 25,000 rows, all in one transaction.
    let repo = repo.with_max_rows_per_statement(25_000);
    let mut items = products(70_000);
    assert_eq!(
        repo.save_batch(&db, &items, OnConflict::Error)
            .await
            .unwrap(),
        70_000
    );
    let ids: Vec<Uuid> = items.iter().map(|p| p.id).collect();
    let loaded = repo.load_batch(&db, &ids).await.unwrap();
    assert!(
        loaded
            .iter()
            .zip(&items)
            .all(|(l, p)| l.as_ref().unwrap().sku == p.sku)
    );

    // A bad row in the last chunk rolls back the earlier chunks too.
    let more: Vec<Product> = (70_000..120_000).map(Product::new).collect();
    let mut bad = more.clone();
    bad[49_999].sku = items[0].sku.clone(); // unique violation in the second chunk
    let err = repo
        .save_batch(&db, &bad, OnConflict::Error)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(count(&db, "products").await, 70_000);

    for p in &mut items {
        p.price_cents += 1;
    }
    assert_eq!(repo.update_batch(&db, &items).await.unwrap().len(), 70_000);
}

async fn a_transaction_spanning_save_and_update_rolls_back_together(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    let items = products(10);

    let mut uow = db.begin().await.unwrap();
    repo.save_batch(&mut *uow, &items, OnConflict::Error)
        .await
        .unwrap();
    let mut edited = items.clone();
    edited[0].name = "inside".into();
    repo.update_batch(&mut *uow, &edited).await.unwrap();
    // Visible inside the transaction...
    assert!(repo.exists_batch(&mut *uow, &[items[0].id]).await.unwrap()[0]);
    uow.rollback().await.unwrap();
    // ...and gone after the rollback.
    assert_eq!(count(&db, "products").await, 0);

    // A failing update inside a unit of work rolls back its savepoint only, so the caller
    // can decide; committing keeps the earlier save.
    let mut uow = db.begin().await.unwrap();
    repo.save_batch(&mut *uow, &items, OnConflict::Error)
        .await
        .unwrap();
    let mut stale = items.clone();
    stale[3].version = 7;
    let err = repo.update_batch(&mut *uow, &stale).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    uow.commit().await.unwrap();
    assert_eq!(count(&db, "products").await, 10);
    let stored = repo
        .load_batch(&db, &[items[0].id])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(stored.version, 1);
}

async fn tenant_schemas_per_repository_or_per_transaction(route: PgRoute) {
    let (_t, db, repo) = repo(route).await;
    for schema in ["tenant_a", "tenant_b"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.products (LIKE public.products INCLUDING ALL)"
        )))
        .execute(db.pool())
        .await
        .unwrap();
    }
    let a = Schema::new("tenant_a").unwrap();
    let b = Schema::new("tenant_b").unwrap();

    // Qualified names.
    repo.in_schema(&a)
        .unwrap()
        .save_batch(&db, &products(2), OnConflict::Error)
        .await
        .unwrap();
    // search_path inside a transaction, with the unqualified repository.
    let mut uow = db.begin_in_schema(&b).await.unwrap();
    repo.save_batch(&mut *uow, &products(3), OnConflict::Error)
        .await
        .unwrap();
    uow.commit().await.unwrap();

    assert_eq!(count(&db, "tenant_a.products").await, 2);
    assert_eq!(count(&db, "tenant_b.products").await, 3);
    assert_eq!(count(&db, "public.products").await, 0);
    // The search_path was local to that transaction.
    let path: String = sqlx::query_scalar("SHOW search_path")
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert!(!path.contains("tenant_b"), "{path}");

    // Invalid schema names never reach SQL.
    for bad in [
        "tenant-c",
        "Tenant",
        "a;drop table products",
        "pg_catalog",
        "",
    ] {
        let err = Schema::new(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{bad}");
    }
    let err = BatchRepository::<Product>::new(&db, "x.products; --").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
}

/// A record whose `bind_columns` is wrong in the ways a hand-written one can be.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Broken {
    id: Uuid,
    name: String,
}

#[derive(Clone, Copy)]
enum Mistake {
    ShortColumn,
    MissingColumn,
    OutOfOrder,
}

thread_local! {
    static MISTAKE: std::cell::Cell<Mistake> = const { std::cell::Cell::new(Mistake::ShortColumn) };
}

impl Record for Broken {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[Column::new("id"), Column::new("name")];
    fn id(&self) -> &Uuid {
        &self.id
    }
    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        match MISTAKE.get() {
            Mistake::ShortColumn => {
                b.column("id", |r| r.id)?;
                let mut names: Vec<&str> = b.rows().iter().map(|r| r.name.as_str()).collect();
                names.pop();
                b.push("name", names)
            }
            Mistake::MissingColumn => b.column("id", |r| r.id),
            Mistake::OutOfOrder => {
                b.column("name", |r| r.name.as_str())?;
                b.column("id", |r| r.id)
            }
        }
    }
}

async fn unequal_or_missing_columns_are_typed_errors_and_write_nothing(route: PgRoute) {
    let (_t, db) = setup(
        route,
        &["CREATE TABLE broken (id uuid PRIMARY KEY, name text NOT NULL)"],
    )
    .await;
    let repo = BatchRepository::<Broken>::new(&db, "broken").unwrap();
    let rows: Vec<Broken> = (0..3)
        .map(|i| Broken {
            id: Uuid::now_v7(),
            name: format!("n{i}"),
        })
        .collect();
    for mistake in [
        Mistake::ShortColumn,
        Mistake::MissingColumn,
        Mistake::OutOfOrder,
    ] {
        MISTAKE.set(mistake);
        let err = repo
            .save_batch(&db, &rows, OnConflict::Error)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
        let err = repo.update_batch(&db, &rows).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
    }
    MISTAKE.set(Mistake::ShortColumn);
    let err = repo
        .save_batch(&db, &rows, OnConflict::Error)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ColumnLength {
                expected: 3,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(count(&db, "broken").await, 0);
}

/// A column of an enum type, bound as text and cast.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Ticket {
    id: Uuid,
}

impl Record for Ticket {
    type Id = Uuid;
    const COLUMNS: &'static [Column] =
        &[Column::new("id"), Column::new("state").cast("ticket_state")];
    fn id(&self) -> &Uuid {
        &self.id
    }
    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |r| r.id)?;
        b.column("state", |_| "open")
    }
}

/// The enum is created by a migration run through the `Db`, as a service does: behind
/// PgBouncer the connections opened before it are then replaced, so each statement's first
/// use of the type works (neo_db's `custom_types`; pooler::enum_columns_work_...).
async fn casts_bind_enum_columns(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    neo_db::MigrationSet::new("tickets")
        .unwrap()
        .with(
            1,
            "tickets",
            "CREATE TYPE ticket_state AS ENUM ('open', 'closed'); \
             CREATE TABLE tickets (id uuid PRIMARY KEY, state ticket_state NOT NULL)",
        )
        .run(&db)
        .await
        .unwrap();
    let repo = BatchRepository::<Ticket>::new(&db, "tickets").unwrap();
    let rows = vec![Ticket { id: Uuid::now_v7() }, Ticket { id: Uuid::now_v7() }];
    repo.save_batch(&db, &rows, OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(repo.update_batch(&db, &rows).await.unwrap().len(), 2);
    // Decoded as the enum itself, not cast to text.
    let states: Vec<TicketState> = sqlx::query_scalar("SELECT state FROM tickets")
        .persistent(db.pooler().named_statements())
        .fetch_all(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap();
    assert_eq!(states, vec![TicketState::Open, TicketState::Open]);
}

#[derive(Debug, PartialEq, sqlx::Type)]
#[sqlx(type_name = "ticket_state", rename_all = "lowercase")]
enum TicketState {
    Open,
}

neo_testkit::over_routes!(
    save_then_load_aligned_with_missing_and_duplicate_ids,
    save_returning_gives_stored_rows,
    empty_batches_send_nothing_and_return_empty,
    conflicts_error_ignore_or_update,
    validate_batch_reports_every_bad_item_and_writes_nothing,
    update_with_versions_is_all_or_nothing_and_names_conflicts,
    delete_returns_the_ids_that_existed,
    batches_past_the_bind_limit_are_chunked_atomically,
    a_transaction_spanning_save_and_update_rolls_back_together,
    tenant_schemas_per_repository_or_per_transaction,
    unequal_or_missing_columns_are_typed_errors_and_write_nothing,
    casts_bind_enum_columns,
);
