//! TLS against a PostgreSQL with `ssl = on` and certificates generated at test time
//! (neo-testkit's shared TLS server: a certificate for `localhost` only).

use neo_core::{ErrorKind, HasErrorKind};
use neo_db::{Db, DbConfig, Error, SslMode, TlsProblem};
use neo_testkit::TlsPostgres;
use std::time::Duration;

fn config(url: String, mode: Option<SslMode>, root: Option<&std::path::Path>) -> DbConfig {
    DbConfig {
        ssl_mode: mode,
        ssl_root_cert: root.map(std::path::Path::to_path_buf),
        acquire_timeout: Duration::from_secs(10),
        max_connections: 2,
        ..DbConfig::with_url(url)
    }
}

/// Whether the session this pool hands out is encrypted, as the server sees it.
async fn uses_tls(db: &Db) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn server() -> TlsPostgres {
    neo_testkit::postgres_tls().await
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_over_tls() {
    let pg = server().await;
    // From the configuration (NEO_DB_SSL_MODE / NEO_DB_SSL_ROOT_CERT).
    let db = Db::connect(&config(
        pg.url("localhost"),
        Some(SslMode::VerifyFull),
        Some(pg.ca_file()),
    ))
    .await
    .unwrap();
    assert!(uses_tls(&db).await);
    db.close().await;

    // From the URL, as libpq spells it.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("localhost"),
        pg.ca_file().display()
    );
    let db = Db::connect(&config(url, None, None)).await.unwrap();
    assert!(uses_tls(&db).await);
    db.close().await;

    // The configuration overrides the URL's sslmode.
    let url = format!("{}?sslmode=disable", pg.url("localhost"));
    let db = Db::connect(&config(url, Some(SslMode::VerifyFull), Some(pg.ca_file())))
        .await
        .unwrap();
    assert!(uses_tls(&db).await);
    db.close().await;
}

#[tokio::test]
async fn require_encrypts_without_a_ca_and_disable_does_not() {
    let pg = server().await;
    // 127.0.0.1 is not in the certificate and no CA is given: `require` checks neither.
    let url = format!("{}?sslmode=require", pg.url("127.0.0.1"));
    let db = Db::connect(&config(url, None, None)).await.unwrap();
    assert!(uses_tls(&db).await);
    db.close().await;

    let db = Db::connect(&config(pg.url("127.0.0.1"), Some(SslMode::Disable), None))
        .await
        .unwrap();
    assert!(!uses_tls(&db).await);
    db.close().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_as_untrusted() {
    let pg = server().await;
    let other = neo_testkit::TestCertificates::generate(&["localhost"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = other.write_ca(dir.path()).unwrap();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa] {
        let err = Db::connect(&config(pg.url("localhost"), Some(mode), Some(&other_ca)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tls {
                    problem: TlsProblem::UntrustedCertificate,
                    ..
                }
            ),
            "{mode}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("certificate is not trusted"), "{message}");
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_hold() {
    let pg = server().await;
    let err = Db::connect(&config(
        pg.url("127.0.0.1"),
        Some(SslMode::VerifyFull),
        Some(pg.ca_file()),
    ))
    .await
    .unwrap_err();
    match &err {
        Error::Tls {
            problem: TlsProblem::NameMismatch { host, names },
            ..
        } => {
            assert_eq!(host, "127.0.0.1");
            assert_eq!(names, &["localhost".to_owned()]);
        }
        other => panic!("expected a name mismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("does not match the host name")
            && message.contains("\"127.0.0.1\"")
            && message.contains("localhost"),
        "{message}"
    );
    assert_eq!(err.kind(), ErrorKind::Configuration);

    // verify-ca checks the CA only: the same host name is accepted.
    let db = Db::connect(&config(
        pg.url("127.0.0.1"),
        Some(SslMode::VerifyCa),
        Some(pg.ca_file()),
    ))
    .await
    .unwrap();
    assert!(uses_tls(&db).await);
    db.close().await;
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    // A server of its own: the shared one may be NEO_TEST_DATABASE_URL's, with TLS or not.
    let plain = tokio::task::spawn_blocking(neo_testkit::PgServer::start)
        .await
        .unwrap()
        .unwrap();
    let err = Db::connect(&config(plain.url(), Some(SslMode::Require), None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Tls {
                problem: TlsProblem::NotOffered,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not offer TLS"), "{err}");
    // `prefer` (the default) falls back to plain TCP.
    let db = Db::connect(&config(plain.url(), None, None)).await.unwrap();
    assert!(!uses_tls(&db).await);
    db.close().await;
    tokio::task::spawn_blocking(move || drop(plain))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unknown_sslmode_is_refused_naming_the_value_and_the_accepted_ones() {
    for url in [
        "postgres://app:hunter2@localhost/app?sslmode=verify",
        "postgres://app:hunter2@localhost/app?ssl-mode=Verify_Full",
    ] {
        let err = Db::connect_lazy(&DbConfig::with_url(url)).unwrap_err();
        assert!(matches!(&err, Error::UnknownSslMode { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("unknown sslmode")
                && message.contains("disable, allow, prefer, require, verify-ca, verify-full"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert_eq!(err.kind(), ErrorKind::Configuration);
    }
    let err = Db::connect_lazy(&DbConfig::with_url(
        "postgres://app@localhost/app?sslmode=verify",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("\"verify\""), "{err}");
    // The accepted spellings pass, in any case, as sqlx reads them.
    for mode in SslMode::ACCEPTED {
        let url = format!(
            "postgres://app@localhost/app?sslmode={}",
            mode.to_uppercase()
        );
        Db::connect_lazy(&DbConfig::with_url(url)).unwrap();
    }
}

#[tokio::test]
async fn an_unreadable_root_certificate_is_named() {
    let config = config(
        "postgres://app@localhost/app".to_owned(),
        Some(SslMode::VerifyFull),
        Some(std::path::Path::new("/nonexistent/ca.pem")),
    );
    let err = Db::connect_lazy(&config).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let err = Db::connect_lazy(&DbConfig::with_url(
        "postgres://app@localhost/app?sslmode=verify-ca&sslrootcert=/nonexistent/url-ca.pem",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/url-ca.pem"), "{err}");
}

#[cfg(feature = "env")]
#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn tls_settings_load_from_neo_db_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_DB_URL", "postgres://app@db/app");
        jail.set_env("NEO_DB_SSL_MODE", "verify-full");
        jail.set_env("NEO_DB_SSL_ROOT_CERT", "/etc/ssl/db-ca.pem");
        let config = DbConfig::from_env().unwrap();
        assert_eq!(config.ssl_mode, Some(SslMode::VerifyFull));
        assert_eq!(
            config.ssl_root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ssl/db-ca.pem"))
        );
        jail.set_env("NEO_DB_SSL_MODE", "verify");
        let err = DbConfig::from_env().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration);
        let message = err.to_string();
        assert!(
            message.contains("\"verify\"") && message.contains("verify-full"),
            "{message}"
        );
        Ok(())
    });
}
