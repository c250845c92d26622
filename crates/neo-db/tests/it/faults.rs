//! A PostgreSQL restarted or killed under the pool, reached directly or through a PgBouncer
//! of the test's own (PgBouncer outlives the server: its clients keep their connections and
//! it opens new server connections once PostgreSQL is back).

use crate::{PRODUCTS, Product, products};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, Db, DbConfig, OnConflict};
use neo_testkit::{PgBouncer, PgRoute, PgServer};
use std::time::Duration;

/// A server of the test's own, the PgBouncer in front of it on the PgBouncer route (kept
/// alive with it), a `Db` reaching it by `route` and a repository for `products`.
async fn on_own_server(
    route: PgRoute,
    test_before_acquire: bool,
) -> (PgServer, Option<PgBouncer>, Db, BatchRepository<Product>) {
    let server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let (bouncer, config) = if route.is_pooled() {
        let bouncer = PgBouncer::start(&server.url()).unwrap();
        let config = DbConfig::behind_transaction_pooler(bouncer.url_for("postgres"), server.url());
        (Some(bouncer), config)
    } else {
        (None, DbConfig::with_url(server.url()))
    };
    let db = Db::connect(&DbConfig {
        test_before_acquire,
        // Every connection pinged, however recently used: a restart is faster than the
        // default window (see `only_connections_idle_past_the_window_are_pinged`).
        test_idle_after: Duration::ZERO,
        acquire_timeout: Duration::from_secs(10),
        max_connections: 4,
        ..config
    })
    .await
    .unwrap();
    sqlx::raw_sql(PRODUCTS).execute(db.pool()).await.unwrap();
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    (server, bouncer, db, repo)
}

/// Through PgBouncer, waits until it logs in to the restarted server again: a login that
/// failed while the server was down makes PgBouncer refuse clients for `server_login_retry`
/// (1 s in the testkit, 15 s by default) with 08P01, which must reach the caller as a
/// retryable `Unavailable`; while the pool keeps retrying such logins a health check may
/// instead run out of `health_check_timeout`, a retryable `Timeout`. Directly there is
/// nothing to wait for.
async fn settle(route: PgRoute, db: &Db) {
    if !route.is_pooled() {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(err) = db.health().await {
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err}"
        );
        assert!(err.is_retryable(), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "PgBouncer did not recover: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn restart(mut server: PgServer) -> PgServer {
    tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap()
}

async fn the_pool_reconnects_after_a_postgres_restart(route: PgRoute) {
    let (server, _bouncer, db, repo) = on_own_server(route, true).await;
    let before = products(50);
    repo.save_batch(&db, &before, OnConflict::Error)
        .await
        .unwrap();
    // Fill the pool with idle connections that the restart will kill.
    let held: Vec<_> = futures_join(&db, 4).await;
    drop(held);

    let _server = restart(server).await;
    settle(route, &db).await;

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

/// Directly the dead connections fail a call or two; through PgBouncer the client
/// connections survive and PgBouncer may absorb the restart, so failures may be none.
async fn without_ping_a_dead_connection_fails_once_as_unavailable_then_calls_succeed(
    route: PgRoute,
) {
    let (server, _bouncer, db, repo) = on_own_server(route, false).await;
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

async fn a_server_killed_mid_query_gives_unavailable_not_a_hang(route: PgRoute) {
    let (mut server, _bouncer, db, _repo) = on_own_server(route, true).await;
    let query = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut conn = db.statement_connection().await?;
            db.statement("SELECT pg_sleep(20)")
                .execute(&mut *conn)
                .await?;
            conn.finish().await
        })
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
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let _server = restart(server).await;
    assert!(db.health().await.is_ok());
}

/// Connections of `db` (by its application name) killed from another session.
async fn terminate_connections(admin: &mut sqlx::PgConnection, application_name: &str) {
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(application_name)
    .fetch_one(admin)
    .await
    .unwrap();
    assert_eq!(killed, 1);
}

/// With `test_before_acquire`, a connection used within `test_idle_after` is handed out
/// without a ping (no round trip on a busy pool), so a connection killed in that window
/// fails the call that takes it, as a retryable `Unavailable`; one idle longer is pinged
/// and replaced, and the call succeeds.
#[tokio::test]
async fn only_connections_idle_past_the_window_are_pinged() {
    let test_db = neo_testkit::postgres().await;
    let application_name = format!("ping_window_{}", uuid::Uuid::now_v7().simple());
    let db = Db::connect(&DbConfig {
        max_connections: 1,
        test_idle_after: Duration::from_millis(300),
        application_name: application_name.clone(),
        ..DbConfig::with_url(test_db.url())
    })
    .await
    .unwrap();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(test_db.url())
        .await
        .unwrap();
    db.health().await.unwrap();

    terminate_connections(&mut admin, &application_name).await;
    let err = db.health().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    db.health().await.unwrap();

    terminate_connections(&mut admin, &application_name).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    db.health().await.unwrap();
}

neo_testkit::over_routes!(
    the_pool_reconnects_after_a_postgres_restart,
    without_ping_a_dead_connection_fails_once_as_unavailable_then_calls_succeed,
    a_server_killed_mid_query_gives_unavailable_not_a_hang,
);

async fn futures_join(db: &Db, n: usize) -> Vec<neo_db::DbConnection> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(db.acquire().await.unwrap());
    }
    held
}
