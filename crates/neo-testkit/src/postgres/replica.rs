//! A primary with a streaming replica (`pg_basebackup -R`), for read routing and failover tests.

use super::{PgServer, PgServerOptions, append};
use crate::process;
use crate::{Error, Result};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The `application_name` the replica connects to its primary with, as
/// `synchronous_standby_names` names it.
pub const REPLICA_NAME: &str = "neo_replica";

/// How to start a [`PgReplicaPair`].
#[derive(Debug, Clone)]
pub struct PgReplicaOptions {
    /// The primary's options (the replica copies its settings).
    pub server: PgServerOptions,
    /// `synchronous_standby_names = 'neo_replica'` on the primary: a commit is acknowledged
    /// only once the replica has flushed its WAL, so promoting the replica loses no
    /// acknowledged write. Off: asynchronous replication.
    pub synchronous: bool,
    /// How long to wait for the replica to stream (and, when synchronous, for the primary to
    /// count it as its synchronous standby).
    pub ready_timeout: Duration,
}

impl Default for PgReplicaOptions {
    fn default() -> Self {
        PgReplicaOptions {
            server: PgServerOptions::default(),
            synchronous: false,
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// A primary and a hot-standby replica streaming from it, each a [`PgServer`] on its own free
/// loopback port and temporary directory.
///
/// Fault tests start a pair of their own ([`PgReplicaPair::start`]) and
/// [`kill`](PgServer::kill) the [`primary`](Self::primary_mut), [`promote`](Self::promote) the
/// replica, or [`pause_replay`](Self::pause_replay) to make it lag. Tests that only read use
/// the pair shared by the test binary ([`crate::postgres_replicated`]). The methods block.
#[derive(Debug)]
pub struct PgReplicaPair {
    primary: PgServer,
    replica: PgServer,
    synchronous: bool,
}

impl PgReplicaPair {
    /// Starts an asynchronous pair with default options.
    ///
    /// # Errors
    /// As [`PgServer::start`]; [`Error::Startup`] when the replica does not stream in time.
    pub fn start() -> Result<Self> {
        Self::start_with(PgReplicaOptions::default())
    }

    /// Starts a pair with the given options.
    ///
    /// # Errors
    /// As [`PgReplicaPair::start`].
    pub fn start_with(options: PgReplicaOptions) -> Result<Self> {
        // initdb's pg_hba.conf already trusts replication connections from 127.0.0.1, and
        // `wal_level = replica`, `max_wal_senders = 10` and `hot_standby = on` are PostgreSQL
        // 15's defaults.
        let primary = PgServer::start_with(options.server.clone())?;
        // WAL kept for a replica that falls behind (replay paused in a test, say).
        primary.psql("postgres", "ALTER SYSTEM SET wal_keep_size = '256MB'")?;
        primary.psql("postgres", "SELECT pg_reload_conf()")?;
        let replica = PgServer::replica_of(&primary, options.server)?;
        let pair = PgReplicaPair {
            primary,
            replica,
            synchronous: options.synchronous,
        };
        pair.wait_streaming(options.ready_timeout)?;
        if options.synchronous {
            pair.primary.psql(
                "postgres",
                &format!("ALTER SYSTEM SET synchronous_standby_names = '{REPLICA_NAME}'"),
            )?;
            pair.primary.psql("postgres", "SELECT pg_reload_conf()")?;
            let ready = process::wait_until(options.ready_timeout, || {
                pair.primary
                    .psql_value(
                        "postgres",
                        &format!(
                            "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}'"
                        ),
                    )
                    .is_ok_and(|state| state == "sync")
            });
            if !ready {
                return Err(pair
                    .primary
                    .startup_error("the replica did not become the synchronous standby in time"));
            }
        }
        Ok(pair)
    }

    fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        let streaming = process::wait_until(timeout, || {
            self.primary
                .psql_value(
                    "postgres",
                    &format!(
                        "SELECT state FROM pg_stat_replication WHERE application_name = '{REPLICA_NAME}'"
                    ),
                )
                .is_ok_and(|state| state == "streaming")
        });
        if streaming {
            Ok(())
        } else {
            Err(self
                .replica
                .startup_error("the replica did not start streaming from the primary in time"))
        }
    }

    /// The primary.
    pub fn primary(&self) -> &PgServer {
        &self.primary
    }

    /// The primary, to stop, kill or restart it.
    pub fn primary_mut(&mut self) -> &mut PgServer {
        &mut self.primary
    }

    /// The replica.
    pub fn replica(&self) -> &PgServer {
        &self.replica
    }

    /// The replica, to stop, kill or restart it.
    pub fn replica_mut(&mut self) -> &mut PgServer {
        &mut self.replica
    }

    /// Whether the replica is the primary's synchronous standby.
    pub fn is_synchronous(&self) -> bool {
        self.synchronous
    }

    /// Promotes the replica to a primary (`pg_ctl promote -w`): it stops replaying, ends
    /// recovery and accepts writes. Usually after [`kill`](PgServer::kill)ing the primary.
    ///
    /// # Errors
    /// [`Error::Startup`] when `pg_ctl promote` fails.
    pub fn promote(&mut self) -> Result<()> {
        self.replica.promote()
    }

    /// Pauses WAL replay on the replica (`pg_wal_replay_pause()`): it keeps receiving but
    /// shows no new writes until [`resume_replay`](Self::resume_replay).
    ///
    /// # Errors
    /// [`Error::Startup`] when the replica cannot be reached.
    pub fn pause_replay(&self) -> Result<()> {
        self.replica
            .psql("postgres", "SELECT pg_wal_replay_pause()")?;
        let paused = process::wait_until(Duration::from_secs(10), || {
            self.replica
                .psql_value("postgres", "SELECT pg_get_wal_replay_pause_state()")
                .is_ok_and(|state| state == "paused")
        });
        if paused {
            Ok(())
        } else {
            Err(self.replica.startup_error("replay did not pause in time"))
        }
    }

    /// Resumes WAL replay (`pg_wal_replay_resume()`).
    ///
    /// # Errors
    /// [`Error::Startup`] when the replica cannot be reached.
    pub fn resume_replay(&self) -> Result<()> {
        self.replica
            .psql("postgres", "SELECT pg_wal_replay_resume()")
    }

    /// Waits until the replica has replayed everything the primary had written when called.
    ///
    /// # Errors
    /// [`Error::Startup`] when it has not within `timeout`.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let target = self
            .primary
            .psql_value("postgres", "SELECT pg_current_wal_lsn()")?;
        let caught_up = process::wait_until(timeout, || {
            self.replica
                .psql_value(
                    "postgres",
                    &format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"),
                )
                .is_ok_and(|done| done == "t")
        });
        if caught_up {
            Ok(())
        } else {
            Err(self.replica.startup_error(&format!(
                "the replica did not replay up to {target} in time"
            )))
        }
    }
}

impl PgServer {
    /// A hot standby of `primary`: `pg_basebackup -R` into a temporary directory, then started
    /// on a free port of its own, streaming as [`REPLICA_NAME`].
    fn replica_of(primary: &PgServer, options: PgServerOptions) -> Result<PgServer> {
        let dir = tempfile::Builder::new()
            .prefix("neo-pg-replica-")
            .tempdir()
            .map_err(Error::io("creating a temporary directory for the replica"))?;
        if let Some(user) = &primary.user {
            process::chown_tree(dir.path(), user)?;
        }
        let mut replica = PgServer {
            bin_dir: primary.bin_dir.clone(),
            dir,
            port: 0,
            user: primary.user.clone(),
            options,
            running: false,
            watchdog: None,
        };
        let data = replica.data_dir().to_string_lossy().into_owned();
        let port = primary.port().to_string();
        replica.run(
            "pg_basebackup",
            &[
                "-D",
                &data,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            "pg_basebackup",
        )?;
        // Later lines win: a socket directory and a port of its own; `cluster_name` is the
        // application_name its WAL receiver shows the primary.
        append(
            &replica.data_dir().join("postgresql.conf"),
            &format!(
                "\n# neo-testkit replica\nunix_socket_directories = '{}'\ncluster_name = '{REPLICA_NAME}'\n\
                 hot_standby = on\nhot_standby_feedback = on\n",
                replica.dir.path().display()
            ),
        )?;
        replica.watchdog = Some(process::Watchdog::spawn(&replica.cleanup_script())?);
        process::retry(3, Duration::ZERO, || {
            replica.port = process::free_port()?;
            replica.write_port()?;
            replica.pg_ctl_start()
        })?;
        Ok(replica)
    }

    /// Promotes this standby (`pg_ctl promote -w`).
    ///
    /// # Errors
    /// [`Error::Startup`] when `pg_ctl promote` fails.
    pub fn promote(&mut self) -> Result<()> {
        let data = self.data_dir().to_string_lossy().into_owned();
        let timeout = self.options.startup_timeout.as_secs().max(1).to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-w", "-t", &timeout, "promote"],
            "pg_ctl promote",
        )
    }

