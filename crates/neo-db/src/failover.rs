//! Several hosts for the primary and a read-write target, as libpq's
//! `postgres://h1:5432,h2:5432/app?target_session_attrs=read-write`.
//!
//! The pool connects to one host at a time. With `target_session_attrs=read-write` (or
//! `primary`) every new connection checks that its server accepts writes; a watcher task
//! keeps one probe connection to the current host and, when it dies or turns read-only,
//! tries the hosts in order until one accepts writes and points the pool there
//! (`set_connect_options`): connections being opened at that moment retry onto the new
//! primary, broken ones are dropped by `test_before_acquire`.

use crate::{Error, Result};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Failover between the hosts of the primary's URL (`NEO_DB_FAILOVER__CHECK_INTERVAL=250ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct FailoverConfig {
    /// How often the watcher checks that the current host still accepts writes (one
    /// `SELECT` on a connection of its own); it also checks at once when a new connection
    /// finds its server read-only.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Time limit of one connection attempt to one host while looking for the primary.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            check_interval: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Any host that answers (the first).
    Any,
    /// A host that accepts writes (`read-write` or `primary`).
    ReadWrite,
}

/// A URL split into one URL per host, and its target.
#[derive(Debug)]
pub(crate) struct HostUrls {
    pub(crate) urls: Vec<String>,
    pub(crate) target: Target,
}

/// Splits `postgres://user:pw@h1:1,h2:2/db?target_session_attrs=read-write&x=y` into
/// `postgres://user:pw@h1:1/db?x=y` and `postgres://user:pw@h2:2/db?x=y`.
pub(crate) fn split_hosts(url: &str) -> Result<HostUrls> {
    let bad = |what: &str| {
        Error::Config(format!(
            "the database URL {what} (its text is not shown: it may hold a password)"
        ))
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("is not a valid postgres:// URL"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, query),
        None => (tail, ""),
    };
    let mut target = Target::Any;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                target = match value {
                    "any" => Target::Any,
                    "read-write" | "primary" => Target::ReadWrite,
                    other => {
                        return Err(Error::Config(format!(
                            "target_session_attrs `{other}` is not supported: use `any`, \
                             `read-write` or `primary`"
                        )));
                    }
                };
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let urls: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{scheme}://{userinfo}{host}{path}{query}"))
        .collect();
    if hosts.split(',').any(str::is_empty) {
        return Err(bad("has an empty host in its host list"));
    }
    Ok(HostUrls { urls, target })
}

/// Whether the server of `conn` suits `target`: for `ReadWrite`, whether it accepts writes
/// (not in recovery, not `default_transaction_read_only`).
pub(crate) async fn suits(conn: &mut PgConnection, target: Target) -> Result<bool, sqlx::Error> {
    let sql = match target {
        Target::Any => "SELECT false",
        Target::ReadWrite => {
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool"
        }
    };
    let read_only: bool = sqlx::query_scalar(sql).fetch_one(conn).await?;
    Ok(!read_only)
}

/// The hosts of the primary and which one the pool uses.
#[derive(Debug)]
pub(crate) struct Hosts {
    pub(crate) options: Vec<(String, PgConnectOptions)>,
    current: AtomicUsize,
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) target: Target,
    config: FailoverConfig,
}

impl Hosts {
    pub(crate) fn new(
        options: Vec<(String, PgConnectOptions)>,
        target: Target,
        config: FailoverConfig,
    ) -> Self {
        Hosts {
            options,
            current: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            target,
            config,
        }
    }

    /// The first host, from the current one on, that accepts writes, with a connection to it.
    pub(crate) async fn find_primary(&self) -> Option<(usize, PgConnection)> {
        let count = self.options.len();
        let start = self.current.load(Ordering::Acquire);
        for offset in 0..count {
            let index = (start + offset) % count;
            let (name, options) = &self.options[index];
            let attempt = async {
                let mut conn = options.connect().await?;
                let writable = suits(&mut conn, self.target).await?;
                Ok::<_, sqlx::Error>((conn, writable))
            };
            match tokio::time::timeout(self.config.connect_timeout, attempt).await {
                Ok(Ok((conn, true))) => return Some((index, conn)),
                Ok(Ok((conn, false))) => {
                    tracing::debug!(host = %name, "host is read-only; trying the next");
                    let _ = conn.close().await;
                }
                Ok(Err(e)) => tracing::debug!(host = %name, error = %e, "host unreachable"),
                Err(_) => tracing::debug!(host = %name, "host did not answer in time"),
            }
        }
        None
    }

    /// Makes `index` the current host (before the pool exists).
    pub(crate) fn start_at(&self, index: usize) {
        self.current.store(index, Ordering::Release);
    }

    /// Makes `index` the current host of `pool`.
    pub(crate) fn switch(&self, pool: &PgPool, index: usize) {
        let previous = self.current.swap(index, Ordering::AcqRel);
        if previous != index {
            tracing::warn!(
                from = %self.options[previous].0,
                to = %self.options[index].0,
                "primary moved: the pool now connects to the new primary"
            );
            metrics::counter!(crate::metric_names::FAILOVERS_TOTAL).increment(1);
        }
        pool.set_connect_options(self.options[index].1.clone());
    }

    /// The index of the host the pool connects to.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

impl crate::Db {
    /// `host:port/database` of the host the pool connects to, when the URL names several
    /// hosts or a read-write target (`None` otherwise).
    pub fn primary_host(&self) -> Option<String> {
        let hosts = self.shared().hosts.as_ref()?;
        Some(hosts.options[hosts.current()].0.clone())
    }
}

/// Aborts the watcher when the last handle of the `Db` is dropped.
#[derive(Debug)]
pub(crate) struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches the current host of `pool` and moves the pool to the host that accepts writes.
pub(crate) fn watch(hosts: Arc<Hosts>, pool: PgPool) -> Option<Watcher> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(Watcher(runtime.spawn(async move {
        let mut probe: Option<PgConnection> = None;
        loop {
            if pool.is_closed() {
                return;
            }
            let healthy = match probe.as_mut() {
                Some(conn) => matches!(suits(conn, hosts.target).await, Ok(true)),
                None => false,
            };
            if !healthy {
                if let Some(conn) = probe.take() {
                    drop(conn);
                }
                if let Some((index, conn)) = hosts.find_primary().await {
                    hosts.switch(&pool, index);
                    probe = Some(conn);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(hosts.config.check_interval) => {}
                () = hosts.wake.notified() => {}
            }
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_list_splits_into_one_url_per_host() {
        let hosts = split_hosts(
            "postgres://app:pw@db1:5432,db2:5433/app?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(hosts.target, Target::ReadWrite);
        assert_eq!(
            hosts.urls,
            [
                "postgres://app:pw@db1:5432/app?sslmode=disable",
                "postgres://app:pw@db2:5433/app?sslmode=disable"
            ]
        );
        let one = split_hosts("postgres://db/app").unwrap();
        assert_eq!(one.target, Target::Any);
        assert_eq!(one.urls, ["postgres://db/app"]);
        assert!(matches!(
            split_hosts("postgres://a,,b/app"),
            Err(Error::Config(_))
        ));
        let Err(Error::Config(message)) =
            split_hosts("postgres://a/app?target_session_attrs=standby")
        else {
            panic!("an unsupported target is refused");
        };
        assert!(message.contains("standby"), "{message}");
    }
}
