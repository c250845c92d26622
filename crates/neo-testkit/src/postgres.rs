//! Throwaway PostgreSQL servers and per-test databases.

use crate::process::{self, RunAs};
use crate::{Error, Result, TestCertificates};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod replica;

pub(crate) use replica::shared_replicated;
pub use replica::{
    PgReplicaOptions, PgReplicaPair, REPLICA_NAME, ReplicatedDatabase, ReplicatedPostgres,
};

const SERVER: &str = "PostgreSQL";
const MIN_MAJOR: u32 = 15;
/// Points the tests at an existing server instead of starting one.
pub const DATABASE_URL_VAR: &str = "NEO_TEST_DATABASE_URL";
/// Overrides where the PostgreSQL server binaries are looked for.
pub const BIN_DIR_VAR: &str = "NEO_PG_BIN_DIR";

/// How to start a [`PgServer`].
#[derive(Debug, Clone)]
pub struct PgServerOptions {
    /// Directory holding `initdb`, `pg_ctl` and `postgres`; found automatically when `None`
    /// (`$NEO_PG_BIN_DIR`, `/usr/lib/postgresql/<version>/bin`, then `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// Durable settings (`fsync` and `full_page_writes` on). Tests turn them off for speed,
    /// which only risks data on an operating-system crash; benchmarks that compare with a
    /// production setup turn them on. `synchronous_commit` stays on either way, so a commit
    /// that was acknowledged survives [`PgServer::kill`] (without fsync it costs a `write`).
    pub durable: bool,
    /// `max_wal_size` in megabytes; `None` keeps the server's default (1 GB). Write-heavy
    /// benchmarks raise it, as a production server is sized, so their figures are not taken
    /// across checkpoints forced every few seconds (PostgreSQL then logs "checkpoints are
    /// occurring too frequently", and every page's first change after each one is logged
    /// whole).
    pub max_wal_size_mb: Option<u32>,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// How long `pg_ctl` may take to start or stop the server.
    pub startup_timeout: Duration,
    /// `ssl = on` with this server certificate and key (clients may still connect without
    /// TLS); the CA is written next to the data directory ([`PgServer::ca_file`]).
    pub tls: Option<TestCertificates>,
}

impl Default for PgServerOptions {
    fn default() -> Self {
        PgServerOptions {
            bin_dir: None,
            durable: false,
            max_wal_size_mb: None,
            max_connections: 300,
            startup_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// A PostgreSQL server in a temporary data directory on a free loopback port, owned by the
/// test that started it.
///
/// It runs as an unprivileged account when the test runs as root (PostgreSQL refuses root),
/// trusts local connections (user `postgres`, no password), and is stopped and deleted when
/// dropped — or, if the process dies first, by a watchdog shortly after. Fault tests use
/// [`stop`](PgServer::stop), [`kill`](PgServer::kill) and [`restart`](PgServer::restart);
/// data survives a restart. The methods block (they wait for `pg_ctl`).
///
/// # Example
/// ```no_run
/// let mut server = neo_testkit::PgServer::start()?;
/// let url = server.url();
/// server.restart()?; // same port, same data
/// # let _ = url;
/// # Ok::<(), neo_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct PgServer {
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    user: Option<RunAs>,
    options: PgServerOptions,
    running: bool,
    /// Declared last so it is dropped after `Drop::drop` has stopped the server.
    watchdog: Option<process::Watchdog>,
}

impl PgServer {
    /// Starts a server with [`PgServerOptions::default`].
    ///
    /// # Errors
    /// [`Error::BinaryMissing`] with the install command when PostgreSQL 15+ is not installed;
    /// [`Error::Startup`] with the server log when it does not come up.
    pub fn start() -> Result<Self> {
        Self::start_with(PgServerOptions::default())
    }

    /// Starts a server with the given options.
    ///
    /// # Errors
    /// As [`PgServer::start`].
    pub fn start_with(options: PgServerOptions) -> Result<Self> {
        let bin_dir = find_bin_dir(options.bin_dir.as_deref())?;
        let user = process::unprivileged_user()?;
        let dir = tempfile::Builder::new()
            .prefix("neo-pg-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for PostgreSQL"))?;
        if let Some(user) = &user {
            process::chown_tree(dir.path(), user)?;
        }
        let mut server = PgServer {
            bin_dir,
            dir,
            port: 0,
            user,
            options,
            running: false,
            watchdog: None,
        };
        server.initdb()?;
        server.watchdog = Some(process::Watchdog::spawn(&server.cleanup_script())?);
        // A port found free can be taken before the server binds it; try a few.
        process::retry(3, Duration::ZERO, || {
            server.port = process::free_port()?;
            server.write_port()?;
            server.pg_ctl_start()
        })?;
        Ok(server)
    }

    /// The connection URL of the `postgres` database (superuser `postgres`, no password).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The connection URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        self.url_via("127.0.0.1", database)
    }

