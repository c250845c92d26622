//! Throwaway Redis servers and per-test databases.

use crate::process;
use crate::{CertificateFiles, Error, Result};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SERVER: &str = "Redis";
const MIN_MAJOR: u32 = 7;
/// Points the tests at an existing server instead of starting one.
pub const REDIS_URL_VAR: &str = "NEO_TEST_REDIS_URL";
/// Overrides which `redis-server` binary is used.
pub const REDIS_BIN_VAR: &str = "NEO_REDIS_SERVER_BIN";
/// How many logical databases a started server has (one per concurrent test).
const DATABASES: u32 = 1024;

/// How to start a [`RedisServer`].
#[derive(Debug, Clone)]
pub struct RedisServerOptions {
    /// The `redis-server` binary; found automatically when `None` (`$NEO_REDIS_SERVER_BIN`,
    /// `PATH`, `/usr/bin`).
    pub binary: Option<PathBuf>,
    /// How long to wait for the server to answer `PING`.
    pub startup_timeout: Duration,
    /// TLS only: no plaintext port (`--port 0`), a `--tls-port`, and client certificates
    /// required (`--tls-auth-clients yes`); the certificates are made at start
    /// ([`CertificateFiles`], see [`RedisServer::certificates`]).
    pub tls: bool,
    /// A Redis Cluster node (`--cluster-enabled yes`, its `nodes.conf` in the server's
    /// directory, so a restarted node rejoins as itself), on a port whose cluster bus port
    /// (+10000) is free too. [`crate::RedisCluster`] starts six and joins them.
    pub cluster: bool,
    /// A cluster node's `cluster-node-timeout`: how long a master may be silent before its
    /// replica is promoted (about this plus an election). 2 s by default; failover tests may
    /// shorten it.
    pub cluster_node_timeout: Duration,
}

impl Default for RedisServerOptions {
    fn default() -> Self {
        RedisServerOptions {
            binary: None,
            startup_timeout: Duration::from_secs(20),
            tls: false,
            cluster: false,
            cluster_node_timeout: Duration::from_secs(2),
        }
    }
}

/// A Redis server on a free loopback port with persistence off, owned by the test that
/// started it, stopped when dropped (or by a watchdog if the process dies first).
///
/// Fault tests use [`stop`](RedisServer::stop) (`SIGTERM`), [`kill`](RedisServer::kill)
/// (`SIGKILL`) and [`restart`](RedisServer::restart) (same port; the data is gone, as after
/// a real restart without persistence).
///
/// # Example
/// ```no_run
/// let mut redis = neo_testkit::RedisServer::start()?;
/// redis.kill()?;
/// redis.restart()?;
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    options: RedisServerOptions,
    certificates: Option<CertificateFiles>,
    /// Declared last so it is dropped after `Drop::drop` has killed the server.
    watchdog: Option<process::Watchdog>,
}

