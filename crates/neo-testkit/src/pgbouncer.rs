//! PgBouncer in transaction mode in front of a PostgreSQL server, and per-test databases
//! reached through it.

use crate::process::{self, RunAs};
use crate::{Error, Result, TestDatabase};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SERVER: &str = "PgBouncer";
/// Points the tests at a PgBouncer you run (in transaction mode, in front of the server
/// `NEO_TEST_DATABASE_URL` names) instead of starting one: its URL, any database name.
pub const PGBOUNCER_URL_VAR: &str = "NEO_TEST_PGBOUNCER_URL";
/// Overrides where the `pgbouncer` binary is looked for.
pub const PGBOUNCER_BIN_VAR: &str = "NEO_PGBOUNCER_BIN";

/// How to start a [`PgBouncer`].
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// The `pgbouncer` binary; found automatically when `None` (`$NEO_PGBOUNCER_BIN`,
    /// `/usr/sbin/pgbouncer`, then `PATH`).
    pub binary: Option<PathBuf>,
    /// `pool_mode`: `"transaction"` (the default; what production poolers run) or
    /// `"session"`.
    pub pool_mode: String,
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// How long to wait for PgBouncer to accept connections.
    pub startup_timeout: Duration,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions {
            binary: None,
            pool_mode: "transaction".to_owned(),
            pool_size: 20,
            startup_timeout: Duration::from_secs(20),
        }
    }
}

/// A PgBouncer on a free loopback port, in a temporary directory, in front of one PostgreSQL
/// server (every database of it: `* = host=… port=…`), owned by the test that started it.
///
/// Clients are trusted (no password, the user must be the backend URL's); PgBouncer logs in
/// to the server as that user, with the URL's password if it has one. It runs as the
/// `postgres` (or `nobody`) account when the test runs as root, and is killed when dropped
/// or, if the process dies first, by a watchdog. Fault tests use [`stop`](PgBouncer::stop),
/// [`kill`](PgBouncer::kill) and [`restart`](PgBouncer::restart) (same port).
///
/// # Example
/// ```no_run
/// let server = neo_testkit::PgServer::start()?;
/// let mut bouncer = neo_testkit::PgBouncer::start(&server.url())?;
/// let url = bouncer.url_for("postgres");
/// bouncer.kill()?;
/// bouncer.restart()?;
/// # let _ = url;
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct PgBouncer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    user_name: String,
    run_as: Option<RunAs>,
    child: Option<Child>,
    options: PgBouncerOptions,
    /// Declared last so it is dropped after `Drop::drop` has killed PgBouncer.
    watchdog: Option<process::Watchdog>,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of the server of `backend_url`
    /// (`postgres://user[:password]@host:port/any`).
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] when `pgbouncer` is not installed; [`Error::Startup`] with
    /// its log when it does not come up.
    pub fn start(backend_url: &str) -> Result<Self> {
        Self::start_with(backend_url, PgBouncerOptions::default())
    }

    /// Starts PgBouncer with the given options.
    ///
    /// # Errors
    /// As [`PgBouncer::start`].
    pub fn start_with(backend_url: &str, options: PgBouncerOptions) -> Result<Self> {
        let binary = find_binary(options.binary.as_deref())?;
        let backend = url::Url::parse(backend_url)
            .map_err(Error::client("parsing the PostgreSQL URL PgBouncer fronts"))?;
        let run_as = process::unprivileged_user()?;
        let dir = tempfile::Builder::new()
            .prefix("neo-pgbouncer-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for PgBouncer"))?;
        let user_name = match backend.username() {
            "" => "postgres".to_owned(),
            name => name.to_owned(),
        };
        let mut bouncer = PgBouncer {
            binary,
            dir,
            port: 0,
            user_name,
            run_as,
            child: None,
            options,
            watchdog: None,
        };
        bouncer.write_auth_file(&backend)?;
        if let Some(user) = &bouncer.run_as {
            process::chown_tree(bouncer.dir.path(), user)?;
        }
        bouncer.watchdog = Some(process::Watchdog::spawn(&bouncer.cleanup_script())?);
        process::retry(3, Duration::ZERO, || {
            bouncer.port = process::free_port()?;
            bouncer.write_config(&backend)?;
            bouncer.spawn()
        })?;
        Ok(bouncer)
    }

    /// The URL of `database` through PgBouncer (the backend URL's user, no password).
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            self.user_name, self.port
        )
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the PgBouncer process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops PgBouncer with `SIGINT` (it closes its connections) and waits for it to exit.
    ///
    /// # Errors
    /// [`Error::Io`] when the signal cannot be sent.
    pub fn stop(&mut self) -> Result<()> {
        process::stop_child(&mut self.child, "-INT", "pgbouncer")
    }

    /// Kills PgBouncer with `SIGKILL`, like a crash: every client connection breaks.
    ///
    /// # Errors
    /// [`Error::Io`] when the process cannot be killed.
    pub fn kill(&mut self) -> Result<()> {
        process::kill_child(&mut self.child, "pgbouncer")
    }

    /// Starts PgBouncer again on the same port; stops it first if it runs.
    ///
    /// # Errors
    /// [`Error::Startup`] when it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        process::retry(20, Duration::from_millis(100), || self.spawn())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.log")
    }

    fn write_auth_file(&self, backend: &url::Url) -> Result<()> {
        // Plain-text passwords let PgBouncer log in to the server with md5 or SCRAM.
        let password = backend.password().map(decode).unwrap_or_default();
        let line = format!("{} {}\n", quote(&decode(&self.user_name)), quote(&password));
        let path = self.dir.path().join("userlist.txt");
        std::fs::write(&path, line).map_err(Error::io(format!("writing {}", path.display())))
    }

    fn write_config(&self, backend: &url::Url) -> Result<()> {
        let host = backend.host_str().unwrap_or("127.0.0.1");
        let port = backend.port().unwrap_or(5432);
        let dir = self.dir.path().display();
        let password = backend
            .password()
            .map(|p| format!(" password={}", decode(p)))
            .unwrap_or_default();
        let config = format!(
            "[databases]\n* = host={host} port={port} user={user}{password}\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = {mode}\n\
             default_pool_size = {pool}\nmax_client_conn = 2000\nmax_db_connections = 0\n\
             server_idle_timeout = 10\nautodb_idle_timeout = 30\nserver_login_retry = 1\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n\
             admin_users = {user}\nlog_connections = 0\nlog_disconnections = 0\n",
            user = decode(&self.user_name),
            listen = self.port,
            mode = self.options.pool_mode,
            pool = self.options.pool_size,
        );
        let path = self.dir.path().join("pgbouncer.ini");
        std::fs::write(&path, config).map_err(Error::io(format!("writing {}", path.display())))?;
        if let Some(user) = &self.run_as {
            process::chown_tree(&path, user)?;
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(&self.binary);
        if let Some(user) = &self.run_as {
            // PgBouncer refuses to run as root; it switches itself (so its pid is ours to kill).
            command.arg("-u").arg(&user.name);
        }
        let mut child = command
            .arg(self.dir.path().join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io(format!("starting {}", self.binary.display())))?;
        let port = self.port;
        let mut exited = false;
        let ready = process::wait_until(self.options.startup_timeout, || {
            exited = matches!(child.try_wait(), Ok(Some(_)));
            exited || process::port_open(port)
        });
        if exited || !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Startup {
                server: SERVER,
                detail: format!(
                    "{} (port {port})",
                    if exited {
                        "pgbouncer exited"
                    } else {
                        "it does not accept connections in time"
                    }
                ),
                log: process::log_tail(&self.log_path(), 20),
            });
        }
        self.child = Some(child);
        Ok(())
    }

    fn cleanup_script(&self) -> String {
        let dir = process::shell_quote(self.dir.path());
        format!("kill -9 \"$(cat {dir}/pgbouncer.pid 2>/dev/null)\" >/dev/null 2>&1; rm -rf {dir}")
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A double-quoted auth_file field (`"` doubled).
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn find_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = explicit.map(Path::to_path_buf).into_iter().collect();
    if explicit.is_none() {
        candidates.extend(std::env::var_os(PGBOUNCER_BIN_VAR).map(PathBuf::from));
        candidates.push("/usr/sbin/pgbouncer".into());
        candidates.extend(
            process::path_dirs()
                .into_iter()
                .map(|d| d.join("pgbouncer")),
        );
    }
    process::first_existing(candidates).ok_or(Error::BinaryMissing {
        server: "PgBouncer",
        looked: format!("${PGBOUNCER_BIN_VAR}, /usr/sbin and PATH"),
        install: "apt-get update && apt-get install -y pgbouncer",
        env_var: PGBOUNCER_URL_VAR,
    })
}

