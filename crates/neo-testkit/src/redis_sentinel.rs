//! A throwaway Redis Sentinel group: one master, one replica and three `redis-sentinel`
//! processes, and the one shared by a test binary.

use crate::process;
use crate::redis::RedisServer;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SERVER: &str = "Redis Sentinel";
/// Points the tests at existing sentinels (URLs, comma-separated) instead of starting a group;
/// the master's name is in [`REDIS_SENTINEL_MASTER_VAR`].
pub const REDIS_SENTINEL_NODES_VAR: &str = "NEO_TEST_REDIS_SENTINEL_NODES";
/// The name the sentinels of [`REDIS_SENTINEL_NODES_VAR`] monitor the master under.
pub const REDIS_SENTINEL_MASTER_VAR: &str = "NEO_TEST_REDIS_SENTINEL_MASTER";
/// The name a started group's sentinels monitor the master under.
pub const SENTINEL_MASTER_NAME: &str = "neo-master";
const SENTINELS: usize = 3;
/// A master is judged down after this long without an answer (fast failovers for tests).
const DOWN_AFTER_MS: u64 = 1000;

/// One master, one replica and three sentinels (quorum 2) on free loopback ports, the
/// sentinels judging the master down after 1 s of silence so a failover takes a few
/// seconds. Fault tests [`kill_master`](RedisSentinelGroup::kill_master) and wait for the
/// promotion with [`wait_for_new_master`](RedisSentinelGroup::wait_for_new_master).
/// Everything is stopped when dropped (or by watchdogs if the process dies first).
///
/// # Example
/// ```no_run
/// let mut group = neo_testkit::RedisSentinelGroup::start()?;
/// let old = group.master_port()?;
/// group.kill_master()?;
/// let new = group.wait_for_new_master(old, std::time::Duration::from_secs(15))?;
/// assert_ne!(old, new);
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisSentinelGroup {
    /// The first master, then its replica.
    servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl RedisSentinelGroup {
    /// Starts the master, its replica and three sentinels, and waits until the replica is in
    /// sync and every sentinel sees the replica and the other two sentinels.
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] when `redis-server` 7+ or `redis-sentinel` is not installed;
    /// [`Error::Startup`] with the sentinels' logs when the group does not form.
    pub fn start() -> Result<Self> {
        let sentinel_binary = find_sentinel_binary()?;
        let master = RedisServer::start()?;
        let replica = RedisServer::start()?;
        let ask = |port: u16, args: &[&str]| query(port, args);
        // A replica's first sync starts at once instead of after the 5 s default.
        ask(
            master.port(),
            &["CONFIG", "SET", "repl-diskless-sync-delay", "0"],
        )?;
        ask(
            replica.port(),
            &["REPLICAOF", "127.0.0.1", &master.port().to_string()],
        )?;
        let mut group = RedisSentinelGroup {
            servers: vec![master, replica],
            sentinels: Vec::new(),
        };
        let master_port = group.servers[0].port();
        for _ in 0..SENTINELS {
            let sentinel = process::retry(3, Duration::ZERO, || {
                SentinelProcess::start(&sentinel_binary, master_port)
            })?;
            group.sentinels.push(sentinel);
        }
        let replica_port = group.servers[1].port();
        let ports: Vec<u16> = group.sentinels.iter().map(|s| s.port).collect();
        let ready = process::wait_until(Duration::from_secs(30), || {
            let synced = query(replica_port, &["INFO", "replication"])
                .is_ok_and(|info| info.contains("master_link_status:up"));
            synced && ports.iter().all(|&port| sentinel_ready(port))
        });
        if !ready {
            return Err(Error::Startup {
                server: SERVER,
                detail: "the replica did not sync, or not every sentinel saw the replica and \
                         the two other sentinels, within 30 s"
                    .into(),
                log: group
                    .sentinels
                    .iter()
                    .map(|s| process::log_tail(&s.log_path(), 10))
                    .collect::<Vec<_>>()
                    .join("\n---\n"),
            });
        }
        Ok(group)
    }

    /// `redis://127.0.0.1:<port>` of every sentinel.
    pub fn sentinels(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        SENTINEL_MASTER_NAME
    }

    /// The ports of the two servers (the first master and its replica, whatever their roles
    /// are now).
    pub fn server_ports(&self) -> Vec<u16> {
        self.servers.iter().map(RedisServer::port).collect()
    }

    /// The port of the master the sentinels name now.
    ///
    /// # Errors
    /// [`Error::Client`] when no sentinel answers.
    pub fn master_port(&self) -> Result<u16> {
        let mut last = None;
        for sentinel in &self.sentinels {
            match master_addr(sentinel.port) {
                Ok(port) => return Ok(port),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Client {
            context: "asking the sentinels for the master".into(),
            detail: "the group has no sentinels".into(),
        }))
    }

    /// Kills the current master with `SIGKILL`, like a crash; the sentinels promote the
    /// replica about a second later. Returns the killed master's port.
    ///
    /// # Errors
    /// [`Error::Client`] when no sentinel names a master of this group.
    pub fn kill_master(&mut self) -> Result<u16> {
        let port = self.master_port()?;
        self.server_mut(port)?.kill()?;
        Ok(port)
    }

    /// The server (master or replica) listening on `port`, for fault tests.
    ///
    /// # Errors
    /// [`Error::Client`] when no server of this group listens there.
    pub fn server_mut(&mut self, port: u16) -> Result<&mut RedisServer> {
        self.servers
            .iter_mut()
            .find(|s| s.port() == port)
            .ok_or_else(|| Error::Client {
                context: format!("finding the server on port {port}"),
                detail: "no server of this sentinel group listens there".into(),
            })
    }

    /// Waits until the sentinels name a master other than `old_port` and it answers as a
    /// master; returns its port.
    ///
    /// # Errors
    /// [`Error::Startup`] with the sentinels' logs when no failover happened within `timeout`.
    pub fn wait_for_new_master(&self, old_port: u16, timeout: Duration) -> Result<u16> {
        let mut promoted = None;
        let done = process::wait_until(timeout, || {
            promoted = self.master_port().ok().filter(|&port| {
                port != old_port
                    && query(port, &["ROLE"]).is_ok()
                    && query(port, &["INFO", "replication"])
                        .is_ok_and(|info| info.contains("role:master"))
            });
            promoted.is_some()
        });
        match promoted {
            Some(port) if done => Ok(port),
            _ => Err(Error::Startup {
                server: SERVER,
                detail: format!("no failover away from port {old_port} within {timeout:?}"),
                log: self
                    .sentinels
                    .iter()
                    .map(|s| process::log_tail(&s.log_path(), 10))
                    .collect::<Vec<_>>()
                    .join("\n---\n"),
            }),
        }
    }
}

