use sqlx::Row as _;

#[tokio::test]
async fn each_test_gets_its_own_database_on_a_real_server() {
    let a = neo_testkit::postgres().await;
    let b = neo_testkit::postgres().await;
    assert_ne!(a.name(), b.name());
    let pool_a = a.pool().await.unwrap();
    let pool_b = b.pool().await.unwrap();
    sqlx::query("CREATE TABLE items (id int primary key)")
        .execute(&pool_a)
        .await
        .unwrap();
    sqlx::query("INSERT INTO items VALUES (1), (2)")
        .execute(&pool_a)
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&pool_a)
        .await
        .unwrap();
    assert_eq!(count, 2);
    let missing = sqlx::query("SELECT * FROM items")
        .fetch_all(&pool_b)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&pool_a)
        .await
        .unwrap();
    assert!(version >= 150_000, "PostgreSQL 15+ required, got {version}");
}

#[tokio::test]
async fn a_dropped_test_database_is_removed() {
    let db = neo_testkit::postgres().await;
    let name = db.name().to_owned();
    let admin = sqlx::PgPool::connect(&neo_testkit::shared_postgres_url().unwrap())
        .await
        .unwrap();
    let exists = |name: String| {
        let admin = admin.clone();
        async move {
            sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(name)
                .fetch_optional(&admin)
                .await
                .unwrap()
                .is_some()
        }
    };
    let pool = db.pool().await.unwrap();
    assert!(exists(name.clone()).await);
    drop(db); // with the pool still connected: dropped WITH (FORCE)
    assert!(!exists(name).await);
    drop(pool);
}

#[tokio::test]
async fn concurrent_databases_do_not_collide() {
    let dbs = futures_join_all((0..8).map(|_| neo_testkit::postgres())).await;
    let mut names: Vec<_> = dbs.iter().map(|d| d.name().to_owned()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
    let row = sqlx::query("SELECT current_database() AS db")
        .fetch_one(&dbs[3].pool().await.unwrap())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("db"), dbs[3].name());
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futures.into_iter().collect();
    for f in handles {
        out.push(f.await);
    }
    out
}

#[test]
fn debug_output_hides_passwords() {
    assert_eq!(
        neo_testkit::redact_url("postgres://a:hunter2@h:5/d"),
        "postgres://a:***@h:5/d"
    );
    assert_eq!(
        neo_testkit::redact_url("redis://h:6379/0"),
        "redis://h:6379/0"
    );
    assert_eq!(neo_testkit::redact_url("::"), "(unparseable url)");
}

#[tokio::test]
async fn a_durable_server_applies_its_settings() {
    let server = tokio::task::spawn_blocking(|| {
        neo_testkit::PgServer::start_with(neo_testkit::PgServerOptions {
            durable: true,
            max_wal_size_mb: Some(2048),
            ..neo_testkit::PgServerOptions::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let setting = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(setting("fsync").await, "on");
    assert_eq!(setting("full_page_writes").await, "on");
    assert_eq!(setting("max_wal_size").await, "2GB");
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_shared_tls_server_serves_its_generated_certificate() {
    let tls = neo_testkit::postgres_tls().await;
    assert_eq!(
        neo_testkit::postgres_tls().await.port(),
        tls.port(),
        "shared"
    );
    assert_eq!(tls.server_names(), ["localhost".to_owned()]);
    let ca = std::fs::read_to_string(tls.ca_file()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // Plain TCP is still accepted; this client need not speak TLS.
    let url = format!("{}?sslmode=disable", tls.url("localhost"));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let setting = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(setting("ssl").await, "on");
    assert_eq!(setting("ssl_cert_file").await, "server.crt");
    let data_dir = std::path::PathBuf::from(setting("data_directory").await);
    pool.close().await;
    // PostgreSQL refuses a key that others can read; it belongs to the server's account.
    use std::os::unix::fs::MetadataExt as _;
    let key = std::fs::metadata(data_dir.join("server.key")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o600);
    let data = std::fs::metadata(&data_dir).unwrap();
    assert_eq!(key.uid(), data.uid());
}

#[test]
fn test_certificates_hold_a_fresh_ca_and_a_server_certificate_and_hide_the_key() {
    let certs = neo_testkit::TestCertificates::generate(&["localhost", "127.0.0.1"]).unwrap();
    let other = neo_testkit::TestCertificates::generate(&["localhost"]).unwrap();
    assert_ne!(certs.ca_pem(), other.ca_pem());
    assert!(
        certs
            .server_cert_pem()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(
        certs
            .server_key_pem()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert_eq!(certs.server_names(), ["localhost", "127.0.0.1"]);
    let debug = format!("{certs:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let dir = tempfile::tempdir().unwrap();
    let path = certs.write_ca(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(path).unwrap(), certs.ca_pem());
}
