//! Where Redis is and how the connections to it behave.

use serde::Deserialize;
use std::time::Duration;

/// How to reach Redis. Grows with the ways to reach it (Cluster, Sentinel, TLS) as they come.
///
/// `Debug` hides the password of the URL.
///
/// # Example
/// ```
/// use neo_redis::RedisConfig;
/// let config: RedisConfig = serde_json::from_str(
///     r#"{ "url": "redis://cache.internal:6379", "timeout": "250ms" }"#,
/// ).unwrap();
/// assert_eq!(config.pool_size, RedisConfig::default().pool_size);
/// assert_eq!(config.timeout, std::time::Duration::from_millis(250));
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Shared multiplexed connections, used round robin (each carries many calls at once).
    pub pool_size: usize,
    /// Connecting, and each answer, gives up after this long.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".to_owned(),
            pool_size: 8,
            timeout: Duration::from_millis(500),
        }
    }
}

impl RedisConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
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
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `url` with whatever stands between `://` and `@` (user and password) replaced by `***`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::RedisConfig;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", RedisConfig::new("redis://app:s3cret@cache:6379/2"));
        assert!(shown.contains("redis://***@cache:6379/2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let plain = format!("{:?}", RedisConfig::new("redis://cache:6379"));
        assert!(plain.contains("redis://cache:6379"), "{plain}");
    }
}
