//! A TLS-only Redis (neo-testkit: `--port 0 --tls-port`, client certificates required,
//! certificates made at test time) through `RedisConnections`.

use neo_redis::{Error, RedisConfig, RedisConnections};
use std::time::Duration;

fn config_for(redis: &neo_testkit::TestRedisTls) -> RedisConfig {
    let certs = redis.certificates();
    RedisConfig::new(redis.url())
        .pool_size(2)
        .timeout(Duration::from_secs(2))
        .tls_ca_file(certs.ca_file())
        .tls_client_cert(certs.client_cert_file(), certs.client_key_file())
}

async fn ping(connections: &RedisConnections) -> redis::RedisResult<String> {
    let mut conn = connections.get().unwrap();
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn a_tls_only_server_answers_with_the_right_ca_and_client_certificate() {
    let redis = neo_testkit::redis_tls().await;
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    let connections = RedisConnections::connect(&config_for(&redis)).unwrap();
    let key = format!("{}greeting", redis.key_prefix());
    let mut conn = connections.get().unwrap();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("over tls")
        .query_async(&mut conn)
        .await
        .unwrap();
    for _ in 0..4 {
        let mut conn = connections.get().unwrap();
        let value: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, "over tls");
    }
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let redis = neo_testkit::redis_tls().await;
    let other = tempfile::tempdir().unwrap();
    let wrong = neo_testkit::CertificateFiles::generate(other.path()).unwrap();
    let certs = redis.certificates();
    let config = config_for(&redis)
        .tls_ca_file(wrong.ca_file())
        .tls_client_cert(certs.client_cert_file(), certs.client_key_file());
    let connections = RedisConnections::connect(&config).unwrap();
    let error = ping(&connections).await.unwrap_err().to_string();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "not a clear certificate error: {error}"
    );
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses_the_connection() {
    let redis = neo_testkit::redis_tls().await;
    let config = RedisConfig::new(redis.url())
        .timeout(Duration::from_secs(2))
        .tls_ca_file(redis.certificates().ca_file());
    let connections = RedisConnections::connect(&config).unwrap();
    assert!(ping(&connections).await.is_err());
}

#[tokio::test]
async fn plaintext_to_the_tls_port_fails_there_is_no_fallback() {
    let redis = neo_testkit::redis_tls().await;
    let url = format!("redis://127.0.0.1:{}/0", redis.port());
    let connections =
        RedisConnections::connect(&RedisConfig::new(url).timeout(Duration::from_millis(500)))
            .unwrap();
    let started = std::time::Instant::now();
    assert!(ping(&connections).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_read_or_parsed_names_the_setting() {
    let config = RedisConfig::new("rediss://127.0.0.1:6380").tls_ca_file("/nonexistent/ca.pem");
    match RedisConnections::connect(&config).unwrap_err() {
        Error::InvalidSetting { setting, reason } => {
            assert_eq!(setting, "tls.ca_file");
            assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = RedisConnections::connect(
        &RedisConfig::new("rediss://127.0.0.1:6380").tls_ca_file(&garbage),
    )
    .unwrap_err();
    assert!(matches!(error, Error::InvalidSetting { .. }), "{error:?}");
}