    /// The connection URL of `database` with `host` in place of `127.0.0.1` (the server
    /// listens on 127.0.0.1 only, so `host` must resolve there): `"localhost"` to match a
    /// certificate made for that name.
    pub fn url_via(&self, host: &str, database: &str) -> String {
        format!("postgres://postgres@{host}:{}/{database}", self.port)
    }

    /// The CA certificate file clients trust, when the server was started with
    /// [`PgServerOptions::tls`].
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.options
            .tls
            .as_ref()
            .map(|_| self.dir.path().join("ca.crt"))
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server was last started rather than stopped.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`): clients are disconnected.
    ///
    /// # Errors
    /// [`Error::Startup`] when `pg_ctl` fails.
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server abruptly (`-m immediate`, like a crash); it recovers on restart.
    ///
    /// # Errors
    /// [`Error::Startup`] when `pg_ctl` fails.
    pub fn kill(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the server again on the same port with the same data; stops it first if it runs.
    ///
    /// # Errors
    /// [`Error::Startup`] when it does not come back.
    pub fn restart(&mut self) -> Result<()> {
        if self.running {
            self.stop()?;
        }
        self.pg_ctl_start()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn run(&self, program: &str, args: &[&str], what: &str) -> Result<()> {
        let output = process::command_as(self.user.as_ref(), &self.bin(program))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(format!("running {program}")))?;
        if output.status.success() {
            return Ok(());
        }
        Err(self.startup_error(&format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }

    fn initdb(&self) -> Result<()> {
        let data = self.data_dir();
        let data = data.to_string_lossy();
        self.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )?;
        let durable = if self.options.durable { "on" } else { "off" };
        let max_wal_size = self
            .options
            .max_wal_size_mb
            .map(|mb| format!("max_wal_size = '{mb}MB'\n"))
            .unwrap_or_default();
        let settings = format!(
            "\n# neo-testkit\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket}'\n\
             max_connections = {max}\nshared_buffers = '128MB'\nfsync = {durable}\n\
             synchronous_commit = on\nfull_page_writes = {durable}\n\
             log_min_messages = warning\nlog_min_error_statement = panic\n\
             shared_preload_libraries = 'pg_stat_statements'\n{max_wal_size}",
            socket = self.dir.path().display(),
            max = self.options.max_connections,
        );
        append(&self.data_dir().join("postgresql.conf"), &settings)?;
        match &self.options.tls {
            Some(certs) => self.install_tls(certs),
            None => Ok(()),
        }
    }

    /// Puts the server's certificate and key into the data directory (the key owned by the
    /// server's account, mode 0600, or PostgreSQL refuses it) and turns `ssl` on.
    fn install_tls(&self, certs: &TestCertificates) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data_dir();
        for (name, pem, mode) in [
            ("server.crt", certs.server_cert_pem(), 0o644),
            ("server.key", certs.server_key_pem(), 0o600),
        ] {
            let path = data.join(name);
            std::fs::write(&path, pem).map_err(Error::io(format!("writing {}", path.display())))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(Error::io(format!("chmod {}", path.display())))?;
            if let Some(user) = &self.user {
                process::chown_tree(&path, user)?;
            }
        }
        certs.write_ca(self.dir.path())?;
        append(
            &data.join("postgresql.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
    }

    fn write_port(&self) -> Result<()> {
        // Later lines win in postgresql.conf.
        append(
            &self.data_dir().join("postgresql.conf"),
            &format!("port = {}\n", self.port),
        )
    }

    fn pg_ctl_start(&mut self) -> Result<()> {
        let data = self.data_dir().to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        let timeout = self.options.startup_timeout.as_secs().max(1).to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", &timeout, "start"],
            "pg_ctl start",
        )?;
        if !process::wait_until(Duration::from_secs(10), || process::port_open(self.port)) {
            return Err(
                self.startup_error("the server started but does not accept TCP connections")
            );
        }
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        let data = self.data_dir().to_string_lossy().into_owned();
        let timeout = self.options.startup_timeout.as_secs().max(1).to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", mode, "-w", "-t", &timeout, "stop"],
            "pg_ctl stop",
        )?;
        self.running = false;
        Ok(())
    }

    fn startup_error(&self, detail: &str) -> Error {
        Error::Startup {
            server: SERVER,
            detail: detail.to_owned(),
            log: process::log_tail(&self.log_path(), 20),
        }
    }

    fn cleanup_script(&self) -> String {
        let run_as = self
            .user
            .as_ref()
            .map(|u| format!("runuser -u {} -- ", u.name))
            .unwrap_or_default();
        format!(
            "{run_as}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pg_ctl = process::shell_quote(&self.bin("pg_ctl")),
            data = process::shell_quote(&self.data_dir()),
            dir = process::shell_quote(self.dir.path()),
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            // Best effort: the watchdog would do it anyway once the process exits.
            let _ = self.pg_ctl_stop("immediate");
        }
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

fn missing(looked: String) -> Error {
    Error::BinaryMissing {
        server: "PostgreSQL 15+",
        looked,
        install: "apt-get update && apt-get install -y postgresql",
        env_var: DATABASE_URL_VAR,
    }
}

/// Finds a directory with `initdb`, `pg_ctl` and `postgres` of version 15 or newer.
fn find_bin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = explicit {
        return if has_all(dir) {
            check_version(dir)
        } else {
            Err(missing(format!("in {}", dir.display())))
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
        candidates.push(dir.into());
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    candidates.extend(versioned.into_iter().map(|(_, dir)| dir));
    candidates.extend(process::path_dirs());
    let mut rejected = Vec::new();
    for dir in candidates.iter().filter(|d| has_all(d)) {
        match check_version(dir) {
            Ok(dir) => return Ok(dir),
            Err(e) => rejected.push(e.to_string()),
        }
    }
    Err(missing(format!(
        "${BIN_DIR_VAR}, /usr/lib/postgresql/*/bin and PATH{}",
        if rejected.is_empty() {
            String::new()
        } else {
            format!("; rejected: {}", rejected.join("; "))
        }
    )))
}

fn check_version(dir: &Path) -> Result<PathBuf> {
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(Error::io(format!(
            "running {}/postgres --version",
            dir.display()
        )))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let major = text
        .split_whitespace()
        .last()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < MIN_MAJOR {
        return Err(missing(format!("{} has {}", dir.display(), text.trim())));
    }
    // Resolve symlinks (e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl) so
    // the binaries find their share directory.
    let real = std::fs::canonicalize(dir.join("postgres"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf());
    Ok(real)
}

/// A database of its own for one test, on the shared server. Dropped (with `FORCE`) when
/// the value is dropped, so tests run in parallel without seeing each other's rows.
pub struct TestDatabase {
    name: String,
    url: String,
    direct_url: String,
    admin_url: String,
}

impl TestDatabase {
    /// The connection URL of this database (through PgBouncer for a database from
    /// [`PgRoute::PgBouncer`](crate::PgRoute)).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of this database on the server itself, never through a pooler (for
    /// LISTEN/NOTIFY and other session state); [`url`](Self::url) for a direct database.
    pub fn direct_url(&self) -> &str {
        &self.direct_url
    }

    /// The same database reached through `url` (a pooler in front of its server).
    pub(crate) fn routed_through(mut self, url: String) -> Self {
        self.url = url;
        self
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small connection pool to this database.
    ///
    /// # Errors
    /// [`Error::Client`] when connecting fails.
    pub async fn pool(&self) -> Result<sqlx::PgPool> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&self.url)
            .await
            .map_err(Error::client(format!(
                "connecting to test database {}",
                self.name
            )))
    }
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &crate::redact_url(&self.url))
            .finish()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        // The name was generated by `create_database` from hex digits only.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which must not be blocked on; use a thread of our own.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        let _ = handle.join();
    }
}

enum SharedPg {
    Owned(PgServer),
    External(String),
}

static SHARED: OnceLock<std::result::Result<SharedPg, Arc<Error>>> = OnceLock::new();

/// The admin URL of the server shared by every test of this process.
pub(crate) fn shared_url() -> Result<String> {
    let shared = SHARED.get_or_init(|| match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(SharedPg::External(url)),
        _ => PgServer::start().map(SharedPg::Owned).map_err(Arc::new),
    });
    match shared {
        Ok(SharedPg::Owned(server)) => Ok(server.url()),
        Ok(SharedPg::External(url)) => Ok(url.clone()),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}

/// Creates a fresh database on the shared server (see [`crate::postgres`]).
pub(crate) async fn create_database() -> Result<TestDatabase> {
    let admin_url = tokio::task::spawn_blocking(shared_url)
        .await
        .map_err(Error::client("starting the shared PostgreSQL"))??;
    create_database_on(admin_url).await
}

/// Creates a fresh database on the server of `admin_url`.
pub(crate) async fn create_database_on(admin_url: String) -> Result<TestDatabase> {
    use sqlx::Connection as _;
    let name = format!("neo_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin_url)
        .await
        .map_err(Error::client(format!(
            "connecting to {}",
            crate::redact_url(&admin_url)
        )))?;
    // `name` is generated above from hex digits only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE template0"
    )))
    .execute(&mut conn)
    .await
    .map_err(Error::client(format!(
        "creating database {name} (the role needs CREATEDB)"
    )))?;
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin_url).map_err(Error::client("parsing the database URL"))?;
    url.set_path(&name);
    let url: String = url.into();
    Ok(TestDatabase {
        name,
        direct_url: url.clone(),
        url,
        admin_url,
    })
}

/// The TLS-enabled server shared by the tests of this process: `ssl = on` with a certificate
/// for `localhost` only, signed by a CA generated at startup (see
/// [`postgres_tls`](crate::postgres_tls)). Plain connections are accepted too.
#[derive(Debug, Clone)]
pub struct TlsPostgres {
    port: u16,
    ca_file: PathBuf,
    server_names: Vec<String>,
}

impl TlsPostgres {
    /// The URL of the `postgres` database (superuser `postgres`, no password) through `host`:
    /// `"localhost"` matches the certificate, `"127.0.0.1"` reaches the same server under a
    /// name the certificate does not hold. No `sslmode` is set.
    pub fn url(&self, host: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The names the server's certificate holds (`["localhost"]`).
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }
}

static SHARED_TLS: OnceLock<std::result::Result<(PgServer, TlsPostgres), Arc<Error>>> =
    OnceLock::new();

/// The TLS server shared by every test of this process, started on first use (blocking).
pub(crate) fn shared_tls() -> Result<TlsPostgres> {
    let shared = SHARED_TLS.get_or_init(|| {
        let start = || {
            let certs = TestCertificates::generate(&["localhost"])?;
            let server_names = certs.server_names().to_vec();
            let server = PgServer::start_with(PgServerOptions {
                tls: Some(certs),
                ..PgServerOptions::default()
            })?;
            let info = TlsPostgres {
                port: server.port(),
                ca_file: server.ca_file().unwrap_or_default(),
                server_names,
            };
            Ok((server, info))
        };
        start().map_err(Arc::new)
    });
    match shared {
        Ok((_, info)) => Ok(info.clone()),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}
