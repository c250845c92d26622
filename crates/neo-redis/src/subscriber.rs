//! Clients for pub/sub subscriptions, which live outside the shared connections.

use crate::{Error, RedisConfig, RedisMode, Result};

/// A client per node a subscriber may use, with the TLS files of `config`: the server of a
/// standalone setting, or every seed node of a Redis Cluster (a cluster delivers a `PUBLISH`
/// sent to any node to the subscribers of every node, so any live one will do; a subscriber
/// moves to the next when its node fails). Nothing connects here.
///
/// # Errors
/// The errors of [`RedisConfig::mode`]; [`Error::InvalidSetting`] for a TLS file that cannot
/// be read or a URL that does not parse; [`Error::Config`] for a mode not supported yet.
pub fn subscriber_clients(config: &RedisConfig) -> Result<Vec<redis::Client>> {
    match config.mode()? {
        RedisMode::Standalone => Ok(vec![crate::tls::client(&config.url, &config.tls)?]),
        RedisMode::Cluster => config
            .cluster
            .nodes
            .iter()
            .map(|node| crate::tls::client(node, &config.tls))
            .collect(),
        mode => Err(Error::Config(format!(
            "subscriptions on {mode:?} are not supported yet"
        ))),
    }
}
