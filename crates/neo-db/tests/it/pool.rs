use crate::{PRODUCTS, Product, products, setup, setup_with};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, DbConfig, OnConflict};
use neo_testkit::PgRoute;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects formatted tracing output for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

async fn health_stats_and_graceful_close(route: PgRoute) {
    let (_t, db) = setup_with(route, &[], |c| DbConfig {
        max_connections: 3,
        ..c
    })
    .await;
    let health = db.health().await.unwrap();
    assert!(health.latency < Duration::from_secs(2));
    assert_eq!(health.pool.max_size, 3);
    assert!(health.pool.size >= 1);

    let held = db.acquire().await.unwrap();
    let stats = db.stats();
    assert!(stats.acquired >= 2, "{stats:?}");
    assert_eq!(
        stats.acquire_wait.iter().map(|b| b.1).sum::<u64>(),
        stats.acquired
    );
    drop(held);

    db.close().await;
    assert!(db.is_closed());
    let err = db.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

async fn an_exhausted_pool_times_out_and_counts_it(route: PgRoute) {
    let (_t, db) = setup_with(route, &[], |c| DbConfig {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(100),
        ..c
    })
    .await;
    let held = db.acquire().await.unwrap();
    let err = db.acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(db.stats().acquire_timeouts, 1);
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(db.acquire().await.is_ok());
}

async fn queries_get_spans_slow_ones_and_long_holds_are_logged(route: PgRoute) {
    let (_t, db) = setup_with(route, &[PRODUCTS], |c| DbConfig {
        // Wide margins: on a loaded 2-core machine an ordinary statement took over 30 ms.
        slow_query_threshold: Duration::from_millis(250),
        held_too_long_threshold: Duration::from_millis(400),
        ..c
    })
    .await;
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    let (captured, _guard) = capture();

    repo.save_batch(&db, &products(3), OnConflict::Error)
        .await
        .unwrap();
    assert_eq!(db.stats().slow_queries, 0);
    // A slow statement through the repository: lock the table so the insert waits.
    let mut blocker = db.begin().await.unwrap();
    db.statement("LOCK TABLE products")
        .execute(&mut **blocker)
        .await
        .unwrap();
    let slow = {
        let repo = repo.clone();
        let db = db.clone();
        tokio::spawn(async move {
            repo.save_batch(&db, &[Product::new(100)], OnConflict::Ignore)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    blocker.commit().await.unwrap(); // held 600 ms > 400 ms: a held-too-long warning
    slow.await.unwrap().unwrap();

    let stats = db.stats();
    assert_eq!(stats.slow_queries, 1, "{stats:?}");
    // The locking transaction and the connection of the blocked insert, both held ~600 ms.
    assert_eq!(stats.held_too_long, 2, "{stats:?}");
    let log = captured.text();
    assert!(log.contains("slow query"), "{log}");
    assert!(
        log.contains("db.query{db.statement=\"save_batch\" db.table=\"products\""),
        "{log}"
    );
    assert!(
        log.contains("transaction held longer than the threshold"),
        "{log}"
    );
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn config_loads_from_neo_db_variables_and_hides_the_url() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_DB_URL", "postgres://app:hunter2@db:5432/app");
        jail.set_env("NEO_DB_MAX_CONNECTIONS", "42");
        jail.set_env("NEO_DB_STATEMENT_TIMEOUT", "1500ms");
        jail.set_env("NEO_DB_COPY__FLUSH_ROWS", "5000");
        jail.set_env("NEO_DB_COPY__FORMAT", "text");
        let config = DbConfig::from_env().unwrap();
        assert_eq!(config.max_connections, 42);
        assert_eq!(config.statement_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(config.copy.flush_rows, 5000);
        assert_eq!(config.copy.format, neo_db::CopyFormat::Text);
        assert_eq!(config.acquire_timeout, DbConfig::default().acquire_timeout);
        assert!(!format!("{config:?}").contains("hunter2"));
        jail.set_env("NEO_DB_MAX_CONNECTIONS", "many");
        let err = DbConfig::from_env().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(
            err.to_string().contains("NEO_DB_") && err.to_string().contains("MAX_CONNECTIONS"),
            "{err}"
        );
        Ok(())
    });
}

/// Directly the timeout is a startup parameter; through PgBouncer, which drops it, each
/// transaction the library opens sets it with `SET LOCAL`.
async fn statement_timeout_and_application_name_reach_the_server(route: PgRoute) {
    let (_t, db) = setup(route, &[]).await;
    let mut conn = db.statement_connection().await.unwrap();
    let (timeout, name): (String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('application_name')",
    )
    .persistent(false)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    conn.finish().await.unwrap();
    assert_eq!((timeout.as_str(), name.as_str()), ("30s", "neo-commons"));
    let mut uow = db.begin().await.unwrap();
    let timeout: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .persistent(false)
        .fetch_one(&mut **uow)
        .await
        .unwrap();
    uow.commit().await.unwrap();
    assert_eq!(timeout, "30s");
}

/// The configured timeout cancels a slow statement on every route, through the batch
/// repository (a transaction of the library's) and a caller's unit of work, with the typed
/// timeout error.
async fn a_slow_statement_is_cancelled_by_the_statement_timeout(route: PgRoute) {
    let (_t, db) = setup_with(route, &[PRODUCTS], |c| DbConfig {
        statement_timeout: Some(Duration::from_millis(300)),
        ..c
    })
    .await;
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    repo.save_batch(&db, &products(1), OnConflict::Error)
        .await
        .unwrap();
    let mut blocker = db.begin().await.unwrap();
    // The blocker itself waits for nothing: only the statements behind its lock time out.
    db.statement("LOCK TABLE products")
        .execute(&mut **blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = repo
        .save_batch(&db, &[Product::new(7)], OnConflict::Ignore)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.sqlstate()),
        (ErrorKind::Timeout, Some("57014")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    let mut uow = db.begin().await.unwrap();
    let err = db
        .statement("SELECT pg_sleep(5)")
        .execute(&mut **uow)
        .await
        .map_err(neo_db::Error::from)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    drop(uow);
    blocker.commit().await.unwrap();
    assert_eq!(crate::count(&db, "products").await, 1);
}

neo_testkit::over_routes!(
    health_stats_and_graceful_close,
    an_exhausted_pool_times_out_and_counts_it,
    queries_get_spans_slow_ones_and_long_holds_are_logged,
    statement_timeout_and_application_name_reach_the_server,
    a_slow_statement_is_cancelled_by_the_statement_timeout,
);

#[cfg(all(feature = "env", feature = "seal"))]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn seal_keys_load_from_neo_db_seal_variables_and_stay_hidden() {
    use neo_db::seal::{Binding, Sealer};
    figment::Jail::expect_with(|jail| {
        let (old, new) = (
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
        );
        jail.set_env("NEO_DB_URL", "postgres://app@db/app");
        jail.set_env("NEO_DB_SEAL__CURRENT_KEY_ID", "k2");
        jail.set_env("NEO_DB_SEAL__KEYS__K1", old);
        jail.set_env("NEO_DB_SEAL__KEYS__K2", new);
        let config = DbConfig::from_env().unwrap();
        assert_eq!(config.seal.current_key_id, "k2");
        assert_eq!(
            config
                .seal
                .keys
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["k1", "k2"]
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains(old) && !shown.contains(new), "{shown}");
        let sealer = Sealer::from_config(&config.seal).unwrap();
        assert_eq!(sealer.current_key_id(), "k2");
        let here = Binding::new("t", "c", "1");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sealed = runtime.block_on(sealer.seal_text("v", &here)).unwrap();
        assert_eq!(Sealer::key_id_of_text(&sealed).as_deref(), Some("k2"));
        Ok(())
    });
}