/// Whether the sentinel on `port` knows the master with its replica and both other
/// sentinels.
fn sentinel_ready(port: u16) -> bool {
    let Ok(fields) = sentinel_master(port) else {
        return false;
    };
    let field = |name: &str| {
        fields
            .windows(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    field("num-slaves").as_deref() == Some("1")
        && field("num-other-sentinels").as_deref() == Some("2")
        && field("flags").as_deref() == Some("master")
}

fn sentinel_master(port: u16) -> Result<Vec<String>> {
    let mut conn = connection(port)?;
    redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(SENTINEL_MASTER_NAME)
        .query(&mut conn)
        .map_err(Error::client(format!("asking the sentinel on port {port}")))
}

fn master_addr(port: u16) -> Result<u16> {
    let mut conn = connection(port)?;
    let (_host, master_port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(SENTINEL_MASTER_NAME)
        .query(&mut conn)
        .map_err(Error::client(format!("asking the sentinel on port {port}")))?;
    Ok(master_port)
}

fn connection(port: u16) -> Result<redis::Connection> {
    let context = || format!("connecting to 127.0.0.1:{port}");
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(Error::client(context()))?
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(Error::client(context()))
}

/// One command to the server on `port`, its answer as text.
fn query(port: u16, args: &[&str]) -> Result<String> {
    let mut conn = connection(port)?;
    let value: redis::Value = redis::cmd(args[0])
        .arg(&args[1..])
        .query(&mut conn)
        .map_err(Error::client(format!("{} on port {port}", args.join(" "))))?;
    Ok(match value {
        redis::Value::Okay => "OK".to_owned(),
        other => redis::from_redis_value::<String>(other).unwrap_or_default(),
    })
}

/// One `redis-sentinel` with its config file in a temp dir.
#[derive(Debug)]
struct SentinelProcess {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    /// Declared last so it is dropped after `Drop::drop` has killed the sentinel.
    _watchdog: process::Watchdog,
}

impl SentinelProcess {
    fn start(binary: &Path, master_port: u16) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("neo-sentinel-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for a sentinel"))?;
        let port = process::free_port()?;
        let config = dir.path().join("sentinel.conf");
        let name = SENTINEL_MASTER_NAME;
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display()
            ),
        )
        .map_err(Error::io("writing sentinel.conf"))?;
        let cleanup = format!(
            "kill -9 \"$(cat {dir}/sentinel.pid 2>/dev/null)\" >/dev/null 2>&1; rm -rf {dir}",
            dir = process::shell_quote(dir.path())
        );
        let watchdog = process::Watchdog::spawn(&cleanup)?;
        let log = std::fs::File::create(dir.path().join("sentinel.log"))
            .map_err(Error::io("opening the sentinel log"))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("opening the sentinel log"))?;
        let mut child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(Error::io(format!("starting {}", binary.display())))?;
        std::fs::write(dir.path().join("sentinel.pid"), child.id().to_string())
            .map_err(Error::io("writing the sentinel pid file"))?;
        let mut exited = false;
        let ready = process::wait_until(Duration::from_secs(10), || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited || query(port, &["PING"]).is_ok()
        });
        let sentinel = SentinelProcess {
            dir,
            port,
            child,
            _watchdog: watchdog,
        };
        if exited || !ready {
            return Err(Error::Startup {
                server: SERVER,
                detail: format!("redis-sentinel on port {port} did not answer PING"),
                log: process::log_tail(&sentinel.log_path(), 20),
            });
        }
        Ok(sentinel)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_sentinel_binary() -> Result<PathBuf> {
    let server = crate::redis::find_binary(None)?;
    let candidates = server
        .parent()
        .map(|dir| dir.join("redis-sentinel"))
        .into_iter()
        .chain(
            process::path_dirs()
                .into_iter()
                .map(|d| d.join("redis-sentinel")),
        )
        .chain([PathBuf::from("/usr/bin/redis-sentinel")]);
    process::first_existing(candidates).ok_or(Error::BinaryMissing {
        server: "redis-sentinel (Redis Sentinel)",
        looked: "beside redis-server, PATH, /usr/bin".into(),
        install: "apt-get update && apt-get install -y redis-sentinel",
        env_var: REDIS_SENTINEL_NODES_VAR,
    })
}

