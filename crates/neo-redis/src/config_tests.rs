//! Unit tests of [`RedisConfig`]: every refusal of [`RedisConfig::mode`], and `Debug`.

use super::{RedisConfig, RedisMode};
use crate::Error;
use neo_core::{ErrorKind, HasErrorKind};

fn conflict(config: &RedisConfig) -> (&'static str, &'static str) {
    match config.mode() {
        Err(Error::ConflictingSettings { first, second }) => (first, second),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn invalid(config: &RedisConfig) -> (String, String) {
    match config.mode() {
        Err(e @ Error::InvalidSetting { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Configuration);
            let Error::InvalidSetting { setting, reason } = e else {
                unreachable!()
            };
            (setting, reason)
        }
        other => panic!("expected an invalid setting, got {other:?}"),
    }
}

fn sentinel(addresses: &[&str], master: Option<&str>) -> RedisConfig {
    let mut config = RedisConfig::default();
    config.sentinel.addresses = addresses.iter().map(|a| (*a).to_owned()).collect();
    config.sentinel.master_name = master.map(str::to_owned);
    config
}

#[test]
fn each_mode_is_recognised() {
    assert_eq!(
        RedisConfig::default().mode().unwrap(),
        RedisMode::Standalone
    );
    assert_eq!(
        RedisConfig::new("rediss://:pw@cache:6380/1")
            .mode()
            .unwrap(),
        RedisMode::Standalone
    );
    assert_eq!(
        RedisConfig::new("unix:///run/redis.sock").mode().unwrap(),
        RedisMode::Standalone
    );
    assert_eq!(
        RedisConfig::cluster(["redis://a:7000", "redis://b:7000"])
            .mode()
            .unwrap(),
        RedisMode::Cluster
    );
    assert_eq!(
        sentinel(&["redis://s1:26379"], Some("mymaster"))
            .mode()
            .unwrap(),
        RedisMode::Sentinel
    );
    let tls_cluster = RedisConfig::cluster(["rediss://a:7000"])
        .tls_ca_file("/etc/ca.pem")
        .tls_client_cert("/etc/client.pem", "/etc/client.key");
    assert_eq!(tls_cluster.mode().unwrap(), RedisMode::Cluster);
}

#[test]
fn cluster_and_sentinel_together_are_refused_naming_both() {
    let mut config = RedisConfig::cluster(["redis://a:7000"]);
    config.sentinel.master_name = Some("mymaster".into());
    assert_eq!(conflict(&config), ("cluster.nodes", "sentinel.master_name"));
    config.sentinel.addresses = vec!["redis://s1:26379".into()];
    assert_eq!(conflict(&config), ("cluster.nodes", "sentinel.addresses"));
    let error = config.mode().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Configuration);
    let text = error.to_string();
    assert!(
        text.contains("`cluster.nodes`") && text.contains("`sentinel.addresses`"),
        "{text}"
    );
}

#[test]
fn a_url_of_its_own_with_cluster_or_sentinel_is_refused() {
    let mut config = RedisConfig::cluster(["redis://a:7000"]);
    config.url = "redis://standalone:6379".into();
    assert_eq!(conflict(&config), ("url", "cluster.nodes"));
    let mut config = sentinel(&["redis://s1:26379"], Some("mymaster"));
    config.url = "redis://standalone:6379".into();
    assert_eq!(conflict(&config), ("url", "sentinel.addresses"));
    let mut config = sentinel(&[], Some("mymaster"));
    config.url = "redis://standalone:6379".into();
    assert_eq!(conflict(&config), ("url", "sentinel.master_name"));
    // Left at its default (or empty), `url` does not count as set.
    let mut config = RedisConfig::cluster(["redis://a:7000"]);
    config.url = String::new();
    assert_eq!(config.mode().unwrap(), RedisMode::Cluster);
}

#[test]
fn a_sentinel_setup_needs_both_addresses_and_master_name() {
    let (setting, reason) = invalid(&sentinel(&["redis://s1:26379"], None));
    assert_eq!(setting, "sentinel.master_name");
    assert!(reason.contains("not set"), "{reason}");
    let (setting, _) = invalid(&sentinel(&["redis://s1:26379"], Some("  ")));
    assert_eq!(setting, "sentinel.master_name");
    let (setting, reason) = invalid(&sentinel(&[], Some("mymaster")));
    assert_eq!(setting, "sentinel.addresses");
    assert!(reason.contains("at least one"), "{reason}");
}

#[test]
fn urls_that_do_not_parse_are_named_by_setting_and_not_repeated() {
    let (setting, reason) = invalid(&RedisConfig::new("http://app:s3cret@cache:6379"));
    assert_eq!(setting, "url");
    assert!(!reason.contains("s3cret"), "{reason}");
    let (setting, _) = invalid(&RedisConfig::new("redis://app:s3cret@:notaport"));
    assert_eq!(setting, "url");
    let (setting, _) = invalid(&RedisConfig::new(""));
    assert_eq!(setting, "url");
    let (setting, reason) = invalid(&RedisConfig::cluster([
        "redis://a:7000",
        "cache-b:7000 with s3cret",
    ]));
    assert_eq!(setting, "cluster.nodes[1]");
    assert!(!reason.contains("s3cret"), "{reason}");
    // A cluster node is a TCP address: no Unix sockets.
    let (setting, _) = invalid(&RedisConfig::cluster(["unix:///run/redis.sock"]));
    assert_eq!(setting, "cluster.nodes[0]");
    let (setting, _) = invalid(&sentinel(&["redis://s1:26379", "s2"], Some("m")));
    assert_eq!(setting, "sentinel.addresses[1]");
}

#[test]
fn tls_and_plaintext_urls_in_one_list_are_refused() {
    let (setting, reason) = invalid(&RedisConfig::cluster(["rediss://a:7000", "redis://b:7000"]));
    assert_eq!(setting, "cluster.nodes");
    assert!(reason.contains("mixes"), "{reason}");
    let (setting, _) = invalid(&sentinel(
        &["redis://s1:26379", "rediss://s2:26379"],
        Some("mymaster"),
    ));
    assert_eq!(setting, "sentinel.addresses");
}

#[test]
fn tls_files_with_plaintext_urls_are_refused_no_fallback() {
    let config = RedisConfig::new("redis://cache:6379").tls_ca_file("/etc/ca.pem");
    assert_eq!(conflict(&config), ("tls.ca_file", "url (redis://)"));
    let config = RedisConfig::cluster(["redis://a:7000"]).tls_client_cert("c.pem", "k.pem");
    assert_eq!(
        conflict(&config),
        ("tls.client_cert_file", "cluster.nodes (redis://)")
    );
    let mut config = sentinel(&["redis://s1:26379"], Some("mymaster"));
    config.tls.client_key_file = Some("k.pem".into());
    assert_eq!(
        conflict(&config),
        ("tls.client_key_file", "sentinel.addresses (redis://)")
    );
}

#[test]
fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
    let mut config = RedisConfig::new("rediss://cache:6380");
    config.tls.client_cert_file = Some("client.pem".into());
    let (setting, _) = invalid(&config);
    assert_eq!(setting, "tls.client_key_file");
    config.tls.client_cert_file = None;
    config.tls.client_key_file = Some("client.key".into());
    let (setting, _) = invalid(&config);
    assert_eq!(setting, "tls.client_cert_file");
}

