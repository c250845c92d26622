use crate::{PRODUCTS, Product, products, setup};
use neo_core::pagination::{CountMode, PageRequest, PaginationConfig};
use neo_core::{CursorCodec, ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, OnConflict, SortOrder};
use neo_testkit::PgRoute;
use std::collections::HashSet;

async fn seeded(
    route: PgRoute,
    n: usize,
) -> (
    neo_testkit::TestDatabase,
    neo_db::Db,
    BatchRepository<Product>,
) {
    let (t, db) = setup(route, &[PRODUCTS]).await;
    let repo = BatchRepository::<Product>::new(&db, "products")
        .unwrap()
        .with_sortable(&["price_cents", "name"])
        .unwrap();
    let mut items = products(n);
    // Ties on the sort key, so the id must break them.
    for (i, p) in items.iter_mut().enumerate() {
        p.price_cents = (i / 3) as i64;
    }
    repo.save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap();
    (t, db, repo)
}

async fn keyset_pages_visit_every_row_once_in_order_both_directions(route: PgRoute) {
    let (_t, db, repo) = seeded(route, 47).await;
    let codec = CursorCodec::new(vec![7; 32]).unwrap();
    for order in [SortOrder::Asc, SortOrder::Desc] {
        let sort = repo.sort("price_cents", order).unwrap();
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = repo
                .keyset_page(&db, &sort, cursor.as_deref(), 10, &codec, |p| p.price_cents)
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.items.iter().map(|p| (p.price_cents, p.id)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 5);
        assert_eq!(seen.len(), 47);
        assert_eq!(seen.iter().map(|s| s.1).collect::<HashSet<_>>().len(), 47);
        let mut sorted = seen.clone();
        sorted.sort();
        if order == SortOrder::Desc {
            sorted.reverse();
        }
        assert_eq!(seen, sorted, "{order:?}");
    }
}

async fn cursors_are_checked_and_sort_keys_whitelisted(route: PgRoute) {
    let (_t, db, repo) = seeded(route, 5).await;
    let codec = CursorCodec::new(vec![7; 32]).unwrap();
    let by_price = repo.sort("price_cents", SortOrder::Asc).unwrap();
    let first = repo
        .keyset_page(&db, &by_price, None, 2, &codec, |p| p.price_cents)
        .await
        .unwrap();
    let cursor = first.next_cursor.unwrap();

    // A cursor made for another sort is refused.
    let by_name = repo.sort("name", SortOrder::Asc).unwrap();
    let err = repo
        .keyset_page(&db, &by_name, Some(&cursor), 2, &codec, |p| p.name.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
    // A forged one too.
    let other = CursorCodec::new(vec![8; 32]).unwrap();
    let err = repo
        .keyset_page(&db, &by_price, Some(&cursor), 2, &other, |p| p.price_cents)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);

    for bad in ["sku", "price_cents; DROP TABLE products", "PRICE_CENTS", ""] {
        let err = repo.sort(bad, SortOrder::Asc).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Validation, "{bad}");
    }
    assert!(repo.sort("id", SortOrder::Desc).is_ok());
}

async fn offset_pages_count_only_when_asked(route: PgRoute) {
    let (_t, db, repo) = seeded(route, 25).await;
    let config = PaginationConfig::default();
    let sort = repo.sort("price_cents", SortOrder::Asc).unwrap();

    let page = repo
        .offset_page(&db, &sort, &PageRequest::new(20, Some(10), &config))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 5);
    assert!(!page.has_next);
    assert_eq!(page.total, None);

    let page = repo
        .offset_page(
            &db,
            &sort,
            &PageRequest::new(0, Some(10), &config).with_count(CountMode::Exact),
        )
        .await
        .unwrap();
    assert!(page.has_next);
    assert_eq!((page.total, page.total_is_estimate), (Some(25), false));
    assert_eq!(page.items[0].price_cents, 0);

    // Never analyzed: the estimate falls back to an exact count.
    let request = PageRequest::new(0, Some(10), &config).with_count(CountMode::Estimated);
    let page = repo.offset_page(&db, &sort, &request).await.unwrap();
    assert_eq!((page.total, page.total_is_estimate), (Some(25), false));
    let mut conn = db.statement_connection().await.unwrap();
    sqlx::query("ANALYZE products")
        .persistent(false)
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    let page = repo.offset_page(&db, &sort, &request).await.unwrap();
    assert_eq!((page.total, page.total_is_estimate), (Some(25), true));
}

neo_testkit::over_routes!(
    keyset_pages_visit_every_row_once_in_order_both_directions,
    cursors_are_checked_and_sort_keys_whitelisted,
    offset_pages_count_only_when_asked,
);