    /// Runs `sql` with `psql` as `postgres` over TCP.
    fn psql(&self, database: &str, sql: &str) -> Result<()> {
        self.psql_value(database, sql).map(drop)
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output, trimmed.
    fn psql_value(&self, database: &str, sql: &str) -> Result<String> {
        let psql = self.bin("psql");
        let port = self.port.to_string();
        let output = process::command_as(self.user.as_ref(), &psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(Error::io("running psql"))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
        }
        Err(self.startup_error(&format!(
            "psql `{sql}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Where the replicated pair shared by a test binary listens (see
/// [`crate::postgres_replicated`]). Do not pause, stop or promote it: other tests read from
/// it; start a [`PgReplicaPair`] of your own for that.
#[derive(Debug, Clone)]
pub struct ReplicatedPostgres {
    primary_port: u16,
    replica_port: u16,
}

impl ReplicatedPostgres {
    /// The URL of `database` on the primary (user `postgres`, no password).
    pub fn primary_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.primary_port
        )
    }

    /// The URL of `database` on the replica.
    pub fn replica_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.replica_port
        )
    }

    /// The primary's port.
    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    /// The replica's port.
    pub fn replica_port(&self) -> u16 {
        self.replica_port
    }

    /// A fresh database of its own for one test, created on the primary and waited for on
    /// the replica; dropped when the value is dropped.
    ///
    /// # Errors
    /// [`Error::Client`] when creating it fails or the replica does not show it in 30 s.
    pub async fn database(&self) -> Result<ReplicatedDatabase> {
        use sqlx::Connection as _;
        let primary = super::create_database_on(self.primary_url("postgres")).await?;
        let replica_url = self.replica_url(primary.name());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgConnection::connect(&replica_url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    break;
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(Error::client(format!(
                        "waiting for database {} on the replica",
                        primary.name()
                    ))(e));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Ok(ReplicatedDatabase {
            primary,
            replica_url,
        })
    }
}

/// A database of its own for one test on a replicated pair: written on the primary, read on
/// the replica.
#[derive(Debug)]
pub struct ReplicatedDatabase {
    primary: super::TestDatabase,
    replica_url: String,
}

impl ReplicatedDatabase {
    /// The database on the primary.
    pub fn primary(&self) -> &super::TestDatabase {
        &self.primary
    }

    /// The URL of the same database on the replica (read-only).
    pub fn replica_url(&self) -> &str {
        &self.replica_url
    }
}

static SHARED_REPLICATED: OnceLock<
    std::result::Result<(PgReplicaPair, ReplicatedPostgres), Arc<Error>>,
> = OnceLock::new();

/// The asynchronous pair shared by the tests of this process, started on first use (blocking).
pub(crate) fn shared_replicated() -> Result<ReplicatedPostgres> {
    let shared = SHARED_REPLICATED.get_or_init(|| {
        PgReplicaPair::start()
            .map(|pair| {
                let info = ReplicatedPostgres {
                    primary_port: pair.primary().port(),
                    replica_port: pair.replica().port(),
                };
                (pair, info)
            })
            .map_err(Arc::new)
    });
    match shared {
        Ok((_, info)) => Ok(info.clone()),
        Err(e) => Err(Error::Shared(Arc::clone(e))),
    }
}
