//! Derived records through the real `BatchRepository` and `CopyWriter`, against a PostgreSQL
//! from neo-testkit, side by side with a hand-written impl of the same struct on a twin table.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use chrono::{DateTime, Utc};
use neo_db::{
    Column, ColumnBinder, CopyWriter, Db, DbConfig, Error, OnConflict, Record, Schema, Table,
    TableSchema, TenantIsolation,
};
use neo_testkit::TestDatabase;
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TYPE product_status AS ENUM ('draft', 'live');
CREATE TABLE products (
    id uuid PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents int8 NOT NULL CHECK (price_cents >= 0),
    attrs jsonb NOT NULL DEFAULT '{}',
    status product_status NOT NULL,
    discontinued_at timestamptz,
    version int8 NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products_hand (LIKE products INCLUDING ALL);
CREATE SCHEMA catalog;
CREATE TABLE catalog.labels (code text PRIMARY KEY, label text NOT NULL);
";

/// A column of a type of its own: sqlx binds it (also as an array, `product_status[]`), the
/// COPY writer writes its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "product_status", rename_all = "lowercase")]
enum Status {
    Draft,
    Live,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Live => "live",
        }
    }
}

impl neo_db::CopyValue for Status {
    fn write_binary(&self, buf: &mut bytes::BytesMut) {
        self.label().write_binary(buf);
    }
    fn write_text(&self, buf: &mut bytes::BytesMut) {
        self.label().write_text(buf);
    }
}

/// The derived side.
#[derive(Debug, Clone, PartialEq, neo_db::Record, neo_db::CopyRow)]
#[record(table = "products", validate = "Self::check")]
struct Product {
    id: Uuid,
    sku: String,
    #[record(rename = "title")]
    name: String,
    price_cents: i64,
    attrs: serde_json::Value,
    // The enum binds as `product_status` already; the cast is what a domain or a text-typed
    // field would need, and must reach the SQL as the hand-written `Column::cast` does.
    #[record(cast = "product_status")]
    status: Status,
    discontinued_at: Option<DateTime<Utc>>,
    #[record(version)]
    version: i64,
    #[record(read_only)]
    created_at: DateTime<Utc>,
    #[record(skip)]
    cart_quantity: u32,
}

impl Product {
    fn new(n: usize) -> Self {
        Product {
            id: Uuid::now_v7(),
            sku: format!("sku-{n:05}"),
            name: format!("product {n}"),
            price_cents: n as i64 * 10,
            attrs: serde_json::json!({ "n": n }),
            status: if n.is_multiple_of(2) {
                Status::Draft
            } else {
                Status::Live
            },
            discontinued_at: n.is_multiple_of(3).then_some(DateTime::<Utc>::UNIX_EPOCH),
            version: 1,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            cart_quantity: 7,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.price_cents < 0 {
            return Err(format!("price_cents is negative ({})", self.price_cents));
        }
        Ok(())
    }
}

/// The hand-written side: the same struct, `Record` written out as neo-db's docs show.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct HandProduct {
    id: Uuid,
    sku: String,
    #[sqlx(rename = "title")]
    name: String,
    price_cents: i64,
    attrs: serde_json::Value,
    status: Status,
    discontinued_at: Option<DateTime<Utc>>,
    version: i64,
    created_at: DateTime<Utc>,
    #[sqlx(skip)]
    cart_quantity: u32,
}

impl Record for HandProduct {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("id"),
        Column::new("sku"),
        Column::new("title"),
        Column::new("price_cents"),
        Column::new("attrs"),
        Column::new("status").cast("product_status"),
        Column::new("discontinued_at"),
        Column::new("version"),
    ];
    const VERSION_COLUMN: Option<&'static str> = Some("version");

    fn id(&self) -> &Uuid {
        &self.id
    }

    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |p| p.id)?;
        b.column("sku", |p| p.sku.as_str())?;
        b.column("title", |p| p.name.as_str())?;
        b.column("price_cents", |p| p.price_cents)?;
        b.column("attrs", |p| &p.attrs)?;
        b.column("status", |p| p.status)?;
        b.column("discontinued_at", |p| p.discontinued_at)?;
        b.column("version", |p| p.version)
    }

    fn validate(&self) -> Result<(), String> {
        if self.price_cents < 0 {
            return Err(format!("price_cents is negative ({})", self.price_cents));
        }
        Ok(())
    }
}

