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
fn a_binary_that_is_not_redis_7_is_refused() {
    // /bin/false prints no version: it is refused as not being Redis 7+.
    let options = RedisServerOptions {
        binary: Some("/bin/false".into()),
        ..RedisServerOptions::default()
    };
    let err = RedisServer::start_with(options).unwrap_err().to_string();
    assert!(err.contains("Redis 7+"), "{err}");
}

#[test]
fn a_server_that_cannot_start_reports_its_log() {
    use std::os::unix::fs::PermissionsExt as _;
    // A "redis-server" that claims version 7, then fails at start-up with a message.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("redis-server");
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Redis server v=7.2.0'; exit 0; fi\n\
         echo 'FATAL: bad config directive' >&2; exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = RedisServerOptions {
        binary: Some(fake),
        ..RedisServerOptions::default()
    };
    let err = RedisServer::start_with(options).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("Redis did not start: redis-server exited"),
        "{msg}"
    );
    assert!(
        msg.contains("FATAL: bad config directive"),
        "the log tail is in the message: {msg}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}
