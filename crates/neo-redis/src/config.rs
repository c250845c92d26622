//! Where Redis is and how the connections to it behave.

use crate::redact::redact_url;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach Redis: one server (`url`, `redis://` or `rediss://` for TLS), a Redis Cluster
/// (`cluster.nodes`) or a Sentinel-managed master (`sentinel.addresses` + `sentinel.master_name`),
/// with the TLS files of [`TlsConfig`] for any of them. Exactly one of the three is chosen;
/// [`RedisConfig::mode`] says which, or why the settings do not work together.
///
/// `Debug` hides every password (of `url`, of the nodes and of the sentinels).
///
/// Loaded from the environment with [`RedisConfig::from_env`] (feature `env`):
/// `NEO_REDIS_URL`, `NEO_REDIS_POOL_SIZE`, `NEO_REDIS_TIMEOUT` (`"250ms"`),
/// `NEO_REDIS_TLS__CA_FILE`, `NEO_REDIS_TLS__CLIENT_CERT_FILE`, `NEO_REDIS_TLS__CLIENT_KEY_FILE`,
/// `NEO_REDIS_CLUSTER__NODES` (`"[redis://a:6379, redis://b:6379]"` or `"redis://a:6379,redis://b:6379"`),
/// `NEO_REDIS_SENTINEL__ADDRESSES` (same forms), `NEO_REDIS_SENTINEL__MASTER_NAME`.
///
/// # Example
/// ```
/// use neo_redis::{RedisConfig, RedisMode};
/// let config: RedisConfig = serde_json::from_str(
///     r#"{ "url": "redis://cache.internal:6379", "timeout": "250ms" }"#,
/// ).unwrap();
/// assert_eq!(config.pool_size, RedisConfig::default().pool_size);
/// assert_eq!(config.timeout, std::time::Duration::from_millis(250));
/// assert_eq!(config.mode().unwrap(), RedisMode::Standalone);
///
/// let cluster: RedisConfig = serde_json::from_str(
///     r#"{ "cluster": { "nodes": ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"] } }"#,
/// ).unwrap();
/// assert_eq!(cluster.mode().unwrap(), RedisMode::Cluster);
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// One server: `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS. Leave it
    /// at its default when `cluster` or `sentinel` says where Redis is: a `url` changed from
    /// the default together with either is refused as a conflict.
    pub url: String,
    /// Shared multiplexed connections, used round robin (each carries many calls at once).
    pub pool_size: usize,
    /// Connecting, and each answer, gives up after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Certificates for `rediss://` connections (any mode).
    pub tls: TlsConfig,
    /// A Redis Cluster, by its seed nodes.
    pub cluster: ClusterConfig,
    /// A master found through Redis Sentinel.
    pub sentinel: SentinelConfig,
}

/// Certificates for TLS (`rediss://`) connections. Without `ca_file` the server's certificate
/// must chain to a public root (the Mozilla bundle, `webpki-roots`) or one the system trusts.
/// Setting any of them while the URLs say `redis://` (plaintext) is refused: nothing falls
/// back to plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities that sign the servers' certificates; only
    /// these are trusted when set.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for servers that require client
    /// certificates (`tls-auth-clients`). Needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key. Needs `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// A Redis Cluster by its seed nodes: any reachable one tells the client the whole topology.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Seed node URLs, all `redis://` or all `rediss://` (a password in them is used for every
    /// node).
    #[serde(deserialize_with = "crate::config::list::deserialize")]
    pub nodes: Vec<String>,
}

/// A master found through Redis Sentinel.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SentinelConfig {
    /// Sentinel URLs (`redis://host:26379`, or `rediss://` when the sentinels and the master
    /// speak TLS).
    #[serde(deserialize_with = "crate::config::list::deserialize")]
    pub addresses: Vec<String>,
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master_name: Option<String>,
}

/// The way [`RedisConfig`] reaches Redis, once its settings are checked
/// ([`RedisConfig::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisMode {
    /// One server at `url` (or a proxy in front of several).
    Standalone,
    /// A Redis Cluster seeded by `cluster.nodes`.
    Cluster,
    /// The master `sentinel.master_name`, found through `sentinel.addresses`.
    Sentinel,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: DEFAULT_URL.to_owned(),
            pool_size: 8,
            timeout: Duration::from_millis(500),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
            sentinel: SentinelConfig::default(),
        }
    }
}

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

