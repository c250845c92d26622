//! A throwaway Redis Cluster: six nodes (three masters, three replicas) joined by
//! `redis-cli --cluster create`, and the one shared by a test binary.

use crate::process;
use crate::redis::{RedisServer, RedisServerOptions};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SERVER: &str = "Redis Cluster";
/// Points the tests at an existing cluster (seed node URLs, comma-separated) instead of
/// starting one.
pub const REDIS_CLUSTER_NODES_VAR: &str = "NEO_TEST_REDIS_CLUSTER_NODES";
/// Masters, each with one replica.
const MASTERS: usize = 3;

/// Six Redis Cluster nodes on free loopback ports (three masters with one replica each),
/// each a [`RedisServer`] that fault tests can stop, kill and restart; stopped when dropped
/// (or by the nodes' watchdogs if the process dies first).
///
/// # Example
/// ```no_run
/// let cluster = neo_testkit::RedisCluster::start()?;
/// assert_eq!(cluster.nodes().len(), 6);
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    servers: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes and joins them (`redis-cli --cluster create … --cluster-replicas 1`),
    /// then waits until every node reports `cluster_state:ok`.
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] when `redis-server` 7+ or `redis-cli` is not installed;
    /// [`Error::Startup`] with `redis-cli`'s output when the cluster does not form.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisServerOptions::default().cluster_node_timeout)
    }

    /// [`start`](Self::start) with the nodes' `cluster-node-timeout` (how long a master may
    /// be silent before its replica is promoted), for failover tests.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(node_timeout: Duration) -> Result<Self> {
        let redis_cli = find_redis_cli()?;
        let servers = (0..MASTERS * 2)
            .map(|_| {
                RedisServer::start_with(RedisServerOptions {
                    cluster: true,
                    cluster_node_timeout: node_timeout,
                    ..RedisServerOptions::default()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cluster = RedisCluster { servers };
        cluster.create(&redis_cli)?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>` of every node (masters and replicas).
    pub fn nodes(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port()))
            .collect()
    }

    /// The nodes' servers, for fault tests.
    pub fn servers_mut(&mut self) -> &mut [RedisServer] {
        &mut self.servers
    }

    fn create(&self, redis_cli: &Path) -> Result<()> {
        let output = Command::new(redis_cli)
            .arg("--cluster")
            .arg("create")
            .args(
                self.servers
                    .iter()
                    .map(|s| format!("127.0.0.1:{}", s.port())),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(Error::io(format!(
                "running {} --cluster create",
                redis_cli.display()
            )))?;
        let said = || {
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        if !output.status.success() {
            return Err(Error::Startup {
                server: SERVER,
                detail: format!("redis-cli --cluster create failed ({})", output.status),
                log: said(),
            });
        }
        let ports: Vec<u16> = self.servers.iter().map(RedisServer::port).collect();
        let ok = process::wait_until(Duration::from_secs(20), || {
            ports.iter().all(|&port| node_ready(port))
        });
        if !ok {
            return Err(Error::Startup {
                server: SERVER,
                detail: "not every node reached cluster_state:ok, saw 3 masters and 3 replicas \
                         and (replicas) a live link to its master within 20 s"
                    .into(),
                log: said(),
            });
        }
        Ok(())
    }
}

/// Whether the node on `port` says `cluster_state:ok`, sees every node connected with three
/// of them replicas (the roles spread by gossip after `cluster_state:ok`), and, if it is a
/// replica, has its link to its master up.
fn node_ready(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    let mut ask = |args: &[&str]| {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query::<String>(&mut conn)
    };
    let (Ok(info), Ok(nodes), Ok(replication)) = (
        ask(&["CLUSTER", "INFO"]),
        ask(&["CLUSTER", "NODES"]),
        ask(&["INFO", "replication"]),
    ) else {
        return false;
    };
    let lines: Vec<&str> = nodes.lines().collect();
    info.contains("cluster_state:ok")
        && lines.len() == MASTERS * 2
        && lines.iter().all(|l| l.contains(" connected"))
        && lines.iter().filter(|l| l.contains("slave")).count() == MASTERS
        && (!replication.contains("role:slave") || replication.contains("master_link_status:up"))
}

fn find_redis_cli() -> Result<PathBuf> {
    let server = crate::redis::find_binary(None)?;
    let candidates = server
        .parent()
        .map(|dir| dir.join("redis-cli"))
        .into_iter()
        .chain(
            process::path_dirs()
                .into_iter()
                .map(|d| d.join("redis-cli")),
        )
        .chain([PathBuf::from("/usr/bin/redis-cli")]);
    process::first_existing(candidates).ok_or(Error::BinaryMissing {
        server: "redis-cli (Redis Cluster)",
        looked: "beside redis-server, PATH, /usr/bin".into(),
        install: "apt-get update && apt-get install -y redis-tools",
        env_var: REDIS_CLUSTER_NODES_VAR,
    })
}

/// The Redis Cluster shared by this test binary ([`crate::redis_cluster`]): its seed nodes
/// and a key prefix unique to the test (a cluster has one database).
#[derive(Debug, Clone)]
pub struct TestRedisCluster {
    nodes: Vec<String>,
    key_prefix: String,
}

impl TestRedisCluster {
    /// Seed node URLs (every node of a started cluster).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// A prefix unique to this test (`c<pid>-<n>:`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

enum SharedCluster {
    Owned(RedisCluster),
    External(Vec<String>),
}

static SHARED: OnceLock<std::result::Result<SharedCluster, Arc<Error>>> = OnceLock::new();
static NEXT_PREFIX: AtomicU64 = AtomicU64::new(1);

/// The shared cluster, started by the first caller (blocking).
pub(crate) fn shared() -> Result<TestRedisCluster> {
    let shared = SHARED.get_or_init(|| match std::env::var(REDIS_CLUSTER_NODES_VAR) {
        Ok(nodes) if !nodes.trim().is_empty() => Ok(SharedCluster::External(
            nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        )),
        _ => RedisCluster::start()
            .map(SharedCluster::Owned)
            .map_err(Arc::new),
    });
    let nodes = match shared {
        Ok(SharedCluster::Owned(cluster)) => cluster.nodes(),
        Ok(SharedCluster::External(nodes)) => nodes.clone(),
        Err(e) => return Err(Error::Shared(Arc::clone(e))),
    };
    Ok(TestRedisCluster {
        nodes,
        key_prefix: format!(
            "c{}-{}:",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        ),
    })
}
