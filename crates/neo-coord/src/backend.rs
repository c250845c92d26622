//! The Redis a coordinator talks to: one server (plain or TLS), a Redis Cluster, or the
//! master Redis Sentinel names.

use crate::{Error, Result};
use neo_redis::{
    ClusterConnections, RedisConfig, RedisConnections, RedisMode, SentinelConnections,
};

/// Where the scripts run. Each variant hands out a connection per call; the scripts are the
/// same in every mode (their keys share one hash slot, see [`crate::Coordinator`]).
#[derive(Debug)]
pub(crate) enum Backend {
    /// One server, plain or TLS: shared multiplexed connections, round robin.
    Standalone(RedisConnections),
    /// A Redis Cluster: redis-rs routes each script by its first key's slot.
    Cluster(ClusterConnections),
    /// The master Sentinel names, asked again after a call finds it gone.
    Sentinel(SentinelConnections),
}

impl Backend {
    /// The connections `redis` describes, after checking its settings.
    pub(crate) fn connect(redis: &RedisConfig) -> Result<Self> {
        Ok(match redis.mode()? {
            RedisMode::Cluster => Backend::Cluster(ClusterConnections::connect(redis)?),
            RedisMode::Sentinel => Backend::Sentinel(SentinelConnections::connect(redis)?),
            _ => Backend::Standalone(RedisConnections::connect(redis)?),
        })
    }

    /// Whether keys must carry hash tags (a Redis Cluster).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster(_))
    }

    /// Whether a replica can take over as master (a Redis Cluster, Sentinel), losing the last
    /// writes: fences and epochs must then stay ahead of the lost ones.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(self, Backend::Cluster(_) | Backend::Sentinel(_))
    }

    /// Runs `invocation` on a connection of this backend.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let unavailable = |e: redis::RedisError| Error::Unavailable(e.to_string());
        match self {
            Backend::Standalone(redis) => {
                let mut conn = redis.get()?;
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            Backend::Cluster(cluster) => {
                let mut conn = cluster.get().await?;
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            Backend::Sentinel(sentinel) => {
                let mut conn = sentinel.get().await?;
                invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)
            }
        }
    }
}
