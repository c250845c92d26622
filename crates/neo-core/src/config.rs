//! Loading configuration structs from `NEO_*` environment variables.
//!
//! Every neo-commons config struct implements `Default` and `Deserialize` with
//! `#[serde(default)]`, so [`from_env`] starts from the defaults and overrides each field
//! whose variable is set:
//! `NEO_DB_MAX_CONNECTIONS=20` sets `max_connections` of a struct loaded with prefix
//! `NEO_DB_`; nested fields use a double underscore (`NEO_CACHE_L1__CAPACITY`). Durations are
//! written the way the struct's serde attributes say (neo-commons uses `humantime`: `"5s"`,
//! `"250ms"`).

use crate::{Error, Result};
use figment::Figment;
use figment::providers::Env;
use serde::de::DeserializeOwned;

/// The prefix every neo-commons variable starts with.
pub const ENV_PREFIX: &str = "NEO_";

/// Loads `T` from environment variables starting with `prefix`; fields whose variable is
/// unset keep their `#[serde(default)]` value. Secrets (`SecretString` fields) load like any
/// other string and never reach `Debug`.
///
/// # Errors
/// [`Error::Config`] naming the variable that could not be parsed, or the field that is
/// missing when `T` has no `#[serde(default)]`.
///
/// # Example
/// ```
/// #[derive(Debug, Default, serde::Deserialize)]
/// #[serde(default)]
/// struct PoolConfig { max_connections: u32 }
///
/// let config: PoolConfig = neo_core::config::from_env("NEO_DOCTEST_POOL_")?;
/// assert_eq!(config.max_connections, 0);
/// # Ok::<(), neo_core::Error>(())
/// ```
pub fn from_env<T>(prefix: &str) -> Result<T>
where
    T: DeserializeOwned,
{
    Figment::new()
        .merge(Env::prefixed(prefix).split("__"))
        .extract()
        .map_err(|e| Error::Config(format!("from environment variables {prefix}*: {e}")))
}
