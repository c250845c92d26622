//! A Redis Cluster through redis-rs' cluster connection.

use crate::redact::node_address;
use crate::{Error, RedisConfig, RedisMode, Result};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A Redis Cluster, reached through redis-rs' [`ClusterConnection`]: one multiplexed
/// connection per node, commands routed by hash slot, `MOVED`/`ASK` followed and the slot
/// map refreshed by redis-rs. Every call shares the one cluster connection (it is already
/// multiplexed per node, so `pool_size` does not apply).
///
/// The connection is opened by the first [`get`](ClusterConnections::get) (asking the seed
/// nodes for the slot map); a failed attempt is not kept, so the next call tries again.
/// Connecting to a node gives up after the configured timeout, and so does each call,
/// redis-rs' retries and redirections included (its `response_timeout` is also the overall
/// limit). Cheap to clone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> neo_redis::Result<()> {
/// use neo_redis::{ClusterConnections, RedisConfig};
/// let config = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
/// let cluster = ClusterConnections::connect(&config)?;
/// let mut conn = cluster.get().await?;
/// let () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await.unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClusterConnections {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::cluster::ClusterClient,
    /// `host:port` of the seed nodes, for errors.
    nodes: Vec<String>,
    timeout: Duration,
    conn: OnceCell<ClusterConnection>,
}

impl std::fmt::Debug for ClusterConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnections")
            .field("nodes", &self.inner.nodes)
            .field("opened", &self.inner.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl ClusterConnections {
    /// The cluster `config.cluster.nodes` seeds, after checking the settings
    /// ([`RedisConfig::mode`] must say [`RedisMode::Cluster`]). Nothing connects until the
    /// first [`get`](ClusterConnections::get).
    ///
    /// # Errors
    /// The errors of [`RedisConfig::mode`]; [`Error::Config`] when the settings name another
    /// mode; [`Error::InvalidSetting`] for a TLS file that cannot be read or parsed, or seed
    /// nodes redis-rs refuses (e.g. different passwords).
    pub fn connect(config: &RedisConfig) -> Result<Self> {
        let mode = config.mode()?;
        if mode != RedisMode::Cluster {
            return Err(Error::Config(format!(
                "ClusterConnections needs cluster.nodes; these settings are {mode:?}"
            )));
        }
        let mut builder =
            ClusterClientBuilder::new(config.cluster.nodes.iter().map(String::as_str))
                .connection_timeout(config.timeout)
                .response_timeout(config.timeout);
        if let Some(certs) = crate::tls::certificates(&config.tls)? {
            builder = builder.certs(certs);
        }
        let client = builder.build().map_err(|e| Error::InvalidSetting {
            setting: "cluster.nodes".into(),
            reason: format!(
                "refused by the cluster client: {}",
                e.detail().unwrap_or("")
            ),
        })?;
        Ok(ClusterConnections {
            inner: Arc::new(Inner {
                client,
                nodes: config
                    .cluster
                    .nodes
                    .iter()
                    .map(|n| node_address(n))
                    .collect(),
                timeout: config.timeout,
                conn: OnceCell::new(),
            }),
        })
    }

    /// The cluster connection (a cheap handle onto it), opened by the first call.
    ///
    /// # Errors
    /// [`Error::Unreachable`] naming every seed node (`host:port`) when none answers with
    /// the slot map within the timeout.
    pub async fn get(&self) -> Result<ClusterConnection> {
        let inner = &self.inner;
        let conn = inner
            .conn
            .get_or_try_init(|| async {
                // redis-rs bounds each node's connect by the timeout; this bounds the whole
                // round over the seeds, so a silent network cannot hang the caller.
                let seeds = u32::try_from(inner.nodes.len()).unwrap_or(u32::MAX);
                let limit = inner.timeout.saturating_mul(seeds.saturating_add(1));
                let unreachable = |reason: String| Error::Unreachable {
                    nodes: inner.nodes.clone(),
                    reason,
                };
                match tokio::time::timeout(limit, inner.client.get_async_connection()).await {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(e)) => Err(unreachable(e.to_string())),
                    Err(_) => Err(unreachable(format!("no slot map within {limit:?}"))),
                }
            })
            .await?;
        Ok(conn.clone())
    }
}