impl RedisServer {
    /// Starts a server with [`RedisServerOptions::default`].
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] with the install command when Redis 7+ is not installed;
    /// [`Error::Startup`] with the server log when it does not come up.
    pub fn start() -> Result<Self> {
        Self::start_with(RedisServerOptions::default())
    }

    /// Starts a server with the given options.
    ///
    /// # Errors
    /// As [`RedisServer::start`].
    pub fn start_with(options: RedisServerOptions) -> Result<Self> {
        let binary = find_binary(options.binary.as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("neo-redis-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for Redis"))?;
        let mut server = RedisServer {
            binary,
            dir,
            port: 0,
            child: None,
            options,
            certificates: None,
            watchdog: None,
        };
        if server.options.tls {
            server.certificates = Some(CertificateFiles::generate(server.dir.path())?);
        }
        server.watchdog = Some(process::Watchdog::spawn(&server.cleanup_script())?);
        // A port found free can be taken before the server binds it; try a few.
        process::retry(3, Duration::ZERO, || {
            server.port = if server.options.cluster {
                process::free_cluster_port()?
            } else {
                process::free_port()?
            };
            server.spawn()
        })?;
        Ok(server)
    }

    /// The connection URL (database 0): `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.certificates.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The certificates of a TLS server ([`RedisServerOptions::tls`]): trust its CA and
    /// present its client certificate.
    pub fn certificates(&self) -> Option<&CertificateFiles> {
        self.certificates.as_ref()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server with `SIGTERM` and waits for it to exit.
    ///
    /// # Errors
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn stop(&mut self) -> Result<()> {
        process::stop_child(&mut self.child, "-TERM", "redis-server")
    }

    /// Kills the server with `SIGKILL`, like a crash.
    ///
    /// # Errors
    /// [`Error::Io`] when the process cannot be killed.
    pub fn kill(&mut self) -> Result<()> {
        process::kill_child(&mut self.child, "redis-server")
    }

    /// Freezes the server with `SIGSTOP`: it keeps its connections but answers nothing (a
    /// hung node) until [`resume`](RedisServer::resume).
    ///
    /// # Errors
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn pause(&mut self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Lets a [`pause`](RedisServer::pause)d server run again (`SIGCONT`).
    ///
    /// # Errors
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn resume(&mut self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&mut self, signal: &str) -> Result<()> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(Error::io(format!("sending {signal} to redis-server")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Io {
                context: format!("sending {signal} to redis-server"),
                source: std::io::Error::other(format!("kill exited with {status}")),
            })
        }
    }

    /// Starts the server again on the same port (empty, persistence is off); stops it first
    /// if it runs.
    ///
    /// # Errors
    /// [`Error::Startup`] when it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        // The old socket may linger for a moment; retry binding the same port.
        process::retry(20, Duration::from_millis(100), || self.spawn())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(Error::io("opening the Redis log"))?;
        let log_err = log
            .try_clone()
            .map_err(Error::io("opening the Redis log"))?;
        let mut command = Command::new(&self.binary);
        let port = self.port.to_string();
        match &self.certificates {
            None => command.args(["--port", &port]),
            Some(certs) => command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(certs.server_cert_file())
                .arg("--tls-key-file")
                .arg(certs.server_key_file())
                .arg("--tls-ca-cert-file")
                .arg(certs.ca_file())
                .args(["--tls-auth-clients", "yes"]),
        };
        if self.options.cluster {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
                .arg(self.options.cluster_node_timeout.as_millis().to_string())
                // A replica's first sync starts at once instead of after the 5 s default.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        let mut child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--databases", &DATABASES.to_string(), "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        std::fs::write(self.dir.path().join("redis.pid"), child.id().to_string())
            .map_err(Error::io("writing the Redis pid file"))?;
        let port = self.port;
        let tls = self.certificates.is_some();
        let mut exited = false;
        let ready = process::wait_until(self.options.startup_timeout, || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            // A TLS port is ready when it accepts connections (Redis listens once loaded).
            exited
                || if tls {
                    process::port_open(port)
                } else {
                    ping(port)
                }
        });
        if exited || !ready {
            let _ = child.kill();
            let _ = child.wait();
            let detail = if exited {
                "redis-server exited"
            } else {
                "no answer to PING in time"
            };
            return Err(self.startup_error(detail));
        }
        self.child = Some(child);
        Ok(())
    }

    fn startup_error(&self, detail: &str) -> Error {
        Error::Startup {
            server: SERVER,
            detail: format!("{detail} (port {})", self.port),
            log: process::log_tail(&self.log_path(), 20),
        }
    }

    fn cleanup_script(&self) -> String {
        let dir = process::shell_quote(self.dir.path());
        format!("kill -9 \"$(cat {dir}/redis.pid 2>/dev/null)\" >/dev/null 2>&1; rm -rf {dir}")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Whether a Redis server on `port` answers `PING`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0_u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

pub(crate) fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let missing = |looked: String| Error::BinaryMissing {
        server: "Redis 7+",
        looked,
        install: "apt-get update && apt-get install -y redis-server",
        env_var: REDIS_URL_VAR,
    };
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => std::env::var_os(REDIS_BIN_VAR)
            .map(PathBuf::from)
            .into_iter()
            .chain(
                process::path_dirs()
                    .into_iter()
                    .map(|d| d.join("redis-server")),
            )
            .chain([
                PathBuf::from("/usr/bin/redis-server"),
                PathBuf::from("/usr/local/bin/redis-server"),
            ])
            .collect(),
    };
    let Some(binary) = process::first_existing(candidates) else {
        let looked = match explicit {
            Some(path) => path.display().to_string(),
            None => format!("${REDIS_BIN_VAR}, PATH, /usr/bin, /usr/local/bin"),
        };
        return Err(missing(looked));
    };
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(Error::io(format!("running {} --version", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let major = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < MIN_MAJOR {
        return Err(missing(format!("{} is {}", binary.display(), text.trim())));
    }
    Ok(binary)
}

/// A logical Redis database of its own for one test, on the shared server, flushed before
/// the test gets it.
///
/// `key_prefix` is unique per test too, for servers (such as one given through
/// `NEO_TEST_REDIS_URL`) that have a single database. Pub/sub channels are server-wide:
/// tests that use them should put `key_prefix` in channel names.
#[derive(Clone)]
pub struct TestRedis {
    url: String,
    database: u32,
    key_prefix: String,
}

impl TestRedis {
    /// The connection URL, selecting this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The logical database number.
    pub fn database(&self) -> u32 {
        self.database
    }

    /// A prefix unique to this test (`t<n>:`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// A multiplexed connection to this test's database.
    ///
    /// # Errors
    /// [`Error::Client`] when connecting fails.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        connect(&self.url).await
    }
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &crate::redact_url(&self.url))
            .field("database", &self.database)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

async fn connect(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let context = || format!("connecting to {}", crate::redact_url(url));
    let client = redis::Client::open(url).map_err(Error::client(context()))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(Error::client(context()))
}

enum SharedRedis {
    Owned(RedisServer),
    External(String),
}

static SHARED: OnceLock<std::result::Result<SharedRedis, Arc<Error>>> = OnceLock::new();

pub(crate) fn shared_url() -> Result<String> {
    let shared = SHARED.get_or_init(|| match std::env::var(REDIS_URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(SharedRedis::External(url)),
        _ => RedisServer::start()
            .map(SharedRedis::Owned)
            .map_err(Arc::new),
    });
    match shared {
        Ok(SharedRedis::Owned(server)) => Ok(server.url()),
        Ok(SharedRedis::External(url)) => Ok(url.clone()),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}

/// Hands out a flushed logical database on the shared server (see [`crate::redis`]).
pub(crate) async fn create_database() -> Result<TestRedis> {
    let base = tokio::task::spawn_blocking(shared_url)
        .await
        .map_err(Error::client("starting the shared Redis"))??;
    let mut conn = connect(&base).await?;
    // A counter on the server itself, so separate test processes (nextest) get distinct databases.
    let n: u64 = redis::cmd("INCR")
        .arg("neo-testkit:next-database")
        .query_async(&mut conn)
        .await
        .map_err(Error::client("allocating a test database (INCR)"))?;
    let databases = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async::<Vec<String>>(&mut conn)
        .await
        .ok()
        .and_then(|reply| reply.get(1)?.parse::<u64>().ok())
        .unwrap_or(1);
    let mut url = url::Url::parse(&base).map_err(Error::client("parsing the Redis URL"))?;
    let database = if databases > 1 {
        // Database 0 holds the counter; tests get 1..databases.
        u32::try_from(1 + (n - 1) % (databases - 1)).unwrap_or(1)
    } else {
        url.path().trim_start_matches('/').parse().unwrap_or(0)
    };
    url.set_path(&format!("/{database}"));
    let test = TestRedis {
        url: url.into(),
        database,
        key_prefix: format!("t{n}:"),
    };
    if databases > 1 {
        let mut own = test.connection().await?;
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut own)
            .await
            .map_err(Error::client("flushing the test database"))?;
    }
    Ok(test)
}
