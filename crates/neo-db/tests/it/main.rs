//! neo-db against a real PostgreSQL started by neo-testkit (or `NEO_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod baselines;
mod batch;
mod copy;
mod deadlocks;
mod diagnostics;
mod errors;
mod faults;
mod ident;
mod migrate;
mod page;
mod pool;
mod pooler;
mod replica;
#[cfg(feature = "seal")]
mod seal;
#[cfg(feature = "seal")]
mod seal_rotation;
mod tenant_writes;
mod tenants;
mod tls;

use chrono::{DateTime, Utc};
use neo_db::{Column, ColumnBinder, Db, DbConfig, Record};
use neo_testkit::{PgRoute, TestDatabase};
use uuid::Uuid;

/// A table with a unique column, a check, a JSON column, a version and a database default.
pub(crate) const PRODUCTS: &str = "CREATE TABLE products (
    id uuid PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    name text NOT NULL,
    price_cents int8 NOT NULL CHECK (price_cents >= 0),
    attrs jsonb NOT NULL DEFAULT '{}',
    version int8 NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
)";

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub(crate) struct Product {
    pub(crate) id: Uuid,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) price_cents: i64,
    pub(crate) attrs: serde_json::Value,
    pub(crate) version: i64,
    pub(crate) created_at: DateTime<Utc>,
}

impl Product {
    pub(crate) fn new(n: usize) -> Self {
        Product {
            id: Uuid::now_v7(),
            sku: format!("sku-{n:06}"),
            name: format!("product {n}"),
            price_cents: n as i64 * 10,
            attrs: serde_json::json!({ "n": n }),
            version: 1,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }
}

impl Record for Product {
    type Id = Uuid;
    const COLUMNS: &'static [Column] = &[
        Column::new("id"),
        Column::new("sku"),
        Column::new("name"),
        Column::new("price_cents"),
        Column::new("attrs"),
        Column::new("version"),
    ];
    const VERSION_COLUMN: Option<&'static str> = Some("version");

    fn id(&self) -> &Uuid {
        &self.id
    }

    fn bind_columns(b: &mut ColumnBinder<'_, Self>) -> neo_db::Result<()> {
        b.column("id", |p| p.id)?;
        b.column("sku", |p| p.sku.as_str())?;
        b.column("name", |p| p.name.as_str())?;
        b.column("price_cents", |p| p.price_cents)?;
        b.column("attrs", |p| &p.attrs)?;
        b.column("version", |p| p.version)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        if self.price_cents < 0 {
            return Err(format!("price_cents is negative ({})", self.price_cents));
        }
        Ok(())
    }
}

pub(crate) fn products(n: usize) -> Vec<Product> {
    (0..n).map(Product::new).collect()
}

/// The configuration for a database reached by `route`: `pooler = "transaction"` through
/// PgBouncer, with the direct URL for LISTEN.
pub(crate) fn config_for(route: PgRoute, test_db: &TestDatabase) -> DbConfig {
    if route.is_pooled() {
        DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
    } else {
        DbConfig::with_url(test_db.url())
    }
}

/// A fresh database reached by `route` with `schema_sql` applied, and a `Db` on it.
pub(crate) async fn setup(route: PgRoute, schema_sql: &[&str]) -> (TestDatabase, Db) {
    setup_with(route, schema_sql, |c| c).await
}

pub(crate) async fn setup_with(
    route: PgRoute,
    schema_sql: &[&str],
    configure: impl FnOnce(DbConfig) -> DbConfig,
) -> (TestDatabase, Db) {
    let test_db = route.database().await;
    let db = Db::connect(&configure(config_for(route, &test_db)))
        .await
        .unwrap();
    for statement in schema_sql {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
            .execute(db.pool())
            .await
            .unwrap();
    }
    (test_db, db)
}

pub(crate) async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .persistent(false)
        .fetch_one(&mut *db.statement_connection().await.unwrap())
        .await
        .unwrap()
}