enum SharedBouncer {
    Owned(Box<PgBouncer>),
    External(String),
}

static SHARED: OnceLock<std::result::Result<SharedBouncer, Arc<Error>>> = OnceLock::new();

/// The URL (any database) of the PgBouncer shared by every test of this process, in front
/// of the shared PostgreSQL; started on first use (blocking).
pub(crate) fn shared_url() -> Result<String> {
    let shared = SHARED.get_or_init(|| match std::env::var(PGBOUNCER_URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(SharedBouncer::External(url)),
        _ => crate::postgres::shared_url()
            .and_then(|backend| PgBouncer::start(&backend))
            .map(|bouncer| SharedBouncer::Owned(Box::new(bouncer)))
            .map_err(Arc::new),
    });
    match shared {
        Ok(SharedBouncer::Owned(bouncer)) => Ok(bouncer.url_for("postgres")),
        Ok(SharedBouncer::External(url)) => Ok(url.clone()),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}

/// A fresh database on the shared server whose [`TestDatabase::url`] goes through the
/// shared PgBouncer.
pub(crate) async fn create_database() -> Result<TestDatabase> {
    let bouncer = tokio::task::spawn_blocking(shared_url)
        .await
        .map_err(Error::client("starting the shared PgBouncer"))??;
    let db = crate::postgres::create_database().await?;
    let mut url = url::Url::parse(&bouncer).map_err(Error::client("parsing the PgBouncer URL"))?;
    url.set_path(db.name());
    Ok(db.routed_through(url.into()))
}

/// How a test reaches PostgreSQL: the contract suites run once per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgRoute {
    /// A direct connection to the server.
    Direct,
    /// Through PgBouncer in transaction mode: no session state survives a transaction.
    PgBouncer,
}

impl PgRoute {
    /// Every route, for tests that loop over them.
    pub const ALL: [PgRoute; 2] = [PgRoute::Direct, PgRoute::PgBouncer];

    /// A fresh database reached this way.
    ///
    /// # Panics
    /// When no server can be had; the message says how to get one.
    pub async fn database(self) -> TestDatabase {
        let result = match self {
            PgRoute::Direct => crate::try_postgres().await,
            PgRoute::PgBouncer => create_database().await,
        };
        result
            .unwrap_or_else(|e| panic!("neo-testkit: no PostgreSQL ({self:?}) for this test: {e}"))
    }

    /// Whether this route goes through a transaction pooler.
    pub fn is_pooled(self) -> bool {
        self == PgRoute::PgBouncer
    }
}

impl std::fmt::Display for PgRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PgRoute::Direct => "direct",
            PgRoute::PgBouncer => "pgbouncer",
        })
    }
}
