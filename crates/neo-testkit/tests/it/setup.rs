//! What a test sees when a server cannot be had: a failure that says how to get one.

use neo_core::{ErrorKind, HasErrorKind};
use neo_testkit::{PgServer, PgServerOptions, RedisServer, RedisServerOptions};

#[test]
fn missing_postgres_binaries_name_the_install_command() {
    let options = PgServerOptions {
        bin_dir: Some("/nonexistent/pg/bin".into()),
        ..PgServerOptions::default()
    };
    let err = PgServer::start_with(options).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("apt-get install -y postgresql"), "{msg}");
    assert!(msg.contains("NEO_TEST_DATABASE_URL"), "{msg}");
    assert!(msg.contains("/nonexistent/pg/bin"), "{msg}");
    assert_eq!(err.kind(), ErrorKind::Configuration);
}

#[test]
fn missing_redis_binary_names_the_install_command() {
    let options = RedisServerOptions {
        binary: Some("/nonexistent/redis-server".into()),
        ..RedisServerOptions::default()
    };
    let msg = RedisServer::start_with(options).unwrap_err().to_string();
    assert!(msg.contains("apt-get install -y redis-server"), "{msg}");
    assert!(msg.contains("NEO_TEST_REDIS_URL"), "{msg}");
}

#[test]
fn a_server_that_cannot_start_reports_its_log() {
    // `true` exists and exits at once: a "redis-server" that never answers.
    let options = RedisServerOptions {
        binary: Some("/bin/false".into()),
        ..RedisServerOptions::default()
    };
    let err = RedisServer::start_with(options).unwrap_err().to_string();
    // /bin/false prints no version: it is refused as not being Redis 7+.
    assert!(err.contains("Redis 7+"), "{err}");
}
