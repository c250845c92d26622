//! A price list kept in each tenant's schema, described once with `#[derive(neo_db::Record)]`:
//! the first import of a tenant streams its rows with COPY, later imports upsert them by SKU
//! with `save_batch`, and a repricing updates them with optimistic versions.
//!
//! `cargo run -p batch-import` runs it against `NEO_DATABASE_URL`; `tests/` against a
//! throwaway server.

use neo_core::TenantId;
use neo_db::{Db, OnConflict, Record, Table, TenantIsolation};
use uuid::Uuid;

/// The tenant's table (created in its schema by [`provision`]).
const PRODUCTS: &str = "CREATE TABLE IF NOT EXISTS {schema}.products (
    id uuid PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price_cents int8 NOT NULL CHECK (price_cents >= 0),
    version int8 NOT NULL DEFAULT 1,
    imported_at timestamptz NOT NULL DEFAULT now()
)";

/// One product of a tenant's price list.
#[derive(Debug, Clone, PartialEq, neo_db::Record, neo_db::CopyRow)]
#[record(table = "products", schema = tenant, validate = "Self::check")]
pub struct Product {
    /// The row's id.
    pub id: Uuid,
    /// The tenant's stock-keeping unit, unique per tenant.
    pub sku: String,
    /// Shown to customers; the column is `title`.
    #[record(rename = "title")]
    pub name: String,
    /// The price in cents.
    pub price_cents: i64,
    /// Optimistic concurrency: `update_batch` refuses a row changed since it was read.
    #[record(version)]
    pub version: i64,
    /// Filled in by the database.
    #[record(read_only)]
    pub imported_at: neo_db::sqlx::types::chrono::DateTime<neo_db::sqlx::types::chrono::Utc>,
}

impl Product {
    /// A product parsed from a `sku,name,price_cents` line.
    ///
    /// # Errors
    /// A message naming the line when it does not have three fields or a numeric price.
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut fields = line.split(',').map(str::trim);
        let (Some(sku), Some(name), Some(price), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("{line:?}: expected sku,name,price_cents"));
        };
        let price_cents = price
            .parse()
            .map_err(|e| format!("{line:?}: price_cents {price:?}: {e}"))?;
        Ok(Product {
            id: Uuid::now_v7(),
            sku: sku.to_owned(),
            name: name.to_owned(),
            price_cents,
            version: 1,
            imported_at: Default::default(),
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.sku.is_empty() {
            return Err("sku is empty".into());
        }
        if self.price_cents < 0 {
            return Err(format!("{}: price_cents is negative", self.sku));
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The tenant's first import: this many rows by COPY.
    Copied(u64),
    /// This many rows inserted or overwritten by SKU.
    Upserted(u64),
}

/// Creates `tenant`'s schema and table.
///
/// # Errors
/// The database's.
pub async fn provision(
    db: &Db,
    isolation: &TenantIsolation,
    tenant: TenantId,
) -> neo_db::Result<()> {
    let Some(schema) = isolation.schema_of(tenant)? else {
        return Ok(());
    };
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; {}",
        PRODUCTS.replace("{schema}", &schema.ident().to_string()),
        schema = schema.ident()
    );
    neo_db::sqlx::raw_sql(neo_db::sqlx::AssertSqlSafe(sql))
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Imports `lines` (`sku,name,price_cents`) into `tenant`'s price list.
///
/// # Errors
/// [`neo_db::Error::Invalid`] naming a line that does not parse, [`neo_db::Error::InvalidBatch`]
/// for invalid products (nothing is written then), or the database's error.
pub async fn import(
    db: &Db,
    isolation: &TenantIsolation,
    tenant: TenantId,
    lines: &str,
) -> neo_db::Result<Imported> {
    let products = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Product::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| neo_db::Error::Invalid {
            what: "price list",
            reason,
        })?;
    let repo = Product::tenant_batch_repository(db, isolation, tenant)?;
    let empty: bool = neo_db::sqlx::query_scalar(neo_db::sqlx::AssertSqlSafe(format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {})",
        repo.table()
    )))
    .fetch_one(db.pool())
    .await?;
    if empty {
        repo.validate_batch(&products)?;
        let mut writer = Product::copy_writer(db, repo.table().schema())?;
        writer.write_all(&products).await?;
        return Ok(Imported::Copied(writer.finish().await?.rows));
    }
    let by_sku = repo.with_conflict_target(&["sku"])?;
    Ok(Imported::Upserted(
        by_sku.save_batch(db, &products, OnConflict::Update).await?,
    ))
}

/// Raises every listed product's price by `percent`, all or nothing: a product changed by
/// someone else since it was read fails the whole batch ([`neo_db::Error::VersionConflict`]).
///
/// # Errors
/// As [`neo_db::BatchRepository::update_batch`].
pub async fn reprice(
    db: &Db,
    isolation: &TenantIsolation,
    tenant: TenantId,
    products: &[Product],
    percent: i64,
) -> neo_db::Result<Vec<Product>> {
    let repo = Product::tenant_batch_repository(db, isolation, tenant)?;
    let raised: Vec<Product> = products
        .iter()
        .map(|p| Product {
            price_cents: p.price_cents + p.price_cents * percent / 100,
            ..p.clone()
        })
        .collect();
    repo.update_batch(db, &raised).await
}

/// `tenant`'s products with these SKUs, in that order.
///
/// # Errors
/// The database's.
pub async fn by_sku(
    db: &Db,
    isolation: &TenantIsolation,
    tenant: TenantId,
    skus: &[&str],
) -> neo_db::Result<Vec<Product>> {
    let repo = Product::tenant_batch_repository(db, isolation, tenant)?;
    let sql = format!(
        "SELECT * FROM {} WHERE sku = ANY($1) ORDER BY array_position($1, sku)",
        repo.table()
    );
    Ok(
        neo_db::sqlx::query_as::<_, Product>(neo_db::sqlx::AssertSqlSafe(sql))
            .bind(skus)
            .fetch_all(db.pool())
            .await?,
    )
}

/// The column list the derive produced, for the demo's output.
pub fn columns() -> Vec<&'static str> {
    Product::COLUMNS.iter().map(|c| c.name()).collect()
}