/// The Sentinel group shared by this test binary ([`crate::redis_sentinel`]): its sentinels,
/// the master's name and a key prefix unique to the test (the master has one database in
/// use). Tests that kill servers start their own [`RedisSentinelGroup`].
#[derive(Debug, Clone)]
pub struct TestRedisSentinel {
    sentinels: Vec<String>,
    master_name: String,
    key_prefix: String,
}

impl TestRedisSentinel {
    /// Sentinel URLs.
    pub fn sentinels(&self) -> &[String] {
        &self.sentinels
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// A prefix unique to this test (`s<pid>-<n>:`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }
}

enum SharedGroup {
    Owned(RedisSentinelGroup),
    External {
        sentinels: Vec<String>,
        master_name: String,
    },
}

static SHARED: OnceLock<std::result::Result<SharedGroup, Arc<Error>>> = OnceLock::new();
static NEXT_PREFIX: AtomicU64 = AtomicU64::new(1);

/// The shared group, started by the first caller (blocking), or the one the environment
/// names.
pub(crate) fn shared() -> Result<TestRedisSentinel> {
    let shared = SHARED.get_or_init(|| match std::env::var(REDIS_SENTINEL_NODES_VAR) {
        Ok(nodes) if !nodes.trim().is_empty() => Ok(SharedGroup::External {
            sentinels: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
            master_name: std::env::var(REDIS_SENTINEL_MASTER_VAR)
                .unwrap_or_else(|_| SENTINEL_MASTER_NAME.to_owned()),
        }),
        _ => RedisSentinelGroup::start()
            .map(SharedGroup::Owned)
            .map_err(Arc::new),
    });
    let (sentinels, master_name) = match shared {
        Ok(SharedGroup::Owned(group)) => (group.sentinels(), group.master_name().to_owned()),
        Ok(SharedGroup::External {
            sentinels,
            master_name,
        }) => (sentinels.clone(), master_name.clone()),
        Err(e) => return Err(Error::Shared(Arc::clone(e))),
    };
    Ok(TestRedisSentinel {
        sentinels,
        master_name,
        key_prefix: format!(
            "s{}-{}:",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        ),
    })
}
