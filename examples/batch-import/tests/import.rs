//! The example against a throwaway PostgreSQL: both import paths, the upsert by SKU, the
//! versioned repricing and its refusal of a stale copy, and tenants kept apart.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use batch_import::{Imported, Product, by_sku, columns, import, provision, reprice};
use neo_core::TenantId;
use neo_db::{Db, DbConfig, Error, TenantIsolation};

#[tokio::test]
async fn imports_upserts_and_reprices_a_tenants_price_list() {
    let test_db = neo_testkit::postgres().await;
    let db = Db::connect(&DbConfig::with_url(test_db.url()))
        .await
        .unwrap();
    let isolation = TenantIsolation::schema_per_tenant("shop_").unwrap();
    let (tenant, other) = (TenantId::new(), TenantId::new());
    for t in [tenant, other] {
        provision(&db, &isolation, t).await.unwrap();
    }
    assert_eq!(columns(), ["id", "sku", "title", "price_cents", "version"]);

    let first = "tea-01, Green tea, 450\ntea-02, Black tea, 390\n\ntea-03, Oolong, 620\n";
    assert_eq!(
        import(&db, &isolation, tenant, first).await.unwrap(),
        Imported::Copied(3)
    );
    let second = "tea-02, Black tea (Assam), 410\ntea-04, White tea, 800\n";
    assert_eq!(
        import(&db, &isolation, tenant, second).await.unwrap(),
        Imported::Upserted(2)
    );
    let skus = ["tea-01", "tea-02", "tea-03", "tea-04"];
    let teas = by_sku(&db, &isolation, tenant, &skus).await.unwrap();
    let summary: Vec<(&str, &str, i64, i64)> = teas
        .iter()
        .map(|t| (t.sku.as_str(), t.name.as_str(), t.price_cents, t.version))
        .collect();
    assert_eq!(
        summary,
        [
            ("tea-01", "Green tea", 450, 1),
            ("tea-02", "Black tea (Assam)", 410, 2),
            ("tea-03", "Oolong", 620, 1),
            ("tea-04", "White tea", 800, 1),
        ]
    );
    assert!(teas.iter().all(|t| t.imported_at.timestamp() > 0));
    assert!(
        by_sku(&db, &isolation, other, &skus)
            .await
            .unwrap()
            .is_empty()
    );

    let mut repriced = reprice(&db, &isolation, tenant, &teas, 10).await.unwrap();
    repriced.sort_by(|a, b| a.sku.cmp(&b.sku)); // RETURNING order is the server's
    let prices: Vec<(i64, i64)> = repriced
        .iter()
        .map(|t| (t.price_cents, t.version))
        .collect();
    assert_eq!(prices, [(495, 2), (451, 3), (682, 2), (880, 2)]);

    // `teas` is now stale: the whole repricing is refused and nothing changes.
    let err = reprice(&db, &isolation, tenant, &teas, 50)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::VersionConflict { indices, .. } if indices.len() == 4),
        "{err:?}"
    );
    let after = by_sku(&db, &isolation, tenant, &skus).await.unwrap();
    assert_eq!(after, repriced);

    // A bad line names itself; an invalid product fails validation before anything is sent.
    let err = import(&db, &isolation, tenant, "tea-05, Matcha\n")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("expected sku,name,price_cents"),
        "{err}"
    );
    let err = import(&db, &isolation, tenant, "tea-05, Matcha, -1\n")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidBatch { .. }), "{err:?}");
    assert_eq!(
        Product::parse(" tea-06 , Sencha , 300 ").unwrap().name,
        "Sencha"
    );
}