impl From<&Product> for HandProduct {
    fn from(p: &Product) -> Self {
        HandProduct {
            id: p.id,
            sku: p.sku.clone(),
            name: p.name.clone(),
            price_cents: p.price_cents,
            attrs: p.attrs.clone(),
            status: p.status,
            discontinued_at: p.discontinued_at,
            version: p.version,
            created_at: p.created_at,
            cart_quantity: p.cart_quantity,
        }
    }
}

/// What both sides must agree on after a round trip (the database fills `created_at`).
fn stored(p: &Product) -> HandProduct {
    HandProduct::from(p)
}

/// A record in a fixed schema, keyed by a renamed text column, without a version.
#[derive(Debug, Clone, PartialEq, neo_db::Record)]
#[record(table = "labels", schema = "catalog")]
struct Label {
    #[record(key, rename = "code")]
    key: String,
    label: String,
}

/// A record in each tenant's schema.
#[derive(Debug, Clone, PartialEq, neo_db::Record)]
#[record(table = "notes", schema = tenant)]
struct Note {
    id: Uuid,
    body: String,
}

async fn setup() -> (TestDatabase, Db) {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    sqlx::raw_sql(SCHEMA).execute(db.pool()).await.unwrap();
    (test_db, db)
}

#[test]
fn derived_declarations_equal_the_hand_written_ones() {
    assert_eq!(Product::COLUMNS, HandProduct::COLUMNS);
    assert_eq!(Product::ID_COLUMN, HandProduct::ID_COLUMN);
    assert_eq!(Product::VERSION_COLUMN, HandProduct::VERSION_COLUMN);
    assert_eq!(Product::TABLE, "products");
    assert_eq!(Product::SCHEMA, TableSchema::SearchPath);
    assert_eq!(
        <Product as neo_db::CopyRow>::COLUMNS,
        [
            "id",
            "sku",
            "title",
            "price_cents",
            "attrs",
            "status",
            "discontinued_at",
            "version"
        ]
    );
    assert_eq!(Label::ID_COLUMN, "code");
    assert_eq!(Label::VERSION_COLUMN, None);
    assert_eq!(Label::table_name(), "catalog.labels");
    assert_eq!(Note::SCHEMA, TableSchema::Tenant);
    let bad = Product {
        price_cents: -1,
        ..Product::new(1)
    };
    assert_eq!(
        bad.validate(),
        HandProduct::from(&bad).validate(),
        "validate = \"Self::check\" is the record's validate"
    );
    assert!(bad.validate().is_err());
}

