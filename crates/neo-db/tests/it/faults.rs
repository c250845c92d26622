use crate::{PRODUCTS, Product, products};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, Db, DbConfig, OnConflict};
use neo_testkit::PgServer;
use std::time::Duration;

async fn on_own_server(test_before_acquire: bool) -> (PgServer, Db, BatchRepository<Product>) {
    let server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let db = Db::connect(&DbConfig {
        test_before_acquire,
        acquire_timeout: Duration::from_secs(10),
        max_connections: 4,
        ..DbConfig::with_url(server.url())
    })
    .await
    .unwrap();
    sqlx::query(PRODUCTS).execute(db.pool()).await.unwrap();
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    (server, db, repo)
}

async fn restart(mut server: PgServer) -> PgServer {
    tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_pool_reconnects_after_a_postgres_restart() {
    let (server, db, repo) = on_own_server(true).await;
    let before = products(50);
    repo.save_batch(&db, &before, OnConflict::Error)
        .await
        .unwrap();
    // Fill the pool with idle connections that the restart will kill.
    let held: Vec<_> = futures_join(&db, 4).await;
    drop(held);

    let _server = restart(server).await;

    // Pinged before use: dead connections are replaced and the first call succeeds.
    let ids: Vec<_> = before.iter().map(|p| p.id).collect();
    let loaded = repo.load_batch(&db, &ids).await.unwrap();
    assert!(
        loaded.iter().all(Option::is_some),
        "acknowledged rows survived the restart"
    );
    let after: Vec<Product> = (100..110).map(Product::new).collect();
    assert_eq!(
        repo.save_batch(&db, &after, OnConflict::Error)
            .await
            .unwrap(),
        10
    );
    assert!(db.health().await.is_ok());
}

#[tokio::test]
async fn without_ping_a_dead_connection_fails_once_as_unavailable_then_calls_succeed() {
    let (server, db, repo) = on_own_server(false).await;
    repo.save_batch(&db, &products(5), OnConflict::Error)
        .await
        .unwrap();
    let _server = restart(server).await;

    let mut failures = 0;
    let mut succeeded = false;
    for _ in 0..6 {
        match repo.exists_batch(&db, &[uuid::Uuid::now_v7()]).await {
            Ok(_) => {
                succeeded = true;
                break;
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
                assert!(err.is_retryable());
                failures += 1;
            }
        }
    }
    assert!(succeeded, "the pool never recovered ({failures} failures)");
    assert!(failures <= 4, "{failures}");
}

#[tokio::test]
async fn a_server_killed_mid_query_gives_unavailable_not_a_hang() {
    let (mut server, db, _repo) = on_own_server(true).await;
    let query = {
        let db = db.clone();
        tokio::spawn(async move { sqlx::query("SELECT pg_sleep(20)").execute(db.pool()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server = tokio::task::spawn_blocking(move || {
        server.kill().unwrap();
        server
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("the query returned once the server died")
        .unwrap()
        .unwrap_err();
    assert_eq!(neo_db::Error::from(err).kind(), ErrorKind::Unavailable);
    let _server = restart(server).await;
    assert!(db.health().await.is_ok());
}

async fn futures_join(db: &Db, n: usize) -> Vec<neo_db::DbConnection> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(db.acquire().await.unwrap());
    }
    held
}
