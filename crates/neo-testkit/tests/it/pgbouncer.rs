//! PgBouncer in transaction mode in front of the test PostgreSQL.

use neo_testkit::{PgBouncer, PgRoute, PgServer};
use sqlx::{Connection as _, Row as _};

async fn backend_pid(url: &str) -> i32 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    // Simple protocol (no binds): safe through a transaction pooler.
    let row = sqlx::raw_sql("SELECT pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    row.get(0)
}

#[tokio::test]
async fn a_pgbouncer_database_is_the_same_database_as_its_direct_url() {
    let db = PgRoute::PgBouncer.database().await;
    assert_ne!(db.url(), db.direct_url());
    let mut direct = sqlx::PgConnection::connect(db.direct_url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (n int); INSERT INTO t VALUES (7)")
        .execute(&mut direct)
        .await
        .unwrap();
    let mut pooled = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let row = sqlx::raw_sql("SELECT n, current_database() FROM t")
        .fetch_one(&mut pooled)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), 7);
    assert_eq!(row.get::<String, _>(1), db.name());
}

#[tokio::test]
async fn transaction_mode_hands_server_connections_from_client_to_client() {
    let db = PgRoute::PgBouncer.database().await;
    // Two clients one after the other, each with one transaction: the second gets the server
    // connection the first released (PgBouncer reuses the most recent), which a session
    // pooler or a direct connection would never do.
    let first = backend_pid(db.url()).await;
    let second = backend_pid(db.url()).await;
    assert_eq!(
        first, second,
        "transaction pooling reuses the server connection"
    );
    let direct_first = backend_pid(db.direct_url()).await;
    let direct_second = backend_pid(db.direct_url()).await;
    assert_ne!(direct_first, direct_second);
}

#[tokio::test]
async fn an_own_pgbouncer_can_be_killed_and_restarted_on_the_same_port() {
    let server = tokio::task::spawn_blocking(PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let mut bouncer = PgBouncer::start(&server.url()).unwrap();
    let url = bouncer.url_for("postgres");
    let port = bouncer.port();
    assert!(backend_pid(&url).await > 0);

    bouncer.kill().unwrap();
    assert!(!bouncer.is_running());
    let refused = sqlx::PgConnection::connect(&url).await;
    assert!(refused.is_err(), "a killed PgBouncer accepts no connection");

    bouncer.restart().unwrap();
    assert_eq!(bouncer.port(), port);
    assert!(bouncer.is_running());
    assert!(backend_pid(&url).await > 0);
    drop(bouncer);
    drop(server);
}
