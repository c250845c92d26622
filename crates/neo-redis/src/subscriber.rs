//! Where pub/sub subscriptions connect: they live outside the shared connections.

use crate::{Error, RedisConfig, RedisMode, Result, SentinelConnections};

/// Where a pub/sub subscriber connects, for each of the modes [`RedisConfig`] describes:
/// the server of a standalone setting; every seed node of a Redis Cluster (a cluster delivers
/// a `PUBLISH` sent to any node to the subscribers of every node, so any live one will do, and
/// a subscriber moves to the next when its node fails); or, under Redis Sentinel, the master
/// the sentinels name at the time of each (re)connection, so a subscriber follows a failover.
/// Nothing connects when this is built. Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> neo_redis::Result<()> {
/// let config = neo_redis::RedisConfig::new("redis://127.0.0.1:6379");
/// let subscribers = neo_redis::Subscribers::new(&config)?;
/// let client = subscribers.client(0).await?;
/// let mut pubsub = client.get_async_pubsub().await.expect("subscribe");
/// pubsub.subscribe("news").await.expect("subscribe");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Subscribers {
    source: Source,
}

#[derive(Clone, Debug)]
enum Source {
    Nodes(Vec<redis::Client>),
    Sentinel(SentinelConnections),
}

impl Subscribers {
    /// The subscriber source `config` describes (its TLS files included).
    ///
    /// # Errors
    /// The errors of [`RedisConfig::mode`]; [`Error::InvalidSetting`] for a TLS file that
    /// cannot be read or a URL that does not parse.
    pub fn new(config: &RedisConfig) -> Result<Self> {
        let source = match config.mode()? {
            RedisMode::Standalone => {
                Source::Nodes(vec![crate::tls::client(&config.url, &config.tls)?])
            }
            RedisMode::Cluster => Source::Nodes(
                config
                    .cluster
                    .nodes
                    .iter()
                    .map(|node| crate::tls::client(node, &config.tls))
                    .collect::<Result<_>>()?,
            ),
            RedisMode::Sentinel => Source::Sentinel(SentinelConnections::connect(config)?),
        };
        Ok(Subscribers { source })
    }

    /// Subscribers that ask the sentinels of `connections` for the master on every
    /// (re)connection, sharing their sentinel client.
    pub fn from_sentinel(connections: SentinelConnections) -> Self {
        Subscribers {
            source: Source::Sentinel(connections),
        }
    }

    /// The client for a subscriber's `attempt`-th connection (counting from 0): the nodes in
    /// turn, or the master the sentinels name now.
    ///
    /// # Errors
    /// [`Error::SentinelUnreachable`] when no sentinel names a master in time.
    pub async fn client(&self, attempt: usize) -> Result<redis::Client> {
        match &self.source {
            Source::Nodes(clients) => clients
                .get(attempt % clients.len().max(1))
                .cloned()
                .ok_or_else(|| Error::Config("no Redis node to subscribe on".into())),
            Source::Sentinel(connections) => connections.master_client().await,
        }
    }
}
