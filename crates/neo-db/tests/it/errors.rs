use crate::setup_with;
use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig, Error, classify_sqlstate};
use neo_testkit::PgRoute;
use std::time::Duration;

const SCHEMA: &[&str] = &[
    "CREATE TABLE parents (id int8 PRIMARY KEY)",
    "CREATE TABLE children (id int8 PRIMARY KEY, parent int8 NOT NULL REFERENCES parents, \
     age int4 CHECK (age >= 0))",
    "INSERT INTO parents VALUES (1), (2)",
];

/// The error of `sql` on a statement connection (a transaction through PgBouncer, which
/// then carries the statement timeout as `SET LOCAL`).
async fn run(db: &Db, sql: &'static str) -> Error {
    let mut conn = db.statement_connection().await.unwrap();
    Error::from(db.statement(sql).execute(&mut *conn).await.unwrap_err())
}

async fn constraint_violations_are_classified(route: PgRoute) {
    let (_t, db) = setup_with(route, SCHEMA, |c| DbConfig {
        statement_timeout: Some(Duration::from_millis(200)),
        ..c
    })
    .await;
    let cases = [
        (
            "INSERT INTO parents VALUES (1)",
            ErrorKind::AlreadyExists,
            "23505",
        ),
        (
            "INSERT INTO children VALUES (1, 99, 1)",
            ErrorKind::Validation,
            "23503",
        ),
        (
            "INSERT INTO children VALUES (1, 1, -1)",
            ErrorKind::Validation,
            "23514",
        ),
        (
            "INSERT INTO children VALUES (1, NULL, 1)",
            ErrorKind::Validation,
            "23502",
        ),
        ("SELECT 1 / 0", ErrorKind::Validation, "22012"),
        ("SELECT pg_sleep(2)", ErrorKind::Timeout, "57014"),
        ("SELECT * FROM no_such_table", ErrorKind::Internal, "42P01"),
    ];
    for (sql, kind, code) in cases {
        let err = run(&db, sql).await;
        assert_eq!(
            (err.kind(), err.sqlstate()),
            (kind, Some(code)),
            "{sql}: {err}"
        );
    }
    let err = run(&db, "INSERT INTO parents VALUES (2)").await;
    assert_eq!(err.constraint(), Some("parents_pkey"));
    assert!(
        err.to_string().contains("already_exists") && err.to_string().contains("parents_pkey"),
        "{err}"
    );
    assert!(err.is_retryable() == ErrorKind::AlreadyExists.is_retryable());
}

async fn a_deadlock_is_a_retryable_conflict(route: PgRoute) {
    let (_t, db) = setup_with(route, SCHEMA, |c| c).await;
    let mut a = db.begin().await.unwrap();
    let mut b = db.begin().await.unwrap();
    db.statement("UPDATE parents SET id = id WHERE id = 1")
        .execute(&mut **a)
        .await
        .unwrap();
    db.statement("UPDATE parents SET id = id WHERE id = 2")
        .execute(&mut **b)
        .await
        .unwrap();
    let named = db.pooler().named_statements();
    let second = tokio::spawn(async move {
        let result = sqlx::query("UPDATE parents SET id = id WHERE id = 1")
            .persistent(named)
            .execute(&mut **b)
            .await;
        (result.map(|_| ()), b)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = db
        .statement("UPDATE parents SET id = id WHERE id = 2")
        .execute(&mut **a)
        .await;
    let (second, _b) = second.await.unwrap();
    // PostgreSQL aborts exactly one of the two.
    let errors: Vec<Error> = [first.map(|_| ()), second]
        .into_iter()
        .filter_map(Result::err)
        .map(Error::from)
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].kind(), errors[0].sqlstate()),
        (ErrorKind::Conflict, Some("40P01"))
    );
    assert!(errors[0].is_retryable());
}

neo_testkit::over_routes!(
    constraint_violations_are_classified,
    a_deadlock_is_a_retryable_conflict,
);

#[test]
fn sqlstates_without_a_live_server() {
    assert_eq!(classify_sqlstate("40001"), ErrorKind::Conflict);
    assert_eq!(classify_sqlstate("08006"), ErrorKind::Unavailable);
    assert_eq!(classify_sqlstate("57P01"), ErrorKind::Unavailable);
    assert_eq!(classify_sqlstate("28P01"), ErrorKind::Unauthorized);
    assert_eq!(classify_sqlstate("42501"), ErrorKind::Forbidden);
    assert_eq!(classify_sqlstate("22P02"), ErrorKind::Validation);
    assert_eq!(classify_sqlstate("XX000"), ErrorKind::Internal);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_url_stays_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = DbConfig {
        acquire_timeout: Duration::from_millis(500),
        ..DbConfig::with_url(format!("postgres://app:hunter2@127.0.0.1:{port}/app"))
    };
    let err = Db::connect(&config).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(!format!("{err} {err:?} {config:?}").contains("hunter2"));

    let err = Db::connect(&DbConfig::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("NEO_DB_URL"), "{err}");
    let err = Db::connect(&DbConfig::with_url("postgres://root:hunter2@[::1/y"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = Db::connect(&DbConfig {
        max_connections: 0,
        ..DbConfig::with_url("postgres://x/y")
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
}