impl RedisConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// The defaults with a Redis Cluster seeded by `nodes`.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let mut config = RedisConfig::default();
        config.cluster.nodes = nodes.into_iter().map(Into::into).collect();
        config
    }

    /// The defaults with the master `master_name`, found through the sentinels at
    /// `addresses`.
    pub fn sentinel<S: Into<String>>(
        addresses: impl IntoIterator<Item = S>,
        master_name: impl Into<String>,
    ) -> Self {
        let mut config = RedisConfig::default();
        config.sentinel.addresses = addresses.into_iter().map(Into::into).collect();
        config.sentinel.master_name = Some(master_name.into());
        config
    }

    /// `pool_size` connections instead of the default.
    #[must_use]
    pub fn pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// `timeout` for connecting and for each answer instead of the default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trusts only the certificate authorities in the PEM file `ca_file`.
    #[must_use]
    pub fn tls_ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.tls.ca_file = Some(ca_file.into());
        self
    }

    /// Presents the client certificate chain in `cert_file` with the private key in `key_file`.
    #[must_use]
    pub fn tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls.client_cert_file = Some(cert_file.into());
        self.tls.client_key_file = Some(key_file.into());
        self
    }

    /// Loads the configuration from `NEO_REDIS_*` environment variables over the defaults
    /// (see [`RedisConfig`] for the names). Checks nothing beyond the types: see
    /// [`RedisConfig::mode`].
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that could not be parsed.
    #[cfg(feature = "env")]
    pub fn from_env() -> Result<Self> {
        neo_core::config::from_env("NEO_REDIS_").map_err(|e| Error::Config(e.to_string()))
    }

    /// Which way these settings reach Redis, after checking that they work together: one mode
    /// only, every URL valid with the scheme its place needs, TLS files only with `rediss://`,
    /// a client certificate only with its key.
    ///
    /// # Errors
    /// [`Error::ConflictingSettings`] naming two settings that choose different modes (or TLS
    /// and plaintext); [`Error::InvalidSetting`] naming a setting that is wrong on its own.
    /// Neither repeats a URL (it may hold a password).
    pub fn mode(&self) -> Result<RedisMode> {
        let url_set = !self.url.is_empty() && self.url != DEFAULT_URL;
        let cluster_set = !self.cluster.nodes.is_empty();
        let sentinel_setting = if !self.sentinel.addresses.is_empty() {
            Some("sentinel.addresses")
        } else if self.sentinel.master_name.is_some() {
            Some("sentinel.master_name")
        } else {
            None
        };
        let conflict = |first, second| Error::ConflictingSettings { first, second };
        let mode = match (url_set, cluster_set, sentinel_setting) {
            (_, true, Some(sentinel)) => return Err(conflict("cluster.nodes", sentinel)),
            (true, true, None) => return Err(conflict("url", "cluster.nodes")),
            (true, false, Some(sentinel)) => return Err(conflict("url", sentinel)),
            (_, true, None) => RedisMode::Cluster,
            (_, false, Some(_)) => RedisMode::Sentinel,
            (_, false, None) => RedisMode::Standalone,
        };
        let tls = match mode {
            RedisMode::Standalone => {
                if self.url.is_empty() {
                    return Err(invalid("url", "is empty: name the Redis server"));
                }
                scheme_of("url", &self.url, true)?
            }
            RedisMode::Cluster => one_scheme("cluster.nodes", &self.cluster.nodes)?,
            RedisMode::Sentinel => {
                match self.sentinel.master_name.as_deref().map(str::trim) {
                    None => {
                        return Err(invalid(
                            "sentinel.master_name",
                            "is not set: name the master the sentinels monitor",
                        ));
                    }
                    Some("") => return Err(invalid("sentinel.master_name", "is empty")),
                    Some(_) => {}
                }
                if self.sentinel.addresses.is_empty() {
                    return Err(invalid(
                        "sentinel.addresses",
                        "is empty: name at least one sentinel (redis://host:26379)",
                    ));
                }
                one_scheme("sentinel.addresses", &self.sentinel.addresses)?
            }
        };
        self.check_tls(mode, tls)?;
        Ok(mode)
    }

    /// The TLS files go with `rediss://` only, and the client certificate with its key.
    fn check_tls(&self, mode: RedisMode, tls: bool) -> Result<()> {
        let tls_files = [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.client_cert_file", &self.tls.client_cert_file),
            ("tls.client_key_file", &self.tls.client_key_file),
        ];
        if !tls && let Some((setting, _)) = tls_files.iter().find(|(_, file)| file.is_some()) {
            let plaintext = match mode {
                RedisMode::Standalone => "url (redis://)",
                RedisMode::Cluster => "cluster.nodes (redis://)",
                RedisMode::Sentinel => "sentinel.addresses (redis://)",
            };
            return Err(Error::ConflictingSettings {
                first: setting,
                second: plaintext,
            });
        }
        match (&self.tls.client_cert_file, &self.tls.client_key_file) {
            (Some(_), None) => Err(invalid(
                "tls.client_key_file",
                "is not set: tls.client_cert_file needs its private key",
            )),
            (None, Some(_)) => Err(invalid(
                "tls.client_cert_file",
                "is not set: tls.client_key_file is the key of a client certificate",
            )),
            _ => Ok(()),
        }
    }
}

fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidSetting {
        setting: setting.into(),
        reason: reason.into(),
    }
}

/// Whether `url` asks for TLS (`rediss://`), after checking that it parses; `unix` sockets
/// only where `unix_allowed`.
fn scheme_of(setting: &str, url: &str, unix_allowed: bool) -> Result<bool> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    let tls = match scheme {
        Some("redis") => false,
        Some("rediss") => true,
        Some("unix" | "redis+unix") if unix_allowed => false,
        _ => {
            return Err(invalid(
                setting,
                "is not a redis:// or rediss:// URL (its text is not shown)",
            ));
        }
    };
    redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|_| invalid(setting, "is not a valid Redis URL (its text is not shown)"))?;
    Ok(tls)
}

/// Every URL of a list parses and all use the same scheme; whether that is `rediss://`.
fn one_scheme(setting: &str, urls: &[String]) -> Result<bool> {
    let mut first = None;
    for (i, url) in urls.iter().enumerate() {
        let tls = scheme_of(&format!("{setting}[{i}]"), url, false)?;
        match first {
            None => first = Some(tls),
            Some(seen) if seen != tls => {
                return Err(invalid(
                    setting,
                    "mixes redis:// and rediss:// URLs: use one (TLS for all or for none)",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(first.unwrap_or(false))
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .field("cluster", &self.cluster)
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| redact_url(n)).collect();
        f.debug_struct("ClusterConfig")
            .field("nodes", &nodes)
            .finish()
    }
}

impl std::fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses: Vec<String> = self.addresses.iter().map(|a| redact_url(a)).collect();
        f.debug_struct("SentinelConfig")
            .field("addresses", &addresses)
            .field("master_name", &self.master_name)
            .finish()
    }
}

/// A list of URLs written as a list or, in one environment variable, as one string with
/// commas between them.
mod list {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::Many(list) => list,
            OneOrMany::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
