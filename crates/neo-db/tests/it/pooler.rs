//! What is safe behind PgBouncer in transaction mode (1.18), proved against a real one, and
//! the `pooler` setting.

use crate::{PRODUCTS, Product, products, setup};
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{BatchRepository, DbConfig, OnConflict, Pooler};
use neo_testkit::{PgBouncer, PgBouncerOptions, PgRoute};
use sqlx::{Connection as _, Row as _};
use std::time::{Duration, Instant};

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error()?.code().map(|c| c.into_owned())
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn pooler_and_listen_url_load_from_the_environment_and_bad_values_are_refused() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_DB_URL", "postgres://app@bouncer:6432/app");
        jail.set_env("NEO_DB_POOLER", "transaction");
        jail.set_env("NEO_DB_LISTEN_URL", "postgres://app:hunter2@db:5432/app");
        let config = DbConfig::from_env().unwrap();
        assert_eq!(config.pooler, Pooler::Transaction);
        assert!(config.listen_url.is_some());
        assert!(!format!("{config:?}").contains("hunter2"));
        jail.set_env("NEO_DB_POOLER", "statement");
        let err = DbConfig::from_env().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(
            err.to_string().contains("statement") && err.to_string().contains("none, transaction"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn an_unknown_pooler_is_refused_naming_the_allowed_values() {
    assert_eq!(DbConfig::default().pooler, Pooler::None);
    assert_eq!(
        "Transaction".parse::<Pooler>().unwrap(),
        Pooler::Transaction
    );
    let err = "sesion".parse::<Pooler>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("none, transaction"), "{err}");
}

#[tokio::test]
async fn named_prepared_statements_break_behind_pgbouncer_1_18() {
    let db = PgRoute::PgBouncer.database().await;
    // sqlx's default: statements named sqlx_s_1, sqlx_s_2, … per client connection.
    let mut a = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut b = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let mut failure = None;
    for n in 0..20_i64 {
        for conn in [&mut a, &mut b] {
            let result = sqlx::query("SELECT $1::int8")
                .bind(n)
                .fetch_one(&mut *conn)
                .await;
            if let Err(e) = result {
                failure = Some(e);
                break;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    let failure = failure.expect("named statements of two clients met on one server connection");
    // 42P05: "prepared statement sqlx_s_1 already exists"; 26000: "does not exist".
    assert!(
        matches!(sqlstate(&failure).as_deref(), Some("42P05" | "26000")),
        "{failure}"
    );
}

/// Clients that each run their own statement (unnamed, as `pooler = "transaction"` does)
/// and count results that are not theirs or errors.
async fn anomalies(url: &str, in_transaction: bool, budget: Duration) -> (u64, u64) {
    let started = Instant::now();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..12_i64 {
        let url = url.to_owned();
        let seen = std::sync::Arc::clone(&seen);
        tasks.spawn(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let (mut bad, mut runs) = (0_u64, 0_u64);
            let sql = format!("SELECT $1::int8 AS v, {client}::int8 AS who");
            // Outside transactions the first anomaly of any client ends the run.
            let stop = |seen: &std::sync::atomic::AtomicBool| {
                !in_transaction && seen.load(std::sync::atomic::Ordering::Relaxed)
            };
            while started.elapsed() < budget && !stop(&seen) {
                let result = if in_transaction {
                    let mut tx = conn.begin().await.unwrap();
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .persistent(false)
                        .bind(runs as i64)
                        .fetch_one(&mut *tx)
                        .await;
                    tx.commit().await.unwrap();
                    row
                } else {
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .persistent(false)
                        .bind(runs as i64)
                        .fetch_one(&mut conn)
                        .await
                };
                let ok = result.is_ok_and(|row| {
                    row.get::<i64, _>("who") == client && row.get::<i64, _>("v") == runs as i64
                });
                bad += u64::from(!ok);
                runs += 1;
                if bad > 0 {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            (bad, runs)
        });
    }
    let mut total = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (bad, runs) = done.unwrap();
        total = (total.0 + bad, total.1 + runs);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unnamed_statements_are_safe_only_inside_a_transaction() {
    // Few server connections for many clients, so PgBouncer hands them around.
    let server = tokio::task::spawn_blocking(neo_testkit::PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let bouncer = PgBouncer::start_with(
        &server.url(),
        PgBouncerOptions {
            pool_size: 3,
            ..PgBouncerOptions::default()
        },
    )
    .unwrap();
    let url = bouncer.url_for("postgres");
    // Outside a transaction PgBouncer may release the server connection at the Sync between
    // Parse and Bind, so a Bind can meet another client's statement or none.
    let (bad, runs) = anomalies(&url, false, Duration::from_secs(15)).await;
    assert!(
        bad > 0,
        "no misrouted Bind in {runs} runs outside transactions"
    );
    // Inside a transaction the server connection stays with the client from BEGIN to COMMIT.
    let (bad, runs) = anomalies(&url, true, Duration::from_secs(3)).await;
    assert_eq!(
        bad, 0,
        "{bad} of {runs} statements inside transactions went wrong"
    );
    assert!(runs > 100, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_batch_repository_is_correct_under_concurrency_through_pgbouncer() {
    let (_t, db) = setup(PgRoute::PgBouncer, &[PRODUCTS]).await;
    assert_eq!(db.pooler(), Pooler::Transaction);
    let repo = BatchRepository::<Product>::new(&db, "products").unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (db, repo) = (db.clone(), repo.clone());
        tasks.spawn(async move {
            for round in 0..15 {
                let mut rows = products(20);
                for (i, p) in rows.iter_mut().enumerate() {
                    p.sku = format!("t{task}-r{round}-{i}");
                }
                assert_eq!(
                    repo.save_batch(&db, &rows, OnConflict::Error)
                        .await
                        .unwrap(),
                    20
                );
                let ids: Vec<_> = rows.iter().map(|p| p.id).collect();
                let loaded = repo.load_batch(&db, &ids).await.unwrap();
                for (row, stored) in rows.iter().zip(loaded) {
                    assert_eq!(stored.unwrap().sku, row.sku);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(crate::count(&db, "products").await, 8 * 15 * 20);
}

#[tokio::test]
async fn an_unknown_type_breaks_the_first_unnamed_statement_of_a_connection() {
    // sqlx resolves a type it has not met (enum, domain) with a simple query between Parse
    // and Bind, and a simple query drops the unnamed statement: the first such statement
    // per connection fails with 26000, the type is cached after it. With named statements
    // (pooler = "none") the statement survives. This is sqlx 0.9, directly or not; neo-db
    // resolves the types per connection behind a pooler (next test).
    let db = PgRoute::Direct.database().await;
    let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::raw_sql("CREATE TYPE mood AS ENUM ('ok', 'sad')")
        .execute(&mut conn)
        .await
        .unwrap();
    let run = async |conn: &mut sqlx::PgConnection, persistent: bool| {
        sqlx::query("SELECT 'ok'::mood AS m, $1::int4 AS n")
            .persistent(persistent)
            .bind(1)
            .fetch_one(conn)
            .await
    };
    let first = run(&mut conn, false).await.unwrap_err();
    assert_eq!(sqlstate(&first).as_deref(), Some("26000"), "{first}");
    run(&mut conn, false).await.unwrap();
    let mut fresh = sqlx::PgConnection::connect(db.url()).await.unwrap();
    run(&mut fresh, true).await.unwrap();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "mood", rename_all = "lowercase")]
enum Mood {
    Ok,
    Sad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "size", rename_all = "lowercase")]
enum Size {
    Small,
    Large,
}

/// The row of `id` in `sql`, on a fresh statement connection: an unnamed statement whose
/// columns are user-defined types.
async fn read<T>(db: &neo_db::Db, sql: &'static str, id: i64) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut conn = db.statement_connection().await.unwrap();
    let row = sqlx::query_as::<_, T>(sql)
        .persistent(false)
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.finish().await.unwrap();
    row
}

#[tokio::test]
async fn enum_columns_work_through_pgbouncer_on_the_first_statement_of_every_connection() {
    let test_db = PgRoute::PgBouncer.database().await;
    // Types that exist when the pool opens its connections.
    let mut direct = sqlx::PgConnection::connect(test_db.direct_url())
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TYPE mood AS ENUM ('ok', 'sad'); \
         CREATE TABLE people (id int8 PRIMARY KEY, mood mood NOT NULL, moods mood[] NOT NULL); \
         INSERT INTO people VALUES (1, 'sad', '{ok,sad}')",
    )
    .execute(&mut direct)
    .await
    .unwrap();
    direct.close().await.unwrap();
    let db = neo_db::Db::connect(&DbConfig {
        max_connections: 3,
        ..DbConfig::behind_transaction_pooler(test_db.url(), test_db.direct_url())
    })
    .await
    .unwrap();
    // Several connections at once, each answering its first statement.
    let reads = (0..3)
        .map(|_| read::<(Mood, Vec<Mood>)>(&db, "SELECT mood, moods FROM people WHERE id = $1", 1));
    for row in futures_util::future::join_all(reads).await {
        assert_eq!(row, (Mood::Sad, vec![Mood::Ok, Mood::Sad]));
    }
    // A parameter of the type, bound by name.
    let mut conn = db.statement_connection().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM people WHERE mood = $1")
        .persistent(false)
        .bind(Mood::Sad)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    conn.finish().await.unwrap();
    assert_eq!(n, 1);

    // A type a migration creates while the pool is open: the connections opened before it
    // are replaced when next acquired.
    neo_db::MigrationSet::new("sizes")
        .unwrap()
        .with(
            1,
            "sizes",
            "CREATE TYPE size AS ENUM ('small', 'large'); \
             CREATE TABLE boxes (id int8 PRIMARY KEY, size size NOT NULL); \
             INSERT INTO boxes VALUES (7, 'large')",
        )
        .run(&db)
        .await
        .unwrap();
    let reads = (0..3).map(|_| read::<(Size,)>(&db, "SELECT size FROM boxes WHERE id = $1", 7));
    for row in futures_util::future::join_all(reads).await {
        assert_eq!(row, (Size::Large,));
    }
}