#[test]
fn debug_hides_every_password() {
    let shown = format!("{:?}", RedisConfig::new("redis://app:s3cret@cache:6379/2"));
    assert!(shown.contains("redis://***@cache:6379/2"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    let plain = format!("{:?}", RedisConfig::new("redis://cache:6379"));
    assert!(plain.contains("redis://cache:6379"), "{plain}");
    let mut config = RedisConfig::cluster(["rediss://:n0de-s3cret@a:7000"]);
    config.sentinel.addresses = vec!["redis://u:sent1nel-s3cret@s1:26379".into()];
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("n0de-s3cret") && !shown.contains("sent1nel-s3cret"),
        "{shown}"
    );
    assert!(shown.contains("rediss://***@a:7000"), "{shown}");
}

#[test]
#[allow(clippy::result_large_err, reason = "figment's Jail API")]
fn loads_from_neo_redis_variables() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_REDIS_POOL_SIZE", "3");
        jail.set_env("NEO_REDIS_TIMEOUT", "250ms");
        jail.set_env(
            "NEO_REDIS_CLUSTER__NODES",
            "[rediss://:s3cret@a:7000, rediss://:s3cret@b:7000]",
        );
        jail.set_env("NEO_REDIS_TLS__CA_FILE", "/etc/redis/ca.pem");
        let config = RedisConfig::from_env().unwrap();
        assert_eq!(config.pool_size, 3);
        assert_eq!(config.timeout, std::time::Duration::from_millis(250));
        assert_eq!(
            config.cluster.nodes,
            ["rediss://:s3cret@a:7000", "rediss://:s3cret@b:7000"]
        );
        assert_eq!(
            config.tls.ca_file.as_deref(),
            Some("/etc/redis/ca.pem".as_ref())
        );
        assert_eq!(config.mode().unwrap(), RedisMode::Cluster);
        assert!(!format!("{config:?}").contains("s3cret"));

        // Comma-separated works too; a sentinel master name beside the nodes is a conflict.
        jail.set_env(
            "NEO_REDIS_CLUSTER__NODES",
            "rediss://a:7000,rediss://b:7000",
        );
        jail.set_env("NEO_REDIS_SENTINEL__MASTER_NAME", "mymaster");
        let config = RedisConfig::from_env().unwrap();
        assert_eq!(config.cluster.nodes, ["rediss://a:7000", "rediss://b:7000"]);
        assert_eq!(conflict(&config), ("cluster.nodes", "sentinel.master_name"));

        jail.set_env("NEO_REDIS_POOL_SIZE", "many");
        let error = RedisConfig::from_env().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Configuration);
        assert!(error.to_string().contains("POOL_SIZE"), "{error}");
        Ok(())
    });
}
