use crate::{PRODUCTS, Product, products, setup};
use neo_db::diagnostics::{lock_waits, top_statements};
use neo_db::{BatchRepository, OnConflict};
use neo_testkit::PgRoute;
use std::time::Duration;

/// Through PgBouncer too: `pg_backend_pid()` inside the holder's transaction is the server
/// connection PgBouncer pins to that transaction until it ends.
async fn lock_waits_show_who_blocks_whom(route: PgRoute) {
    let (_t, db) = setup(route, &[PRODUCTS]).await;
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    let items = products(1);
    repo.save_batch(&db, &items, OnConflict::Error)
        .await
        .unwrap();

    let mut holder = db.begin().await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(db.pooler().named_statements())
        .fetch_one(&mut **holder)
        .await
        .unwrap();
    db.statement("UPDATE products SET name = 'held' WHERE id = $1")
        .bind(items[0].id)
        .execute(&mut **holder)
        .await
        .unwrap();
    let waiter = {
        let db = db.clone();
        let id = items[0].id;
        tokio::spawn(async move {
            let mut conn = db.statement_connection().await?;
            db.statement("UPDATE products SET name = 'waiting' WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            conn.finish().await
        })
    };
    let mut waits = Vec::new();
    for _ in 0..50 {
        waits = lock_waits(&db).await.unwrap();
        if !waits.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(waits.len(), 1, "{waits:?}");
    let wait = &waits[0];
    assert!(wait.waiting_query.contains("'waiting'"), "{wait:?}");
    assert_eq!(wait.blocking_pid, holder_pid);
    assert_eq!(wait.blocking_state.as_deref(), Some("idle in transaction"));
    assert!(!wait.mode.is_empty() && !wait.lock_type.is_empty());

    holder.commit().await.unwrap();
    waiter.await.unwrap().unwrap();
    assert!(lock_waits(&db).await.unwrap().is_empty());
}

async fn top_statements_need_the_extension_and_then_rank_by_mean_time(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    assert_eq!(top_statements(&db, 5).await.unwrap(), None);
    let mut conn = db.statement_connection().await.unwrap();
    db.statement("CREATE EXTENSION pg_stat_statements")
        .execute(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    for _ in 0..3 {
        let mut conn = db.statement_connection().await.unwrap();
        db.statement("SELECT pg_sleep(0.05)")
            .execute(&mut *conn)
            .await
            .unwrap();
        conn.finish().await.unwrap();
    }
    let top = top_statements(&db, 5)
        .await
        .unwrap()
        .expect("extension installed");
    let sleep = top
        .iter()
        .find(|s| s.query.contains("pg_sleep"))
        .unwrap_or_else(|| panic!("{top:?}"));
    assert_eq!(sleep.calls, 3);
    assert!(sleep.mean >= Duration::from_millis(45), "{sleep:?}");
    assert!(top.windows(2).all(|w| w[0].mean >= w[1].mean));
}

neo_testkit::over_routes!(
    lock_waits_show_who_blocks_whom,
    top_statements_need_the_extension_and_then_rank_by_mean_time,
);