#[tokio::test]
async fn save_load_and_upsert_match_the_hand_written_record() {
    let (_test_db, db) = setup().await;
    let derived = Product::batch_repository(&db).unwrap();
    let hand = neo_db::BatchRepository::<HandProduct>::new(&db, "products_hand").unwrap();
    let rows: Vec<Product> = (0..250).map(Product::new).collect();
    let hand_rows: Vec<HandProduct> = rows.iter().map(HandProduct::from).collect();

    assert_eq!(
        derived
            .save_batch(&db, &rows, OnConflict::Error)
            .await
            .unwrap(),
        250
    );
    assert_eq!(
        hand.save_batch(&db, &hand_rows, OnConflict::Error)
            .await
            .unwrap(),
        250
    );

    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let loaded = derived.load_batch(&db, &ids).await.unwrap();
    let hand_loaded = hand.load_batch(&db, &ids).await.unwrap();
    assert_eq!(loaded.len(), 250);
    for ((row, got), want) in rows.iter().zip(&loaded).zip(&hand_loaded) {
        let got = got.as_ref().expect("derived row saved");
        let want = want.as_ref().expect("hand-written row saved");
        // The database filled `created_at` (read_only: never written); `skip` reads as default.
        assert!(got.created_at > DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(got.cart_quantity, 0);
        assert_eq!(want.cart_quantity, 0);
        let expected = Product {
            created_at: got.created_at,
            cart_quantity: 0,
            ..row.clone()
        };
        assert_eq!(got, &expected);
        assert_eq!(
            stored(got),
            HandProduct {
                created_at: got.created_at,
                ..want.clone()
            },
            "the derived and hand-written records store and load the same values"
        );
    }

    // Upsert: the derived SQL overwrites the columns and increments the version, as the
    // hand-written one does.
    let mut changed = rows[..10].to_vec();
    changed
        .iter_mut()
        .for_each(|r| r.name.push_str(" (renamed)"));
    let mut hand_changed: Vec<HandProduct> = changed.iter().map(HandProduct::from).collect();
    hand_changed.iter_mut().for_each(|r| r.version = 1);
    let saved = derived
        .save_batch_returning(&db, &changed, OnConflict::Update)
        .await
        .unwrap();
    let hand_saved = hand
        .save_batch_returning(&db, &hand_changed, OnConflict::Update)
        .await
        .unwrap();
    assert_eq!(saved.len(), 10);
    for (got, want) in saved.iter().zip(&hand_saved) {
        assert_eq!((got.version, want.version), (2, 2));
        assert!(got.name.ends_with("(renamed)"));
        assert_eq!(got.name, want.name);
    }

    // Fixed schema and a renamed key.
    let labels = Label::batch_repository(&db).unwrap();
    assert_eq!(labels.table().to_string(), "\"catalog\".\"labels\"");
    let label = Label {
        key: "eur".into(),
        label: "Euro".into(),
    };
    labels
        .save_batch(&db, std::slice::from_ref(&label), OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(
        labels.load_batch(&db, &["eur".to_owned()]).await.unwrap(),
        vec![Some(label)]
    );
}

#[tokio::test]
async fn version_conflicts_and_invalid_rows_are_reported_like_the_hand_written_ones() {
    let (_test_db, db) = setup().await;
    let derived = Product::batch_repository(&db).unwrap();
    let hand = neo_db::BatchRepository::<HandProduct>::new(&db, "products_hand").unwrap();
    let rows: Vec<Product> = (0..5).map(Product::new).collect();
    let hand_rows: Vec<HandProduct> = rows.iter().map(HandProduct::from).collect();
    derived
        .save_batch(&db, &rows, OnConflict::Error)
        .await
        .unwrap();
    hand.save_batch(&db, &hand_rows, OnConflict::Error)
        .await
        .unwrap();

    let updated = derived.update_batch(&db, &rows).await.unwrap();
    assert!(updated.iter().all(|r| r.version == 2));
    let hand_updated = hand.update_batch(&db, &hand_rows).await.unwrap();
    assert!(hand_updated.iter().all(|r| r.version == 2));

    // `rows` still carry version 1: stale, both sides refuse all of them, nothing written.
    let mut stale = rows.clone();
    stale[2].name = "lost update".into();
    let mut hand_stale = hand_rows.clone();
    hand_stale[2].name = "lost update".into();
    let err = derived.update_batch(&db, &stale).await.unwrap_err();
    let hand_err = hand.update_batch(&db, &hand_stale).await.unwrap_err();
    let (
        Error::VersionConflict { indices, .. },
        Error::VersionConflict {
            indices: hand_indices,
            ..
        },
    ) = (&err, &hand_err)
    else {
        panic!("expected two VersionConflicts, got {err:?} and {hand_err:?}");
    };
    assert_eq!(indices, &vec![0, 1, 2, 3, 4]);
    assert_eq!(indices, hand_indices);
    let reloaded = derived.load_batch(&db, &[rows[2].id]).await.unwrap();
    assert_eq!(reloaded[0].as_ref().unwrap().name, "product 2");

    // `validate = "Self::check"` runs before anything is sent.
    let bad = vec![
        Product::new(10),
        Product {
            price_cents: -5,
            ..Product::new(11)
        },
    ];
    let err = derived
        .save_batch(&db, &bad, OnConflict::Error)
        .await
        .unwrap_err();
    let hand_bad: Vec<HandProduct> = bad.iter().map(HandProduct::from).collect();
    let hand_err = hand
        .save_batch(&db, &hand_bad, OnConflict::Error)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidBatch { failures } if failures.len() == 1 && failures[0].index == 1)
    );
    assert_eq!(err.to_string(), hand_err.to_string());
}

