#![allow(
    clippy::result_large_err,
    reason = "figment::Jail's closure signature is not ours"
)]

use neo_core::config::from_env;
use std::time::Duration;

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(default)]
struct Sample {
    max_connections: u32,
    #[serde(with = "humantime_serde")]
    acquire_timeout: Duration,
    nested: Nested,
}

#[derive(Debug, PartialEq, Default, serde::Deserialize)]
#[serde(default)]
struct Nested {
    capacity: u64,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            nested: Nested::default(),
        }
    }
}

#[test]
fn env_overrides_defaults_field_by_field() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_TEST_MAX_CONNECTIONS", "42");
        jail.set_env("NEO_TEST_NESTED__CAPACITY", "7");
        let config: Sample = from_env("NEO_TEST_").unwrap();
        assert_eq!(config.max_connections, 42);
        assert_eq!(config.acquire_timeout, Duration::from_secs(5));
        assert_eq!(config.nested.capacity, 7);
        jail.set_env("NEO_TEST_ACQUIRE_TIMEOUT", "250ms");
        let config: Sample = from_env("NEO_TEST_").unwrap();
        assert_eq!(config.acquire_timeout, Duration::from_millis(250));
        Ok(())
    });
}

#[test]
fn a_bad_variable_is_a_configuration_error_naming_it() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_BAD_MAX_CONNECTIONS", "many");
        let err = from_env::<Sample>("NEO_BAD_").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("max_connections") || msg.contains("MAX_CONNECTIONS"),
            "{msg}"
        );
        assert_eq!(
            neo_core::HasErrorKind::kind(&err),
            neo_core::ErrorKind::Configuration
        );
        Ok(())
    });
}

#[test]
fn secrets_load_from_env_and_stay_out_of_debug() {
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(default)]
    struct WithSecret {
        password: Option<neo_core::SecretString>,
    }
    figment::Jail::expect_with(|jail| {
        jail.set_env("NEO_SECRET_PASSWORD", "hunter2");
        let config: WithSecret = from_env("NEO_SECRET_").unwrap();
        let exposed = neo_core::ExposeSecret::expose_secret(config.password.as_ref().unwrap());
        assert_eq!(exposed, "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        Ok(())
    });
}
