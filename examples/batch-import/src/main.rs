//! Imports a price list into a new tenant's schema twice (COPY, then an upsert by SKU) and
//! reprices it with optimistic versions, against `NEO_DATABASE_URL`.
#![allow(clippy::print_stdout, reason = "a demo prints what happens")]

use batch_import::{by_sku, columns, import, provision, reprice};
use neo_core::TenantId;
use neo_db::{Db, DbConfig, TenantIsolation};

const FIRST: &str = "tea-01, Green tea, 450\ntea-02, Black tea, 390\ntea-03, Oolong, 620\n";
const SECOND: &str = "tea-02, Black tea (Assam), 410\ntea-04, White tea, 800\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("NEO_DATABASE_URL")
        .map_err(|_| "NEO_DATABASE_URL is not set; point it at a PostgreSQL you may write to")?;
    let db = Db::connect(&DbConfig::with_url(url)).await?;
    let isolation = TenantIsolation::schema_per_tenant("shop_")?;
    let tenant = TenantId::new();
    provision(&db, &isolation, tenant).await?;
    println!("derived columns: {:?}", columns());
    println!(
        "first import: {:?}",
        import(&db, &isolation, tenant, FIRST).await?
    );
    println!(
        "second import: {:?}",
        import(&db, &isolation, tenant, SECOND).await?
    );
    let teas = by_sku(
        &db,
        &isolation,
        tenant,
        &["tea-01", "tea-02", "tea-03", "tea-04"],
    )
    .await?;
    for tea in reprice(&db, &isolation, tenant, &teas, 10).await? {
        println!(
            "{} {:>5} cents (version {})",
            tea.sku, tea.price_cents, tea.version
        );
    }
    db.close().await;
    Ok(())
}