#[tokio::test]
async fn derived_copy_rows_load_back_as_records() {
    let (_test_db, db) = setup().await;
    let rows: Vec<Product> = (0..1000).map(Product::new).collect();
    let mut writer = Product::copy_writer(&db, None).unwrap();
    writer.write_all(&rows).await.unwrap();
    let report = writer.finish().await.unwrap();
    assert_eq!(report.rows, 1000);

    // The same rows through COPY into the twin table, as a hand-written CopyRow would.
    let mut text = CopyWriter::<Product>::new(&db, "products_hand")
        .unwrap()
        .with_config(neo_db::CopyConfig {
            format: neo_db::CopyFormat::Text,
            ..neo_db::CopyConfig::default()
        })
        .unwrap();
    text.write_all(&rows).await.unwrap();
    assert_eq!(text.finish().await.unwrap().rows, 1000);

    let repo = Product::batch_repository(&db).unwrap();
    let hand = neo_db::BatchRepository::<HandProduct>::new(&db, "products_hand").unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let loaded = repo.load_batch(&db, &ids).await.unwrap();
    let hand_loaded = hand.load_batch(&db, &ids).await.unwrap();
    for ((row, got), want) in rows.iter().zip(loaded).zip(hand_loaded) {
        let got = got.unwrap();
        let want = want.unwrap();
        assert_eq!(
            got,
            Product {
                created_at: got.created_at,
                cart_quantity: 0,
                ..row.clone()
            }
        );
        assert_eq!((got.status, got.version), (want.status, want.version));
    }
}

#[tokio::test]
async fn a_tenant_record_lands_in_the_tenant_schema() {
    let (_test_db, db) = setup().await;
    let isolation = TenantIsolation::schema_per_tenant("t_").unwrap();
    let (a, b) = (neo_core::TenantId::new(), neo_core::TenantId::new());
    for tenant in [a, b] {
        let schema = isolation.schema_of(tenant).unwrap().unwrap();
        let ddl = format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.notes (id uuid PRIMARY KEY, body text NOT NULL)",
            s = schema.ident()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(db.pool())
            .await
            .unwrap();
    }
    let note = Note {
        id: Uuid::now_v7(),
        body: "only for a".into(),
    };
    let repo_a = Note::tenant_batch_repository(&db, &isolation, a).unwrap();
    let schema_a: Schema = isolation.schema_of(a).unwrap().unwrap();
    assert_eq!(repo_a.table().schema(), Some(&schema_a));
    repo_a
        .save_batch(&db, std::slice::from_ref(&note), OnConflict::Error)
        .await
        .unwrap();
    let repo_b = Note::tenant_batch_repository(&db, &isolation, b).unwrap();
    assert_eq!(
        repo_a.load_batch(&db, &[note.id]).await.unwrap(),
        vec![Some(note.clone())]
    );
    assert_eq!(
        repo_b.load_batch(&db, &[note.id]).await.unwrap(),
        vec![None]
    );

    // Under row-level security the tables are shared: the unqualified name.
    let rls = TenantIsolation::row_level_security();
    let shared = Note::tenant_batch_repository(&db, &rls, a).unwrap();
    assert_eq!(shared.table().schema(), None);
}
